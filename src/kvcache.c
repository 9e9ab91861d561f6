/*
 * kvcache.c: the block pool for attention K/V and the conv states, per sequence (kvcache.h).
 * Memory is reserved once at creation (calloc: pages are only touched when used), so the step
 * loop never allocates. Called by engine.c.
 */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

int kv_create(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens,
              struct kv_cache **out)
{
    struct kv_cache *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return EXSA_ENOMEM;
    kv->dim = hp->dim;
    kv->l_cache = hp->l_cache;
    kv->n_seq_max = n_seq_max;
    kv->n_ctx = n_ctx;
    for (int l = 0; l < hp->n_layers; l++) {
        if (hp->n_kv_heads[l] > 0) {
            kv->n_attn++;
            kv->kv_dim = hp->n_kv_heads[l] * hp->head_dim;
        } else {
            kv->n_conv++;
        }
    }
    kv->max_blocks_per_seq = (n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    long tokens = n_kv_tokens > 0 ? n_kv_tokens : (long)n_seq_max * n_ctx;
    kv->n_blocks = (int)((tokens + KV_BLOCK - 1) / KV_BLOCK);
    kv->free_list = malloc(sizeof(int) * (size_t)kv->n_blocks);
    kv->k = calloc((size_t)kv->n_attn + 1, sizeof(float *));
    kv->v = calloc((size_t)kv->n_attn + 1, sizeof(float *));
    kv->seqs = calloc((size_t)n_seq_max, sizeof(struct kv_seq));
    if (!kv->free_list || !kv->k || !kv->v || !kv->seqs)
        goto fail;
    size_t pool = (size_t)kv->n_blocks * KV_BLOCK * (size_t)kv->kv_dim;
    for (int a = 0; a < kv->n_attn; a++) {
        kv->k[a] = calloc(pool, sizeof(float));
        kv->v[a] = calloc(pool, sizeof(float));
        if (!kv->k[a] || !kv->v[a])
            goto fail;
    }
    for (int i = 0; i < kv->n_blocks; i++)
        kv->free_list[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    for (int s = 0; s < n_seq_max; s++) {
        kv->seqs[s].blocks = malloc(sizeof(int) * (size_t)kv->max_blocks_per_seq);
        kv->seqs[s].conv = calloc(kv_conv_floats(kv) + 1, sizeof(float));
        if (!kv->seqs[s].blocks || !kv->seqs[s].conv)
            goto fail;
    }
    *out = kv;
    return 0;
fail:
    kv_free(kv);
    return EXSA_ENOMEM;
}

void kv_free(struct kv_cache *kv)
{
    if (!kv)
        return;
    for (int a = 0; kv->k && a < kv->n_attn; a++) {
        free(kv->k[a]);
        free(kv->v[a]);
    }
    for (int s = 0; kv->seqs && s < kv->n_seq_max; s++) {
        free(kv->seqs[s].blocks);
        free(kv->seqs[s].conv);
    }
    free(kv->k);
    free(kv->v);
    free(kv->seqs);
    free(kv->free_list);
    free(kv);
}

size_t kv_conv_floats(const struct kv_cache *kv)
{
    return (size_t)kv->n_conv * (size_t)kv->dim * (size_t)(kv->l_cache - 1);
}

float *kv_conv_state(struct kv_cache *kv, int seq, int conv_idx)
{
    return kv->seqs[seq].conv + (size_t)conv_idx * kv->dim * (kv->l_cache - 1);
}

bool kv_seq_valid(const struct kv_cache *kv, int seq)
{
    return seq >= 0 && seq < kv->n_seq_max && kv->seqs[seq].used;
}

int kv_seq_new(struct kv_cache *kv)
{
    for (int s = 0; s < kv->n_seq_max; s++) {
        struct kv_seq *q = &kv->seqs[s];
        if (!q->used) {
            q->used = true;
            q->len = 0;
            q->n_blocks = 0;
            memset(q->conv, 0, kv_conv_floats(kv) * sizeof(float));
            return s;
        }
    }
    return EXSA_ENOMEM;
}

/* Gives back the blocks past those needed for len positions. */
static void release_blocks(struct kv_cache *kv, struct kv_seq *q, int len)
{
    int keep = (len + KV_BLOCK - 1) / KV_BLOCK;
    while (q->n_blocks > keep)
        kv->free_list[kv->n_free++] = q->blocks[--q->n_blocks];
}

void kv_seq_free(struct kv_cache *kv, int seq)
{
    if (!kv_seq_valid(kv, seq))
        return;
    struct kv_seq *q = &kv->seqs[seq];
    release_blocks(kv, q, 0);
    q->used = false;
    q->len = 0;
}

int kv_reserve(struct kv_cache *kv, int seq, int len)
{
    struct kv_seq *q = &kv->seqs[seq];
    if (len > kv->n_ctx)
        return EXSA_ERANGE;
    int need = (len + KV_BLOCK - 1) / KV_BLOCK - q->n_blocks;
    if (need <= 0)
        return 0;
    if (need > kv->n_free)
        return EXSA_ENOMEM;
    while (need-- > 0)
        q->blocks[q->n_blocks++] = kv->free_list[--kv->n_free];
    return 0;
}

int kv_truncate(struct kv_cache *kv, int seq, int len)
{
    if (!kv_seq_valid(kv, seq) || len < 0 || len > kv->seqs[seq].len)
        return EXSA_EINVAL;
    kv->seqs[seq].len = len;
    release_blocks(kv, &kv->seqs[seq], len);
    return 0;
}

int kv_fork(struct kv_cache *kv, int src)
{
    if (!kv_seq_valid(kv, src))
        return EXSA_EINVAL;
    int dst = kv_seq_new(kv);
    if (dst < 0)
        return dst;
    int len = kv->seqs[src].len;
    if (kv_reserve(kv, dst, len) < 0) {
        kv_seq_free(kv, dst);
        return EXSA_ENOMEM;
    }
    for (int a = 0; a < kv->n_attn; a++) {
        for (int p = 0; p < len; p += KV_BLOCK) {
            int n = len - p < KV_BLOCK ? len - p : KV_BLOCK;
            size_t bytes = (size_t)n * kv->kv_dim * sizeof(float);
            memcpy(kv_k(kv, a, dst, p), kv_k(kv, a, src, p), bytes);
            memcpy(kv_v(kv, a, dst, p), kv_v(kv, a, src, p), bytes);
        }
    }
    memcpy(kv->seqs[dst].conv, kv->seqs[src].conv, kv_conv_floats(kv) * sizeof(float));
    kv->seqs[dst].len = len;
    return dst;
}
