/*
 * test_gemv.c: the decode matmul path (gemv_run, cpu/gemv*.c) against the reference: dequantize_row
 * of each weight row and a double-accumulated dot product, on random weights (sane fp16 scales)
 * and inputs with rare outliers, for every type it takes, odd and real sizes, 1..15 tokens, 1 and
 * 2 threads, experts of 3-D weights. Bars (DESIGN.md): NMSE <= 1e-4 with 8-bit activations,
 * <= 1e-7 for the f32 paths (F32, F16, BF16). Also: the calls it must refuse leave y untouched.
 */
#include <math.h>
#include <string.h>

#include "cpu/fastmm.h"
#include "cpu/matmul.h"
#include "harness.h"
#include "quant.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 20);
}
static float rndf(float lo, float hi) { return lo + (hi - lo) * (rnd() & 0xffffff) / 16777216.0f; }

/* Byte offsets of the fp16 scale fields of one block of each type (-1 ends the list). */
static const int *scale_fields(int type)
{
    static const int at0[] = {0, -1}, at01[] = {0, 2, -1}, q6k[] = {208, -1}, none[] = {-1};
    switch (type) {
    case EXSA_DTYPE_Q4_0: case EXSA_DTYPE_Q8_0: return at0;
    case EXSA_DTYPE_Q4_K: case EXSA_DTYPE_Q5_K: return at01;
    case EXSA_DTYPE_Q6_K: return q6k;
    default: return none;
    }
}

/* Random bytes for n_rows rows of K elements of type, with finite, sane scales. */
static void *random_weights(int type, int64_t K, int64_t n_rows)
{
    const struct dtype_info *ti = dtype_info(type);
    size_t n_blocks = (size_t)(K / ti->block_size * n_rows), size = n_blocks * ti->type_size;
    uint8_t *w = malloc(size);
    for (size_t i = 0; i < size; i++)
        w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = w + b * ti->type_size;
        uint16_t h;
        for (const int *f = scale_fields(type); *f >= 0; f++) {
            h = f32_to_fp16(rndf(-0.02f, 0.02f));
            memcpy(blk + *f, &h, 2);
        }
        if (type == EXSA_DTYPE_F16 || type == EXSA_DTYPE_BF16) {
            float v = rndf(-1, 1);
            h = type == EXSA_DTYPE_F16 ? f32_to_fp16(v) : f32_to_bf16(v);
            memcpy(blk, &h, 2);
        } else if (type == EXSA_DTYPE_F32) {
            float v = rndf(-1, 1);
            memcpy(blk, &v, 4);
        }
    }
    return w;
}

/* ref[t][n] = sum_k dequant(W)[n][k] x[t][k], accumulated in double. */
static void reference(const struct tensor *w, int expert, const float *x, double *ref, int n_tok)
{
    const int64_t K = w->ne[0], N = w->ne[1];
    const size_t rb = dtype_row_size(w->type, K);
    float *row = malloc(sizeof(float) * K);
    for (int64_t n = 0; n < N; n++) {
        dequantize_row(w->type, (const uint8_t *)w->data + ((size_t)expert * N + n) * rb, row, K);
        for (int t = 0; t < n_tok; t++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)row[k] * x[(size_t)t * K + k];
            ref[(size_t)t * N + n] = s;
        }
    }
    free(row);
}

static double nmse(const float *y, const double *ref, size_t n)
{
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        e += (y[i] - ref[i]) * (y[i] - ref[i]);
        r += ref[i] * ref[i];
    }
    return r > 0 ? e / r : (e > 0 ? INFINITY : 0);
}

static bool is_f(int type)
{
    return type == EXSA_DTYPE_F32 || type == EXSA_DTYPE_F16 || type == EXSA_DTYPE_BF16;
}

static bool have_path(void)
{
    static const float x[256] = {0};
    float y[1] = {0};
    uint8_t blk[144] = {0};
    struct tensor w = {.name = "w", .type = EXSA_DTYPE_Q4_K, .n_dims = 2, .ne = {256, 1, 1, 1}};
    w.data = blk;
    return gemv_run(NULL, &w, 0, x, y, 1);
}

/* One (type, K, N, n_tok, expert count) case with 1 and 2 threads; returns false if refused. */
static void check_case(struct threadpool *tp2, int type, int64_t K, int64_t N, int n_tok, int E)
{
    struct tensor w = {.name = "w", .type = type, .n_dims = E > 1 ? 3 : 2, .ne = {K, N, E, 1}};
    w.data = random_weights(type, K, N * E);
    const size_t ny = (size_t)N * n_tok;
    float *x = malloc(sizeof(float) * K * n_tok), *y = malloc(sizeof(float) * (ny + 16));
    double *ref = malloc(sizeof(double) * ny);
    for (int64_t i = 0; i < K * n_tok; i++)
        x[i] = rndf(-1, 1) * (rnd() % 1000 == 0 ? 4 : 1); /* rare outliers */
    const double bar = is_f(type) ? 1e-7 : 1e-4;
    for (int e = 0; e < E; e++) {
        reference(&w, e, x, ref, n_tok);
        for (int th = 1; th <= 2; th++) {
            memset(y, 0xff, sizeof(float) * (ny + 16)); /* NaN: catches unwritten outputs */
            bool ok = gemv_run(th == 1 ? NULL : tp2, &w, e, x, y, n_tok);
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
    static const int Ks[] = {256, 768, 2048}, toks[] = {1, 2, 3, 4, 5, 6, 7, 8, 11};
    struct threadpool *tp = tp_create(2);
    for (int ti = 2; ti < 5; ti++)
        for (int k = 0; k < 3; k++)
            for (int n = 0; n < 9; n++)
                check_case(tp, q_types[ti], Ks[k], n == 0 ? 5 : 37, toks[n], 1);
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

/* Calls the path must refuse, with y untouched: other types, 16+ tokens, the plain C level. */
static void test_refusals(void)
{
    float x[16 * 256] = {0}, y[16] = {0};
    uint8_t blk[16 * 210] = {0};
    struct tensor w = {.name = "w", .type = EXSA_DTYPE_Q4_1, .n_dims = 2, .ne = {256, 1, 1, 1}};
    w.data = blk;
    y[0] = 42;
    CHECK(!gemv_run(NULL, &w, 0, x, y, 1), "Q4_1 taken");
    w.type = EXSA_DTYPE_Q6_K;
    CHECK(!gemv_run(NULL, &w, 0, x, y, 16), "16 tokens taken");
    CHECK(!gemv_run(NULL, &w, 0, x, y, 0), "0 tokens taken");
    cpu_matmul_set_level(CPU_LEVEL_C);
    CHECK(!gemv_run(NULL, &w, 0, x, y, 1), "taken at level C");
    cpu_matmul_set_level(CPU_LEVEL_AVX512);
    CHECK(y[0] == 42, "y written by a refused call");
}

int main(void)
{
    if (!have_path()) {
        /* a CPU without AVX-512 VNNI/VBMI: only the refusals can be checked */
        fprintf(stderr, "  no AVX-512 VNNI/VBMI on this CPU: the decode path refuses every call\n");
        RUN(test_refusals);
        TEST_END();
    }
    RUN(test_kquants);
    RUN(test_blocks32);
    RUN(test_floats);
    RUN(test_real_sizes);
    RUN(test_experts);
    RUN(test_guided_chunks);
    RUN(test_refusals);
    TEST_END();
}
