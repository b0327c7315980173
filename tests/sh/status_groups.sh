#!/bin/sh
# `fmbatch status` groups failures by kind ("bad JSON", "text field ... missing"), not by line:
# the source's reasons read "kind: details" and the detail stays with each item.
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
printf '{"id":"a","text":"ok"}\n{bad json\n{"id":"c"}\n{"id":"d","text":5}\n{bad again\n' >"$T/d.jsonl"
cat >"$T/job.toml" <<J
[job]
name = "groups"
model = "$PWD/tests/fixtures/tiny-a"
output = "out.db"

[source]
kind = "jsonl"
paths = ["d.jsonl"]
id_field = "id"

[[task]]
name = "ppl"
kind = "score"
J
"$F" run "$T/job.toml" --progress none >/dev/null 2>&1
"$F" status "$T/job.toml" >"$T/st.json"
python3 - "$T/st.json" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
g = {f["reason"]: f["count"] for f in st["failures"]}
want = {"bad JSON": 2, "text field 'text' is missing or not a string": 2}
print("PASS status groups failures by kind" if g == want else "FAIL status groups failures by kind: %r" % g)
PY
