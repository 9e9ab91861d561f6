/*
 * gemm.cu: the prefill products of the CUDA backend and dequantization. y[n][N] = x[n][K] W^T
 * for more than MMV_MAX_N tokens through cuBLAS on the tensor cores in TF32 (f32 range, f16
 * precision: activations need no scaling to fit), weights dequantized from their GPU layout to
 * f32 in row chunks that fit the scratch. F16 and BF16 weights are exact in TF32, so for them the
 * activations are split into a TF32 part and the rest, two products whose sum has f32 accuracy
 * (one product left the MoE F16 fixture at rel 0.021 on an 830-token prompt, bar 0.02). F32
 * weights are multiplied as they are, in full f32 (the F32 fixture's greedy run must match). deq32
 * is the one dequantizer of every GPU layout: the embedding lookup and tests use it too.
 */
#include "cuda/cuda.h"

/* The 32 values of group b (k = 32 b ..) of row r of w, as the reference dequantizes them. */
__device__ void deq32(const struct dweight w, int64_t r, int64_t b, float *out)
{
    const uint8_t *row = w.q + r * w.q_row;
    switch (w.gt) {
    case GT_F32:
        for (int i = 0; i < 32; i++)
            out[i] = ((const float *)row)[32 * b + i];
        break;
    case GT_F16:
        for (int i = 0; i < 32; i++)
            out[i] = __half2float(((const __half *)row)[32 * b + i]);
        break;
    case GT_BF16:
        for (int i = 0; i < 32; i++)
            out[i] = __uint_as_float((unsigned)((const uint16_t *)row)[32 * b + i] << 16);
        break;
    case GT_Q8_0: {
        const float d = __half2float(w.d[r * w.d_row + b]);
        for (int i = 0; i < 32; i++)
            out[i] = (float)((const int8_t *)row)[32 * b + i] * d;
        break;
    }
    case GT_Q4_0: {
        const float d = __half2float(w.d[r * w.d_row + b]);
        const uint8_t *qs = row + 16 * b;
        for (int i = 0; i < 16; i++) {
            out[i] = (float)((qs[i] & 0x0f) - 8) * d;
            out[i + 16] = (float)((qs[i] >> 4) - 8) * d;
        }
        break;
    }
    case GT_Q4_K:
    case GT_Q5_K: {
        const bool q5 = w.gt == GT_Q5_K;
        const int j = (int)(b & 7), g = j >> 1;
        const uint8_t *blk = row + (b >> 3) * (q5 ? 176 : 144), *sc = blk + 4;
        const float d = __half2float(((const __half *)blk)[0]);
        const float dmin = __half2float(((const __half *)blk)[1]);
        int s, m;
        if (j < 4)
            s = sc[j] & 63, m = sc[j + 4] & 63;
        else
            s = (sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4),
            m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        const float d1 = d * s, m1 = dmin * m;
        const uint8_t *qs = blk + (q5 ? 48 : 16) + 32 * g, *qh = blk + 16;
        for (int l = 0; l < 32; l++) {
            int q = (j & 1) ? qs[l] >> 4 : qs[l] & 0x0f;
            if (q5)
                q += ((qh[l] >> j) & 1) << 4;
            out[l] = d1 * q - m1;
        }
        break;
    }
    default: { /* GT_Q6_K */
        const int j = (int)(b & 7), n = j >> 2, k = j & 3;
        const uint8_t *body = row + (b >> 3) * Q6_BODY;
        const uint8_t *ql = body + 64 * n + (k & 1) * 32, *qh = body + 128 + 32 * n;
        const int8_t *sc = (const int8_t *)(body + 192 + 8 * n);
        const float d = __half2float(w.d[r * w.d_row + (b >> 3)]);
        for (int l = 0; l < 32; l++) {
            const int q =
                (((k & 2) ? ql[l] >> 4 : ql[l] & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
            out[l] = d * sc[l / 16 + 2 * k] * q;
        }
    }
    }
}

/* out[r][k] = row (tok ? tok[r] : row0 + r) of w, for r < rows: one thread per 32 values (the
 * prefill products' dequantized weights, and the embedding rows of a step's tokens). */
__global__ void k_rows(const struct dweight w, const int32_t *__restrict__ tok, int64_t row0,
                       int64_t rows, float *__restrict__ out)
{
    pdl_trigger();
    pdl_wait();
    const int64_t groups = w.K / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * groups)
        return;
    const int64_t r = i / groups;
    float v[32];
    deq32(w, tok ? tok[r] : row0 + r, i % groups, v);
    float4 *o = (float4 *)(out + r * w.K + 32 * (i % groups));
    for (int k = 0; k < 8; k++)
        o[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
}

static void launch_rows(struct cuda_be *c, const struct dweight *w, const int32_t *tok,
                        int64_t row0, int64_t rows, float *out)
{
    const int64_t threads = rows * (w->K / 32);
    struct cu_launch l;
    cu_launch_cfg(c, &l, dim3((unsigned)((threads + 255) / 256)), dim3(256), 0);
    cudaLaunchKernelEx(&l.cfg, k_rows, *w, tok, row0, rows, out);
}

/* hi = x rounded to TF32, lo = x - hi. */
__global__ void k_split_tf32(const float *__restrict__ x, float *__restrict__ hi,
                             float *__restrict__ lo, int64_t n)
{
    const int64_t i = elementwise_start();
    if (i >= n)
        return;
    unsigned u;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x[i]));
    const float h = __uint_as_float(u);
    hi[i] = h;
    lo[i] = x[i] - h;
}

static void dequant_f32(struct cuda_be *c, const struct dweight *w, int64_t row0, int64_t rows,
                        float *out)
{
    launch_rows(c, w, NULL, row0, rows, out);
    cu_check_launch(c, "dequantize");
}

void cu_embed(struct cuda_be *c, const struct dweight *w, const int32_t *tok, int n, float *out)
{
    launch_rows(c, w, tok, 0, n, out);
    cu_check_launch(c, "embed");
}

/* y[t][r] (ld ldy) = sum_k A[r][k] x[t][k] (+ y) for rows r < N of A (row-major, ld K). */
static void blas(struct cuda_be *c, const float *A, int64_t N, int64_t K, const float *x, int n,
                 float *y, int64_t ldy, bool acc, bool exact)
{
    const float one = 1.0f, beta = acc ? 1.0f : 0.0f;
    cublasStatus_t s = cublasGemmEx(
        c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, n, (int)K, &one, A, CUDA_R_32F, (int)K, x,
        CUDA_R_32F, (int)K, &beta, y, CUDA_R_32F, (int)ldy,
        exact ? CUBLAS_COMPUTE_32F_PEDANTIC : CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS)
        cu_fail(c, EXSA_EIO, "cublasGemmEx", cudaSuccess);
}

void cu_gemm(struct cuda_be *c, const struct dweight *w, int64_t row0, int64_t N, const float *x,
             float *y, int n, bool acc)
{
    if (w->gt == GT_F32) {
        blas(c, (const float *)(w->q + row0 * w->q_row), N, w->K, x, n, y, N, acc, true);
        return;
    }
    const bool split = (w->gt == GT_F16 || w->gt == GT_BF16) && (size_t)n * w->K <= c->xsplit_elems;
    if (split) {
        const int64_t total = (int64_t)n * w->K;
        struct cu_launch l;
        cu_launch_cfg(c, &l, dim3((unsigned)((total + 255) / 256)), dim3(256), 0);
        cudaLaunchKernelEx(&l.cfg, k_split_tf32, x, c->xhi, c->xlo, total);
        cu_check_launch(c, "tf32 split");
    }
    const int64_t chunk = (int64_t)(c->wh_elems / (size_t)w->K);
    for (int64_t r = 0; r < N; r += chunk) {
        const int64_t nr = N - r < chunk ? N - r : chunk;
        dequant_f32(c, w, row0 + r, nr, c->wh);
        blas(c, c->wh, nr, w->K, split ? c->xhi : x, n, y + r, N, acc, false);
        if (split)
            blas(c, c->wh, nr, w->K, c->xlo, n, y + r, N, true, false);
    }
}
