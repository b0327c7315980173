#!/bin/sh
# Differential test of the tokenizer against HF tokenizers (pip package `tokenizers`):
# 5,000 random inputs on the shared tokenizer.json, special tokens on and off, plus decoding;
# 1,000 on tiny-a's truncated vocabulary (bytes without a token are dropped, as in HF); 500 on
# each generated variant (added-token flags + TemplateProcessing; other split behaviours,
# invert, empty matches; String patterns). A missing HF is a FAIL.
# Seed: random per run, printed as a NOTE; TOK_DIFF_SEED=N reproduces.
# FMB_PYTHON: the python that has HF tokenizers (`make test` finds or installs one:
# tools/deps.sh python); python3 otherwise.
B=${FMBATCH:-build/fmbatch}
PY=${FMB_PYTHON:-python3}
rc=0
"$PY" tools/tok_diff.py --fmbatch "$B" --n "${TOK_DIFF_N:-5000}" || rc=1
"$PY" tools/tok_diff.py --fmbatch "$B" --n 1000 --tag _tiny_a \
    --tokenizer tests/fixtures/tiny-a/tokenizer.json || rc=1
for v in flags behaviors strings; do
    "$PY" tools/tok_diff.py --fmbatch "$B" --n 500 --variant $v || rc=1
done
exit $rc
