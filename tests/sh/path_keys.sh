#!/bin/sh
# Item keys do not depend on how a path is spelled: a job whose [source].paths names the same
# file relatively, as ./x, or absolutely resumes the same items (nothing recomputed: the engine
# runs no token).
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/job/data"
printf '{"id":"a","text":"one doc"}\n{"id":"b","text":"another doc"}\n' >"$T/job/data/d.jsonl"
job() {
    cat >"$T/job/job.toml" <<J
[job]
name = "keys"
model = "$PWD/tests/fixtures/tiny-a"
output = "out.db"

[source]
kind = "jsonl"
paths = ["$1"]
id_field = "id"

[[task]]
name = "ppl"
kind = "score"
J
}
job data/d.jsonl
"$F" run "$T/job/job.toml" --progress none >/dev/null 2>&1
k1=$(sqlite3 "$T/job/out.db" "SELECT group_concat(key, ' ') FROM (SELECT key FROM item ORDER BY key)")
for spelling in ./data/d.jsonl "$T/job/data/d.jsonl" "$T/job/./data/../data/d.jsonl"; do
    job "$spelling"
    out=$("$F" run "$T/job/job.toml" --progress none 2>&1)
    k2=$(sqlite3 "$T/job/out.db" "SELECT group_concat(key, ' ') FROM (SELECT key FROM item ORDER BY key)")
    if [ "$k1" = "data/d.jsonl#a data/d.jsonl#b" ] && [ "$k2" = "$k1" ] &&
        ! echo "$out" | grep -q "engine:" && echo "$out" | grep -q ": 2 done, 0 failed"; then
        echo "PASS path keys: '$spelling' resumes the same items"
    else
        echo "FAIL path keys: '$spelling': keys '$k1' then '$k2'; $out"
    fi
done
