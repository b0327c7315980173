#!/bin/sh
# Issue 13's export and source points against independent expectations: export --task,
# --columns (an unknown one: exit 2 naming it), --wide, doc_id, job task order, special tokens
# cut from generated text (--keep-special keeps them); [source].keep_fields (null when a record
# lacks one; exit 2 at check on a files source), key = "content" (identical documents are
# duplicates naming the first), check's note on line-number keys, max_document_bytes (the
# document fails its row, nothing else), and prune (reports, --apply removes).
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
M="$PWD/tests/fixtures/tiny-a"
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
printf '{"id":"a","text":"one doc","lang":"en","n":1.5}\n{"id":"b","text":"another doc"}\n' >"$T/d.jsonl"
cat >"$T/job.toml" <<J
[job]
name = "x"
model = "$M"
output = "out.db"
[source]
kind = "jsonl"
paths = ["d.jsonl"]
id_field = "id"
keep_fields = ["lang", "n"]
[[task]]
name = "zgen"
kind = "generate"
prompt = "{document} Title:"
max_new_tokens = 4
extract = { t = "(?<t>.+)" }
[[task]]
name = "ppl"
kind = "score"
J
"$F" run "$T/job.toml" --progress none >/dev/null 2>&1
"$F" export "$T/job.toml" >"$T/all.jsonl"
"$F" export "$T/job.toml" --keep-special --task zgen --columns item_key,text,ids >"$T/keep.jsonl"
"$F" export "$T/job.toml" --task ppl,zgen --task zgen --columns doc_id,task >"$T/sel.jsonl"
"$F" export "$T/job.toml" --wide >"$T/wide.jsonl"
"$F" export "$T/job.toml" --wide --format csv --columns item_key,doc_id,mean_nll,text,meta >"$T/wide.csv"
python3 - "$T" <<'PY'
import csv, json, sys
T = sys.argv[1]
rows = [json.loads(l) for l in open(T + "/all.jsonl")]
def res(name, ok, why=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(why)))
order = [(r["item_key"], r["task"]) for r in rows]
res("export: rows by key, then the job's task order (zgen before ppl)",
    order == [("d.jsonl#a", "zgen"), ("d.jsonl#a", "ppl"), ("d.jsonl#b", "zgen"), ("d.jsonl#b", "ppl")], order)
keys = list(rows[0].keys())
res("export: doc_id beside item_key, meta last", keys[1:3] == ["item_key", "doc_id"] and keys[-1] == "meta"
    and rows[0]["doc_id"] == "a" and rows[0]["meta"] == {"lang": "en", "n": 1.5}
    and rows[2]["meta"] == {"lang": None, "n": None}, rows[0])
# Python's repr is the shortest text that reads back to the same double: the raw lines must
# hold exactly it (float32 values, e.g. logprobs stored as %.9g text, are shorter still)
raw = open(T + "/all.jsonl").read()
bad = [(r["task"], c, r[c]) for r in rows for c in ("sum_nll", "mean_nll", "ppl", "bits_per_byte", "task_seconds")
       if isinstance(r[c], float) and ('"%s":%s,' % (c, repr(r[c]))) not in raw]
res("export: floats in their shortest round-trip text", not bad and any(r["mean_nll"] for r in rows), bad)
keep = {r["item_key"]: r for r in map(json.loads, open(T + "/keep.jsonl"))}
plain = {r["item_key"]: r for r in rows if r["task"] == "zgen"}
SPECIAL = ">>INTRODUCTION<<"  # id 2 of tiny-a's tokenizer, a special added token
kb = keep["d.jsonl#b"]
res("export --keep-special: the special token stays (tiny-a generates id 2 here)",
    SPECIAL in kb["text"] and 2 in kb["ids"] and list(kb) == ["item_key", "text", "ids"], kb)
res("export: special tokens cut from the text by default, ids kept",
    plain["d.jsonl#b"]["text"] == kb["text"].replace(SPECIAL, "") and plain["d.jsonl#b"]["ids"] == kb["ids"]
    and plain["d.jsonl#a"]["text"] == keep["d.jsonl#a"]["text"], (plain["d.jsonl#b"]["text"], kb["text"]))
sel = [json.loads(l) for l in open(T + "/sel.jsonl")]
res("export --task (repeated, comma lists) --columns in order",
    sel == [{"doc_id": "a", "task": "zgen"}, {"doc_id": "a", "task": "ppl"}, {"doc_id": "b", "task": "zgen"},
            {"doc_id": "b", "task": "ppl"}], sel)
wide = [json.loads(l) for l in open(T + "/wide.jsonl")]
w0 = wide[0]
ppl_a = [r for r in rows if r["task"] == "ppl" and r["item_key"] == "d.jsonl#a"][0]
gen_a = plain["d.jsonl#a"]
res("export --wide: one row per document, a group per task",
    len(wide) == 2 and w0["item_key"] == "d.jsonl#a" and w0["ppl.mean_nll"] == ppl_a["mean_nll"]
    and w0["zgen.text"] == gen_a["text"] and w0["zgen.fields.t"] == gen_a["extract"]["t"]
    and w0["meta.lang"] == "en" and "zgen.mean_nll" not in w0
    and list(w0).index("zgen.status") < list(w0).index("ppl.status"), w0)
wc = list(csv.reader(open(T + "/wide.csv")))
res("export --wide --format csv --columns",
    wc[0] == ["item_key", "doc_id", "meta.lang", "meta.n", "zgen.text", "ppl.mean_nll"] and len(wc) == 3
    and wc[1][1] == "a" and float(wc[1][5]) == ppl_a["mean_nll"] and wc[2][2] == "", wc)
PY
"$F" export "$T/job.toml" --columns item_key,nope >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "unknown column 'nope'" "$T/err" && grep -q "item_key, doc_id, task" "$T/err"; then
    pass "export: an unknown column exits 2 naming it and the valid ones"
else fail "export: unknown column" "rc $rc: $(cat "$T/err")"; fi
"$F" export "$T/job.toml" --task nope >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "'nope' is not a task" "$T/err" && grep -q "tasks: zgen, ppl" "$T/err"; then
    pass "export: an unknown task exits 2 naming the tasks"
else fail "export: unknown task" "rc $rc: $(cat "$T/err")"; fi

# keep_fields on a files source: exit 2 at check naming the key
mkdir -p "$T/docs/sub"
printf 'alpha text' >"$T/docs/a.txt"
printf 'alpha text' >"$T/docs/sub/b.txt"
printf 'other text' >"$T/docs/sub/c.txt"
head -c 3000 /dev/zero >"$T/docs/zeros.bin"
files_job() {
    cat >"$T/files.toml" <<J
[job]
name = "f"
model = "$M"
output = "files.db"
max_document_bytes = 2000
[source]
kind = "files"
paths = ["docs"]
$1
[[task]]
name = "ppl"
kind = "score"
J
}
files_job 'keep_fields = ["x"]'
"$F" check "$T/files.toml" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "keep_fields" "$T/err"; then pass "check: keep_fields on a files source exits 2 naming it"
else fail "check: keep_fields on files" "rc $rc: $(cat "$T/err")"; fi

# key = "content": b.txt repeats a.txt's bytes: failed, naming the first; the zero document is
# over max_document_bytes: its own failed row; doc_id is the path inside the folder
files_job 'key = "content"'
"$F" run "$T/files.toml" --progress none >/dev/null 2>&1
got=$(sqlite3 "$T/files.db" "SELECT key || '|' || coalesce(doc_id, '') || '|' || status || '|' || coalesce(error, '') FROM item ORDER BY doc_id")
ha=$(sqlite3 "$T/files.db" "SELECT key FROM item WHERE doc_id = 'a.txt'")
exp_b="docs/sub/b.txt|sub/b.txt|failed|duplicate key: '$ha', first at docs/a.txt"
exp_z="docs/zeros.bin|zeros.bin|failed|document too large: 3000 bytes > max_document_bytes (2000)"
if echo "$got" | grep -qxF "$exp_b" && echo "$got" | grep -qxF "$exp_z" &&
    echo "$got" | grep -q "^content:[0-9a-f]\{32\}|a.txt|done|$" && echo "$got" | grep -q "^content:[0-9a-f]\{32\}|sub/c.txt|done|$" &&
    [ "$(echo "$got" | wc -l)" -eq 4 ]; then
    pass "key = content: identical bytes are a duplicate naming the first; an oversized document fails its row"
else fail "key = content / max_document_bytes" "$got"; fi

# keep_fields on a sqlite source: the query's columns by name; one it lacks is exit 2
sqlite3 "$T/src.db" "CREATE TABLE d (k TEXT, t TEXT, lang TEXT, n INTEGER); INSERT INTO d VALUES ('r1', 'some text', 'de', 7)"
sq_job() {
    cat >"$T/sq.toml" <<J
[job]
name = "s"
model = "$M"
output = "sq.db"
[source]
kind = "sqlite"
database = "src.db"
query = "SELECT k, t, lang, n FROM d"
keep_fields = [$1]
[[task]]
name = "ppl"
kind = "score"
J
}
sq_job '"n", "nope"'
"$F" check "$T/sq.toml" >/dev/null 2>"$T/err"
rc=$?
sq_job '"n", "lang"'
"$F" run "$T/sq.toml" --progress none >/dev/null 2>&1
m=$("$F" export "$T/sq.toml" --columns doc_id,meta)
if [ $rc -eq 2 ] && grep -q "'nope' is not a column" "$T/err" && grep -q "lang, n" "$T/err" &&
    [ "$m" = '{"doc_id":"r1","meta":{"n":7,"lang":"de"}}' ]; then
    pass "keep_fields on sqlite: named columns into meta; a missing one exits 2 listing them"
else fail "keep_fields on sqlite" "rc $rc $(cat "$T/err") / $m"; fi

# max_document_bytes in an archive: the big entry fails with its size from the header; the
# limit smaller than max_entry_bytes is the one named
mkdir -p "$T/ar"
head -c 5000 /dev/zero >"$T/ar/big.bin"
printf 'small text' >"$T/ar/small.txt"
tar -C "$T/ar" -czf "$T/ar.tar.gz" big.bin small.txt
sed -e 's/kind = "files"/kind = "archive"/' -e 's/paths = \["docs"\]/paths = ["ar.tar.gz"]/' \
    -e 's/files.db/ar.db/' -e '/^key = /d' "$T/files.toml" >"$T/ar.toml"
"$F" run "$T/ar.toml" --progress none >/dev/null 2>&1
got=$(sqlite3 "$T/ar.db" "SELECT doc_id || '|' || status || '|' || coalesce(error, '') FROM item ORDER BY key")
if [ "$got" = "big.bin|failed|document too large: 5000 bytes > max_document_bytes (2000)
small.txt|done|" ]; then
    pass "max_document_bytes: an archive entry over it fails its row, named with its size"
else fail "max_document_bytes in an archive" "$got"; fi

# check notes JSONL keys that depend on line numbers
sed -e '/id_field/d' -e 's/out.db/noid.db/' "$T/job.toml" >"$T/noid.toml"
"$F" check "$T/noid.toml" >"$T/check.json" 2>"$T/err"
if grep -q "depend on line numbers" "$T/err" && grep -q 'key = \\"content\\"' "$T/check.json" &&
    "$F" check "$T/job.toml" 2>&1 | grep -vq "line numbers"; then
    pass "check: notes line-number keys without id_field, suggesting id_field or key = content"
else fail "check: line-number note" "$(cat "$T/err")"; fi

# prune: a document removed from the source
"$F" prune "$T/job.toml" >"$T/p0.json"
printf '{"id":"a","text":"one doc","lang":"en","n":1.5}\n' >"$T/d.jsonl"
"$F" prune "$T/job.toml" >"$T/p1.json"
n1=$(sqlite3 "$T/out.db" "SELECT count(*) FROM item")
"$F" prune "$T/job.toml" --apply >"$T/p2.json"
n2=$(sqlite3 "$T/out.db" "SELECT count(*) || '/' || (SELECT count(*) FROM result) || '/' || group_concat(key) FROM item")
python3 - "$T" "$n1" "$n2" <<'PY'
import json, sys
T, n1, n2 = sys.argv[1:]
p0, p1, p2 = (json.load(open("%s/p%d.json" % (T, i))) for i in range(3))
ok = (p0["stale_items"] == 0 and p1["stale_items"] == 1 and p1["stale_results"] == 2 and p1["examples"] == ["d.jsonl#b"]
      and p1["removed"] is False and p1["source_items"] == 1 and n1 == "2" and p2["removed"] is True and n2 == "1/2/d.jsonl#a")
print("PASS prune reports the documents gone from the source, --apply removes them and their results" if ok
      else "FAIL prune: %r %r %r %s %s" % (p0, p1, p2, n1, n2))
PY
exit 0
