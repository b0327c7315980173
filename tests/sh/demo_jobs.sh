#!/bin/sh
# The bundled demo's jobs (jobs/demo/demo.toml, demo-jsonl.toml) over its corpus, in a copy with
# the tiny-a fixture as the model (jobs/demo/model may be any small model): exactly the six
# inputs tools/make_demo_corpus.py breaks on purpose fail, each with its own reason, every other
# document lands with all three tasks' rows (one per kind of document at least), the first run
# exits 3 and a second run does nothing and exits 0.
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cp jobs/demo/demo.toml jobs/demo/demo-jsonl.toml jobs/demo/corpus.tar.gz jobs/demo/corpus.jsonl "$T/"
for j in demo demo-jsonl; do
    sed -i "s|^model  = \"model\"|model  = \"$PWD/tests/fixtures/tiny-a\"|" "$T/$j.toml"
    "$F" run "$T/$j.toml" --progress none >"$T/$j.log1" 2>&1
    echo "rc1 $?" >>"$T/rcs"
    "$F" export "$T/$j.toml" --format jsonl >"$T/$j.rows1"
    "$F" run "$T/$j.toml" --progress none >"$T/$j.log2" 2>&1
    echo "rc2 $?" >>"$T/rcs"
    "$F" status "$T/$j.toml" >"$T/$j.status"
    "$F" export "$T/$j.toml" --format jsonl >"$T/$j.rows"
done
python3 - "$T" <<'PY'
import json, os, sys, tarfile
T = sys.argv[1]
def ok(name, got, want):
    print("PASS %s" % name if got == want else "FAIL %s: got %r, want %r" % (name, got, want))
ok("demo_exit_codes", open(os.path.join(T, "rcs")).read().split(),
   ["rc1", "3", "rc2", "0", "rc1", "3", "rc2", "0"])
# What the corpus holds, read independently of fmbatch.
names = [m.name for m in tarfile.open(os.path.join(T, "corpus.tar.gz"))]
lines = [l for l in open(os.path.join(T, "corpus.jsonl"), encoding="utf-8")]
want_fail = {
    "demo": {"entry is over max_entry_bytes (16384 bytes)": 1, "duplicate key": 1},
    "demo-jsonl": {"bad JSON": 1, "text field 'text' is missing or not a string": 1,
                   "line is over max_entry_bytes (16384 bytes)": 1, "duplicate key": 1},
}
for job, n in (("demo", len(names)), ("demo-jsonl", len(lines))):
    st = json.load(open(os.path.join(T, job + ".status")))
    nfail = sum(want_fail[job].values())
    ok(job + "_counts", (st["total"], st["done"], st["failed"]), (n, n - nfail, nfail))
    ok(job + "_failures", {f["reason"]: f["count"] for f in st["failures"]}, want_fail[job])
    rows = [json.loads(l) for l in open(os.path.join(T, job + ".rows"))]
    per_item = {}
    for r in rows:
        per_item.setdefault(r["item_key"], set()).add(r["task"])
    ok(job + "_three_rows_each", {k for k, v in per_item.items() if v != {"ppl", "kind", "gist"}}, set())
    ok(job + "_items_with_rows", len(per_item), st["done"])
    kinds = {k.split("!")[-1].split("#")[-1].split("/")[-1].split("-")[0] for k in per_item}
    ok(job + "_kinds", {"prose", "lang", "code", "boilerplate", "garbage"} - kinds, set())
    # the second run wrote nothing: the rows (finished_at included) are those of the first
    ok(job + "_rerun_wrote_nothing", open(os.path.join(T, job + ".rows1")).read() ==
       open(os.path.join(T, job + ".rows")).read(), True)
PY
