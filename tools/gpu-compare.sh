#!/bin/sh
# gpu-compare: several builds side by side in one device call, so that a branch that has never
# run on a GPU is tested and measured beside main under the same clock and the same machine.
# Each build is a folder with fmbatch and tests/gpu/ (build-cuda from `tools/gpu-pack.sh`; a
# branch's from `NAME=x tools/gpu-pack.sh` run in its worktree, which packs build-x/ with the
# commit in build-x/.commit into .gpubin-x.tar.xz: copy that into the tree the device tool
# carries and unpack it there beside .gpubin.tar.xz). For every build, in this order:
#   1. its GPU tests (tests/run.sh over BUILD/tests/gpu; TESTS=0 leaves them out),
#   2. compute-sanitizer on test_kernels' small shapes (SAN="memcheck racecheck"; SAN= none),
# then, round by round (ROUNDS, default 2: builds interleaved A B A B, so a drift of the clock
# shows as a spread rather than as a difference),
#   3. fmbatch bench: prefill at $TOKENS (default 16384) and decode at batch 1 and each of
#      $BATCHES (default "16 64 256"),
# and, with NCU=1, 4. ncu's per-kernel durations of a decode step at 1 and $NCU_BATCH (16)
# sequences (tools/kernel-times.py). Writes $OUT/compare.txt (a line a build and round, then the table of
# medians) and each build's logs and JSON into $OUT/logs.tar.xz (the device tool returns 8
# files at most).
# Usage: OUT=/tmp/o BUILDS="build-cuda build-next" tools/gpu-compare.sh
# (MODEL="--synthetic 7b" by default; any `fmbatch bench` model arguments, e.g. "--model DIR
# --backend cpu", which is how tests/sh/gpu_compare_dry.sh runs it without a GPU)
OUT=${OUT:-/tmp/gpu-compare}
BUILDS=${BUILDS:-build-cuda}
MODEL=${MODEL:---synthetic 7b}
TOKENS=${TOKENS:-16384}
BATCHES=${BATCHES:-16 64 256}
ROUNDS=${ROUNDS:-2}
SAN=${SAN-memcheck racecheck}
L="$OUT/logs"
mkdir -p "$L"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
S="$OUT/compare.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
echo "gpu-compare on ${gpu:-no GPU}: $BUILDS" >"$S"
name() { basename "$1"; }
commit() { cat "$1/.commit" 2>/dev/null || cat .gpu-commit 2>/dev/null || echo unknown; }
status=0

for b in $BUILDS; do
    n=$(name "$b")
    line="$n at $(commit "$b"):"
    if [ "${TESTS:-1}" != 0 ]; then
        FMBATCH="$PWD/$b/fmbatch" sh tests/run.sh "$b/tests/gpu" --no-scripts \
            >"$L/$n-tests.log" 2>&1 || status=1
        line="$line tests $(tail -1 "$L/$n-tests.log")"
        f=$(grep -a -c '^FAIL' "$L/$n-tests.log")
        [ "$f" = 0 ] || line="$line (first: $(grep -a -m1 '^FAIL' "$L/$n-tests.log" | cut -c6-100))"
    fi
    for tool in $SAN; do
        compute-sanitizer --tool "$tool" --error-exitcode 9 "$b/tests/gpu/test_kernels" small \
            >"$L/$n-$tool.log" 2>&1
        rc=$?
        [ $rc = 0 ] || status=1
        line="$line; $tool rc=$rc $(grep -a -h 'SUMMARY' "$L/$n-$tool.log" | tail -1)"
    done
    echo "$line" >>"$S"
done

# "prefill T X tok/s ... | decode bB@C X ms ..." from one fmbatch bench's JSON on stdin
summary() {
    python3 -c '
import json, sys
j = json.load(sys.stdin)
p = " ".join("%d %.0f" % (x["tokens"], x["tok_per_s"]) for x in j["prefill"])
d = " ".join("b%d@%d %.2f" % (x["batch"], x["context"], x["ms_per_token"]) for x in j["decode"])
print("prefill %s tok/s | decode %s ms" % (p, d))' 2>/dev/null || echo "prefill - tok/s | decode - ms (no JSON)"
}
r=1
while [ $r -le "$ROUNDS" ]; do
    for b in $BUILDS; do
        n=$(name "$b")
        t=$TOKENS # the prefill lengths once a round (with the first batch size), 1024 after
        for B in $BATCHES; do
            # shellcheck disable=SC2086 # MODEL is a list of arguments
            "$b/fmbatch" bench $MODEL --tokens "$t" --decode-steps 16 --decode-batch "$B" \
                >"$L/$n-bench.json" 2>>"$L/$n-bench.log" || status=1
            echo "round $r $n: $(summary <"$L/$n-bench.json")" >>"$S"
            t=1024
        done
    done
    r=$((r + 1))
done

# the median over the rounds of each figure, a row a build (a figure's sample count beside it)
python3 - "$S" $BUILDS <<'P' >>"$S"
import os, re, statistics, sys
builds = [os.path.basename(b) for b in sys.argv[2:]]
vals, cols = {}, []
for l in open(sys.argv[1]).read().splitlines():
    m = re.match(r"round \d+ (\S+): prefill (.*) tok/s \| decode (.*) ms", l)
    if not m:
        continue
    n, p, d = m.groups()
    figs = [("prefill " + t, v) for t, v in re.findall(r"(\d+) ([0-9.]+)", p)]
    figs += [("b" + bc, v) for bc, v in re.findall(r"b(\S+) ([0-9.]+)", d)]
    for k, v in figs:
        if k not in cols:
            cols.append(k)
        vals.setdefault((n, k), []).append(float(v))
print("medians (prefill tok/s; decode bBATCH@CONTEXT ms a step; samples in brackets):")
print("| build | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for n in builds:
    cell = lambda v: "%g (%d)" % (round(statistics.median(v), 2), len(v)) if v else "-"
    print("| %s | %s |" % (n, " | ".join(cell(vals.get((n, k))) for k in cols)))
P

if [ "${NCU:-0}" != 0 ] && command -v ncu >/dev/null 2>&1; then
    for b in $BUILDS; do
        n=$(name "$b")
        # shellcheck disable=SC2086
        ncu --clock-control none --cache-control none --csv --page raw \
            --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size \
            "$b/fmbatch" bench $MODEL --tokens 1024 --decode-steps 2 --decode-batch "${NCU_BATCH:-16}" \
            --kernel graphs=off >"$L/$n-kernels.csv" 2>/dev/null
        { echo "== ncu, $n (decode phases: embed grid (8, 1) = 1 sequence, (8, B) = B)"; python3 tools/kernel-times.py "$L/$n-kernels.csv" | sed -n '/embed grid (8, 1, 1)/,$p'; } >>"$S"
    done
fi
tar cJf "$OUT/logs.tar.xz" -C "$OUT" logs && rm -rf "$L"
cat "$S"
exit $status
