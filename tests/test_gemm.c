/*
 * test_gemm.c: the prefill kernels (MM_GEMM_AMX, MM_GEMM_BF16: cpu/gemm*.c, run through
 * cpu_matmul_with) against the reference: dequantize_row of each weight row and a
 * double-accumulated dot product, on random weights and inputs of odd and real sizes, 1 and 2
 * threads, on each of them this CPU has. Bars (DESIGN.md): NMSE <= 1e-4 for Q4_0 Q8_0 Q4_K
 * Q5_K Q6_K (bf16 products, the 8-bit activation bar of their other kernels), <= 1e-7 for the
 * other types (split products). Also: expert offsets, the calls the GEMM declines, cpu_matmul
 * routing through it, and EXSA_GEMM=off.
 */
#include <math.h>
#include <string.h>

#include "cpu/features.h"
#include "cpu/matmul.h"
#include "harness.h"
#include "quant.h"

#include "kernel-util.h"

static const int types[] = {
    EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q8_0,   EXSA_DTYPE_Q4_K,   EXSA_DTYPE_Q5_K, EXSA_DTYPE_Q6_K,
    EXSA_DTYPE_F16,  EXSA_DTYPE_BF16,   EXSA_DTYPE_Q4_1,   EXSA_DTYPE_Q5_0, EXSA_DTYPE_Q2_K,
    EXSA_DTYPE_Q3_K, EXSA_DTYPE_IQ4_NL, EXSA_DTYPE_IQ4_XS,
};

/* The 8-bit-activation bar where the kernel rounds products to bf16, else the f32 one. */
static double bar(int kernel, int type)
{
    return cpu_matmul_exact(kernel, type) ? 1e-7 : 1e-4;
}

static double worst[64]; /* largest NMSE seen per type, printed after each sweep */

/* One weight of type {K, N}: the kernel on n_tok tokens with 1 and 2 threads vs the reference. */
static void check_one(struct threadpool *tp2, int kernel, int type, int64_t K, int N, int n_tok)
{
    struct tensor w = {.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}};
    w.data = random_weights(type, K, N);
    float *x = random_input(K * n_tok), *y = malloc(sizeof(float) * N * n_tok);
    double *ref = malloc(sizeof(double) * N * n_tok);
    reference(&w, 0, x, ref, n_tok);
    for (int th = 1; th <= 2; th++) {
        memset(y, 0xff, sizeof(float) * N * n_tok); /* NaN: catches unwritten outputs */
        bool ran = cpu_matmul_with(kernel, th == 1 ? NULL : tp2, &w, 0, x, y, n_tok);
        double e = nmse(y, ref, (size_t)N * n_tok);
        worst[type] = e > worst[type] ? e : worst[type];
        CHECK(ran && e <= bar(kernel, type),
              "%s K=%lld N=%d n_tok=%d threads=%d kernel=%s: ran %d nmse %.3g",
              dtype_info(type)->name, (long long)K, N, n_tok, th, cpu_matmul_kernel_name(kernel),
              ran, e);
    }
    free(x);
    free(y);
    free(ref);
    free((void *)w.data);
}

/* Every type, odd and real sizes, token counts below and above one 16-token block. */
static void sweep(int kernel)
{
    static const int Ks[] = {256, 2048}, toks[] = {1, 16, 33, 100}, Ns[] = {37, 520};
    struct threadpool *tp2 = tp_create(2);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (int ki = 0; ki < 2; ki++)
            for (int ni = 0; ni < 2; ni++)
                for (int t = 0; t < 4; t++)
                    check_one(tp2, kernel, types[ti], Ks[ki], Ns[ni], toks[t]);
    /* real shapes: ffn_down-like K, and a 16-token block boundary */
    check_one(tp2, kernel, EXSA_DTYPE_Q6_K, 8192, 64, 48);
    check_one(tp2, kernel, EXSA_DTYPE_Q4_K, 2048, 2048, 64);
    check_one(tp2, kernel, EXSA_DTYPE_F16, 1024, 96, 31);
    tp_free(tp2);
    fprintf(stderr, "  %s:", cpu_matmul_kernel_name(kernel));
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        fprintf(stderr, "  %s %.2g", dtype_info(types[ti])->name, worst[types[ti]]);
        worst[types[ti]] = 0;
    }
    fprintf(stderr, "\n");
}

static void test_amx(void)
{
    if (!cpu_has(CPU_LEVEL_AMX)) {
        fprintf(stderr, "  no AMX-BF16 on this CPU (or no OS permission): gemm-amx not run\n");
        CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_K, 64) != MM_GEMM_AMX, "gemm-amx without its level");
        return;
    }
    sweep(MM_GEMM_AMX);
}

static void test_avx512(void)
{
    sweep(MM_GEMM_BF16);
}

/* The best GEMM kernel of this CPU. */
static int best_gemm(void)
{
    return cpu_has(CPU_LEVEL_AMX) ? MM_GEMM_AMX : MM_GEMM_BF16;
}

/* Expert e of a {K, N, E} weight is the e-th block of N rows. */
static void test_experts(void)
{
    const int64_t K = 512, N = 19, E = 3;
    const int ts[] = {EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q8_0, EXSA_DTYPE_F16};
    struct threadpool *tp = tp_create(2);
    const int n_tok = 20;
    for (int i = 0; i < 3; i++) {
        struct tensor w = {.name = "e", .type = ts[i], .n_dims = 3, .ne = {K, N, E, 1}};
        w.data = random_weights(ts[i], K, N * E);
        float x[20 * 512], y[20 * 19];
        double ref[20 * 19];
        for (int k = 0; k < n_tok * K; k++)
            x[k] = rndf(-1, 1);
        for (int e = 0; e < E; e++) {
            reference(&w, e, x, ref, n_tok);
            bool ran = cpu_matmul_with(best_gemm(), tp, &w, e, x, y, n_tok);
            double err = nmse(y, ref, (size_t)n_tok * N);
            CHECK(ran && err <= bar(best_gemm(), ts[i]), "%s expert %d: ran %d nmse %.3g",
                  dtype_info(ts[i])->name, e, ran, err);
        }
        free((void *)w.data);
    }
    tp_free(tp);
}

/* Calls the GEMM declines or is not given: F32 weights (not in their row), K not a multiple of
 * 32, a CPU limit without BF16 (EXSA_GEMM=off's limit). And cpu_matmul itself runs it for
 * many tokens. */
static void test_routing(void)
{
    const int64_t K = 256;
    float *x = calloc(64 * K, sizeof(float)), *y = malloc(64 * 64 * sizeof(float));
    struct tensor w = {.name = "w", .type = EXSA_DTYPE_Q4_K, .n_dims = 2, .ne = {K, 64, 1, 1}};
    w.data = random_weights(EXSA_DTYPE_Q4_K, K, 64);
    CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_K, MM_PREFILL_MIN_TOK) == best_gemm(), "16 tokens: gemm");
    cpu_limit(CPU_ALL & ~(CPU_AVX512BF16 | CPU_AMX_BF16));
    CHECK(!cpu_matmul_with(MM_GEMM_BF16, NULL, &w, 0, x, y, 64), "taken without BF16");
    CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_K, 64) == MM_TILED_Q8, "no BF16: the row's fallback");
    cpu_limit(CPU_ALL);
    struct tensor f = {.name = "f", .type = EXSA_DTYPE_F32, .n_dims = 2, .ne = {K, 8, 1, 1}};
    f.data = random_weights(EXSA_DTYPE_F32, K, 8);
    CHECK(!cpu_matmul_with(MM_GEMM_BF16, NULL, &f, 0, x, y, 64), "F32 weights taken");
    struct tensor h = {.name = "h", .type = EXSA_DTYPE_F16, .n_dims = 2, .ne = {40, 8, 1, 1}};
    h.data = random_weights(EXSA_DTYPE_F16, 40, 8);
    CHECK(!cpu_matmul_with(MM_GEMM_BF16, NULL, &h, 0, x, y, 64), "K = 40 taken");
    /* cpu_matmul on 64 tokens: the same numbers as the GEMM */
    for (int64_t i = 0; i < 64 * K; i++)
        x[i] = rndf(-1, 1);
    float *y2 = malloc(64 * 64 * sizeof(float));
    cpu_matmul_with(best_gemm(), NULL, &w, 0, x, y, 64);
    cpu_matmul(NULL, &w, 0, x, y2, 64);
    CHECK(!memcmp(y, y2, 64 * 64 * sizeof(float)), "cpu_matmul routes 64 tokens to gemm");
    free(y2);
    free((void *)f.data);
    free((void *)h.data);
    free((void *)w.data);
    free(x);
    free(y);
}

/* EXSA_GEMM=off, read when the CPU is first probed, keeps the prefill off the GEMM. */
static void test_env(void)
{
    CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_K, 64) == MM_TILED_Q8, "EXSA_GEMM=off: %s",
          cpu_matmul_kernel_name(cpu_matmul_pick(EXSA_DTYPE_Q4_K, 64)));
    CHECK(!(cpu_features() & CPU_AVX512BF16), "EXSA_GEMM=off: BF16 left out");
    cpu_limit(CPU_ALL);
    CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_K, 64) == best_gemm(), "limit lifted: gemm again");
}

int main(void)
{
    setenv("EXSA_GEMM", "off", 1); /* before the first probe: test_env */
    if (!cpu_has(CPU_LEVEL_VNNI) || !(cpu_detected() & CPU_AVX512BF16)) {
        fprintf(stderr, "  no AVX-512 VNNI and BF16 on this CPU: the GEMM kernels never run\n");
        TEST_END();
    }
    RUN(test_env);
    RUN(test_amx);
    RUN(test_avx512);
    RUN(test_experts);
    RUN(test_routing);
    TEST_END();
}
