/*
 * step.c: a batch as the backends see it (struct step, backend.h): the step's distinct
 * sequences, each entry's index among them, the entries grouped by sequence, each sequence's
 * conv slots (read the current one, write the other) and block table, and the entries that want
 * output. Host arrays sized once per engine (kvcache.h); kv_commit makes a finished step's
 * lengths and conv states current. Called by engine-step.c and the op tests.
 */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kvcache.h"

int kv_step_buf_init(struct kv_step_buf *b, const struct kv_cache *kv, int n_batch)
{
    memset(b, 0, sizeof(*b));
    size_t nb = (size_t)n_batch + 1, ns = (size_t)kv->n_seq_max + 1;
    size_t nblk = (size_t)kv->n_seq_max * kv->max_blocks_per_seq + 1;
    int32_t **arr[] = {&b->ent_sq, &b->out_rows,   &b->sq_seq,     &b->sq_ent_off,
                       &b->sq_ent, &b->sq_conv_rd, &b->sq_conv_wr, &b->sq_blk_off,
                       &b->blk,    &b->sq_of_seq,  &b->fill};
    size_t len[] = {nb, nb, ns, ns + 1, nb, ns, ns, ns + 1, nblk, ns, ns};
    for (size_t i = 0; i < sizeof(arr) / sizeof(arr[0]); i++)
        if (!(*arr[i] = malloc(sizeof(int32_t) * len[i])))
            return EXSA_ENOMEM;
    return 0;
}

void kv_step_buf_free(struct kv_step_buf *b)
{
    int32_t *arr[] = {b->ent_sq, b->out_rows,   b->sq_seq,     b->sq_ent_off,
                      b->sq_ent, b->sq_conv_rd, b->sq_conv_wr, b->sq_blk_off,
                      b->blk,    b->sq_of_seq,  b->fill};
    for (size_t i = 0; i < sizeof(arr) / sizeof(arr[0]); i++)
        free(arr[i]);
    memset(b, 0, sizeof(*b));
}

/* The step's sequences in order of first appearance, each entry's index among them, and the
 * entries grouped by sequence (a counting sort: batch order is position order within one). */
static int group_sequences(const struct kv_cache *kv, struct kv_step_buf *b, int n,
                           const int32_t *seq)
{
    int n_sq = 0;
    for (int s = 0; s < kv->n_seq_max; s++)
        b->sq_of_seq[s] = -1;
    for (int i = 0; i < n; i++) {
        if (b->sq_of_seq[seq[i]] < 0) {
            b->sq_of_seq[seq[i]] = n_sq;
            b->sq_seq[n_sq++] = seq[i];
        }
        b->ent_sq[i] = b->sq_of_seq[seq[i]];
    }
    memset(b->sq_ent_off, 0, sizeof(int32_t) * (size_t)(n_sq + 1));
    for (int i = 0; i < n; i++)
        b->sq_ent_off[b->ent_sq[i] + 1]++;
    for (int j = 0; j < n_sq; j++)
        b->sq_ent_off[j + 1] += b->sq_ent_off[j];
    memcpy(b->fill, b->sq_ent_off, sizeof(int32_t) * (size_t)n_sq);
    for (int i = 0; i < n; i++)
        b->sq_ent[b->fill[b->ent_sq[i]]++] = i;
    return n_sq;
}

void kv_step_build(const struct kv_cache *kv, struct kv_step_buf *b, int n, const int32_t *tok,
                   const int32_t *pos, const int32_t *seq, const uint8_t *want, struct step *st)
{
    const int n_sq = group_sequences(kv, b, n, seq);
    int n_out = 0, nb = 0;
    for (int i = 0; i < n; i++)
        if (want ? want[i] != 0 : i == n - 1)
            b->out_rows[n_out++] = i;
    for (int j = 0; j < n_sq; j++) {
        const struct kv_seq *q = &kv->seqs[b->sq_seq[j]];
        b->sq_conv_rd[j] = kv_conv_slot(kv, b->sq_seq[j], 0);
        b->sq_conv_wr[j] = kv_conv_slot(kv, b->sq_seq[j], 1);
        b->sq_blk_off[j] = nb;
        memcpy(b->blk + nb, q->blocks, sizeof(int32_t) * (size_t)q->n_blocks);
        nb += q->n_blocks;
    }
    b->sq_blk_off[n_sq] = nb;
    *st = (struct step){
        .n = n,
        .tok = tok,
        .pos = pos,
        .seq = seq,
        .ent_sq = b->ent_sq,
        .n_out = n_out,
        .out_rows = b->out_rows,
        .n_sq = n_sq,
        .sq_seq = b->sq_seq,
        .sq_ent_off = b->sq_ent_off,
        .sq_ent = b->sq_ent,
        .sq_conv_rd = b->sq_conv_rd,
        .sq_conv_wr = b->sq_conv_wr,
        .sq_blk_off = b->sq_blk_off,
        .blk = b->blk,
    };
}

void kv_commit(struct kv_cache *kv, const struct step *st, const int32_t *len_after)
{
    for (int j = 0; j < st->n_sq; j++) {
        struct kv_seq *q = &kv->seqs[st->sq_seq[j]];
        q->len = len_after[st->sq_seq[j]];
        q->conv_cur ^= 1;
    }
}
