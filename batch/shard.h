/*
 * shard: a deterministic partition of a job's items over N workers (Slurm job arrays,
 * Kubernetes indexed jobs; docs/JOBS.md "Shards").
 *
 * Shard I of N holds the items whose key (as the source yields it, batch/source.h) hashes to
 * I mod N under fmb_hash64 (engine/hash.h, stored values: never changes). The partition depends
 * on nothing but the key: not on the source order, nor on the other shards. fmb_src_next yields
 * only the job's shard's items (every worker still reads the whole source, so that repeated
 * keys get the same position keys in every shard).
 *
 * "{shard}" in [job].output is replaced by I for a sharded job, by "all" for an unsharded one
 * (the merged output: `fmbatch merge out-all.db out-0.db ...`). The fingerprint of a sharded
 * job (N > 1) has a line "job.shard = I/N"; fmb_shard_strip takes it out again (merge).
 */
#ifndef FMB_SHARD_H
#define FMB_SHARD_H

#include <stdint.h>

#include "batch/job.h"
#include "kernels/base.h"

/* What the schedulers tell a worker (read by the CLI layer, NULL when unset). */
typedef struct {
    const char *slurm_task_id;    /* SLURM_ARRAY_TASK_ID */
    const char *slurm_task_min;   /* SLURM_ARRAY_TASK_MIN */
    const char *slurm_task_count; /* SLURM_ARRAY_TASK_COUNT */
    const char *k8s_index;        /* JOB_COMPLETION_INDEX */
} fmb_shard_env;

/* Parses "I/N" (0 <= I < N, 1 <= N <= 1000000) or "auto": Slurm's array task (index = ID - MIN,
 * count = COUNT), else Kubernetes' completion index with count (0: not given). Errors say
 * what is missing. */
FMB_NODISCARD fmb_status fmb_shard_parse(const char *spec,
                                         const fmb_shard_env *env,
                                         int64_t count,
                                         int64_t *index,
                                         int64_t *n,
                                         fmb_err *err);

/* Makes job shard index of n (n = 0: unsharded) and derives job->output from
 * job->output_template ("{shard}" -> index, or "all" when unsharded). */
void fmb_shard_apply(fmb_job *job, int64_t index, int64_t n);

/* The shard of key among n (0 when n <= 1). */
int64_t fmb_shard_of(const char *key, int64_t n);

/* 1 when the item key belongs to the job's shard (always for an unsharded job). */
int fmb_shard_mine(const fmb_job *job, const char *key);

/* fingerprint without its "job.shard = I/N" line (caller frees); *index, *n: the shard (0 of 1
 * when there is no such line). Returns NULL on a malformed shard line. */
char *fmb_shard_strip(const char *fingerprint, int64_t *index, int64_t *n);

#endif
