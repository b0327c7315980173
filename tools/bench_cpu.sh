#!/bin/sh
# CPU engine bench (issue 2): `fmbatch score` on a ~100M-parameter synthetic model over 4,096
# tokens, next to HF transformers on the same CPU, checkpoint and tokens, plus the fraction of
# OpenBLAS sgemm peak reached. Needs torch + transformers from PyPI. Run from the repo root:
#   sh tools/bench_cpu.sh [THREADS]
set -eu
TH=${1:-$(nproc)}
W=${TMPDIR:-/tmp}/fmb-bench-cpu
mkdir -p "$W"
F=./fmbatch
[ -x "$F" ] || make -j"$TH" >/dev/null
[ -f "$W/m100/config.json" ] || $F synth --shape 100m --dtype f32 --out "$W/m100" 2>/dev/null
python3 -c 'import random; random.seed(1); print(" ".join(str(random.randrange(65024)) for _ in range(4096)))' >"$W/ids"
gcc -O2 -o "$W/sgemm_peak" tools/sgemm_peak.c -lopenblas
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "sgemm (GFLOP/s, D=640 E=1280 R=40 N=16 V=65024 T=512):"
OPENBLAS_NUM_THREADS=$TH "$W/sgemm_peak" 640 1280 40 16 65024 512 | tee "$W/peak.json"
echo "fmbatch score:"
$F score --model "$W/m100" --ids-file "$W/ids" --threads "$TH" --verbose 2>"$W/fmb.err" >"$W/fmb.json"
cat "$W/fmb.err"
python3 -c 'import json; print("mean_nll", json.load(open("'"$W/fmb.json"'"))["mean_nll"])'
echo "HF transformers:"
python3 tools/hf_cpu_score.py "$W/m100" "$W/ids" "$TH" 2>/dev/null | tee "$W/hf.json"
