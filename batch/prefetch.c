/*
 * prefetch: the source read ahead on a thread of its own. See prefetch.h.
 *
 * One producer (the thread), one consumer (the runner), a ring of fmb_pdoc under one mutex and
 * two condition variables: the thread waits while the ring is full (count or bytes), the
 * runner while it is empty. The thread's last entry is the end: eof, or the source's failure.
 */
#include "batch/prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/hash.h"

struct fmb_prefetch {
    fmb_source *src; /* the thread's alone until it ends */
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    fmb_pdoc *ring; /* [cap] */
    size_t cap, head, n, bytes, max_bytes;
    int done;          /* the thread has put its last document */
    int stop;          /* the runner asks the thread to end */
    fmb_status status; /* of the source, once done */
    fmb_err err;
};

void fmb_pdoc_free(fmb_pdoc *d)
{
    free(d->key);
    free(d->data);
    free(d->error);
    free(d->doc_id);
    free(d->meta);
    memset(d, 0, sizeof *d);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = fmb_xmalloc(n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static void *reader(void *arg)
{
    fmb_prefetch *p = arg;
    fmb_err err;
    fmb_status s = FMB_OK;
    for (;;) {
        fmb_doc doc;
        int eof = 0;
        s = fmb_src_next(p->src, &doc, &eof, &err);
        if (s || eof)
            break;
        fmb_pdoc d;
        memset(&d, 0, sizeof d);
        d.key = fmb_xstrdup(doc.key);
        d.doc_id = doc.doc_id ? fmb_xstrdup(doc.doc_id) : NULL;
        d.meta = doc.meta ? fmb_xstrdup(doc.meta) : NULL;
        if (doc.error) {
            d.error = fmb_xstrdup(doc.error);
        } else {
            d.data = dup_n(doc.data, doc.len);
            d.len = doc.len;
            fmb_hash_content(doc.data, doc.len, d.hash);
        }
        pthread_mutex_lock(&p->mu);
        // room: a free slot and the bytes (an empty ring takes any one document)
        while (!p->stop && (p->n == p->cap || (p->n && p->bytes + d.len > p->max_bytes)))
            pthread_cond_wait(&p->not_full, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            fmb_pdoc_free(&d);
            return NULL;
        }
        p->ring[(p->head + p->n) % p->cap] = d;
        p->n++;
        p->bytes += d.len;
        pthread_cond_signal(&p->not_empty);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);
    p->done = 1;
    p->status = s;
    if (s)
        p->err = err;
    pthread_cond_signal(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

fmb_status fmb_prefetch_start(
    fmb_source *src, size_t max_docs, size_t max_bytes, fmb_prefetch **out, fmb_err *err)
{
    *out = NULL;
    fmb_prefetch *p = fmb_xcalloc(1, sizeof *p);
    p->src = src;
    p->cap = max_docs ? max_docs : 1;
    p->max_bytes = max_bytes ? max_bytes : 1;
    p->ring = fmb_xcalloc(p->cap, sizeof *p->ring);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->not_full, NULL);
    pthread_cond_init(&p->not_empty, NULL);
    if (pthread_create(&p->th, NULL, reader, p) != 0) {
        fmb_prefetch_stop(p);
        return fmb_fail(err, FMB_EINTERNAL, "cannot start the source reader thread");
    }
    p->started = 1;
    *out = p;
    return FMB_OK;
}

fmb_status fmb_prefetch_next(fmb_prefetch *p, fmb_pdoc *d, int *eof, fmb_err *err)
{
    *eof = 0;
    memset(d, 0, sizeof *d);
    pthread_mutex_lock(&p->mu);
    while (p->n == 0 && !p->done)
        pthread_cond_wait(&p->not_empty, &p->mu);
    fmb_status s = FMB_OK;
    if (p->n) {
        *d = p->ring[p->head];
        memset(&p->ring[p->head], 0, sizeof p->ring[p->head]);
        p->head = (p->head + 1) % p->cap;
        p->n--;
        p->bytes -= d->len;
        pthread_cond_signal(&p->not_full);
    } else if (p->status) {
        s = fmb_fail(err, p->status, "%s", p->err.msg);
    } else {
        *eof = 1;
    }
    pthread_mutex_unlock(&p->mu);
    return s;
}

size_t fmb_prefetch_ready(fmb_prefetch *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n + (p->done ? 1 : 0);
    pthread_mutex_unlock(&p->mu);
    return n;
}

void fmb_prefetch_stop(fmb_prefetch *p)
{
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->not_full);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->th, NULL);
    }
    for (size_t i = 0; i < p->n; i++)
        fmb_pdoc_free(&p->ring[(p->head + i) % p->cap]);
    free(p->ring);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->not_full);
    pthread_cond_destroy(&p->not_empty);
    fmb_src_close(p->src);
    free(p);
}
