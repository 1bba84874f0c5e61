/*
 * ds_io.h - stream I/O of libds: sequential readers over files, pipes and zstd
 * streams; atomic file (and directory) outputs; stdout.
 *
 * Readers: ds_reader_open() takes a path, or NULL / "-" for stdin. An input
 * that starts with the zstd frame magic (28 b5 2f fd) is decompressed on the
 * fly. A reader over a regular uncompressed file is "random access": it also
 * offers pread, seek, size and mmap. Every other reader is strictly forward.
 *
 * Writers: ds_writer_open() on a path writes to a temporary file
 * ".<base>.XXXXXX" in the destination directory, which ds_writer_commit()
 * fsyncs, closes and renames into place (then fsyncs the directory). Until the
 * commit, nothing at the destination changes; ds_writer_free() without a
 * commit removes the temporary file. A path ending in ".zst", or the flag
 * DS_WRITE_ZSTD, compresses the stream. NULL or "-" is stdout (not atomic).
 *
 * Temporary paths of live writers and output directories are kept in a
 * process-wide list; ds_io_cleanup_temps() removes them and is safe to call
 * from a signal handler or an atexit hook.
 */
#ifndef DS_IO_H
#define DS_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- readers ---------------------------------------------------------- */

struct ds_reader;

/* Opens path (NULL or "-": stdin). On success *out owns the reader; free with
 * ds_reader_free(). A missing file gives DS_ERR_NOT_FOUND, a directory
 * DS_ERR_ARG. */
ds_err ds_reader_open(struct ds_reader **out, const char *path);

/* Wraps an already open file descriptor (not closed by ds_reader_free when
 * owns_fd is false); name is used in messages. */
ds_err ds_reader_open_fd(struct ds_reader **out, int fd, const char *name, bool owns_fd);

/* The path given to open, or "<stdin>". Borrowed. */
const char *ds_reader_name(const struct ds_reader *r);

/* Reads exactly n bytes, or fails with DS_ERR_TRUNCATED ("'x': unexpected end
 * of file at byte N"). */
ds_err ds_reader_read(struct ds_reader *r, void *buf, size_t n);

/* Reads up to n bytes; *got = 0 only at end of input. */
ds_err ds_reader_read_some(struct ds_reader *r, void *buf, size_t n, size_t *got);

/* Skips n bytes forward (reads and discards on streams). */
ds_err ds_reader_skip(struct ds_reader *r, uint64_t n);

/* Looks at the next n (<= 64) bytes without consuming them; *got < n only at
 * end of input. */
ds_err ds_reader_peek(struct ds_reader *r, void *buf, size_t n, size_t *got);

/* Bytes consumed so far (of the decompressed stream). */
uint64_t ds_reader_tell(const struct ds_reader *r);

/* True for a regular, uncompressed file: pread, seek, size and mmap work. */
bool ds_reader_is_file(const struct ds_reader *r);

/* True when the input is zstd-compressed. */
bool ds_reader_is_compressed(const struct ds_reader *r);

/* Total size for random-access readers; UINT64_MAX when unknown (streams). */
uint64_t ds_reader_size(const struct ds_reader *r);

/* Random access (DS_ERR_STATE on streams). pread does not move the position. */
ds_err ds_reader_pread(struct ds_reader *r, void *buf, size_t n, uint64_t off);
ds_err ds_reader_seek(struct ds_reader *r, uint64_t off);

/* Maps the whole file read-only (random-access readers only). The mapping
 * lives until ds_reader_free(). */
ds_err ds_reader_mmap(struct ds_reader *r, const void **addr, size_t *len);

/* Frees the reader and closes its file; accepts NULL. */
void ds_reader_free(struct ds_reader *r);

/* ---- writers ---------------------------------------------------------- */

enum ds_write_flags {
    DS_WRITE_FORCE = 1 << 0, /* replace an existing destination */
    DS_WRITE_ZSTD = 1 << 1,  /* compress (implied by a ".zst" path) */
    DS_WRITE_RAW = 1 << 2    /* never compress, even for ".zst" paths */
};

struct ds_writer;

/* Opens an output (see the top of this file). zstd_level 0 means the default
 * (3); threads > 1 lets zstd compress with that many workers. An existing
 * destination without DS_WRITE_FORCE gives DS_ERR_EXISTS and creates nothing. */
ds_err ds_writer_open(struct ds_writer **out, const char *path, unsigned flags,
                      int zstd_level, int threads);

/* The destination path, or "<stdout>". Borrowed. */
const char *ds_writer_name(const struct ds_writer *w);

ds_err ds_writer_write(struct ds_writer *w, const void *buf, size_t n);

/* Writes n zero bytes. */
ds_err ds_writer_zero(struct ds_writer *w, uint64_t n);

/* Bytes written so far (before compression). */
uint64_t ds_writer_tell(const struct ds_writer *w);

/* Finishes the stream: flush, fsync, checked close, rename into place, fsync
 * of the directory. For stdout: flush and check for errors. After a failed
 * commit the temporary file is gone and the destination is untouched. */
ds_err ds_writer_commit(struct ds_writer *w);

/* Frees the writer; without a successful commit, removes the temporary file.
 * Accepts NULL. */
void ds_writer_free(struct ds_writer *w);

/* ---- output directories ------------------------------------------------ */

struct ds_outdir;

/* Starts a directory output: creates ".<base>.XXXXXX" next to path. Files are
 * written inside ds_outdir_tmp() (with ds_writer_open and DS_WRITE_FORCE).
 * An existing path without DS_WRITE_FORCE gives DS_ERR_EXISTS. */
ds_err ds_outdir_open(struct ds_outdir **out, const char *path, unsigned flags);

/* The temporary directory to write into. Borrowed. */
const char *ds_outdir_tmp(const struct ds_outdir *d);

/* Renames the directory into place (an existing one, with FORCE, is replaced
 * only after the new one is complete). */
ds_err ds_outdir_commit(struct ds_outdir *d);

/* Without a commit, removes the temporary directory and its files. */
void ds_outdir_free(struct ds_outdir *d);

/* ---- helpers ----------------------------------------------------------- */

/* Removes every live temporary file and directory. Async-signal-safe enough
 * for SIGINT/SIGTERM/SIGHUP handlers. */
void ds_io_cleanup_temps(void);

/* True when a and b name the same existing file (same device and inode). */
bool ds_same_file(const char *a, const char *b);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; fails with
 * DS_ERR_LIMIT when it is larger than max bytes. Free with free(). */
ds_err ds_read_file(const char *path, size_t max, char **out, size_t *len);

/* ---- SHA-256 (FIPS 180-4) --------------------------------------------------- */

/* SHA-256 of data[0..n). */
void ds_sha256(const void *data, size_t n, uint8_t out[32]);
/* SHA-256 of a file's bytes as stored (what sha256sum prints: a .zst file is
 * not decompressed); reads it once; errors name the file (DS_ERR_NOT_FOUND
 * when it does not exist). */
ds_err ds_sha256_file(const char *path, uint8_t out[32]);
/* digest as 64 lowercase hex digits and a NUL. */
void ds_sha256_hex(const uint8_t digest[32], char hex[65]);

#ifdef __cplusplus
}
#endif
#endif
