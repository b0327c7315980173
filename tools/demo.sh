#!/bin/sh
# `make demo`'s last step: runs the two demo jobs (jobs/demo/demo.toml over the archive,
# demo-jsonl.toml over the JSON Lines file) and shows their results.
#
#   tools/demo.sh FMBATCH
#
# `run` exits 3 when items failed in this run: the demo's broken inputs fail on purpose, so 3
# is success here. A second `make demo` resumes: the done items are skipped and nothing runs.
# The results: `fmbatch report` where this fmbatch has it, else `status` and the first rows
# of `export`.
set -u
B=${1:?usage: tools/demo.sh FMBATCH}
JOBS="jobs/demo/demo.toml jobs/demo/demo-jsonl.toml"
for job in $JOBS; do
    echo "== $B run $job"
    "$B" run "$job"
    rc=$?
    case $rc in
    0) ;;
    3) echo "(the failed items above are the corpus's broken inputs, failing their own rows on purpose)" ;;
    *) echo "demo: $B run $job exited $rc" >&2; exit "$rc" ;;
    esac
done
for job in $JOBS; do
    if "$B" report --help >/dev/null 2>&1; then
        echo "== $B report $job"
        "$B" report "$job" || exit $?
    else
        echo "== $B status $job"
        "$B" status "$job" || exit $?
        echo
        echo "== $B export $job --format jsonl | head -n 3"
        "$B" export "$job" --format jsonl | head -n 3
    fi
done
echo "== done: the results are in jobs/demo/demo-results.db and jobs/demo/demo-jsonl-results.db"
echo "   (README.md, \"Reading the results elsewhere\"); \`make demo\` again resumes and does nothing"
