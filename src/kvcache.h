/*
 * kvcache.h: per-sequence state for one model. Attention layers keep K and V in one pool of
 * fixed-size blocks (KV_BLOCK positions each) handed out to sequences as they grow; a sequence's
 * block table maps position p to block blocks[p / KV_BLOCK]. Short-conv layers keep a rolling
 * state of (l_cache - 1) gated inputs per channel, layout [dim][l_cache - 1], oldest first.
 * Owned by an engine (the scheduler owns the engine); not thread-safe.
 * Invariant: positions 0..len-1 of a used sequence have blocks; a new sequence has zero state.
 */
#ifndef EXSA_KVCACHE_H
#define EXSA_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define KV_BLOCK 64

struct kv_seq {
    bool used;
    int len;       /* positions filled */
    int n_blocks;  /* blocks held */
    int *blocks;   /* max_blocks_per_seq entries */
    float *conv;   /* n_conv layers x dim x (l_cache - 1) */
};

struct kv_cache {
    int n_attn, n_conv, dim, l_cache;
    int kv_dim;       /* n_kv_heads x head_dim (the same for every attention layer) */
    int n_seq_max, n_ctx, max_blocks_per_seq;
    int n_blocks, n_free;
    int *free_list;   /* n_free block ids */
    float **k, **v;   /* per attention layer: n_blocks x KV_BLOCK x kv_dim */
    struct kv_seq *seqs;
};

struct exsa_snapshot {
    int len;
    size_t conv_floats;
    float *conv;
};

/* n_kv_tokens: pool capacity in positions over all sequences (0: n_seq_max x n_ctx). */
int kv_create(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens,
              struct kv_cache **out);
void kv_free(struct kv_cache *kv);
int kv_seq_new(struct kv_cache *kv);
void kv_seq_free(struct kv_cache *kv, int seq);
bool kv_seq_valid(const struct kv_cache *kv, int seq);
/* Makes sure positions [0, len) of seq have blocks; on failure nothing changes. */
int kv_reserve(struct kv_cache *kv, int seq, int len);
int kv_fork(struct kv_cache *kv, int src);
int kv_truncate(struct kv_cache *kv, int seq, int len);
size_t kv_conv_floats(const struct kv_cache *kv);
/* Conv state of conv layer conv_idx of seq: dim x (l_cache - 1) floats. */
float *kv_conv_state(struct kv_cache *kv, int seq, int conv_idx);

/* K / V row (kv_dim floats) of attention layer a at (seq, pos); pos must have a block. */
static inline float *kv_k(struct kv_cache *kv, int a, int seq, int pos)
{
    int b = kv->seqs[seq].blocks[pos / KV_BLOCK];
    return kv->k[a] + ((size_t)b * KV_BLOCK + pos % KV_BLOCK) * kv->kv_dim;
}
static inline float *kv_v(struct kv_cache *kv, int a, int seq, int pos)
{
    int b = kv->seqs[seq].blocks[pos / KV_BLOCK];
    return kv->v[a] + ((size_t)b * KV_BLOCK + pos % KV_BLOCK) * kv->kv_dim;
}

#endif
