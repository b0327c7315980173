#!/bin/sh
# Differential test of the tokenizer against HF tokenizers (pip package `tokenizers`):
# 5,000 random inputs, special tokens on and off, plus decoding. A missing HF is a FAIL.
# Seed: random per run, printed as a NOTE; TOK_DIFF_SEED=N reproduces a run.
exec python3 tools/tok_diff.py --fmbatch "${FMBATCH:-build/fmbatch}" --n "${TOK_DIFF_N:-5000}"
