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

# A document holding NUL bytes is scored and its rows say it is probably binary.
printf '{"id":"n","text":"ab\\u0000cd"}\n{"id":"t","text":"plain"}\n' >"$T/n.jsonl"
sed -e 's/d.jsonl/n.jsonl/' -e 's/out.db/nul.db/' -e 's/"groups"/"nul"/' "$T/job.toml" >"$T/nul.toml"
"$F" run "$T/nul.toml" --progress none >/dev/null 2>&1
"$F" export "$T/nul.toml" --format jsonl >"$T/nul.jsonl"
python3 - "$T/nul.jsonl" <<'PY'
import json, sys
rows = {r["item_key"]: r for r in map(json.loads, open(sys.argv[1]))}
ok = "NUL bytes" in (rows.get("n.jsonl#n", {}).get("note") or "") and rows.get("n.jsonl#t", {}).get("note") is None
print("PASS a document with NUL bytes is noted as binary" if ok else "FAIL a document with NUL bytes is noted as binary: %r" % rows)
PY
