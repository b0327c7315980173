#!/bin/sh
# gpu-chunk-check: is bf16 prefill independent of the chunk length? One device call:
#   1. the GPU tests (tests/run.sh, no sanitizers),
#   2. fmbatch synth --shape 7b into $M,
#   3. fmbatch score --per-token --backend cuda on 8192 random ids (python seed 1, as in
#      gpu-7b-check.sh) at several chunk lengths, per configuration (--kernel gemm=.. x scan=..),
#   4. fmbatch bench --synthetic 7b --tokens 16384 per GEMM mode (prefill speed),
#   5. $OUT/chunk-check.json: per configuration, each chunk against the first one (mean and
#      max |dNLL|, bitwise equal or not).
# Binaries are built on the build machine and carried: build-cuda/ and .gpulib/.
# Usage: OUT=/tmp/o tools/gpu-chunk-check.sh   (BUILD=build-cuda, M=/tmp/s7b, WORK=/tmp/wcc)
BUILD=${BUILD:-build-cuda}
FMB=$PWD/$BUILD/fmbatch
M=${M:-/tmp/s7b}
OUT=${OUT:-/tmp/gpu-chunk-check}
W=${WORK:-/tmp/wcc}
mkdir -p "$OUT" "$W"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T="$OUT/timings.txt"
: >"$T"
step() { # name cmd...
    n=$1
    shift
    s=$(date +%s.%N)
    "$@"
    rc=$?
    printf '%s rc=%d %.1fs\n' "$n" $rc "$(awk "BEGIN{print $(date +%s.%N) - $s}")" >>"$T"
    return $rc
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
step tests env FMBATCH="$FMB" timeout 200 tests/run.sh "$BUILD/tests/gpu" --no-scripts \
    >"$OUT/tests.log" 2>&1
tail -3 "$OUT/tests.log"
[ -f "$M/model.safetensors.index.json" ] ||
    step synth "$FMB" synth --shape 7b --out "$M" >"$W/synth.log" 2>&1 ||
    { echo "synth failed"; tail -20 "$W/synth.log"; exit 1; }
python3 -c "
import random
random.seed(1)
ids=[random.randrange(65024) for _ in range(8192)]
open('$W/ids8192.txt','w').write(' '.join(map(str,ids))+'\n')
"
# configuration name, gemm choice, scan choice, chunk lengths (the first is the reference)
run_cfg() {
    name=$1 gemm=$2 scan=$3
    shift 3
    for c in "$@"; do
        f="$W/$name-c$c.json"
        [ -f "$f" ] && f="$W/$name-c$c-again.json"
        step "$name-c$c" timeout 60 \
            "$FMB" score --model "$M" --ids-file "$W/ids8192.txt" --per-token --backend cuda \
            --kernel "gemm=$gemm,scan=$scan,gemm-verbose=on" \
            --chunk-tokens "$c" >"$f" 2>"$W/$name-c$c.log" || tail -5 "$W/$name-c$c.log"
    done
    echo "$name $*" >>"$W/configs.txt"
}
: >"$W/configs.txt"
run_cfg fixed-auto fixed auto 4096 512 1000 2048 8192 4096
run_cfg cublas-auto cublas auto 2048 512 1000 8192
run_cfg cublas-seg cublas seg 2048 512 8192
run_cfg fixed-seg fixed seg 2048 512
run_cfg fixedws-auto fixedws auto 2048 512 1000
grep -h gemm_inv "$W"/fixed-auto-c4096.log "$W"/fixedws-auto-c2048.log >"$OUT/gemm-algos.txt"
for g in fixed cublas fixedws; do
    step bench-$g timeout 90 "$FMB" bench --synthetic 7b --tokens 1024,16384 --kernel gemm=$g \
        --decode-steps 8 >"$W/bench-$g.json" 2>"$W/bench-$g.log" || tail -5 "$W/bench-$g.log"
done
python3 - "$W" "$OUT" <<'PY' | tee "$OUT/compare.txt"
import sys, json
w, o = sys.argv[1], sys.argv[2]
r = {"configs": {}, "bench": {}}
for line in open(f"{w}/configs.txt"):
    name, *chunks = line.split()
    def ld(c, again=False):
        p = f"{w}/{name}-c{c}{'-again' if again else ''}.json"
        try: return open(p, "rb").read(), json.loads(open(p).readline())
        except Exception as e: return None, None
    ref_raw, ref = ld(chunks[0])
    cfg = {}
    for c in chunks[1:]:
        again = c == chunks[0]
        raw, d = ld(c, again)
        key = f"{c}{'_again' if again else ''}_vs_{chunks[0]}"
        if d is None or ref is None: cfg[key] = None; continue
        a, b = d["nll"], ref["nll"]
        n = min(len(a), len(b)); dd = [abs(a[i] - b[i]) for i in range(n)]
        cfg[key] = {"n": n, "mean": sum(dd) / n, "max": max(dd), "nll_equal": a == b,
                    "file_bitwise": raw == ref_raw}
    if ref: cfg["mean_nll"] = ref.get("mean_nll")
    r["configs"][name] = cfg
for g in ("fixed", "cublas", "fixedws"):
    try: r["bench"][g] = json.loads(open(f"{w}/bench-{g}.json").read())
    except Exception as e: r["bench"][g] = str(e)
r["timings"] = open(f"{o}/timings.txt").read().splitlines()
json.dump(r, open(f"{o}/chunk-check.json", "w"), indent=1)
print(json.dumps(r["configs"], indent=1))
for g, b in r["bench"].items(): print(g, json.dumps(b)[:1500])
PY
cat "$T"
