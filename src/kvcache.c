/*
 * kvcache.c: the block pool for attention K/V and the conv states, per sequence (kvcache.h).
 * The tables are host memory; the pools are allocated once at creation in the memory of each
 * layer's backend (zeroed; host pages are only touched when used), so the step loop never
 * allocates. Fork, snapshot and restore move state through those backends. Called by engine.c.
 */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"

static size_t kv_elem_size(int type)
{
    return type == EXSA_DTYPE_F16 ? 2 : 4;
}

/* Shapes shared by kv_create and kv_bytes_for. */
struct kv_shape {
    int n_blocks, kv_dim;
    size_t conv_slot_floats;
};

static struct kv_shape shape_of(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens)
{
    struct kv_shape s = {0};
    for (int l = 0; l < hp->n_layers; l++)
        if (hp->n_kv_heads[l] > 0)
            s.kv_dim = hp->n_kv_heads[l] * hp->head_dim;
    long tokens = n_kv_tokens > 0 ? n_kv_tokens : (long)n_seq_max * n_ctx;
    s.n_blocks = (int)((tokens + KV_BLOCK - 1) / KV_BLOCK);
    s.conv_slot_floats = (size_t)hp->dim * (size_t)(hp->l_cache - 1);
    return s;
}

size_t kv_bytes_for(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens,
                    struct backend *const *layer_be, const int *kv_type, const struct backend *be)
{
    struct kv_shape s = shape_of(hp, n_seq_max, n_ctx, n_kv_tokens);
    size_t bytes = 0;
    for (int l = 0; l < hp->n_layers; l++) {
        if (layer_be[l] != be)
            continue;
        if (hp->n_kv_heads[l] > 0)
            bytes += 2 * (size_t)s.n_blocks * KV_BLOCK * s.kv_dim * kv_elem_size(kv_type[l]);
        else
            bytes += 2 * (size_t)n_seq_max * s.conv_slot_floats * sizeof(float);
    }
    return bytes;
}

static int alloc_tables(struct kv_cache *kv)
{
    kv->free_list = malloc(sizeof(int) * (size_t)kv->n_blocks);
    kv->k = calloc((size_t)kv->n_attn + 1, sizeof(void *));
    kv->v = calloc((size_t)kv->n_attn + 1, sizeof(void *));
    kv->kv_type = calloc((size_t)kv->n_attn + 1, sizeof(int));
    kv->attn_be = calloc((size_t)kv->n_attn + 1, sizeof(struct backend *));
    kv->conv = calloc((size_t)kv->n_conv + 1, sizeof(float *));
    kv->conv_be = calloc((size_t)kv->n_conv + 1, sizeof(struct backend *));
    kv->seqs = calloc((size_t)kv->n_seq_max, sizeof(struct kv_seq));
    if (!kv->free_list || !kv->k || !kv->v || !kv->kv_type || !kv->attn_be || !kv->conv ||
        !kv->conv_be || !kv->seqs)
        return EXSA_ENOMEM;
    for (int s = 0; s < kv->n_seq_max; s++)
        if (!(kv->seqs[s].blocks = malloc(sizeof(int) * (size_t)kv->max_blocks_per_seq)))
            return EXSA_ENOMEM;
    for (int i = 0; i < kv->n_blocks; i++)
        kv->free_list[i] = kv->n_blocks - 1 - i;
    kv->n_free = kv->n_blocks;
    return 0;
}

/* The pools of every layer, each in its backend's memory. */
static int alloc_pools(struct kv_cache *kv, const struct hparams *hp,
                       struct backend *const *layer_be, const int *kv_type)
{
    const size_t pool = (size_t)kv->n_blocks * KV_BLOCK * (size_t)kv->kv_dim;
    const size_t conv = 2 * (size_t)kv->n_seq_max * kv->dim * (kv->l_cache - 1);
    int a = 0, c = 0;
    for (int l = 0; l < hp->n_layers; l++) {
        struct backend *be = layer_be[l];
        if (hp->n_kv_heads[l] > 0) {
            kv->attn_be[a] = be;
            kv->kv_type[a] = kv_type[l];
            kv->k[a] = be->ops->alloc(be, pool * kv_elem_size(kv_type[l]));
            kv->v[a] = be->ops->alloc(be, pool * kv_elem_size(kv_type[l]));
            if (!kv->k[a] || !kv->v[a++])
                return EXSA_ENOMEM;
        } else {
            kv->conv_be[c] = be;
            if (!(kv->conv[c++] = be->ops->alloc(be, sizeof(float) * (conv + 1))))
                return EXSA_ENOMEM;
        }
    }
    return 0;
}

int kv_create(const struct hparams *hp, int n_seq_max, int n_ctx, int n_kv_tokens,
              struct backend *const *layer_be, const int *kv_type, struct kv_cache **out)
{
    struct kv_cache *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return EXSA_ENOMEM;
    struct kv_shape s = shape_of(hp, n_seq_max, n_ctx, n_kv_tokens);
    kv->dim = hp->dim;
    kv->l_cache = hp->l_cache;
    kv->n_seq_max = n_seq_max;
    kv->n_ctx = n_ctx;
    kv->kv_dim = s.kv_dim;
    kv->n_blocks = s.n_blocks;
    for (int l = 0; l < hp->n_layers; l++)
        *(hp->n_kv_heads[l] > 0 ? &kv->n_attn : &kv->n_conv) += 1;
    kv->max_blocks_per_seq = (n_ctx + KV_BLOCK - 1) / KV_BLOCK;
    if (alloc_tables(kv) < 0 || alloc_pools(kv, hp, layer_be, kv_type) < 0) {
        kv_free(kv);
        return EXSA_ENOMEM;
    }
    *out = kv;
    return 0;
}

void kv_free(struct kv_cache *kv)
{
    if (!kv)
        return;
    for (int a = 0; kv->attn_be && a < kv->n_attn; a++) {
        if (kv->attn_be[a]) {
            kv->attn_be[a]->ops->release(kv->attn_be[a], kv->k[a]);
            kv->attn_be[a]->ops->release(kv->attn_be[a], kv->v[a]);
        }
    }
    for (int c = 0; kv->conv_be && c < kv->n_conv; c++)
        if (kv->conv_be[c])
            kv->conv_be[c]->ops->release(kv->conv_be[c], kv->conv[c]);
    for (int s = 0; kv->seqs && s < kv->n_seq_max; s++)
        free(kv->seqs[s].blocks);
    free(kv->k);
    free(kv->v);
    free(kv->kv_type);
    free(kv->attn_be);
    free(kv->conv);
    free(kv->conv_be);
    free(kv->seqs);
    free(kv->free_list);
    free(kv);
}

size_t kv_conv_floats(const struct kv_cache *kv)
{
    return (size_t)kv->n_conv * (size_t)kv->dim * (size_t)(kv->l_cache - 1);
}

static size_t slot_bytes(const struct kv_cache *kv)
{
    return sizeof(float) * (size_t)kv->dim * (size_t)(kv->l_cache - 1);
}

bool kv_seq_valid(const struct kv_cache *kv, int seq)
{
    return seq >= 0 && seq < kv->n_seq_max && kv->seqs[seq].used;
}

int kv_seq_new(struct kv_cache *kv)
{
    for (int s = 0; s < kv->n_seq_max; s++) {
        struct kv_seq *q = &kv->seqs[s];
        if (q->used)
            continue;
        q->conv_cur = 0;
        for (int c = 0; c < kv->n_conv; c++) {
            struct backend *be = kv->conv_be[c];
            int rc =
                be->ops->zero(be, kv_conv_state(kv, c, kv_conv_slot(kv, s, 0)), slot_bytes(kv));
            if (rc < 0)
                return rc;
        }
        q->used = true;
        q->len = 0;
        q->n_blocks = 0;
        return s;
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

/* K and V rows of positions [0, len) of src into dst's blocks, layer by layer. */
static int copy_kv(struct kv_cache *kv, int dst, int src, int len)
{
    for (int a = 0; a < kv->n_attn; a++) {
        struct backend *be = kv->attn_be[a];
        const size_t row = (size_t)kv->kv_dim * kv_elem_size(kv->kv_type[a]);
        for (int p = 0; p < len; p += KV_BLOCK) {
            const int n = len - p < KV_BLOCK ? len - p : KV_BLOCK;
            const size_t bd = (size_t)kv->seqs[dst].blocks[p / KV_BLOCK] * KV_BLOCK * row;
            const size_t bs = (size_t)kv->seqs[src].blocks[p / KV_BLOCK] * KV_BLOCK * row;
            int rc = be->ops->copy(be, (char *)kv->k[a] + bd, (char *)kv->k[a] + bs, n * row);
            if (rc == 0)
                rc = be->ops->copy(be, (char *)kv->v[a] + bd, (char *)kv->v[a] + bs, n * row);
            if (rc < 0)
                return rc;
        }
    }
    for (int c = 0; c < kv->n_conv; c++) {
        struct backend *be = kv->conv_be[c];
        int rc = be->ops->copy(be, kv_conv_state(kv, c, kv_conv_slot(kv, dst, 0)),
                               kv_conv_state(kv, c, kv_conv_slot(kv, src, 0)), slot_bytes(kv));
        if (rc < 0)
            return rc;
    }
    return 0;
}

int kv_fork(struct kv_cache *kv, int src)
{
    if (!kv_seq_valid(kv, src))
        return EXSA_EINVAL;
    int dst = kv_seq_new(kv);
    if (dst < 0)
        return dst;
    int len = kv->seqs[src].len, rc = kv_reserve(kv, dst, len);
    if (rc == 0)
        rc = copy_kv(kv, dst, src, len);
    if (rc < 0) {
        kv_seq_free(kv, dst);
        return rc;
    }
    kv->seqs[dst].len = len;
    return dst;
}

int kv_snapshot(struct kv_cache *kv, int seq, struct exsa_snapshot **out)
{
    if (!kv_seq_valid(kv, seq))
        return EXSA_EINVAL;
    struct exsa_snapshot *s = calloc(1, sizeof(*s));
    const size_t nf = kv_conv_floats(kv), per = slot_bytes(kv) / sizeof(float);
    if (!s || !(s->conv = malloc(sizeof(float) * (nf + 1)))) {
        free(s);
        return EXSA_ENOMEM;
    }
    s->len = kv->seqs[seq].len;
    s->conv_floats = nf;
    for (int c = 0; c < kv->n_conv; c++) {
        struct backend *be = kv->conv_be[c];
        int rc = be->ops->download(be, s->conv + c * per,
                                   kv_conv_state(kv, c, kv_conv_slot(kv, seq, 0)), per * 4);
        if (rc < 0) {
            exsa_snapshot_free(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

int kv_restore(struct kv_cache *kv, int seq, const struct exsa_snapshot *s)
{
    if (!kv_seq_valid(kv, seq) || !s || s->conv_floats != kv_conv_floats(kv) ||
        s->len > kv->seqs[seq].len)
        return EXSA_EINVAL;
    const size_t per = slot_bytes(kv) / sizeof(float);
    for (int c = 0; c < kv->n_conv; c++) {
        struct backend *be = kv->conv_be[c];
        int rc = be->ops->upload(be, kv_conv_state(kv, c, kv_conv_slot(kv, seq, 0)),
                                 s->conv + c * per, per * 4);
        if (rc < 0)
            return rc;
    }
    return kv_truncate(kv, seq, s->len);
}

/* ---- K/V rows in host memory ---------------------------------------------------------------- */

size_t kv_plane_bytes(const struct kv_cache *kv, int plane)
{
    return (size_t)kv->kv_dim * kv_elem_size(kv->kv_type[plane / 2]);
}

size_t kv_row_bytes(const struct kv_cache *kv)
{
    size_t b = 0;
    for (int i = 0; i < 2 * kv->n_attn; i++)
        b += kv_plane_bytes(kv, i);
    return b;
}

/* Moves rows [p0, p0 + n) of seq between the pools and host buf (kv_export's layout), one
 * backend call per plane and block: rows of one block are contiguous in a pool. */
static int move_rows(struct kv_cache *kv, int seq, int p0, int n, char *buf, bool to_host)
{
    const int *blocks = kv->seqs[seq].blocks;
    for (int i = 0; i < 2 * kv->n_attn; i++) {
        struct backend *be = kv->attn_be[i / 2];
        char *pool = i % 2 ? kv->v[i / 2] : kv->k[i / 2];
        const size_t row = kv_plane_bytes(kv, i);
        for (int p = p0; p < p0 + n;) {
            const int in_blk = KV_BLOCK - p % KV_BLOCK, left = p0 + n - p;
            const int m = in_blk < left ? in_blk : left;
            char *dev = pool + ((size_t)blocks[p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK) * row;
            char *host = buf + (size_t)(p - p0) * row;
            int rc = to_host ? be->ops->download(be, host, dev, (size_t)m * row)
                             : be->ops->upload(be, dev, host, (size_t)m * row);
            if (rc < 0)
                return rc;
            p += m;
        }
        buf += (size_t)n * row;
    }
    return 0;
}

int kv_export(struct kv_cache *kv, int seq, int p0, int n, void *dst)
{
    if (!kv_seq_valid(kv, seq) || p0 < 0 || n < 0 || p0 + n > kv->seqs[seq].len)
        return EXSA_EINVAL;
    return move_rows(kv, seq, p0, n, dst, true);
}

int kv_import(struct kv_cache *kv, int seq, int n, const void *src)
{
    if (!kv_seq_valid(kv, seq) || n < 0)
        return EXSA_EINVAL;
    struct kv_seq *q = &kv->seqs[seq];
    const int p0 = q->len;
    int rc = kv_reserve(kv, seq, p0 + n);
    if (rc == 0)
        rc = move_rows(kv, seq, p0, n, (char *)src, false);
    if (rc < 0) {
        release_blocks(kv, q, p0);
        return rc;
    }
    q->len = p0 + n;
    return 0;
}
