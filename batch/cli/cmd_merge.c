/*
 * cmd_merge: `fmbatch merge OUT.db SHARD.db...` joins the outputs of a sharded job (--shard I/N,
 * batch/shard.h) into one output, as if the job had run unsharded (docs/JOBS.md "Shards").
 *
 * Checks first, then writes: every file must be a shard output of one job (the same job name and
 * the same fingerprint apart from its "job.shard = I/N" line), no index given twice, OUT not one
 * of them. Then each finished shard not merged yet is copied in a transaction of its own
 * (batch/queue_merge.c); a shard with pending or running items is left for a later merge. The
 * merged output carries the unsharded fingerprint (so `fmbatch status|export|report JOB.toml`
 * open it, and `fmbatch run JOB.toml` could complete it) and meta merged_shards ("0,1,4") and
 * shard_count: running merge again as more shards finish adds only the new ones.
 *
 * Prints one JSON object: merged (this time), skipped (merged before), unfinished, shards (all
 * merged), shard_count, missing, complete, items, rows.
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch/cli/cli.h"
#include "batch/queue.h"
#include "batch/schema.h"
#include "batch/shard.h"

typedef struct {
    const char *path;
    fmb_queue_file_info info;
    char *fp; /* the fingerprint without the shard line */
    int64_t index, count;
} shard_file;

/* The first line of a that b lacks, for the message (static buffer). */
static const char *first_diff(const char *a, const char *b)
{
    static char line[300];
    for (const char *p = a; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (const char *q = b; *q && !found;) {
            const char *f = strchr(q, '\n');
            size_t m = f ? (size_t)(f - q) : strlen(q);
            found = m == n && !memcmp(p, q, n);
            q += m + (f ? 1 : 0);
        }
        if (!found) {
            snprintf(line, sizeof line, "%.*s", (int)(n < 290 ? n : 290), p);
            return line;
        }
        p += n + (e ? 1 : 0);
    }
    return "(the job name)";
}

/* Parses "0,2,5" into flags[count]; -1 on a malformed list. */
static int parse_list(const char *s, unsigned char *flags, int64_t count)
{
    while (s && *s) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 0 || v >= count)
            return -1;
        flags[v] = 1;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return 0;
}

static char *format_list(const unsigned char *flags, int64_t count, int want)
{
    fmb_sb b = {0};
    int n = 0;
    for (int64_t i = 0; i < count; i++)
        if (!!flags[i] == want)
            fmb_sb_printf(&b, "%s%" PRId64, n++ ? "," : "", i);
    return fmb_sb_take(&b);
}

static int same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

int fmb_cmd_merge(int argc, char **argv)
{
    const char *cmd = argv[0];
    static const struct option lo[] = {{"dry-run", no_argument, 0, 'n'},
                                       {"require-all", no_argument, 0, 'a'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    static const fmb_cli_opt_help own[] = {
        {"dry-run", NULL, "check the shards and print what would be merged; write nothing"},
        {"require-all", NULL, "exit 3 unless every shard 0..N-1 is merged afterwards"},
        {"help", NULL, "this help"},
        {NULL, NULL, NULL}};
    int dry = 0, require_all = 0, c;
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c == 'h') {
            fmb_cli_help("merge OUT.db SHARD.db... [options]   (one output from a job's shards)",
                         lo, own);
            return FMB_EXIT_OK;
        }
        if (c == 'n')
            dry = 1;
        else if (c == 'a')
            require_all = 1;
        else
            return FMB_EXIT_USAGE;
    }
    if (argc - optind < 2) {
        fmb_cli_error(cmd,
                      "usage: fmbatch merge OUT.db SHARD.db... (the shard outputs of one job)");
        return FMB_EXIT_USAGE;
    }
    const char *out = argv[optind];
    size_t n = (size_t)(argc - optind - 1);
    shard_file *sf = fmb_xcalloc(n, sizeof *sf);
    fmb_queue_file_info oi;
    memset(&oi, 0, sizeof oi);
    unsigned char *merged = NULL, *given = NULL;
    int rc = 0;
    fmb_err err;
    /* 1. every input: a shard output of one job, each index once */
    for (size_t i = 0; i < n && !rc; i++) {
        sf[i].path = argv[optind + 1 + (int)i];
        if (access(sf[i].path, F_OK) || same_file(sf[i].path, out)) {
            fmb_cli_error(cmd, "%s: %s", sf[i].path,
                          access(sf[i].path, F_OK) ? "no such file"
                                                   : "is the merged output itself, not a shard");
            rc = FMB_EXIT_USAGE;
            break;
        }
        if (fmb_queue_file_info_read(sf[i].path, &sf[i].info, &err)) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_USAGE;
            break;
        }
        const fmb_queue_file_info *in = &sf[i].info;
        if (in->schema_version != FMB_SCHEMA_VERSION) {
            fmb_cli_error(cmd,
                          "%s: schema version %d, this fmbatch writes %d (open it with "
                          "`fmbatch status` of this version first)",
                          sf[i].path, in->schema_version, FMB_SCHEMA_VERSION);
            rc = FMB_EXIT_USAGE;
        } else if (!in->fingerprint || !in->job_name) {
            fmb_cli_error(cmd, "%s: not a job's output (no fingerprint: was it ever run?)",
                          sf[i].path);
            rc = FMB_EXIT_USAGE;
        } else if (in->merged_shards) {
            fmb_cli_error(cmd, "%s: is a merged output (shards %s), not a shard", sf[i].path,
                          in->merged_shards);
            rc = FMB_EXIT_USAGE;
        } else if (!(sf[i].fp = fmb_shard_strip(in->fingerprint, &sf[i].index, &sf[i].count))) {
            fmb_cli_error(cmd, "%s: malformed job.shard line in its fingerprint", sf[i].path);
            rc = FMB_EXIT_USAGE;
        } else if (i > 0 &&
                   (strcmp(in->job_name, sf[0].info.job_name) || strcmp(sf[i].fp, sf[0].fp))) {
            fmb_cli_error(cmd,
                          "%s is not a shard of the same job as %s (job '%s', not '%s'; first "
                          "differing setting: %s): refusing to mix results",
                          sf[i].path, sf[0].path, in->job_name, sf[0].info.job_name,
                          first_diff(sf[i].fp, sf[0].fp));
            rc = FMB_EXIT_USAGE;
        } else if (i > 0 && sf[i].count != sf[0].count) {
            fmb_cli_error(cmd,
                          "%s is shard %" PRId64 "/%" PRId64 " but %s is of %" PRId64
                          " shards: refusing to mix partitions",
                          sf[i].path, sf[i].index, sf[i].count, sf[0].path, sf[0].count);
            rc = FMB_EXIT_USAGE;
        }
        for (size_t j = 0; j < i && !rc; j++)
            if (sf[j].index == sf[i].index) {
                fmb_cli_error(cmd, "shard %" PRId64 "/%" PRId64 " given twice: %s and %s",
                              sf[i].index, sf[i].count, sf[j].path, sf[i].path);
                rc = FMB_EXIT_USAGE;
            }
    }
    const int64_t count = rc ? 0 : sf[0].count;
    if (!rc) {
        merged = fmb_xcalloc((size_t)count, 1);
        given = fmb_xcalloc((size_t)count, 1);
    }
    /* 2. an existing OUT: a merge of the same job */
    if (!rc && access(out, F_OK) == 0) {
        if (fmb_queue_file_info_read(out, &oi, &err)) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_USAGE;
        } else if (oi.fingerprint && !oi.merged_shards) {
            fmb_cli_error(cmd,
                          "%s: exists and is not a merged output (an unsharded run's?): "
                          "refusing to merge into it",
                          out);
            rc = FMB_EXIT_USAGE;
        } else if (oi.fingerprint && (!oi.job_name || strcmp(oi.job_name, sf[0].info.job_name) ||
                                      strcmp(oi.fingerprint, sf[0].fp))) {
            fmb_cli_error(cmd,
                          "%s: holds another job's shards (job '%s'; first differing setting: "
                          "%s): refusing to mix results",
                          out, oi.job_name ? oi.job_name : "?",
                          first_diff(sf[0].fp, oi.fingerprint));
            rc = FMB_EXIT_USAGE;
        } else if (oi.merged_shards &&
                   (!oi.shard_count || strtoll(oi.shard_count, NULL, 10) != count ||
                    parse_list(oi.merged_shards, merged, count))) {
            fmb_cli_error(cmd, "%s: holds shards '%s' of %s, not of %" PRId64, out,
                          oi.merged_shards, oi.shard_count ? oi.shard_count : "?", count);
            rc = FMB_EXIT_USAGE;
        }
    }
    /* 3. copy each finished shard not merged yet, a transaction each */
    fmb_queue *q = NULL;
    fmb_sb done_now = {0}, skipped = {0}, unfinished = {0};
    int64_t items = 0, rows = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        given[sf[i].index] = 1;
        char idx[32];
        snprintf(idx, sizeof idx, "%" PRId64, sf[i].index);
        if (merged[sf[i].index]) {
            fprintf(stderr,
                    "fmbatch merge: %s: shard %" PRId64 "/%" PRId64 " merged before: skipped\n",
                    sf[i].path, sf[i].index, count);
            fmb_sb_printf(&skipped, "%s%s", skipped.len ? "," : "", idx);
            continue;
        }
        if (sf[i].info.unfinished || !sf[i].info.complete) {
            fprintf(stderr,
                    "fmbatch merge: %s: shard %" PRId64 "/%" PRId64 " is not finished (%" PRId64
                    " items pending or running%s): not merged; merge again when it is\n",
                    sf[i].path, sf[i].index, count, sf[i].info.unfinished,
                    sf[i].info.complete ? "" : ", no run has gone through the source yet");
            fmb_sb_printf(&unfinished, "%s%s", unfinished.len ? "," : "", idx);
            continue;
        }
        if (dry) {
            merged[sf[i].index] = 1;
            fmb_sb_printf(&done_now, "%s%s", done_now.len ? "," : "", idx);
            items += sf[i].info.items;
            continue;
        }
        if (!q && fmb_queue_open(out, sf[0].info.job_name, 1, 0, 0, &q, &err)) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = FMB_EXIT_FATAL;
            break;
        }
        merged[sf[i].index] = 1;
        char *list = format_list(merged, count, 1);
        int64_t ni, nr;
        fmb_status s = fmb_queue_merge_shard(q, sf[i].path, sf[i].fp, sf[i].index, count, list, &ni,
                                             &nr, &err);
        free(list);
        if (s) {
            merged[sf[i].index] = 0;
            fmb_cli_error(cmd, "%s", err.msg);
            rc = s == FMB_EINVAL ? FMB_EXIT_USAGE : FMB_EXIT_FATAL;
            break;
        }
        items += ni;
        rows += nr;
        fmb_sb_printf(&done_now, "%s%s", done_now.len ? "," : "", idx);
        fprintf(stderr,
                "fmbatch merge: %s: shard %" PRId64 "/%" PRId64 ": %" PRId64 " items, %" PRId64
                " result rows\n",
                sf[i].path, sf[i].index, count, ni, nr);
    }
    fmb_queue_close(q);
    if (!rc) {
        char *all = format_list(merged, count, 1), *missing = format_list(merged, count, 0);
        int complete = !missing[0];
        json_t *js = json_string(out);
        char *out_json = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        json_decref(js);
        printf("{\"output\":%s,\"dry_run\":%s,\"merged\":[%s],\"skipped\":[%s],"
               "\"unfinished\":[%s],\"shards\":[%s],\"shard_count\":%" PRId64
               ",\"missing\":[%s],\"complete\":%s,\"items\":%" PRId64 ",\"rows\":%" PRId64 "}\n",
               out_json ? out_json : "null", dry ? "true" : "false",
               done_now.buf ? done_now.buf : "", skipped.buf ? skipped.buf : "",
               unfinished.buf ? unfinished.buf : "", all, count, missing,
               complete ? "true" : "false", items, rows);
        if (!complete)
            fprintf(stderr, "fmbatch merge: %s: shards %s of %" PRId64 " are not merged yet\n", out,
                    missing, count);
        if (unfinished.len || (require_all && !complete))
            rc = FMB_EXIT_ITEMS_FAILED;
        free(out_json);
        free(all);
        free(missing);
    }
    free(done_now.buf);
    free(skipped.buf);
    free(unfinished.buf);
    for (size_t i = 0; i < n; i++) {
        fmb_queue_file_info_free(&sf[i].info);
        free(sf[i].fp);
    }
    fmb_queue_file_info_free(&oi);
    free(sf);
    free(merged);
    free(given);
    return rc;
}
