/*
 * test_gemv.c: the decode matmul kernel (MM_GEMV: cpu/gemv*.c, run through cpu_matmul_with)
 * against the reference: dequantize_row of each weight row and a double-accumulated dot product,
 * on random weights (sane fp16 scales) and inputs with rare outliers, for every type it takes,
 * odd and real sizes, 1..40 tokens, 1 and 2 threads, experts of 3-D weights; and batch
 * invariance: a token's outputs bit for bit the same in calls of any size. Bars (DESIGN.md):
 * NMSE <= 1e-4 with 8-bit activations, <= 1e-7 for the f32 paths (F32, F16, BF16). Also: the
 * calls it must refuse leave y untouched.
 */
#include <math.h>
#include <string.h>

#include "cpu/features.h"
#include "cpu/matmul.h"
#include "harness.h"
#include "quant.h"

#include "kernel-util.h"

/* One (type, K, N, n_tok, expert count) case with 1 and 2 threads; returns false if refused. */
static void check_case(struct threadpool *tp2, int type, int64_t K, int64_t N, int n_tok, int E)
{
    struct tensor w = {.name = "w", .type = type, .n_dims = E > 1 ? 3 : 2, .ne = {K, N, E, 1}};
    w.data = random_weights(type, K, N * E);
    const size_t ny = (size_t)N * n_tok;
    float *x = random_input(K * n_tok), *y = malloc(sizeof(float) * (ny + 16));
    double *ref = malloc(sizeof(double) * ny);
    const double bar = cpu_matmul_exact(MM_GEMV, type) ? 1e-7 : 1e-4;
    for (int e = 0; e < E; e++) {
        reference(&w, e, x, ref, n_tok);
        for (int th = 1; th <= 2; th++) {
            memset(y, 0xff, sizeof(float) * (ny + 16)); /* NaN: catches unwritten outputs */
            bool ok = cpu_matmul_with(MM_GEMV, th == 1 ? NULL : tp2, &w, e, x, y, n_tok);
            CHECK(ok, "%s K=%lld N=%lld n_tok=%d refused", dtype_info(type)->name, (long long)K,
                  (long long)N, n_tok);
            double err = nmse(y, ref, ny);
            CHECK(err <= bar, "%s K=%lld N=%lld n_tok=%d expert %d threads=%d: nmse %.3g",
                  dtype_info(type)->name, (long long)K, (long long)N, n_tok, e, th, err);
            uint32_t tail;
            memcpy(&tail, y + ny, 4);
            CHECK(tail == 0xffffffffu, "%s wrote past y", dtype_info(type)->name);
        }
    }
    free(x);
    free(y);
    free(ref);
    free((void *)w.data);
}

static const int q_types[] = {EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q8_0, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q5_K,
                              EXSA_DTYPE_Q6_K};
static const int f_types[] = {EXSA_DTYPE_F16, EXSA_DTYPE_BF16, EXSA_DTYPE_F32};

static void test_kquants(void)
{
    static const int Ks[] = {256, 768, 2048}, toks[] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 16};
    struct threadpool *tp = tp_create(2);
    for (int ti = 2; ti < 5; ti++)
        for (int k = 0; k < 3; k++)
            for (int n = 0; n < 10; n++)
                check_case(tp, q_types[ti], Ks[k], n == 0 ? 5 : 37, toks[n], 1);
    for (int ti = 2; ti < 5; ti++) /* several side blocks of 16 tokens */
        for (int k = 0; k < 3; k += 2)
            check_case(tp, q_types[ti], Ks[k], 37, k == 0 ? 17 : 40, 1);
    tp_free(tp);
}

static void test_blocks32(void)
{
    /* 1..7 blocks: partial groups of 4 (Q4_0) and 2 (Q8_0) */
    static const int Ks[] = {32, 64, 96, 160, 224, 2048, 2080}, toks[] = {1, 2, 4, 8, 15};
    struct threadpool *tp = tp_create(2);
    for (int ti = 0; ti < 2; ti++)
        for (int k = 0; k < 7; k++)
            for (int n = 0; n < 5; n++)
                check_case(tp, q_types[ti], Ks[k], 37, toks[n], 1);
    tp_free(tp);
}

static void test_floats(void)
{
    static const int Ks[] = {1, 17, 31, 33, 100, 2048, 2061}, toks[] = {1, 2, 3, 8, 13};
    struct threadpool *tp = tp_create(2);
    for (int ti = 0; ti < 3; ti++)
        for (int k = 0; k < 7; k++)
            for (int n = 0; n < 5; n++)
                check_case(tp, f_types[ti], Ks[k], 37, toks[n], 1);
    tp_free(tp);
}

static void test_real_sizes(void)
{
    struct threadpool *tp = tp_create(2);
    for (int ti = 0; ti < 5; ti++) {
        check_case(tp, q_types[ti], 8192, 67, 1, 1);
        check_case(tp, q_types[ti], 2048, 300, 1, 1);
        check_case(tp, q_types[ti], 6912, 41, 4, 1);
    }
    for (int ti = 0; ti < 3; ti++)
        check_case(tp, f_types[ti], 8192, 33, 2, 1);
    tp_free(tp);
}

static void test_experts(void)
{
    struct threadpool *tp = tp_create(2);
    check_case(tp, EXSA_DTYPE_Q4_K, 512, 19, 2, 3);
    check_case(tp, EXSA_DTYPE_Q8_0, 512, 19, 1, 3);
    check_case(tp, EXSA_DTYPE_F16, 512, 19, 3, 3);
    tp_free(tp);
}

/* Many chunks of shrinking size (guided hand-out) taken by 4 threads racing on the counter:
 * every row written exactly once, none past the end. */
static void test_guided_chunks(void)
{
    struct threadpool *tp = tp_create(4);
    check_case(tp, EXSA_DTYPE_Q8_0, 256, 5003, 1, 1);
    check_case(tp, EXSA_DTYPE_Q4_K, 256, 4099, 2, 1);
    check_case(tp, EXSA_DTYPE_F32, 64, 3001, 1, 2);
    tp_free(tp);
}

/* Calls the kernel must refuse, with y untouched: a type without a decode format, no tokens,
 * and a CPU limit below its level. */
static void test_refusals(void)
{
    float x[17 * 256] = {0}, y[17] = {0};
    uint8_t blk[17 * 210] = {0};
    struct tensor w = {.name = "w", .type = EXSA_DTYPE_Q4_1, .n_dims = 2, .ne = {256, 1, 1, 1}};
    w.data = blk;
    y[0] = 42;
    CHECK(!cpu_matmul_with(MM_GEMV, NULL, &w, 0, x, y, 1), "Q4_1 taken");
    w.type = EXSA_DTYPE_Q6_K;
    CHECK(!cpu_matmul_with(MM_GEMV, NULL, &w, 0, x, y, 0), "0 tokens taken");
    cpu_limit(CPU_LEVEL_VNNI);
    CHECK(!cpu_matmul_with(MM_GEMV, NULL, &w, 0, x, y, 1), "taken without VBMI");
    cpu_limit(0);
    CHECK(!cpu_matmul_with(MM_GEMV, NULL, &w, 0, x, y, 1), "taken at the plain C limit");
    cpu_limit(CPU_ALL);
    CHECK(y[0] == 42, "y written by a refused call");
}

/* Batch invariance: each token's outputs are bit for bit those of the token alone, in calls of
 * 2..40 tokens (passes of 1..8 tokens, side blocks of 16, tokens at any place in a pass), with
 * one thread or two, for every type. */
static void check_invariance(struct threadpool *tp2, int type, int64_t K, int64_t N)
{
    enum { T = 40 };
    static const int counts[] = {2, 3, 5, 8, 9, 16, 17, 33, 40};
    struct tensor w = {.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}};
    w.data = random_weights(type, K, N);
    float *x = random_input(K * T), *alone = malloc(sizeof(float) * N * T);
    float *y = malloc(sizeof(float) * N * T);
    for (int t = 0; t < T; t++)
        CHECK(cpu_matmul_with(MM_GEMV, NULL, &w, 0, x + t * K, alone + t * N, 1), "alone");
    for (int c = 0; c < 9; c++)
        for (int th = 1; th <= 2; th++) {
            const int n = counts[c], t0 = (c * 7) % (T - n + 1); /* tokens t0 .. t0 + n - 1 */
            CHECK(cpu_matmul_with(MM_GEMV, th == 1 ? NULL : tp2, &w, 0, x + t0 * K, y, n),
                  "%d tokens", n);
            CHECK(!memcmp(y, alone + t0 * N, sizeof(float) * N * n),
                  "%s K=%lld: a call of %d tokens (threads %d) differs from the tokens alone",
                  dtype_info(type)->name, (long long)K, n, th);
        }
    free(x), free(y), free(alone);
    free((void *)w.data);
}

static void test_invariance(void)
{
    struct threadpool *tp = tp_create(2);
    for (int ti = 0; ti < 5; ti++)
        check_invariance(tp, q_types[ti], 512, 37);
    for (int ti = 0; ti < 3; ti++)
        check_invariance(tp, f_types[ti], 100, 37);
    check_invariance(tp, EXSA_DTYPE_Q4_K, 2048, 19);
    tp_free(tp);
}

int main(void)
{
    rng = 0x9e3779b97f4a7c15ull; /* this test's own draws */
    if (!cpu_has(CPU_LEVEL_VBMI)) {
        /* a CPU without AVX-512 VNNI/VBMI: only the refusals can be checked */
        fprintf(stderr, "  no AVX-512 VNNI/VBMI on this CPU: the decode path refuses every call\n");
        RUN(test_refusals);
        TEST_END();
    }
    RUN(test_kquants);
    RUN(test_invariance);
    RUN(test_blocks32);
    RUN(test_floats);
    RUN(test_real_sizes);
    RUN(test_experts);
    RUN(test_guided_chunks);
    RUN(test_refusals);
    TEST_END();
}
