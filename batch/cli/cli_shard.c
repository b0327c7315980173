/* cli_shard: --shard / [job].shard for the job commands; the schedulers' variables are read
 * here, in the CLI layer, and handed to batch/shard.c. */
#include <stdlib.h>

#include "batch/cli/cli.h"
#include "batch/shard.h"

fmb_status fmb_cli_job_shard(fmb_job *job, const char *spec, int64_t count, fmb_err *err)
{
    if (!spec)
        spec = job->shard; /* the command line wins over the file */
    if (!spec && count)
        return fmb_fail(err, FMB_EINVAL, "--shard-count needs --shard auto (or [job].shard)");
    int64_t index = 0, n = 0;
    if (spec) {
        fmb_shard_env env = {getenv("SLURM_ARRAY_TASK_ID"), getenv("SLURM_ARRAY_TASK_MIN"),
                             getenv("SLURM_ARRAY_TASK_COUNT"), getenv("JOB_COMPLETION_INDEX")};
        fmb_status s = fmb_shard_parse(spec, &env, count, &index, &n, err);
        if (s)
            return s;
    }
    fmb_shard_apply(job, index, n);
    return FMB_OK;
}
