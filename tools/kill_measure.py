#!/usr/bin/env python3
"""Measures how many healthy items a series of kill -9 of a whole `fmbatch run` leaves dead.

    tools/kill_measure.py [--fmbatch PATH] [--docs 200] [--kills 20] [--seed 1] [--tokens 3000]

Builds a files job of DOCS documents (about TOKENS tokens each, one score task, the job's
default max_attempts = 3) on tests/fixtures/tiny-a, then KILLS times: starts the run, waits a
random time within the expected remaining run time, kill -9s it (the whole process), and
resumes; finally a run to completion. Prints the item statuses, sum(attempts) and kills, as one
JSON line. Run from the repository root. Figures: docs/DECISIONS.md ("Deaths and attempts").
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmbatch", default=os.path.abspath("build/fmbatch"))
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=3000)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    model = os.path.abspath("tests/fixtures/tiny-a")
    d = tempfile.mkdtemp(prefix="fmb_killm_")
    try:
        words = "alpha beta gamma delta river stone light market report window".split()
        os.makedirs(os.path.join(d, "docs"))
        for i in range(a.docs):
            n = int(a.tokens / 1.8 * rnd.uniform(0.5, 1.5))
            with open(os.path.join(d, "docs", "d%03d.txt" % i), "w") as f:
                f.write(" ".join(rnd.choice(words) for _ in range(n)))
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write('[job]\nname = "killm"\nmodel = "%s"\noutput = "out.db"\nthreads = 1\n'
                    '[source]\nkind = "files"\npaths = ["docs"]\n'
                    '[[task]]\nname = "ppl"\nkind = "score"\n' % model)
        cmd = [a.fmbatch, "run", "job.toml", "--progress", "none"]
        t0 = time.time()
        subprocess.run(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        full = time.time() - t0  # one uninterrupted run, to spread the kills over
        os.remove(os.path.join(d, "out.db"))
        kills = 0
        for _ in range(a.kills):
            p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.02, full / a.kills * 1.5))
            if p.poll() is None:
                p.kill()
                kills += 1
            p.wait()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        db = sqlite3.connect(os.path.join(d, "out.db"))
        st = dict(db.execute("SELECT status, count(*) FROM item GROUP BY status").fetchall())
        att = db.execute("SELECT sum(attempts) FROM item").fetchone()[0]
        try:
            k = db.execute("SELECT sum(kills) FROM item").fetchone()[0]
        except sqlite3.Error:
            k = None  # before item.kills
        db.close()
        print(json.dumps({"docs": a.docs, "kills_sent": kills, "seed": a.seed,
                          "uninterrupted_s": round(full, 2), "final_rc": r.returncode,
                          "status": st, "sum_attempts": att, "sum_kills": k}))
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
