/*
 * attn.cu: causal GQA attention over the paged K/V cache (f16 or f32 entries), flash style:
 * a block takes a tile of up to `units` (entry, query head) pairs of one sequence that share a
 * KV head, walks its positions 32 at a time through shared memory with an online softmax, and
 * writes a partial (max, sum, weighted V) per pair and position split; a second kernel merges
 * the splits (and quantizes the result for the output projection). Splitting the positions
 * keeps a single decoded token spread over the GPU at long context; tiles and the sequence
 * layout come from the step's device arrays, so a captured graph replays at any length.
 */
#include "cuda/cuda.h"

#define ATTN_SPLIT_MAX 64

int cu_attn_tiles(const struct step *st, int group, int units, int32_t *tiles)
{
    int n = 0;
    for (int j = 0; j < st->n_sq; j++) {
        const int u_j = (st->sq_ent_off[j + 1] - st->sq_ent_off[j]) * group;
        for (int u0 = 0; u0 < u_j; u0 += units) {
            tiles[2 * n] = j;
            tiles[2 * n + 1] = u0;
            n++;
        }
    }
    return n;
}

template <typename T> __device__ __forceinline__ float ld_kv(const T *p);
template <> __device__ __forceinline__ float ld_kv<float>(const float *p)
{
    return *p;
}
template <> __device__ __forceinline__ float ld_kv<__half>(const __half *p)
{
    return __half2float(*p);
}
template <typename T>
__global__ void k_kv_store(struct dstep ds, const float *__restrict__ k,
                           const float *__restrict__ v, int n, int kvd, T *kp, T *vp)
{
    const int64_t i = elementwise_start();
    if (i >= (int64_t)n * kvd)
        return;
    const int e = (int)(i / kvd), c = (int)(i % kvd);
    const int64_t row = kv_row(ds, ds.ent_sq[e], ds.pos[e]);
    kp[row * kvd + c] = to_kv<T>(k[i]);
    vp[row * kvd + c] = to_kv<T>(v[i]);
}

struct attn_params {
    struct dstep ds;
    const float *q;
    const void *kp, *vp;
    float *part;
    int H, group, kvd, units, n_split;
    int chunk; /* > 0: positions per split, fixed (deterministic); 0: P / n_split */
};

template <int HD, typename T> __global__ void k_attn(attn_params p)
{
    pdl_trigger();
    extern __shared__ float sm[];
    float *ks = sm, *vs = ks + 32 * (HD + 1), *qs = vs + 32 * (HD + 1);
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, tile = blockIdx.x;
    const int g = blockIdx.y, z = blockIdx.z;
    pdl_wait();
    if (tile >= *p.ds.n_tiles)
        return;
    const int j = p.ds.tiles[2 * tile], u0 = p.ds.tiles[2 * tile + 1];
    const int off = p.ds.sq_ent_off[j], u_j = (p.ds.sq_ent_off[j + 1] - off) * p.group;
    const int u = u0 + w, u_last = min(u0 + p.units, u_j) - 1;
    const bool valid = u < u_j;
    const int e = valid ? p.ds.sq_ent[off + u / p.group] : 0, h = g * p.group + u % p.group;
    const int qp = valid ? p.ds.pos[e] : -1;
    const int P = p.ds.pos[p.ds.sq_ent[off + u_last / p.group]] + 1;
    /* A split's length from the tile's context: its sums then depend on the tile's other
     * entries; a fixed length (a multiple of 32) makes them depend on the position alone. */
    const int C = p.chunk > 0 ? p.chunk : ((P + p.n_split - 1) / p.n_split + 31) & ~31;
    const int p0 = z * C, p1 = min(P, p0 + C);
    const float scale = rsqrtf((float)HD);
    if (valid)
        for (int d = lane; d < HD; d += 32)
            qs[w * HD + d] = p.q[((int64_t)e * p.H + h) * HD + d] * scale;
    float m = -INFINITY, l = 0, o[HD / 32];
#pragma unroll
    for (int k = 0; k < HD / 32; k++)
        o[k] = 0;
    const T *kp = (const T *)p.kp, *vp = (const T *)p.vp;
    for (int pt = p0; pt < p1; pt += 32) {
        __syncthreads(); /* the previous tile is no longer read */
        const int64_t row0 = kv_row(p.ds, j, pt);
        for (int i = threadIdx.x; i < 32 * HD; i += blockDim.x) {
            const int r = i / HD, d = i % HD;
            const int64_t at = (row0 + r) * p.kvd + g * HD + d;
            const bool in = pt + r < p1; /* rows past the split hold stale data: zeros */
            ks[r * (HD + 1) + d] = in ? ld_kv<T>(kp + at) : 0.0f;
            vs[r * (HD + 1) + d] = in ? ld_kv<T>(vp + at) : 0.0f;
        }
        __syncthreads();
        if (!valid)
            continue;
        const int pp = pt + lane;
        float s = -INFINITY;
        if (pp <= qp && pp < p1) {
            s = 0;
#pragma unroll 16
            for (int d = 0; d < HD; d++)
                s = fmaf(qs[w * HD + d], ks[lane * (HD + 1) + d], s);
        }
        float mt = s;
        for (int k = 16; k; k >>= 1)
            mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, k));
        const float mn = fmaxf(m, mt);
        if (mn == -INFINITY)
            continue;
        const float corr = expf(m - mn), es = s == -INFINITY ? 0.0f : expf(s - mn);
        float sum = es;
        for (int k = 16; k; k >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, k);
        l = l * corr + sum;
#pragma unroll
        for (int k = 0; k < HD / 32; k++)
            o[k] *= corr;
        for (int r = 0; r < 32; r++) {
            const float wr = __shfl_sync(0xffffffffu, es, r);
#pragma unroll
            for (int k = 0; k < HD / 32; k++)
                o[k] = fmaf(wr, vs[r * (HD + 1) + lane + 32 * k], o[k]);
        }
        m = mn;
    }
    if (!valid)
        return;
    float *out = p.part + (((int64_t)e * p.H + h) * p.n_split + z) * (HD + 2);
    if (lane == 0)
        out[0] = m, out[1] = l;
#pragma unroll
    for (int k = 0; k < HD / 32; k++)
        out[2 + lane + 32 * k] = o[k];
}

/* One warp per (entry, head): merges the splits. */
template <int HD>
__global__ void k_attn_merge(const float *__restrict__ part, int n, int H, int n_split,
                             float *__restrict__ out)
{
    pdl_trigger();
    pdl_wait();
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wid >= (int64_t)n * H)
        return;
    const float *pp = part + wid * n_split * (HD + 2);
    float M = -INFINITY;
    for (int z = 0; z < n_split; z++)
        M = fmaxf(M, pp[z * (HD + 2)]);
    float L = 0, o[HD / 32];
#pragma unroll
    for (int k = 0; k < HD / 32; k++)
        o[k] = 0;
    for (int z = 0; z < n_split; z++) {
        const float mz = pp[z * (HD + 2)], lz = pp[z * (HD + 2) + 1];
        if (lz == 0)
            continue;
        const float f = expf(mz - M);
        L += lz * f;
#pragma unroll
        for (int k = 0; k < HD / 32; k++)
            o[k] += pp[z * (HD + 2) + 2 + lane + 32 * k] * f;
    }
    const int64_t e = wid / H, h = wid % H, K = (int64_t)H * HD;
#pragma unroll
    for (int k = 0; k < HD / 32; k++)
        out[e * K + h * HD + lane + 32 * k] = o[k] / L;
}

void cu_kv_store(struct cuda_be *c, const struct kv_cache *kv, int a, const float *k,
                 const float *v, int n)
{
    const int64_t total = (int64_t)n * kv->kv_dim;
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((total + 255) / 256)), dim3(256), 0);
    if (kv->kv_type[a] == EXSA_DTYPE_F16)
        cudaLaunchKernelEx(&l.cfg, k_kv_store<__half>, c->ds, k, v, n, kv->kv_dim,
                           (__half *)kv->k[a], (__half *)kv->v[a]);
    else
        cudaLaunchKernelEx(&l.cfg, k_kv_store<float>, c->ds, k, v, n, kv->kv_dim, (float *)kv->k[a],
                           (float *)kv->v[a]);
    cu_check_launch(c, "kv store");
}

typedef void (*attn_kernel)(attn_params);

template <int HD> static attn_kernel pick_attn(bool f16)
{
    return f16 ? k_attn<HD, __half> : k_attn<HD, float>;
}

/* The pieces a query's positions are split into (grid z). Deterministic (c->attn_chunk): fixed
 * pieces of attn_chunk positions, as many as the span needs (the partials are sized at init for
 * the whole context). Else enough blocks for 8 an SM, each walking at least 64 positions, at
 * most ATTN_SPLIT_MAX, within the partials' scratch. */
static int splits_of(const struct cuda_be *c, int n, int n_heads, int n_kv_heads, int hd,
                     int grid_x, int span)
{
    if (c->attn_chunk > 0) {
        const int in_ctx = (c->cfg.n_ctx + c->attn_chunk - 1) / c->attn_chunk;
        const int split = (span + c->attn_chunk - 1) / c->attn_chunk;
        return split < in_ctx ? split : in_ctx;
    }
    int split = (8 * c->n_sms + grid_x * n_kv_heads - 1) / (grid_x * n_kv_heads);
    split = split < span / 64 ? split : span / 64;
    split = split < 1 ? 1 : split > ATTN_SPLIT_MAX ? ATTN_SPLIT_MAX : split;
    while (split > 1 && (size_t)n * n_heads * split * (hd + 2) > c->attn_part_floats)
        split--;
    return split;
}

void cu_attention(struct cuda_be *c, const struct kv_cache *kv, int a, const float *q, float *out,
                  int n, int n_heads, int n_kv_heads, int hd, int span)
{
    attn_params p;
    p.ds = c->ds, p.q = q, p.kp = kv->k[a], p.vp = kv->v[a], p.part = c->attn_part;
    p.H = n_heads, p.group = n_heads / n_kv_heads, p.kvd = kv->kv_dim;
    p.units = c->attn_units;
    const int tiles = (n * p.group + p.units - 1) / p.units + c->n_sq;
    const int grid_x = tiles < c->n_tiles_max ? tiles : c->n_tiles_max;
    p.chunk = c->attn_chunk;
    const int split = splits_of(c, n, n_heads, n_kv_heads, hd, grid_x, span);
    p.n_split = split;
    const bool f16 = kv->kv_type[a] == EXSA_DTYPE_F16;
    attn_kernel k = hd == 64    ? pick_attn<64>(f16)
                    : hd == 128 ? pick_attn<128>(f16)
                                : pick_attn<32>(f16);
    const size_t smem = sizeof(float) * (64 * (size_t)(hd + 1) + (size_t)p.units * hd);
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)grid_x, (unsigned)n_kv_heads, (unsigned)split),
                  dim3(32 * p.units), smem);
    cudaLaunchKernelEx(&l.cfg, k, p);
    cu_check_launch(c, "attention");
    const int64_t warps = (int64_t)n * n_heads;
    cu_launch_cfg(c, &l, dim3((unsigned)((warps + 3) / 4)), dim3(128), 0);
    if (hd == 64)
        cudaLaunchKernelEx(&l.cfg, k_attn_merge<64>, (const float *)c->attn_part, n, n_heads, split,
                           out);
    else if (hd == 128)
        cudaLaunchKernelEx(&l.cfg, k_attn_merge<128>, (const float *)c->attn_part, n, n_heads,
                           split, out);
    else
        cudaLaunchKernelEx(&l.cfg, k_attn_merge<32>, (const float *)c->attn_part, n, n_heads, split,
                           out);
    cu_check_launch(c, "attention merge");
}
