#!/bin/sh
# gpu-check: one call on a GPU machine does it all, without stopping at the first failure:
#   1. build (skipped with --no-build: binaries carried from a build machine),
#   2. every GPU test binary in $BUILD/tests/gpu (tests/run.sh),
#   3. compute-sanitizer memcheck and racecheck on the kernel test's small shapes,
#   4. fmbatch bench --synthetic 7b (prefill 1K/16K/100K, decode; the scan alone is a NOTE of
#      test_kernels), the same with a ballast leaving 22 GiB free (a 24 GB card), and a short
#      bench per kernel choice in VARIANTS (--kernel values; default scan=tile1: the previous
#      scan kernel),
#   3b. when $SM80 (default build-sm80) holds a build with only compute_80 PTX (tools/gpu-pack.sh
#      with SM80=1: what an A10, 3090, 4090 or L4 runs, JIT-compiled here), its GPU tests with
#      every launch checked against the 24 GB cards' 99 KB of shared memory a block
#      (FMB_SMEM_CAP=sm86), and its bench (`--kernel smem-cap=sm86`),
#   5. a short table, and tests/GPU-STATUS.json (also copied to $OUT) with the commit tested.
# Usage: tools/gpu-check.sh [--no-build] [--no-bench]   (BUILD=build-cuda, OUT=/tmp/gpu-check;
# the commit recorded is .gpu-commit when present: write it where the binaries were built and
# carry it, it is ignored)
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-/tmp/gpu-check}
CUDA_ARCH=${CUDA_ARCH:--gencode arch=compute_90,code=sm_90}
build=yes
bench=yes
for a in "$@"; do
    case $a in
    --no-build) build=no ;;
    --no-bench) bench=no ;;
    esac
done
mkdir -p "$OUT"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
commit=$(cat .gpu-commit 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
status=0
if [ $build = yes ]; then
    make BUILD="$BUILD" CUDA_ARCH="$CUDA_ARCH" -j"$(nproc)" all >"$OUT/build.log" 2>&1 ||
        { echo "build failed"; tail -20 "$OUT/build.log"; exit 1; }
    for t in tests/gpu/test_*.c; do
        b=$(basename "$t" .c)
        make BUILD="$BUILD" CUDA_ARCH="$CUDA_ARCH" "$BUILD/tests/gpu/$b" >>"$OUT/build.log" 2>&1 ||
            status=1
    done
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv \
    >"$OUT/gpu.txt" 2>&1

# 2. tests
FMBATCH="$PWD/$BUILD/fmbatch" tests/run.sh "$BUILD/tests/gpu" --no-scripts >"$OUT/tests.log" 2>&1 ||
    status=1
tests_line=$(tail -1 "$OUT/tests.log")

# 3. sanitizers on small shapes
san=skipped
if command -v compute-sanitizer >/dev/null 2>&1 && [ -x "$BUILD/tests/gpu/test_kernels" ]; then
    compute-sanitizer --tool memcheck --error-exitcode 9 "$BUILD/tests/gpu/test_kernels" small \
        >"$OUT/memcheck.log" 2>&1
    m=$?
    compute-sanitizer --tool racecheck --error-exitcode 9 "$BUILD/tests/gpu/test_kernels" small \
        >"$OUT/racecheck.log" 2>&1
    r=$?
    san="memcheck rc=$m ($(grep -h 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)); racecheck rc=$r ($(grep -h 'RACECHECK SUMMARY' "$OUT/racecheck.log" | tail -1))"
    [ $m -eq 0 ] && [ $r -eq 0 ] || status=1
fi

# 3b. the compute_80 PTX build under the sm_86 shared-memory cap
SM80=${SM80:-build-sm80}
sm80=skipped
if [ -x "$SM80/fmbatch" ] && [ -d "$SM80/tests/gpu" ]; then
    FMB_SMEM_CAP=sm86 FMBATCH="$PWD/$SM80/fmbatch" tests/run.sh "$SM80/tests/gpu" --no-scripts \
        >"$OUT/tests-sm80.log" 2>&1 || status=1
    sm80="compute_80 PTX under smem-cap=sm86: $(tail -1 "$OUT/tests-sm80.log")"
    if [ $bench = yes ]; then
        "$SM80/fmbatch" bench --synthetic 7b --tokens 1024,16384 --decode-batch 16 \
            --decode-steps 16 --kernel smem-cap=sm86 >"$OUT/bench-sm80.json" \
            2>"$OUT/bench-sm80.log" || status=1
    fi
fi

# 4. bench
if [ $bench = yes ]; then
    "$BUILD/fmbatch" bench --synthetic 7b >"$OUT/bench.json" 2>"$OUT/bench.log" || status=1
    # --mem-limit: a limit just above the weights makes the engine pick a smaller chunk; one
    # below them must exit 2 naming the smallest limit that would do
    "$BUILD/fmbatch" bench --synthetic 7b --mem-limit 14.4GiB --tokens 1024,16384 \
        --decode-steps 8 >"$OUT/bench-memlimit.json" 2>"$OUT/memlimit.log" || status=1
    "$BUILD/fmbatch" bench --synthetic 7b --mem-limit 13GiB --tokens 1024 >/dev/null \
        2>>"$OUT/memlimit.log"
    ml=$?
    echo "mem-limit 13GiB: exit $ml: $(tail -1 "$OUT/memlimit.log")"
    [ $ml -eq 2 ] || status=1
    # comparisons: one short bench per --kernel value in $VARIANTS (e.g. "scan=tile1 pdl=off")
    for v in ${VARIANTS:-scan=tile1}; do
        [ "$v" = - ] && continue # VARIANTS=- : none
        # the file name without '=' or ',' (the device tool returns plain names only)
        vn=$(echo "$v" | tr '=,' '-_')
        "$BUILD/fmbatch" bench --synthetic 7b --tokens 1024,16384 --decode-steps 16 --kernel "$v" \
            >"$OUT/bench-$vn.json" 2>>"$OUT/bench.log" || status=1
    done
    "$BUILD/fmbatch" bench --synthetic 7b --ballast-free 22GiB --tokens 1024,100000 \
        --decode-batch 16 >"$OUT/bench-24g.json" 2>"$OUT/bench-24g.log" || status=1
fi

# 5. table and status
echo "== gpu-check at $commit"
# the failures first (NOTE lines are many), then the notes
grep -E '^FAIL' "$OUT/tests.log" "$OUT/tests-sm80.log" 2>/dev/null | head -20
grep -E '^NOTE' "$OUT/tests.log" | head -30
echo "tests: $tests_line"
echo "sanitizers: $san"
echo "sm80: $sm80"
for f in "$OUT"/bench*.json; do
    [ -s "$f" ] && { echo "$(basename "$f"):"; cat "$f"; }
done
# the first failing tests' names, JSON-escaped (quotes and backslashes dropped)
failed=$(grep -h -E '^FAIL' "$OUT/tests.log" "$OUT/tests-sm80.log" 2>/dev/null | head -5 |
    cut -c6-120 | tr -d '"\\' | awk '{printf "%s\"%s\"", (NR > 1 ? "," : ""), $0}')
cat >"$OUT/GPU-STATUS.json" <<J
{"commit":"$commit","date":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","gpu":"$(tail -1 "$OUT/gpu.txt" | cut -d, -f1)","tests":"$tests_line","sanitizers":"$san","sm80":"$sm80","failed":[$failed],"ok":$([ $status = 0 ] && echo true || echo false)}
J
cp "$OUT/GPU-STATUS.json" tests/GPU-STATUS.json 2>/dev/null
exit $status
