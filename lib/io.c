/*
 * io.c - stream I/O: buffered readers (file, pipe, zstd), atomic writers,
 * atomic output directories and the registry of live temporary paths.
 *
 * Ownership: a reader owns its buffers, its name and (if owns_fd) its fd; a
 * writer owns its buffer, its strings, its fd and its temporary file until
 * commit; an outdir owns its temporary directory until commit. The temp
 * registry only borrows path strings: an owner unregisters a path before it
 * frees it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zstd.h>

#include "ds_io.h"
#include "error_impl.h"
#include "ds_banned.h"

_Static_assert(sizeof(off_t) >= 8, "libds needs a 64-bit off_t (_FILE_OFFSET_BITS=64)");

#define IO_BUF_SIZE ((size_t)1 << 20)
#define PEEK_MAX 64
/* Largest single read(2)/write(2) request; Linux caps them at 0x7ffff000. */
#define IO_CHUNK ((size_t)1 << 30)

static const unsigned char zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};

/* ---- temp registry ------------------------------------------------------ */

#define TEMP_SLOTS 256

/* path is published last (atomic store), so a signal handler that sees a
 * non-NULL path also sees its kind. The mutex orders add/remove between
 * threads; ds_io_cleanup_temps() never takes it (it may run in a handler). */
static struct {
    _Atomic(char *) path;
    atomic_int is_dir;
} temps[TEMP_SLOTS];
static pthread_mutex_t temps_lock = PTHREAD_MUTEX_INITIALIZER;

static ds_err temp_add(char *path, bool is_dir)
{
    ds_err rc = DS_ERR_LIMIT;

    pthread_mutex_lock(&temps_lock);
    for (size_t i = 0; i < TEMP_SLOTS; i++) {
        if (atomic_load(&temps[i].path) == NULL) {
            atomic_store(&temps[i].is_dir, is_dir ? 1 : 0);
            atomic_store(&temps[i].path, path);
            rc = DS_OK;
            break;
        }
    }
    pthread_mutex_unlock(&temps_lock);
    if (rc != DS_OK)
        return ds_set_error(rc, "too many temporary outputs open at once (%d)", TEMP_SLOTS);
    return DS_OK;
}

/* Forgets path (a no-op when ds_io_cleanup_temps() already took it). */
static void temp_remove(const char *path)
{
    if (!path)
        return;
    pthread_mutex_lock(&temps_lock);
    for (size_t i = 0; i < TEMP_SLOTS; i++) {
        char *expect = (char *)path;
        if (atomic_compare_exchange_strong(&temps[i].path, &expect, NULL))
            break;
    }
    pthread_mutex_unlock(&temps_lock);
}

struct dirent64_raw {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Removes name (relative to dirfd) and, if it is a directory, everything in
 * it. No malloc (getdents64 into a stack buffer), no symlink following;
 * depth-limited. Errors are ignored: this is best-effort cleanup. */
static void remove_tree_at(int dirfd, const char *name, int depth)
{
    int fd;
    bool removed;

    if (unlinkat(dirfd, name, 0) == 0 || (errno != EISDIR && errno != EPERM))
        return;
    if (depth > 32)
        return;
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    do {
        _Alignas(8) char buf[4096];
        ssize_t n;

        removed = false;
        if (lseek(fd, 0, SEEK_SET) < 0)
            break;
        while ((n = getdents64(fd, buf, sizeof(buf))) > 0) {
            for (ssize_t off = 0; off < n;) {
                const struct dirent64_raw *de = (const void *)(buf + off);
                const char *dn = de->d_name;
                off += de->d_reclen;
                if (dn[0] == '.' && (dn[1] == '\0' || (dn[1] == '.' && dn[2] == '\0')))
                    continue;
                if (de->d_type == DT_DIR) {
                    remove_tree_at(fd, dn, depth + 1);
                    if (unlinkat(fd, dn, AT_REMOVEDIR) == 0 || errno == ENOENT)
                        removed = true;
                } else if (unlinkat(fd, dn, 0) == 0) {
                    removed = true;
                } else if (errno == EISDIR || errno == EPERM) {
                    remove_tree_at(fd, dn, depth + 1);
                    removed = true;
                }
            }
        }
    } while (removed);
    close(fd);
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

static void remove_tree(const char *path)
{
    remove_tree_at(AT_FDCWD, path, 0);
}

void ds_io_cleanup_temps(void)
{
    int saved = errno;

    // Files first: writers inside a temporary directory are files in it.
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < TEMP_SLOTS; i++) {
            char *p;
            if (atomic_load(&temps[i].path) == NULL || atomic_load(&temps[i].is_dir) != pass)
                continue;
            p = atomic_exchange(&temps[i].path, NULL);
            if (!p)
                continue;
            if (pass == 0)
                unlink(p);
            else
                remove_tree(p);
        }
    }
    errno = saved;
}

/* ---- small helpers -------------------------------------------------------- */

static ds_err read_err(const char *name, int err)
{
    return ds_set_error(DS_ERR_IO, "cannot read '%s': %s", name, strerror(err));
}

/* Opens path for reading and rejects directories. *st is filled. */
static ds_err open_input(const char *path, int *fd_out, struct stat *st)
{
    int fd;

    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return ds_set_error(DS_ERR_NOT_FOUND, "cannot open '%s': %s", path, strerror(e));
        if (e == EISDIR)
            return ds_set_error(DS_ERR_ARG, "'%s': is a directory", path);
        return ds_set_error(DS_ERR_IO, "cannot open '%s': %s", path, strerror(e));
    }
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return ds_set_error(DS_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(st->st_mode)) {
        close(fd);
        return ds_set_error(DS_ERR_ARG, "'%s': is a directory", path);
    }
    *fd_out = fd;
    return DS_OK;
}

/* read(2) with EINTR retry; returns bytes read, 0 at EOF, -1 with errno. */
static ssize_t read_retry(int fd, void *buf, size_t n)
{
    ssize_t got;

    if (n > IO_CHUNK)
        n = IO_CHUNK;
    do
        got = read(fd, buf, n);
    while (got < 0 && errno == EINTR);
    return got;
}

/* Writes all n bytes (EINTR and partial writes handled). */
static ds_err write_all(int fd, const void *buf, size_t n, const char *name)
{
    const unsigned char *p = buf;

    while (n > 0) {
        ssize_t put = write(fd, p, n > IO_CHUNK ? IO_CHUNK : n);
        if (put < 0) {
            if (errno == EINTR)
                continue;
            return ds_set_error(DS_ERR_IO, "cannot write '%s': %s", name, strerror(errno));
        }
        if (put == 0)
            return ds_set_error(DS_ERR_IO, "cannot write '%s': no progress", name);
        p += put;
        n -= (size_t)put;
    }
    return DS_OK;
}

/* Splits path into a malloc'd directory ("." when there is no slash) and a
 * pointer to the base name inside path. */
static ds_err split_path(const char *path, char **dir, const char **base)
{
    const char *slash = strrchr(path, '/');

    if (!slash) {
        *dir = ds_strdup(".");
        *base = path;
    } else {
        *dir = ds_strndup(path, slash == path ? 1 : (size_t)(slash - path));
        *base = slash + 1;
    }
    return *dir ? DS_OK : DS_ERR_NOMEM;
}

/* "<dir>/.<base><suffix>XXXXXX" next to path; malloc'd. */
static char *temp_template(const char *path, const char *suffix)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = path + dlen;
    size_t n = dlen + 1 + strlen(base) + strlen(suffix) + 6 + 1;
    char *t = ds_malloc(n);

    if (t) {
        memcpy(t, path, dlen);
        snprintf(t + dlen, n - dlen, ".%s%sXXXXXX", base, suffix);
    }
    return t;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    // The rename already happened: a directory that cannot be synced (some
    // filesystems refuse) must not turn a finished output into a failure.
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

static mode_t current_umask(void)
{
#ifdef __linux__
    // umask(2) can only be read by setting it, which races with other
    // threads; Linux >= 4.7 shows it in /proc/self/status.
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[4096];
        size_t len = 0;
        ssize_t got;
        while (len < sizeof(buf) - 1 &&
               (got = read_retry(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
            len += (size_t)got;
        close(fd);
        buf[len] = '\0';
        char *p = strstr(buf, "\nUmask:");
        if (p) {
            char *end;
            unsigned long m = strtoul(p + 7, &end, 8);
            if (end != p + 7 && m <= 0777)
                return (mode_t)m;
        }
    }
#endif
    mode_t m = umask(022);
    umask(m);
    return m;
}

/* rename(2) that refuses to replace an existing to where the kernel allows. */
static int rename_noreplace(const char *from, const char *to)
{
#ifdef RENAME_NOREPLACE
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return -1;
#endif
    return rename(from, to);
}

/* ---- readers ---------------------------------------------------------------- */

struct iobuf {
    unsigned char *p;
    size_t pos, len, cap;
};

struct ds_reader {
    int fd;
    bool owns_fd;
    bool random;      /* regular, uncompressed: pread/seek/size/mmap */
    bool compressed;
    bool eof;         /* no more bytes will come into *data */
    bool raw_eof;     /* read(2) returned 0 (zstd mode) */
    bool frame_open;  /* inside a zstd frame: EOF now is truncation */
    bool zflush;      /* the decoder filled the output: it may hold more */
    ds_err zerr;      /* a failed zstd stream stays failed */
    char *name;
    struct iobuf raw; /* bytes as read from fd */
    struct iobuf out; /* decompressed bytes (zstd mode) */
    struct iobuf *data; /* what the caller consumes: &raw or &out */
    ZSTD_DStream *zd;
    uint64_t pos;     /* bytes consumed */
    uint64_t base;    /* fd offset at open (random access) */
    uint64_t size;    /* file size minus base (random access) */
    void *map;
    size_t map_len;
};

static size_t avail(const struct ds_reader *r)
{
    return r->data->len - r->data->pos;
}

static ds_err truncated(const struct ds_reader *r)
{
    return ds_set_error(DS_ERR_TRUNCATED, "'%s': unexpected end of file at byte %llu", r->name,
                        (unsigned long long)r->pos);
}

/* Reads once from fd into the free tail of b. */
static ds_err read_into(struct ds_reader *r, struct iobuf *b, bool *at_eof)
{
    ssize_t got = read_retry(r->fd, b->p + b->len, b->cap - b->len);

    if (got < 0)
        return read_err(r->name, errno);
    *at_eof = got == 0;
    b->len += (size_t)got;
    return DS_OK;
}

static void compact(struct iobuf *b)
{
    if (b->pos > 0) {
        memmove(b->p, b->p + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;
    }
}

/* Makes at least want (<= buffer size) bytes available, fewer only at the
 * end of input. */
static ds_err fill(struct ds_reader *r, size_t want)
{
    struct iobuf *d = r->data;

    if (want > d->cap)
        want = d->cap;
    DS_RETURN_IF(r->zerr != DS_OK && avail(r) < want, r->zerr,
                 "'%s': zstd stream failed earlier", r->name);
    if (d->pos == d->len)
        d->pos = d->len = 0;
    else if (d->cap - d->pos < want)
        compact(d);

    while (avail(r) < want && !r->eof) {
        if (!r->compressed) {
            bool at_eof;
            DS_TRY(read_into(r, d, &at_eof));
            r->eof = at_eof;
            continue;
        }
        if (r->raw.pos == r->raw.len && !r->zflush) {
            if (r->raw_eof) {
                if (r->frame_open) {
                    r->zerr = DS_ERR_TRUNCATED;
                    return ds_set_error(DS_ERR_TRUNCATED,
                                        "'%s': unexpected end of zstd stream (truncated frame)",
                                        r->name);
                }
                r->eof = true;
                break;
            }
            r->raw.pos = r->raw.len = 0;
            DS_TRY(read_into(r, &r->raw, &r->raw_eof));
            continue;
        }
        ZSTD_inBuffer in = {r->raw.p, r->raw.len, r->raw.pos};
        ZSTD_outBuffer ob = {d->p, d->cap, d->len};
        size_t ret = ZSTD_decompressStream(r->zd, &ob, &in);
        if (ZSTD_isError(ret)) {
            r->zerr = DS_ERR_FORMAT;
            return ds_set_error(DS_ERR_FORMAT, "'%s': corrupt zstd data: %s", r->name,
                                ZSTD_getErrorName(ret));
        }
        r->raw.pos = in.pos;
        d->len = ob.pos;
        r->frame_open = ret != 0;
        r->zflush = ob.pos == ob.size;
    }
    return DS_OK;
}

static ds_err reader_init(struct ds_reader **out, int fd, const char *name, bool owns_fd,
                          const struct stat *st)
{
    ds_err rc = DS_OK;
    struct ds_reader *r;

    *out = NULL;
    r = ds_calloc(1, sizeof(*r));
    if (!r) {
        if (owns_fd)
            close(fd);
        return DS_ERR_NOMEM;
    }
    r->fd = fd;
    r->owns_fd = owns_fd;
    r->data = &r->raw;
    r->name = ds_strdup(name);
    r->raw.p = ds_malloc(IO_BUF_SIZE);
    if (!r->name || !r->raw.p) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    r->raw.cap = IO_BUF_SIZE;

    if (S_ISREG(st->st_mode)) {
        off_t cur = lseek(fd, 0, SEEK_CUR);
        if (cur >= 0 && (uint64_t)cur <= (uint64_t)st->st_size) {
            r->random = true;
            r->base = (uint64_t)cur;
            r->size = (uint64_t)st->st_size - r->base;
        }
    }

    DS_CHECK(fill(r, sizeof(zstd_magic)));
    if (avail(r) >= sizeof(zstd_magic) &&
        memcmp(r->raw.p + r->raw.pos, zstd_magic, sizeof(zstd_magic)) == 0) {
        r->compressed = true;
        r->random = false;
        r->raw_eof = r->eof;
        r->eof = false;
        r->frame_open = true;
        r->zd = ZSTD_createDStream();
        r->out.p = ds_malloc(IO_BUF_SIZE);
        DS_FAIL_IF(!r->zd, DS_ERR_NOMEM, "'%s': cannot create zstd decoder", name);
        if (!r->out.p) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        r->out.cap = IO_BUF_SIZE;
        size_t ret = ZSTD_initDStream(r->zd);
        DS_FAIL_IF(ZSTD_isError(ret), DS_ERR_NOMEM, "'%s': zstd: %s", name,
                   ZSTD_getErrorName(ret));
        r->data = &r->out;
    }
    *out = r;
    r = NULL;
out:
    ds_reader_free(r);
    return rc;
}

ds_err ds_reader_open(struct ds_reader **out, const char *path)
{
    struct stat st;
    int fd;

    *out = NULL;
    if (!path || strcmp(path, "-") == 0)
        return ds_reader_open_fd(out, STDIN_FILENO, "<stdin>", false);
    DS_TRY(open_input(path, &fd, &st));
    return reader_init(out, fd, path, true, &st);
}

ds_err ds_reader_open_fd(struct ds_reader **out, int fd, const char *name, bool owns_fd)
{
    struct stat st;
    char fdname[32];

    *out = NULL;
    if (!name) {
        snprintf(fdname, sizeof(fdname), "<fd %d>", fd);
        name = fdname;
    }
    DS_RETURN_IF(fd < 0, DS_ERR_ARG, "'%s': invalid file descriptor %d", name, fd);
    if (fstat(fd, &st) != 0) {
        int e = errno;
        if (owns_fd)
            close(fd);
        return ds_set_error(DS_ERR_IO, "cannot stat '%s': %s", name, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        if (owns_fd)
            close(fd);
        return ds_set_error(DS_ERR_ARG, "'%s': is a directory", name);
    }
    return reader_init(out, fd, name, owns_fd, &st);
}

const char *ds_reader_name(const struct ds_reader *r)
{
    return r->name;
}

ds_err ds_reader_read(struct ds_reader *r, void *buf, size_t n)
{
    unsigned char *p = buf;

    while (n > 0) {
        size_t k = avail(r);
        if (k == 0) {
            // Large plain reads bypass the buffer.
            if (!r->compressed && n >= r->raw.cap && !r->eof) {
                r->raw.pos = r->raw.len = 0;
                ssize_t got = read_retry(r->fd, p, n);
                if (got < 0)
                    return read_err(r->name, errno);
                if (got == 0) {
                    r->eof = true;
                    return truncated(r);
                }
                p += got;
                n -= (size_t)got;
                r->pos += (uint64_t)got;
                continue;
            }
            DS_TRY(fill(r, 1));
            k = avail(r);
            if (k == 0)
                return truncated(r);
        }
        if (k > n)
            k = n;
        memcpy(p, r->data->p + r->data->pos, k);
        r->data->pos += k;
        r->pos += k;
        p += k;
        n -= k;
    }
    return DS_OK;
}

ds_err ds_reader_read_some(struct ds_reader *r, void *buf, size_t n, size_t *got)
{
    size_t k;

    *got = 0;
    if (n == 0)
        return DS_OK;
    if (avail(r) == 0) {
        if (!r->compressed && n >= r->raw.cap && !r->eof) {
            r->raw.pos = r->raw.len = 0;
            ssize_t g = read_retry(r->fd, buf, n);
            if (g < 0)
                return read_err(r->name, errno);
            if (g == 0)
                r->eof = true;
            *got = (size_t)g;
            r->pos += (uint64_t)g;
            return DS_OK;
        }
        DS_TRY(fill(r, 1));
    }
    k = avail(r);
    if (k > n)
        k = n;
    memcpy(buf, r->data->p + r->data->pos, k);
    r->data->pos += k;
    r->pos += k;
    *got = k;
    return DS_OK;
}

ds_err ds_reader_peek(struct ds_reader *r, void *buf, size_t n, size_t *got)
{
    *got = 0;
    DS_RETURN_IF(n > PEEK_MAX, DS_ERR_ARG, "'%s': cannot peek %zu bytes (at most %d)", r->name,
                 n, PEEK_MAX);
    DS_TRY(fill(r, n));
    if (n > avail(r))
        n = avail(r);
    memcpy(buf, r->data->p + r->data->pos, n);
    *got = n;
    return DS_OK;
}

ds_err ds_reader_skip(struct ds_reader *r, uint64_t n)
{
    if (r->random && n > avail(r)) {
        uint64_t to;
        if (ds_add_u64(r->pos, n, &to) || to > r->size) {
            r->pos += avail(r);
            r->data->pos = r->data->len;
            return ds_set_error(DS_ERR_TRUNCATED,
                                "'%s': unexpected end of file at byte %llu (skipping %llu bytes)",
                                r->name, (unsigned long long)r->size, (unsigned long long)n);
        }
        return ds_reader_seek(r, to);
    }
    while (n > 0) {
        size_t k = avail(r);
        if (k == 0) {
            DS_TRY(fill(r, r->data->cap));
            k = avail(r);
            if (k == 0)
                return truncated(r);
        }
        if (k > n)
            k = (size_t)n;
        r->data->pos += k;
        r->pos += k;
        n -= k;
    }
    return DS_OK;
}

uint64_t ds_reader_tell(const struct ds_reader *r)
{
    return r->pos;
}

bool ds_reader_is_file(const struct ds_reader *r)
{
    return r->random;
}

bool ds_reader_is_compressed(const struct ds_reader *r)
{
    return r->compressed;
}

uint64_t ds_reader_size(const struct ds_reader *r)
{
    return r->random ? r->size : UINT64_MAX;
}

ds_err ds_reader_pread(struct ds_reader *r, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    uint64_t end;

    DS_RETURN_IF(!r->random, DS_ERR_STATE, "'%s': random access on a stream", r->name);
    DS_RETURN_IF(ds_add_u64(off, n, &end) || ds_add_u64(end, r->base, &end) ||
                     end > (uint64_t)INT64_MAX,
                 DS_ERR_ARG, "'%s': read of %zu bytes at offset %llu is out of range", r->name,
                 n, (unsigned long long)off);
    while (n > 0) {
        ssize_t got = pread(r->fd, p, n > IO_CHUNK ? IO_CHUNK : n, (off_t)(r->base + off));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return read_err(r->name, errno);
        }
        if (got == 0)
            return ds_set_error(DS_ERR_TRUNCATED, "'%s': unexpected end of file at byte %llu",
                                r->name, (unsigned long long)off);
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return DS_OK;
}

ds_err ds_reader_seek(struct ds_reader *r, uint64_t off)
{
    uint64_t lo;

    DS_RETURN_IF(!r->random, DS_ERR_STATE, "'%s': seek on a stream", r->name);
    DS_RETURN_IF(off > r->size, DS_ERR_TRUNCATED,
                 "'%s': seek to byte %llu past end of file (size %llu)", r->name,
                 (unsigned long long)off, (unsigned long long)r->size);
    // Inside the buffered window: just move within it.
    lo = r->pos - r->data->pos;
    if (off >= lo && off - lo <= r->data->len) {
        r->data->pos = (size_t)(off - lo);
        r->pos = off;
        return DS_OK;
    }
    if (lseek(r->fd, (off_t)(r->base + off), SEEK_SET) < 0)
        return ds_set_error(DS_ERR_IO, "cannot seek in '%s': %s", r->name, strerror(errno));
    r->data->pos = r->data->len = 0;
    r->pos = off;
    r->eof = false;
    return DS_OK;
}

ds_err ds_reader_mmap(struct ds_reader *r, const void **addr, size_t *len)
{
    static const unsigned char empty[1];
    uint64_t total;

    *addr = NULL;
    *len = 0;
    DS_RETURN_IF(!r->random, DS_ERR_STATE, "'%s': cannot map a stream", r->name);
    total = r->base + r->size;
    DS_RETURN_IF(total > SIZE_MAX, DS_ERR_LIMIT, "'%s': too large to map", r->name);
    if (r->size == 0) {
        *addr = empty;
        return DS_OK;
    }
    if (!r->map) {
        void *m = mmap(NULL, (size_t)total, PROT_READ, MAP_PRIVATE, r->fd, 0);
        if (m == MAP_FAILED)
            return ds_set_error(errno == ENOMEM ? DS_ERR_NOMEM : DS_ERR_IO,
                                "cannot map '%s': %s", r->name, strerror(errno));
        r->map = m;
        r->map_len = (size_t)total;
    }
    *addr = (const unsigned char *)r->map + r->base;
    *len = (size_t)r->size;
    return DS_OK;
}

void ds_reader_free(struct ds_reader *r)
{
    if (!r)
        return;
    if (r->map)
        munmap(r->map, r->map_len);
    if (r->owns_fd && r->fd >= 0)
        close(r->fd);
    ZSTD_freeDStream(r->zd);
    free(r->raw.p);
    free(r->out.p);
    free(r->name);
    free(r);
}

/* ---- writers ------------------------------------------------------------------ */

struct ds_writer {
    int fd;
    bool atomic;    /* tmp + rename (else stdout or a special file) */
    bool owns_fd;
    bool force;     /* may replace an existing destination */
    bool committed;
    bool failed;
    char *name;     /* destination path or "<stdout>" */
    char *tmp;      /* temporary path (registered) or NULL */
    char *dir;      /* destination directory */
    unsigned char *buf; /* plain bytes, or zstd output */
    size_t len, cap;
    ZSTD_CStream *zc;
    uint64_t written;
};

static ds_err wflush(struct ds_writer *w)
{
    ds_err rc;

    if (w->len == 0)
        return DS_OK;
    rc = write_all(w->fd, w->buf, w->len, w->name);
    w->len = 0;
    if (rc != DS_OK)
        w->failed = true;
    return rc;
}

static ds_err compress_some(struct ds_writer *w, const void *p, size_t n, ZSTD_EndDirective op)
{
    ZSTD_inBuffer in = {p, n, 0};

    for (;;) {
        ZSTD_outBuffer ob = {w->buf, w->cap, w->len};
        size_t ret = ZSTD_compressStream2(w->zc, &ob, &in, op);
        if (ZSTD_isError(ret)) {
            w->failed = true;
            return ds_set_error(DS_ERR_IO, "'%s': zstd compression failed: %s", w->name,
                                ZSTD_getErrorName(ret));
        }
        w->len = ob.pos;
        if (w->len == w->cap || (op == ZSTD_e_end && ret != 0))
            DS_TRY(wflush(w));
        if (op == ZSTD_e_end ? ret == 0 : in.pos == in.size)
            return DS_OK;
    }
}

static ds_err writer_check(struct ds_writer *w)
{
    DS_RETURN_IF(w->committed, DS_ERR_STATE, "'%s': write after commit", w->name);
    DS_RETURN_IF(w->failed, DS_ERR_STATE, "'%s': write after a failed write", w->name);
    return DS_OK;
}

static ds_err writer_setup_zstd(struct ds_writer *w, int level, int threads)
{
    size_t ret;

    if (level == 0)
        level = 3;
    DS_RETURN_IF(level < ZSTD_minCLevel() || level > ZSTD_maxCLevel(), DS_ERR_ARG,
                 "zstd level %d out of range (%d..%d)", level, ZSTD_minCLevel(),
                 ZSTD_maxCLevel());
    w->zc = ZSTD_createCStream();
    DS_RETURN_IF(!w->zc, DS_ERR_NOMEM, "'%s': cannot create zstd encoder", w->name);
    ret = ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, level);
    DS_RETURN_IF(ZSTD_isError(ret), DS_ERR_ARG, "zstd level %d: %s", level,
                 ZSTD_getErrorName(ret));
    (void)ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 1);
    if (threads > 1)
        (void)ZSTD_CCtx_setParameter(w->zc, ZSTD_c_nbWorkers, threads); // may be unsupported
    return DS_OK;
}

static bool has_zst_suffix(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && strcmp(path + n - 4, ".zst") == 0;
}

ds_err ds_writer_open(struct ds_writer **out, const char *path, unsigned flags,
                      int zstd_level, int threads)
{
    ds_err rc = DS_OK;
    struct ds_writer *w;
    bool to_stdout = !path || strcmp(path, "-") == 0;
    bool compress;
    bool exists = false;
    struct stat st;
    const char *base;

    *out = NULL;
    if (!to_stdout) {
        if (stat(path, &st) == 0) {
            exists = true;
            DS_RETURN_IF(S_ISDIR(st.st_mode), DS_ERR_ARG, "'%s': is a directory", path);
            DS_RETURN_IF(S_ISREG(st.st_mode) && !(flags & DS_WRITE_FORCE), DS_ERR_EXISTS,
                         "'%s': file exists; use -f to overwrite", path);
        } else if (errno != ENOENT) {
            return ds_set_error(errno == ENOTDIR ? DS_ERR_NOT_FOUND : DS_ERR_IO,
                                "cannot create '%s': %s", path, strerror(errno));
        }
    }

    w = ds_calloc(1, sizeof(*w));
    if (!w)
        return DS_ERR_NOMEM;
    w->fd = -1;
    w->force = flags & DS_WRITE_FORCE;
    w->name = ds_strdup(to_stdout ? "<stdout>" : path);
    w->buf = ds_malloc(IO_BUF_SIZE);
    if (!w->name || !w->buf) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    w->cap = IO_BUF_SIZE;

    compress = !(flags & DS_WRITE_RAW) &&
               ((flags & DS_WRITE_ZSTD) || (!to_stdout && has_zst_suffix(path)));
    if (compress)
        DS_CHECK(writer_setup_zstd(w, zstd_level, threads));

    if (to_stdout) {
        w->fd = STDOUT_FILENO;
    } else if (exists && !S_ISREG(st.st_mode)) {
        // A device or FIFO (/dev/null, a named pipe): written in place.
        do
            w->fd = open(path, O_WRONLY | O_CLOEXEC);
        while (w->fd < 0 && errno == EINTR);
        DS_FAIL_IF(w->fd < 0, DS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
        w->owns_fd = true;
    } else {
        mode_t mode = exists ? (st.st_mode & 07777) : (0666 & ~current_umask());
        DS_CHECK(split_path(path, &w->dir, &base));
        DS_FAIL_IF(*base == '\0', DS_ERR_ARG, "'%s': is a directory", path);
        char *t = temp_template(path, ".");
        if (!t) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        w->fd = mkostemp(t, O_CLOEXEC);
        if (w->fd < 0) {
            int e = errno;
            free(t);
            DS_FAIL_IF(true, e == ENOENT ? DS_ERR_NOT_FOUND : DS_ERR_IO,
                       "cannot create '%s': %s", path, strerror(e));
        }
        rc = temp_add(t, false);
        if (rc != DS_OK) {
            unlink(t);
            free(t);
            goto out;
        }
        w->tmp = t;
        w->owns_fd = true;
        w->atomic = true;
        DS_FAIL_IF(fchmod(w->fd, mode) != 0, DS_ERR_IO, "cannot chmod '%s': %s", w->tmp,
                   strerror(errno));
    }
    *out = w;
    w = NULL;
out:
    ds_writer_free(w);
    return rc;
}

const char *ds_writer_name(const struct ds_writer *w)
{
    return w->name;
}

ds_err ds_writer_write(struct ds_writer *w, const void *buf, size_t n)
{
    DS_TRY(writer_check(w));
    if (n == 0)
        return DS_OK;
    w->written += n;
    if (w->zc)
        return compress_some(w, buf, n, ZSTD_e_continue);
    if (n >= w->cap - w->len) {
        DS_TRY(wflush(w));
        if (n >= w->cap) {
            ds_err rc = write_all(w->fd, buf, n, w->name);
            if (rc != DS_OK)
                w->failed = true;
            return rc;
        }
    }
    memcpy(w->buf + w->len, buf, n);
    w->len += n;
    return DS_OK;
}

ds_err ds_writer_zero(struct ds_writer *w, uint64_t n)
{
    static const unsigned char zeros[64 * 1024];

    DS_TRY(writer_check(w));
    while (n > 0) {
        size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
        if (w->zc) {
            DS_TRY(ds_writer_write(w, zeros, k));
        } else {
            if (w->len == w->cap)
                DS_TRY(wflush(w));
            if (k > w->cap - w->len)
                k = w->cap - w->len;
            memset(w->buf + w->len, 0, k);
            w->len += k;
            w->written += k;
        }
        n -= k;
    }
    return DS_OK;
}

uint64_t ds_writer_tell(const struct ds_writer *w)
{
    return w->written;
}

ds_err ds_writer_commit(struct ds_writer *w)
{
    ds_err rc = DS_OK;

    DS_TRY(writer_check(w));
    if (w->zc)
        DS_CHECK(compress_some(w, NULL, 0, ZSTD_e_end));
    DS_CHECK(wflush(w));
    if (!w->atomic) {
        if (w->owns_fd) {
            int fd = w->fd;
            w->fd = -1;
            DS_FAIL_IF(close(fd) != 0 && errno != EINTR, DS_ERR_IO, "cannot write '%s': %s",
                       w->name, strerror(errno));
        }
        w->committed = true;
        return DS_OK;
    }
    DS_FAIL_IF(fsync(w->fd) != 0, DS_ERR_IO, "cannot sync '%s': %s", w->name, strerror(errno));
    {
        int fd = w->fd;
        w->fd = -1;
        // Linux closes the fd even when close fails; never retry.
        DS_FAIL_IF(close(fd) != 0 && errno != EINTR, DS_ERR_IO, "cannot write '%s': %s",
                   w->name, strerror(errno));
    }
    // Without FORCE, a file that appeared since the open is not clobbered.
    if ((w->force ? rename(w->tmp, w->name) : rename_noreplace(w->tmp, w->name)) != 0) {
        DS_FAIL_IF(errno == EEXIST, DS_ERR_EXISTS, "'%s': file exists; use -f to overwrite",
                   w->name);
        DS_FAIL_IF(true, DS_ERR_IO, "cannot rename '%s' to '%s': %s", w->tmp, w->name,
                   strerror(errno));
    }
    temp_remove(w->tmp);
    free(w->tmp);
    w->tmp = NULL;
    fsync_dir(w->dir);
    w->committed = true;
out:
    if (rc != DS_OK) {
        w->failed = true;
        if (w->tmp) {
            if (w->fd >= 0) {
                close(w->fd);
                w->fd = -1;
            }
            unlink(w->tmp);
            temp_remove(w->tmp);
            free(w->tmp);
            w->tmp = NULL;
        }
    }
    return rc;
}

void ds_writer_free(struct ds_writer *w)
{
    if (!w)
        return;
    if (w->owns_fd && w->fd >= 0)
        close(w->fd);
    if (w->tmp) {
        unlink(w->tmp);
        temp_remove(w->tmp);
        free(w->tmp);
    }
    ZSTD_freeCStream(w->zc);
    free(w->buf);
    free(w->dir);
    free(w->name);
    free(w);
}

/* ---- output directories --------------------------------------------------------- */

struct ds_outdir {
    char *dst;
    char *tmp;   /* registered until commit */
    char *dir;   /* parent of dst */
    unsigned flags;
    bool committed;
};

ds_err ds_outdir_open(struct ds_outdir **out, const char *path, unsigned flags)
{
    ds_err rc = DS_OK;
    struct ds_outdir *d;
    struct stat st;
    const char *base;
    size_t n;

    *out = NULL;
    DS_RETURN_IF(!path || !*path, DS_ERR_ARG, "empty output directory name");
    d = ds_calloc(1, sizeof(*d));
    if (!d)
        return DS_ERR_NOMEM;
    d->flags = flags;
    n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    d->dst = ds_strndup(path, n);
    if (!d->dst) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    DS_CHECK(split_path(d->dst, &d->dir, &base));
    DS_FAIL_IF(*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0,
               DS_ERR_ARG, "'%s': not usable as an output directory", path);
    if (stat(d->dst, &st) == 0) {
        DS_FAIL_IF(!S_ISDIR(st.st_mode), DS_ERR_ARG, "'%s': exists and is not a directory",
                   path);
        DS_FAIL_IF(!(flags & DS_WRITE_FORCE), DS_ERR_EXISTS,
                   "'%s': directory exists; use -f to overwrite", path);
    } else {
        DS_FAIL_IF(errno != ENOENT, errno == ENOTDIR ? DS_ERR_NOT_FOUND : DS_ERR_IO,
                   "cannot create '%s': %s", path, strerror(errno));
    }
    {
        char *t = temp_template(d->dst, ".");
        if (!t) {
            rc = DS_ERR_NOMEM;
            goto out;
        }
        if (!mkdtemp(t)) {
            int e = errno;
            free(t);
            DS_FAIL_IF(true, e == ENOENT ? DS_ERR_NOT_FOUND : DS_ERR_IO,
                       "cannot create '%s': %s", path, strerror(e));
        }
        rc = temp_add(t, true);
        if (rc != DS_OK) {
            rmdir(t);
            free(t);
            goto out;
        }
        d->tmp = t;
    }
    DS_FAIL_IF(chmod(d->tmp, 0777 & ~current_umask()) != 0, DS_ERR_IO,
               "cannot chmod '%s': %s", d->tmp, strerror(errno));
    *out = d;
    d = NULL;
out:
    ds_outdir_free(d);
    return rc;
}

const char *ds_outdir_tmp(const struct ds_outdir *d)
{
    return d->tmp;
}

/* Replaces the existing directory dst with tmp; on success the old tree is
 * gone (best effort) and tmp no longer exists. */
static ds_err outdir_replace(struct ds_outdir *d)
{
    char *aside;

#ifdef RENAME_EXCHANGE
    if (renameat2(AT_FDCWD, d->tmp, AT_FDCWD, d->dst, RENAME_EXCHANGE) == 0) {
        // d->tmp now holds the old tree; it stays registered until removed.
        remove_tree(d->tmp);
        return DS_OK;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return ds_set_error(DS_ERR_IO, "cannot replace '%s': %s", d->dst, strerror(errno));
#endif
    // No atomic exchange: move the old tree aside, move the new one in.
    aside = temp_template(d->dst, ".old.");
    if (!aside)
        return DS_ERR_NOMEM;
    if (!mkdtemp(aside)) {
        int e = errno;
        free(aside);
        return ds_set_error(DS_ERR_IO, "cannot replace '%s': %s", d->dst, strerror(e));
    }
    // Linux and POSIX allow renaming a directory over an empty one.
    if (rename(d->dst, aside) != 0) {
        int e = errno;
        rmdir(aside);
        free(aside);
        return ds_set_error(DS_ERR_IO, "cannot replace '%s': %s", d->dst, strerror(e));
    }
    if (rename(d->tmp, d->dst) != 0) {
        int e = errno;
        (void)rename(aside, d->dst);
        free(aside);
        return ds_set_error(DS_ERR_IO, "cannot rename '%s' to '%s': %s", d->tmp, d->dst,
                            strerror(e));
    }
    remove_tree(aside);
    free(aside);
    return DS_OK;
}

ds_err ds_outdir_commit(struct ds_outdir *d)
{
    struct stat st;

    DS_RETURN_IF(d->committed || !d->tmp, DS_ERR_STATE, "'%s': commit out of order", d->dst);
    fsync_dir(d->tmp);
    if (stat(d->dst, &st) == 0) {
        DS_RETURN_IF(!(d->flags & DS_WRITE_FORCE), DS_ERR_EXISTS,
                     "'%s': directory exists; use -f to overwrite", d->dst);
        DS_RETURN_IF(!S_ISDIR(st.st_mode), DS_ERR_ARG, "'%s': exists and is not a directory",
                     d->dst);
        DS_TRY(outdir_replace(d));
    } else if (rename_noreplace(d->tmp, d->dst) != 0) {
        return ds_set_error(errno == EEXIST || errno == ENOTEMPTY ? DS_ERR_EXISTS : DS_ERR_IO,
                            "cannot rename '%s' to '%s': %s", d->tmp, d->dst, strerror(errno));
    }
    temp_remove(d->tmp);
    free(d->tmp);
    d->tmp = NULL;
    fsync_dir(d->dir);
    d->committed = true;
    return DS_OK;
}

void ds_outdir_free(struct ds_outdir *d)
{
    if (!d)
        return;
    if (d->tmp) {
        remove_tree(d->tmp);
        temp_remove(d->tmp);
        free(d->tmp);
    }
    free(d->dir);
    free(d->dst);
    free(d);
}

/* ---- helpers ------------------------------------------------------------------------- */

bool ds_same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    if (!a || !b || stat(a, &sa) != 0 || stat(b, &sb) != 0)
        return false;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

ds_err ds_read_file(const char *path, size_t max, char **out, size_t *len)
{
    ds_err rc = DS_OK;
    struct stat st;
    int fd = -1;
    char *buf = NULL;
    size_t n = 0, cap, limit;

    *out = NULL;
    if (len)
        *len = 0;
    DS_TRY(open_input(path, &fd, &st));
    DS_FAIL_IF(S_ISREG(st.st_mode) && (uint64_t)st.st_size > max, DS_ERR_LIMIT,
               "'%s': file is larger than %zu bytes", path, max);
    if (max > SIZE_MAX - 2)
        max = SIZE_MAX - 2;
    // Hold at most max + 1 bytes (the extra one proves the file too large
    // when its size is unknown: pipes, /proc) plus the NUL.
    limit = max + 1;
    cap = S_ISREG(st.st_mode) && (uint64_t)st.st_size < limit ? (size_t)st.st_size + 1 : 4096;
    if (cap > limit)
        cap = limit;
    buf = ds_malloc(cap + 1);
    if (!buf) {
        rc = DS_ERR_NOMEM;
        goto out;
    }
    for (;;) {
        ssize_t got;
        if (n == cap) {
            DS_FAIL_IF(cap == limit, DS_ERR_LIMIT, "'%s': file is larger than %zu bytes", path,
                       max);
            size_t ncap = cap > limit / 2 ? limit : cap * 2;
            char *p = ds_realloc(buf, ncap + 1);
            if (!p) {
                rc = DS_ERR_NOMEM;
                goto out;
            }
            buf = p;
            cap = ncap;
        }
        got = read_retry(fd, buf + n, cap - n);
        DS_FAIL_IF(got < 0, DS_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
        if (got == 0)
            break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = n;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}
