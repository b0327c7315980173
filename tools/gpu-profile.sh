#!/bin/sh
# gpu-profile: where the device time goes at the 7B shape, for choosing what to speed up.
#   kernels.csv  every kernel of a bench (prefill of 4,096 tokens, decode at batch 1 and 16,
#                graphs off) with its duration, grid, block and registers (ncu, one metric);
#                tools/kernel-times.py sums it per phase and kernel;
#   scan.txt     ncu's full sections for one prefill scan launch, and scan-src.csv its
#                per-instruction samples (SASS with source lines);
#   matvec.txt   ncu's full sections for the four decode matrix-vector launches of one layer.
# Usage: OUT=dir tools/gpu-profile.sh [--kernels-only]   (BUILD=build-cuda; binaries carried
# with .gpulib)
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-/tmp/gpu-profile}
mkdir -p "$OUT"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
F="$BUILD/fmbatch"
NCU="ncu --clock-control none --cache-control none"
BENCH="bench --synthetic 7b --tokens 4096 --decode-steps 2 --decode-batch 16"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv \
    >"$OUT/gpu.txt" 2>&1
$NCU --csv --page raw \
    --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread \
    $F $BENCH --kernel graphs=off >"$OUT/kernels.csv" 2>"$OUT/ncu-kernels.log"
echo "kernels rc=$? lines=$(wc -l <"$OUT/kernels.csv")"
[ "$1" = --kernels-only ] && exit 0
$NCU --set full --import-source yes -k regex:scan_tile --launch-skip 2 --launch-count 1 \
    $F $BENCH >"$OUT/scan.txt" 2>&1
echo "scan rc=$?"
$NCU --set full --import-source yes -k regex:scan_tile --launch-skip 2 --launch-count 1 \
    --page source --print-source sass,cuda --csv $F $BENCH >"$OUT/scan-src.csv" 2>&1
echo "scan-src rc=$? lines=$(wc -l <"$OUT/scan-src.csv")"
$NCU --set full -k regex:matvec_kernel --launch-skip 40 --launch-count 4 \
    $F $BENCH --kernel graphs=off >"$OUT/matvec.txt" 2>&1
echo "matvec rc=$?"
