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
#include "cuda/cuda.h"

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
    const float v = x[t * ldx + 32 * b + lane];
    float amax = fabsf(v);
    for (int o = 16; o; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float dd = amax / 127.0f, inv = dd > 0 ? 1.0f / dd : 0.0f;
    const int qv = __float2int_rn(v * inv);
    int sum = qv;
    for (int o = 16; o; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
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

/* ---- weight units ------------------------------------------------------------------------------ */

/* What a kernel reads of one matrix (segment). */
struct wview {
    const uint8_t *q;
    const __half *d;
    int64_t q_row;
    int d_row;
};

/* The rows of the activations one product multiplies: q8 or f32. */
struct xrow {
    const int8_t *q;
    const float *d, *s;
    const float *f;
};

__device__ __forceinline__ float h2f(__half h)
{
    return __half2float(h);
}

__device__ __forceinline__ void ld16(int *dst, const void *src)
{
    int4 v = __ldg((const int4 *)src);
    dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
}

/* The 6-bit scale and min of sub-block j of a K-quant super-block, from its 12 scale bytes as
 * three words (shifts, not byte indexing: j is not known at compile time). */
__device__ __forceinline__ void scale_min(int j, const unsigned *w, int *s, int *m)
{
    const int sh = 8 * (j & 3);
    const unsigned b0 = (w[0] >> sh) & 0xff, b1 = (w[1] >> sh) & 0xff, b2 = (w[2] >> sh) & 0xff;
    if (j < 4) {
        *s = (int)(b0 & 63);
        *m = (int)(b1 & 63);
    } else {
        *s = (int)((b2 & 0x0f) | ((b0 >> 6) << 4));
        *m = (int)((b2 >> 4) | ((b1 >> 6) << 4));
    }
}

/* Sum of 8 int8 x int8 products over ints a[0..n) and b[0..n). */
template <int N> __device__ __forceinline__ int dot_i8(const int *a, const int *b)
{
    int s = 0;
#pragma unroll
    for (int i = 0; i < N; i++)
        s = __dp4a(a[i], b[i], s);
    return s;
}

/* Loads the 16 int8 activations of values [o, o + 16) of one quantized row (shared or global
 * memory: a generic load). */
__device__ __forceinline__ void ldx16(int *dst, const int8_t *q, int64_t o)
{
    const int4 v = *(const int4 *)(q + o);
    dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
}

template <int GT> struct unit;

/* Q8_0 split: 64 values = two blocks; 16 ints of values, 2 scales. */
template <> struct unit<GT_Q8_0> {
    enum { VPU = 64 };
    int q[16];
    float d[2];
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        const uint8_t *p = w.q + r * w.q_row + 64 * u;
#pragma unroll
        for (int i = 0; i < 4; i++)
            ld16(q + 4 * i, p + 16 * i);
        const __half *dp = w.d + r * w.d_row + 2 * u;
        d[0] = h2f(dp[0]), d[1] = h2f(dp[1]);
    }
    __device__ float dot(const xrow &x, int64_t u) const
    {
        int a[16];
#pragma unroll
        for (int i = 0; i < 4; i++)
            ldx16(a + 4 * i, x.q, 64 * u + 16 * i);
        return d[0] * x.d[2 * u] * dot_i8<8>(q, a) + d[1] * x.d[2 * u + 1] * dot_i8<8>(q + 8, a + 8);
    }
};

/* Q4_0 split: 64 values = two blocks of 16 bytes (low nibbles: values 0-15, high: 16-31). */
template <> struct unit<GT_Q4_0> {
    enum { VPU = 64 };
    int q[8];
    float d[2];
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        const uint8_t *p = w.q + r * w.q_row + 32 * u;
        ld16(q, p), ld16(q + 4, p + 16);
        const __half *dp = w.d + r * w.d_row + 2 * u;
        d[0] = h2f(dp[0]), d[1] = h2f(dp[1]);
    }
    __device__ float dot(const xrow &x, int64_t u) const
    {
        float acc = 0;
#pragma unroll
        for (int b = 0; b < 2; b++) {
            int a[8], lo[4], hi[4];
            ldx16(a, x.q, 64 * u + 32 * b), ldx16(a + 4, x.q, 64 * u + 32 * b + 16);
#pragma unroll
            for (int i = 0; i < 4; i++)
                lo[i] = q[4 * b + i] & 0x0f0f0f0f, hi[i] = (q[4 * b + i] >> 4) & 0x0f0f0f0f;
            const int sumi = dot_i8<4>(lo, a) + dot_i8<4>(hi, a + 4);
            const int64_t blk = 2 * u + b;
            acc += d[b] * (x.d[blk] * sumi - 8.0f * x.s[blk]);
        }
        return acc;
    }
};

/* Q4_K and Q5_K: 64 values = group g of a super-block (low nibbles sub-block 2g, high 2g+1). */
template <bool Q5> struct unit_k45 {
    enum { VPU = 64 };
    int q[8];
    unsigned h[8];
    float dl, dh, ml, mh; /* d x scale and dmin x min of the two sub-blocks */
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        const int g = (int)(u & 3);
        const uint8_t *blk = w.q + r * w.q_row + (u >> 2) * (Q5 ? 176 : 144);
        const __half2 dm = *(const __half2 *)blk;
        unsigned sc[3];
        sc[0] = *(const unsigned *)(blk + 4), sc[1] = *(const unsigned *)(blk + 8);
        sc[2] = *(const unsigned *)(blk + 12);
        const uint8_t *qs = blk + (Q5 ? 48 : 16) + 32 * g;
        ld16(q, qs), ld16(q + 4, qs + 16);
        if (Q5) {
            int qh[8];
            ld16(qh, blk + 16), ld16(qh + 4, blk + 32);
#pragma unroll
            for (int i = 0; i < 8; i++)
                h[i] = (unsigned)qh[i] >> (2 * g);
        }
        int s, m;
        const float d = __low2float(dm), dmin = __high2float(dm);
        scale_min(2 * g, sc, &s, &m);
        dl = d * s, ml = dmin * m;
        scale_min(2 * g + 1, sc, &s, &m);
        dh = d * s, mh = dmin * m;
    }
    __device__ float dot(const xrow &x, int64_t u) const
    {
        int a[8], lo[8], hi[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            lo[i] = q[i] & 0x0f0f0f0f, hi[i] = (q[i] >> 4) & 0x0f0f0f0f;
            if (Q5) {
                lo[i] |= (int)((h[i] & 0x01010101u) << 4);
                hi[i] |= (int)(((h[i] >> 1) & 0x01010101u) << 4);
            }
        }
        ldx16(a, x.q, 64 * u), ldx16(a + 4, x.q, 64 * u + 16);
        const int sl = dot_i8<8>(lo, a);
        ldx16(a, x.q, 64 * u + 32), ldx16(a + 4, x.q, 64 * u + 48);
        const int sh = dot_i8<8>(hi, a);
        const int64_t b = 2 * u;
        return dl * x.d[b] * sl - ml * x.s[b] + dh * x.d[b + 1] * sh - mh * x.s[b + 1];
    }
};
template <> struct unit<GT_Q4_K> : unit_k45<false> {};
template <> struct unit<GT_Q5_K> : unit_k45<true> {};

/* Q6_K split: unit i of a super-block: half n = i / 2, lanes l in [16 h, 16 h + 16), h = i % 2,
 * values 128 n + 32 k + l for k < 4 (16 each, one scale each). */
template <> struct unit<GT_Q6_K> {
    enum { VPU = 64 };
    int a[4], b[4];
    unsigned h[4];
    float ds[4];
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        const int i = (int)(u & 3), n = i >> 1, hh = i & 1;
        const uint8_t *body = w.q + r * w.q_row + (u >> 2) * Q6_BODY;
        ld16(a, body + 64 * n + 16 * hh);
        ld16(b, body + 64 * n + 32 + 16 * hh);
        ld16((int *)h, body + 128 + 32 * n + 16 * hh);
        const float d = h2f(w.d[r * w.d_row + (u >> 2)]);
        const int8_t *sc = (const int8_t *)(body + 192 + 8 * n + hh);
#pragma unroll
        for (int k = 0; k < 4; k++)
            ds[k] = d * sc[2 * k];
    }
    __device__ float dot(const xrow &x, int64_t u) const
    {
        const int i = (int)(u & 3), n = i >> 1, hh = i & 1;
        const int64_t v0 = (u >> 2) * 256 + 128 * n + 16 * hh;
        float acc = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int qk[4], xa[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int nib = (k & 2) ? (((k & 1) ? b[j] : a[j]) >> 4) : ((k & 1) ? b[j] : a[j]);
                const int v = (nib & 0x0f0f0f0f) | (int)(((h[j] >> (2 * k)) & 0x03030303u) << 4);
                qk[j] = __vsub4(v, 0x20202020);
            }
            ldx16(xa, x.q, v0 + 32 * k);
            acc += ds[k] * x.d[(v0 + 32 * k) >> 5] * dot_i8<4>(qk, xa);
        }
        return acc;
    }
};

/* Float weights: VPU values as f32 FMAs against f32 activations. */
template <int GT> struct unit_f {
    enum { VPU = GT == GT_F32 ? 32 : 64 };
    int q[GT == GT_F32 ? 32 : 32]; /* 128 bytes: 32 f32 or 64 f16/bf16 */
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        const uint8_t *p = w.q + r * w.q_row + 128 * u;
#pragma unroll
        for (int i = 0; i < 8; i++)
            ld16(q + 4 * i, p + 16 * i);
    }
    __device__ float dot(const xrow &x, int64_t u) const
    {
        const float4 *xf = (const float4 *)(x.f + VPU * u);
        float acc = 0;
#pragma unroll
        for (int i = 0; i < VPU / 4; i++) {
            const float4 xv = xf[i]; /* shared or global */
            float w0, w1, w2, w3;
            if (GT == GT_F32) {
                w0 = __int_as_float(q[4 * i]), w1 = __int_as_float(q[4 * i + 1]);
                w2 = __int_as_float(q[4 * i + 2]), w3 = __int_as_float(q[4 * i + 3]);
            } else if (GT == GT_F16) {
                const __half2 p0 = *(const __half2 *)&q[2 * i], p1 = *(const __half2 *)&q[2 * i + 1];
                w0 = __low2float(p0), w1 = __high2float(p0), w2 = __low2float(p1), w3 = __high2float(p1);
            } else {
                const unsigned u0 = (unsigned)q[2 * i], u1 = (unsigned)q[2 * i + 1];
                w0 = __uint_as_float(u0 << 16), w1 = __uint_as_float(u0 & 0xffff0000u);
                w2 = __uint_as_float(u1 << 16), w3 = __uint_as_float(u1 & 0xffff0000u);
            }
            acc = fmaf(w0, xv.x, acc), acc = fmaf(w1, xv.y, acc);
            acc = fmaf(w2, xv.z, acc), acc = fmaf(w3, xv.w, acc);
        }
        return acc;
    }
};
template <> struct unit<GT_F32> : unit_f<GT_F32> {};
template <> struct unit<GT_F16> : unit_f<GT_F16> {};
template <> struct unit<GT_BF16> : unit_f<GT_BF16> {};

/* ---- the row loop shared by the dense and the MoE kernels --------------------------------------- */

/* Weight units a lane loads before it multiplies any: as many as the registers hold (a float
 * unit is 128 bytes, a quantized one 32-48). */
__host__ __device__ constexpr int ub_of(int gt, bool glu)
{
    return gt_quantized(gt) ? (glu ? 2 : 4) : (glu ? 1 : 2);
}

/* acc[t] += W[r] . x_t over the units u = u0 + k tpr of the row, UB units loaded at once. */
template <int GT, int NT, int UB = ub_of(GT, false)>
__device__ __forceinline__ void row_dot(const wview &w, int64_t r, int64_t U, int64_t first,
                                        int tpr, const xrow *x, int n, float *acc)
{
    for (int64_t u0 = first; u0 < U; u0 += (int64_t)UB * tpr) {
        unit<GT> wu[UB];
#pragma unroll
        for (int j = 0; j < UB; j++)
            if (u0 + j * tpr < U)
                wu[j].load(w, r, u0 + j * tpr);
#pragma unroll
        for (int j = 0; j < UB; j++)
            if (u0 + j * tpr < U)
#pragma unroll
                for (int t = 0; t < NT; t++)
                    if (t < n)
                        acc[t] += wu[j].dot(x[t], u0 + j * tpr);
    }
}

__device__ __forceinline__ float reduce_lanes(float v, int tpr)
{
    for (int o = tpr >> 1; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float silu(float g)
{
    return g / (1.0f + __expf(-g));
}

/* ---- dense kernel ------------------------------------------------------------------------------ */

#define MMV_THREADS 128 /* small blocks: even a 2048-row matrix spreads over every SM */
#define MMV_SMEM_MAX (160 << 10) /* dynamic shared memory a launch may ask for */

struct mmv_params {
    wview w[3];
    int64_t rows[3]; /* rows of each segment; glu: rows[0] = rows[1] */
    int64_t row0[3];
    float *y[3];
    int64_t ldy[3];
    int n_seg;
    int64_t total, K, U;
    int tpr, n;
    const float *x; /* [n][ldx] f32 */
    int64_t ldx;
    const float *nw; /* RMSNorm weights: x is normed on the way in (NULL: as it is) */
    float eps;
    bool acc;
};

/* Every token's input into shared memory, normed when p.nw is set: quantized per 32 (int8 q,
 * f32 d and d x sum) for quantized weights, or f32. All threads of the block; ends synced. */
template <int NT, bool QUANT>
__device__ void stage_x(const mmv_params &p, unsigned char *sm)
{
    __shared__ float part[MMV_THREADS / 32][NT], scale[NT];
    const int tid = threadIdx.x, K = (int)p.K, n = p.n < NT ? p.n : NT;
    if (p.nw) { /* sum of squares per token: float4 per thread, then the warps' partials */
        float ss[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            ss[t] = 0;
        for (int i = 4 * tid; i < K; i += 4 * MMV_THREADS)
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < n) {
                    const float4 v = *(const float4 *)(p.x + t * p.ldx + i);
                    ss[t] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            for (int o = 16; o; o >>= 1)
                ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], o);
            if ((tid & 31) == 0)
                part[tid >> 5][t] = ss[t];
        }
        __syncthreads();
        if (tid < NT) {
            float s = 0;
            for (int w = 0; w < MMV_THREADS / 32; w++)
                s += part[w][tid];
            scale[tid] = 1.0f / sqrtf(s / K + p.eps);
        }
        __syncthreads();
    }
    if (!QUANT) { /* f32: one float4 per thread and step */
        float *xf = (float *)sm;
        for (int i = 4 * tid; i < n * K; i += 4 * MMV_THREADS) {
            const int t = i / K, k = i % K;
            float4 v = *(const float4 *)(p.x + t * p.ldx + k);
            if (p.nw) {
                const float4 g = *(const float4 *)(p.nw + k);
                const float sc = scale[t];
                v = make_float4(v.x * sc * g.x, v.y * sc * g.y, v.z * sc * g.z, v.w * sc * g.w);
            }
            *(float4 *)(xf + i) = v;
        }
        __syncthreads();
        return;
    }
    int8_t *q = (int8_t *)sm;
    float *d = (float *)(sm + (size_t)NT * K), *s = d + NT * (K / 32);
    /* 8 values per thread; the 4 threads of a 32-block meet through shuffles (all threads busy:
     * the whole block waits on this) */
    for (int i = 8 * tid; i < n * K; i += 8 * MMV_THREADS) {
        const int t = i / K, k = i % K;
        float v[8];
#pragma unroll
        for (int h = 0; h < 8; h += 4) {
            float4 a = *(const float4 *)(p.x + t * p.ldx + k + h);
            if (p.nw) {
                const float4 g = *(const float4 *)(p.nw + k + h);
                const float sc = scale[t];
                a = make_float4(a.x * sc * g.x, a.y * sc * g.y, a.z * sc * g.z, a.w * sc * g.w);
            }
            v[h] = a.x, v[h + 1] = a.y, v[h + 2] = a.z, v[h + 3] = a.w;
        }
        float amax = 0;
#pragma unroll
        for (int h = 0; h < 8; h++)
            amax = fmaxf(amax, fabsf(v[h]));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
        const float dd = amax / 127.0f, inv = dd > 0 ? 1.0f / dd : 0.0f;
        int sum = 0, pk[2];
#pragma unroll
        for (int h = 0; h < 8; h += 4) {
            const int q0 = __float2int_rn(v[h] * inv), q1 = __float2int_rn(v[h + 1] * inv);
            const int q2 = __float2int_rn(v[h + 2] * inv), q3 = __float2int_rn(v[h + 3] * inv);
            sum += q0 + q1 + q2 + q3;
            pk[h / 4] = (q0 & 0xff) | (q1 & 0xff) << 8 | (q2 & 0xff) << 16 | (q3 & 0xff) << 24;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        *(int2 *)(q + (size_t)t * K + k) = make_int2(pk[0], pk[1]);
        if ((tid & 3) == 0) {
            const int b = t * (K / 32) + k / 32;
            d[b] = dd;
            s[b] = dd * (float)sum;
        }
    }
    __syncthreads();
}

template <int GT, int NT, bool GLU>
__global__ void __launch_bounds__(MMV_THREADS, 4) k_mmv(mmv_params p)
{
    pdl_trigger();
    extern __shared__ __align__(16) unsigned char sm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, rpw = 32 / p.tpr;
    const int sub = lane % p.tpr;
    int64_t r = ((int64_t)blockIdx.x * (MMV_THREADS / 32) + warp) * rpw + lane / p.tpr;
    const bool live = r < p.total;
    int sg = 0;
    while (live && sg < p.n_seg - 1 && r >= p.rows[sg])
        r -= p.rows[sg++];
    if (!live)
        r = 0;
    const int64_t U = live ? p.U : 0; /* dead lanes still join the shuffles and the barriers */
    constexpr bool Q = gt_quantized(GT);
    constexpr int UB = ub_of(GT, GLU);
    /* the first UB weight units of the row(s) are in flight while the block stages x */
    unit<GT> w0[UB], w1[GLU ? UB : 1];
#pragma unroll
    for (int j = 0; j < UB; j++)
        if (sub + j * p.tpr < U) {
            w0[j].load(p.w[sg], p.row0[sg] + r, sub + j * p.tpr);
            if (GLU)
                w1[GLU ? j : 0].load(p.w[1], p.row0[1] + r, sub + j * p.tpr);
        }
    pdl_wait();
    stage_x<NT, Q>(p, sm);
    xrow x[NT];
    const int K = (int)p.K;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        x[t].q = (const int8_t *)sm + t * K;
        x[t].d = (const float *)(sm + (size_t)NT * K) + t * (K / 32);
        x[t].s = (const float *)(sm + (size_t)NT * K) + NT * (K / 32) + t * (K / 32);
        x[t].f = (const float *)sm + t * K;
    }
    float a0[NT], a1[NT];
#pragma unroll
    for (int t = 0; t < NT; t++)
        a0[t] = a1[t] = 0;
#pragma unroll
    for (int j = 0; j < UB; j++)
        if (sub + j * p.tpr < U)
#pragma unroll
            for (int t = 0; t < NT; t++)
                if (t < p.n) {
                    a0[t] += w0[j].dot(x[t], sub + j * p.tpr);
                    if (GLU)
                        a1[t] += w1[GLU ? j : 0].dot(x[t], sub + j * p.tpr);
                }
    if (U > (int64_t)UB * p.tpr) { /* long rows: the rest, UB units at a time */
        const int64_t rest = sub + (int64_t)UB * p.tpr;
        row_dot<GT, NT, UB>(p.w[sg], p.row0[sg] + r, U, rest, p.tpr, x, p.n, a0);
        if (GLU)
            row_dot<GT, NT, UB>(p.w[1], p.row0[1] + r, U, rest, p.tpr, x, p.n, a1);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        a0[t] = reduce_lanes(a0[t], p.tpr);
        if (GLU)
            a1[t] = reduce_lanes(a1[t], p.tpr);
    }
    if (!live || sub != 0)
        return;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (t >= p.n)
            break;
        float *y = p.y[sg] + t * p.ldy[sg] + r;
        const float v = GLU ? silu(a0[t]) * a1[t] : a0[t];
        *y = p.acc ? *y + v : v;
    }
}

typedef void (*mmv_kernel)(mmv_params);

template <int GT> static mmv_kernel pick_nt(int nt, bool glu)
{
    switch (nt) {
    case 1: return glu ? k_mmv<GT, 1, true> : k_mmv<GT, 1, false>;
    case 2: return glu ? k_mmv<GT, 2, true> : k_mmv<GT, 2, false>;
    case 4: return glu ? k_mmv<GT, 4, true> : k_mmv<GT, 4, false>;
    default: return glu ? k_mmv<GT, 8, true> : k_mmv<GT, 8, false>;
    }
}

static mmv_kernel pick(int gt, int nt, bool glu)
{
    switch (gt) {
    case GT_F32: return pick_nt<GT_F32>(nt, glu);
    case GT_F16: return pick_nt<GT_F16>(nt, glu);
    case GT_BF16: return pick_nt<GT_BF16>(nt, glu);
    case GT_Q8_0: return pick_nt<GT_Q8_0>(nt, glu);
    case GT_Q4_0: return pick_nt<GT_Q4_0>(nt, glu);
    case GT_Q4_K: return pick_nt<GT_Q4_K>(nt, glu);
    case GT_Q5_K: return pick_nt<GT_Q5_K>(nt, glu);
    default: return pick_nt<GT_Q6_K>(nt, glu);
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
        for (int nt = 1; nt <= 8; nt *= 2)
            for (int glu = 0; glu < 2; glu++)
                cudaFuncSetAttribute(pick(gt, nt, glu), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     MMV_SMEM_MAX);
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
    const int nt = a->n <= 1 ? 1 : a->n <= 2 ? 2 : a->n <= 4 ? 4 : 8;
    const int64_t rows_per_block = (MMV_THREADS / 32) * (32 / p.tpr);
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((p.total + rows_per_block - 1) / rows_per_block)),
                  dim3(MMV_THREADS), smem_of(w0->gt, nt, p.K));
    cudaLaunchKernelEx(&l.cfg, pick(w0->gt, nt, a->glu), p);
    cu_check_launch(c, "matrix-vector product");
}

/* ---- MoE ---------------------------------------------------------------------------------------- */

/* One warp per token: sigmoid, top-k by sigmoid + bias, weights normalised (moe_route in C). */
__global__ void k_moe_route(const float *__restrict__ logits, const float *__restrict__ bias,
                            int n, int E, int k, int32_t *ids, float *wts)
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
    pdl_trigger();
    pdl_wait();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
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
    cudaLaunchKernelEx(&lc.cfg, k_moe_combine, (const float *)c->moe_out,
                       (const float *)c->moe_wts, n, k, dim, out);
    cu_check_launch(c, "moe combine");
}
