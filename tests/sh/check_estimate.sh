#!/bin/sh
# `fmbatch check`'s estimates (issue 13): items already done in the output are left out, the
# choice/generate prompts and the answers' decode steps are counted, and check creates no
# output; `status --count-source` counts the source and what is not queued yet. Prints PASS/FAIL lines for tests/run.sh.
set -u
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/docs"
for i in 1 2 3 4 5; do echo "document number $i with a few words in it" >"$T/docs/d$i.txt"; done
cat >"$T/j.toml" <<EOF2
[job]
name = "est"
model = "$PWD/tests/fixtures/tiny-a"
output = "out.db"
[source]
kind = "files"
paths = ["docs"]
[[task]]
name = "ppl"
kind = "score"
[[task]]
name = "pick"
kind = "choice"
prompt = "{document} Is it"
choices = [" yes", " no"]
[[task]]
name = "ans"
kind = "generate"
prompt = "{document} Answer:"
max_new_tokens = 7
EOF2
"$F" check "$T/j.toml" >"$T/c1.json" 2>"$T/c1.err"
rc1=$?
[ -e "$T/out.db" ] && made=1 || made=0
"$F" run "$T/j.toml" --max-items 2 >/dev/null 2>&1
"$F" check "$T/j.toml" >"$T/c2.json" 2>"$T/c2.err"
rc2=$?
"$F" status "$T/j.toml" --count-source >"$T/s1.json" 2>/dev/null
"$F" status "$T/j.toml" >"$T/s0.json" 2>/dev/null
python3 - "$T" "$rc1" "$rc2" "$made" <<'PY'
import json, sys
T, rc1, rc2, made = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def check(ok, what, detail=""):
    print(("PASS " if ok else "FAIL ") + "check estimate: " + what + ("" if ok else ": " + detail))
check(rc1 == 0 and rc2 == 0, "check exits 0", "%d %d" % (rc1, rc2))
check(made == 0, "check creates no output")
a = json.load(open(T + "/c1.json"))
b = json.load(open(T + "/c2.json"))
check(a["done_items"] == 0 and a["items_to_run"] == 5, "before a run: 5 to run", repr(a))
check(a["estimated_decode_tokens"] == 5 * 7, "decode tokens: max_new_tokens per document",
      repr(a["estimated_decode_tokens"]))
check(a["estimated_prefill_tokens"] > a["estimated_tokens"],
      "the prompts and choices are prefilled too", "%d vs %d" % (a["estimated_prefill_tokens"],
                                                                a["estimated_tokens"]))
check(a["estimated_seconds"] is not None and a["estimated_seconds"] >= a["estimated_decode_seconds"] > 0,
      "a decode time and a total", repr(a))
check(b["done_items"] == 2 and b["items_to_run"] == 3, "after 2 done: 3 to run", repr(b))
s1 = json.load(open(T + "/s1.json"))
s0 = json.load(open(T + "/s0.json"))
check(s1["source_items"] == 5 and s1["not_queued"] == 5 - s1["total"] and s1["done"] == 2,
      "status --count-source: the source's documents and those not queued yet", repr(s1))
check("source_items" not in s0, "status reads no source without --count-source", repr(s0))
check(b["estimated_decode_tokens"] == 3 * 7 and
      b["estimated_prefill_tokens"] < a["estimated_prefill_tokens"],
      "the estimates leave the done items out", repr(b))
PY
