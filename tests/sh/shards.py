"""Shards end to end (docs/JOBS.md "Shards"), CPU backend, tiny model:
- shards 0..N-1 (N = 1, 3, 7) of a corpus hold every item exactly once, and each key is in the
  shard its hash names (an independent FNV-1a here: engine/hash.h's fmb_hash64);
- `fmbatch merge` of the shards exports the same rows (timing fields aside) as the unsharded
  run, a sampled generation task included; status/export/report open the merged output;
- a shard killed with kill -9 resumes and its merge is still exact;
- merge refuses a shard of another job, the same shard twice, an item twice, a file whose keys
  are not its shard's; merging again adds only the new shards.
Run from the repository root with FMBATCH = the binary; prints PASS/FAIL lines.
"""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from e2e import check, failures

FMBATCH = os.environ.get("FMBATCH") or os.path.abspath("build/fmbatch")
MODEL = os.path.abspath("tests/fixtures/tiny-a")
TIMING = ("finished_at", "prefill_seconds", "task_seconds", "item_id")
JOB = r'''[job]
name = "shards"
model = "%s"
output = "%s"
seed = %d
threads = 1

[source]
kind = "jsonl"
paths = ["docs.jsonl"]
id_field = "id"

[[task]]
name = "ppl"
kind = "score"
per_token = true

[[task]]
name = "kind"
kind = "choice"
prompt = "{document}\n\nThis text is"
choices = [" prose", " code"]

[[task]]
name = "next"
kind = "generate"
prompt = "{document}\nContinue:"
max_new_tokens = 8
temperature = 0.8
top_k = 40
'''

WORDS = "the of and a to in is was for on that with as by it at from def return if else".split()


def fnv1a64(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def setup(d, seed=7, output="out-{shard}.db"):
    os.makedirs(d, exist_ok=True)
    rnd = random.Random(5)
    with open(os.path.join(d, "docs.jsonl"), "w") as f:
        for i in range(70):
            n = rnd.randint(1, 60) if i % 10 else rnd.randint(600, 1200)
            f.write(json.dumps({"id": "doc-%03d" % i,
                                "text": " ".join(rnd.choice(WORDS) for _ in range(n))}) + "\n")
        f.write("{not json\n")  # a failed item: it belongs to a shard too
    with open(os.path.join(d, "job.toml"), "w") as f:
        f.write(JOB % (MODEL, output, seed))


def fm(d, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([FMBATCH] + list(args), cwd=d, capture_output=True, text=True, env=e)


def rows(d, *extra):
    r = fm(d, "export", "job.toml", "--format", "jsonl", "--include-failed", *extra)
    out = []
    for line in r.stdout.splitlines():
        o = json.loads(line)
        for k in TIMING:
            o.pop(k, None)
        out.append(json.dumps(o, sort_keys=True))
    return r.returncode, out, r.stderr


def keys(path):
    db = sqlite3.connect(path)
    try:
        return [k for (k,) in db.execute("SELECT key FROM item")]
    finally:
        db.close()


def meta(path, key):
    db = sqlite3.connect(path)
    try:
        r = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None
    finally:
        db.close()


def main():
    top = tempfile.mkdtemp(prefix="fmb_shards_")
    try:
        base = os.path.join(top, "base")
        setup(base)
        r = fm(base, "run", "job.toml", "--progress", "none")
        rc, ref, err = rows(base)
        all_keys = sorted(keys(os.path.join(base, "out-all.db")))
        check(r.returncode == 3 and rc == 0 and len(all_keys) == 71 and len(ref) == 70 * 3 + 1,
              "unsharded run: 71 items, one failed ({shard} -> all)",
              "rc %d/%d, %d keys, %d rows: %s" % (r.returncode, rc, len(all_keys), len(ref),
                                                  r.stderr[-300:] + err[-300:]))
        fp = meta(os.path.join(base, "out-all.db"), "fingerprint")
        check(fp and "job.shard" not in fp, "an unsharded job's fingerprint has no shard line")
        for n in (1, 3, 7):
            d = os.path.join(top, "n%d" % n)
            setup(d)
            seen, bad_place, rcs = [], [], []
            for i in range(n):
                args = ["run", "job.toml", "--progress", "none", "--shard", "%d/%d" % (i, n)]
                if n == 3 and i == 1:
                    # kill -9 in the middle of shard 1/3, then resume it
                    p = subprocess.Popen([FMBATCH] + args + ["--max-batch", "1"], cwd=d,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    out, killed, t0 = os.path.join(d, "out-1.db"), False, time.time()
                    while p.poll() is None and time.time() - t0 < 60:
                        try:
                            db = sqlite3.connect(out, timeout=1)
                            k = db.execute("SELECT count(*) FROM item WHERE status = 'done'"
                                           ).fetchone()[0]
                            db.close()
                        except sqlite3.Error:
                            k = 0
                        if k >= 2:
                            p.send_signal(signal.SIGKILL)
                            killed = True
                            break
                        time.sleep(0.005)
                    p.wait()
                    db = sqlite3.connect(out)
                    left = db.execute("SELECT count(*) FROM item WHERE status != 'done' AND "
                                      "status != 'failed'").fetchone()[0]
                    db.close()
                    check(killed and p.returncode == -signal.SIGKILL,
                          "kill -9 of shard 1/3 mid-run", "rc %r" % p.returncode)
                    r = fm(d, "merge", "early.db", "out-1.db")
                    check(r.returncode == 3 and '"unfinished":[1]' in r.stdout,
                          "merge leaves an unfinished shard out (exit 3)",
                          "rc %d left %d: %s %s" % (r.returncode, left, r.stdout, r.stderr))
                r = fm(d, *args)
                rcs.append(r.returncode)
                ks = keys(os.path.join(d, "out-%d.db" % i))
                seen += ks
                bad_place += [k for k in ks if n > 1 and fnv1a64(k) % n != i]
                if n == 3 and i == 1:
                    check(r.returncode in (0, 3) and "shard 1/3" in r.stderr,
                          "the killed shard resumes", r.stderr[-300:])
            check(sorted(seen) == all_keys,
                  "shards 0..%d of %d hold every item exactly once" % (n - 1, n),
                  "%d keys, %d distinct, %d expected" % (len(seen), len(set(seen)),
                                                         len(all_keys)))
            check(not bad_place, "every key of %d shards is in the shard its hash names" % n,
                  str(bad_place[:3]))
            if n > 1:
                f1 = meta(os.path.join(d, "out-1.db"), "fingerprint")
                check(f1 and ("job.shard = 1/%d\n" % n) in f1 and
                      f1.replace("job.shard = 1/%d\n" % n, "") == fp,
                      "a shard's fingerprint is the job's plus job.shard = 1/%d" % n)
            shard_files = ["out-%d.db" % i for i in range(n)]
            if n == 7:  # merge in two steps: the second adds only the new shards
                r = fm(d, "merge", "out-all.db", *shard_files[:3])
                check(r.returncode == 0 and '"missing":[3,4,5,6]' in r.stdout,
                      "a partial merge lists the missing shards", r.stdout + r.stderr)
                r = fm(d, "merge", "out-all.db", *shard_files)
                check(r.returncode == 0 and '"merged":[3,4,5,6]' in r.stdout and
                      '"skipped":[0,1,2]' in r.stdout and '"complete":true' in r.stdout,
                      "merging again adds only the new shards", r.stdout + r.stderr)
            else:
                r = fm(d, "merge", "out-all.db", *shard_files)
                check(r.returncode == 0 and '"complete":true' in r.stdout,
                      "merge of %d shards" % n, r.stdout + r.stderr)
            rc, got, err = rows(d)
            diff = [i for i, (a, b) in enumerate(zip(ref, got)) if a != b]
            check(rc == 0 and got == ref,
                  "merge of %d shards exports the unsharded run's rows" % n,
                  "rc %d, %d vs %d rows, %s" % (rc, len(got), len(ref),
                                                 (ref[diff[0]][:200] + " vs " + got[diff[0]][:200])
                                                 if diff else err[-300:]))
            st = fm(d, "status", "job.toml")
            rp = fm(d, "report", "job.toml", "--no-snippets")
            check(st.returncode == 0 and '"done":70' in st.stdout and '"failed":1' in st.stdout
                  and rp.returncode == 0, "status and report read the merged output",
                  st.stdout + st.stderr + rp.stderr)
        # refusals
        d = os.path.join(top, "n3")
        r = fm(d, "merge", "x.db", "out-0.db", "out-0.db")
        check(r.returncode == 2 and "given twice" in r.stderr and not os.path.exists(
            os.path.join(d, "x.db")), "the same shard twice is refused", r.stderr)
        other = os.path.join(top, "other")
        setup(other, seed=8)
        fm(other, "run", "job.toml", "--progress", "none", "--shard", "2/3")
        r = fm(d, "merge", "y.db", "out-0.db", os.path.join(other, "out-2.db"))
        check(r.returncode == 2 and "not a shard of the same job" in r.stderr and
              "job.seed" in r.stderr and not os.path.exists(os.path.join(d, "y.db")),
              "a shard of another job is refused", r.stderr)
        r = fm(d, "merge", "out-all.db", os.path.join(other, "out-2.db"))
        check(r.returncode == 2 and "another job" in r.stderr,
              "merging another job's shard into a merged output is refused", r.stderr)
        # an item twice: the merged output forgets that shard 1 is in it
        db = sqlite3.connect(os.path.join(d, "out-all.db"))
        db.execute("UPDATE meta SET value = '0,2' WHERE key = 'merged_shards'")
        db.commit()
        db.close()
        r = fm(d, "merge", "out-all.db", "out-1.db")
        check(r.returncode == 2 and "already" in r.stderr and "twice" in r.stderr,
              "an item merged twice is refused", r.stderr)
        check(rows(d)[1] == ref, "a refused merge writes nothing")
        # a file whose fingerprint names another shard than its keys
        src = sqlite3.connect(os.path.join(d, "out-1.db"))
        db = sqlite3.connect(os.path.join(d, "fake.db"))
        src.backup(db)
        src.close()
        db.execute("UPDATE meta SET value = replace(value, 'job.shard = 1/3', 'job.shard = 2/3')"
                   " WHERE key = 'fingerprint'")
        db.commit()
        db.close()
        r = fm(d, "merge", "z.db", "fake.db")
        check(r.returncode == 2 and "does not belong to shard 2/3" in r.stderr,
              "a file holding another shard's keys is refused", r.stderr)
        # every item done but no run has gone through the whole source (a worker between two
        # windows looks like this): not taken
        db = sqlite3.connect(os.path.join(d, "fake.db"))
        db.execute("DELETE FROM meta WHERE key = 'source_complete'")
        db.execute("UPDATE meta SET value = replace(value, 'job.shard = 2/3', 'job.shard = 1/3')"
                   " WHERE key = 'fingerprint'")
        db.commit()
        db.close()
        r = fm(d, "merge", "z.db", "fake.db")
        check(r.returncode == 3 and "no run has gone through the source" in r.stderr and
              '"unfinished":[1]' in r.stdout, "a shard whose run has not ended is not merged",
              r.stdout + r.stderr)
        r = fm(d, "run", "job.toml", "--shard", "3/3")
        check(r.returncode == 2 and "0 <= I < N" in r.stderr, "--shard 3/3 is refused", r.stderr)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("shards: %d failures" % failures())
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main())
