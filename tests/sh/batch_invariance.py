"""Batch invariance end to end: a job's exported rows are byte-identical (timing fields aside)
whatever the batch (--max-batch 1, 3, the default), the source order (as written, shuffled),
and after kill -9 + resume in a batched run. The corpus: documents of 1 to ~5,000 tokens with
a per-token score, a 3-way choice, a sampled generation (temperature 0.8) and one with the
penalties, min_p, n = 3 samples and logprobs = 2, on the tiny model.
Run from the repository root with FMBATCH = the binary; prints PASS/FAIL lines.
"""
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
TIMING = ("finished_at", "prefill_seconds", "task_seconds", "item_id")
JOB = r'''[job]
name = "inv"
model = "%s"
output = "%s"
seed = 77
threads = 1

[source]
kind = "jsonl"
paths = ["%s"]
id_field = "id"

[[task]]
name = "ppl"
kind = "score"
per_token = true
top_k_tokens = 3

[[task]]
name = "kind"
kind = "choice"
prompt = "{document}\n\nThis text is"
choices = [" prose", " code", " noise"]

[[task]]
name = "next"
kind = "generate"
prompt = "{document}\nContinue:"
max_new_tokens = 16
temperature = 0.8
top_k = 40
top_p = 0.95

[[task]]
name = "pen"
kind = "generate"
prompt = "{document}\nSummary:"
max_new_tokens = 6
temperature = 1.1
min_p = 0.02
repetition_penalty = 1.4
presence_penalty = 0.4
frequency_penalty = 0.6
n = 3
logprobs = 2
'''

WORDS = ("the of and a to in is was for on that with as by it at from his an were are which "
         "this be or has had not but one been new their first also who after more two year "
         "when would other its into most time may some than over only years can state made "
         "def return if else for while import print self int str").split()


def corpus(n, seed=5):
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        r = rnd.random()
        words = 0 if r < 0.02 else rnd.randint(1, 8) if r < 0.3 else rnd.randint(10, 300) \
            if r < 0.9 else rnd.randint(1000, 4000)
        text = " ".join(rnd.choice(WORDS) for _ in range(words))
        docs.append({"id": "d%04d" % i, "text": text})
    return docs


def write_jsonl(path, docs):
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")


def run(d, job, *args):
    return subprocess.run([FMBATCH, "run", job, "--progress", "none"] + list(args), cwd=d,
                          capture_output=True, text=True)


def rows(d, job):
    r = subprocess.run([FMBATCH, "export", job, "--format", "jsonl"], cwd=d,
                       capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        o = json.loads(line)
        for k in TIMING:
            o.pop(k, None)
        out.append(json.dumps(o, sort_keys=True))
    return r.returncode, out


def main():
    top = d = tempfile.mkdtemp(prefix="fmb_inv_")
    try:
        # Each case in its own folder with the same file name: keys (and so the per-item
        # sampling seeds) are the same in every case.
        docs = corpus(240)
        shuffled = docs[:]
        random.Random(9).shuffle(shuffled)
        cases = [("b1", docs, ["--max-batch", "1"]), ("bdef", docs, []),
                 ("b3", docs, ["--max-batch", "3"]), ("b7shuf", shuffled, ["--max-batch", "7"]),
                 ("bdefshuf", shuffled, [])]
        ref = None
        for name, src, args in cases:
            cd = os.path.join(d, name)
            os.mkdir(cd)
            write_jsonl(os.path.join(cd, "docs.jsonl"), src)
            with open(os.path.join(cd, "job.toml"), "w") as f:
                f.write(JOB % (MODEL, "out.db", "docs.jsonl"))
            t0 = time.time()
            r = run(cd, "job.toml", *args)
            rc, got = rows(cd, "job.toml")
            print("NOTE batch_invariance %s: %.1f s" % (name, time.time() - t0))
            check(r.returncode == 0 and rc == 0 and len(got) == 4 * len(docs),
                  "run %s completes (%d rows)" % (name, len(got)), r.stderr[-400:])
            if ref is None:
                ref = got
                continue
            diff = [i for i, (a, b) in enumerate(zip(ref, got)) if a != b]
            check(got == ref, "rows of %s byte-identical to --max-batch 1" % name,
                  "%d rows differ, first: %s vs %s" % (len(diff), ref[diff[0]][:300],
                                                     got[diff[0]][:300]) if diff else "row count")
        # kill -9 during a batched run, then resume: the same rows, none lost or duplicated
        d = os.path.join(d, "b1")  # the reference's folder and source, a new output
        with open(os.path.join(d, "kill.toml"), "w") as f:
            # (a kill counts an attempt against every item in flight: keep them from going dead)
            f.write((JOB % (MODEL, "kill.db", "docs.jsonl")).replace("threads = 1",
                                                                  "threads = 1\nmax_attempts = 50"))
        kills = 0
        for delay in (0.3, 0.8, 1.5):
            p = subprocess.Popen([FMBATCH, "run", "kill.toml", "--progress", "none",
                                  "--max-batch", "5"], cwd=d, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if p.poll() is None:
                p.kill()
                kills += 1
            p.wait()
        r = run(d, "kill.toml", "--max-batch", "5")
        rc, got = rows(d, "kill.toml")
        db = sqlite3.connect(os.path.join(d, "kill.db"))
        dup = db.execute("SELECT count(*) - count(DISTINCT item_key || '/' || task) FROM result"
                         ).fetchone()[0]
        db.close()
        check(r.returncode == 0 and got == ref and dup == 0,
              "kill -9 x%d during batched runs, then resume: rows equal, none duplicated" % kills,
              "rc %d, %d rows, %d duplicates" % (r.returncode, len(got), dup))
    finally:
        shutil.rmtree(top)
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main())
