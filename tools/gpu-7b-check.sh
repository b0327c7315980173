#!/bin/sh
# gpu-7b-check: CUDA backend at the 7B shape, in one device call.
#   1. fmbatch synth --shape 7b (bf16 HF-layout checkpoint, 3 shards) into $M,
#   2. fmbatch score --per-token --backend cuda on 8192 random ids (python seed 1, < 65024)
#      at chunk 512, 2048 (twice), 8192 (bf16), and --dtype f32 at chunk 2048 on the first 2048,
#   3. HF transformers FalconMambaForCausalLM fp32 (tf32 off) and bf16 per-position NLL on
#      the first 2048 ids (ids[0] is context; float64 log_softmax),
#   4. comparison JSON ($OUT/7b-check.json) and per-step timings.
# Binaries are built on the build machine and carried: build-cuda/fmbatch and .gpulib/.
# Usage: OUT=/tmp/o tools/gpu-7b-check.sh   (FMB=build-cuda/fmbatch, M=/tmp/s7b)
FMB=${FMB:-$PWD/build-cuda/fmbatch}
M=${M:-/tmp/s7b}
OUT=${OUT:-/tmp/gpu-7b-check}
FINAL=$OUT
OUT=${WORK:-$OUT}   # working files (many) go to $WORK; the summary is copied to $FINAL
mkdir -p "$OUT" "$FINAL"
[ -d .gpulib ] && export LD_LIBRARY_PATH="$PWD/.gpulib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
T="$OUT/timings.txt"
: >"$T"
step() { # name cmd...
    n=$1; shift
    s=$(date +%s.%N)
    "$@"
    rc=$?
    e=$(date +%s.%N)
    printf '%s rc=%d %.1fs\n' "$n" $rc "$(awk "BEGIN{print $e - $s}")" >>"$T"
    return $rc
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
[ -f "$M/model.safetensors.index.json" ] && [ -n "$REUSE" ] && echo "reusing $M" ||
step synth "$FMB" synth --shape 7b --out "$M" >"$OUT/synth.log" 2>&1 ||
    { echo "synth failed"; tail -20 "$OUT/synth.log"; exit 1; }
ls -la "$M" | tee "$OUT/ckpt-ls.txt"
python3 -c "
import random
random.seed(1)
ids=[random.randrange(65024) for _ in range(8192)]
open('$OUT/ids8192.txt','w').write(' '.join(map(str,ids))+'\n')
open('$OUT/ids2048.txt','w').write(' '.join(map(str,ids[:2048]))+'\n')
"
for c in 512 2048 8192; do
    step score-bf16-c$c "$FMB" score --model "$M" --ids-file "$OUT/ids8192.txt" --per-token \
        --backend cuda --chunk-tokens $c >"$OUT/bf16-c$c.json" 2>"$OUT/bf16-c$c.log" ||
        tail -5 "$OUT/bf16-c$c.log"
done
step score-bf16-c2048-again "$FMB" score --model "$M" --ids-file "$OUT/ids8192.txt" --per-token \
    --backend cuda --chunk-tokens 2048 >"$OUT/bf16-c2048b.json" 2>"$OUT/bf16-c2048b.log" ||
    tail -5 "$OUT/bf16-c2048b.log"
step score-f32-c2048 "$FMB" score --model "$M" --ids-file "$OUT/ids2048.txt" --per-token \
    --backend cuda --dtype f32 --chunk-tokens 2048 >"$OUT/f32-c2048.json" 2>"$OUT/f32-c2048.log" ||
    tail -5 "$OUT/f32-c2048.log"
cat >"$OUT/hf.py" <<'PY'
import sys, json, time, torch
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
from transformers import FalconMambaForCausalLM
import transformers
m, out, name, dt = sys.argv[1], sys.argv[2], sys.argv[3], getattr(torch, sys.argv[4])
ids = [int(x) for x in open(out + "/ids2048.txt").read().split()]
t0 = time.time()
try:
    model = FalconMambaForCausalLM.from_pretrained(m, dtype=dt)
except TypeError:
    model = FalconMambaForCausalLM.from_pretrained(m, torch_dtype=dt)
model = model.cuda().eval()
t1 = time.time()
x = torch.tensor([ids], device="cuda")
with torch.no_grad():
    logits = model(x).logits[0, :-1].double()
    torch.cuda.synchronize()
    t2 = time.time()
    lp = torch.log_softmax(logits, -1)
    nll = (-lp.gather(1, x[0, 1:, None]).squeeze(1)).cpu().tolist()
json.dump({"nll": nll, "load_s": t1 - t0, "fwd_s": t2 - t1, "transformers": transformers.__version__,
           "torch": torch.__version__}, open(f"{out}/hf-{name}.json", "w"))
print(name, "load %.1fs fwd %.1fs mean_nll %.6f" % (t1 - t0, t2 - t1, sum(nll) / len(nll)))
PY
step hf-fp32 python3 "$OUT/hf.py" "$M" "$OUT" fp32 float32 2>"$OUT/hf-fp32.log" || tail -20 "$OUT/hf-fp32.log"
step hf-bf16 python3 "$OUT/hf.py" "$M" "$OUT" bf16 bfloat16 2>"$OUT/hf-bf16.log" || tail -20 "$OUT/hf-bf16.log"
python3 - "$OUT" <<'PY' | tee "$OUT/compare.txt"
import sys, json, os
o = sys.argv[1]
def ld(n):
    p = f"{o}/{n}.json"
    try: return json.loads(open(p).readline())
    except Exception as e: print("missing/bad", n, e); return None
def nll(d): return None if d is None else d["nll"]
def diff(a, b, n=None):
    if a is None or b is None: return None
    n = n or min(len(a), len(b))
    d = [abs(a[i] - b[i]) for i in range(n)]
    return {"n": n, "mean": sum(d) / n, "max": max(d)}
c512, c2048, c8192, c2048b = (ld(k) for k in ("bf16-c512", "bf16-c2048", "bf16-c8192", "bf16-c2048b"))
f32, hf32, hf16 = ld("f32-c2048"), ld("hf-fp32"), ld("hf-bf16")
r = {"chunk": {"512_vs_2048": diff(nll(c512), nll(c2048)), "2048_vs_8192": diff(nll(c2048), nll(c8192)),
               "512_vs_8192": diff(nll(c512), nll(c8192))}}
r["c2048_rerun_bitwise_equal"] = (open(f"{o}/bf16-c2048.json", "rb").read() == open(f"{o}/bf16-c2048b.json", "rb").read()
                                  if c2048 and c2048b else None)
r["c2048_rerun_nll_equal"] = (nll(c2048) == nll(c2048b)) if c2048 and c2048b else None
r["fmb_f32_vs_hf_fp32"] = diff(nll(f32), nll(hf32))
r["fmb_bf16_vs_hf_fp32"] = diff(nll(c2048), nll(hf32), 2047 if hf32 else None)
r["hf_bf16_vs_hf_fp32"] = diff(nll(hf16), nll(hf32))
for k, d in (("fmb_bf16_c2048", c2048), ("fmb_f32", f32)):
    if d: r[k + "_mean_nll"] = d.get("mean_nll")
for k, d in (("hf_fp32", hf32), ("hf_bf16", hf16)):
    if d: r[k] = {"mean_nll": sum(d["nll"]) / len(d["nll"]), "load_s": d["load_s"], "fwd_s": d["fwd_s"],
                  "transformers": d["transformers"], "torch": d["torch"]}
g = {}
ch = [v for v in r["chunk"].values() if v]
g["chunk_mean_le_2e-3"] = all(v["mean"] <= 2e-3 for v in ch) if len(ch) == 3 else None
g["chunk_max_le_0.05"] = all(v["max"] <= 0.05 for v in ch) if len(ch) == 3 else None
g["rerun_bitwise"] = r["c2048_rerun_bitwise_equal"]
g["f32_vs_hf_max_le_1e-3"] = r["fmb_f32_vs_hf_fp32"]["max"] <= 1e-3 if r["fmb_f32_vs_hf_fp32"] else None
g["bf16_vs_hf_mean_le_0.02"] = r["fmb_bf16_vs_hf_fp32"]["mean"] <= 0.02 if r["fmb_bf16_vs_hf_fp32"] else None
g["bf16_within_2x_hf_bf16"] = (r["fmb_bf16_vs_hf_fp32"]["mean"] <= 2 * r["hf_bf16_vs_hf_fp32"]["mean"]
                               if r["fmb_bf16_vs_hf_fp32"] and r["hf_bf16_vs_hf_fp32"] else None)
r["goals"] = g
r["timings"] = open(f"{o}/timings.txt").read().splitlines()
json.dump(r, open(f"{o}/7b-check.json", "w"), indent=1)
print(json.dumps(r, indent=1))
PY
cat "$T"; cp "$OUT/7b-check.json" "$OUT/compare.txt" "$OUT/gpu.txt" "$FINAL/" 2>/dev/null
