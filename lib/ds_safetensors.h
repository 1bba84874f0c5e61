/*
 * ds_safetensors.h - Hugging Face safetensors: reader (single file or sharded
 * through model.safetensors.index.json) and writer.
 *
 * File layout: u64 little-endian header length N | N bytes of JSON | data.
 * The JSON object maps each tensor name to
 *   {"dtype": "F32"|"F16"|"BF16"|"F64"|"I8"|"I16"|"I32"|"I64"|"F8_E4M3",
 *    "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * (offsets relative to the first byte after the header), plus an optional
 * "__metadata__" object of string values. The reader checks (untrusted input):
 * N against the file size and a 100 MB cap, JSON validity, every dtype,
 * shape x dtype size == end - begin, offsets inside the data and not
 * overlapping, unique names, and the index's shard files (present, inside the
 * directory, each tensor in the shard the index names).
 *
 * Shapes here are in PyTorch order (outermost first), as in the file.
 */
#ifndef DS_SAFETENSORS_H
#define DS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"
#include "ds_io.h"
#include "ds_tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_ST_MAX_DIMS 8
#define DS_ST_MAX_HEADER (100u * 1000u * 1000u)

struct ds_st_tensor {
    char *name;                     /* owned */
    enum ds_type type;
    uint32_t n_dims;
    int64_t shape[DS_ST_MAX_DIMS];  /* PyTorch order */
    uint64_t begin, end;            /* relative to the shard's data section */
    uint32_t file;                  /* index into ds_st.files */
};

struct ds_st_kv {
    char *key, *value;              /* owned */
};

struct ds_st {
    struct ds_st_tensor *tensors;   /* owned; sorted by (file, begin) */
    size_t n_tensors;
    char **files;                   /* owned paths of the shard files */
    uint64_t *data_start;           /* per file: 8 + header length */
    uint64_t *file_size;            /* per file */
    size_t n_files;
    struct ds_st_kv *meta;          /* __metadata__ of the first file, owned */
    size_t n_meta;
    bool sharded;                   /* opened through an index */
    uint64_t index_total_size;      /* metadata.total_size of the index, 0 if none */
    size_t *by_name;                /* owned: tensor indices sorted by name (ds_st_find) */
    struct ds_reader **readers;     /* owned: per file, open for ds_st_read (NULL after
                                       ds_st_parse_header alone) */
};

void ds_st_init(struct ds_st *st);
void ds_st_release(struct ds_st *st);

/* Opens a checkpoint: path is a .safetensors file, a model.safetensors.index.json,
 * or a directory holding model.safetensors.index.json or one *.safetensors file
 * (model.safetensors preferred). st must be init'ed. On failure st is left
 * empty (released); on success the shard files stay open for ds_st_read()
 * until ds_st_release(). */
ds_err ds_st_open(struct ds_st *st, const char *path);

/* Parses one header (the JSON bytes, without the length prefix) describing
 * data_len bytes of data; appends its tensors with the given file index.
 * Used by ds_st_open and by the fuzz target. name is for messages. */
ds_err ds_st_parse_header(struct ds_st *st, const char *json, size_t len, uint64_t data_len,
                          uint32_t file, const char *name);

/* Index of a tensor by name, or -1 (binary search on a name index). */
long ds_st_find(const struct ds_st *st, const char *name);

/* Reads tensor i's bytes (end - begin) into buf. */
ds_err ds_st_read(const struct ds_st *st, size_t i, void *buf);

/* dtype string <-> type: "F32" <-> DS_TYPE_F32, ..., "F8_E4M3". Unknown
 * strings give DS_ERR_UNSUPPORTED. */
ds_err ds_st_dtype_parse(const char *s, enum ds_type *out);
const char *ds_st_dtype_name(enum ds_type t); /* NULL if not representable */

/* ---- writing -------------------------------------------------------------- */

/* Writes the length prefix and JSON header of one file holding tensors[0..n)
 * in that order (their begin/end are computed and stored back: contiguous,
 * no padding), with optional __metadata__ (meta may be NULL). The header is
 * padded with spaces to a multiple of 8 bytes, as Hugging Face does. The
 * caller then writes each tensor's bytes in order. */
ds_err ds_st_write_header(struct ds_writer *w, struct ds_st_tensor *tensors, size_t n,
                          const struct ds_st_kv *meta, size_t n_meta);

/* Writes model.safetensors.index.json content to w: metadata.total_size and
 * weight_map (tensor name -> file base name), keys sorted. */
ds_err ds_st_write_index(struct ds_writer *w, uint64_t total_size, const char *const *names,
                         const char *const *files, size_t n);

#ifdef __cplusplus
}
#endif
#endif
