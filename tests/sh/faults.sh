#!/bin/sh
# Fault injection end to end: FMB_FAULT kill points (claim, before/after commit, checkpoint,
# mid-prefill, mid-decode), SQLite BUSY/FULL/IOERR through the fault VFS, and 20 kill -9 at
# seeded random times; after each, a rerun ends with the same export as an uninterrupted run
# (timing fields aside), nothing lost or duplicated (tests/sh/faults.py, tests/RELIABILITY.md).
exec python3 "$(dirname "$0")/faults.py"
