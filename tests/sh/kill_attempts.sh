#!/bin/sh
# kill -9 of the whole run while an item is in progress does not count against the item
# (tests/sh/kill_attempts.py; batch/queue.h "Deaths and attempts").
exec python3 "$(dirname "$0")/kill_attempts.py"
