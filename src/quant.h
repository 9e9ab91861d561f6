/*
 * quant.h: tensor element types: block geometry, fp16/bf16 conversion and the reference
 * (plain C, exact) dequantization of every type LFM2 files use (LFM2-SPEC.md section 5).
 * The block structs mirror the on-disk bytes exactly (packed, little-endian host assumed).
 */
#ifndef EXSA_QUANT_H
#define EXSA_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exsa.h"

#define QK 32    /* elements per block of the 32-element types */
#define QK_K 256 /* elements per K super-block */

/* ---- block layouts (packed: every field is bytes or 16-bit, all sizes match the format) ----- */

/* One layout a row (clang-format would spread each struct over several lines). */
/* clang-format off */
struct blk_q4_0 { uint16_t d; uint8_t qs[QK / 2]; };
struct blk_q4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };
struct blk_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct blk_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct blk_q8_0 { uint16_t d; int8_t qs[QK]; };
struct blk_iq4_nl { uint16_t d; uint8_t qs[QK / 2]; };
struct blk_q2_k { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct blk_q3_k { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct blk_q4_k { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct blk_q5_k { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct blk_q6_k { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct blk_iq4_xs { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
/* clang-format on */
/* Q8_K starts with an f32; it is read with memcpy, so no struct is needed (292 bytes).
 * quant.c checks the sizes (C11 _Static_assert: this header is also read by C++/CUDA). */

struct dtype_info {
    const char *name; /* "Q4_K" */
    int block_size;   /* elements per block */
    int type_size;    /* bytes per block */
    bool supported;   /* we can dequantize it */
};

/* NULL when id is no known ggml type. */
const struct dtype_info *dtype_info(int type);
/* Bytes of one row of n elements; 0 if n is not a multiple of the block size or the type is
 * unknown. */
size_t dtype_row_size(int type, int64_t n);

float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f); /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even */

/* y[0..n) = the n elements starting at src (n a multiple of the block size). Returns 0 or
 * EXSA_EUNSUPPORTED for a type we cannot read. */
int dequantize_row(int type, const void *src, float *y, int64_t n);

#endif
