/*
 * backend-cuda.cu: the CUDA backend's life and memory: creation on device 0 (stream, cuBLAS, every
 * scratch buffer sized once from the backend config), device memory ops, weights uploaded in
 * the GPU layouts of cuda.h (tied tensors shared, unsupported types converted to Q8_0 with a
 * note on stderr), and the step: begin copies the step's arrays to pinned memory, ops are
 * recorded, end runs them - replaying a captured CUDA graph when the same op list (same
 * shapes, same buffers) was seen before, else eagerly - then waits once, finishes the
 * downloads and returns the step's first error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda/cuda.h"

/* ---- errors --------------------------------------------------------------------------------- */

void cu_fail(struct cuda_be *c, int code, const char *what, cudaError_t e)
{
    if (c->err)
        return;
    c->err = code;
    snprintf(c->errmsg, sizeof c->errmsg, "%s: %s", what,
             e == cudaSuccess ? "failed" : cudaGetErrorString(e));
    fprintf(stderr, "exsa: cuda: %s\n", c->errmsg);
}

void cu_check_launch(struct cuda_be *c, const char *what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        cu_fail(c, EXSA_EIO, what, e);
}

static int check(struct cuda_be *c, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 0;
    int code = e == cudaErrorMemoryAllocation ? EXSA_ENOMEM : EXSA_EIO;
    cu_fail(c, code, what, e);
    return code;
}

void cu_launch_cfg(struct cuda_be *c, struct cu_launch *l, dim3 grid, dim3 block, size_t smem)
{
    *l = cu_launch{};
    l->cfg.gridDim = grid;
    l->cfg.blockDim = block;
    l->cfg.dynamicSmemBytes = smem;
    l->cfg.stream = c->stream;
    if (c->pdl) {
        l->attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        l->attr[0].val.programmaticStreamSerializationAllowed = 1;
        l->cfg.attrs = l->attr;
        l->cfg.numAttrs = 1;
    }
}

/* ---- memory --------------------------------------------------------------------------------- */

void *cu_alloc(struct backend *be, size_t bytes)
{
    struct cuda_be *c = CB(be);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 16) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: clear it */
        return NULL;
    }
    if (cudaMemsetAsync(p, 0, bytes, c->stream) != cudaSuccess ||
        cudaStreamSynchronize(c->stream) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

void cu_release(struct backend *be, void *p)
{
    if (p)
        cudaFree(p);
}

struct PACKED copy_args {
    void *dst;
    const void *src;
    size_t bytes;
    cudaMemcpyKind kind;
};

static void run_copy(struct cuda_be *c, const void *args)
{
    const struct copy_args *a = (const struct copy_args *)args;
    check(c, cudaMemcpyAsync(a->dst, a->src, a->bytes, a->kind, c->stream), "copy");
}

/* A copy on the work stream, complete on return; its error, if any. */
static int sync_copy(struct cuda_be *c, void *dst, const void *src, size_t bytes,
                     cudaMemcpyKind kind, const char *what)
{
    int rc = check(c, cudaMemcpyAsync(dst, src, bytes, kind, c->stream), what);
    if (!rc)
        rc = check(c, cudaStreamSynchronize(c->stream), what);
    c->err = 0;
    return rc;
}

/* Reserves bytes of a pinned staging area (16-byte aligned); NULL when it is full. */
static unsigned char *stage(unsigned char *base, size_t cap, size_t *used, size_t bytes)
{
    size_t at = (*used + 15) & ~(size_t)15;
    if (at + bytes > cap)
        return NULL;
    *used = at + bytes;
    return base + at;
}

int cu_upload(struct backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_be *c = CB(be);
    if (!c->in_step) /* on the work stream: ordered with every step */
        return sync_copy(c, dst, src, bytes, cudaMemcpyHostToDevice, "upload");
    cu_touch(c, NULL, dst);
    unsigned char *s = stage(c->stage_in, c->stage_in_bytes, &c->stage_in_used, bytes);
    if (!s || c->n_pre >= c->max_copies) {
        cu_fail(c, EXSA_ENOMEM, "upload: the step's staging area is full", cudaSuccess);
        return EXSA_ENOMEM;
    }
    c->pre[c->n_pre++] = (struct host_copy){s, src, bytes};
    struct copy_args a = {dst, s, bytes, cudaMemcpyHostToDevice};
    cu_record(c, run_copy, "copy", &a, sizeof a);
    return 0;
}

int cu_download(struct backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_be *c = CB(be);
    if (!c->in_step)
        return sync_copy(c, dst, src, bytes, cudaMemcpyDeviceToHost, "download");
    cu_touch(c, src, NULL);
    unsigned char *s = stage(c->stage_out, c->stage_out_bytes, &c->stage_out_used, bytes);
    if (!s || c->n_post >= c->max_copies) {
        /* too large for staging: straight into pageable memory (that step runs eagerly) */
        struct copy_args a = {dst, src, bytes, cudaMemcpyDeviceToHost};
        cu_record(c, run_copy, "copy", &a, sizeof a);
        c->stage_out_used = c->stage_out_bytes + 1; /* marks the step as not for a graph */
        return 0;
    }
    c->post[c->n_post++] = (struct host_copy){dst, s, bytes};
    struct copy_args a = {s, src, bytes, cudaMemcpyDeviceToHost};
    cu_record(c, run_copy, "copy", &a, sizeof a);
    return 0;
}

int cu_copy(struct backend *be, void *dst, const void *src, size_t bytes)
{
    struct cuda_be *c = CB(be);
    if (!c->in_step)
        return sync_copy(c, dst, src, bytes, cudaMemcpyDeviceToDevice, "copy");
    cu_touch(c, src, dst);
    struct copy_args a = {dst, src, bytes, cudaMemcpyDeviceToDevice};
    cu_record(c, run_copy, "copy", &a, sizeof a);
    return 0;
}

struct PACKED zero_args {
    void *dst;
    size_t bytes;
};

static void run_zero(struct cuda_be *c, const void *args)
{
    const struct zero_args *a = (const struct zero_args *)args;
    check(c, cudaMemsetAsync(a->dst, 0, a->bytes, c->stream), "zero");
}

int cu_zero(struct backend *be, void *dst, size_t bytes)
{
    struct cuda_be *c = CB(be);
    if (c->in_step)
        cu_touch(c, NULL, dst);
    struct zero_args a = {dst, bytes};
    cu_record(c, run_zero, "zero", &a, sizeof a);
    if (c->in_step)
        return 0;
    check(c, cudaStreamSynchronize(c->stream), "zero");
    int rc = c->err;
    c->err = 0;
    return rc;
}

/* ---- weights ---------------------------------------------------------------------------------- */

static int gtype_of(int type)
{
    switch (type) {
    case EXSA_DTYPE_F32: return GT_F32;
    case EXSA_DTYPE_F16: return GT_F16;
    case EXSA_DTYPE_BF16: return GT_BF16;
    case EXSA_DTYPE_Q8_0: return GT_Q8_0;
    case EXSA_DTYPE_Q4_0: return GT_Q4_0;
    case EXSA_DTYPE_Q4_K: return GT_Q4_K;
    case EXSA_DTYPE_Q5_K: return GT_Q5_K;
    case EXSA_DTYPE_Q6_K: return GT_Q6_K;
    default: return -1;
    }
}

/* Types whose file layout the kernels read as it is. */
static bool gt_is_native(int gt)
{
    return gt == GT_F32 || gt == GT_F16 || gt == GT_BF16 || gt == GT_Q4_K || gt == GT_Q5_K;
}

/* Bytes of body and scales per row of K values in layout gt. */
static void layout_of(int gt, int64_t K, size_t *q_row, int *d_row)
{
    static const int per256[GT_COUNT] = {1024, 512, 512, 256, 128, 144, 176, Q6_BODY};
    *q_row = (size_t)(K / 256) * per256[gt] + (size_t)(K % 256) * per256[gt] / 256;
    *d_row = gt == GT_Q8_0 || gt == GT_Q4_0 ? (int)(K / 32) : gt == GT_Q6_K ? (int)(K / 256) : 0;
}

/* One row of K f32 values as Q8_0 split (K / 32 blocks: int8 values, fp16 scales). */
static void quantize_row_q8(const float *x, int64_t K, int8_t *q, uint16_t *d)
{
    for (int64_t b = 0; b < K / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[32 * b + i]));
        const float s = amax / 127, inv = s > 0 ? 1 / s : 0;
        for (int i = 0; i < 32; i++)
            q[32 * b + i] = (int8_t)lrintf(x[32 * b + i] * inv);
        d[b] = f32_to_fp16(s);
    }
}

/* Host bytes of rows in GPU layout: body into q (q_row per row), scales into d. */
static int repack_rows(const struct tensor *t, int gt, int64_t K, int64_t r0, int64_t nr,
                       uint8_t *q, uint16_t *d, size_t q_row, int d_row, float *tmp)
{
    const size_t src_row = dtype_row_size(t->type, K);
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *src = (const uint8_t *)t->data + (size_t)r * src_row;
        uint8_t *qd = q + (size_t)(r - r0) * q_row;
        uint16_t *dd = d ? d + (size_t)(r - r0) * d_row : NULL;
        if (gt_is_native(gt) && gtype_of(t->type) == gt) {
            memcpy(qd, src, src_row);
        } else if (gt == GT_Q8_0 && t->type == EXSA_DTYPE_Q8_0) {
            for (int64_t b = 0; b < K / 32; b++) {
                memcpy(dd + b, src + 34 * b, 2);
                memcpy(qd + 32 * b, src + 34 * b + 2, 32);
            }
        } else if (gt == GT_Q4_0) {
            for (int64_t b = 0; b < K / 32; b++) {
                memcpy(dd + b, src + 18 * b, 2);
                memcpy(qd + 16 * b, src + 18 * b + 2, 16);
            }
        } else if (gt == GT_Q6_K) {
            for (int64_t b = 0; b < K / 256; b++) {
                memcpy(qd + Q6_BODY * b, src + 210 * b, Q6_BODY);
                memcpy(dd + b, src + 210 * b + Q6_BODY, 2);
            }
        } else { /* any other type: dequantize, then Q8_0 */
            if (dequantize_row(t->type, src, tmp, K) < 0)
                return EXSA_EUNSUPPORTED;
            quantize_row_q8(tmp, K, (int8_t *)qd, dd);
        }
    }
    return 0;
}

#define UPLOAD_CHUNK ((size_t)64 << 20) /* bytes of body repacked per host-to-device copy */

static void warn_converted(const struct tensor *t)
{
    static bool said[EXSA_DTYPE_COUNT];
    if (t->type >= 0 && t->type < EXSA_DTYPE_COUNT && !said[t->type]) {
        said[t->type] = true;
        const struct dtype_info *di = dtype_info(t->type);
        fprintf(stderr,
                "exsa: cuda: tensors of type %s (%s first) have no GPU kernel: "
                "converted to Q8_0 at load\n",
                di ? di->name : "?", t->name ? t->name : "?");
    }
}

/* Repacks and copies the rows of t into w in chunks through a pinned buffer. */
static int upload_rows(struct cuda_be *c, const struct tensor *t, struct dweight *w)
{
    const int64_t rows_per =
        (int64_t)(UPLOAD_CHUNK / w->q_row) > 0 ? (int64_t)(UPLOAD_CHUNK / w->q_row) : 1;
    const int64_t chunk = rows_per < w->rows ? rows_per : w->rows;
    uint8_t *hq = NULL;
    uint16_t *hd = NULL;
    float *tmp = (float *)malloc(sizeof(float) * (size_t)w->K);
    int rc = tmp ? 0 : EXSA_ENOMEM;
    if (!rc)
        rc = check(c, cudaMallocHost((void **)&hq, (size_t)chunk * w->q_row), "pinned buffer");
    if (!rc && w->d_row)
        rc = check(c, cudaMallocHost((void **)&hd, (size_t)chunk * w->d_row * 2), "pinned");
    for (int64_t r = 0; !rc && r < w->rows; r += chunk) {
        const int64_t nr = w->rows - r < chunk ? w->rows - r : chunk;
        rc = repack_rows(t, w->gt, w->K, r, nr, hq, hd, w->q_row, w->d_row, tmp);
        if (!rc)
            rc = check(c,
                       cudaMemcpy(w->q + (size_t)r * w->q_row, hq, (size_t)nr * w->q_row,
                                  cudaMemcpyHostToDevice),
                       "weight upload");
        if (!rc && w->d_row)
            rc = check(c,
                       cudaMemcpy(w->d + (size_t)r * w->d_row, hd, (size_t)nr * w->d_row * 2,
                                  cudaMemcpyHostToDevice),
                       "weight upload");
    }
    cudaFreeHost(hq);
    cudaFreeHost(hd);
    free(tmp);
    return rc;
}

static struct dweight *find_shared(struct cuda_be *c, const struct tensor *t)
{
    for (int i = 0; i < c->n_w; i++)
        if (c->wlist[i] && c->wlist[i]->host == t->data && c->wlist[i]->refs > 0)
            return c->wlist[i];
    return NULL;
}

static int keep(struct cuda_be *c, struct dweight *w)
{
    if (c->n_w == c->max_w) {
        int cap = c->max_w ? 2 * c->max_w : 256;
        struct dweight **l = (struct dweight **)realloc(c->wlist, sizeof(*l) * (size_t)cap);
        if (!l)
            return EXSA_ENOMEM;
        c->wlist = l, c->max_w = cap;
    }
    c->wlist[c->n_w++] = w;
    return 0;
}

int cu_prepare(struct backend *be, struct tensor *t)
{
    struct cuda_be *c = CB(be);
    struct dweight *w = find_shared(c, t);
    if (w) { /* a tied tensor: the same bytes are already on the device */
        w->refs++;
        t->be_data = w;
        return 0;
    }
    int gt = gtype_of(t->type);
    const int64_t K = t->ne[0];
    if (gt < 0) {
        warn_converted(t);
        gt = GT_Q8_0;
    }
    if (gt != GT_F32 && gt != GT_F16 && gt != GT_BF16 && K % (gt >= GT_Q4_K ? 256 : 32)) {
        fprintf(stderr, "exsa: cuda: tensor %s: row length %lld does not fit its blocks\n", t->name,
                (long long)K);
        return EXSA_EFORMAT;
    }
    if (!(w = (struct dweight *)calloc(1, sizeof *w)))
        return EXSA_ENOMEM;
    w->gt = gt, w->K = K, w->N = t->n_dims >= 2 ? t->ne[1] : 1;
    w->rows = w->N * (t->n_dims >= 3 ? t->ne[2] : 1);
    w->host = t->data, w->refs = 1;
    layout_of(gt, K, &w->q_row, &w->d_row);
    int rc = check(c, cudaMalloc((void **)&w->q, (size_t)w->rows * w->q_row), "weights");
    if (!rc && w->d_row)
        rc = check(c, cudaMalloc((void **)&w->d, (size_t)w->rows * w->d_row * 2), "weights");
    if (!rc)
        rc = upload_rows(c, t, w);
    if (!rc)
        rc = keep(c, w);
    if (rc) {
        cudaFree(w->q), cudaFree(w->d), free(w);
        c->err = 0; /* the engine reports the failure; later steps start clean */
        return rc;
    }
    t->be_data = w;
    return 0;
}

/* Forgets every captured graph. A step's key hashes its ops' argument bytes, which hold the
 * host addresses of weights (struct dweight), not their device buffers: once a weight is freed,
 * a new one at the same host address would replay a graph that reads the old buffers. */
static void forget_graphs(struct cuda_be *c)
{
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        if (c->graphs[i].exec)
            cudaGraphExecDestroy(c->graphs[i].exec);
        c->graphs[i] = (struct graph_entry){0, 0, NULL, 0};
    }
}

void cu_unprepare(struct backend *be, struct tensor *t)
{
    struct cuda_be *c = CB(be);
    struct dweight *w = (struct dweight *)t->be_data;
    if (!w || --w->refs > 0)
        return;
    forget_graphs(c);
    for (int i = 0; i < c->n_w; i++)
        if (c->wlist[i] == w)
            c->wlist[i] = NULL;
    cudaFree(w->q);
    cudaFree(w->d);
    free(w);
}

/* ---- the step --------------------------------------------------------------------------------- */

/* Doubles the op list (a deterministic prefill records a product per few tokens); at most
 * OPS_CAP ops a step. */
#define OPS_CAP (1 << 18)
static int grow_ops(struct cuda_be *c)
{
    if (c->max_ops >= OPS_CAP)
        return -1;
    struct op *o = (struct op *)realloc(c->ops, sizeof(struct op) * 2 * (size_t)c->max_ops);
    if (!o)
        return -1;
    c->ops = o;
    c->max_ops *= 2;
    return 0;
}

void cu_record(struct cuda_be *c, op_fn fn, const char *name, const void *args, size_t size)
{
    if (!c->in_step) { /* outside a step: run now, complete on return (errors in c->err) */
        fn(c, args);
        check(c, cudaStreamSynchronize(c->stream), name);
        return;
    }
    if ((c->n_ops == c->max_ops && grow_ops(c) < 0) || size > OP_ARGS_MAX) {
        cu_fail(c, EXSA_ENOMEM, "too many ops in one step", cudaSuccess);
        return;
    }
    struct op *o = &c->ops[c->n_ops++];
    o->fn = fn;
    o->name = name;
    o->size = (uint16_t)size;
    memcpy(o->args, args, size);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

/* Byte offsets of the step arrays in staging and device memory (fixed: graphs replay them). */
struct ds_layout {
    size_t n_tiles, tok, pos, ent_sq, out_rows, sq_ent, sq_ent_off, conv_rd, conv_wr, blk_off,
        tiles, blk, end;
};

static struct ds_layout ds_layout_of(const struct cuda_be *c)
{
    const size_t nb = (size_t)c->cfg.n_batch + 1, ns = (size_t)c->cfg.n_seq_max + 2;
    const size_t nblk = (size_t)c->cfg.n_seq_max * ((c->cfg.n_ctx + KV_BLOCK - 1) / KV_BLOCK);
    struct ds_layout l;
    size_t o = 0;
#define AT(f, n) (l.f = o, o += ((n)*4 + 15) & ~(size_t)15)
    AT(n_tiles, 1), AT(tok, nb), AT(pos, nb), AT(ent_sq, nb), AT(out_rows, nb), AT(sq_ent, nb);
    AT(sq_ent_off, ns), AT(conv_rd, ns), AT(conv_wr, ns);
    AT(blk_off, ns), AT(tiles, 2 * (size_t)c->n_tiles_max), AT(blk, nblk + 1);
#undef AT
    l.end = o;
    return l;
}

static void put(unsigned char *base, size_t off, const int32_t *src, int n)
{
    if (n > 0)
        memcpy(base + off, src, sizeof(int32_t) * (size_t)n);
}

/* The step's arrays into pinned staging; the tile list of the attention kernels too. */
static size_t stage_step(struct cuda_be *c, const struct step *st)
{
    const struct ds_layout l = ds_layout_of(c);
    unsigned char *b = c->stage_in;
    c->attn_units = st->n <= MMV_MAX_N ? 4 : 8;
    const int32_t n_tiles =
        cu_attn_tiles(st, c->attn_group, c->attn_units, (int32_t *)(b + l.tiles));
    put(b, l.n_tiles, &n_tiles, 1);
    put(b, l.tok, st->tok, st->tok ? st->n : 0);
    put(b, l.pos, st->pos, st->n);
    put(b, l.ent_sq, st->ent_sq, st->n);
    put(b, l.out_rows, st->out_rows, st->n_out);
    put(b, l.sq_ent, st->sq_ent, st->n);
    put(b, l.sq_ent_off, st->sq_ent_off, st->n_sq + 1);
    put(b, l.conv_rd, st->sq_conv_rd, st->n_sq);
    put(b, l.conv_wr, st->sq_conv_wr, st->n_sq);
    put(b, l.blk_off, st->sq_blk_off, st->n_sq + 1);
    put(b, l.blk, st->blk, st->sq_blk_off[st->n_sq]);
    /* a fixed length per (n_sq): the same shape copies the same bytes */
    const size_t per_seq = (size_t)((c->cfg.n_ctx + KV_BLOCK - 1) / KV_BLOCK) * 4;
    return l.blk + (size_t)st->n_sq * per_seq;
}

int cu_begin(struct backend *be, const struct step *st)
{
    struct cuda_be *c = CB(be);
    if (c->in_step || st->n > c->cfg.n_batch || st->n_sq > c->cfg.n_seq_max) {
        cu_fail(c, EXSA_EINVAL, "begin: step larger than the backend was made for", cudaSuccess);
        return EXSA_EINVAL;
    }
    c->err = 0;
    c->n_ops = c->n_pre = c->n_post = 0;
    c->stage_out_used = 0;
    cu_step_reset(c);
    c->n_tok = st->n;
    c->n_sq = st->n_sq;
    if (c->profile)
        c->t_begin = now_us();
    c->in_step = true;
    const size_t bytes = stage_step(c, st);
    c->stage_in_used = c->ds_bytes;
    struct copy_args a = {c->ds_mem, c->stage_in, bytes, cudaMemcpyHostToDevice};
    cu_record(c, run_copy, "copy", &a, sizeof a);
    return 0;
}

/* A 64-bit hash of the op list (functions and argument bytes), 8 bytes at a time: the key of
 * the step's graph, computed on every step, so it must cost little next to the step. */
static uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w * 0x9e3779b97f4a7c15ull;
    h = (h << 27 | h >> 37) * 0xbf58476d1ce4e5b9ull;
    return h;
}

static uint64_t fingerprint(const struct cuda_be *c)
{
    uint64_t h = 0x243f6a8885a308d3ull;
    for (int i = 0; i < c->n_ops; i++) {
        const struct op *o = &c->ops[i];
        uint64_t w;
        memcpy(&w, &o->fn, sizeof w);
        h = mix(h, w ^ o->size);
        size_t k = 0;
        for (; k + 8 <= o->size; k += 8) {
            memcpy(&w, o->args + k, 8);
            h = mix(h, w);
        }
        if (k < o->size) {
            w = 0;
            memcpy(&w, o->args + k, o->size - k);
            h = mix(h, w);
        }
    }
    return h;
}

static void run_ops(struct cuda_be *c)
{
    for (int i = 0; i < c->n_ops && !c->err; i++)
        c->ops[i].fn(c, c->ops[i].args);
}

/* The graph slot of key: found, or the least recently used one taken over. */
static struct graph_entry *slot_of(struct cuda_be *c, uint64_t key)
{
    struct graph_entry *old = &c->graphs[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        if (c->graphs[i].key == key && c->graphs[i].seen)
            return &c->graphs[i];
        if (c->graphs[i].last_use < old->last_use)
            old = &c->graphs[i];
    }
    if (old->exec)
        cudaGraphExecDestroy(old->exec);
    *old = (struct graph_entry){key, 0, NULL, 0};
    return old;
}

/* Captures the op list into g->exec; false (and eager execution) when capture fails. */
static bool capture(struct cuda_be *c, struct graph_entry *g)
{
    cudaGraph_t graph = NULL;
    if (cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    run_ops(c);
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (e == cudaSuccess && !c->err)
        e = cudaGraphInstantiate(&g->exec, graph, 0);
    if (graph)
        cudaGraphDestroy(graph);
    if (e != cudaSuccess || c->err) {
        cudaGetLastError();
        g->exec = NULL;
        c->err = 0;
        return false;
    }
    return true;
}

/* ---- the profile (EXSA_CUDA_PROFILE=1) ----------------------------------------------------- */

static void prof_add(struct cuda_be *c, const char *name, double us)
{
    int i = 0;
    while (i < c->n_prof && strcmp(c->prof[i].name, name))
        i++;
    if (i == c->n_prof) {
        if (c->n_prof == (int)(sizeof c->prof / sizeof c->prof[0]))
            return;
        c->prof[c->n_prof].name = name;
        c->prof[c->n_prof].us = 0;
        c->prof[c->n_prof++].calls = 0;
    }
    c->prof[i].us += us;
    c->prof[i].calls++;
}

/* Eager run with an event after every op; times added per op name after the step's sync. */
static void run_profiled(struct cuda_be *c)
{
    if (c->ev && c->n_ev < c->n_ops + 1) { /* the op list grew */
        for (int i = 0; i < c->n_ev; i++)
            cudaEventDestroy(c->ev[i]);
        free(c->ev);
        c->ev = NULL;
    }
    if (!c->ev) {
        c->ev = (cudaEvent_t *)calloc((size_t)c->max_ops + 1, sizeof(cudaEvent_t));
        c->n_ev = c->ev ? c->max_ops + 1 : 0;
        for (int i = 0; i < c->n_ev; i++)
            cudaEventCreate(&c->ev[i]);
    }
    if (!c->ev)
        return run_ops(c);
    cudaEventRecord(c->ev[0], c->stream);
    for (int i = 0; i < c->n_ops && !c->err; i++) {
        c->ops[i].fn(c, c->ops[i].args);
        cudaEventRecord(c->ev[i + 1], c->stream);
    }
    cudaEventSynchronize(c->ev[c->n_ops]);
    for (int i = 0; i < c->n_ops; i++) {
        float ms = 0;
        cudaEventElapsedTime(&ms, c->ev[i], c->ev[i + 1]);
        prof_add(c, c->ops[i].name, ms * 1000.0);
    }
    c->prof_steps++;
}

static void prof_print(struct cuda_be *c)
{
    if (!c->profile || !c->prof_steps)
        return;
    double total = 0;
    for (int i = 0; i < c->n_prof; i++)
        total += c->prof[i].us;
    fprintf(stderr, "exsa: cuda profile: %.0f steps, GPU %.1f us/step, host record %.1f us/step\n",
            c->prof_steps, total / c->prof_steps, c->prof_host_us / c->prof_steps);
    for (int i = 0; i < c->n_prof; i++)
        fprintf(stderr, "  %-14s %8.1f us/step %6.1f calls/step %7.2f us/call\n", c->prof[i].name,
                c->prof[i].us / c->prof_steps, c->prof[i].calls / c->prof_steps,
                c->prof[i].us / c->prof[i].calls);
}

static void execute(struct cuda_be *c)
{
    if (c->profile) {
        run_profiled(c);
        return;
    }
    const bool graphable =
        c->n_tok <= MMV_MAX_N && c->stage_out_used <= c->stage_out_bytes && c->graphs_on;
    if (!graphable) {
        run_ops(c);
        return;
    }
    struct graph_entry *g = slot_of(c, fingerprint(c));
    g->last_use = ++c->use_clock;
    if (!g->exec && ++g->seen == 2 && !capture(c, g)) {
        run_ops(c); /* cannot capture (an op that is not capturable): eagerly from now on */
        return;
    }
    if (!g->exec) {
        run_ops(c);
        return;
    }
    check(c, cudaGraphLaunch(g->exec, c->stream), "graph launch");
    c->graph_replays++;
}

int cu_end(struct backend *be)
{
    struct cuda_be *c = CB(be);
    if (!c->in_step)
        return 0;
    if (c->profile)
        c->prof_host_us += now_us() - c->t_begin;
    for (int i = 0; i < c->n_pre; i++)
        memcpy(c->pre[i].dst, c->pre[i].src, c->pre[i].bytes);
    if (!c->err)
        execute(c);
    check(c, cudaStreamSynchronize(c->stream), "step");
    for (int i = 0; !c->err && i < c->n_post; i++)
        memcpy(c->post[i].dst, c->post[i].src, c->post[i].bytes);
    c->in_step = false;
    cu_forget_quantized(c); /* uploads and copies outside a step do not say what they write */
    int rc = c->err;
    c->err = 0;
    return rc;
}

/* ---- creation --------------------------------------------------------------------------------- */

/* Largest row length any activation fed to a product has. */
static int64_t max_k(const struct hparams *hp)
{
    int64_t k = hp->dim;
    k = hp->hidden_dim > k ? hp->hidden_dim : k;
    k = hp->expert_hidden_dim > k ? hp->expert_hidden_dim : k;
    k = (int64_t)hp->n_heads * hp->head_dim > k ? (int64_t)hp->n_heads * hp->head_dim : k;
    return (k + 63) & ~(int64_t)63;
}

/* Elements of the largest dense layer matrix (what the GEMM path dequantizes). */
static size_t max_dense(const struct hparams *hp)
{
    const size_t d = (size_t)hp->dim, F = (size_t)hp->hidden_dim,
                 qd = (size_t)hp->n_heads * hp->head_dim;
    size_t m = 3 * d * d;
    m = d * F > m ? d * F : m;
    m = qd * d > m ? qd * d : m;
    return m;
}

static int alloc_q8(struct cuda_be *c, struct q8act *q, size_t rows, int64_t K)
{
    q->K = K;
    int rc = check(c, cudaMalloc((void **)&q->q, rows * (size_t)K), "scratch");
    if (!rc)
        rc = check(c, cudaMalloc((void **)&q->d, rows * (size_t)(K / 32) * 4), "scratch");
    if (!rc)
        rc = check(c, cudaMalloc((void **)&q->s, rows * (size_t)(K / 32) * 4), "scratch");
    c->scratch_bytes += rows * (size_t)K * 3 / 2;
    return rc;
}

static int dev(struct cuda_be *c, void **p, size_t bytes)
{
    c->scratch_bytes += bytes;
    return check(c, cudaMalloc(p, bytes ? bytes : 16), "scratch");
}

/* cos and sin of every (position, frequency) the ref op computes, in double as it does. */
static int rope_table(struct cuda_be *c)
{
    const int half = c->hp.head_dim / 2, n = c->cfg.n_ctx;
    float *h = (float *)malloc(sizeof(float) * 2 * (size_t)n * half);
    if (!h)
        return EXSA_ENOMEM;
    for (int p = 0; p < n; p++)
        for (int i = 0; i < half; i++) {
            double theta = p * pow(c->hp.rope_base, -2.0 * i / c->hp.head_dim);
            h[2 * ((size_t)p * half + i)] = (float)cos(theta);
            h[2 * ((size_t)p * half + i) + 1] = (float)sin(theta);
        }
    int rc = dev(c, (void **)&c->rope_cs, sizeof(float) * 2 * (size_t)n * half);
    if (!rc)
        rc = check(
            c,
            cudaMemcpy(c->rope_cs, h, sizeof(float) * 2 * (size_t)n * half, cudaMemcpyHostToDevice),
            "rope table");
    free(h);
    return rc;
}

static int alloc_moe(struct cuda_be *c)
{
    const struct hparams *hp = &c->hp;
    const size_t nb = (size_t)c->cfg.n_batch, k = (size_t)hp->n_experts_used;
    const size_t tiles = nb * k / MOE_TILE + (size_t)hp->n_experts + 1;
    int rc = dev(c, (void **)&c->moe_ids, nb * k * 4);
    if (!rc)
        rc = dev(c, (void **)&c->moe_wts, nb * k * 4);
    if (!rc)
        rc = dev(c, (void **)&c->moe_order, nb * k * 4);
    if (!rc)
        rc = dev(c, (void **)&c->moe_tiles, (tiles * 3 + 4) * 4);
    if (!rc)
        rc = dev(c, (void **)&c->moe_logits, nb * (size_t)hp->n_experts * 4);
    if (!rc)
        rc = dev(c, (void **)&c->moe_act, nb * k * (size_t)hp->expert_hidden_dim * 4);
    if (!rc)
        rc = dev(c, (void **)&c->moe_out, nb * k * (size_t)hp->dim * 4);
    if (!rc)
        rc = alloc_q8(c, &c->moe_q8, nb * k, (hp->expert_hidden_dim + 63) & ~63);
    return rc;
}

/* Deterministic attention: a query's positions are split at fixed multiples of this (never fewer
 * than 256, at most 32 splits in the context), so its sums do not depend on the step. */
static int attn_chunk_of(int n_ctx)
{
    const int c = ((n_ctx + 31) / 32 + 31) & ~31;
    return c > 256 ? c : 256;
}

static int alloc_scratch(struct cuda_be *c)
{
    const struct hparams *hp = &c->hp;
    const size_t nb = (size_t)c->cfg.n_batch, K = (size_t)max_k(hp);
    const int H = hp->n_heads, hd = hp->head_dim;
    c->n_tiles_max = (int)(nb * (size_t)H / 4 + (size_t)c->cfg.n_seq_max + 2);
    struct ds_layout l = ds_layout_of(c);
    c->ds_bytes = l.end;
    c->stage_in_bytes = l.end + nb * (size_t)hp->dim * 4 * 2 + 4096;
    c->stage_out_bytes = 64 * (size_t)(hp->vocab_size > hp->dim ? hp->vocab_size : hp->dim) * 4;
    c->max_ops = 256 + hp->n_layers * 48;
    c->max_copies = 64;
    c->ops = (struct op *)calloc((size_t)c->max_ops, sizeof(struct op));
    c->pre = (struct host_copy *)calloc((size_t)c->max_copies, sizeof(struct host_copy));
    c->post = (struct host_copy *)calloc((size_t)c->max_copies, sizeof(struct host_copy));
    if (!c->ops || !c->pre || !c->post)
        return EXSA_ENOMEM;
    int rc = dev(c, &c->ds_mem, c->ds_bytes);
    unsigned char *b = (unsigned char *)c->ds_mem;
    c->ds = (struct dstep){
        (int32_t *)(b + l.n_tiles), (int32_t *)(b + l.tok),      (int32_t *)(b + l.pos),
        (int32_t *)(b + l.ent_sq),  (int32_t *)(b + l.out_rows), (int32_t *)(b + l.sq_ent_off),
        (int32_t *)(b + l.sq_ent),  (int32_t *)(b + l.conv_rd),  (int32_t *)(b + l.conv_wr),
        (int32_t *)(b + l.blk_off), (int32_t *)(b + l.blk),      (int32_t *)(b + l.tiles)};
    if (!rc)
        rc = check(c, cudaMallocHost((void **)&c->stage_in, c->stage_in_bytes), "pinned");
    if (!rc)
        rc = check(c, cudaMallocHost((void **)&c->stage_out, c->stage_out_bytes), "pinned");
    if (!rc)
        rc = alloc_q8(c, &c->q8, nb, (int64_t)K);
    c->mq_kmax = (int64_t)K;
    if (!rc)
        rc = dev(c, (void **)&c->mq.q, (size_t)MMQ_TOK * K);
    if (!rc)
        rc = dev(c, (void **)&c->mq.ds, (size_t)MMQ_TOK * (K / 32) * sizeof(float2));
    c->wh_elems = max_dense(hp);
    if (!rc)
        rc = dev(c, (void **)&c->wh, c->wh_elems * 4);
    if (!rc)
        rc = dev(c, (void **)&c->glu_tmp, nb * (size_t)hp->hidden_dim * 4 + 16);
    c->xsplit_elems = nb * K;
    if (!rc)
        rc = dev(c, (void **)&c->xhi, c->xsplit_elems * 4);
    if (!rc)
        rc = dev(c, (void **)&c->xlo, c->xsplit_elems * 4);
    if (!rc)
        rc = dev(c, &c->blas_ws, (size_t)32 << 20);
    size_t units = nb * H > (size_t)MMV_MAX_N * H * 32 ? nb * H : (size_t)MMV_MAX_N * H * 32;
    if (c->cfg.deterministic) { /* every entry may use all its splits (see attn.cu) */
        c->attn_chunk = attn_chunk_of(c->cfg.n_ctx);
        const size_t splits = (size_t)((c->cfg.n_ctx + c->attn_chunk - 1) / c->attn_chunk);
        units = units > nb * H * splits ? units : nb * H * splits;
    }
    c->attn_part_floats = units * (size_t)(hd + 2);
    if (!rc)
        rc = dev(c, (void **)&c->attn_part, c->attn_part_floats * 4);
    if (!rc && hd > 0)
        rc = rope_table(c);
    if (!rc && hp->is_moe)
        rc = alloc_moe(c);
    return rc;
}

void cu_free(struct backend *be)
{
    struct cuda_be *c = CB(be);
    if (!c)
        return;
    prof_print(c);
    for (int i = 0; i < c->n_ev; i++)
        cudaEventDestroy(c->ev[i]);
    free(c->ev);
    forget_graphs(c);
    for (int i = 0; i < c->n_w; i++)
        if (c->wlist[i])
            cudaFree(c->wlist[i]->q), cudaFree(c->wlist[i]->d), free(c->wlist[i]);
    void *dev_ptrs[] = {c->ds_mem,    c->q8.q,      c->q8.d,       c->q8.s,    c->mq.q,
                        c->mq.ds,     c->wh,        c->glu_tmp,    c->xhi,     c->xlo,
                        c->blas_ws,   c->attn_part, c->rope_cs,    c->moe_ids, c->moe_order,
                        c->moe_tiles, c->moe_wts,   c->moe_logits, c->moe_act, c->moe_out,
                        c->moe_q8.q,  c->moe_q8.d,  c->moe_q8.s};
    for (size_t i = 0; i < sizeof dev_ptrs / sizeof dev_ptrs[0]; i++)
        cudaFree(dev_ptrs[i]);
    cudaFreeHost(c->stage_in);
    cudaFreeHost(c->stage_out);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c->wlist);
    free(c->ops);
    free(c->pre);
    free(c->post);
    free(c);
}

static int open_device(struct cuda_be *c, char *err, size_t errlen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(err, errlen, "no usable CUDA device (%s): set GPU_LAYERS=0 to run on the CPU",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        cudaGetLastError();
        return EXSA_EUNSUPPORTED;
    }
    cudaDeviceProp prop;
    if (cudaSetDevice(0) != cudaSuccess || cudaGetDeviceProperties(&prop, 0) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cannot open CUDA device 0");
        return EXSA_EIO;
    }
    if (prop.major < 7) {
        snprintf(err, errlen, "CUDA device %s (compute %d.%d) is too old: 7.0 or newer needed",
                 prop.name, prop.major, prop.minor);
        return EXSA_EUNSUPPORTED;
    }
    c->n_sms = prop.multiProcessorCount;
    cu_mmv_init();
    c->pdl = prop.major >= 9 && !getenv("EXSA_CUDA_NO_PDL");
    c->profile = getenv("EXSA_CUDA_PROFILE") != NULL;
    c->graphs_on = getenv("EXSA_CUDA_GRAPHS") == NULL; /* EXSA_CUDA_GRAPHS=off: eager only */
    c->mmv_max_blocks = cu_mmv_grid_cap(c->n_sms);
    /* the batched products take EXSA_CUDA_MMQ_MIN to _MAX tokens (a count past MMQ_TOK is
     * taken MMQ_TOK at a time; MIN=0, the default until they have run on a device: never);
     * mma.sync needs sm_80 */
    const char *mn = getenv("EXSA_CUDA_MMQ_MIN"), *mx = getenv("EXSA_CUDA_MMQ_MAX");
    c->mmq_min = prop.major < 8 ? 0 : mn ? atoi(mn) : 0;
    c->mmq_max = mx ? atoi(mx) : MMQ_TOK;
    const char *ins = getenv("EXSA_CUDA_MMV_INSLOT");
    c->mmv_inslot = !(ins && !strcmp(ins, "0"));
    cublasSetStream(c->blas, c->stream);
    return 0;
}

extern "C" struct backend *backend_cuda_create(const struct backend_config *cfg, char *err,
                                               size_t errlen)
{
    struct cuda_be *c = (struct cuda_be *)calloc(1, sizeof *c);
    if (!c || !cfg || !cfg->hp) {
        snprintf(err, errlen, "out of memory creating the CUDA backend");
        free(c);
        return NULL;
    }
    c->cfg = *cfg;
    if (c->cfg.n_seq_max <= 0)
        c->cfg.n_seq_max = 1;
    c->hp = *cfg->hp;
    c->attn_group = 1;
    for (int i = 0; i < c->hp.n_layers; i++) /* one KV head count for every attention layer */
        if (c->hp.n_kv_heads[i] > 0)
            c->attn_group = c->hp.n_heads / c->hp.n_kv_heads[i];
    c->be.ops = &cuda_ops;
    c->be.n_threads = 1;
    c->be.host_memory = false;
    c->be.priv = c;
    int rc = open_device(c, err, errlen);
    if (rc == 0 && (rc = alloc_scratch(c)) == 0)
        cublasSetWorkspace(c->blas, c->blas_ws, (size_t)32 << 20);
    if (rc) {
        if (!err[0] || rc == EXSA_ENOMEM)
            snprintf(err, errlen, "cannot allocate the CUDA backend's %.0f MiB of scratch: %s",
                     c->scratch_bytes / 1048576.0, c->errmsg);
        cu_free(&c->be);
        return NULL;
    }
    c->err = 0;
    return &c->be;
}

extern "C" int backend_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        cudaGetLastError();
        *free_bytes = *total_bytes = 0;
        return EXSA_EUNSUPPORTED;
    }
    return 0;
}

extern "C" double backend_cuda_read_bandwidth(size_t bytes)
{
    return cu_read_bandwidth(bytes);
}

extern "C" long backend_cuda_graph_replays(const struct backend *be)
{
    return be && be->ops == &cuda_ops ? ((const struct cuda_be *)be)->graph_replays : -1;
}
