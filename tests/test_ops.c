/*
 * test_ops.c: the fast CPU backend's own ops (attention over the paged KV cache, SwiGLU, add,
 * RMSNorm; the matmuls are covered by test_kernels, test_gemm and test_gemv) against the reference
 * ops on random inputs: a long prefill, several sequences mixed in one batch, decode steps, and odd
 * lane counts, NMSE <= 1e-7 (pure f32 paths).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "harness.h"
#include "kernel-util.h"
#include "kvcache.h"

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((*s >> 8) / 16777216.0f - 0.5f) * 4.0f;
}

/* Runs the same batches through both backends on two caches; compares every output. */
static void check_attention(int n_heads, int n_kv_heads, int head_dim, int n_seq, const int *chunks,
                            int n_chunks, const char *label)
{
    struct hparams hp = {.dim = n_heads * head_dim,
                         .n_layers = 1,
                         .n_heads = n_heads,
                         .head_dim = head_dim,
                         .l_cache = 3};
    hp.n_kv_heads[0] = n_kv_heads;
    struct backend_config cfg = {
        .n_threads = 2, .n_batch = 512, .n_ctx = 512, .n_seq_max = 8, .hp = &hp};
    struct backend *ref = backend_ref_create(&cfg), *cpu = backend_cpu_create(&cfg);
    const int f32 = EXSA_DTYPE_F32;
    struct kv_cache *kr, *kc;
    CHECK(kv_create(&hp, n_seq, 512, 0, &ref, &f32, &kr) == 0 &&
              kv_create(&hp, n_seq, 512, 0, &cpu, &f32, &kc) == 0,
          "kv");
    struct kv_step_buf sr, sc;
    CHECK(kv_step_buf_init(&sr, kr, 512) == 0 && kv_step_buf_init(&sc, kc, 512) == 0, "steps");
    for (int s = 0; s < n_seq; s++)
        kv_seq_new(kr), kv_seq_new(kc);
    unsigned seed = 7;
    int32_t len[8] = {0};
    double worst = 0;
    for (int c = 0; c < n_chunks; c++) {
        /* chunk c: chunks[c] entries, round-robin over the sequences */
        int n = chunks[c], qd = n_heads * head_dim, kvd = n_kv_heads * head_dim;
        int32_t pos[512], seq[512];
        for (int i = 0; i < n; i++) {
            seq[i] = n_seq > 1 ? (i * n_seq) / n : 0;
            pos[i] = len[seq[i]]++;
        }
        float *q = malloc(sizeof(float) * n * qd), *k = malloc(sizeof(float) * n * kvd);
        float *v = malloc(sizeof(float) * n * kvd);
        float *o1 = malloc(sizeof(float) * n * qd), *o2 = malloc(sizeof(float) * n * qd);
        for (int i = 0; i < n * qd; i++)
            q[i] = frand(&seed);
        for (int i = 0; i < n * kvd; i++)
            k[i] = frand(&seed), v[i] = frand(&seed);
        for (int s = 0; s < n_seq; s++) {
            kv_reserve(kr, s, len[s]), kv_reserve(kc, s, len[s]);
        }
        struct step tr, tc;
        kv_step_build(kr, &sr, n, NULL, pos, seq, NULL, &tr);
        kv_step_build(kc, &sc, n, NULL, pos, seq, NULL, &tc);
        CHECK(ref->ops->attention(ref, &tr, o1, q, k, v, kr, 0, n_heads, n_kv_heads, head_dim) == 0,
              "ref attention");
        CHECK(cpu->ops->attention(cpu, &tc, o2, q, k, v, kc, 0, n_heads, n_kv_heads, head_dim) == 0,
              "cpu attention");
        kv_commit(kr, &tr, len), kv_commit(kc, &tc, len);
        double e = nmse_f32(o2, o1, (size_t)n * qd);
        worst = e > worst ? e : worst;
        free(q), free(k), free(v), free(o1), free(o2);
    }
    CHECK(worst <= 1e-7, "%s: nmse %.3g", label, worst);
    kv_step_buf_free(&sr), kv_step_buf_free(&sc);
    kv_free(kr), kv_free(kc);
    ref->ops->free(ref), cpu->ops->free(cpu);
}

static void test_attention(void)
{
    const int prefill[] = {200, 37, 1, 1, 1, 64};
    check_attention(32, 8, 64, 1, prefill, 6, "1.2B-shaped heads, prefill + decode");
    check_attention(4, 2, 64, 1, prefill, 6, "fixture-shaped heads");
    const int mixed[] = {90, 3, 3, 3, 48};
    check_attention(16, 8, 64, 3, mixed, 5, "3 sequences in one batch");
    const int odd[] = {33, 5};
    check_attention(6, 1, 32, 2, odd, 2, "6 heads on one KV head, head_dim 32");
    check_attention(20, 1, 64, 1, odd, 2, "20 heads per KV head (more than 16 lanes)");
    check_attention(4, 4, 48, 2, odd, 2, "head_dim 48, no grouping");
}

/* SwiGLU, residual add and RMSNorm of the fast backend vs the reference, sizes below and
 * above the threading threshold, odd lengths included. */
static void test_elementwise(void)
{
    struct backend_config cfg = {.n_threads = 2};
    struct backend *ref = backend_ref_create(&cfg), *cpu = backend_cpu_create(&cfg);
    const long sizes[] = {1, 17, 2048, 70001, 512L * 1024 + 3};
    unsigned seed = 3;
    for (int k = 0; k < 5; k++) {
        long n = sizes[k];
        float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        float *r = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
        for (long i = 0; i < n; i++)
            a[i] = frand(&seed) * 5, b[i] = frand(&seed);
        ref->ops->swiglu(ref, r, a, b, n);
        cpu->ops->swiglu(cpu, c, a, b, n);
        CHECK(nmse_f32(c, r, n) <= 1e-7, "swiglu n=%ld: %.3g", n, nmse_f32(c, r, n));
        memcpy(r, b, sizeof(float) * n), memcpy(c, b, sizeof(float) * n);
        ref->ops->add(ref, r, a, n);
        cpu->ops->add(cpu, c, a, n);
        CHECK(nmse_f32(c, r, n) == 0, "add n=%ld", n);
        free(a), free(b), free(r), free(c);
    }
    const int dims[][2] = {{1, 256}, {3, 2048}, {37, 1000}, {512, 2048}, {5, 17}};
    for (int k = 0; k < 5; k++) {
        int rows = dims[k][0], dim = dims[k][1];
        size_t n = (size_t)rows * dim;
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * dim);
        float *r = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++)
            x[i] = frand(&seed);
        for (int i = 0; i < dim; i++)
            w[i] = frand(&seed);
        struct tensor wt = {.type = EXSA_DTYPE_F32, .n_dims = 1, .ne = {dim, 1, 1, 1}, .data = w};
        ref->ops->rmsnorm(ref, r, x, &wt, rows, dim, 1e-5f);
        cpu->ops->rmsnorm(cpu, c, x, &wt, rows, dim, 1e-5f);
        CHECK(nmse_f32(c, r, n) <= 1e-7, "rmsnorm %dx%d: %.3g", rows, dim, nmse_f32(c, r, n));
        cpu->ops->rmsnorm(cpu, x, x, &wt, rows, dim, 1e-5f); /* in place */
        CHECK(nmse_f32(x, r, n) <= 1e-7, "rmsnorm in place %dx%d", rows, dim);
        free(x), free(w), free(r), free(c);
    }
    ref->ops->free(ref), cpu->ops->free(cpu);
}

int main(void)
{
    RUN(test_attention);
    RUN(test_elementwise);
    TEST_END();
}
