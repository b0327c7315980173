#!/bin/sh
# tools/gpu-batch-bench.sh's logic without a GPU (its dry run: a tiny model on the CPU backend,
# corpora cut 20-fold, two workers on "device" 0): the --devices jobs of issue 17 give the rows
# of one worker, and SIGTERM to the parent mid-run leaves no process and no item running, a
# rerun completing them with the rows of one worker. A GPU call reads the same summary lines.
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
OUT="$T/out" WORK="$T/w" FMB="$F" M="$PWD/tests/fixtures/tiny-a" \
    TOK="$PWD/tests/fixtures/tiny-a/tokenizer.json" SYNTH=0 BENCH=0 SCALE=20 DEVICES=0,0 \
    X2MEM= TERM_AFTER=0.4 JOBS="score2k score2kx2 qa64 qa64x2 score2kterm" \
    RUNARGS="--threads 1" sh tools/gpu-batch-bench.sh >"$T/log" 2>&1
S="$T/out/batch-bench.txt"
ok() { # name grep-pattern
    if grep -q "$2" "$S"; then echo "PASS $1"; else echo "FAIL $1: no line matching '$2' in:"; sed 's/^/    /' "$S"; fi
}
ok "scoring, --devices: the rows of one worker" "^score2k rows = score2kx2 rows .*identical (100 rows)"
ok "QA with sampled answers, --devices: the rows of one worker" "^qa64 rows = qa64x2 rows .*identical (6 rows)"
ok "SIGTERM mid-run: exit 143, no process left, no item running" "^score2kterm: SIGTERM after .*rc=143, fmbatch processes left 0, items: \(done [0-9]*, \)\{0,1\}pending [0-9]*$"
ok "the rerun after SIGTERM completes every item" "^score2kterm: the rerun: rc=0, items: done 100$"
ok "after SIGTERM and a rerun: the rows of one worker" "^score2k rows = score2kterm rows .*identical (100 rows)"
ok "the speed-up line is written" "^score2kx2: [0-9.]*x the one-worker throughput"
