/*
 * test_kernels.c: cpu_matmul against the reference: dequantize_row of each weight row and a
 * double-accumulated dot product, on random weights and inputs of odd and real sizes, with 1 and
 * 2 threads, at three CPU limits: all this CPU has, AVX-512 VNNI alone (the tiled kernels, what
 * a Cascade Lake runs) and plain C. Bars (DESIGN.md): NMSE <= 1e-7 for f32 paths, <= 1e-4 where
 * activations are quantized to 8 bits. Also: the kernel table's choices, expert offsets of 3-D
 * weights, the thread pool running many rounds, and cpu_matmul_roles: each token bit for bit
 * what its kernel family gives it alone, however the call mixes the families.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu/features.h"
#include "cpu/matmul.h"
#include "harness.h"
#include "quant.h"

#include "kernel-util.h"

static const int all_types[] = {
    EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q8_0,   EXSA_DTYPE_Q4_K,   EXSA_DTYPE_Q5_K,
    EXSA_DTYPE_Q6_K, EXSA_DTYPE_F16,    EXSA_DTYPE_BF16,   EXSA_DTYPE_F32,
    EXSA_DTYPE_Q4_1, EXSA_DTYPE_Q5_0,   EXSA_DTYPE_Q5_1,   EXSA_DTYPE_Q2_K,
    EXSA_DTYPE_Q3_K, EXSA_DTYPE_IQ4_NL, EXSA_DTYPE_IQ4_XS, EXSA_DTYPE_Q8_K,
};

/* Bar for a call at the current limit: 1e-4 where the kernel picked rounds activations. */
static double bar(int type, int n_tok)
{
    return cpu_matmul_exact(cpu_matmul_pick(type, n_tok), type) ? 1e-7 : 1e-4;
}

/* Every type x K x n_tok, N = 37 rows (odd), with 1 and 2 threads. */
static void sweep(const int *Ks, int nK, const int *toks, int ntoks, int N)
{
    struct threadpool *tp2 = tp_create(2);
    CHECK(tp2 != NULL, "tp_create(2)");
    for (size_t ti = 0; ti < sizeof all_types / sizeof *all_types; ti++) {
        const int type = all_types[ti];
        for (int ki = 0; ki < nK; ki++) {
            const int64_t K = Ks[ki];
            struct tensor w = {.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}};
            w.data = random_weights(type, K, N);
            for (int ni = 0; ni < ntoks; ni++) {
                const int n_tok = toks[ni];
                float *x = random_input(K * n_tok), *y = malloc(sizeof(float) * N * n_tok);
                double *ref = malloc(sizeof(double) * N * n_tok);
                reference(&w, 0, x, ref, n_tok);
                for (int th = 1; th <= 2; th++) {
                    memset(y, 0xff, sizeof(float) * N * n_tok); /* NaN: catches unwritten outputs */
                    cpu_matmul(th == 1 ? NULL : tp2, &w, 0, x, y, n_tok);
                    double e = nmse(y, ref, (size_t)N * n_tok);
                    CHECK(e <= bar(type, n_tok), "%s K=%lld N=%d n_tok=%d threads=%d %s: nmse %.3g",
                          dtype_info(type)->name, (long long)K, N, n_tok, th,
                          cpu_matmul_kernel_name(cpu_matmul_pick(type, n_tok)), e);
                }
                free(x);
                free(y);
                free(ref);
            }
            free((void *)w.data);
        }
    }
    tp_free(tp2);
}

/* The kernels picked at the current limit for a decode and a prefill call of each type. */
static void print_picks(const char *limit)
{
    fprintf(stderr, "  %s:", limit);
    for (size_t i = 0; i < sizeof all_types / sizeof *all_types; i++)
        fprintf(stderr, " %s %s/%s", dtype_info(all_types[i])->name,
                cpu_matmul_kernel_name(cpu_matmul_pick(all_types[i], 1)),
                cpu_matmul_kernel_name(cpu_matmul_pick(all_types[i], 64)));
    fprintf(stderr, "\n");
}

static void test_best_level(void)
{
    static const int Ks[] = {256, 1024, 2048}, toks[] = {1, 3, 17, 64};
    cpu_limit(CPU_ALL);
    print_picks("all features");
    sweep(Ks, 3, toks, 4, 37);
    static const int Kbig[] = {8192}, tbig[] = {1, 5};
    sweep(Kbig, 1, tbig, 2, 37);
}

/* The tiled kernels (every token count there) and the reference one for the other types. */
static void test_vnni_level(void)
{
    static const int Ks[] = {256, 2048}, toks[] = {1, 5, 17};
    if (!cpu_has(CPU_LEVEL_VNNI)) {
        fprintf(stderr, "  no AVX-512 VNNI on this CPU: the tiled kernels never run\n");
        return;
    }
    cpu_limit(CPU_LEVEL_VNNI);
    print_picks("VNNI only");
    CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_K, 1) == MM_TILED_Q8, "Q4_K decode at VNNI: tiled-q8");
    CHECK(cpu_matmul_pick(EXSA_DTYPE_BF16, 64) == MM_TILED_F, "BF16 prefill at VNNI: tiled-f32");
    sweep(Ks, 2, toks, 3, 37);
    cpu_limit(CPU_ALL);
}

static void test_c_level(void)
{
    static const int Ks[] = {256, 2048}, toks[] = {1, 3, 17};
    cpu_limit(0);
    CHECK(cpu_features() == 0, "no features at limit 0");
    for (size_t i = 0; i < sizeof all_types / sizeof *all_types; i++)
        for (int n = 1; n <= 64; n *= 4)
            CHECK(cpu_matmul_pick(all_types[i], n) == MM_REF, "%s: only the reference kernel",
                  dtype_info(all_types[i])->name);
    sweep(Ks, 2, toks, 3, 37);
    cpu_limit(CPU_ALL);
}

/* The table as the CPU has it: decode below MM_PREFILL_MIN_TOK, prefill from there; each
 * kernel only where the CPU has its level; the reference kernel for a type without a row. */
static void test_table(void)
{
    const bool vbmi = cpu_has(CPU_LEVEL_VBMI), bf16 = cpu_has(CPU_LEVEL_BF16);
    const int gemm = cpu_has(CPU_LEVEL_AMX) ? MM_GEMM_AMX : MM_GEMM_BF16;
    const int q8[] = {EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q8_0, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q5_K,
                      EXSA_DTYPE_Q6_K};
    for (int i = 0; i < 5; i++) {
        const int t = q8[i];
        CHECK(!vbmi || cpu_matmul_pick(t, MM_PREFILL_MIN_TOK - 1) == MM_GEMV, "decode: gemv");
        CHECK(!bf16 || cpu_matmul_pick(t, MM_PREFILL_MIN_TOK) == gemm, "prefill: gemm");
        CHECK(!cpu_matmul_exact(MM_GEMV, t) && !cpu_matmul_exact(MM_TILED_Q8, t), "8-bit");
    }
    CHECK(!vbmi || cpu_matmul_pick(EXSA_DTYPE_F32, 1) == MM_GEMV, "F32 decode: gemv");
    CHECK(!vbmi || cpu_matmul_pick(EXSA_DTYPE_F32, 64) == MM_TILED_F, "F32 prefill: tiled-f32");
    CHECK(cpu_matmul_pick(EXSA_DTYPE_Q4_1, 1) == MM_REF, "Q4_1 decode: ref");
    CHECK(!bf16 || cpu_matmul_pick(EXSA_DTYPE_Q4_1, 64) == gemm, "Q4_1 prefill: gemm");
    CHECK(cpu_matmul_exact(gemm, EXSA_DTYPE_F16) && cpu_matmul_exact(MM_GEMV, EXSA_DTYPE_BF16),
          "f32-exact kernels of the float types");
    CHECK(cpu_matmul_pick(16 /* IQ2_XXS */, 1) == MM_REF, "no row: ref");
    CHECK(cpu_matmul_pick(-1, 64) == MM_REF && cpu_matmul_pick(1000, 1) == MM_REF, "bad type");
    CHECK(!strcmp(cpu_matmul_kernel_name(MM_TILED_Q8), "tiled-q8"), "names");
    CHECK(!strcmp(cpu_matmul_kernel_name(MM_N_KERNELS), "?"), "no kernel: ?");
}

/* Expert e of a {K, N, E} weight is the e-th block of N rows. */
static void test_experts(void)
{
    const int64_t K = 512, N = 19, E = 3;
    const int types[] = {EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q8_0, EXSA_DTYPE_F16, EXSA_DTYPE_IQ4_XS};
    struct threadpool *tp = tp_create(2);
    for (int i = 0; i < 4; i++) {
        struct tensor w = {.name = "e", .type = types[i], .n_dims = 3, .ne = {K, N, E, 1}};
        w.data = random_weights(types[i], K, N * E);
        float x[2 * 512], y[2 * 19];
        double ref[2 * 19];
        for (int k = 0; k < 2 * K; k++)
            x[k] = rndf(-1, 1);
        for (int e = 0; e < E; e++) {
            reference(&w, e, x, ref, 2);
            cpu_matmul(tp, &w, e, x, y, 2);
            double err = nmse(y, ref, 2 * N);
            CHECK(err <= bar(types[i], 2), "%s expert %d: nmse %.3g", dtype_info(types[i])->name, e,
                  err);
        }
        free((void *)w.data);
    }
    tp_free(tp);
}

/* K not a multiple of the block size breaks cpu_matmul's contract (model binding rejects such
 * files, and dequantize_row asserts), but a kernel handed one declines it, reading nothing. */
static void test_bad_shapes(void)
{
    const int kernels[] = {MM_GEMV, MM_TILED_Q8, MM_GEMM_BF16, MM_GEMM_AMX};
    const int types[] = {EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q6_K, EXSA_DTYPE_Q4_0};
    float x[20 * 288] = {0}, y[20 * 3];
    for (int ki = 0; ki < 4; ki++)
        for (int ti = 0; ti < 3; ti++)
            for (int n = 1; n <= 20; n += 19) {
                const int64_t K = types[ti] == EXSA_DTYPE_Q4_0 ? 40 : 288;
                struct tensor w = {.name = "w", .type = types[ti], .n_dims = 2, .ne = {K, 3, 1, 1}};
                w.data = NULL; /* a kernel that read it would crash */
                y[0] = 42;
                CHECK(!cpu_matmul_with(kernels[ki], NULL, &w, 0, x, y, n) && y[0] == 42,
                      "%s K=%lld n_tok=%d taken by %s", dtype_info(types[ti])->name, (long long)K,
                      n, cpu_matmul_kernel_name(kernels[ki]));
            }
}

/* cpu_matmul_roles on one weight: every token's row bit for bit what its family gives for the
 * token alone (cpu_matmul_family with one token), for flag patterns of one family, of two
 * contiguous runs and of scattered runs (the gathered path), 1 and 2 threads. */
static void check_roles(struct threadpool *tp2, int type, int64_t K, int64_t N)
{
    enum { T = 37 };
    struct tensor w = {.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}};
    w.data = random_weights(type, K, N);
    float *x = random_input(K * T), *y = malloc(sizeof(float) * N * T);
    float *alone[2] = {malloc(sizeof(float) * N * T), malloc(sizeof(float) * N * T)};
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < T; t++)
            cpu_matmul_family(NULL, &w, 0, x + t * K, alone[f] + t * N, 1, f == 1);
    uint8_t dec[T];
    for (int pattern = 0; pattern < 5; pattern++) {
        for (int t = 0; t < T; t++)
            dec[t] = pattern == 0   ? 0
                     : pattern == 1 ? 1
                     : pattern == 2 ? t >= 30             /* a prompt chunk, then decode tokens */
                     : pattern == 3 ? t < 5 || t == T - 1 /* decode tokens, a chunk, its last */
                                    : (rnd() & 3) == 0;   /* scattered */
        for (int th = 1; th <= 2; th++) {
            memset(y, 0xff, sizeof(float) * N * T);
            cpu_matmul_roles(th == 1 ? NULL : tp2, &w, 0, x, y, T, dec);
            int bad = -1;
            for (int t = 0; t < T && bad < 0; t++)
                if (memcmp(y + t * N, alone[dec[t]] + t * N, sizeof(float) * N))
                    bad = t;
            CHECK(bad < 0,
                  "%s K=%lld pattern %d threads %d: token %d differs from its family "
                  "alone",
                  dtype_info(type)->name, (long long)K, pattern, th, bad);
        }
    }
    free(x), free(y), free(alone[0]), free(alone[1]);
    free((void *)w.data);
}

/* At every CPU limit the kernels run at: all (AMX or AVX-512 BF16 GEMM, gemv), AVX-512 BF16
 * without AMX, VNNI only (tiled kernels), plain C. */
static void test_roles(void)
{
    static const unsigned limits[] = {CPU_ALL, CPU_ALL & ~CPU_AMX_BF16, CPU_LEVEL_VNNI, 0};
    struct threadpool *tp = tp_create(2);
    for (int l = 0; l < 4; l++) {
        cpu_limit(limits[l]);
        for (size_t i = 0; i < sizeof all_types / sizeof *all_types; i++)
            check_roles(tp, all_types[i], 256, 21);
        check_roles(tp, EXSA_DTYPE_Q4_K, 2048, 40);
    }
    cpu_limit(CPU_ALL);
    for (int i = 0; i < 5; i++) { /* the families are the table's decode and prefill kernels */
        const int t = all_types[i];
        CHECK(cpu_matmul_pick_family(t, true) == cpu_matmul_pick(t, 1) &&
                  cpu_matmul_pick_family(t, false) == cpu_matmul_pick(t, MM_PREFILL_MIN_TOK),
              "%s families", dtype_info(t)->name);
    }
    tp_free(tp);
}

static atomic_int counts[3];
static void count_fn(void *arg, int ith, int nth)
{
    (void)arg;
    if (nth == 3 && ith >= 0 && ith < 3)
        atomic_fetch_add(&counts[ith], 1);
}

static void test_threadpool(void)
{
    struct threadpool *tp = tp_create(3);
    CHECK(tp && tp_n_threads(tp) == 3, "three threads");
    for (int r = 0; r < 20000; r++)
        tp_run(tp, count_fn, NULL);
    for (int i = 0; i < 3; i++)
        CHECK(atomic_load(&counts[i]) == 20000, "worker %d ran %d rounds", i, counts[i]);
    tp_free(tp);
    CHECK(tp_n_threads(NULL) == 1, "NULL pool is one thread");
}

int main(void)
{
    RUN(test_threadpool);
    RUN(test_table);
    RUN(test_best_level);
    RUN(test_experts);
    RUN(test_vnni_level);
    RUN(test_c_level);
    RUN(test_bad_shapes);
    RUN(test_roles);
    TEST_END();
}
