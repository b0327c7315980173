"""`fmbatch run JOB --devices 0,0` on the CPU backend (two worker processes on one output):
the exported rows equal one worker's (timing fields aside; a sampled generation task included),
both workers took items (item.worker), each worker's lines come prefixed while the parent shows
one progress line combining theirs, --worker-slot's first pass takes a worker's share and a
later pass the rest (nothing lost, each document counted once), and a SIGINT to the
parent is forwarded once: the workers release their items and exit 130, nothing is left
running, and a resume completes the same rows. Corpus and job: tests/sh/shards.py.
"""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import shutil
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shards  # noqa: E402

FMBATCH = shards.FMBATCH
check = shards.check


def main():
    top = tempfile.mkdtemp(prefix="fmb_devices_")
    try:
        one = os.path.join(top, "one")
        shards.setup(one)
        r = shards.fm(one, "run", "job.toml", "--progress", "none")
        rc, ref, _ = shards.rows(one)
        check(r.returncode == 3 and len(ref) == 211, "one worker: 70 items x 3 tasks + 1 failed",
              "rc %d, %d rows" % (r.returncode, len(ref)))
        two = os.path.join(top, "two")
        shards.setup(two)
        r = shards.fm(two, "run", "job.toml", "--progress", "plain", "--progress-interval",
                      "0.05", "--devices", "0,0", "--max-batch", "2")
        rc, got, err = shards.rows(two)
        check(r.returncode == 3 and got == ref, "--devices 0,0: the rows of one worker",
              "rc %d, %d rows: %s" % (r.returncode, len(got), r.stderr[-500:]))
        db = sqlite3.connect(os.path.join(two, "out-all.db"))
        workers = db.execute("SELECT count(DISTINCT worker) FROM item WHERE status = 'done'"
                             ).fetchone()[0]
        db.close()
        check(workers == 2, "both workers took items", "%d workers" % workers)
        check("[worker 0 device 0] " in r.stderr and "[worker 1 device 0] " in r.stderr,
              "each worker's lines are prefixed", r.stderr[-300:])
        # one combined progress for both workers: the parent's own lines (unprefixed), the
        # last one with both workers' counts summed; no worker progress line and none of the
        # workers' machine lines shown
        lines = r.stderr.splitlines()
        own = [l for l in lines if l.startswith("fmbatch run: ") and " done, " in l]
        check(own and own[-1].startswith("fmbatch run: 70 done, 1 failed, 0 skipped, 71 seen"),
              "--devices: one combined progress line, the counts of both workers",
              own[-1] if own else r.stderr[-400:])
        check(any(l == "fmbatch run: finished in" or l.startswith("fmbatch run: finished in ")
                  for l in lines), "--devices: the parent says how the run ended", r.stderr[-300:])
        leaked = [l for l in lines if "fmbatch-progress" in l or
                  (l.startswith("[worker") and " done, " in l and "seen" in l)]
        check(not leaked, "--devices: no worker progress line printed", "; ".join(leaked[:3]))
        # --worker-slot K/N (what --devices gives each worker): alone, a worker's first pass
        # takes its share, leaves the rest queued, and its second pass takes that: the same
        # rows, nothing lost, and every document counted once
        slot = os.path.join(top, "slot")
        shards.setup(slot)
        r = shards.fm(slot, "run", "job.toml", "--progress", "plain", "--progress-interval",
                      "60", "--worker-slot", "1/3")
        rc, got, _ = shards.rows(slot)
        last = [l for l in r.stderr.splitlines() if " done, " in l and " seen" in l]
        check(r.returncode == 3 and got == ref and "another pass" in r.stderr,
              "--worker-slot 1/3 alone: a second pass takes the others' share, the same rows",
              "rc %d, %d rows: %s" % (r.returncode, len(got), r.stderr[-400:]))
        check(last and last[-1].startswith("fmbatch run: 70 done, 1 failed, 0 skipped, 71 seen"),
              "--worker-slot: the second pass counts each document once",
              last[-1] if last else r.stderr[-300:])
        db = sqlite3.connect(os.path.join(slot, "out-all.db"))
        attempts = db.execute("SELECT max(attempts) FROM item").fetchone()[0]
        db.close()
        check(attempts == 1, "--worker-slot: a document given back costs no attempt",
              "max attempts %r" % attempts)
        for bad in ("3/3", "1", "-1/2", "1/0"):
            r = shards.fm(slot, "run", "job.toml", "--worker-slot", bad)
            check(r.returncode == 2 and "--worker-slot must be" in r.stderr,
                  "--worker-slot %s is refused" % bad, r.stderr[-200:])
        r = shards.fm(two, "run", "job.toml", "--devices", "0,x")
        check(r.returncode == 2 and "--devices must be" in r.stderr, "a bad --devices is refused",
              r.stderr)
        # SIGINT to the parent: forwarded, items released, exit 130; then resume
        sig = os.path.join(top, "sig")
        shards.setup(sig)
        p = subprocess.Popen([FMBATCH, "run", "job.toml", "--progress", "none", "--devices",
                              "0,0", "--max-batch", "1"], cwd=sig, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        out, t0, sent = os.path.join(sig, "out-all.db"), time.time(), False
        while p.poll() is None and time.time() - t0 < 60:
            try:
                db = sqlite3.connect(out, timeout=1)
                k = db.execute("SELECT count(*) FROM item WHERE status = 'done'").fetchone()[0]
                db.close()
            except sqlite3.Error:
                k = 0
            if k >= 2:
                p.send_signal(signal.SIGINT)
                sent = True
                break
            time.sleep(0.005)
        _, err = p.communicate(timeout=120)
        db = sqlite3.connect(out)
        running = db.execute("SELECT count(*) FROM item WHERE status = 'running'").fetchone()[0]
        done = db.execute("SELECT count(*) FROM item WHERE status = 'done'").fetchone()[0]
        db.close()
        check(sent and p.returncode == 130 and running == 0 and done < 70,
              "SIGINT reaches both workers: items released, exit 130",
              "rc %r, %d running, %d done: %s" % (p.returncode, running, done, err[-400:]))
        r = shards.fm(sig, "run", "job.toml", "--progress", "none", "--devices", "0,0")
        rc, got, _ = shards.rows(sig)
        check(r.returncode in (0, 3) and got == ref, "the interrupted job resumes to the same rows",
              "rc %d, %d rows" % (r.returncode, len(got)))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("devices: %d failures" % shards.failures())
    return 1 if shards.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
