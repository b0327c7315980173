#!/bin/sh
# tools/tsan.sh FMBATCH SCRIPT...: runs each tests/sh/SCRIPT.sh with FMBATCH, a ThreadSanitizer
# build of fmbatch (`make tsan-smoke` builds it in build-tsan/), every report logged (suppressions:
# tests/tsan.supp, each with its reason). The scripts' OpenMP runs on one thread (libgomp is not
# instrumented); what is checked is fmbatch's own threads: the runner's reader, engine and
# counting threads, the queue's heartbeat, signals. Prints a line per script (its PASS/FAIL
# counts and the reports it caused), then every report's first lines; exits 1 on a FAIL or a
# report.
f=$1
shift
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
bad=0
for s in "$@"; do
    start=$(date +%s)
    OMP_NUM_THREADS=1 FMBATCH="$f" \
        TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0 log_path=$logs/$s suppressions=$PWD/tests/tsan.supp" \
        sh "tests/sh/$s.sh" >"$logs/$s.out" 2>&1
    p=$(grep -c '^PASS' "$logs/$s.out")
    n=$(grep -c '^FAIL' "$logs/$s.out")
    r=$(cat "$logs/$s".[0-9]* 2>/dev/null | grep -c 'WARNING: ThreadSanitizer')
    echo "tsan $s: $p passed, $n failed, $r reports, $(($(date +%s) - start)) s"
    [ "$n" = 0 ] && [ "$r" = 0 ] || bad=1
    [ "$n" = 0 ] || grep '^FAIL' "$logs/$s.out" | head -5 | sed 's/^/    /'
done
for l in "$logs"/*.[0-9]*; do
    [ -f "$l" ] || continue
    echo "== $(basename "$l")"
    grep -E 'WARNING|^    #[0-4] ' "$l" | head -24
done
exit $bad
