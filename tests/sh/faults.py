"""Fault injection (batch/fault.h) end to end, on the tiny fixture model.

For every FMB_FAULT kill point at a few passes: the run dies there (SIGKILL, the message names
the point), a rerun without faults completes, and `fmbatch export` equals an uninterrupted
run's with the timing fields and item ids aside: every (item, task) row once, none missing, no
other. SQLite errors through the fault VFS: sqlite-busy (transient) is survived by the same
run; sqlite-full and sqlite-ioerr stop the run with a clear message and exit 1, the file passes
PRAGMA integrity_check, and a rerun completes with the same export. Then 20 kill -9 at seeded
random times over a larger corpus (4 rounds from a fresh output: 5 kills, each run resuming the
last, then a rerun to completion).
Prints the figures tests/RELIABILITY.md quotes ("NOTE faults: ..."). Run from the repository
root; about 20-40 s on 2 cores (longer under ASan)."""
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("tests/fixtures/tiny-a")
TIMING = ("prefill_seconds", "task_seconds", "finished_at", "item_id")
JOB = """[job]
name = "faults"
model = "%s"
output = "out.db"
threads = 1
max_batch = 2
chunk_tokens = 64
seed = 1
[source]
kind = "files"
paths = ["docs"]
[[task]]
name = "ppl"
kind = "score"
[[task]]
name = "pick"
kind = "choice"
prompt = "{document} is"
choices = [" yes", " no"]
[[task]]
name = "gen"
kind = "generate"
prompt = "{document} then"
max_new_tokens = %d
temperature = 0.7
"""


def make_job(d, n_docs, words, new_tokens, seed=3):
    rnd = random.Random(seed)
    vocab = "alpha beta gamma delta river stone light market report window".split()
    os.makedirs(os.path.join(d, "docs"))
    for i in range(n_docs):
        with open(os.path.join(d, "docs", "d%02d.txt" % i), "w") as f:
            f.write(" ".join(rnd.choice(vocab) for _ in range(words + 40 * i)))
    with open(os.path.join(d, "job.toml"), "w") as f:
        f.write(JOB % (MODEL, new_tokens))


def run(d, fault=None, timeout=300):
    env = dict(os.environ)
    env.pop("FMB_FAULT", None)
    if fault:
        env["FMB_FAULT"] = fault
    return subprocess.run([FMBATCH, "run", "job.toml", "--progress", "none"], cwd=d, env=env,
                          capture_output=True, text=True, timeout=timeout)


def export(d):
    r = subprocess.run([FMBATCH, "export", "job.toml", "--format", "jsonl", "--include-failed"],
                       cwd=d, capture_output=True, text=True)
    rows = []
    for line in r.stdout.splitlines():
        o = json.loads(line)
        for k in TIMING:
            o.pop(k, None)
        rows.append(json.dumps(o, sort_keys=True))
    return r.returncode, sorted(rows)


def integrity(d):
    db = sqlite3.connect(os.path.join(d, "out.db"))
    ok = db.execute("PRAGMA integrity_check").fetchone()[0]
    dup = db.execute("SELECT count(*) FROM (SELECT item_key, task FROM result "
                     "GROUP BY item_key, task HAVING count(*) > 1)").fetchone()[0]
    db.close()
    return ok, dup


def compare(name, base, d):
    rc, rows = export(d)
    missing = len(set(base) - set(rows))
    extra = len(rows) - len(set(rows)) + len(set(rows) - set(base))
    check(rc == 0 and rows == base, name + ": export equals the uninterrupted run's",
          "rc %d, %d rows (want %d), %d missing, %d extra" % (rc, len(rows), len(base), missing,
                                                               extra))
    return missing, extra


def fresh(root, src, name):
    d = os.path.join(root, name)
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("out.db*", "*.worker*", ".fmbatch*"))
    return d


def main():
    root = tempfile.mkdtemp(prefix="fmb_faults_")
    lost = dup = 0
    try:
        small = os.path.join(root, "small")
        make_job(small, 6, 150, 8)
        ref = fresh(root, small, "ref")
        r = run(ref)
        check(r.returncode == 0, "uninterrupted run", r.stderr[-400:])
        rc, base = export(ref)
        check(rc == 0 and len(base) == 18, "baseline: 6 documents x 3 tasks", "%d rows" % len(base))

        # 1. kill points: (point, passes tried)
        points = [("after-claim", [1, 4]), ("after-claim-window", [1, 2]),
                  ("before-commit", [1, 2]), ("after-commit", [1, 3]),
                  ("checkpoint", [2, 5]), ("prefill", [1, 6]), ("decode", [1, 9])]
        tried = survived = 0
        for point, passes in points:
            for n in passes:
                name = "%s:%d" % (point, n)
                d = fresh(root, small, name.replace(":", "_"))
                r = run(d, name)
                tried += 1
                fired = r.returncode == -9 and ("FMB_FAULT %s:%d" % (point, n)) in r.stderr
                check(fired, name + ": the run died there",
                      "rc %d: %s" % (r.returncode, r.stderr[-300:]))
                r2 = run(d)
                check(r2.returncode == 0, name + ": the rerun completes",
                      "rc %d: %s" % (r2.returncode, r2.stderr[-300:]))
                ok, dups = integrity(d)
                check(ok == "ok" and dups == 0, name + ": integrity ok, no duplicate row",
                      "%s, %d duplicates" % (ok, dups))
                m, x = compare(name, base, d)
                lost += m
                dup += x + dups
                if fired and r2.returncode == 0 and m == 0 and x == 0 and ok == "ok":
                    survived += 1

        # 2. SQLite errors through the fault VFS
        d = fresh(root, small, "busy")
        r = run(d, "sqlite-busy:3")
        check(r.returncode == 0, "sqlite-busy:3: a lock busy for a moment is waited out",
              "rc %d: %s" % (r.returncode, r.stderr[-300:]))
        m, x = compare("sqlite-busy:3", base, d)
        lost, dup = lost + m, dup + x
        tried += 1
        survived += r.returncode == 0 and m == 0 and x == 0
        errors = [("sqlite-full", "database or disk is full", [1, 8, 25, 60]),
                  ("sqlite-ioerr", "disk I/O error", [1, 8, 25, 60])]
        for point, msg, passes in errors:
            for n in passes:
                name = "%s:%d" % (point, n)
                d = fresh(root, small, name.replace(":", "_"))
                r = run(d, name)
                tried += 1
                clear = r.returncode in (1, 2) and msg in r.stderr and "Assert" not in r.stderr
                check(clear, name + ": a clear error, exit 1 or 2",
                      "rc %d: %s" % (r.returncode, r.stderr[-400:]))
                r2 = run(d)
                check(r2.returncode == 0, name + ": the rerun completes",
                      "rc %d: %s" % (r2.returncode, r2.stderr[-300:]))
                ok, dups = integrity(d)
                check(ok == "ok" and dups == 0, name + ": integrity ok, no duplicate row",
                      "%s, %d duplicates" % (ok, dups))
                m, x = compare(name, base, d)
                lost, dup = lost + m, dup + x + dups
                if clear and r2.returncode == 0 and m == 0 and x == 0 and ok == "ok":
                    survived += 1

        # 3. 20 kill -9 at seeded random times, each followed by a rerun
        big = os.path.join(root, "big")
        make_job(big, 16, 1500, 24)
        bref = fresh(root, big, "bref")
        t0 = time.time()
        r = run(bref)
        t_base = time.time() - t0
        check(r.returncode == 0, "uninterrupted run (larger corpus)", r.stderr[-300:])
        rc, bbase = export(bref)
        # four rounds from a fresh output, five kills each (a kill within the first fifth of
        # a full run's time, so each lands while work is left), then a rerun to completion
        rnd = random.Random(14)
        landed = rounds_ok = 0
        for rnd_i in range(4):
            d = fresh(root, big, "kills%d" % rnd_i)
            for i in range(5):
                env = dict(os.environ)
                env.pop("FMB_FAULT", None)
                p = subprocess.Popen([FMBATCH, "run", "job.toml", "--progress", "none"], cwd=d,
                                     env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                time.sleep(rnd.uniform(0.03, 0.2) * t_base)
                if p.poll() is None:
                    p.kill()
                    landed += 1
                p.wait()
                ok, dups = integrity(d)
                if ok != "ok" or dups:
                    check(False, "round %d kill %d: integrity ok, no duplicate row" % (rnd_i, i),
                          "%s, %d" % (ok, dups))
                    dup += dups
            r2 = run(d)
            name = "round %d, after 5 kill -9" % rnd_i
            check(r2.returncode == 0, name + ": the rerun completes", r2.stderr[-300:])
            ok, dups = integrity(d)
            check(ok == "ok" and dups == 0, name + ": integrity ok, no duplicate row",
                  "%s, %d" % (ok, dups))
            m, x = compare(name, bbase, d)
            lost, dup = lost + m, dup + x + dups
            rounds_ok += r2.returncode == 0 and m == 0 and x == 0 and ok == "ok"
        check(landed >= 16, "the kills landed while the run was working",
              "%d of 20 (baseline %.2f s)" % (landed, t_base))
        print("NOTE faults: %d of %d fault points survived; %d random kill -9 landed (of 20), "
              "%d of 4 rounds ended equal; rows lost %d, duplicated %d; baseline %.2f s"
              % (survived, tried, landed, rounds_ok, lost, dup, t_base))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main())
