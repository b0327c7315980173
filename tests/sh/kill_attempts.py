"""kill -9 of a whole `fmbatch run` while it processes an item, several times, with
max_attempts = 1: every item still ends done (before worker files, each killed item was dead at
its next claim), the kills are recorded in item.kills, and no worker file is left behind.
Run from the repository root; about 5-10 s with the tiny model on 2 cores."""
import glob
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
def running_item(db_path, pid):
    """The key of an item leased by pid, or None (the file may not exist yet)."""
    if not os.path.exists(db_path):
        return None
    try:
        db = sqlite3.connect(db_path, timeout=0.2)
        r = db.execute("SELECT key FROM item WHERE status = 'running' AND lease_pid = ?",
                       (pid,)).fetchone()
        db.close()
        return r[0] if r else None
    except sqlite3.Error:
        return None


def main():
    d = tempfile.mkdtemp(prefix="fmb_kill_")
    try:
        rnd = random.Random(7)
        words = "alpha beta gamma delta river stone light market report window".split()
        os.makedirs(os.path.join(d, "docs"))
        n_docs = 8
        for i in range(n_docs):  # ~25K tokens each: a few tenths of a second to score
            with open(os.path.join(d, "docs", "d%02d.txt" % i), "w") as f:
                f.write(" ".join(rnd.choice(words) for _ in range(6500)))
        with open(os.path.join(d, "job.toml"), "w") as f:
            f.write('[job]\nname = "kills"\nmodel = "%s"\noutput = "out.db"\nthreads = 1\n'
                    'max_attempts = 1\n[source]\nkind = "files"\npaths = ["docs"]\n'
                    '[[task]]\nname = "ppl"\nkind = "score"\n' % MODEL)
        db_path = os.path.join(d, "out.db")
        kills, hit = 0, []
        for _ in range(5):
            p = subprocess.Popen([FMBATCH, "run", "job.toml", "--progress", "none"], cwd=d,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            key, t0 = None, time.time()
            while key is None and p.poll() is None and time.time() - t0 < 10:
                key = running_item(db_path, p.pid)
                time.sleep(0.01)
            time.sleep(0.05)  # into the item's processing
            if p.poll() is None and key:
                p.kill()
                kills += 1
                hit.append(key)
            p.wait()
        r = subprocess.run([FMBATCH, "run", "job.toml", "--progress", "none"], cwd=d,
                           capture_output=True, text=True)
        db = sqlite3.connect(db_path)
        st = dict(db.execute("SELECT status, count(*) FROM item GROUP BY status").fetchall())
        try:
            k = db.execute("SELECT coalesce(sum(kills), 0), coalesce(max(attempts), 0) "
                           "FROM item").fetchone()
        except sqlite3.Error as e:  # a file from before item.kills
            k = (0, str(e))
        db.close()
        check(kills >= 3, "kill -9 hit items in progress", "%d kills" % kills)
        check(r.returncode == 0 and st.get("done") == n_docs and not st.get("dead"),
              "kill -9 x%d with max_attempts = 1: every item done, none dead" % kills,
              "rc %d statuses %r %s" % (r.returncode, st, r.stderr[-300:]))
        check(k[0] >= 1 and k[1] == 1, "the kills are recorded in item.kills, not as attempts",
              "sum(kills) %r max(attempts) %r, killed in %r" % (k[0], k[1], hit))
        left = glob.glob(db_path + ".worker-*")
        check(not left, "no worker file is left behind", repr(left))
    finally:
        shutil.rmtree(d)


main()
sys.exit(1 if failures() else 0)
