#!/bin/sh
# The bad-input list's end-to-end cases that no other test covers (tests/RELIABILITY.md lists
# them all, with the test of each): malformed and mistyped job files; archives with traversal
# names, links, devices, an encrypted entry, a bomb, 20,000 empty entries; empty, binary,
# invalid UTF-8, one-token and oversized documents; failing SQLite queries, NULL and BLOB texts.
exec python3 "$(dirname "$0")/bad_inputs.py"
