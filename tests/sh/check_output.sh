#!/bin/sh
# `fmbatch check` says when the job's output cannot be made (exit 2, naming it) and accepts one
# whose folders do not exist yet (run makes them); it creates nothing.
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/docs"
echo "a small document" >"$T/docs/a.txt"
: >"$T/afile"
job() {
    cat >"$T/job.toml" <<J
[job]
name = "co"
model = "$PWD/tests/fixtures/tiny-a"
output = "$1"

[source]
kind = "files"
paths = ["docs"]

[[task]]
name = "ppl"
kind = "score"
J
}
job "afile/out.db"
"$F" check "$T/job.toml" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 2 ] && grep -q "\[job\].output: '$T/afile' is not a folder" "$T/err"; then
    echo "PASS check: an output that cannot be made is refused, named"
else
    echo "FAIL check: an output that cannot be made is refused, named: rc $rc $(cat "$T/err")"
fi
job "new/sub/out.db"
"$F" check "$T/job.toml" >/dev/null 2>"$T/err"
rc=$?
if [ $rc -eq 0 ] && [ ! -e "$T/new" ]; then
    echo "PASS check: an output in folders yet to be made passes, nothing created"
else
    echo "FAIL check: an output in folders yet to be made: rc $rc, $(ls "$T") $(cat "$T/err")"
fi
