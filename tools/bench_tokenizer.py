#!/usr/bin/env python3
"""Tokenizer speed: fmbatch vs HF tokenizers (single-threaded) on a 10 MB mixed-script text.

Builds the text deterministically (seed 1): sentences made of real vocab pieces of the given
tokenizer.json (Latin, Cyrillic, CJK, Arabic/Hebrew, Devanagari, emoji, digits, punctuation,
code-like lines) and the texts of tests/fixtures/tokenizer/cases.jsonl. HF encodes it as one
call with RAYON_NUM_THREADS=1 / TOKENIZERS_PARALLELISM=false; fmbatch runs `tokenize` on the
file (whole process: load, read, encode, print), best of 3 each. Also checks that the ids agree.

  python3 tools/bench_tokenizer.py --fmbatch build/fmbatch [--mb 10]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def make_text(tok, mb, seed=1):
    r = random.Random(seed)
    vocab = tok.get_vocab()
    pieces = [tok.decode([i]) for i in sorted(vocab.values())[300:]]
    words = [p.strip() for p in pieces if p.strip()]
    cases = [json.loads(l)["text"] for l in open("tests/fixtures/tokenizer/cases.jsonl")]
    extra = ["Привет, как дела? Всё хорошо, спасибо.", "中文分词测试：你好，世界！", "東京は日本の首都です。",
             "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "Straße über naïve café 😀🎉",
             "def f(x):\n    return x ** 2  # 1234567\n", "price: $1,299.99 (-15%) on 2026-11-29",
             "x² + y³ = ½ · z¼ — ±5°C", "   indented\ttabs\n\n"]
    out, n = [], 0
    while n < mb * 1_000_000:
        k = r.random()
        if k < 0.1:
            s = r.choice(cases)
        elif k < 0.25:
            s = r.choice(extra)
        else:
            s = " ".join(r.choice(words) for _ in range(r.randint(3, 20)))
            s += r.choice([". ", ", ", "! ", "? ", "\n", ": ", " - ", "... ", "\n\n"])
        out.append(s)
        n += len(s.encode())
    return "".join(out).encode()[: mb * 1_000_000].decode("utf-8", errors="ignore")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fmbatch", default="build/fmbatch")
    ap.add_argument("--tokenizer", default="tests/fixtures/tokenizer/tokenizer.json")
    ap.add_argument("--mb", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    import tokenizers
    tok = Tokenizer.from_file(a.tokenizer)
    text = make_text(tok, a.mb)
    nbytes = len(text.encode())
    path = os.path.join(tempfile.mkdtemp(), "bench.txt")
    open(path, "wb").write(text.encode())
    hf_t, hf_ids = [], None
    for _ in range(a.reps):
        t0 = time.perf_counter()
        enc = tok.encode(text)
        hf_t.append(time.perf_counter() - t0)
        hf_ids = enc.ids
    fm_t, fm_enc, fm_ids = [], [], None
    for _ in range(a.reps):
        t0 = time.perf_counter()
        res = subprocess.run([a.fmbatch, "tokenize", "--tokenizer", a.tokenizer, "--time", path],
                             capture_output=True, check=True)
        fm_t.append(time.perf_counter() - t0)
        fm_enc.append(float(res.stderr.decode().split("encode_s=")[1].split()[0]))
        fm_ids = json.loads(res.stdout)
    same = fm_ids == hf_ids
    print("input: %d bytes (%d chars), %d tokens; ids identical: %s" % (nbytes, len(text), len(hf_ids), same))
    print("HF tokenizers %s encode (one call, 1 thread): best %.3f s  (%.1f MB/s)" % (
        tokenizers.__version__, min(hf_t), nbytes / 1e6 / min(hf_t)))
    print("fmbatch tokenize, whole process:              best %.3f s  (%.1f MB/s)" % (
        min(fm_t), nbytes / 1e6 / min(fm_t)))
    print("fmbatch encode call only:                     best %.3f s  (%.1f MB/s)" % (
        min(fm_enc), nbytes / 1e6 / min(fm_enc)))
    print("ratio HF / fmbatch: %.2fx (whole process), %.2fx (encode call)" % (
        min(hf_t) / min(fm_t), min(hf_t) / min(fm_enc)))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
