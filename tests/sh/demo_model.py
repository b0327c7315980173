"""The demo model's scores mean something (issue 12), on held-out text it was not trained on.

For each held-out English document in tests/fixtures/demo-model/heldout.jsonl: bits per byte of
the text < of the same words shuffled < of random bytes of the same length, each by a wide
margin on average; greedy continuations of English prompts are mostly dictionary words
(/usr/share/dict/words, Debian's wamerican). Prints PASS/FAIL lines for tests/run.sh.
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

F = os.environ["FMBATCH"]
MODEL = "jobs/demo/model"
HELD = "tests/fixtures/demo-model/heldout.jsonl"
WORDS = "/usr/share/dict/words"
ENGLISH = ("fortune-en", "kjv", "man", "python-doc")
PROMPTS = ["The meaning of life is", "In the beginning", "This manual page describes",
           "The following options are available:", "If you want to install the package,",
           "And the LORD said unto Moses,", "A computer is", "The file is opened and"]
fails = 0


def check(ok, what, detail=""):
    global fails
    print(("PASS " if ok else "FAIL ") + what + ("" if ok else ": " + detail))
    fails += not ok


def fmb(*args, stdin=None):
    r = subprocess.run([F, *args], capture_output=True, input=stdin)
    if r.returncode != 0:
        sys.exit("FAIL demo model: fmbatch %s exited %d: %s" % (args[0], r.returncode,
                                                                r.stderr.decode()[-400:]))
    return json.loads(r.stdout.decode().strip().split("\n")[-1])


def bpb(tmp, data):
    path = os.path.join(tmp, "doc")
    with open(path, "wb") as f:
        f.write(data)
    return fmb("score", "--model", MODEL, "--text-file", path)["bits_per_byte"]


docs = [json.loads(l) for l in open(HELD, encoding="utf-8")]
docs = [d for d in docs if d["source"] in ENGLISH]
rng = random.Random(12)
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for d in docs:
        text = d["text"].encode()
        words = d["text"].split()
        rng.shuffle(words)
        shuffled = " ".join(words).encode()
        noise = bytes(rng.randrange(256) for _ in range(len(text)))
        rows.append((d["id"], bpb(tmp, text), bpb(tmp, shuffled), bpb(tmp, noise)))
n = len(rows)
ordered = sum(1 for _, a, b, c in rows if a < b < c)
mean = [sum(r[i] for r in rows) / n for i in (1, 2, 3)]
print("NOTE demo model, %d held-out English documents: bits per byte %.3f (text), %.3f (words "
      "shuffled), %.3f (random bytes)" % (n, *mean))
check(n >= 10, "demo model: at least 10 held-out English documents", "%d" % n)
check(ordered == n, "demo model: text < shuffled words < random bytes for every document",
      "; ".join("%s %.3f %.3f %.3f" % r for r in rows if not r[1] < r[2] < r[3]))
check(mean[0] * 1.5 < mean[1], "demo model: shuffled words cost > 1.5x the text",
      "%.3f vs %.3f" % (mean[0], mean[1]))
check(mean[1] * 1.5 < mean[2], "demo model: random bytes cost > 1.5x shuffled words",
      "%.3f vs %.3f" % (mean[1], mean[2]))

if not os.path.exists(WORDS):
    check(False, "demo model: greedy continuations", WORDS + " is missing (Debian: wamerican; "
          "tools/deps.sh test installs it)")
else:
    vocab = {w.strip().lower() for w in open(WORDS, encoding="utf-8", errors="replace")}
    total = known = 0
    for p in PROMPTS:
        out = fmb("generate", "--model", MODEL, "--prompt", p, "--max-new-tokens", "24",
                  "--ignore-eos")
        ws = re.findall(r"[A-Za-z]+", out["text"])
        total += len(ws)
        known += sum(1 for w in ws if w.lower() in vocab)
        print("NOTE demo model: %r -> %r" % (p, out["text"]))
    check(total >= 40 and known >= 0.8 * total,
          "demo model: greedy continuations are mostly dictionary words",
          "%d of %d words in %s" % (known, total, WORDS))
    print("NOTE demo model: %d of %d continuation words are in %s" % (known, total, WORDS))
sys.exit(0)
