/*
 * fuzz_extract: libFuzzer target for the extract step (batch/extract.c): the input up to its
 * first NUL is a PCRE2 pattern (given to the job parser as a TOML string, every byte escaped
 * that must be), the rest the subject (generated text: any bytes). Compiles the pattern as a
 * job's `extract` does (UTF, JIT, small match and depth limits), runs it, and checks that the
 * result is a JSON object with "ok". `make fuzz` builds it; seeds: tests/fuzz/corpus_extract.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/extract.h"
#include "batch/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t plen = nul ? (size_t)(nul - data) : size;
    if (plen > 1024)
        return 0;
    const char *subject = nul ? (const char *)nul + 1 : "";
    size_t slen = nul ? size - plen - 1 : 0;
    char *toml = malloc(plen * 6 + 512), *o = toml;
    o += sprintf(o, "[job]\nname = \"f\"\nmodel = \"m\"\noutput = \"o.db\"\n[source]\n"
                    "kind = \"files\"\npaths = [\"x\"]\n[[task]]\nname = \"g\"\nkind = "
                    "\"generate\"\nprompt = \"{document}\"\nmax_new_tokens = 1\n"
                    "match_limit = 10000\ndepth_limit = 1000\nextract = { a = \"");
    for (size_t i = 0; i < plen; i++) {
        unsigned c = data[i];
        if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f)
            o += sprintf(o, "\\u%04x", c);
        else
            *o++ = (char)c;
    }
    o += sprintf(o, "\" }\n");
    fmb_job *job = NULL;
    fmb_err err;
    if (fmb_job_parse(toml, (size_t)(o - toml), "fuzz.toml", "/tmp", &job, &err) == FMB_OK) {
        fmb_extract *x = NULL;
        if (job->n_tasks == 1 && fmb_extract_new(&job->tasks[0], job->path, &x, &err) == FMB_OK) {
            char *json = NULL;
            if (fmb_extract_run(x, subject, slen, &json, &err) == FMB_OK) {
                json_t *v = json_loads(json, 0, NULL);
                if (!json_is_object(v) || !json_is_boolean(json_object_get(v, "ok")))
                    abort();
                json_decref(v);
                free(json);
            }
            fmb_extract_free(x);
        }
        fmb_job_free(job);
    }
    free(toml);
    return 0;
}
