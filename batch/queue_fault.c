/*
 * queue_fault: the SQLite side of fault injection (batch/fault.h): a VFS that wraps the
 * default one and fails or kills at the points FMB_FAULT arms. Registered as the default VFS by
 * fmb_queue_fault_vfs, only when such a point is armed (the runner calls it before opening the
 * output), so every connection of the process goes through it; otherwise SQLite is untouched.
 *
 *   sqlite-full:N   the Nth write or truncate and every later one: SQLITE_FULL
 *   sqlite-ioerr:N  the Nth write, truncate or sync and every later one: SQLITE_IOERR_WRITE
 *   sqlite-busy:N   the Nth exclusive WAL lock (a write transaction's, a checkpoint's) is
 *                   refused once with SQLITE_BUSY (the busy handler then retries)
 *   checkpoint:N    dies at the Nth write into a main database file: in WAL mode only a
 *                   checkpoint writes there (the queue then checkpoints after every commit)
 *
 * Layout of a wrapped file: our header, then the real VFS's file of szOsFile bytes.
 */
#include <string.h>

#include "batch/fault.h"
#include "batch/queue_impl.h"

typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    int main_db;
    fmb_fault *fault; /* the VFS's pAppData */
} ffile;

/* Registered with SQLite, so they outlive every connection: a VFS is process-wide by nature. */
static sqlite3_vfs fault_vfs;
static sqlite3_vfs *real_vfs;

#define REAL(f) (((ffile *)(f))->real)

static int f_close(sqlite3_file *f)
{
    int rc = REAL(f)->pMethods->xClose(REAL(f));
    f->pMethods = NULL;
    return rc;
}
static int f_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int write_fault(sqlite3_file *f)
{
    fmb_fault *vfs_fault = ((ffile *)f)->fault;
    if (fmb_fault_pass(vfs_fault, FMB_FAULT_SQLITE_FULL))
        return SQLITE_FULL;
    if (fmb_fault_pass(vfs_fault, FMB_FAULT_SQLITE_IOERR))
        return SQLITE_IOERR_WRITE;
    return SQLITE_OK;
}
static int f_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    int rc = write_fault(f);
    if (rc)
        return rc;
    if (((ffile *)f)->main_db)
        fmb_fault_hit(((ffile *)f)->fault, FMB_FAULT_CHECKPOINT);
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = write_fault(f);
    return rc ? rc : REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags)
{
    if (fmb_fault_pass(((ffile *)f)->fault, FMB_FAULT_SQLITE_IOERR))
        return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xLock(REAL(f), lock);
}
static int f_unlock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}
static int f_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **p)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, p);
}
static int f_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    if ((flags & SQLITE_SHM_LOCK) && (flags & SQLITE_SHM_EXCLUSIVE) &&
        fmb_fault_pass(((ffile *)f)->fault, FMB_FAULT_SQLITE_BUSY))
        return SQLITE_BUSY;
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void f_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods fault_io = {
    3,          f_close,       f_read,      f_write,   f_truncate, f_sync,   f_size,
    f_lock,     f_unlock,      f_reserved,  f_control, f_sector,   f_device, f_shm_map,
    f_shm_lock, f_shm_barrier, f_shm_unmap, f_fetch,   f_unfetch,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
    ffile *ff = (ffile *)file;
    ff->fault = vfs->pAppData;
    ff->real = (sqlite3_file *)(ff + 1);
    ff->main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out_flags);
    // the real file's methods decide which of ours exist: an older version has no shm/fetch
    file->pMethods = ff->real->pMethods ? &fault_io : NULL;
    return rc;
}

#define FWD(name, ...) real_vfs->name(real_vfs, __VA_ARGS__)
static int f_delete(sqlite3_vfs *v, const char *name, int sync)
{
    (void)v;
    return FWD(xDelete, name, sync);
}
static int f_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return FWD(xAccess, name, flags, out);
}
static int f_full(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return FWD(xFullPathname, name, n, out);
}
static void *f_dlopen(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return FWD(xDlOpen, name);
}
static void f_dlerror(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    FWD(xDlError, n, msg);
}
static void (*f_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return FWD(xDlSym, h, sym);
}
static void f_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    FWD(xDlClose, h);
}
static int f_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return FWD(xRandomness, n, out);
}
static int f_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return FWD(xSleep, us);
}
static int f_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return FWD(xCurrentTime, out);
}
static int f_lasterr(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xGetLastError ? FWD(xGetLastError, n, out) : 0;
}
static int f_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return FWD(xCurrentTimeInt64, out);
}

fmb_status fmb_queue_fault_vfs(fmb_fault *f, fmb_err *err)
{
    if (!fmb_fault_armed(f, FMB_FAULT_SQLITE_BUSY) && !fmb_fault_armed(f, FMB_FAULT_SQLITE_FULL) &&
        !fmb_fault_armed(f, FMB_FAULT_SQLITE_IOERR) && !fmb_fault_armed(f, FMB_FAULT_CHECKPOINT))
        return FMB_OK;
    if (real_vfs)
        return FMB_OK; /* once per process */
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs || real_vfs->iVersion < 2)
        return fmb_fail(err, FMB_EINTERNAL, "FMB_FAULT: no default SQLite VFS to wrap");
    fault_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(ffile) + real_vfs->szOsFile,
        .mxPathname = real_vfs->mxPathname,
        .zName = "fmb-fault",
        .pAppData = f,
        .xOpen = f_open,
        .xDelete = f_delete,
        .xAccess = f_access,
        .xFullPathname = f_full,
        .xDlOpen = f_dlopen,
        .xDlError = f_dlerror,
        .xDlSym = f_dlsym,
        .xDlClose = f_dlclose,
        .xRandomness = f_random,
        .xSleep = f_sleep,
        .xCurrentTime = f_time,
        .xGetLastError = f_lasterr,
        .xCurrentTimeInt64 = f_time64,
    };
    if (sqlite3_vfs_register(&fault_vfs, 1) != SQLITE_OK)
        return fmb_fail(err, FMB_EINTERNAL, "FMB_FAULT: cannot register the fault VFS");
    return FMB_OK;
}

void fmb_queue_set_fault(fmb_queue *q, fmb_fault *f)
{
    q->fault = f;
    // checkpoint:N needs checkpoints to happen: one after every commit instead of every 1000
    // pages
    if (fmb_fault_armed(f, FMB_FAULT_CHECKPOINT))
        sqlite3_wal_autocheckpoint(q->db, 1);
}
