/* Known values of every stored hash (engine/hash.h, batch/ident.h), computed before the hashes
 * moved into engine/hash.c: they are in output databases and seeds derive from them, so a
 * change here breaks resumes and reproducibility. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "batch/ident.h"
#include "engine/hash.h"
#include "tests/check.h"

static void hash64_is(uint64_t got, uint64_t want, const char *name)
{
    check(got == want, name, "got %016llx, want %016llx", (unsigned long long)got,
          (unsigned long long)want);
}

static void hex_is(const char *got, const char *want, const char *name)
{
    check(!strcmp(got, want), name, "got %s, want %s", got, want);
}

int main(void)
{
    /* The hex values were also checked against an independent Python FNV-1a. */
    /* FNV-1a 64: offset basis for "", the published value for "abc"; chaining equals one call. */
    hash64_is(fmb_hash64(0, "", 0), 0xcbf29ce484222325ull, "hash64: empty is the FNV basis");
    hash64_is(fmb_hash64(0, "abc", 3), 0xe71fa2190541574bull, "hash64: FNV-1a of abc");
    hash64_is(fmb_hash64(fmb_hash64(0, "ab", 2), "c", 1), 0xe71fa2190541574bull,
              "hash64: continuing equals one pass");
    hash64_is(fmb_hash64(7, "key\0task", 8), 0x33da0590d2c07b77ull, "hash64: seeded (task seeds)");

    char h[33];
    fmb_hash_content("abc", 3, h);
    hex_is(h, "e71fa2190541574b0b95ec099d52ff9a", "content hash of abc");
    fmb_hash_content("", 0, h);
    hex_is(h, "cbf29ce48422232555c5e55dfb685f30", "content hash of nothing");

    fmb_hash_stream s = {0, 0};
    fmb_hash_stream_add(&s, "abc", 3);
    fmb_hash_stream_hex(&s, h);
    hex_is(h, "e71fa2190541574b09e0885c0c03d09b", "stream hash of one piece (lane b from phi)");

    fmb_err err;
    if (check(!fmb_ident_file("tests/fixtures/tiny-a/tokenizer.json", h, &err),
              "ident: tokenizer file hashed", "%s", err.msg))
        hex_is(h, "6f6b51483015a2f56a91ce3024325485", "ident: tokenizer hash of tiny-a");
    if (check(!fmb_ident_model("tests/fixtures/tiny-a", h, &err), "ident: model hashed", "%s",
              err.msg))
        hex_is(h, "ec7af8c0e261c6ba9a5041408c568fce", "ident: model hash of tiny-a");
    return check_exit();
}
