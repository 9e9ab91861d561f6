/*
 * mmq.cu: the batched decode products of the CUDA backend: y = W x for a few to MMQ_TOK tokens
 * a launch on the int8 tensor cores (mma.sync), reading every weight byte once for all of them.
 * The matrix-vector kernels (mmv.cu) pay their dp4a work once per token and weight, so several
 * tokens make them compute-bound; here a warp multiplies a 16-row tile of weights, unpacked to
 * int8 in registers, by 8 tokens at a time, and scales the exact int32 sums of each 32 (or 16)
 * values by the weight's and the activation's block scales in f32.
 *
 * Activations are quantized first (k_mq_quant, RMS-normed on the way when a norm is pending):
 * int8 per value and (d, d x sum) per 32, one row per token. A block of 4 warps owns 32 rows:
 * warp w takes the 16-row tile w & 1 and every other 64-value unit of the rows (w >> 1), and the
 * two halves meet in shared memory in a fixed order. So a token's result does not depend on the
 * other tokens of the launch or on their count: the products are batch invariant.
 *
 * Fragment layouts (PTX mma.m16n8k32 / m16n8k16, .s8): lane = 4 gid + tig; A's registers hold 4
 * consecutive k of row gid / gid + 8, B's 4 consecutive k of column (token) gid, C's rows gid and
 * gid + 8 at columns 2 tig, 2 tig + 1. With k32 a lane's k are tig 4.. and 16 + tig 4..; the
 * sum over k does not care which real values sit in which slot as long as A and B agree, so a
 * lane takes the 8 real values tig 8 .. tig 8 + 7 of a 32-block (one 8-byte load of each).
 */
#include "cuda/mmv.h"

/* ---- activations -------------------------------------------------------------------------------- */

/* One block per token: x (normed by nw when set) to int8 q[t][K] and ds[t][K / 32] = (d, d x
 * sum q) per 32 values. */
__global__ void k_mq_quant(const float *__restrict__ x, const float *__restrict__ nw, float eps,
                           int64_t K, int8_t *__restrict__ q, float2 *__restrict__ ds)
{
    pdl_trigger();
    pdl_wait();
    __shared__ float part[8], scale;
    const int t = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float *xr = x + (int64_t)t * K;
    float sc = 1.0f;
    if (nw) {
        float ss = 0;
        for (int64_t i = tid; i < K; i += 256)
            ss += xr[i] * xr[i];
        for (int o = 16; o; o >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (lane == 0)
            part[warp] = ss;
        __syncthreads();
        if (tid == 0) {
            float s = 0;
            for (int w = 0; w < 8; w++)
                s += part[w];
            scale = 1.0f / sqrtf(s / K + eps);
        }
        __syncthreads();
        sc = scale;
    }
    for (int64_t b = warp; b < K / 32; b += 8) { /* warp-uniform trip count */
        const int64_t k = 32 * b + lane;
        float d;
        int sum;
        const int qv = quant_warp32(nw ? xr[k] * sc * nw[k] : xr[k], &d, &sum);
        q[(int64_t)t * K + k] = (int8_t)qv;
        if (lane == 0)
            ds[(int64_t)t * (K / 32) + b] = make_float2(d, d * (float)sum);
    }
}

/* ---- weight tiles ------------------------------------------------------------------------------- */

/* C += A B over k32 / k16 (int8 in, exact int32 sums). */
__device__ __forceinline__ void mma_k32(int *c, const int *a, int b0, int b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_k16(int *c, const int *a, int b0)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                 "{%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b0));
}

__device__ __forceinline__ int2 ld8(const void *p)
{
    return __ldg((const int2 *)p);
}
__device__ __forceinline__ int ld4(const void *p)
{
    return __ldg((const int *)p);
}

/* A lane's part of one 64-value unit of two rows (gid and gid + 8 of a tile): S steps of KS
 * values (k32: 2 steps of 32, k16: 4 of 16), each with its A registers, and per row a scale dw
 * and a min mw (value = dw q - mw, the min over the step's values; 0 where q is signed). */
template <int GT> struct mq_unit;

/* Q8_0 (split: K bytes a row, a fp16 scale per 32). */
template <> struct mq_unit<GT_Q8_0> {
    enum { S = 2, KS = 32, MIN = 0 };
    int a[2][4];
    float dw[2][2], mw[2][2];
    __device__ void load(const wview &w, const int64_t *r, int64_t u, int tig)
    {
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int s = 0; s < 2; s++) {
                const int2 v = ld8(w.q + r[i] * w.q_row + 64 * u + 32 * s + 8 * tig);
                a[s][i] = v.x, a[s][2 + i] = v.y;
                dw[s][i] = h2f(w.d[r[i] * w.d_row + 2 * u + s]), mw[s][i] = 0;
            }
    }
};

/* Q4_0 (split: 16 bytes a block, value i low nibble of byte i, 16 + i high; fp16 scales): the
 * nibbles less 8 as signed bytes. Lane tig's values tig 8.. are bytes 8 (tig & 1) .., low nibbles
 * for tig < 2, high ones after. */
template <> struct mq_unit<GT_Q4_0> {
    enum { S = 2, KS = 32, MIN = 0 };
    int a[2][4];
    float dw[2][2], mw[2][2];
    __device__ void load(const wview &w, const int64_t *r, int64_t u, int tig)
    {
        const int sh = 4 * (tig >> 1);
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int s = 0; s < 2; s++) {
                const int2 v = ld8(w.q + r[i] * w.q_row + 32 * u + 16 * s + 8 * (tig & 1));
                a[s][i] = __vsub4((v.x >> sh) & 0x0f0f0f0f, 0x08080808);
                a[s][2 + i] = __vsub4((v.y >> sh) & 0x0f0f0f0f, 0x08080808);
                dw[s][i] = h2f(w.d[r[i] * w.d_row + 2 * u + s]), mw[s][i] = 0;
            }
    }
};

/* Q4_K / Q5_K: unit u is group u & 3 of super-block u >> 2: 32 bytes whose low nibbles are
 * sub-block 2g and high nibbles 2g + 1 (Q5_K: the fifth bit from qh, bit j of byte l for
 * sub-block j); value = d sc q - dmin m. */
template <bool Q5> struct mq_unit_k45 {
    enum { S = 2, KS = 32, MIN = 1 };
    int a[2][4];
    float dw[2][2], mw[2][2];
    __device__ void load(const wview &w, const int64_t *r, int64_t u, int tig)
    {
        const int g = (int)(u & 3);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const uint8_t *blk = w.q + r[i] * w.q_row + (u >> 2) * (Q5 ? 176 : 144);
            const int4 hd = __ldg((const int4 *)blk); /* d, dmin, 12 scale bytes */
            const int2 v = ld8(blk + (Q5 ? 48 : 16) + 32 * g + 8 * tig);
            int lo0 = v.x & 0x0f0f0f0f, lo1 = v.y & 0x0f0f0f0f;
            int hi0 = (v.x >> 4) & 0x0f0f0f0f, hi1 = (v.y >> 4) & 0x0f0f0f0f;
            if (Q5) {
                const int2 h = ld8(blk + 16 + 8 * tig);
                lo0 |= ((h.x >> (2 * g)) & 0x01010101) << 4;
                lo1 |= ((h.y >> (2 * g)) & 0x01010101) << 4;
                hi0 |= ((h.x >> (2 * g + 1)) & 0x01010101) << 4;
                hi1 |= ((h.y >> (2 * g + 1)) & 0x01010101) << 4;
            }
            a[0][i] = lo0, a[0][2 + i] = lo1, a[1][i] = hi0, a[1][2 + i] = hi1;
            const __half2 dm = *(const __half2 *)&hd.x;
            const unsigned sc[3] = {(unsigned)hd.y, (unsigned)hd.z, (unsigned)hd.w};
            const float d = __low2float(dm), dmin = __high2float(dm);
#pragma unroll
            for (int s = 0; s < 2; s++) {
                int scl, mn;
                scale_min(2 * g + s, sc, &scl, &mn);
                dw[s][i] = d * scl, mw[s][i] = dmin * mn;
            }
        }
    }
};
// clang-format off
template <> struct mq_unit<GT_Q4_K> : mq_unit_k45<false> {};
template <> struct mq_unit<GT_Q5_K> : mq_unit_k45<true> {};
// clang-format on

/* Q6_K (split: 208-byte bodies, fp16 d apart), a scale per 16 values, so 4 k16 steps. Unit u:
 * 32-blocks j = 2 (u & 3) and j + 1 of its super-block; 32-block j is quarter k = j & 3 of half
 * n = j >> 2: low (k < 2) or high nibbles of ql[64 n + 32 (k & 1) + l], bits 2k of
 * qh[32 n + l], scale sc[8 n + 2 k + l / 16]; value = d sc (q - 32). Step s: 32-block j + s / 2,
 * values 16 (s & 1) + tig 4 ... */
template <> struct mq_unit<GT_Q6_K> {
    enum { S = 4, KS = 16, MIN = 0 };
    int a[4][2];
    float dw[4][2], mw[4][2];
    __device__ void load(const wview &w, const int64_t *r, int64_t u, int tig)
    {
        const int i4 = (int)(u & 3), n = i4 >> 1, k0 = 2 * (i4 & 1);
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const uint8_t *body = w.q + r[i] * w.q_row + (u >> 2) * Q6_BODY;
            const float d = h2f(w.d[r[i] * w.d_row + (u >> 2)]);
            const int scw = ld4(body + 192 + 8 * n + 2 * k0); /* sc[.. 2 k0 + 0..3] */
#pragma unroll
            for (int s = 0; s < 4; s++) {
                const int k = k0 + (s >> 1), h = s & 1;
                const int ql = ld4(body + 64 * n + 32 * (k & 1) + 16 * h + 4 * tig);
                const int qh = ld4(body + 128 + 32 * n + 16 * h + 4 * tig);
                const int q =
                    ((ql >> (4 * (k >> 1))) & 0x0f0f0f0f) | (((qh >> (2 * k)) & 0x03030303) << 4);
                a[s][i] = __vsub4(q, 0x20202020);
                dw[s][i] = d * (float)(int8_t)(scw >> (8 * s)), mw[s][i] = 0;
            }
        }
    }
};

/* ---- the kernel --------------------------------------------------------------------------------- */

#define MMQ_ROWS 32 /* rows a block: two 16-row tiles */

struct mmq_seg_d {
    wview w;
    int64_t row0, rows, tiles; /* tiles: blocks of MMQ_ROWS rows */
    float *y;
    int64_t ldy;
};

struct mmq_params {
    mmq_seg_d seg[3]; /* glu: gate, up */
    int n_seg, n;
    int64_t K, U;
    const int8_t *xq;
    const float2 *xds;
    bool acc;
};

/* acc[t] += the products of one unit (rows of wu) with tokens t 8 + .. of the launch. */
template <int GT, int NT>
__device__ __forceinline__ void unit_mma(const mq_unit<GT> &wu, const mmq_params &p, int64_t u,
                                         const int *tb, const int *tc, int tig, float (*acc)[4])
{
    typedef mq_unit<GT> U;
    const int64_t nb = p.K / 32;
#pragma unroll
    for (int s = 0; s < U::S; s++) {
        const int64_t koff = 64 * u + U::KS * s + (U::KS == 32 ? 8 : 4) * tig;
        const int64_t blk = 2 * u + (U::KS == 32 ? s : s >> 1);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            int c[4] = {0, 0, 0, 0};
            const int8_t *xb = p.xq + (int64_t)tb[t] * p.K + koff;
            if constexpr (U::KS == 32) {
                const int2 b = ld8(xb);
                mma_k32(c, wu.a[s], b.x, b.y);
            } else {
                mma_k16(c, wu.a[s], ld4(xb));
            }
            const float2 xa = __ldg(p.xds + (int64_t)tc[2 * t] * nb + blk);
            const float2 xc = __ldg(p.xds + (int64_t)tc[2 * t + 1] * nb + blk);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i = e >> 1;
                const float2 xv = (e & 1) ? xc : xa;
                acc[t][e] = fmaf(wu.dw[s][i] * xv.x, (float)c[e], acc[t][e]);
                if (U::MIN)
                    acc[t][e] = fmaf(-wu.mw[s][i], xv.y, acc[t][e]);
            }
        }
    }
}

/* Block b: rows 32 b' .. of the segment b falls in; warps 0, 1 the two 16-row tiles over the even
 * units, warps 2, 3 the same tiles over the odd units. NT: 8-token tiles (tokens past n read
 * token n - 1 and are not stored). */
template <int GT, int NT, bool GLU> __global__ void __launch_bounds__(128) k_mmq(mmq_params p)
{
    pdl_trigger();
    __shared__ float red[2][GLU ? 2 : 1][NT * 4][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int mt = warp & 1, half = warp >> 1;
    int sg = 0;
    int64_t b = blockIdx.x;
    while (sg < p.n_seg - 1 && b >= p.seg[sg].tiles)
        b -= p.seg[sg].tiles, sg++;
    const mmq_seg_d &S = p.seg[sg];
    const int64_t rbase = b * MMQ_ROWS + 16 * mt;
    int64_t rr[2], ru[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int64_t r = rbase + gid + 8 * i;
        rr[i] = S.row0 + (r < S.rows ? r : S.rows - 1);
        if (GLU)
            ru[i] = p.seg[1].row0 + (r < S.rows ? r : S.rows - 1);
    }
    int tb[NT], tc[2 * NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        tb[t] = min(8 * t + gid, p.n - 1);
        tc[2 * t] = min(8 * t + 2 * tig, p.n - 1);
        tc[2 * t + 1] = min(8 * t + 2 * tig + 1, p.n - 1);
    }
    float acc[NT][4], accu[GLU ? NT : 1][4];
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[t][e] = 0, accu[GLU ? t : 0][e] = 0;
    mq_unit<GT> cur, curu, nxt, nxtu;
    if (half < p.U) {
        cur.load(S.w, rr, half, tig);
        if (GLU)
            curu.load(p.seg[1].w, ru, half, tig);
    }
    pdl_wait(); /* the activations come from the previous kernel */
    for (int64_t u = half; u < p.U; u += 2) {
        if (u + 2 < p.U) { /* the next unit's weights in flight while this one is multiplied */
            nxt.load(S.w, rr, u + 2, tig);
            if (GLU)
                nxtu.load(p.seg[1].w, ru, u + 2, tig);
        }
        unit_mma<GT, NT>(cur, p, u, tb, tc, tig, acc);
        if (GLU)
            unit_mma<GT, NT>(curu, p, u, tb, tc, tig, accu);
        cur = nxt;
        if (GLU)
            curu = nxtu;
    }
    if (half == 1) {
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                red[mt][0][4 * t + e][lane] = acc[t][e];
                if (GLU)
                    red[mt][GLU ? 1 : 0][4 * t + e][lane] = accu[GLU ? t : 0][e];
            }
    }
    __syncthreads();
    if (half == 1)
        return;
#pragma unroll
    for (int t = 0; t < NT; t++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int64_t r = rbase + gid + 8 * (e >> 1);
            const int tok = 8 * t + 2 * tig + (e & 1);
            if (r >= S.rows || tok >= p.n)
                continue;
            const float v0 = acc[t][e] + red[mt][0][4 * t + e][lane];
            float v = v0;
            if (GLU) {
                const float v1 = accu[GLU ? t : 0][e] + red[mt][GLU ? 1 : 0][4 * t + e][lane];
                v = silu(v0) * v1;
            }
            float *y = S.y + (int64_t)tok * S.ldy + r;
            *y = p.acc ? *y + v : v;
        }
}

typedef void (*mmq_kernel)(mmq_params);

template <int GT> static mmq_kernel pick_nt(int nt, bool glu)
{
    switch (nt) {
    case 1: return glu ? k_mmq<GT, 1, true> : k_mmq<GT, 1, false>;
    case 2: return glu ? k_mmq<GT, 2, true> : k_mmq<GT, 2, false>;
    case 4: return glu ? k_mmq<GT, 4, true> : k_mmq<GT, 4, false>;
    default: return glu ? k_mmq<GT, 8, true> : k_mmq<GT, 8, false>;
    }
}

static mmq_kernel pick(int gt, int nt, bool glu)
{
    switch (gt) {
    case GT_Q8_0: return pick_nt<GT_Q8_0>(nt, glu);
    case GT_Q4_0: return pick_nt<GT_Q4_0>(nt, glu);
    case GT_Q4_K: return pick_nt<GT_Q4_K>(nt, glu);
    case GT_Q5_K: return pick_nt<GT_Q5_K>(nt, glu);
    case GT_Q6_K: return pick_nt<GT_Q6_K>(nt, glu);
    default: return NULL;
    }
}

/* ---- launchers ---------------------------------------------------------------------------------- */

bool cu_mmq_supported(const struct dweight *w)
{
    return pick(w->gt, 1, false) && w->K % 64 == 0;
}

void cu_mq_quant(struct cuda_be *c, const float *x, const float *nw, float eps, int n, int64_t K)
{
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)n), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_mq_quant, x, nw, eps, K, c->mq.q, c->mq.ds);
    cu_check_launch(c, "quantize (batched products)");
}

static mmq_seg_d seg_d(const struct mmv_seg &s)
{
    const struct dweight *w = s.w;
    return mmq_seg_d{wview{w->q, w->d, (int64_t)w->q_row, w->d_row},
                     s.row0,
                     s.rows,
                     (s.rows + MMQ_ROWS - 1) / MMQ_ROWS,
                     s.y,
                     s.ldy};
}

void cu_mmq(struct cuda_be *c, const struct mmv_args *a)
{
    const struct dweight *w0 = a->seg[0].w;
    mmq_params p;
    memset(&p, 0, sizeof p);
    p.n_seg = a->glu ? 1 : a->n_seg;
    p.n = a->n, p.K = w0->K, p.U = w0->K / 64, p.acc = a->acc;
    p.xq = c->mq.q, p.xds = c->mq.ds;
    int64_t blocks = 0;
    for (int i = 0; i < a->n_seg; i++) {
        p.seg[i] = seg_d(a->seg[i]);
        if (!a->glu || i == 0)
            blocks += p.seg[i].tiles;
    }
    int nt = 1;
    while (8 * nt < a->n)
        nt *= 2;
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)blocks), dim3(128), 0);
    cudaLaunchKernelEx(&l.cfg, pick(w0->gt, nt, a->glu), p);
    cu_check_launch(c, "batched product");
}
