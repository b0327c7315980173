#!/bin/sh
# End-to-end tests of `fmbatch run` on the tiny fixture model (tests/sh/batch_e2e.py does the
# work: sources, exports compared with `fmbatch score` / `generate` one by one, failures, resume
# after kill -9, concurrent runs, fingerprint refusal, content-change reruns).
exec python3 "$(dirname "$0")/batch_e2e.py"
