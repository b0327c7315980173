#!/usr/bin/env python3
"""Train the demo model: a small FalconMamba (HF transformers' FalconMambaForCausalLM, exact).

    python3 tools/train_demo_model.py --data DIR --out jobs/demo/model [--steps N] [--seed S]

Step 2 of 2. DIR is what tools/demo_text.py wrote (train.bin, heldout.bin: uint16 ids, each
document preceded by <|endoftext|>; tokenizer.json). Needs torch and transformers; runs in
minutes on one GPU (the H200 of the device machine), hours on a CPU.

The model is HF's own class and HF's own initialisation (seeded); only the training forward
is ours: the same math as FalconMambaMixer's slow path in float32 (in_proj, causal depthwise
conv + SiLU, x_proj, weightless RMS norms on dt/B/C, softplus dt, exp(A dt) discretisation,
the selective scan, D skip, SiLU gate, out_proj; RMSNorm blocks, fp32 residual, tied lm_head),
written so that one training step is a fixed sequence of kernels that a CUDA graph can replay
(HF's loop launches ~6 kernels a token a layer and would take hours). Before training the
script checks that this forward gives HF's logits on the same weights; after training it
checks it again on the saved bfloat16 weights and reports the held-out loss computed by HF
itself.

Writes into --out: config.json, model.safetensors (bfloat16, HF save_pretrained),
tokenizer.json (copied), train_log.json (settings, loss curve, held-out loss, timings,
machine). Seeded: torch, the batch sampler and the init all derive from --seed; GPU kernels run
with torch's deterministic algorithms where they exist, so a rerun on the same machine and
software gives the same loss curve to within float rounding of the reductions.
"""
import argparse
import json
import math
import os
import platform
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=0,
                    help="cap the run: after 13 steps, lower --steps to what fits in this many "
                         "minutes (the learning-rate schedule is fixed from then on; the steps "
                         "chosen are in train_log.json, and --steps N reproduces the run)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--no-graphs", action="store_true", help="eager steps (slow; for debugging)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args()


def make_model(a, vocab):
    from transformers import FalconMambaConfig, FalconMambaForCausalLM
    cfg = FalconMambaConfig(vocab_size=vocab, hidden_size=a.hidden, state_size=a.state,
                            num_hidden_layers=a.layers, expand=2, conv_kernel=4,
                            use_bias=False, use_conv_bias=True, time_step_rank="auto",
                            tie_word_embeddings=True, layer_norm_epsilon=1e-5,
                            mixer_rms_eps=1e-6, bos_token_id=11, eos_token_id=11,
                            pad_token_id=11)
    torch.manual_seed(a.seed)
    return FalconMambaForCausalLM(cfg).float()


def rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def mixer(m, u, cfg):
    """FalconMambaMixer.slow_forward in float32. u [B,T,H] -> [B,T,H]."""
    Bsz, T, _ = u.shape
    E, N, R, K = cfg.intermediate_size, cfg.state_size, cfg.time_step_rank, cfg.conv_kernel
    xz = F.linear(u, m.in_proj.weight, m.in_proj.bias)
    x, z = xz[..., :E], xz[..., E:]
    x = F.conv1d(x.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=K - 1,
                 groups=E)[..., :T].transpose(1, 2)
    x = F.silu(x)  # [B,T,E]
    s = F.linear(x, m.x_proj.weight)
    dt, Bm, Cm = s[..., :R], s[..., R:R + N], s[..., R + N:]
    eps = cfg.mixer_rms_eps
    dt, Bm, Cm = rms(dt, eps), rms(Bm, eps), rms(Cm, eps)
    dt = F.softplus(F.linear(dt, m.dt_proj.weight, m.dt_proj.bias))  # [B,T,E]
    A = -torch.exp(m.A_log.float())  # [E,N]
    dA = torch.exp(dt.unsqueeze(-1) * A)  # [B,T,E,N]
    dBu = (dt * x).unsqueeze(-1) * Bm.unsqueeze(2)  # [B,T,E,N]
    h = torch.zeros(Bsz, E, N, device=u.device, dtype=u.dtype)
    # unbind, not dA[:, t]: the backward of T slices would zero-fill and add a full [B,T,E,N]
    # gradient for every t (T^2 memory traffic); unbind's backward is one stack.
    hs = []
    for dA_t, dBu_t in zip(dA.unbind(1), dBu.unbind(1)):
        h = torch.addcmul(dBu_t, dA_t, h)
        hs.append(h)
    hs = torch.stack(hs, 1)  # [B,T,E,N]
    y = torch.einsum("bten,btn->bte", hs, Cm) + x * m.D
    y = y * F.silu(z)
    return F.linear(y, m.out_proj.weight, m.out_proj.bias)


def forward(model, ids):
    """Logits [B,T,V] for ids [B,T] (float32)."""
    cfg = model.config
    bb = model.backbone
    h = bb.embeddings(ids)
    for layer in bb.layers:
        u = rms(h, cfg.layer_norm_epsilon) * layer.norm.weight
        h = h + mixer(layer.mixer, u, cfg)
    h = rms(h, cfg.layer_norm_epsilon) * bb.norm_f.weight
    return F.linear(h, model.lm_head.weight)


def check_vs_hf(model, ids, what):
    with torch.no_grad():
        ours = forward(model, ids)
        hf = model(ids, use_cache=False).logits.float()
    d = (ours - hf).abs().max().item()
    scale = hf.abs().max().item()
    print("%s: max |ours - HF| logits = %.3g (max |logit| %.3g)" % (what, d, scale), flush=True)
    if not d <= 1e-3 * max(1.0, scale):
        sys.exit("the training forward does not match HF's (%g)" % d)
    return d


def loss_of(model, x, y):
    logits = forward(model, x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def heldout_windows(held, seq, n, device):
    # Fixed, evenly spaced windows over the held-out tokens.
    starts = np.linspace(0, len(held) - seq - 2, n).astype(np.int64)
    xs = np.stack([held[s:s + seq] for s in starts]).astype(np.int64)
    ys = np.stack([held[s + 1:s + seq + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)


def eval_loss(model, hx, hy, bs=32, hf=False):
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, hx.shape[0], bs):
            x, y = hx[i:i + bs], hy[i:i + bs]
            logits = model(x, use_cache=False).logits.float() if hf else forward(model, x)
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                   reduction="sum").item()
            n += y.numel()
    return tot / n


def main():
    a = parse()
    t_start = time.time()
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)

    tok = json.load(open(os.path.join(a.data, "tokenizer.json")))
    vocab = len(tok["model"]["vocab"])
    train = np.fromfile(os.path.join(a.data, "train.bin"), dtype=np.uint16)
    held = np.fromfile(os.path.join(a.data, "heldout.bin"), dtype=np.uint16)
    print("vocab %d, train %d tokens, held-out %d tokens" % (vocab, len(train), len(held)),
          flush=True)

    model = make_model(a, vocab).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print("parameters: %d (%.2f M)" % (n_params, n_params / 1e6), flush=True)
    gen = torch.Generator().manual_seed(a.seed)
    probe = torch.randint(0, vocab, (2, 64), generator=gen).to(dev)
    check_vs_hf(model.eval(), probe, "init")
    model.train()

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    graphs = dev.type == "cuda" and not a.no_graphs
    lr_t = torch.tensor(a.lr, device=dev) if graphs else a.lr
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": other, "weight_decay": 0.0}], lr=lr_t,
                            betas=(0.9, 0.95), eps=1e-8, capturable=graphs)

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        p = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    # The sampler: windows at seeded random offsets of the training stream.
    rng = np.random.default_rng(a.seed)

    def batch():
        s = rng.integers(0, len(train) - a.seq - 1, a.batch)
        idx = s[:, None] + np.arange(a.seq + 1)[None, :]
        w = torch.from_numpy(train[idx].astype(np.int64))
        return w[:, :-1], w[:, 1:]

    sx = torch.zeros(a.batch, a.seq, dtype=torch.long, device=dev)
    sy = torch.zeros_like(sx)

    def step_body():
        loss = loss_of(model, sx, sy)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss

    hx, hy = heldout_windows(held, a.seq, 128, dev)
    log = {"args": vars(a), "parameters": n_params, "vocab": vocab, "train_tokens": len(train),
           "heldout_tokens": len(held), "curve": []}
    step, graph, static_loss = 0, None, None
    t_train = time.time()
    losses = []
    while step < a.steps:
        x, y = batch()
        sx.copy_(x)
        sy.copy_(y)
        lr = lr_at(step)
        if graphs:
            lr_t.fill_(lr)
            if step < 3:  # warm-up steps on a side stream, then capture
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    opt.zero_grad(set_to_none=True)
                    loss = step_body()
                torch.cuda.current_stream().wait_stream(s)
                losses.append(loss.detach())
            else:
                if graph is None:
                    opt.zero_grad(set_to_none=True)
                    graph = torch.cuda.CUDAGraph()
                    try:
                        with torch.cuda.graph(graph):
                            static_loss = step_body()
                    except Exception as e:  # fall back to eager steps (same math, slower)
                        print("CUDA graph capture failed (%r): eager steps" % e, flush=True)
                        graphs, graph = False, None
                        torch.cuda.synchronize()
                if graphs:
                    # Capturing does not run the step: replay runs it.
                    graph.replay()
                    losses.append(static_loss.detach().clone())
                else:
                    opt.zero_grad(set_to_none=True)
                    losses.append(step_body().detach())
        else:
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            losses.append(step_body().detach())
        step += 1
        if step == 4:
            torch.cuda.synchronize() if dev.type == "cuda" else None
            t4 = time.time()
        if step == 14 and a.minutes > 0:
            torch.cuda.synchronize() if dev.type == "cuda" else None
            per = (time.time() - t4) / 10
            fit = int((a.minutes * 60 - (time.time() - t_train)) / per)
            if fit < a.steps:
                print("%.1f ms a step: %d steps fit in %.1f minutes" % (per * 1e3, fit, a.minutes),
                      flush=True)
                a.steps = max(fit, 20)
                a.warmup = min(a.warmup, a.steps // 10)
        if step % 50 == 0 or step == a.steps:
            ls = torch.stack(losses).float().cpu().numpy()
            losses = []
            el = time.time() - t_train
            rec = {"step": step, "train_loss": float(ls.mean()), "lr": lr, "seconds": el}
            if step % a.eval_every == 0 or step == a.steps:
                model.eval()
                rec["heldout_loss"] = eval_loss(model, hx, hy)
                model.train()
            log["curve"].append(rec)
            print(json.dumps(rec), "tok/s %.0f" % (step * a.batch * a.seq / el), flush=True)
    torch.cuda.synchronize() if dev.type == "cuda" else None
    train_seconds = time.time() - t_train

    # Save in bfloat16 (the size budget), then measure what was saved.
    from transformers import FalconMambaForCausalLM
    model = model.eval().to(torch.bfloat16)
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    shutil.copy(os.path.join(a.data, "tokenizer.json"), os.path.join(a.out, "tokenizer.json"))
    saved = FalconMambaForCausalLM.from_pretrained(a.out, dtype=torch.float32).to(dev).eval()
    d = check_vs_hf(saved, hx[:2, :128], "saved")
    held_ours = eval_loss(saved, hx, hy)
    held_hf = eval_loss(saved, hx[:16, :], hy[:16, :], bs=4, hf=True)
    held_ours16 = eval_loss(saved, hx[:16, :], hy[:16, :], bs=4)
    log.update({
        "train_seconds": train_seconds, "total_seconds": time.time() - t_start,
        "tokens_seen": a.steps * a.batch * a.seq,
        "heldout_loss_bf16_weights": held_ours,
        "heldout_ppl_bf16_weights": math.exp(held_ours),
        "heldout_loss_hf_first16": held_hf, "heldout_loss_ours_first16": held_ours16,
        "max_logit_diff_vs_hf": d,
        "machine": {"host": platform.node(), "python": platform.python_version(),
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None},
    })
    import transformers
    log["machine"]["transformers"] = transformers.__version__
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(json.dumps({k: v for k, v in log.items() if k != "curve"}, indent=1), flush=True)


if __name__ == "__main__":
    main()
