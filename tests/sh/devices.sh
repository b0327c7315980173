#!/bin/sh
# `fmbatch run --devices 0,0`: two CPU workers on one output give the rows of one worker, both
# take items, and SIGINT to the parent reaches both (tests/sh/devices.py).
exec python3 "$(dirname "$0")/devices.py"
