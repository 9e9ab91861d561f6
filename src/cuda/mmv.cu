/*
 * mmv.cu: the decode products of the CUDA backend: y = W x for up to MMV_MAX_TOK tokens per
 * launch, reading every weight byte once per launch. Quantized weights meet activations
 * quantized to 8 bits per 32 (cu_quantize) in int8 dot products (dp4a); F16/BF16/F32 weights
 * meet f32 activations in f32 FMAs. A row is split into units of VPU values; a row's units are
 * spread over tpr lanes of a warp (tpr = 32 for K >= 2048, fewer for short rows, several rows
 * per warp), each lane loading its next unit while it multiplies the current one; lanes reduce
 * with shuffles. One launch covers up to three matrices of one type (q, k, v), or a gate and an
 * up matrix whose results meet in silu(g) * u, or (MoE) tiles of up to MOE_TILE problems that
 * share an expert, the expert ids and tiles read from device memory so that graphs replay them.
 */
#include "cuda/mmv.h"

/* ---- activation quantization ------------------------------------------------------------------ */

__global__ void k_quantize(const float *__restrict__ x, int64_t ldx, int n, int64_t K,
                           int8_t *__restrict__ q, float *__restrict__ d, float *__restrict__ s)
{
    pdl_trigger();
    pdl_wait();
    const int64_t nb = K / 32, w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= nb * n)
        return;
    const int64_t t = w / nb, b = w % nb;
    float dd;
    int sum;
    const int qv = quant_warp32(x[t * ldx + 32 * b + lane], &dd, &sum);
    q[t * K + 32 * b + lane] = (int8_t)qv;
    if (lane == 0) {
        d[t * nb + b] = dd;
        s[t * nb + b] = dd * (float)sum;
    }
}

void cu_quantize(struct cuda_be *c, const float *x, int n, int64_t K, const struct q8act *out)
{
    const int64_t warps = (K / 32) * n;
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((warps + 7) / 8)), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_quantize, x, K, n, K, out->q, out->d, out->s);
    cu_check_launch(c, "quantize");
}

static mmv_kernel pick(int gt, int nt, bool glu, bool lng)
{
    switch (gt) {
    case GT_F32:
    case GT_F16:
    case GT_BF16: return mmv_pick_float(gt, nt, glu, lng);
    case GT_Q8_0:
    case GT_Q4_0: return mmv_pick_q8q4(gt, nt, glu, lng);
    case GT_Q4_K:
    case GT_Q5_K: return mmv_pick_k45(gt, nt, glu, lng);
    default: return mmv_pick_q6k(gt, nt, glu, lng);
    }
}

/* Lanes per row: enough that each lane has about ub units (all in flight at once). */
static int lanes_per_row(int64_t U, int ub)
{
    int tpr = 1;
    while (tpr < 32 && (int64_t)tpr * ub < U)
        tpr <<= 1;
    return tpr;
}

static size_t smem_of(int gt, int nt, int64_t K)
{
    return gt_quantized(gt) ? (size_t)nt * K + (size_t)nt * (K / 32) * 8 : (size_t)nt * K * 4;
}

/* The products' grid cap: MMV_BLOCKS_PER_SM blocks an SM; EXSA_CUDA_MMV_BPS=N sets N (0: no
 * cap, a block per group of rows), EXSA_CUDA_MMV_MAX_BLOCKS=N a cap in blocks (the tests use it
 * to make each block walk many rows). */
int64_t cu_mmv_grid_cap(int n_sms)
{
    const char *bps = getenv("EXSA_CUDA_MMV_BPS"), *mb = getenv("EXSA_CUDA_MMV_MAX_BLOCKS");
    int64_t cap = (int64_t)(bps ? atoi(bps) : MMV_BLOCKS_PER_SM) * n_sms;
    if (mb && atoll(mb) > 0 && (cap <= 0 || atoll(mb) < cap))
        cap = atoll(mb);
    return cap > 0 ? cap : 0;
}

int cu_mmv_max_tok(int gt, int64_t K)
{
    int nt = MMV_MAX_TOK;
    while (nt > 1 && smem_of(gt, nt, K) > MMV_SMEM_MAX)
        nt /= 2;
    return nt;
}

void cu_mmv_init(void)
{
    for (int gt = 0; gt < GT_COUNT; gt++)
        for (int nt = 1; nt <= MMV_MAX_TOK; nt *= 2)
            for (int v = 0; v < 4; v++)
                cudaFuncSetAttribute(pick(gt, nt, v & 1, v & 2),
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, MMV_SMEM_MAX);
}

static wview view_of(const struct dweight *w)
{
    return wview{w->q, w->d, (int64_t)w->q_row, w->d_row};
}

void cu_mmv(struct cuda_be *c, const struct mmv_args *a)
{
    const struct dweight *w0 = a->seg[0].w;
    mmv_params p;
    memset(&p, 0, sizeof p);
    p.n_seg = a->glu ? 1 : a->n_seg;
    p.K = w0->K;
    p.U = w0->K / gt_vpu(w0->gt);
    p.tpr = lanes_per_row(p.U, ub_of(w0->gt, a->glu));
    p.n = a->n;
    p.acc = a->acc;
    p.inslot = c->mmv_inslot;
    for (int i = 0; i < a->n_seg; i++) {
        p.w[i] = view_of(a->seg[i].w);
        p.rows[i] = a->seg[i].rows;
        p.row0[i] = a->seg[i].row0;
        p.y[i] = a->seg[i].y;
        p.ldy[i] = a->seg[i].ldy;
        if (!a->glu || i == 0)
            p.total += a->seg[i].rows;
    }
    p.x = a->x, p.ldx = a->ldx, p.nw = a->nw, p.eps = a->eps;
    int nt = 1;
    while (nt < a->n && nt < MMV_MAX_TOK)
        nt *= 2;
    const int64_t rows_per_block = (MMV_THREADS / 32) * (32 / p.tpr);
    int64_t blocks = (p.total + rows_per_block - 1) / rows_per_block;
    if (c->mmv_max_blocks > 0 && blocks > c->mmv_max_blocks)
        blocks = c->mmv_max_blocks;
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)blocks), dim3(MMV_THREADS), smem_of(w0->gt, nt, p.K));
    const bool lng = p.U > (int64_t)ub_of(w0->gt, a->glu) * p.tpr;
    cudaLaunchKernelEx(&l.cfg, pick(w0->gt, nt, a->glu, lng), p);
    cu_check_launch(c, "matrix-vector product");
}

/* ---- MoE ---------------------------------------------------------------------------------------- */

/* One warp per token: sigmoid, top-k by sigmoid + bias, weights normalised (moe_route in C). */
__global__ void k_moe_route(const float *__restrict__ logits, const float *__restrict__ bias, int n,
                            int E, int k, int32_t *ids, float *wts)
{
    pdl_trigger();
    pdl_wait();
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (t >= n)
        return;
    float sel[16], p[16]; /* E <= 512 */
    for (int i = 0; i < 16; i++) {
        const int e = lane + 32 * i;
        p[i] = e < E ? 1.0f / (1.0f + expf(-logits[(int64_t)t * E + e])) : 0;
        sel[i] = e < E ? p[i] + bias[e] : -INFINITY;
    }
    float sum = 0;
    for (int j = 0; j < k; j++) {
        float best = -INFINITY;
        int bi = 0x7fffffff;
        for (int i = 0; i < 16; i++) {
            const int e = lane + 32 * i;
            if (sel[i] > best || (sel[i] == best && e < bi))
                best = sel[i], bi = e;
        }
        for (int o = 16; o; o >>= 1) { /* the largest; ties to the lowest id, as moe_route */
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ob > best || (ob == best && oi < bi))
                best = ob, bi = oi;
        }
        const float pb = __shfl_sync(0xffffffffu, p[(bi / 32) & 15], bi & 31);
        if ((bi & 31) == lane)
            sel[bi / 32] = -INFINITY;
        if (lane == 0)
            ids[t * k + j] = bi, wts[t * k + j] = pb;
        sum += pb;
    }
    __syncwarp();
    if (lane < k)
        wts[t * k + lane] /= fmaxf(sum, 6.103515625e-5f);
}

/* One block: problems p = t k + j sorted by expert into order, and tiles of at most
 * MOE_TILE problems of one expert: tiles[0] = count, then (expert, start, count) triples. */
__global__ void k_moe_tiles(const int32_t *ids, int np, int E, int32_t *order, int32_t *tiles)
{
    pdl_trigger();
    pdl_wait();
    extern __shared__ int smi[];
    int *cnt = smi, *start = smi + E;
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        cnt[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < np; p += blockDim.x)
        atomicAdd(&cnt[ids[p]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int o = 0, nt = 0;
        for (int e = 0; e < E; e++) {
            start[e] = o;
            for (int s = 0; s < cnt[e]; s += MOE_TILE, nt++) {
                tiles[1 + 3 * nt] = e;
                tiles[2 + 3 * nt] = o + s;
                tiles[3 + 3 * nt] = cnt[e] - s < MOE_TILE ? cnt[e] - s : MOE_TILE;
            }
            o += cnt[e];
        }
        tiles[0] = nt;
    }
    __syncthreads();
    if (threadIdx.x == 0) /* stable: problems of one expert in token order */
        for (int p = 0; p < np; p++)
            order[start[ids[p]]++] = p;
}

struct moe_params {
    wview w[2]; /* gate, up (glu) or down */
    int64_t N, K, U;
    int tpr, k;
    bool glu, in_by_token; /* input row: the problem's token (first half) or the problem */
    const int32_t *order, *tiles;
    const int8_t *xq;
    const float *xd, *xs;
    const float *xf; /* f32 input rows (float experts) */
    float *y;        /* [problem][N] */
};

template <int GT> __global__ void __launch_bounds__(128) k_moe_mmv(moe_params p)
{
    pdl_trigger();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, rpw = 32 / p.tpr;
    const int sub = lane % p.tpr;
    const int64_t r = ((int64_t)blockIdx.x * 4 + warp) * rpw + lane / p.tpr;
    pdl_wait(); /* the tiles come from the previous kernel */
    const int tile = blockIdx.y;
    if (tile >= p.tiles[0])
        return;
    const int e = p.tiles[1 + 3 * tile], s0 = p.tiles[2 + 3 * tile], cnt = p.tiles[3 + 3 * tile];
    const bool live = r < p.N;
    xrow x[MOE_TILE];
    int prob[MOE_TILE];
#pragma unroll
    for (int i = 0; i < MOE_TILE; i++) {
        prob[i] = i < cnt ? p.order[s0 + i] : 0;
        const int64_t in = p.in_by_token ? prob[i] / p.k : prob[i];
        x[i].q = p.xq + in * p.K;
        x[i].d = p.xd + in * (p.K / 32);
        x[i].s = p.xs + in * (p.K / 32);
        x[i].f = p.xf + in * p.K;
    }
    float a0[MOE_TILE], a1[MOE_TILE];
#pragma unroll
    for (int i = 0; i < MOE_TILE; i++)
        a0[i] = a1[i] = 0;
    const int64_t U = live ? p.U : 0, row = (int64_t)e * p.N + (live ? r : 0);
    row_dot<GT, MOE_TILE>(p.w[0], row, U, sub, p.tpr, x, cnt, a0);
    if (p.glu)
        row_dot<GT, MOE_TILE>(p.w[1], row, U, sub, p.tpr, x, cnt, a1);
#pragma unroll
    for (int i = 0; i < MOE_TILE; i++) {
        a0[i] = reduce_lanes(a0[i], p.tpr);
        a1[i] = reduce_lanes(a1[i], p.tpr);
    }
    if (!live || sub != 0)
        return;
#pragma unroll
    for (int i = 0; i < MOE_TILE; i++)
        if (i < cnt)
            p.y[(int64_t)prob[i] * p.N + r] = p.glu ? silu(a0[i]) * a1[i] : a0[i];
}

/* out[t] = sum_j wts[t][j] y[t k + j] */
__global__ void k_moe_combine(const float *__restrict__ y, const float *__restrict__ wts, int n,
                              int k, int dim, float *__restrict__ out)
{
    const int64_t i = elementwise_start();
    if (i >= (int64_t)n * dim)
        return;
    const int64_t t = i / dim, c = i % dim;
    float s = 0;
    for (int j = 0; j < k; j++)
        s += wts[t * k + j] * y[(t * k + j) * dim + c];
    out[i] = s;
}

void cu_moe_route(struct cuda_be *c, const float *logits, const float *bias, int n, int E, int k)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((n + 3) / 4)), dim3(128), 0);
    cudaLaunchKernelEx(&l.cfg, k_moe_route, logits, bias, n, E, k, c->moe_ids, c->moe_wts);
    cu_check_launch(c, "moe route");
    cu_launch_cfg(c, &l, dim3(1), dim3(256), sizeof(int) * 2 * (size_t)E);
    cudaLaunchKernelEx(&l.cfg, k_moe_tiles, (const int32_t *)c->moe_ids, n * k, E, c->moe_order,
                       c->moe_tiles);
    cu_check_launch(c, "moe tiles");
}

typedef void (*moe_kernel)(moe_params);

static moe_kernel pick_moe(int gt)
{
    switch (gt) {
    case GT_F32: return k_moe_mmv<GT_F32>;
    case GT_F16: return k_moe_mmv<GT_F16>;
    case GT_BF16: return k_moe_mmv<GT_BF16>;
    case GT_Q8_0: return k_moe_mmv<GT_Q8_0>;
    case GT_Q4_0: return k_moe_mmv<GT_Q4_0>;
    case GT_Q4_K: return k_moe_mmv<GT_Q4_K>;
    case GT_Q5_K: return k_moe_mmv<GT_Q5_K>;
    case GT_Q6_K: return k_moe_mmv<GT_Q6_K>;
    default: return NULL;
    }
}

/* Gathered products of every tile: y[problem] = W_expert(in row) (glu: silu(g) * u). */
static void moe_launch(struct cuda_be *c, const struct dweight *a, const struct dweight *b,
                       bool in_by_token, const struct q8act *x, const float *xf, float *y, int np,
                       int k)
{
    moe_params p;
    memset(&p, 0, sizeof p);
    p.w[0] = view_of(a);
    if (b)
        p.w[1] = view_of(b);
    p.N = a->N, p.K = a->K, p.U = a->K / gt_vpu(a->gt);
    p.tpr = lanes_per_row(p.U, ub_of(a->gt, false)), p.k = k;
    p.glu = b != NULL, p.in_by_token = in_by_token;
    p.order = c->moe_order, p.tiles = c->moe_tiles;
    p.xq = x->q, p.xd = x->d, p.xs = x->s, p.xf = xf, p.y = y;
    const int64_t rpb = 4 * (32 / p.tpr);
    const int max_tiles = np / MOE_TILE + c->hp.n_experts + 1;
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((p.N + rpb - 1) / rpb), (unsigned)max_tiles), dim3(128),
                  0);
    cudaLaunchKernelEx(&l.cfg, pick_moe(a->gt), p);
    cu_check_launch(c, "moe product");
}

bool cu_moe_supported(const struct layer *l)
{
    const struct dweight *g = DW(&l->gate_exps), *u = DW(&l->up_exps), *d = DW(&l->down_exps);
    return g && u && d && pick_moe(g->gt) && g->gt == u->gt && pick_moe(d->gt) &&
           g->K % gt_vpu(g->gt) == 0 && d->K % gt_vpu(d->gt) == 0;
}

/* x is quantized in c->q8 (rows of dim); out[n][dim]. */
void cu_moe_ffn(struct cuda_be *c, const struct layer *l, const float *x, float *out, int n,
                int dim, int E, int k, int fe)
{
    const int np = n * k;
    const struct dweight *down = DW(&l->down_exps);
    moe_launch(c, DW(&l->gate_exps), DW(&l->up_exps), true, &c->q8, x, c->moe_act, np, k);
    struct q8act q = c->moe_q8;
    q.K = fe;
    if (gt_quantized(down->gt))
        cu_quantize(c, c->moe_act, np, fe, &q);
    moe_launch(c, down, NULL, false, &q, c->moe_act, c->moe_out, np, k);
    struct cu_launch lc;
    cu_launch_cfg(c, &lc, dim3((unsigned)(((int64_t)n * dim + 255) / 256)), dim3(256), 0);
    cudaLaunchKernelEx(&lc.cfg, k_moe_combine, (const float *)c->moe_out, (const float *)c->moe_wts,
                       n, k, dim, out);
    cu_check_launch(c, "moe combine");
}
