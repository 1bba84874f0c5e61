/*
 * ds_tensor.h - element types and exact conversions.
 *
 * enum ds_type uses ggml's numeric type ids, so a GGUF tensor's type field is
 * a ds_type. dskit adds one extension type, DS_TYPE_F8_E4M3 (DeepSeek's FP8:
 * one byte per weight; the per-128x128-tile scales live in a companion F32
 * tensor named "<weight name>_scale_inv"); llama.cpp cannot load it.
 *
 * Shapes: ggml order, ne[0] innermost. A PyTorch [out, in] matrix is
 * {in, out}.
 */
#ifndef DS_TENSOR_H
#define DS_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum ds_type {
    DS_TYPE_F32 = 0,
    DS_TYPE_F16 = 1,
    DS_TYPE_Q4_0 = 2,
    DS_TYPE_Q4_1 = 3,
    DS_TYPE_Q5_0 = 6,
    DS_TYPE_Q5_1 = 7,
    DS_TYPE_Q8_0 = 8,
    DS_TYPE_Q8_1 = 9,
    DS_TYPE_Q2_K = 10,
    DS_TYPE_Q3_K = 11,
    DS_TYPE_Q4_K = 12,
    DS_TYPE_Q5_K = 13,
    DS_TYPE_Q6_K = 14,
    DS_TYPE_Q8_K = 15,
    DS_TYPE_IQ2_XXS = 16,
    DS_TYPE_IQ2_XS = 17,
    DS_TYPE_IQ3_XXS = 18,
    DS_TYPE_IQ1_S = 19,
    DS_TYPE_IQ4_NL = 20,
    DS_TYPE_IQ3_S = 21,
    DS_TYPE_IQ2_S = 22,
    DS_TYPE_IQ4_XS = 23,
    DS_TYPE_I8 = 24,
    DS_TYPE_I16 = 25,
    DS_TYPE_I32 = 26,
    DS_TYPE_I64 = 27,
    DS_TYPE_F64 = 28,
    DS_TYPE_IQ1_M = 29,
    DS_TYPE_BF16 = 30,
    DS_TYPE_TQ1_0 = 34,
    DS_TYPE_TQ2_0 = 35,
    DS_TYPE_MXFP4 = 39,
    /* dskit extension types (not loadable by llama.cpp) */
    DS_TYPE_F8_E4M3 = 1024
};

/* Largest number of dimensions of a tensor (GGUF's limit). */
#define DS_MAX_DIMS 4

/* FP8 tile edge used by DeepSeek's checkpoints. */
#define DS_FP8_BLOCK 128

/* True for an id this build knows (ggml's or a dskit extension). */
bool ds_type_valid(int id);

/* ggml's name: "f32", "f16", "bf16", "q4_0", "q4_K", "iq4_nl", ...; dskit's
 * "f8_e4m3". "?" for an unknown id. */
const char *ds_type_name(enum ds_type t);

/* Case-insensitive lookup of a ds_type_name(); also accepts "fp8". */
ds_err ds_type_from_name(const char *name, enum ds_type *out);

/* Elements per block and bytes per block (1 and the element size for plain
 * types). 0 for an unknown id. */
int64_t ds_type_block_size(enum ds_type t);
size_t ds_type_block_bytes(enum ds_type t);

/* True when llama.cpp (mainline) can load tensors of this type. */
bool ds_type_llama_loadable(enum ds_type t);

/* Number of elements and bytes of a tensor {ne[0], ..., ne[n_dims-1]}:
 * checks n_dims <= DS_MAX_DIMS, ne[i] >= 0, ne[0] divisible by the block
 * size, and overflow. Errors: DS_ERR_FORMAT, DS_ERR_UNSUPPORTED (type),
 * DS_ERR_LIMIT (overflow). Detail messages do not name a file. */
ds_err ds_tensor_nbytes(enum ds_type t, uint32_t n_dims, const int64_t *ne,
                        uint64_t *n_elements, uint64_t *n_bytes);

/* ---- scalar conversions (exact; float -> narrow rounds to nearest even) -- */

float ds_f16_to_f32(uint16_t h);
uint16_t ds_f32_to_f16(float f);      /* overflow -> inf, NaN stays NaN */
float ds_bf16_to_f32(uint16_t h);
uint16_t ds_f32_to_bf16(float f);     /* NaN stays a quiet NaN */
float ds_fp8_e4m3_to_f32(uint8_t q);  /* E4M3FN: no infinities, 0x7f/0xff NaN */
uint8_t ds_f32_to_fp8_e4m3(float f);  /* saturates to +-448, NaN -> 0x7f */

/* Converts n elements between F32, F16, BF16, F64 and F8_E4M3 (unscaled).
 * Identical types copy. Other pairs: DS_ERR_UNSUPPORTED. */
ds_err ds_convert_row(enum ds_type dst_type, void *dst, enum ds_type src_type,
                      const void *src, size_t n);

/* DeepSeek FP8 dequantization:
 * q (rows, cols) E4M3, scale_inv (ceil(rows/block), ceil(cols/block)) -> w (rows, cols)
 * w[i][j] = fp8(q[i][j]) * scale_inv[i/block][j/block], ragged edge tiles included. */
void ds_fp8_dequant(float *w, const uint8_t *q, const float *scale_inv, int64_t rows,
                    int64_t cols, int64_t block);

/* Reference twin of ds_fp8_dequant (plain loops), for tests. */
void ds_fp8_dequant_ref(float *w, const uint8_t *q, const float *scale_inv, int64_t rows,
                        int64_t cols, int64_t block);

#ifdef __cplusplus
}
#endif
#endif
