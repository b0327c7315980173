/*
 * extract: PCRE2 (8-bit, UTF) over generated text. See extract.h.
 *
 * Subjects are model output decoded with U+FFFD replacement, but PCRE2_MATCH_INVALID_UTF is set
 * anyway so that no input can reach undefined behaviour. JIT is used when available (Debian's
 * x86-64 build has it); the match limit also bounds JIT time, the depth limit applies to the
 * interpreter. The JIT stack is 1 MiB (the 32 KiB default overflows on long generations).
 */
#include "batch/extract.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

typedef struct {
    const char *name; /* borrowed from the task */
    pcre2_code *code;
} rx;

struct fmb_extract {
    rx *rx;
    size_t n;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    pcre2_match_data *md; /* sized for the largest pattern */
};

void fmb_extract_free(fmb_extract *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n; i++)
        pcre2_code_free(x->rx[i].code);
    free(x->rx);
    pcre2_match_data_free(x->md);
    pcre2_match_context_free(x->mctx);
    pcre2_jit_stack_free(x->jit_stack);
    free(x);
}

fmb_status
fmb_extract_new(const fmb_task_cfg *task, const char *job_path, fmb_extract **out, fmb_err *err)
{
    *out = NULL;
    fmb_extract *x = fmb_xcalloc(1, sizeof *x);
    x->rx = fmb_xcalloc(task->n_extract ? task->n_extract : 1, sizeof *x->rx);
    x->mctx = pcre2_match_context_create(NULL);
    FMB_ASSERT(x->mctx);
    pcre2_set_match_limit(x->mctx, (uint32_t)task->match_limit);
    pcre2_set_depth_limit(x->mctx, (uint32_t)task->depth_limit);
    x->jit_stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    if (x->jit_stack)
        pcre2_jit_stack_assign(x->mctx, NULL, x->jit_stack);
    uint32_t max_groups = 1;
    for (size_t i = 0; i < task->n_extract; i++) {
        const fmb_extract_cfg *e = &task->extract[i];
        int code;
        PCRE2_SIZE off;
        pcre2_code *c = pcre2_compile((PCRE2_SPTR)e->pattern, PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
        if (!c) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            fmb_extract_free(x);
            return fmb_fail(
                err, FMB_EINVAL, "%s:%d:%d: task '%s': extract.%s: regex error at offset %zu: %s",
                job_path, e->line, e->col, task->name, e->name, (size_t)off, (const char *)msg);
        }
        uint32_t names = 0, groups = 0;
        pcre2_pattern_info(c, PCRE2_INFO_NAMECOUNT, &names);
        pcre2_pattern_info(c, PCRE2_INFO_CAPTURECOUNT, &groups);
        if (names == 0) {
            pcre2_code_free(c);
            fmb_extract_free(x);
            return fmb_fail(err, FMB_EINVAL,
                            "%s:%d:%d: task '%s': extract.%s: the regex has no named group "
                            "(write (?<name>...))",
                            job_path, e->line, e->col, task->name, e->name);
        }
        (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); /* no JIT: the interpreter runs it */
        if (groups + 1 > max_groups)
            max_groups = groups + 1;
        x->rx[x->n].name = e->name;
        x->rx[x->n].code = c;
        x->n++;
    }
    x->md = pcre2_match_data_create(max_groups, NULL);
    FMB_ASSERT(x->md);
    *out = x;
    return FMB_OK;
}

fmb_status fmb_extract_run(fmb_extract *x, const char *text, size_t len, char **json, fmb_err *err)
{
    *json = NULL;
    json_t *obj = json_object();
    json_object_set_new(obj, "ok", json_false()); /* first in the output; set below */
    int ok = 1;
    for (size_t i = 0; i < x->n; i++) {
        pcre2_code *c = x->rx[i].code;
        int rc = pcre2_match(c, (PCRE2_SPTR)text, len, 0, 0, x->md, x->mctx);
        if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
            rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            json_decref(obj);
            return fmb_fail(err, FMB_ELIMIT, "extract.%s: %s", x->rx[i].name, (const char *)msg);
        }
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            json_decref(obj);
            return fmb_fail(err, FMB_EINVAL, "extract.%s: %s", x->rx[i].name, (const char *)msg);
        }
        if (rc < 0)
            ok = 0;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->md);
        uint32_t names, entry;
        PCRE2_SPTR table;
        pcre2_pattern_info(c, PCRE2_INFO_NAMECOUNT, &names);
        pcre2_pattern_info(c, PCRE2_INFO_NAMEENTRYSIZE, &entry);
        pcre2_pattern_info(c, PCRE2_INFO_NAMETABLE, &table);
        for (uint32_t k = 0; k < names; k++) {
            PCRE2_SPTR e = table + (size_t)k * entry;
            int g = (e[0] << 8) | e[1];
            const char *name = (const char *)(e + 2);
            json_t *v = json_null();
            if (rc >= 0 && g < rc && ov[2 * g] != PCRE2_UNSET) {
                v = json_stringn(text + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
                if (!v)
                    v = json_null();
            }
            /* A group name used twice (duplicate names, several regexes): a set value wins. */
            json_t *old = json_object_get(obj, name);
            if (!old || json_is_null(old))
                json_object_set_new(obj, name, v);
            else
                json_decref(v);
        }
    }
    json_object_set_new(obj, "ok", json_boolean(ok));
    *json = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(obj);
    if (!*json)
        return fmb_fail(err, FMB_ENOMEM, "extract: cannot write JSON");
    return FMB_OK;
}
