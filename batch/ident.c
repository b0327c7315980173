/* ident: model and tokenizer identity hashes. See ident.h. */
#include "batch/ident.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/hash.h"

/* Hashes len bytes at off of f (short reads hash what was read). */
static void mix_range(fmb_hash_stream *h, FILE *f, long long off, size_t len)
{
    char buf[4096];
    if (fseeko(f, (off_t)off, SEEK_SET))
        return;
    while (len) {
        size_t r = fread(buf, 1, len < sizeof buf ? len : sizeof buf, f);
        if (!r)
            break;
        fmb_hash_stream_add(h, buf, r);
        len -= r;
    }
}

static fmb_status mix_whole(fmb_hash_stream *h, const char *path, int required, fmb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return required ? fmb_fail(err, FMB_EINVAL, "%s: %s", path, strerror(errno)) : FMB_OK;
    char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0)
        fmb_hash_stream_add(h, buf, r);
    int bad = ferror(f);
    fclose(f);
    return bad ? fmb_fail(err, FMB_EIO, "%s: read error", path) : FMB_OK;
}

fmb_status fmb_ident_file(const char *path, char out[33], fmb_err *err)
{
    fmb_hash_stream h = {0, 0};
    fmb_status s = mix_whole(&h, path, 1, err);
    if (!s)
        fmb_hash_stream_hex(&h, out);
    return s;
}

static int is_shard(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 12 && !strcmp(e->d_name + n - 12, ".safetensors");
}

fmb_status fmb_ident_model(const char *dir, char out[33], fmb_err *err)
{
    fmb_hash_stream h = {0, 0};
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    fmb_status s = mix_whole(&h, path, 1, err);
    if (s)
        return s;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if ((s = mix_whole(&h, path, 0, err)))
        return s;
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, is_shard, alphasort);
    if (n <= 0) {
        free(ents);
        return fmb_fail(err, FMB_EINVAL, "%s: no *.safetensors file", dir);
    }
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
        fmb_hash_stream_add(&h, ents[i]->d_name, strlen(ents[i]->d_name) + 1);
        FILE *f = fopen(path, "rb");
        struct stat st;
        if (!f || fstat(fileno(f), &st)) {
            if (f)
                fclose(f);
            s = fmb_fail(err, FMB_EINVAL, "%s: %s", path, strerror(errno));
            break;
        }
        long long size = (long long)st.st_size;
        fmb_hash_stream_add(&h, &size, sizeof size);
        unsigned char hl[8] = {0};
        size_t got = fread(hl, 1, 8, f);
        unsigned long long header = 0;
        for (int k = 7; k >= 0; k--)
            header = (header << 8) | hl[k];
        if (got == 8 && header <= 100000000ull && (long long)header + 8 <= size)
            mix_range(&h, f, 0, (size_t)header + 8);
        for (long long off = 0; off < size; off += 16ll << 20)
            mix_range(&h, f, off, 4096);
        if (size > 4096)
            mix_range(&h, f, size - 4096, 4096);
        fclose(f);
    }
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    if (!s)
        fmb_hash_stream_hex(&h, out);
    return s;
}
