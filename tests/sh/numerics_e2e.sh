#!/bin/sh
# End-to-end tests of non-finite checkpoints and empty documents (tests/sh/numerics_e2e.py).
exec python3 "$(dirname "$0")/numerics_e2e.py"
