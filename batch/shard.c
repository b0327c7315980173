/* shard: the partition of a job's items (batch/shard.h). */
#include "batch/shard.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/hash.h"

#define FMB_SHARD_MAX 1000000

static int parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

fmb_status fmb_shard_parse(const char *spec,
                           const fmb_shard_env *env,
                           int64_t count,
                           int64_t *index,
                           int64_t *n,
                           fmb_err *err)
{
    int64_t i = -1, c = -1;
    if (!strcmp(spec, "auto")) {
        if (env->slurm_task_id) {
            int64_t min = 0;
            if (parse_i64(env->slurm_task_id, &i) ||
                (env->slurm_task_min && parse_i64(env->slurm_task_min, &min)) ||
                parse_i64(env->slurm_task_count, &c) || i < min)
                return fmb_fail(err, FMB_EINVAL,
                                "--shard auto: SLURM_ARRAY_TASK_ID '%s', SLURM_ARRAY_TASK_MIN "
                                "'%s', SLURM_ARRAY_TASK_COUNT '%s' do not make a shard",
                                env->slurm_task_id, env->slurm_task_min ? env->slurm_task_min : "",
                                env->slurm_task_count ? env->slurm_task_count : "(unset)");
            i -= min;
            if (count && count != c)
                return fmb_fail(err, FMB_EINVAL,
                                "--shard-count %" PRId64 " but SLURM_ARRAY_TASK_COUNT is %" PRId64,
                                count, c);
        } else if (env->k8s_index) {
            if (parse_i64(env->k8s_index, &i))
                return fmb_fail(err, FMB_EINVAL,
                                "--shard auto: JOB_COMPLETION_INDEX '%s' is not "
                                "an index",
                                env->k8s_index);
            if (!count)
                return fmb_fail(err, FMB_EINVAL,
                                "--shard auto: JOB_COMPLETION_INDEX is %s but the number of "
                                "shards is not known: give --shard-count N (the Job's "
                                "completions)",
                                env->k8s_index);
            c = count;
        } else {
            return fmb_fail(err, FMB_EINVAL,
                            "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor "
                            "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give "
                            "--shard I/N");
        }
        if (i >= c)
            return fmb_fail(err, FMB_EINVAL,
                            "--shard auto: task %" PRId64 " of %" PRId64
                            " is out of range (a job array with a step? use 0-(N-1))",
                            i, c);
    } else {
        char buf[64];
        const char *slash = strchr(spec, '/');
        if (!slash || (size_t)(slash - spec) >= sizeof buf)
            return fmb_fail(err, FMB_EINVAL, "shard '%s': expected I/N (e.g. 0/4) or auto", spec);
        memcpy(buf, spec, (size_t)(slash - spec));
        buf[slash - spec] = 0;
        if (parse_i64(buf, &i) || parse_i64(slash + 1, &c) || c < 1 || i >= c)
            return fmb_fail(err, FMB_EINVAL,
                            "shard '%s': expected I/N with 0 <= I < N (e.g. 0/4) or auto", spec);
        if (count && count != c)
            return fmb_fail(err, FMB_EINVAL, "--shard-count %" PRId64 " but --shard is %s", count,
                            spec);
    }
    if (c > FMB_SHARD_MAX)
        return fmb_fail(err, FMB_EINVAL, "shard count %" PRId64 " is over %d", c, FMB_SHARD_MAX);
    *index = i;
    *n = c;
    return FMB_OK;
}

void fmb_shard_apply(fmb_job *job, int64_t index, int64_t n)
{
    job->shard_index = n > 0 ? index : 0;
    job->shard_count = n > 0 ? n : 0;
    const char *t = job->output_template ? job->output_template : job->output;
    char val[32];
    if (n > 0)
        snprintf(val, sizeof val, "%" PRId64, index);
    else
        snprintf(val, sizeof val, "all");
    fmb_sb b = {0};
    for (const char *p = t; *p;) {
        if (!strncmp(p, "{shard}", 7)) {
            fmb_sb_puts(&b, val);
            p += 7;
        } else {
            fmb_sb_putc(&b, *p++);
        }
    }
    char *out = fmb_sb_take(&b);
    if (!out)
        out = fmb_xstrdup("");
    if (!job->output_template)
        job->output_template = job->output;
    else
        free(job->output);
    job->output = out;
}

int64_t fmb_shard_of(const char *key, int64_t n)
{
    if (n <= 1)
        return 0;
    return (int64_t)(fmb_hash64(0, key, strlen(key)) % (uint64_t)n);
}

int fmb_shard_mine(const fmb_job *job, const char *key)
{
    return job->shard_count <= 1 || fmb_shard_of(key, job->shard_count) == job->shard_index;
}

char *fmb_shard_strip(const char *fp, int64_t *index, int64_t *n)
{
    static const char tag[] = "job.shard = ";
    *index = 0;
    *n = 1;
    fmb_sb b = {0};
    int bad = 0;
    for (const char *p = fp; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) + 1 : strlen(p);
        if (!strncmp(p, tag, sizeof tag - 1)) {
            long long i, c;
            if (sscanf(p + sizeof tag - 1, "%lld/%lld", &i, &c) != 2 || c < 1 || i < 0 || i >= c)
                bad = 1;
            else
                *index = (int64_t)i, *n = (int64_t)c;
        } else {
            fmb_sb_add(&b, p, len);
        }
        p += len;
    }
    char *out = fmb_sb_take(&b);
    if (!out)
        out = fmb_xstrdup("");
    if (bad) {
        free(out);
        return NULL;
    }
    return out;
}
