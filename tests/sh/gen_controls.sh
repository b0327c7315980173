#!/bin/sh
# The generation controls of issue 13 end to end (tests/sh/gen_controls.py): penalties, min_p,
# n samples and logprobs in a job equal `fmbatch generate` one by one; choice best_by; score
# --per-token ids and offsets; out-of-range values refused at check time with file:line.
exec python3 "$(dirname "$0")/gen_controls.py"
