#!/bin/sh
# tools/fuzz.sh BUILD SECONDS TARGET...: runs each libFuzzer target BUILD/fuzz/fuzz_TARGET for
# SECONDS from its seeds (tests/fuzz/corpus_TARGET, read only: new inputs go to
# BUILD/corpus/TARGET), crashes into BUILD/crashes/TARGET/. Prints one line per target:
# executions, seconds, edges covered (libFuzzer's cov:) and features (ft:); the full log is
# BUILD/fuzz-TARGET.log. Exits 1 when a target crashed (its input is named).
build=$1
secs=$2
shift 2
bad=0
for t in "$@"; do
    bin=$build/fuzz/fuzz_$t
    mkdir -p "$build/corpus/$t" "$build/crashes/$t"
    log=$build/fuzz-$t.log
    start=$(date +%s)
    "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$build/crashes/$t/" \
        "$build/corpus/$t" "tests/fuzz/corpus_$t" >"$log" 2>&1
    rc=$?
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    echo "fuzz $t: ${execs:-?} executions in $(($(date +%s) - start)) s, cov: ${cov:-?} edges, ft: ${ft:-?}, exit $rc"
    if [ "$rc" -ne 0 ]; then
        bad=1
        grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -n 5 | sed 's/^/    /'
    fi
done
exit $bad
