#!/bin/sh
# A job's rows do not depend on the batch, the source order or a kill -9 + resume
# (tests/sh/batch_invariance.py).
exec python3 "$(dirname "$0")/batch_invariance.py"
