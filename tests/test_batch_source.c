/* test_batch_source: the sources on archives written here with libarchive (tar with each
 * filter, zip, 7z), JSON Lines (.zst, .xz), directories and SQLite pages; limits and bad input
 * become failed items, never crashes. */
#include <archive.h>
#include <archive_entry.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch/job.h"
#include "batch/prefetch.h"
#include "batch/source.h"
#include "engine/hash.h"
#include "tests/check.h"

static char dir[256];

typedef struct {
    const char *name;
    const char *data;
    size_t len;
} entry;

/* Writes an archive with libarchive: format "tar"/"zip"/"7z", filter NULL/"gzip"/... */
static int
write_archive(const char *path, const char *format, const char *filter, const entry *e, int n)
{
    struct archive *a = archive_write_new();
    if (!strcmp(format, "tar"))
        archive_write_set_format_pax_restricted(a);
    else if (!strcmp(format, "zip"))
        archive_write_set_format_zip(a);
    else
        archive_write_set_format_7zip(a);
    if (filter && archive_write_add_filter_by_name(a, filter) != ARCHIVE_OK)
        return -1;
    if (archive_write_open_filename(a, path) != ARCHIVE_OK)
        return -1;
    for (int i = 0; i < n; i++) {
        struct archive_entry *en = archive_entry_new();
        archive_entry_set_pathname(en, e[i].name);
        if (e[i].data) {
            archive_entry_set_filetype(en, AE_IFREG);
            archive_entry_set_size(en, (la_int64_t)e[i].len);
        } else {
            archive_entry_set_filetype(en, AE_IFDIR);
        }
        archive_entry_set_perm(en, 0644);
        archive_write_header(a, en);
        if (e[i].data)
            archive_write_data(a, e[i].data, e[i].len);
        archive_entry_free(en);
    }
    archive_write_close(a);
    archive_write_free(a);
    return 0;
}

/* Appends one item as "key=data;" or "key=!error;" (at most 40 bytes of either) to out. */
static void append_item(char *out,
                        size_t cap,
                        size_t *len,
                        const char *key,
                        const char *error,
                        const char *data,
                        size_t n)
{
    int k = snprintf(out + *len, cap - *len, "%s=%s%.*s;", key, error ? "!" : "",
                     error ? 40 : (int)(n > 40 ? 40 : n), error ? error : data);
    if (k > 0 && (size_t)k < cap - *len)
        *len += (size_t)k;
}

/* Reads every item of a job's source into "key=data|!error;" lines. Caller frees. */
static char *drain(const char *toml, int *n_items)
{
    fmb_job *job = NULL;
    fmb_err err;
    *n_items = 0;
    if (fmb_job_parse(toml, strlen(toml), "t.toml", dir, &job, &err)) {
        printf("NOTE job: %s\n", err.msg);
        return NULL;
    }
    fmb_source *src = NULL;
    if (fmb_src_open(job, &src, &err)) {
        printf("NOTE source: %s\n", err.msg);
        fmb_job_free(job);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    for (;;) {
        fmb_doc d;
        int eof;
        if (fmb_src_next(src, &d, &eof, &err) || eof)
            break;
        (*n_items)++;
        append_item(out, cap, &len, d.key, d.error, d.data, d.len);
    }
    fmb_src_close(src);
    fmb_job_free(job);
    return out;
}

/* drain through the prefetch thread (batch/prefetch.h), with a queue of max_docs / max_bytes;
 * stop_after > 0: stop the thread after that many documents (the rest stays unread). */
static char *
drain_pf(const char *toml, int *n_items, size_t max_docs, size_t max_bytes, int stop_after)
{
    fmb_job *job = NULL;
    fmb_err err;
    *n_items = 0;
    fmb_source *src = NULL;
    fmb_prefetch *pf = NULL;
    if (fmb_job_parse(toml, strlen(toml), "t.toml", dir, &job, &err) ||
        fmb_src_open(job, &src, &err) || fmb_prefetch_start(src, max_docs, max_bytes, &pf, &err)) {
        printf("NOTE prefetch: %s\n", err.msg);
        fmb_job_free(job);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    for (;;) {
        fmb_pdoc d;
        int eof;
        if (fmb_prefetch_next(pf, &d, &eof, &err) || eof)
            break;
        (*n_items)++;
        append_item(out, cap, &len, d.key, d.error, d.data, d.len);
        char want[33];
        fmb_hash_content(d.data ? d.data : "", d.data ? d.len : 0, want);
        if (!d.error && strcmp(want, d.hash))
            printf("FAIL prefetch hash of %s\n", d.key);
        fmb_pdoc_free(&d);
        if (stop_after && *n_items == stop_after)
            break;
    }
    fmb_prefetch_stop(pf);
    fmb_job_free(job);
    return out;
}

static const char *head = "[job]\nname = \"t\"\nmodel = \"m\"\noutput = \"o.db\"\n"
                          "[[task]]\nname = \"s\"\nkind = \"score\"\n";

static char *job_with(const char *source)
{
    size_t n = strlen(head) + strlen(source) + 2;
    char *t = malloc(n);
    snprintf(t, n, "%s%s", head, source);
    return t;
}

static void archive_case(const char *name, const char *format, const char *filter)
{
    char path[512], src[600];
    entry e[] = {{"d/", NULL, 0},
                 {"d/one.txt", "first document", 14},
                 {"d/two.md", "second", 6},
                 {"d/skip.bin", "xx", 2}};
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (write_archive(path, format, filter, e, 4)) {
        check(0, name, "cannot write the archive");
        return;
    }
    snprintf(src, sizeof src,
             "[source]\nkind = \"archive\"\npaths = [\"%s\"]\n"
             "include = [\"*.txt\", \"*.md\"]\n",
             name);
    char *t = job_with(src);
    int n;
    char *got = drain(t, &n);
    char want[512];
    snprintf(want, sizeof want, "%s!d/one.txt=first document;%s!d/two.md=second;", name, name);
    check(got && !strcmp(got, want), name, "got '%s' want '%s'", got ? got : "", want);
    free(got);
    free(t);
}

static void write_file(const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *slash = strrchr(path, '/');
    *slash = 0;
    mkdir(path, 0755);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

/* The prefetch thread yields what the source yields, in order, with any queue bound; a
 * stop before the end neither hangs nor leaks. */
static void prefetch_case(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/pf.jsonl", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 500; i++)
        fprintf(f, i % 97 == 5 ? "{bad json %d\n" : "{\"id\": \"d%d\", \"text\": \"doc %d %s\"}\n",
                i, i, i % 3 ? "short" : "a longer text for the byte bound");
    fclose(f);
    char *t = job_with("[source]\nkind = \"jsonl\"\npaths = [\"pf.jsonl\"]\nid_field = \"id\"\n");
    int n0, n1, n2, n3;
    char *ref = drain(t, &n0), *a = drain_pf(t, &n1, 1, 1, 0),
         *b = drain_pf(t, &n2, 64, 1 << 20, 0);
    check(ref && a && b && n0 == 500 && n1 == n0 && n2 == n0 && !strcmp(ref, a) && !strcmp(ref, b),
          "prefetch yields the source's items in order (queue of 1 and of 64)", "%d %d %d", n0, n1,
          n2);
    char *c = drain_pf(t, &n3, 4, 64, 7);
    check(c && n3 == 7, "prefetch stopped early", "%d", n3);
    free(ref), free(a), free(b), free(c), free(t);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/fmb_src_XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    prefetch_case();
    archive_case("a.tar", "tar", NULL);
    archive_case("a.tar.gz", "tar", "gzip");
    archive_case("a.tar.bz2", "tar", "bzip2");
    archive_case("a.tar.xz", "tar", "xz");
    archive_case("a.tar.zst", "tar", "zstd");
    archive_case("a.zip", "zip", NULL);
    archive_case("a.7z", "7z", NULL);

    /* Limits: an entry over max_entry_bytes, a compression bomb over max_ratio. */
    {
        static char zeros[1 << 20];
        entry e[] = {
            {"small.txt", "ok", 2}, {"bomb.txt", zeros, sizeof zeros}, {"after.txt", "z", 1}};
        char path[512];
        snprintf(path, sizeof path, "%s/bomb.tar.gz", dir);
        write_archive(path, "tar", "gzip", e, 3);
        char *t = job_with("[source]\nkind = \"archive\"\npaths = \"bomb.tar.gz\"\n"
                           "max_ratio = 50\nratio_floor_bytes = 4096\n");
        int n;
        char *got = drain(t, &n);
        check(got && strstr(got, "bomb.tar.gz!small.txt=ok;") &&
                  strstr(got, "bomb.tar.gz!bomb.txt=!compression ratio over max_ratio"),
              "compression ratio limit fails the entry", "%s", got ? got : "");
        free(got);
        free(t);
        t = job_with("[source]\nkind = \"archive\"\npaths = \"bomb.tar.gz\"\n"
                     "max_entry_bytes = 1000\n");
        got = drain(t, &n);
        check(got && strstr(got, "bomb.txt=!entry is over max_entry_bytes") &&
                  strstr(got, "after.txt=z;"),
              "entry over max_entry_bytes fails it, the archive goes on", "%s", got ? got : "");
        free(got);
        free(t);
        t = job_with("[source]\nkind = \"archive\"\npaths = \"bomb.tar.gz\"\n"
                     "max_total_bytes = 10000\nmax_ratio = 0\n");
        got = drain(t, &n);
        check(got && strstr(got, "bomb.txt=!archive is over max_total_bytes") &&
                  !strstr(got, "after.txt"),
              "archive over max_total_bytes stops that archive", "%s", got ? got : "");
        free(got);
        free(t);
    }
    /* Garbage and truncated archives: failed items. */
    {
        write_file("junk.tar.gz", "this is not an archive at all", 29);
        char *t = job_with("[source]\nkind = \"archive\"\npaths = \"junk.tar.gz\"\n");
        int n;
        char *got = drain(t, &n);
        check(got && n == 1 && strstr(got, "junk.tar.gz=!") != NULL,
              "garbage archive is a failed item", "%s", got ? got : "");
        free(got);
        free(t);
        char path[512];
        snprintf(path, sizeof path, "%s/a.tar.gz", dir);
        size_t len;
        char *data = check_read_file(path, &len);
        write_file("trunc.tar.gz", data, len / 2);
        free(data);
        t = job_with("[source]\nkind = \"archive\"\npaths = \"trunc.tar.gz\"\n");
        got = drain(t, &n);
        check(got && strstr(got, "=!") != NULL, "truncated archive is a failed item", "%s",
              got ? got : "");
        free(got);
        free(t);
    }
    /* JSON Lines through libarchive's raw format: zstd and xz, ids, bad lines. */
    {
        const char *lines = "{\"id\": 7, \"text\": \"seven\"}\n"
                            "\n"
                            "{\"id\": \"x\", \"text\": \"ex\"}\n"
                            "not json\n"
                            "{\"id\": 9}\n"
                            "{\"id\": 10, \"text\": \"a\\u0000b\"}";
        const char *filters[] = {"zstd", "xz", NULL};
        const char *names[] = {"l.jsonl.zst", "l.jsonl.xz", "l.jsonl"};
        for (int i = 0; i < 3; i++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (filters[i]) {
                struct archive *a = archive_write_new();
                archive_write_set_format_raw(a);
                archive_write_add_filter_by_name(a, filters[i]);
                archive_write_open_filename(a, path);
                struct archive_entry *en = archive_entry_new();
                archive_entry_set_filetype(en, AE_IFREG);
                archive_entry_set_pathname(en, "data");
                archive_write_header(a, en);
                archive_write_data(a, lines, strlen(lines));
                archive_entry_free(en);
                archive_write_close(a);
                archive_write_free(a);
            } else {
                write_file(names[i], lines, strlen(lines));
            }
            char src[300];
            snprintf(src, sizeof src,
                     "[source]\nkind = \"jsonl\"\npaths = \"%s\"\nid_field = \"id\"\n", names[i]);
            char *t = job_with(src);
            int n;
            char *got = drain(t, &n);
            char want[600];
            snprintf(want, sizeof want,
                     "%s#7=seven;%s#x=ex;%s:4=!bad JSON: line 4, column 3: ", names[i], names[i],
                     names[i]);
            check(got && !strncmp(got, want, strlen(want)) &&
                      strstr(got, "#9=!text field 'text' is missing or not a st") &&
                      strstr(got, "#10=a") && n == 5,
                  names[i], "%s", got ? got : "");
            free(got);
            free(t);
        }
    }
    /* files: a tree walked in sorted order, filters, keys relative to the job folder. */
    {
        write_file("tree/b.txt", "B", 1);
        write_file("tree/a.txt", "A", 1);
        write_file("tree/sub/c.txt", "C", 1);
        write_file("tree/sub/d.log", "D", 1);
        char *t =
            job_with("[source]\nkind = \"files\"\npaths = [\"tree\"]\nexclude = [\"*.log\"]\n");
        int n;
        char *got = drain(t, &n);
        check(got && !strcmp(got, "tree/a.txt=A;tree/b.txt=B;tree/sub/c.txt=C;"), "files tree",
              "%s", got ? got : "");
        free(got);
        free(t);
        fmb_job *job = NULL;
        fmb_err err;
        fmb_source *src = NULL;
        t = job_with("[source]\nkind = \"files\"\npaths = [\"nothing-*.txt\"]\n");
        fmb_status s = fmb_job_parse(t, strlen(t), "t.toml", dir, &job, &err);
        if (!s)
            s = fmb_src_open(job, &src, &err);
        check(s == FMB_EINVAL && strstr(err.msg, "matches nothing"),
              "a glob matching nothing is "
              "a config error",
              "%s", err.msg);
        fmb_src_close(src);
        fmb_job_free(job);
        free(t);
    }
    /* sqlite: key-ordered pages smaller than the table, NULL text. */
    {
        char path[512];
        snprintf(path, sizeof path, "%s/s.db", dir);
        sqlite3 *db;
        sqlite3_open(path, &db);
        sqlite3_exec(db,
                     "CREATE TABLE d (k TEXT PRIMARY KEY, body TEXT); INSERT INTO d VALUES "
                     "('c', 'C'), ('a', 'A'), ('e', NULL), ('b', 'B'), ('d', 'D');",
                     NULL, NULL, NULL);
        sqlite3_close(db);
        char *t = job_with("[source]\nkind = \"sqlite\"\ndatabase = \"s.db\"\n"
                           "query = \"SELECT k, body FROM d;\"\npage_rows = 2\n");
        int n;
        char *got = drain(t, &n);
        check(got && !strcmp(got, "a=A;b=B;c=C;d=D;e=!the text column is NULL;"),
              "sqlite pages in key order", "%s", got ? got : "");
        free(got);
        free(t);
        /* Keys that SQLite compares case-blind straddling pages of 2, a NULL key: every row is
         * read once, the NULL key and the repeated 'a' fail naming their row. */
        snprintf(path, sizeof path, "%s/c.db", dir);
        sqlite3_open(path, &db);
        sqlite3_exec(db,
                     "CREATE TABLE d (k TEXT COLLATE NOCASE, body TEXT); INSERT INTO d VALUES "
                     "('b', 'B1'), ('A', 'A1'), ('a', 'A2'), ('a', 'A3'), ('B', 'B2'), "
                     "(NULL, 'N1');",
                     NULL, NULL, NULL);
        sqlite3_close(db);
        t = job_with("[source]\nkind = \"sqlite\"\ndatabase = \"c.db\"\n"
                     "query = \"SELECT k, body FROM d\"\npage_rows = 2\n");
        got = drain(t, &n);
        check(got && n == 6 && strstr(got, "=A1;") && strstr(got, "=A2;") && strstr(got, "=B1;") &&
                  strstr(got, "=B2;") && strstr(got, "c.db:row 1=!the key column is NULL") &&
                  strstr(got, "=!duplicate key: 'a', first at c.db row "),
              "sqlite: keys equal by collation across pages, NULL and repeated keys", "%d: %s", n,
              got ? got : "");
        free(got);
        free(t);
        fmb_job *job = NULL;
        fmb_err err;
        fmb_source *src = NULL;
        t = job_with("[source]\nkind = \"sqlite\"\ndatabase = \"s.db\"\nquery = \"SELECT nope\"\n");
        fmb_status s = fmb_job_parse(t, strlen(t), "t.toml", dir, &job, &err);
        if (!s)
            s = fmb_src_open(job, &src, &err);
        check(s == FMB_EINVAL && strstr(err.msg, "query"), "a bad query is a config error", "%s",
              err.msg);
        fmb_src_close(src);
        fmb_job_free(job);
        free(t);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("NOTE could not remove %s\n", dir);
    return check_exit();
}
