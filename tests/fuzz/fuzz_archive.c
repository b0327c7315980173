/*
 * fuzz_archive: libFuzzer target for the archive reader (batch/source_archive.c) through the
 * source layer: the input is an archive file (any format or filter libarchive reads: tar, zip,
 * cpio, 7z, gzip, xz, ...), read to its end with small limits so that the entry, total and
 * ratio limits are reached. `make fuzz` builds it; seeds: tests/fuzz/corpus_archive.
 */
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_write("in.archive", data, size))
        return 0;
    fuzz_read_source("[job]\nname = \"f\"\nmodel = \"m\"\noutput = \"o.db\"\n"
                     "[source]\nkind = \"archive\"\npaths = [\"in.archive\"]\n"
                     "max_entry_bytes = 4096\nmax_total_bytes = 65536\nmax_ratio = 50\n"
                     "[[task]]\nname = \"p\"\nkind = \"score\"\n");
    return 0;
}
