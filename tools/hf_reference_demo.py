#!/usr/bin/env python3
"""Golden outputs of HF transformers (float32) on the trained demo model, from real text.

    python3 tools/hf_reference_demo.py [MODEL_DIR] [HELDOUT_JSONL] [OUT_DIR]
    (defaults: jobs/demo/model, tests/fixtures/demo-model/heldout.jsonl, tests/fixtures/demo-model)

Same tensors and names as tools/hf_reference.py writes for the random fixtures (so
tests/test_engine_golden.c reads both the same way), but the model is the trained one and the
inputs are held-out text tokenized with the model's own tokenizer.json (HF tokenizers), so
logits are peaked as in real use: random tiny models are near-uniform and hide bugs that only
show when a few logits dominate.

  prompt{i}.ids / .logits [L,V] / .greedy_ids [12] / .greedy_logprobs [12]   i = 0..2
  long.ids [n] / long.nll [n-1] / long.hidden0.last / long.hiddenN.last / long.layerK.*_states

The long prompt is several held-out documents joined by <|endoftext|> (~3000 tokens), with
<|endoftext|> first as fmbatch scores it. Needs torch, transformers, tokenizers (CPU is fine).
"""
import json
import os
import sys
import time

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
import transformers
from transformers import FalconMambaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "jobs", "demo", "model")
OUT = sys.argv[3] if len(sys.argv) > 3 else os.path.join(REPO, "tests", "fixtures", "demo-model")
HELD = sys.argv[2] if len(sys.argv) > 2 else os.path.join(OUT, "heldout.jsonl")
EOS = 11
PROMPT_TEXTS = ["The", "The quick brown fox jumps over the lazy dog, and then",
                None]  # None: the start of the first held-out English document
LONG_TOKENS = 3000

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids], device=dev), use_cache=False).logits[0].float()


def main():
    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    model = FalconMambaForCausalLM.from_pretrained(MODEL, dtype=torch.float32).to(dev).eval()
    docs = [json.loads(l) for l in open(HELD, encoding="utf-8")]
    english = [d for d in docs if d["source"] in ("fortune-en", "kjv", "man", "python-doc")]
    V = model.config.vocab_size
    T = {}
    meta = {"case": "demo-model", "model": os.path.relpath(MODEL, REPO),
            "transformers": transformers.__version__, "torch": torch.__version__,
            "compute": "float32 (weights upcast from bfloat16), tf32 off", "tensors": {}}
    for i, text in enumerate(PROMPT_TEXTS):
        if text is None:
            ids = tok.encode(english[0]["text"], add_special_tokens=False).ids[:64]
            meta["prompt%d.text" % i] = "held-out document %s, first 64 tokens" % english[0]["id"]
        else:
            ids = tok.encode(text, add_special_tokens=False).ids
            meta["prompt%d.text" % i] = text
        ids = [EOS] + ids
        lg = logits(model, ids)
        T["prompt%d.ids" % i] = torch.tensor(ids, dtype=torch.int32)
        T["prompt%d.logits" % i] = lg.cpu().contiguous()
        seq, lps = list(ids), []
        for _ in range(12):
            l = logits(model, seq)[-1]
            lp = torch.log_softmax(l.double(), -1)
            nxt = int(torch.argmax(l))
            seq.append(nxt)
            lps.append(float(lp[nxt]))
        T["prompt%d.greedy_ids" % i] = torch.tensor(seq[len(ids):], dtype=torch.int32)
        T["prompt%d.greedy_logprobs" % i] = torch.tensor(lps, dtype=torch.float64)
        meta["prompt%d.greedy_text" % i] = tok.decode(seq[len(ids):])
        meta["tensors"]["prompt%d.logits" % i] = "[%d,%d] float32 logits" % (len(ids), V)
    ids = [EOS]
    for d in english[1:]:
        ids += tok.encode(d["text"], add_special_tokens=False).ids + [EOS]
        if len(ids) >= LONG_TOKENS:
            break
    ids = ids[:LONG_TOKENS]
    with torch.no_grad():
        out = model(torch.tensor([ids], device=dev), use_cache=True, output_hidden_states=True)
    lg = out.logits[0].float()
    lp = torch.log_softmax(lg.double(), -1)
    tgt = torch.tensor(ids[1:], device=dev)
    nll = -lp[:-1].gather(1, tgt[:, None])[:, 0]
    T["long.ids"] = torch.tensor(ids, dtype=torch.int32)
    T["long.nll"] = nll.cpu().contiguous()
    meta["tensors"]["long.nll"] = "[%d] float64 -log p(ids[t+1] | ids[..t])" % (len(ids) - 1)
    meta["long.mean_nll"] = float(nll.mean())
    hs = out.hidden_states
    for li in [0, len(hs) - 1]:
        T["long.hidden%d.last" % li] = hs[li][0, -1].float().cpu().contiguous()
    cp = getattr(out, "cache_params", None)
    if cp is not None:
        for attr in ("conv_states", "ssm_states"):
            st = getattr(cp, attr, None)
            if st is None:
                continue
            for li in range(model.config.num_hidden_layers):
                T["long.layer%d.%s" % (li, attr)] = st[li][0].float().cpu().contiguous()
    save_file(T, os.path.join(OUT, "ref.safetensors"))
    with open(os.path.join(OUT, "ref.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("done in %.1fs, long mean nll %.4f" % (time.time() - t0, meta["long.mean_nll"]),
          {k: v for k, v in meta.items() if k.endswith("greedy_text")}, flush=True)


if __name__ == "__main__":
    main()
