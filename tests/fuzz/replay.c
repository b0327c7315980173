/*
 * replay: a plain main (no libFuzzer) that feeds saved inputs to a fuzz target's
 * LLVMFuzzerTestOneInput, so that `make test` replays them with any compiler: every crash a
 * fuzzer found (tests/fuzz/crashes/<target>/) and the seed corpus (tests/fuzz/corpus_<target>/).
 * The target's name comes from the binary's: test_fuzz_<target>. Prints one PASS line per
 * folder (an input that breaks the target aborts, which the runner counts as a failure, with
 * the file's name printed before). With arguments: those files only.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
    // a copy of exactly n bytes, as libFuzzer gives: ASan sees a read past the end
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays every file of dir in name order; returns how many (-1: no such folder). */
static int replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap)
            names = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    int done = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        done += replay_file(path) == 0;
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (replay_file(argv[i])) {
                printf("FAIL replay: cannot read %s\n", argv[i]);
                return 1;
            }
        return 0;
    }
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    const char *target = strncmp(base, "test_fuzz_", 10) ? base : base + 10;
    char dir[512];
    snprintf(dir, sizeof dir, "tests/fuzz/crashes/%s", target);
    int crashes = replay_dir(dir);
    printf("PASS fuzz %s: %d saved crash inputs replayed\n", target, crashes < 0 ? 0 : crashes);
    snprintf(dir, sizeof dir, "tests/fuzz/corpus_%s", target);
    int seeds = replay_dir(dir);
    if (seeds <= 0) {
        printf("FAIL fuzz %s: no seed corpus in %s\n", target, dir);
        return 1;
    }
    printf("PASS fuzz %s: %d seed inputs replayed\n", target, seeds);
    return 0;
}
