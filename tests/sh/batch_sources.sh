#!/bin/sh
# End-to-end tests of the sources' edge cases on `fmbatch run` / `check` / `status` with the tiny
# fixture model (tests/sh/batch_sources.py does the work): every input lands or is a failed item
# naming its file and position; never dropped with exit 0 (NULL and repeated SQLite keys,
# repeated keys in any source, damaged and truncated archives, a truncated .jsonl.gz, a locked
# source database, a truncated 7z, a UTF-8 BOM).
exec python3 "$(dirname "$0")/batch_sources.py"
