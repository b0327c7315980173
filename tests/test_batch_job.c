/* test_batch_job: the TOML shim, job-file validation (errors name file:line:column), path
 * resolution, fingerprints, and the embedded schema equal to schemas/001_init.sql. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch/job.h"
#include "batch/prompt.h"
#include "batch/schema.h"
#include "batch/toml.h"
#include "tests/check.h"

/* The job-file sketch of docs/ARCHITECTURE.md (Job file), verbatim: it must work as written. */
static const char *sketch =
    "[job]\n"
    "name    = \"nightly-score\"\n"
    "model   = \"models/falcon-mamba-7b\"     # HF folder\n"
    "backend = \"auto\"\n"
    "output  = \"results.db\"                 # SQLite: results and the queue\n"
    "seed    = 1234\n"
    "\n"
    "[source]\n"
    "kind    = \"archive\"                    # archive | sqlite | files\n"
    "paths   = [\"corpus/*.tar.zst\"]\n"
    "include = [\"*.txt\", \"*.md\"]\n"
    "\n"
    "[[task]]\n"
    "name = \"ppl\"\n"
    "kind = \"score\"\n"
    "\n"
    "[[task]]\n"
    "name    = \"lang\"\n"
    "kind    = \"choice\"\n"
    "prompt  = \"{document}\\n\\nThe language of this text is\"\n"
    "choices = [\" English\", \" German\", \" Russian\", \" Chinese\"]\n"
    "\n"
    "[[task]]\n"
    "name   = \"title\"\n"
    "kind   = \"generate\"\n"
    "prompt = \"{document}\\n\\nQuestion: What is the title of this document?\\nAnswer:\"\n"
    "max_new_tokens = 32\n"
    "stop   = [\"\\n\"]\n"
    "extract = { title = '^\\s*(?<title>.+?)\\s*$' }\n";

static fmb_status parse(const char *text, fmb_job **job, fmb_err *err)
{
    return fmb_job_parse(text, strlen(text), "j.toml", "/data/jobs", job, err);
}

/* fmb_job_fingerprint_text(sketch, "m", "t") as commit 95d8780 (before kernel choices existed)
 * wrote it, but for the version line: the default kernel choices add nothing, so a database
 * is refused only for what really changed. (0.2.0 changed the decode numerics, batch-invariant
 * kernels: 0.1.0 databases are refused on their fmbatch_version line, docs/DECISIONS.md.) */
static const char *sketch_fingerprint_95d8780 =
    "fmbatch_version = \"" FMB_VERSION "\"\n"
    "model_hash = \"m\"\n"
    "tokenizer_hash = \"t\"\n"
    "job.seed = 1234\n"
    "job.max_document_tokens = 0\n"
    "job.too_long = \"truncate\"\n"
    "task.ppl.kind = \"score\"\n"
    "task.ppl.per_token = 0\n"
    "task.ppl.top_k_tokens = 0\n"
    "task.lang.kind = \"choice\"\n"
    "task.lang.prompt = \"{document}\\n\\nThe language of this text is\"\n"
    "task.lang.choices = [\" English\",\" German\",\" Russian\",\" Chinese\"]\n"
    "task.lang.best_by = \"total\"\n"
    "task.title.kind = \"generate\"\n"
    "task.title.prompt = \"{document}\\n\\nQuestion: What is the title of this "
    "document?\\nAnswer:\"\n"
    "task.title.max_new_tokens = 32\n"
    "task.title.temperature = 0\n"
    "task.title.top_k = 0\n"
    "task.title.top_p = 1\n"
    "task.title.stop = [\"\\n\"]\n"
    "task.title.eos = []\n"
    "task.title.ignore_eos = 0\n"
    "task.title.extract.title = \"^\\\\s*(?<title>.+?)\\\\s*$\"\n"
    "task.title.match_limit = 1000000\n"
    "task.title.depth_limit = 100000\n";

/* The sketch with a kernel key in [job]; NULL when it does not parse (err set). */
static fmb_job *sketch_with_kernel(const char *kernel, fmb_err *err)
{
    const char *at = strstr(sketch, "seed    = 1234\n");
    size_t n = strlen(sketch) + strlen(kernel) + 32;
    char *t = malloc(n);
    snprintf(t, n, "%.*skernel = \"%s\"\n%s", (int)(at - sketch), sketch, kernel, at);
    fmb_job *job = NULL;
    if (parse(t, &job, err))
        job = NULL;
    free(t);
    return job;
}

static void t_kernel_fingerprint(void)
{
    fmb_err err = {{0}};
    fmb_job *job = NULL;
    if (!check(parse(sketch, &job, &err) == FMB_OK, "kernel fp: sketch parses", "%s", err.msg))
        return;
    char *fp0 = fmb_job_fingerprint_text(job, "m", "t");
    check(!strcmp(fp0, sketch_fingerprint_95d8780),
          "default fingerprint = 95d8780's but for the version", "got:\n%s", fp0);
    fmb_job_free(job);
    // explicit defaults and launch-only choices (no other numbers) leave the text as it was
    const char *same[] = {"scan=auto,matvec=auto,gemm=fixed",
                          "pdl=off,graphs=off,debug-sync=on,gemm-verbose=on,smem-cap=sm86"};
    for (int i = 0; i < 2; i++) {
        job = sketch_with_kernel(same[i], &err);
        if (check(job != NULL, "kernel fp: [job].kernel parses", "%s: %s", same[i], err.msg)) {
            char *fp = fmb_job_fingerprint_text(job, "m", "t");
            check(!strcmp(fp, sketch_fingerprint_95d8780),
                  "fingerprint unchanged by kernel defaults", "%s:\n%s", same[i], fp);
            free(fp);
        }
        fmb_job_free(job);
    }
    // each numeric choice changes the fingerprint and is named in it
    const char *diff[] = {"scan=seg", "matvec=mma", "gemm=cublas", "gemm=fixedws,scan=tile1"};
    const char *want[] = {"job.kernel = \"scan=seg\"\n", "job.kernel = \"matvec=mma\"\n",
                          "job.kernel = \"gemm=cublas\"\n",
                          "job.kernel = \"scan=tile1,gemm=fixedws\"\n"};
    for (int i = 0; i < 4; i++) {
        job = sketch_with_kernel(diff[i], &err);
        if (check(job != NULL, "kernel fp: [job].kernel parses", "%s: %s", diff[i], err.msg)) {
            char *fp = fmb_job_fingerprint_text(job, "m", "t");
            check(strcmp(fp, sketch_fingerprint_95d8780) != 0 && strstr(fp, want[i]),
                  "fingerprint records a non-default kernel choice", "%s:\n%s", diff[i], fp);
            free(fp);
        }
        fmb_job_free(job);
    }
    job = sketch_with_kernel("scan=fast", &err);
    check(job == NULL &&
              strstr(err.msg, "j.toml:6:1: [job].kernel options: 'scan=fast': scan must be "
                              "auto|quad|seg|tile|tile1"),
          "bad [job].kernel names file:line:column and the choices", "%s", err.msg);
    fmb_job_free(job);
    free(fp0);
}

/* Replaces the first occurrence of from in sketch by to and expects an error containing want. */
static void expect_error(const char *name, const char *from, const char *to, const char *want)
{
    const char *p = strstr(sketch, from);
    if (!p) {
        check(0, name, "pattern '%s' not in the sketch", from);
        return;
    }
    size_t n = strlen(sketch) + strlen(to) + 1;
    char *t = malloc(n);
    snprintf(t, n, "%.*s%s%s", (int)(p - sketch), sketch, to, p + strlen(from));
    fmb_job *job = NULL;
    fmb_err err = {{0}};
    fmb_status s = parse(t, &job, &err);
    check(s == FMB_EINVAL && strstr(err.msg, want) != NULL, name, "status %d, message '%s'", s,
          err.msg);
    fmb_job_free(job);
    free(t);
}

/* The prefix rule (batch/prompt.h), against encodes done here: [EOS] + encode(before, specials
 * on) + encode(document, specials off), offsets SIZE_MAX but for document tokens; the rest is
 * encode(after, specials on); fmb_prompt_prefix over parts encoded once equals it. */
static void t_prompt(void)
{
    size_t bl;
    const char *after;
    int has = fmb_prompt_parts("Q: {document}\nA:", &bl, &after);
    check(has && bl == 3 && !strcmp(after, "\nA:"), "prompt parts split at {document}",
          "%d %zu '%s'", has, bl, after);
    has = fmb_prompt_parts("no mark", &bl, &after);
    check(!has && bl == 0 && !strcmp(after, "no mark"), "prompt parts without {document}", "%d",
          has);
    fmb_tok *tok = NULL;
    fmb_err err;
    if (!check(!fmb_tok_load("tests/fixtures/tiny-a/tokenizer.json", &tok, &err), "tokenizer", "%s",
               err.msg))
        return;
    const char *tpl = "Title <|endoftext|>: {document}\nAnswer:", *doc = "a <|endoftext|> b";
    fmb_ids pre, rest, b, d, a, want;
    memset(&pre, 0, sizeof pre);
    memset(&rest, 0, sizeof rest);
    memset(&b, 0, sizeof b);
    memset(&d, 0, sizeof d);
    memset(&a, 0, sizeof a);
    memset(&want, 0, sizeof want);
    pre.want_offsets = d.want_offsets = 1;
    int ok = !fmb_prompt_build(tok, 7, tpl, doc, strlen(doc), &pre, &rest, &err) &&
             !fmb_tok_encode(tok, "Title <|endoftext|>: ", 21, 1, &b, &err) &&
             !fmb_tok_encode(tok, doc, strlen(doc), 0, &d, &err) &&
             !fmb_tok_encode(tok, "\nAnswer:", 8, 1, &a, &err);
    size_t n = 1 + b.n + d.n;
    ok = ok && pre.n == n && pre.ids[0] == 7 && !memcmp(pre.ids + 1, b.ids, b.n * 4) &&
         !memcmp(pre.ids + 1 + b.n, d.ids, d.n * 4) && rest.n == a.n &&
         !memcmp(rest.ids, a.ids, a.n * 4);
    for (size_t i = 0; ok && i < n; i++)
        ok = pre.offsets[i] == (i < 1 + b.n ? SIZE_MAX : d.offsets[i - 1 - b.n]);
    fmb_prompt_prefix(7, b.ids, b.n, d.ids, NULL, d.n, &want);
    ok = ok && want.n == pre.n && !memcmp(want.ids, pre.ids, n * 4);
    check(ok, "prompt prefix = [EOS] + template-before + document, rest = template-after",
          "%zu ids vs %zu", pre.n, n);
    fmb_ids_free(&pre);
    fmb_ids_free(&rest);
    fmb_ids_free(&b);
    fmb_ids_free(&d);
    fmb_ids_free(&a);
    fmb_ids_free(&want);
    fmb_tok_free(tok);
}

int main(void)
{
    t_prompt();
    t_kernel_fingerprint();
    fmb_job *job = NULL;
    fmb_err err = {{0}};
    fmb_status s = parse(sketch, &job, &err);
    if (check(s == FMB_OK, "sketch job parses", "%s", err.msg)) {
        check(!strcmp(job->name, "nightly-score") && job->seed == 1234, "job fields", "%s",
              job->name);
        check(!strcmp(job->model, "/data/jobs/models/falcon-mamba-7b") &&
                  !strcmp(job->output, "/data/jobs/results.db") &&
                  !strcmp(job->tokenizer, "/data/jobs/models/falcon-mamba-7b/tokenizer.json"),
              "relative paths resolve against the job folder", "%s %s", job->model, job->output);
        check(job->source.kind == FMB_SRC_ARCHIVE && job->source.n_paths == 1 &&
                  job->source.n_include == 2,
              "source fields", "kind %d", job->source.kind);
        check(job->n_tasks == 3 && job->tasks[1].n_choices == 4 &&
                  !strcmp(job->tasks[1].prefix, "") &&
                  !strcmp(job->tasks[1].suffix, "\n\nThe language of this text is"),
              "template split at {document}", "'%s'", job->n_tasks ? job->tasks[1].suffix : "");
        check(job->tasks[2].n_extract == 1 && !strcmp(job->tasks[2].extract[0].name, "title") &&
                  job->tasks[2].max_new_tokens == 32 && job->tasks[2].n_stop == 1,
              "generate fields", "%s", "");
        char *fp = fmb_job_fingerprint_text(job, "m", "t");
        check(strstr(fp, "task.title.max_new_tokens = 32") && strstr(fp, "model_hash = \"m\"") &&
                  strstr(fp, "fmbatch_version"),
              "fingerprint lists the settings", "%s", fp);
        fmb_job *j2 = NULL;
        char *t2 = strdup(sketch);
        char *p = strstr(t2, "max_new_tokens = 32");
        p[18] = '3'; /* 32 -> 33 */
        if (!parse(t2, &j2, &err)) {
            char *fp2 = fmb_job_fingerprint_text(j2, "m", "t");
            check(strcmp(fp, fp2) != 0, "fingerprint changes with a task setting", "%s", "");
            free(fp2);
        }
        fmb_job_free(j2);
        free(t2);
        free(fp);
    }
    fmb_job_free(job);

    expect_error("keep_fields on an archive source names the key", "include = [",
                 "keep_fields = [\"lang\"]\ninclude = [",
                 "[source].keep_fields: an archive source");
    expect_error("key must be source or content", "include = [", "key = \"path\"\ninclude = [",
                 "[source].key: expected source or content");
    expect_error("max_document_bytes is an integer >= 0", "seed    = 1234",
                 "max_document_bytes = -1", "max_document_bytes");
    {
        fmb_job *kj = NULL;
        fmb_err ke = {{0}};
        char *t = strdup(sketch);
        char *at = strstr(t, "include = [");
        size_t n = strlen(t) + 64;
        char *t2 = malloc(n);
        snprintf(t2, n, "%.*skey = \"content\"\n%s", (int)(at - t), t, at);
        fmb_job *dj = NULL;
        int ok = parse(t2, &kj, &ke) == FMB_OK && parse(sketch, &dj, &ke) == FMB_OK;
        char *fk = ok ? fmb_job_fingerprint_text(kj, "m", "t") : NULL;
        char *fd = ok ? fmb_job_fingerprint_text(dj, "m", "t") : NULL;
        check(ok && kj->source.key_content && !dj->source.key_content &&
                  dj->max_document_bytes == (int64_t)64 << 20 &&
                  strstr(fk, "source.key = \"content\"") && !strstr(fd, "source.key"),
              "key = content is in the fingerprint (the default adds nothing); "
              "max_document_bytes defaults to 64 MiB",
              "%s", ke.msg);
        free(fk);
        free(fd);
        fmb_job_free(kj);
        fmb_job_free(dj);
        free(t);
        free(t2);
    }
    expect_error("unknown key names file:line:column", "seed    = 1234", "sed = 1234",
                 "j.toml:6:1: [job]: unknown key 'sed'");
    expect_error("wrong type names file:line:column", "max_new_tokens = 32",
                 "max_new_tokens = \"32\"", "j.toml:27:");
    expect_error("wrong type says what was expected", "max_new_tokens = 32",
                 "max_new_tokens = \"32\"", "expected integer, got string");
    expect_error("missing required key", "output  = \"results.db\"", "",
                 "missing required key 'output'");
    expect_error("bad source kind", "kind    = \"archive\"", "kind = \"tarball\"", "j.toml:9:");
    expect_error("template without {document}", "prompt  = \"{document}\\n\\nThe",
                 "prompt  = \"\\n\\nThe", "has no {document}");
    expect_error("unknown key in a task", "stop   = [", "stops = [", "unknown key 'stops'");
    expect_error("inline table key checked", "extract = { title = '",
                 "extract = { title = 3, x = '", "expected a regex string");
    expect_error("duplicate task name", "name   = \"title\"", "name = \"lang\"", "used twice");
    expect_error("bad TOML syntax", "seed    = 1234", "seed = = 1", "j.toml:6:");
    expect_error("a TOML error from toml++", "[[task]]\nname = \"ppl\"",
                 "[[task]]\nname = \"ppl\"\nname = \"x\"", "j.toml:15:");

    /* The shim: types, positions, NUL bytes in strings. */
    fmb_toml_value *root = NULL;
    const char *doc = "a = 1\nb = 2.5\n[t]\nc = [true, \"x\\u0000y\"]\nd = 1979-05-27\n";
    s = fmb_toml_parse(doc, strlen(doc), "s.toml", &root, &err);
    if (check(s == FMB_OK, "shim parses", "%s", err.msg)) {
        const fmb_toml_value *t = fmb_toml_get(root, "t");
        const fmb_toml_value *c = fmb_toml_get(t, "c");
        check(fmb_toml_get(root, "a")->i == 1 && fmb_toml_get(root, "b")->f == 2.5 && c->n == 2 &&
                  c->kids[0].b == 1 && c->kids[1].str_len == 3 && c->line == 4 &&
                  c->key_line == 4 && c->key_col == 1,
              "shim values and positions", "line %d", c ? c->line : -1);
        check(fmb_toml_get(t, "d")->type == FMB_TOML_DATETIME, "shim keeps date-times", "%s", "");
    }
    fmb_toml_free(root);

    /* Fuzzing found "[#" reaching an assert() inside toml++ 3.3.0: now a parse error. */
    {
        fmb_job *fj = NULL;
        s = fmb_job_parse("[#", 2, "f.toml", "/tmp", &fj, &err);
        check(s == FMB_EINVAL && strstr(err.msg, "f.toml"), "toml++ internal check is an error",
              "%d %s", s, err.msg);
        fmb_job_free(fj);
        /* ... and "\xcb\xaa" reached __builtin_unreachable in its Unicode tables. */
        s = fmb_job_parse("\xcb\xaa\x00", 3, "f.toml", "/tmp", &fj, &err);
        check(s == FMB_EINVAL && strstr(err.msg, "f.toml:1:"),
              "non-ASCII outside strings is a parse error", "%d %s", s, err.msg);
        fmb_job_free(fj);
        const char *ok =
            "# caf\xc3\xa9\n[job] # \xc3\xa9\nname = \"caf\xc3\xa9\"\nmodel = '\xc3\xa9'\n"
            "output = \"\"\"x\n\xc3\xa9\"\"\"\"\"\n\"k\xc3\xa9\" = '''\xc3\xa9'''\n";
        s = fmb_job_parse(ok, strlen(ok), "f.toml", "/tmp", &fj, &err);
        check(s == FMB_EINVAL && strstr(err.msg, "missing table [source]"),
              "non-ASCII inside strings, keys and comments is fine", "%d %s", s, err.msg);
        fmb_job_free(fj);
    }

    /* [job].mem_limit is checked where it is written (it was reported by `run` without a
     * position), and the job-file size limit is the one the message states (16 MiB; 32 MiB
     * was enforced). */
    expect_error("bad mem_limit names file:line:column", "seed    = 1234",
                 "seed = 1234\nmem_limit = \"24 GiB\"", "j.toml:7:1: [job].mem_limit");
    expect_error("mem_limit with an unknown unit", "seed    = 1234", "mem_limit = \"3 parsecs\"",
                 "j.toml:6:1: [job].mem_limit: expected a size");
    {
        size_t sz = 0;
        check(fmb_job_parse_size("24GiB", &sz) == 0 && sz == ((size_t)24 << 30) &&
                  fmb_job_parse_size("512mb", &sz) == 0 && sz == 512000000 &&
                  fmb_job_parse_size("-1G", &sz) != 0 && fmb_job_parse_size("1e30", &sz) != 0 &&
                  fmb_job_parse_size("G", &sz) != 0,
              "size parser", "%zu", sz);
        size_t n = strlen(sketch) + strlen("mem_limit = \"24GiB\"\n");
        char *t = malloc(n + 1);
        const char *p = strstr(sketch, "seed");
        snprintf(t, n + 1, "%.*smem_limit = \"24GiB\"\n%s", (int)(p - sketch), sketch, p);
        fmb_job *mj = NULL;
        check(parse(t, &mj, &err) == FMB_OK && !strcmp(mj->mem_limit, "24GiB"),
              "a good mem_limit parses", "%s", err.msg);
        fmb_job_free(mj);
        free(t);
    }
    {
        /* exactly FMB_JOB_FILE_MAX bytes: read; one byte more, or 20 MiB: refused, saying
         * 16 MiB */
        char fn[64];
        snprintf(fn, sizeof fn, "/tmp/fmb_job_size_%d.toml", (int)getpid());
        size_t sizes[3] = {FMB_JOB_FILE_MAX, FMB_JOB_FILE_MAX + 1, (size_t)20 << 20};
        int want_over[3] = {0, 1, 1};
        for (int k = 0; k < 3; k++) {
            FILE *f = fopen(fn, "wb");
            size_t sl = strlen(sketch);
            fwrite(sketch, 1, sl, f);
            char pad[4096];
            memset(pad, ' ', sizeof pad);
            pad[0] = '#';
            pad[sizeof pad - 1] = '\n';
            for (size_t w = sl; w < sizes[k]; w += sizeof pad) {
                size_t m = sizes[k] - w < sizeof pad ? sizes[k] - w : sizeof pad;
                if (m < sizeof pad)
                    pad[m - 1] = '\n';
                fwrite(pad, 1, m, f);
            }
            fclose(f);
            fmb_job *lj = NULL;
            err.msg[0] = 0;
            s = fmb_job_load(fn, &lj, &err);
            int over = s == FMB_EINVAL && strstr(err.msg, "over 16 MiB") != NULL;
            check(want_over[k] ? over : s == FMB_OK, "job file size limit is 16 MiB as stated",
                  "%zu bytes: status %d '%s'", sizes[k], s, err.msg);
            fmb_job_free(lj);
        }
        unlink(fn);
    }

    /* Every example job in jobs/ is a valid job file. */
    const char *examples[] = {"jobs/corpus-score.toml",    "jobs/qa-extract.toml",
                              "jobs/classify-choice.toml", "jobs/jsonl-source.toml",
                              "jobs/sqlite-source.toml",   "jobs/resume.toml"};
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++) {
        fmb_job *ej = NULL;
        s = fmb_job_load(examples[i], &ej, &err);
        check(s == FMB_OK, examples[i], "%s", err.msg);
        fmb_job_free(ej);
    }

    /* The schema compiled into the binary equals schemas/001_init.sql byte for byte. */
    size_t len = 0;
    char *file = check_read_file(FMB_SCHEMA_FILE, &len);
    check(file && len == strlen(fmb_schema_sql) && !memcmp(file, fmb_schema_sql, len),
          "embedded schema equals " FMB_SCHEMA_FILE, "lengths %zu vs %zu", len,
          strlen(fmb_schema_sql));
    free(file);
    return check_exit();
}
