/*
 * ds_gguf.h - GGUF v3 headers: streaming reader and writer.
 *
 * Layout (all little-endian; see reference/gguf-and-llamacpp.md):
 *   magic "GGUF" | u32 version (3) | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | i32 type | value }        string = u64 len + bytes
 *                                                   array = i32 elem type + u64 n + elems
 *   n_tensors x { string name (< 64 bytes) | u32 n_dims (<= 4) | i64 ne[n_dims]
 *                 | i32 type | u64 offset (relative to the data section) }
 *   zero padding to `alignment` (general.alignment, default 32)
 *   tensor data: each tensor at its offset, padded to `alignment`
 *
 * Writer (llama.cpp's rule, which its reader enforces): offsets are contiguous
 * in tensor-info order, each tensor's size rounded up to the alignment. Offsets
 * depend only on shapes and types, so the whole header is known before any
 * data: ds_gguf_layout(), ds_gguf_write_header(), then ds_gguf_write_tensor()
 * for i = 0..n-1 writes a file in one sequential pass (to a pipe too).
 *
 * Reader: ds_gguf_read() parses and validates everything up to the start of
 * the data section (file contents are untrusted: counts, lengths, dims, types,
 * offsets are checked; no allocation is sized by an unchecked count) and leaves
 * the reader there. Tensor data is then read with ds_gguf_read_tensor() in
 * increasing offset order (ds_gguf_data_order()), which works on streams.
 * Offsets may be in any order in the info table but must be aligned, inside
 * the data section and non-overlapping.
 */
#ifndef DS_GGUF_H
#define DS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_io.h"
#include "ds_meta.h"
#include "ds_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_GGUF_MAGIC "GGUF"
#define DS_GGUF_VERSION 3
#define DS_GGUF_DEFAULT_ALIGNMENT 32
#define DS_GGUF_MAX_NAME 64 /* names are at most 63 bytes */

struct ds_tensor_info {
    char name[DS_GGUF_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[DS_MAX_DIMS]; /* ggml order; unused dims are 1 */
    enum ds_type type;
    uint64_t offset;         /* relative to the data section */
    uint64_t nbytes;         /* computed from type and shape */
};

struct ds_gguf {
    uint32_t version;
    uint32_t alignment;
    struct ds_meta *meta;            /* owned */
    struct ds_tensor_info *tensors;  /* owned, n_tensors entries */
    size_t n_tensors;
    size_t cap_tensors;
    uint64_t data_offset;            /* absolute file offset of the data section */
    uint64_t data_size;              /* bytes of the data section, padding included */
};

/* Sets up an empty header (meta allocated). */
ds_err ds_gguf_init(struct ds_gguf *g);
/* Frees the contents; g can be init'ed again. Accepts a zeroed struct. */
void ds_gguf_release(struct ds_gguf *g);

/* Index of a tensor by name, or -1. */
long ds_gguf_find(const struct ds_gguf *g, const char *name);

/* ---- reading ------------------------------------------------------------- */

/* Reads and validates the header from r (positioned at the magic), leaving r
 * at data_offset. Errors name ds_reader_name(r) and the problem: wrong magic,
 * unsupported version, truncated, absurd counts (DS_ERR_LIMIT), duplicate
 * keys or tensor names, bad dims or type, offsets out of range or
 * overlapping, data past the end of a file. g must be init'ed and empty; on
 * error it holds partial contents (release it as usual). A file without
 * tensors may end before the padding. */
ds_err ds_gguf_read(struct ds_reader *r, struct ds_gguf *g);

/* Fills order[0..n_tensors-1] with tensor indices by increasing offset. */
void ds_gguf_data_order(const struct ds_gguf *g, size_t *order);

/* Reads tensor i's nbytes into buf. On a stream, tensors must be read in
 * increasing offset order (skipping is allowed); on a file any order works. */
ds_err ds_gguf_read_tensor(struct ds_reader *r, const struct ds_gguf *g, size_t i, void *buf);

/* ---- writing -------------------------------------------------------------- */

/* Appends a tensor info (offset set by ds_gguf_layout). Checks the name
 * (non-empty, < 64 bytes, unique), dims and type. */
ds_err ds_gguf_add_tensor(struct ds_gguf *g, const char *name, enum ds_type type,
                          uint32_t n_dims, const int64_t *ne);

/* Computes nbytes and offsets (contiguous, aligned, info order), alignment
 * from general.alignment (default 32), data_offset and data_size. */
ds_err ds_gguf_layout(struct ds_gguf *g);

/* Bytes of the header before padding (magic through the last tensor info). */
uint64_t ds_gguf_header_size(const struct ds_gguf *g);

/* Writes magic .. tensor infos and the padding up to data_offset. */
ds_err ds_gguf_write_header(struct ds_writer *w, const struct ds_gguf *g);

/* Writes tensor i's data (nbytes) plus its padding. Must be called for
 * i = 0, 1, ..., n_tensors-1 in order (checked against ds_writer_tell). */
ds_err ds_gguf_write_tensor(struct ds_writer *w, const struct ds_gguf *g, size_t i,
                            const void *data);

#ifdef __cplusplus
}
#endif
#endif
