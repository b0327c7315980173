#!/bin/sh
# The trained demo model's scores mean something on held-out text (tests/sh/demo_model.py).
set -u
: "${FMBATCH:?FMBATCH must name the binary}"
exec python3 tests/sh/demo_model.py
