/*
 * kvcache.h: per-sequence state for one model. Attention layers keep K and V in one pool of
 * fixed-size blocks (KV_BLOCK positions each) handed out to sequences as they grow; a sequence's
 * block table maps position p to block blocks[p / KV_BLOCK]. Short-conv layers keep a rolling
 * state of (l_cache - 1) gated inputs per channel, layout [dim][l_cache - 1], oldest first.
 *
 * The tables (blocks, lengths) live on the host; each layer's K/V pool and conv states live in
 * the memory of the backend that runs that layer and are only touched through it. Each
 * sequence has two conv slots: a step reads the current one and writes the other, and the
 * engine flips `conv_cur` only when the whole step succeeded, so a failed step leaves every
 * sequence as it was. Owned by an engine (the scheduler owns the engine); not thread-safe.
 * Invariant: positions 0..len-1 of a used sequence have blocks; a new sequence has zero state.
 */
#ifndef EXSA_KVCACHE_H
#define EXSA_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define KV_BLOCK 64

struct backend;

struct kv_seq {
    bool used;
    int len;      /* positions filled */
    int n_blocks; /* blocks held */
    int *blocks;  /* max_blocks_per_seq entries */
    int conv_cur; /* 0 or 1: which of the sequence's two conv slots holds its state */
};

struct kv_cache {
    int n_attn, n_conv, dim, l_cache;
    int kv_dim; /* n_kv_heads x head_dim (the same for every attention layer) */
    int n_seq_max, n_ctx, max_blocks_per_seq;
    int n_blocks, n_free;
    int *free_list;           /* n_free block ids */
    void **k, **v;            /* per attention layer: n_blocks x KV_BLOCK x kv_dim of kv_type[a] */
    int *kv_type;             /* per attention layer: EXSA_DTYPE_F32 or EXSA_DTYPE_F16 */
    struct backend **attn_be; /* per attention layer: the backend whose memory holds k, v */
    float **conv;             /* per conv layer: 2 n_seq_max slots x dim x (l_cache - 1) f32 */
    struct backend **conv_be; /* per conv layer */
    struct kv_seq *seqs;
};

struct exsa_snapshot {
    int len;
    size_t conv_floats;
    float *conv; /* n_conv x dim x (l_cache - 1), host */
};

/* layer_be[l] is the backend of model layer l and kv_type[l] the K/V element type of an
 * attention layer (EXSA_DTYPE_F32 or F16, which that backend must support). n_kv_tokens: pool
 * capacity in positions over all sequences (0: n_seq_max x n_ctx). */
int kv_create(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens,
              struct backend *const *layer_be, const int *kv_type, struct kv_cache **out);
void kv_free(struct kv_cache *kv);
/* Bytes of backend memory the cache takes for layers run by be (for sizing a device). */
size_t kv_bytes_for(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens,
                    struct backend *const *layer_be, const int *kv_type, const struct backend *be);
/* id >= 0, or EXSA_ENOMEM (no free sequence) or a backend error (zeroing its state). */
int kv_seq_new(struct kv_cache *kv);
void kv_seq_free(struct kv_cache *kv, int seq);
bool kv_seq_valid(const struct kv_cache *kv, int seq);
/* Makes sure positions [0, len) of seq have blocks; on failure nothing changes. */
int kv_reserve(struct kv_cache *kv, int seq, int len);
int kv_fork(struct kv_cache *kv, int src);
int kv_truncate(struct kv_cache *kv, int seq, int len);
size_t kv_conv_floats(const struct kv_cache *kv);
/* Slot index of seq's conv state: which 0 is the current state, 1 the one a step writes. */
static inline int kv_conv_slot(const struct kv_cache *kv, int seq, int which)
{
    return 2 * seq + (kv->seqs[seq].conv_cur ^ which);
}
/* Conv state of conv layer c in slot `slot` (backend memory): dim x (l_cache - 1) floats. */
static inline float *kv_conv_state(const struct kv_cache *kv, int c, int slot)
{
    return kv->conv[c] + (size_t)slot * kv->dim * (kv->l_cache - 1);
}
int kv_snapshot(struct kv_cache *kv, int seq, struct exsa_snapshot **out);
int kv_restore(struct kv_cache *kv, int seq, const struct exsa_snapshot *s);

/* ---- K/V rows in host memory (the prompt cache, pcache.c) ---------------------------------- */

/* Host layout of n rows (kv_export, kv_import): 2 n_attn planes in order (attention layer a:
 * plane 2a its K rows, plane 2a + 1 its V rows), each n rows of kv_plane_bytes(kv, plane)
 * bytes, the pool's element type as is (f32, or f16 on a GPU layer). */
size_t kv_plane_bytes(const struct kv_cache *kv, int plane);
size_t kv_row_bytes(const struct kv_cache *kv); /* one position over every plane */
/* Copies positions [p0, p0 + n) of seq to host dst (n x kv_row_bytes bytes). */
int kv_export(struct kv_cache *kv, int seq, int p0, int n, void *dst);
/* Appends n positions to seq from host src (kv_export's layout): reserves their blocks,
 * uploads the rows, and sets the length; the conv state is not touched (restore a snapshot of
 * the new length next). On failure seq keeps its length. */
int kv_import(struct kv_cache *kv, int seq, int n, const void *src);

/* ---- steps (step.c): a batch as the backends see it ---------------------------------------- */

struct step;

/* Host arrays a struct step points into, sized once for the largest batch. */
struct kv_step_buf {
    int32_t *ent_sq, *out_rows, *sq_seq, *sq_ent_off, *sq_ent, *sq_conv_rd, *sq_conv_wr;
    int32_t *sq_blk_off, *blk, *sq_of_seq, *fill;
};
int kv_step_buf_init(struct kv_step_buf *b, const struct kv_cache *kv, int n_batch);
void kv_step_buf_free(struct kv_step_buf *b);
/* Fills st (pointing into b and the caller's arrays) for n entries whose positions continue
 * their sequences and whose KV blocks are reserved. want[i]: entry i wants output (NULL: only
 * the last entry). */
void kv_step_build(const struct kv_cache *kv, struct kv_step_buf *b, int n, const int32_t *tok,
                   const int32_t *pos, const int32_t *seq, const uint8_t *want, struct step *st);
/* After every backend finished st without error: each sequence of st has len_after[seq]
 * positions and the conv state the step wrote. */
void kv_commit(struct kv_cache *kv, const struct step *st, const int32_t *len_after);

/* K / V row (kv_dim f32) of attention layer a at (seq, pos) of an f32 pool in host memory (the
 * CPU backends'); pos must have a block. */
static inline float *kv_k(struct kv_cache *kv, int a, int seq, int pos)
{
    int b = kv->seqs[seq].blocks[pos / KV_BLOCK];
    return (float *)kv->k[a] + ((size_t)b * KV_BLOCK + pos % KV_BLOCK) * kv->kv_dim;
}
static inline float *kv_v(struct kv_cache *kv, int a, int seq, int pos)
{
    int b = kv->seqs[seq].blocks[pos / KV_BLOCK];
    return (float *)kv->v[a] + ((size_t)b * KV_BLOCK + pos % KV_BLOCK) * kv->kv_dim;
}

#endif
