/*
 * attn.h: one block of causal attention lanes for the CPU backend (attn-avx512.c). A lane is a
 * (batch entry, query head) pair; all lanes of a block attend over the same sequence and KV
 * head g of attention layer a, each up to its own position.
 */
#ifndef EXSA_CPU_ATTN_H
#define EXSA_CPU_ATTN_H

#include <stdint.h>

struct kv_cache;

struct attn_block {
    struct kv_cache *kv;
    int a, seq, g, head_dim;
    int n_lanes;             /* 1..16 */
    int n_pos;               /* positions to read: max lane position + 1 */
    int32_t lane_pos[16];    /* a lane sees positions 0..lane_pos (unused lanes: -1) */
    const float *lane_q[16]; /* head_dim floats */
    float *lane_out[16];     /* head_dim floats */
};

/* work: 64-byte aligned, 16 * (head_dim + n_pos) floats. Returns 0, or -1 when this CPU or
 * shape has no AVX-512 path (the caller then runs its plain one). */
int attn_block_avx512(const struct attn_block *b, float *work);

#endif
