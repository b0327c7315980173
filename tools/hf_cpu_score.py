"""Times HF transformers' FalconMamba scoring on the CPU (the reference point for the CPU
engine's bench): python3 tools/hf_cpu_score.py MODEL_DIR IDS_FILE THREADS.
Prints JSON with tokens/s and the mean NLL (to check both tools computed the same thing)."""
import json, sys, time
import torch
from transformers import FalconMambaForCausalLM

model_dir, ids_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
ids = [int(x) for x in open(ids_file).read().split()]
t0 = time.time()
model = FalconMambaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
load = time.time() - t0
x = torch.tensor([ids])
t0 = time.time()
with torch.no_grad():
    logits = model(x, use_cache=False).logits[0].float()
el = time.time() - t0
lp = torch.log_softmax(logits.double(), -1)
nll = -lp[:-1].gather(1, x[0, 1:, None])[:, 0]
print(json.dumps({"tokens": len(ids), "seconds": el, "tok_per_s": len(ids) / el,
                  "mean_nll": float(nll.mean()), "load_seconds": load,
                  "torch": torch.__version__, "threads": threads}))
