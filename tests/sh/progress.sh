#!/bin/sh
# Progress (issue 13): the bar fits 80 columns (it never wraps), moves within a long document
# (the batch's prefill percentage grows while one 450K-token document runs), shows the key being
# worked on, and the run knows the source's total (counted on a thread of its own) instead of
# "seen so far". Prints PASS/FAIL lines for tests/run.sh.
set -u
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/docs"
python3 - "$T/docs" <<'PY'
import random, sys
random.seed(1)
w = ["alpha", "beta", "gamma", "delta", "the", "of", "and", "model", "state", "scan"]
open(sys.argv[1] + "/long.txt", "w").write(" ".join(random.choice(w) for _ in range(150000)))
for i in range(5):
    open(sys.argv[1] + "/s%d.txt" % i, "w").write("short document %d" % i)
PY
cat >"$T/p.toml" <<EOF2
[job]
name = "p"
model = "$PWD/tests/fixtures/tiny-a"
output = "p.db"
chunk_tokens = 256
[source]
kind = "files"
paths = ["docs"]
[[task]]
name = "ppl"
kind = "score"
EOF2
"$F" run "$T/p.toml" --progress bar 2>"$T/err" >/dev/null
rc=$?
python3 - "$T/err" "$rc" <<'PY'
import re, sys
raw = open(sys.argv[1], encoding="utf-8", errors="replace", newline="").read()
rc = int(sys.argv[2])
def check(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + "progress: " + what + ("" if ok else ": " + detail))
check(rc == 0, "the run exits 0", str(rc))
bars = [s.replace("\x1b[K", "") for s in raw.split("\r")[1:]]
bars = [b.split("\n")[0] for b in bars]
check(len(bars) >= 3, "the bar was drawn", "%d redraws" % len(bars))
wide = [b for b in bars if len(b) > 79]
check(not wide, "every redraw fits 79 columns", repr(wide[:1]))
pct = [int(m.group(1)) for b in bars for m in [re.search(r"prefill (\d+)%", b)] if m]
check(len(set(pct)) >= 2 and pct == sorted(pct),
      "the prefill percentage moves within the long document", repr(pct))
check(any("docs/" in b for b in bars), "the bar shows a key being worked on", repr(bars[-1:]))
check(re.search(r"\b6 seen of 6;", raw) is not None, "the final line knows the source's total",
      raw.strip().split("\n")[-2:].__repr__())
check(any(re.search(r"\] \d+/6 ", b) for b in bars), "the bar counts against the total",
      repr(bars[-1:]))
PY
