/*
 * mmv.h: the decode products' device code, shared by mmv.cu (the launcher, the MoE products)
 * and the mmv-*.cu files that instantiate the dense kernel for a few weight types each (so that
 * they compile side by side): the weight units of each type (how a lane loads and multiplies
 * VPU values), the row loop, the activation staging and the dense kernel itself.
 */
#ifndef EXSA_CUDA_MMV_H
#define EXSA_CUDA_MMV_H

#include "cuda/cuda.h"

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

/* A warp's 32 values (v: this lane's) quantized to 8 bits: the lane's q, and the block's scale d
 * and sum of q (every lane; all 32 lanes must take part). */
__device__ __forceinline__ int quant_warp32(float v, float *d, int *sum)
{
    float amax = fabsf(v);
    for (int o = 16; o; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    *d = amax / 127.0f;
    const float inv = *d > 0 ? 1.0f / *d : 0.0f;
    const int q = __float2int_rn(v * inv);
    int s = q;
    for (int o = 16; o; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    *sum = s;
    return q;
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

/* Unit u of row r of a split layout (Q8_0, Q4_0): N 16-byte pieces of values, and the unit's
 * two block scales. */
template <int N>
__device__ __forceinline__ void load_split(const wview &w, int64_t r, int64_t u, int *q, float *d)
{
    const uint8_t *p = w.q + r * w.q_row + 16 * N * u;
#pragma unroll
    for (int i = 0; i < N; i++)
        ld16(q + 4 * i, p + 16 * i);
    const __half *dp = w.d + r * w.d_row + 2 * u;
    d[0] = h2f(dp[0]), d[1] = h2f(dp[1]);
}

/* Q8_0 split: 64 values = two blocks; 16 ints of values, 2 scales. */
template <> struct unit<GT_Q8_0> {
    enum { VPU = 64 };
    int q[16];
    float d[2];
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        load_split<4>(w, r, u, q, d);
    }
    __device__ float dot(const xrow &x, int64_t u) const
    {
        int a[16];
#pragma unroll
        for (int i = 0; i < 4; i++)
            ldx16(a + 4 * i, x.q, 64 * u + 16 * i);
        return d[0] * x.d[2 * u] * dot_i8<8>(q, a) +
               d[1] * x.d[2 * u + 1] * dot_i8<8>(q + 8, a + 8);
    }
};

/* Q4_0 split: 64 values = two blocks of 16 bytes (low nibbles: values 0-15, high: 16-31). */
template <> struct unit<GT_Q4_0> {
    enum { VPU = 64 };
    int q[8];
    float d[2];
    __device__ void load(const wview &w, int64_t r, int64_t u)
    {
        load_split<2>(w, r, u, q, d);
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
// clang-format off
template <> struct unit<GT_Q4_K> : unit_k45<false> {};
template <> struct unit<GT_Q5_K> : unit_k45<true> {};
// clang-format on

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
                qk[j] = (nib & 0x0f0f0f0f) | (int)(((h[j] >> (2 * k)) & 0x03030303u) << 4);
            }
            ldx16(xa, x.q, v0 + 32 * k);
            /* q - 32 as (unsigned q) . x - 32 sum(x): one dp4a a word instead of a byte-wise
             * subtraction */
            const int sx = __dp4a(
                0x01010101, xa[0],
                __dp4a(0x01010101, xa[1], __dp4a(0x01010101, xa[2], __dp4a(0x01010101, xa[3], 0))));
            acc += ds[k] * x.d[(v0 + 32 * k) >> 5] * (float)(dot_i8<4>(qk, xa) - 32 * sx);
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
                const __half2 p0 = *(const __half2 *)&q[2 * i],
                              p1 = *(const __half2 *)&q[2 * i + 1];
                w0 = __low2float(p0), w1 = __high2float(p0), w2 = __low2float(p1),
                w3 = __high2float(p1);
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
// clang-format off
template <> struct unit<GT_F32> : unit_f<GT_F32> {};
template <> struct unit<GT_F16> : unit_f<GT_F16> {};
template <> struct unit<GT_BF16> : unit_f<GT_BF16> {};
// clang-format on

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

#define MMV_THREADS 128          /* small blocks: even a 2048-row matrix spreads over every SM */
#define MMV_SMEM_MAX (160 << 10) /* dynamic shared memory a launch may ask for */
#define MMV_BLOCKS_PER_SM 4      /* the grid cap's default (cu_mmv_grid_cap) */

/* Resident blocks an SM the kernel's registers must allow: 5 (96 registers) where the 4-bit and
 * 6-bit units of one token fit without spilling, else 4 (128). */
__host__ __device__ constexpr int min_blocks_of(int gt, int nt, bool lng)
{
    if (nt == 1 && !lng && (gt == GT_Q4_0 || gt == GT_Q4_K || gt == GT_Q5_K || gt == GT_Q6_K))
        return 5;
    return 4;
}

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
    bool inslot; /* the next row's units loaded as this row's are used (else after the row) */
};

/* Every token's input into shared memory, normed when p.nw is set: quantized per 32 (int8 q,
 * f32 d and d x sum) for quantized weights, or f32. All threads of the block; ends synced. */
template <int NT, bool QUANT> __device__ void stage_x(const mmv_params &p, unsigned char *sm)
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

/* Row R of the launch (counted over the segments) as (segment, row in it); false past the end. */
__device__ __forceinline__ bool seg_row(const mmv_params &p, int64_t R, int *sg, int64_t *r)
{
    *sg = 0, *r = R;
    if (R >= p.total)
        return false;
    while (*sg < p.n_seg - 1 && *r >= p.rows[*sg])
        *r -= p.rows[(*sg)++];
    return true;
}

/* The first UB units of a lane's part of row r of segment sg (and of the up matrix). */
template <int GT, bool GLU, int UB>
__device__ __forceinline__ void load_units(const mmv_params &p, int sg, int64_t r, int sub,
                                           int64_t U, unit<GT> *w0, unit<GT> *w1)
{
#pragma unroll
    for (int j = 0; j < UB; j++)
        if (sub + j * p.tpr < U) {
            w0[j].load(p.w[sg], p.row0[sg] + r, sub + j * p.tpr);
            if (GLU)
                w1[j].load(p.w[1], p.row0[1] + r, sub + j * p.tpr);
        }
}

/* A block stages x once and then walks rows blockIdx.x, + gridDim.x, ... (in groups of a
 * block's rows). Short rows (at most UB units a lane: !LONG): a lane's units of its next row are
 * loaded into the registers of the current row's units as each is used, so they are in flight
 * while the row is finished, reduced and written. Lanes past the end still join the shuffles
 * and the barriers. */
template <int GT, int NT, bool GLU, bool LONG>
__global__ void __launch_bounds__(MMV_THREADS, min_blocks_of(GT, NT, LONG)) k_mmv(mmv_params p)
{
    pdl_trigger();
    extern __shared__ __align__(16) unsigned char sm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, rpw = 32 / p.tpr;
    const int sub = lane % p.tpr, slot = lane / p.tpr;
    const int64_t per_block = (MMV_THREADS / 32) * rpw, stride = (int64_t)gridDim.x * per_block;
    constexpr bool Q = gt_quantized(GT);
    constexpr int UB = ub_of(GT, GLU);
    int64_t wr = (int64_t)blockIdx.x * per_block + warp * rpw; /* the warp's first row */
    int sg;
    int64_t r;
    bool live = seg_row(p, wr + slot, &sg, &r);
    unit<GT> w0[UB], w1[GLU ? UB : 1];
    load_units<GT, GLU, UB>(p, sg, r, sub, live ? p.U : 0, w0, w1);
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
    for (; wr < p.total; wr += stride) {
        const int64_t U = live ? p.U : 0;
        int nsg;
        int64_t nr;
        const bool nlive = seg_row(p, wr + stride + slot, &nsg, &nr);
        const int64_t nU = nlive ? p.U : 0;
        float a0[NT], a1[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
            a0[t] = a1[t] = 0;
#pragma unroll
        for (int j = 0; j < UB; j++) {
            const int64_t u = sub + j * p.tpr;
            if (u < U)
#pragma unroll
                for (int t = 0; t < NT; t++)
                    if (t < p.n) {
                        a0[t] += w0[j].dot(x[t], u);
                        if (GLU)
                            a1[t] += w1[GLU ? j : 0].dot(x[t], u);
                    }
            if (!LONG && p.inslot && u < nU) {
                w0[j].load(p.w[nsg], p.row0[nsg] + nr, u);
                if (GLU)
                    w1[GLU ? j : 0].load(p.w[1], p.row0[1] + nr, u);
            }
        }
        if (LONG) { /* rows past UB units a lane: the rest, UB at a time */
            const int64_t rest = sub + (int64_t)UB * p.tpr;
            row_dot<GT, NT, UB>(p.w[sg], p.row0[sg] + r, U, rest, p.tpr, x, p.n, a0);
            if (GLU)
                row_dot<GT, NT, UB>(p.w[1], p.row0[1] + r, U, rest, p.tpr, x, p.n, a1);
        }
        if (LONG || !p.inslot) /* the next row's first units, after this row's */
            load_units<GT, GLU, UB>(p, nsg, nr, sub, nU, w0, w1);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            a0[t] = reduce_lanes(a0[t], p.tpr);
            if (GLU)
                a1[t] = reduce_lanes(a1[t], p.tpr);
        }
        if (live && sub == 0)
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t >= p.n)
                    break;
                float *y = p.y[sg] + t * p.ldy[sg] + r;
                const float v = GLU ? silu(a0[t]) * a1[t] : a0[t];
                *y = p.acc ? *y + v : v;
            }
        live = nlive, sg = nsg, r = nr;
    }
}

typedef void (*mmv_kernel)(mmv_params);

template <int GT, bool LONG> static mmv_kernel pick_nt(int nt, bool glu)
{
    switch (nt) {
    case 1: return glu ? k_mmv<GT, 1, true, LONG> : k_mmv<GT, 1, false, LONG>;
    case 2: return glu ? k_mmv<GT, 2, true, LONG> : k_mmv<GT, 2, false, LONG>;
    case 4: return glu ? k_mmv<GT, 4, true, LONG> : k_mmv<GT, 4, false, LONG>;
    default: return glu ? k_mmv<GT, 8, true, LONG> : k_mmv<GT, 8, false, LONG>;
    }
}

template <int GT> static mmv_kernel pick_long(int nt, bool glu, bool lng)
{
    return lng ? pick_nt<GT, true>(nt, glu) : pick_nt<GT, false>(nt, glu);
}

/* The dense kernel of weight type gt for nt tokens (1, 2, 4, 8), glu or not, long rows or not;
 * one per group of types, each in its own file. */
mmv_kernel mmv_pick_float(int gt, int nt, bool glu, bool lng);
mmv_kernel mmv_pick_q8q4(int gt, int nt, bool glu, bool lng);
mmv_kernel mmv_pick_k45(int gt, int nt, bool glu, bool lng);
mmv_kernel mmv_pick_q6k(int gt, int nt, bool glu, bool lng);

#endif
