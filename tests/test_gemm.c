/*
 * test_gemm.c: the prefill path (cpu/gemm.c: gemm_run) against the reference: dequantize_row of
 * each weight row and a double-accumulated dot product, on random weights and inputs of odd and
 * real sizes, 1 and 2 threads, on every kernel path this CPU has (AMX-BF16, AVX-512 BF16).
 * Bars (DESIGN.md): NMSE <= 1e-4 for Q4_0 Q8_0 Q4_K Q5_K Q6_K (bf16 products, the 8-bit
 * activation bar of their cpu_matmul kernels), <= 1e-7 for the other types (split products). Also: expert offsets, the calls gemm_run must decline, and
 * cpu_matmul routing through it.
 */
#include <math.h>
#include <string.h>

#include "cpu/fastmm.h"
#include "cpu/gemm.h"
#include "cpu/matmul.h"
#include "harness.h"
#include "quant.h"

#include "kernel-util.h"

static const int types[] = {
    EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q8_0, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q5_K, EXSA_DTYPE_Q6_K,
    EXSA_DTYPE_F16,  EXSA_DTYPE_BF16, EXSA_DTYPE_Q4_1, EXSA_DTYPE_Q5_0, EXSA_DTYPE_Q2_K,
    EXSA_DTYPE_Q3_K, EXSA_DTYPE_IQ4_NL, EXSA_DTYPE_IQ4_XS,
};

/* 8-bit-activation bar where cpu_matmul's own kernel quantizes activations, else the f32 one. */
static double bar(int type)
{
    return type == EXSA_DTYPE_Q4_0 || type == EXSA_DTYPE_Q8_0 || type == EXSA_DTYPE_Q4_K ||
                   type == EXSA_DTYPE_Q5_K || type == EXSA_DTYPE_Q6_K
               ? 1e-4
               : 1e-7;
}

static double worst[64]; /* largest NMSE seen per type, printed after each sweep */

static const char *path_name(int p)
{
    return p == GEMM_AMX ? "amx" : p == GEMM_AVX512 ? "avx512" : "off";
}

/* One weight of type {K, N}: gemm_run on n_tok tokens with 1 and 2 threads vs the reference. */
static void check_one(struct threadpool *tp2, int type, int64_t K, int N, int n_tok)
{
    struct tensor w = {.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}};
    w.data = random_weights(type, K, N);
    float *x = random_input(K * n_tok), *y = malloc(sizeof(float) * N * n_tok);
    double *ref = malloc(sizeof(double) * N * n_tok);
    reference(&w, 0, x, ref, n_tok);
    for (int th = 1; th <= 2; th++) {
        memset(y, 0xff, sizeof(float) * N * n_tok); /* NaN: catches unwritten outputs */
        bool ran = gemm_run(th == 1 ? NULL : tp2, &w, 0, x, y, n_tok);
        double e = nmse(y, ref, (size_t)N * n_tok);
        worst[type] = e > worst[type] ? e : worst[type];
        CHECK(ran && e <= bar(type), "%s K=%lld N=%d n_tok=%d threads=%d path=%s: ran %d nmse %.3g",
              dtype_info(type)->name, (long long)K, N, n_tok, th, path_name(gemm_path()), ran, e);
    }
    free(x);
    free(y);
    free(ref);
    free((void *)w.data);
}

static void sweep(void)
{
    static const int Ks[] = {256, 2048}, toks[] = {1, 16, 33, 100}, Ns[] = {37, 520};
    struct threadpool *tp2 = tp_create(2);
    gemm_set_min_tokens(1);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++)
        for (int ki = 0; ki < 2; ki++)
            for (int ni = 0; ni < 2; ni++)
                for (int t = 0; t < 4; t++)
                    check_one(tp2, types[ti], Ks[ki], Ns[ni], toks[t]);
    /* real shapes: ffn_down-like K, and a 16-token block boundary */
    check_one(tp2, EXSA_DTYPE_Q6_K, 8192, 64, 48);
    check_one(tp2, EXSA_DTYPE_Q4_K, 2048, 2048, 64);
    check_one(tp2, EXSA_DTYPE_F16, 1024, 96, 31);
    tp_free(tp2);
    gemm_set_min_tokens(16);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        fprintf(stderr, "  %s %.2g", dtype_info(types[ti])->name, worst[types[ti]]);
        worst[types[ti]] = 0;
    }
    fprintf(stderr, "\n");
}

static void test_amx(void)
{
    int p = gemm_set_path(GEMM_AMX);
    fprintf(stderr, "  best path %s, testing %s\n", path_name(gemm_best_path()), path_name(p));
    CHECK(p == gemm_best_path(), "set_path clamps to the best path");
    CHECK(p != GEMM_OFF, "this CPU has a gemm path (AVX-512 BF16 at least)");
    sweep();
}

static void test_avx512(void)
{
    int p = gemm_set_path(GEMM_AVX512);
    CHECK(p == GEMM_AVX512, "avx512 path available");
    sweep();
    gemm_set_path(GEMM_AMX);
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
            bool ran = gemm_run(tp, &w, e, x, y, n_tok);
            double err = nmse(y, ref, (size_t)n_tok * N);
            CHECK(ran && err <= bar(ts[i]), "%s expert %d: ran %d nmse %.3g",
                  dtype_info(ts[i])->name, e, ran, err);
        }
        free((void *)w.data);
    }
    tp_free(tp);
}

/* Calls left to cpu_matmul's kernels: few tokens, F32 weights, K not a multiple of 32, path off,
 * plain C level. And cpu_matmul itself goes through gemm for many tokens. */
static void test_routing(void)
{
    const int64_t K = 256;
    float *x = calloc(64 * K, sizeof(float)), *y = malloc(64 * 64 * sizeof(float));
    struct tensor w = {.name = "w", .type = EXSA_DTYPE_Q4_K, .n_dims = 2, .ne = {K, 64, 1, 1}};
    w.data = random_weights(EXSA_DTYPE_Q4_K, K, 64);
    CHECK(!gemm_run(NULL, &w, 0, x, y, 15), "15 tokens: below the default minimum");
    CHECK(gemm_run(NULL, &w, 0, x, y, 16), "16 tokens: taken");
    gemm_set_path(GEMM_OFF);
    CHECK(!gemm_run(NULL, &w, 0, x, y, 64), "path off");
    gemm_set_path(GEMM_AMX);
    cpu_matmul_set_level(CPU_LEVEL_C);
    CHECK(!gemm_run(NULL, &w, 0, x, y, 64), "plain C level");
    cpu_matmul_set_level(CPU_LEVEL_AVX512);
    struct tensor f = {.name = "f", .type = EXSA_DTYPE_F32, .n_dims = 2, .ne = {K, 8, 1, 1}};
    f.data = random_weights(EXSA_DTYPE_F32, K, 8);
    CHECK(!gemm_run(NULL, &f, 0, x, y, 64), "F32 weights stay on the f32 path");
    struct tensor h = {.name = "h", .type = EXSA_DTYPE_F16, .n_dims = 2, .ne = {40, 8, 1, 1}};
    h.data = random_weights(EXSA_DTYPE_F16, 40, 8);
    CHECK(!gemm_run(NULL, &h, 0, x, y, 64), "K = 40");
    /* cpu_matmul on 64 tokens: the same numbers as gemm_run */
    for (int64_t i = 0; i < 64 * K; i++)
        x[i] = rndf(-1, 1);
    float *y2 = malloc(64 * 64 * sizeof(float));
    gemm_run(NULL, &w, 0, x, y, 64);
    cpu_matmul(NULL, &w, 0, x, y2, 64);
    CHECK(!memcmp(y, y2, 64 * 64 * sizeof(float)), "cpu_matmul routes 64 tokens to gemm");
    free(y2);
    free((void *)f.data);
    free((void *)h.data);
    free((void *)w.data);
    free(x);
    free(y);
}

int main(void)
{
    RUN(test_amx);
    RUN(test_avx512);
    RUN(test_experts);
    RUN(test_routing);
    TEST_END();
}
