#!/bin/sh
# gpu-decode-bench: the decode step at the 7B shape for each decode-product path, in one device
# call (binaries carried: tools/gpu-pack.sh): `fmbatch bench --synthetic 7b` decode at batch 1,
# 16, 64 and 256 for every --kernel matvec value in $PATHS (default "auto gemm mma"), the kernel
# test's per-product timing NOTEs (test_kernels: every matvec shape of the 7B model at B = 1,
# 16, 64, 128, 256, cuBLAS beside it), and ncu's per-kernel durations of a decode step at
# batch 1 and 16 for each path (tools/kernel-times.py). Writes $OUT/decode-bench.txt (with the
# commit of the binaries) and $OUT/kernels-PATH.csv.
# Usage: OUT=/tmp/o tools/gpu-decode-bench.sh   (BUILD=build-cuda, PATHS="auto gemm mma", NCU=0 to
# leave out the profiles)
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-/tmp/gpu-decode-bench}
mkdir -p "$OUT"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
F="$BUILD/fmbatch"
S="$OUT/decode-bench.txt"
commit=$(cat .gpu-commit 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
echo "gpu-decode-bench at $commit on $(nvidia-smi --query-gpu=name --format=csv,noheader)" >"$S"
dec() { # batch matvec -> "b1 X ms bB Y ms"
    "$F" bench --synthetic 7b --tokens 1024 --decode-steps 16 --decode-batch "$1" \
        --kernel "matvec=$2" 2>>"$OUT/bench.log" |
        python3 -c "import json,sys; print(' '.join('b%d %.2f ms' % (x['batch'], x['ms_per_token']) for x in json.load(sys.stdin)['decode']))"
}
for p in ${PATHS:-auto gemm mma}; do
    echo "matvec=$p: $(dec 16 "$p"); $(dec 64 "$p"); $(dec 256 "$p")" >>"$S"
done
"$BUILD/tests/gpu/test_kernels" >"$OUT/test_kernels.log" 2>&1
echo "test_kernels: rc=$? $(grep -ac '^PASS' "$OUT/test_kernels.log") passed, $(grep -ac '^FAIL' "$OUT/test_kernels.log") failed" >>"$S"
grep -a "matvec timing" "$OUT/test_kernels.log" | sed 's/^NOTE matvec timing /  /' >>"$S"
if [ "${NCU:-1}" != 0 ] && command -v ncu >/dev/null 2>&1; then
    for p in ${PATHS:-auto gemm mma}; do
        ncu --clock-control none --cache-control none --csv --page raw \
            --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread \
            "$F" bench --synthetic 7b --tokens 1024 --decode-steps 2 --decode-batch 16 \
            --kernel "matvec=$p,graphs=off" >"$OUT/kernels-$p.csv" 2>/dev/null
        { echo "== ncu, matvec=$p (decode phases: embed grid (8, 1) = 1 sequence, (8, 16) = 16)"; python3 tools/kernel-times.py "$OUT/kernels-$p.csv" | sed -n '/embed grid (8, 1, 1)/,$p'; } >>"$S"
    done
fi
cat "$S"
