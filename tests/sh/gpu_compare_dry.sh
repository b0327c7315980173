#!/bin/sh
# tools/gpu-compare.sh's logic without a GPU: two "builds" (copies of the binary under test, one
# with its own .commit) compared on the tiny model and the CPU backend, two rounds interleaved;
# the summary has a line a build, a line a build, round and batch size, and a row of medians a
# build with every figure sampled once a round. A GPU call reads the same lines.
F=${FMBATCH:?FMBATCH must name the binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/main" "$T/next"
cp "$F" "$T/main/fmbatch"
cp "$F" "$T/next/fmbatch"
echo 0123abc >"$T/next/.commit"
OUT="$T/out" BUILDS="$T/main $T/next" TESTS=0 SAN= TOKENS=64,96 BATCHES="3 5" ROUNDS=2 \
    MODEL="--model $PWD/tests/fixtures/tiny-a --backend cpu --threads 1" \
    sh tools/gpu-compare.sh >"$T/log" 2>&1
rc=$?
S="$T/out/compare.txt"
ok() { # name grep-pattern [count]
    n=$(grep -c "$2" "$S")
    if [ "$n" -eq "${3:-1}" ]; then echo "PASS $1"; else
        echo "FAIL $1: $n lines (want ${3:-1}) matching '$2' in:"
        sed 's/^/    /' "$S"
    fi
}
[ $rc = 0 ] && echo "PASS gpu-compare exits 0" || echo "FAIL gpu-compare exit $rc: $(tail -5 "$T/log")"
ok "a build's own .commit is named" "^next at 0123abc:$"
ok "each build, round and batch size has its bench line" "^round [12] \(main\|next\): prefill [0-9]" 8
ok "the first batch of a round measures the prefill lengths asked for" \
    "^round [12] main: prefill 64 [0-9]* 96 [0-9]* tok/s | decode b1@64 [0-9.]* b1@96 [0-9.]* b3@64 [0-9.]* ms$" 2
ok "later batches of a round run at context 1024" "^round [12] next: prefill 1024 [0-9]* tok/s | decode b1@1024 [0-9.]* b5@1024 [0-9.]* ms$" 2
ok "a row of medians per build, each figure from both rounds" \
    "^| \(main\|next\) | [0-9.]* (2) | [0-9.]* (2) | [0-9.]* (2) | [0-9.]* (2) | [0-9.]* (2) | [0-9.]* (2) | [0-9.]* (2) | [0-9.]* (2) |$" 2
n=$(find "$T/out" -type f | wc -l)
if [ "$n" -le 8 ] && tar tJf "$T/out/logs.tar.xz" | grep -q 'logs/next-bench.json'; then
    echo "PASS what comes back: $n files (the device tool returns 8), the logs in logs.tar.xz"
else
    echo "FAIL what comes back: $n files in $T/out, or no logs/next-bench.json in logs.tar.xz"
fi
