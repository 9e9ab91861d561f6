/*
 * ops.cu: the CUDA backend's small ops: RMSNorm (a warp per 32 values for few rows, a block
 * per row for many), per-head q/k RMSNorm with RoPE in one pass, RoPE from the table of cos/sin
 * the reference computes, SwiGLU, add, the gated short conv (a thread per entry and channel,
 * reading one conv slot and writing the other), row gather, and the read-bandwidth probe.
 */
#include "cuda/cuda.h"

__device__ __forceinline__ float block_sum(float v, float *sm)
{
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0)
        sm[w] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < nw; i++)
        s += sm[i];
    __syncthreads();
    return s;
}

/* One block per row (many rows: prefill). */
__global__ void k_rmsnorm(const float *x, const float *__restrict__ w, float *y, int dim, float eps)
{
    pdl_trigger();
    pdl_wait();
    __shared__ float sm[32];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * dim;
    float ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss, sm);
    const float scale = 1.0f / sqrtf(ss / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        y[r * dim + i] = xr[i] * scale * w[i];
}

/* One warp per 32 values (few rows: decode): each warp sums its whole row, so every load is
 * issued at once and no block barrier waits. dim a multiple of 32, at most 32 x 64; not in
 * place (a warp writes its values while others of the row may still read theirs). */
__global__ void k_rmsnorm_small(const float *x, const float *__restrict__ w, float *y, int rows,
                                int dim, float eps)
{
    pdl_trigger();
    pdl_wait();
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31, nb = dim / 32;
    if (wid >= (int64_t)rows * nb)
        return;
    const int64_t r = wid / nb;
    const int b = (int)(wid % nb);
    const float *xr = x + r * dim;
    float v[64], ss = 0;
#pragma unroll
    for (int i = 0; i < 64; i++)
        if (i < nb) {
            v[i] = xr[32 * i + lane];
            ss += v[i] * v[i];
        }
    for (int o = 16; o; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float scale = 1.0f / sqrtf(ss / dim + eps);
    y[r * dim + 32 * b + lane] = xr[32 * b + lane] * scale * w[32 * b + lane];
}

/* The pool row of entry e's own position. */
__device__ __forceinline__ int64_t own_row(const struct dstep &ds, int e)
{
    return kv_row(ds, ds.ent_sq[e], ds.pos[e]);
}

__device__ __forceinline__ void kv_put(const struct kv_dst &d, void *pool, int64_t at, float v)
{
    if (d.f16)
        ((__half *)pool)[at] = to_kv<__half>(v);
    else
        ((float *)pool)[at] = v;
}

/* One warp per (entry, head) of q, then of k: RMSNorm over the head, then NEOX RoPE; with a
 * cache destination, k is stored after RoPE and further warps store v. */
template <int HD>
__global__ void k_qk_norm_rope(float *q, float *k, const float *__restrict__ qw,
                               const float *__restrict__ kw, struct dstep ds,
                               const float *__restrict__ cs, int n, int H, int Hkv, float eps,
                               struct kv_dst st)
{
    pdl_trigger();
    pdl_wait();
    constexpr int V = HD / 32;
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    const int64_t nq = (int64_t)n * H, nk = (int64_t)n * Hkv;
    if (st.kp && wid >= nq + nk && wid < nq + 2 * nk) { /* v: stored as it is */
        const int64_t hw = wid - nq - nk, e = hw / Hkv,
                      at = own_row(ds, (int)e) * st.kvd + (hw % Hkv) * HD;
#pragma unroll
        for (int i = 0; i < V; i++)
            kv_put(st, st.vp, at + lane + 32 * i, st.v[hw * HD + lane + 32 * i]);
        return;
    }
    if (wid >= nq + nk)
        return;
    const int32_t *pos = ds.pos;
    const bool is_q = wid < (int64_t)n * H;
    const int64_t hw = is_q ? wid : wid - (int64_t)n * H;
    const int heads = is_q ? H : Hkv, e = (int)(hw / heads);
    float *x = (is_q ? q : k) + hw * HD;
    const float *w = is_q ? qw : kw;
    float v[V], ss = 0;
#pragma unroll
    for (int i = 0; i < V; i++)
        v[i] = x[lane + 32 * i], ss += v[i] * v[i];
    for (int o = 16; o; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float scale = 1.0f / sqrtf(ss / HD + eps);
#pragma unroll
    for (int i = 0; i < V; i++)
        v[i] = v[i] * scale * w[lane + 32 * i];
    const float *c = cs + (int64_t)pos[e] * HD; /* HD / 2 (cos, sin) pairs */
#pragma unroll
    for (int i = 0; i < V / 2; i++) {
        const int f = lane + 32 * i;
        const float co = c[2 * f], si = c[2 * f + 1], a = v[i], b = v[i + V / 2];
        v[i] = a * co - b * si;
        v[i + V / 2] = a * si + b * co;
    }
#pragma unroll
    for (int i = 0; i < V; i++)
        x[lane + 32 * i] = v[i];
    if (!is_q && st.kp) {
        const int64_t at = own_row(ds, e) * st.kvd + (hw % Hkv) * HD;
#pragma unroll
        for (int i = 0; i < V; i++)
            kv_put(st, st.kp, at + lane + 32 * i, v[i]);
    }
}

/* NEOX RoPE, one thread per (entry, head, frequency). */
__global__ void k_rope(float *x, const int32_t *__restrict__ pos, const float *__restrict__ cs,
                       int n, int H, int hd)
{
    pdl_trigger();
    pdl_wait();
    const int half = hd / 2;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * H * half)
        return;
    const int f = (int)(i % half);
    const int64_t eh = i / half, e = eh / H;
    float *xh = x + eh * hd;
    const float co = cs[((int64_t)pos[e] * half + f) * 2],
                si = cs[((int64_t)pos[e] * half + f) * 2 + 1];
    const float a = xh[f], b = xh[f + half];
    xh[f] = a * co - b * si;
    xh[f + half] = a * si + b * co;
}

__global__ void k_swiglu(float *out, const float *g, const float *u, long n)
{
    pdl_trigger();
    pdl_wait();
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void k_add(float *y, const float *x, long n)
{
    pdl_trigger();
    pdl_wait();
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += x[i];
}

/* One thread per (entry, channel): the window of each entry is its sequence's previous entries
 * in this step, or the state from before it; the last entry of each sequence writes the state
 * after the step. Every product is recomputed where it is needed, so entries are independent. */
__global__ void k_shortconv(struct dstep ds, float *__restrict__ y, const float *__restrict__ bcx,
                            const float *__restrict__ w, float *state, int dim, int l_cache)
{
    pdl_trigger();
    pdl_wait();
    const int p = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x, ns = l_cache - 1;
    if (c >= dim)
        return;
    const int e = ds.sq_ent[p], j = ds.ent_sq[e], off = ds.sq_ent_off[j];
    const int i = p - off, m = ds.sq_ent_off[j + 1] - off;
    const size_t slot = (size_t)dim * ns;
    const float *rd = state + (size_t)ds.conv_rd[j] * slot + (size_t)c * ns;
    const float *wc = w + (size_t)c * l_cache;
    /* the gated input at local index q of this sequence: this step's, or the old state's */
#define VAL(q)                                                                                     \
    ((q) >= 0 ? bcx[(size_t)ds.sq_ent[off + (q)] * 3 * dim + c] *                                  \
                    bcx[(size_t)ds.sq_ent[off + (q)] * 3 * dim + 2 * dim + c]                      \
              : rd[ns + (q)])
    float acc = wc[ns] * VAL(i);
    for (int k = 0; k < ns; k++)
        acc += wc[k] * VAL(i - ns + k);
    y[(size_t)e * dim + c] = bcx[(size_t)e * 3 * dim + dim + c] * acc;
    if (i == m - 1) {
        float *wr = state + (size_t)ds.conv_wr[j] * slot + (size_t)c * ns;
        for (int k = 0; k < ns; k++)
            wr[k] = VAL(m - ns + k);
    }
#undef VAL
}

__global__ void k_gather(float *dst, const float *src, const int32_t *__restrict__ rows, int r0,
                         int n_rows, int dim)
{
    const int64_t i = elementwise_start();
    if (i >= (int64_t)n_rows * dim)
        return;
    const int64_t r = i / dim, c = i % dim;
    dst[i] = src[(int64_t)rows[r0 + r] * dim + c];
}

static dim3 blocks_for(int64_t n, int per)
{
    return dim3((unsigned)((n + per - 1) / per));
}

void cu_rmsnorm(struct cuda_be *c, float *y, const float *x, const float *w, int rows, int dim,
                float eps)
{
    struct cu_launch l;
    if (dim % 32 == 0 && dim <= 32 * 64 && rows <= MMV_MAX_N && y != x) {
        cu_launch_cfg(c, &l, blocks_for((int64_t)rows * (dim / 32), 8), dim3(256), 0);
        cudaLaunchKernelEx(&l.cfg, k_rmsnorm_small, x, w, y, rows, dim, eps);
    } else {
        cu_launch_cfg(c, &l, dim3((unsigned)rows), dim3(dim >= 1024 ? 256 : 128), 0);
        cudaLaunchKernelEx(&l.cfg, k_rmsnorm, x, w, y, dim, eps);
    }
    cu_check_launch(c, "rmsnorm");
}

void cu_qk_norm_rope(struct cuda_be *c, float *q, float *k, const float *qw, const float *kw, int n,
                     int H, int Hkv, int hd, float eps, struct kv_dst st)
{
    struct cu_launch l;
    const int64_t warps = (int64_t)n * (H + (st.kp ? 2 : 1) * Hkv);
    cu_launch_cfg(c, &l, blocks_for(warps, 4), dim3(128), 0);
    if (hd == 64)
        cudaLaunchKernelEx(&l.cfg, k_qk_norm_rope<64>, q, k, qw, kw, c->ds,
                           (const float *)c->rope_cs, n, H, Hkv, eps, st);
    else
        cudaLaunchKernelEx(&l.cfg, k_qk_norm_rope<128>, q, k, qw, kw, c->ds,
                           (const float *)c->rope_cs, n, H, Hkv, eps, st);
    cu_check_launch(c, "q/k norm and rope");
}

void cu_rope(struct cuda_be *c, float *x, int n, int H, int hd)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, blocks_for((int64_t)n * H * (hd / 2), 256), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_rope, x, (const int32_t *)c->ds.pos, (const float *)c->rope_cs, n,
                       H, hd);
    cu_check_launch(c, "rope");
}

void cu_swiglu(struct cuda_be *c, float *out, const float *g, const float *u, long n)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, blocks_for(n, 256), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_swiglu, out, g, u, n);
    cu_check_launch(c, "swiglu");
}

void cu_add(struct cuda_be *c, float *y, const float *x, long n)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, blocks_for(n, 256), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_add, y, x, n);
    cu_check_launch(c, "add");
}

void cu_shortconv(struct cuda_be *c, float *y, const float *bcx, const float *w, float *state,
                  int n, int n_sq, int dim, int l_cache)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((dim + 127) / 128), (unsigned)n), dim3(128), 0);
    cudaLaunchKernelEx(&l.cfg, k_shortconv, c->ds, y, bcx, w, state, dim, l_cache);
    cu_check_launch(c, "short conv");
}

void cu_gather(struct cuda_be *c, float *dst, const float *src, int r0, int n_rows, int dim)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, blocks_for((int64_t)n_rows * dim, 256), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_gather, dst, src, (const int32_t *)c->ds.out_rows, r0, n_rows,
                       dim);
    cu_check_launch(c, "gather");
}

/* ---- bandwidth probe ------------------------------------------------------------------------ */

__global__ void k_read(const int4 *__restrict__ p, size_t n, int *out)
{
    int acc = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const int4 v = __ldcs(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678)
        out[0] = acc; /* keeps the loads */
}

double cu_read_bandwidth(size_t bytes)
{
    void *buf = NULL;
    int *out = NULL;
    cudaEvent_t a, b;
    if (cudaMalloc(&buf, bytes) != cudaSuccess || cudaMalloc((void **)&out, 4) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(buf);
        return -1;
    }
    cudaMemset(buf, 1, bytes);
    cudaEventCreate(&a), cudaEventCreate(&b);
    int sms = 132;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    double best = 0;
    for (int rep = 0; rep < 6; rep++) {
        cudaEventRecord(a);
        k_read<<<sms * 8, 512>>>((const int4 *)buf, bytes / 16, out);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        if (rep > 0 && ms > 0 && bytes / (ms * 1e6) > best)
            best = bytes / (ms * 1e6);
    }
    cudaEventDestroy(a), cudaEventDestroy(b);
    cudaFree(buf), cudaFree(out);
    return cudaGetLastError() == cudaSuccess ? best : -1;
}
