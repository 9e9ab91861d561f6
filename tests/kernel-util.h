/*
 * kernel-util.h: what the matmul kernel tests share: a seeded generator, random weight blocks of
 * every type with finite, sane fp16 scales, the reference product (dequantize_row and a
 * double-accumulated dot) and NMSE. Header-only (each test is one translation unit).
 */
#ifndef EXSA_KERNEL_UTIL_H
#define EXSA_KERNEL_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "quant.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static inline uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 20);
}
static inline float rndf(float lo, float hi)
{
    return lo + (hi - lo) * (rnd() & 0xffffff) / 16777216.0f;
}

/* Byte offsets of the fp16 scale fields of one block of each type (-1 ends the list). */
static inline const int *scale_fields(int type)
{
    static const int at0[] = {0, -1}, at01[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1},
                     q6k[] = {208, -1}, none[] = {-1};
    switch (type) {
    case EXSA_DTYPE_Q4_0:
    case EXSA_DTYPE_Q5_0:
    case EXSA_DTYPE_Q8_0:
    case EXSA_DTYPE_IQ4_NL:
    case EXSA_DTYPE_IQ4_XS: return at0;
    case EXSA_DTYPE_Q4_1:
    case EXSA_DTYPE_Q5_1:
    case EXSA_DTYPE_Q4_K:
    case EXSA_DTYPE_Q5_K: return at01;
    case EXSA_DTYPE_Q2_K: return q2k;
    case EXSA_DTYPE_Q3_K: return q3k;
    case EXSA_DTYPE_Q6_K: return q6k;
    default: return none;
    }
}

/* Random bytes for n_rows rows of K elements of type, with finite, sane scales. */
static inline void *random_weights(int type, int64_t K, int64_t n_rows)
{
    const struct dtype_info *ti = dtype_info(type);
    size_t n_blocks = (size_t)(K / ti->block_size * n_rows), size = n_blocks * ti->type_size;
    uint8_t *w = malloc(size);
    for (size_t i = 0; i < size; i++)
        w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = w + b * ti->type_size;
        uint16_t h;
        for (const int *f = scale_fields(type); *f >= 0; f++) {
            h = f32_to_fp16(rndf(-0.02f, 0.02f));
            memcpy(blk + *f, &h, 2);
        }
        if (type == EXSA_DTYPE_Q8_K) {
            float d = rndf(0.001f, 0.01f);
            memcpy(blk, &d, 4);
        } else if (type == EXSA_DTYPE_F16 || type == EXSA_DTYPE_BF16) {
            float v = rndf(-1, 1);
            h = type == EXSA_DTYPE_F16 ? f32_to_fp16(v) : f32_to_bf16(v);
            memcpy(blk, &h, 2);
        } else if (type == EXSA_DTYPE_F32) {
            float v = rndf(-1, 1);
            memcpy(blk, &v, 4);
        }
    }
    return w;
}

/* ref[t][n] = sum_k dequant(W)[n][k] x[t][k], accumulated in double. */
static inline void reference(const struct tensor *w, int expert, const float *x, double *ref,
                             int n_tok)
{
    const int64_t K = w->ne[0], N = w->ne[1];
    const size_t rb = dtype_row_size(w->type, K);
    float *row = malloc(sizeof(float) * K);
    for (int64_t n = 0; n < N; n++) {
        dequantize_row(w->type, (const uint8_t *)w->data + ((size_t)expert * N + n) * rb, row, K);
        for (int t = 0; t < n_tok; t++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)row[k] * x[(size_t)t * K + k];
            ref[(size_t)t * N + n] = s;
        }
    }
    free(row);
}

static inline double nmse(const float *y, const double *ref, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += (y[i] - ref[i]) * (y[i] - ref[i]);
        r += ref[i] * ref[i];
    }
    return r > 0 ? e / r : (e > 0 ? INFINITY : 0);
}

/* The same for two f32 arrays (an op against the reference op). */
static inline double nmse_f32(const float *y, const float *ref, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)y[i] - ref[i]) * ((double)y[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? e / r : (e > 0 ? INFINITY : 0);
}

/* n random activations in [-1, 1) with rare 4x outliers (malloc'd). */
static inline float *random_input(int64_t n)
{
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        x[i] = rndf(-1, 1) * (rnd() % 1000 == 0 ? 4 : 1);
    return x;
}

#endif
