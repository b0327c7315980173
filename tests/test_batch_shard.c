/* batch/shard.h: parsing --shard (I/N, auto from Slurm's and Kubernetes' variables), the
 * fingerprint's shard line, {shard} in the output, and the partition (known FNV-1a values). */
#include <stdlib.h>
#include <string.h>

#include "batch/shard.h"
#include "tests/check.h"

static void parse_is(const char *spec,
                     fmb_shard_env env,
                     int64_t count,
                     int ok,
                     int64_t wi,
                     int64_t wn,
                     const char *name)
{
    int64_t i = -1, n = -1;
    fmb_err err;
    fmb_status s = fmb_shard_parse(spec, &env, count, &i, &n, &err);
    if (ok)
        check(!s && i == wi && n == wn, name, "status %d (%s), got %lld/%lld", (int)s,
              s ? err.msg : "", (long long)i, (long long)n);
    else
        check(s == FMB_EINVAL && err.msg[0], name, "status %d", (int)s);
}

int main(void)
{
    const fmb_shard_env none = {0};
    parse_is("2/5", none, 0, 1, 2, 5, "parse: I/N");
    parse_is("0/1", none, 0, 1, 0, 1, "parse: 0/1");
    parse_is("5/5", none, 0, 0, 0, 0, "parse: I = N refused");
    parse_is("1/0", none, 0, 0, 0, 0, "parse: N = 0 refused");
    parse_is("-1/3", none, 0, 0, 0, 0, "parse: negative refused");
    parse_is("1/3x", none, 0, 0, 0, 0, "parse: trailing text refused");
    parse_is("1/3", none, 4, 0, 0, 0, "parse: --shard-count contradicting I/N refused");
    parse_is("auto", none, 0, 0, 0, 0, "parse: auto without a scheduler refused");
    fmb_shard_env slurm = {"3", "0", "8", NULL};
    parse_is("auto", slurm, 0, 1, 3, 8, "parse: auto from a Slurm array 0-7");
    fmb_shard_env slurm1 = {"8", "1", "8", NULL};
    parse_is("auto", slurm1, 0, 1, 7, 8, "parse: auto from a Slurm array 1-8 (ID - MIN)");
    fmb_shard_env step = {"8", "0", "5", NULL}; /* --array=0-8:2 */
    parse_is("auto", step, 0, 0, 0, 0, "parse: a stepped Slurm array refused");
    fmb_shard_env k8s = {NULL, NULL, NULL, "2"};
    parse_is("auto", k8s, 4, 1, 2, 4, "parse: auto from JOB_COMPLETION_INDEX + --shard-count");
    parse_is("auto", k8s, 0, 0, 0, 0, "parse: JOB_COMPLETION_INDEX without a count refused");
    parse_is("auto", k8s, 2, 0, 0, 0, "parse: an index past the count refused");

    int64_t i, n;
    char *s = fmb_shard_strip("a = 1\njob.shard = 2/7\ntask.x.kind = \"score\"\n", &i, &n);
    check(s && !strcmp(s, "a = 1\ntask.x.kind = \"score\"\n") && i == 2 && n == 7,
          "strip: the shard line out, its index and count", "%s %lld/%lld", s ? s : "(null)",
          (long long)i, (long long)n);
    free(s);
    s = fmb_shard_strip("a = 1\n", &i, &n);
    check(s && !strcmp(s, "a = 1\n") && i == 0 && n == 1, "strip: no line is shard 0 of 1", "%s",
          s ? s : "(null)");
    free(s);
    s = fmb_shard_strip("job.shard = 7/7\n", &i, &n);
    check(!s, "strip: a malformed line is refused", "%s", s ? s : "");
    free(s);

    fmb_job job;
    memset(&job, 0, sizeof job);
    job.output = fmb_xstrdup("/r/out-{shard}.db");
    fmb_shard_apply(&job, 3, 4);
    check(!strcmp(job.output, "/r/out-3.db") && job.shard_count == 4 && job.shard_index == 3,
          "apply: {shard} is the index", "%s", job.output);
    fmb_shard_apply(&job, 0, 0);
    check(!strcmp(job.output, "/r/out-all.db") && job.shard_count == 0,
          "apply: unsharded, {shard} is all", "%s", job.output);
    free(job.output);
    free(job.output_template);

    /* FNV-1a 64 of "abc" is 0xe71fa2190541574b (tests/test_hash_values.c) */
    check(fmb_shard_of("abc", 7) == (int64_t)(0xe71fa2190541574bull % 7), "shard_of: FNV-1a mod N",
          "%lld", (long long)fmb_shard_of("abc", 7));
    check(fmb_shard_of("abc", 1) == 0, "shard_of: N = 1 is 0", "%s", "not 0");
    job.shard_count = 7;
    job.shard_index = fmb_shard_of("abc", 7);
    check(fmb_shard_mine(&job, "abc"), "mine: the key's own shard", "%s", "no");
    job.shard_index = (job.shard_index + 1) % 7;
    check(!fmb_shard_mine(&job, "abc"), "mine: not another shard", "%s", "yes");
    return check_exit();
}
