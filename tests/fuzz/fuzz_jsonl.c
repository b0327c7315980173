/*
 * fuzz_jsonl: libFuzzer target for the JSON Lines reader (batch/source_jsonl.c) through the
 * source layer: the input is the file (lines of JSON, or anything), read twice, once with an
 * id_field (ids: strings or integers, duplicates) and once keyed by line; a gzip input goes
 * through the decompressor. Small limits so that the line and entry limits are reached.
 * `make fuzz` builds it; seeds: tests/fuzz/corpus_jsonl.
 */
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_write("in.jsonl", data, size))
        return 0;
    fuzz_read_source("[job]\nname = \"f\"\nmodel = \"m\"\noutput = \"o.db\"\n"
                     "[source]\nkind = \"jsonl\"\npaths = [\"in.jsonl\"]\nid_field = \"id\"\n"
                     "max_entry_bytes = 2048\nmax_total_bytes = 65536\n"
                     "[[task]]\nname = \"p\"\nkind = \"score\"\n");
    fuzz_read_source("[job]\nname = \"f\"\nmodel = \"m\"\noutput = \"o.db\"\n"
                     "[source]\nkind = \"jsonl\"\npaths = [\"in.jsonl\"]\ntext_field = \"t\"\n"
                     "[[task]]\nname = \"p\"\nkind = \"score\"\n");
    return 0;
}
