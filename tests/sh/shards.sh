#!/bin/sh
# Shards and merge end to end (tests/sh/shards.py): --shard I/N partitions a corpus exactly,
# the merge of the shards exports the rows of the unsharded run, a killed shard resumes, and
# merging a shard of another job, the same shard twice or an item twice is refused.
exec python3 "$(dirname "$0")/shards.py"
