/*
 * test_cuda.c: the CUDA backend against the reference (make test-gpu; make test runs it too
 * and, on a machine without a device, says so in one line). Every op on random inputs of odd
 * and real sizes, each against the reference op or a double-precision reference: products of
 * every weight type by the matrix-vector path (up to 64 tokens) and the cuBLAS path (more),
 * with accumulation, experts, fused gate/up and q/k/v, norms, q/k norm + RoPE, RoPE, short
 * conv over several sequences (outputs and states), attention over the paged cache with f32 and
 * f16 entries, embed, gather, SwiGLU and add. Then the engine: every fixture within the
 * fast-path bar, greedy F32 equal to the reference engine, partial offload equal to full,
 * graph replay equal to eager execution, sequences batched equal to alone, and with
 * exsa_engine_params.deterministic every logit row bit for bit the same alone and batched, and
 * a prompt-cache hit the same as a cold run.
 * Arguments: test names to run (default all); EXSA_TEST_VERBOSE=1 prints every figure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "batch-harness.h"
#include "engine.h"
#include "fixture-util.h"
#include "harness.h"
#include "kernel-util.h"
#include "kvcache.h"

static struct hparams g_hp;
static struct backend *gpu, *ref;
static bool verbose;

#define NB 160  /* batch capacity of the test backends */
#define CTX 640 /* positions per sequence */
#define V 1024  /* the tiny fixtures' vocabulary (pcache-util.h) */
#define CHUNK 64

#include "pcache-util.h" /* uses V and CHUNK */

static void make_backends(void)
{
    memset(&g_hp, 0, sizeof g_hp);
    g_hp.dim = 2048, g_hp.hidden_dim = 8192, g_hp.n_layers = 2, g_hp.n_heads = 32;
    g_hp.head_dim = 128, g_hp.vocab_size = 1024, g_hp.l_cache = 3, g_hp.eps = 1e-5f;
    g_hp.rope_base = 1e6f, g_hp.n_kv_heads[1] = 8, g_hp.n_ctx_train = CTX;
    struct backend_config c = {1, NB, CTX, 4, &g_hp, false};
    char err[256] = "";
    gpu = backend_cuda_create(&c, err, sizeof err);
    ref = backend_ref_create(&c);
    CHECK(gpu != NULL, "cuda backend: %s", err);
}

/* ---- device buffers ------------------------------------------------------------------------ */

static float *dev_put(const float *h, size_t n)
{
    float *d = gpu->ops->alloc(gpu, sizeof(float) * n);
    if (d && h)
        gpu->ops->upload(gpu, d, h, sizeof(float) * n);
    return d;
}

static float *dev_get(const float *d, size_t n)
{
    float *h = malloc(sizeof(float) * n);
    gpu->ops->download(gpu, h, d, sizeof(float) * n);
    return h;
}

/* A step of n entries of one sequence at positions 0..n-1 (blocks 0, 1, ...). */
static struct step one_seq_step(int n)
{
    static int32_t pos[NB], seq[NB], ent_sq[NB], rows[NB], sq_ent[NB], blk[64];
    static int32_t sq_seq[2] = {0}, off[2], rd[1] = {0}, wr[1] = {1}, blk_off[2];
    for (int i = 0; i < n; i++)
        pos[i] = i, seq[i] = 0, ent_sq[i] = 0, rows[i] = i, sq_ent[i] = i;
    for (int i = 0; i < 64; i++)
        blk[i] = i;
    off[0] = 0, off[1] = n, blk_off[0] = 0, blk_off[1] = (n + KV_BLOCK - 1) / KV_BLOCK;
    return (struct step){n,      NULL, pos,    seq, ent_sq, n,       rows, 1,
                         sq_seq, off,  sq_ent, rd,  wr,     blk_off, blk,  NULL};
}

static bool any_nan(const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]))
            return true;
    return false;
}

/* ---- products -------------------------------------------------------------------------------- */

static const int TYPES[] = {EXSA_DTYPE_F32,  EXSA_DTYPE_F16,  EXSA_DTYPE_BF16,  EXSA_DTYPE_Q8_0,
                            EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q5_K,  EXSA_DTYPE_Q6_K,
                            EXSA_DTYPE_Q5_0, EXSA_DTYPE_Q2_K, EXSA_DTYPE_IQ4_NL};
#define N_TYPES (int)(sizeof TYPES / sizeof TYPES[0])

static struct tensor weight(int type, int64_t K, int64_t N, int64_t E)
{
    struct tensor t = {.name = "test", .type = type, .n_dims = E > 1 ? 3 : 2, .ne = {K, N, E, 1}};
    t.data = random_weights(type, K, N * E);
    t.nbytes = dtype_row_size(type, K) * N * E;
    return t;
}

/* The bar of a product path: 8-bit activations, f32 FMAs, or TF32 tensor cores. */
static double bar_of(int type, int n)
{
    bool fl = type == EXSA_DTYPE_F32 || type == EXSA_DTYPE_F16 || type == EXSA_DTYPE_BF16;
    if (!fl)
        return 1e-4;
    return n <= 64 || type == EXSA_DTYPE_F32 ? 1e-7 : 1e-5;
}

/* y = W x (or y0 + W x) for expert `ex` on the GPU against the double reference. */
static void check_product(int type, int64_t K, int64_t N, int64_t E, int ex, int n, bool acc)
{
    struct tensor w = weight(type, K, N, E);
    if (gpu->ops->prepare(gpu, &w) != 0) {
        CHECK(0, "prepare type %d", type);
        free((void *)w.data);
        return;
    }
    float *x = random_input((int64_t)n * K), *y0 = random_input((int64_t)n * N);
    double *r = malloc(sizeof(double) * (size_t)n * N);
    reference(&w, ex, x, r, n);
    if (acc)
        for (size_t i = 0; i < (size_t)n * N; i++)
            r[i] += y0[i];
    float *dx = dev_put(x, (size_t)n * K), *dy = dev_put(acc ? y0 : NULL, (size_t)n * N);
    struct step st = one_seq_step(n);
    int rc = gpu->ops->begin(gpu, &st);
    if (!rc)
        rc = acc ? gpu->ops->matmul_add(gpu, &w, dx, dy, n)
                 : gpu->ops->matmul(gpu, &w, ex, dx, dy, n);
    int end = gpu->ops->end(gpu);
    float *y = dev_get(dy, (size_t)n * N);
    double e = nmse(y, r, (size_t)n * N), bar = bar_of(type, n);
    const char *tn = dtype_info(type)->name;
    CHECK(rc == 0 && end == 0 && e <= bar,
          "matmul %s K=%lld N=%lld E=%lld ex=%d n=%d%s: nmse "
          "%.3g (bar %.0e) rc %d/%d",
          tn, (long long)K, (long long)N, (long long)E, ex, n, acc ? " acc" : "", e, bar, rc, end);
    if (verbose)
        fprintf(stderr, "  matmul %-6s K=%-5lld N=%-5lld n=%-3d%s nmse %.3g\n", tn, (long long)K,
                (long long)N, n, acc ? " acc" : "    ", e);
    gpu->ops->unprepare(gpu, &w);
    gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dy);
    free(x), free(y0), free(y), free(r), free((void *)w.data);
}

static void test_matmul(void)
{
    const int ns[] = {1, 2, 3, 5, 8, 13, 64, 65, 150};
    for (int t = 0; t < N_TYPES; t++) {
        const int ty = TYPES[t];
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            check_product(ty, 256, 77, 1, 0, ns[i], false);
        check_product(ty, 2048, 1000, 1, 0, 1, false);
        check_product(ty, 2048, 1000, 1, 0, 4, true);
        check_product(ty, 4608, 64, 1, 0, 9, false);
        check_product(ty, 1792, 300, 3, 2, 3, false);
        check_product(ty, 2048, 300, 1, 0, 100, true);
    }
}

/* A weight freed and another prepared (likely at the same host address, the same shapes and
 * buffers): the step must not replay the graph captured for the first one (its key hashes the
 * weight's host address; the graph holds the freed device buffers). Each weight runs 3 steps,
 * so graphs are captured and replayed. */
static void test_graph_after_unprepare(void)
{
    const int64_t K = 1792, N = 300;
    const int n = 3,
              types[4] = {EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q8_0, EXSA_DTYPE_Q6_K};
    float *x = random_input(n * K);
    float *dx = dev_put(x, (size_t)n * K), *dy = dev_put(NULL, (size_t)n * N);
    double *r = malloc(sizeof(double) * n * N);
    for (int i = 0; i < 4; i++) {
        struct tensor w = weight(types[i], K, N, 1);
        gpu->ops->prepare(gpu, &w);
        reference(&w, 0, x, r, n);
        for (int rep = 0; rep < 3; rep++) {
            struct step st = one_seq_step(n);
            int rc = gpu->ops->begin(gpu, &st);
            rc = rc ? rc : gpu->ops->matmul(gpu, &w, 0, dx, dy, n);
            rc = gpu->ops->end(gpu) ? -1 : rc;
            float *y = dev_get(dy, (size_t)n * N);
            const double e = nmse(y, r, (size_t)n * N);
            CHECK(rc == 0 && e <= 1e-4, "weight %d step %d: nmse %.3g rc %d", i, rep, e, rc);
            free(y);
        }
        gpu->ops->unprepare(gpu, &w);
        free((void *)w.data);
    }
    gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dy);
    free(x), free(r);
}

/* out = silu(G x) * (U x) and q, k, v = Wq x, Wk x, Wv x against the double reference. */
static void check_glu(int tg, int tu, int n)
{
    const int64_t K = 512, N = 320;
    struct tensor g = weight(tg, K, N, 1), u = weight(tu, K, N, 1);
    gpu->ops->prepare(gpu, &g), gpu->ops->prepare(gpu, &u);
    float *x = random_input((int64_t)n * K);
    double *rg = malloc(sizeof(double) * n * N), *ru = malloc(sizeof(double) * n * N);
    reference(&g, 0, x, rg, n), reference(&u, 0, x, ru, n);
    for (size_t i = 0; i < (size_t)n * N; i++)
        rg[i] = rg[i] / (1 + exp(-rg[i])) * ru[i];
    float *dx = dev_put(x, (size_t)n * K), *dy = dev_put(NULL, (size_t)n * N);
    struct step st = one_seq_step(n);
    int rc = gpu->ops->begin(gpu, &st);
    rc = rc ? rc : gpu->ops->glu(gpu, &g, &u, dx, dy, n);
    rc = gpu->ops->end(gpu) ? -1 : rc;
    float *y = dev_get(dy, (size_t)n * N);
    double e = nmse(y, rg, (size_t)n * N);
    CHECK(rc == 0 && e <= 1e-4, "glu %d/%d n=%d: nmse %.3g", tg, tu, n, e);
    gpu->ops->unprepare(gpu, &g), gpu->ops->unprepare(gpu, &u);
    gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dy);
    free(x), free(y), free(rg), free(ru), free((void *)g.data), free((void *)u.data);
}

static void check_qkv(int n)
{
    const int64_t K = 1024, Nq = 512, Nkv = 128;
    const int types[3] = {EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q6_K};
    const int64_t Ns[3] = {Nq, Nkv, Nkv};
    struct tensor w[3];
    float *x = random_input((int64_t)n * K), *d[3];
    double *r[3];
    for (int i = 0; i < 3; i++) {
        w[i] = weight(types[i], K, Ns[i], 1);
        gpu->ops->prepare(gpu, &w[i]);
        r[i] = malloc(sizeof(double) * n * Ns[i]);
        reference(&w[i], 0, x, r[i], n);
        d[i] = dev_put(NULL, (size_t)n * Ns[i]);
    }
    float *dx = dev_put(x, (size_t)n * K);
    struct step st = one_seq_step(n);
    int rc = gpu->ops->begin(gpu, &st);
    rc = rc ? rc : gpu->ops->qkv(gpu, &w[0], &w[1], &w[2], dx, d[0], d[1], d[2], n);
    rc = gpu->ops->end(gpu) ? -1 : rc;
    for (int i = 0; i < 3; i++) {
        float *y = dev_get(d[i], (size_t)n * Ns[i]);
        double e = nmse(y, r[i], (size_t)n * Ns[i]);
        CHECK(rc == 0 && e <= 1e-4, "qkv part %d n=%d: nmse %.3g", i, n, e);
        free(y), free(r[i]), gpu->ops->release(gpu, d[i]);
        gpu->ops->unprepare(gpu, &w[i]), free((void *)w[i].data);
    }
    gpu->ops->release(gpu, dx);
    free(x);
}

static void test_fused_products(void)
{
    const int ns[] = {1, 3, 8, 20, 64, 100};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        check_glu(EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q4_K, ns[i]);
        check_glu(EXSA_DTYPE_Q8_0, EXSA_DTYPE_Q6_K, ns[i]); /* unfused fallback */
        check_glu(EXSA_DTYPE_F16, EXSA_DTYPE_F16, ns[i]);
        check_qkv(ns[i]);
    }
}

/* ---- norms, rope, element-wise ------------------------------------------------------------- */

/* rmsnorm alone, and rmsnorm then a product (the product reuses the norm's quantization). */
static void test_norm(void)
{
    const int shapes[][2] = {{1, 2048}, {7, 2048}, {64, 1024}, {100, 2048}, {3, 200}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int rows = shapes[k][0], dim = shapes[k][1];
        float *x = random_input((int64_t)rows * dim), *wv = random_input(dim);
        float *r = malloc(sizeof(float) * rows * dim);
        struct tensor wt = {.name = "norm",
                            .type = EXSA_DTYPE_F32,
                            .n_dims = 1,
                            .ne = {dim, 1, 1, 1},
                            .data = wv,
                            .nbytes = 4u * dim};
        struct tensor wg = wt;
        gpu->ops->prepare(gpu, &wg);
        ref->ops->rmsnorm(ref, r, x, &wt, rows, dim, 1e-5f);
        struct tensor mw = weight(EXSA_DTYPE_Q4_K, dim - dim % 256, 96, 1);
        const bool prod = dim % 256 == 0;
        double *rp = malloc(sizeof(double) * rows * 96);
        if (prod) {
            gpu->ops->prepare(gpu, &mw);
            reference(&mw, 0, r, rp, rows);
        }
        float *dx = dev_put(x, (size_t)rows * dim), *dp = dev_put(NULL, (size_t)rows * 96);
        struct step st = one_seq_step(rows > NB ? NB : rows);
        /* the product reads the norm through its input; the download reads the norm's output */
        float *y = malloc(sizeof(float) * rows * dim);
        int rc = gpu->ops->begin(gpu, &st);
        rc = rc ? rc : gpu->ops->rmsnorm(gpu, dx, dx, &wg, rows, dim, 1e-5f);
        if (prod && !rc)
            rc = gpu->ops->matmul(gpu, &mw, 0, dx, dp, rows);
        rc = rc ? rc : gpu->ops->download(gpu, y, dx, sizeof(float) * rows * dim);
        rc = gpu->ops->end(gpu) ? -1 : rc;
        float *yp = dev_get(dp, (size_t)rows * 96);
        CHECK(rc == 0 && nmse_f32(y, r, (size_t)rows * dim) <= 1e-7, "rmsnorm %dx%d: %.3g", rows,
              dim, nmse_f32(y, r, (size_t)rows * dim));
        if (prod)
            CHECK(nmse(yp, rp, (size_t)rows * 96) <= 1e-4, "rmsnorm then matmul %dx%d: %.3g", rows,
                  dim, nmse(yp, rp, (size_t)rows * 96));
        gpu->ops->unprepare(gpu, &wg);
        if (prod)
            gpu->ops->unprepare(gpu, &mw);
        gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dp);
        free(x), free(wv), free(r), free(y), free(yp), free(rp), free((void *)mw.data);
    }
}

/* A step of two sequences (ids 0 and 1) interleaved, positions from p0[s]. */
static struct step two_seq_step(int n, const int p0[2], int32_t *pos, int32_t *seq,
                                struct kv_step_buf *sb, struct kv_cache *kv)
{
    int next[2] = {p0[0], p0[1]};
    for (int i = 0; i < n; i++) {
        seq[i] = i % 3 == 2 ? 1 : 0;
        pos[i] = next[seq[i]]++;
    }
    for (int s = 0; s < 2; s++)
        kv_reserve(kv, s, next[s]);
    struct step st;
    kv_step_build(kv, sb, n, NULL, pos, seq, NULL, &st);
    return st;
}

static void test_qk_norm_rope(void)
{
    const int H = 32, Hkv = 8, hd = 128, n = 37;
    const int f32 = EXSA_DTYPE_F32;
    struct backend *lb[2] = {gpu, gpu};
    int kt[2] = {f32, f32};
    struct kv_cache *kv;
    CHECK(kv_create(&g_hp, 4, CTX, 0, lb, kt, &kv) == 0, "kv");
    struct kv_step_buf sb;
    kv_step_buf_init(&sb, kv, NB);
    kv_seq_new(kv), kv_seq_new(kv);
    int32_t pos[NB], seq[NB];
    const int p0[2] = {100, 3};
    struct step st = two_seq_step(n, p0, pos, seq, &sb, kv);
    float *q = random_input((int64_t)n * H * hd), *k = random_input((int64_t)n * Hkv * hd);
    float *qw = random_input(hd), *kw = random_input(hd);
    struct tensor tq = {.name = "qn", .type = f32, .n_dims = 1, .ne = {hd, 1, 1, 1}, .data = qw};
    struct tensor tk = tq;
    tk.data = kw;
    struct tensor gq = tq, gk = tk;
    gpu->ops->prepare(gpu, &gq), gpu->ops->prepare(gpu, &gk);
    float *dq = dev_put(q, (size_t)n * H * hd), *dk = dev_put(k, (size_t)n * Hkv * hd);
    ref->ops->rmsnorm(ref, q, q, &tq, n * H, hd, 1e-5f);
    ref->ops->rmsnorm(ref, k, k, &tk, n * Hkv, hd, 1e-5f);
    ref->ops->rope(ref, &st, q, H, hd, 1e6f);
    ref->ops->rope(ref, &st, k, Hkv, hd, 1e6f);
    int rc = gpu->ops->begin(gpu, &st);
    rc = rc ? rc : gpu->ops->qk_norm_rope(gpu, &st, dq, dk, &gq, &gk, H, Hkv, hd, 1e-5f, 1e6f);
    rc = gpu->ops->end(gpu) ? -1 : rc;
    float *gq2 = dev_get(dq, (size_t)n * H * hd), *gk2 = dev_get(dk, (size_t)n * Hkv * hd);
    CHECK(rc == 0 && nmse_f32(gq2, q, (size_t)n * H * hd) <= 1e-7 &&
              nmse_f32(gk2, k, (size_t)n * Hkv * hd) <= 1e-7,
          "qk norm rope: %.3g %.3g", nmse_f32(gq2, q, (size_t)n * H * hd),
          nmse_f32(gk2, k, (size_t)n * Hkv * hd));
    /* plain rope on the already-normed k */
    float *k2 = random_input((int64_t)n * Hkv * hd);
    gpu->ops->upload(gpu, dk, k2, sizeof(float) * n * Hkv * hd);
    ref->ops->rope(ref, &st, k2, Hkv, hd, 1e6f);
    rc = gpu->ops->begin(gpu, &st);
    rc = rc ? rc : gpu->ops->rope(gpu, &st, dk, Hkv, hd, 1e6f);
    rc = gpu->ops->end(gpu) ? -1 : rc;
    float *gk3 = dev_get(dk, (size_t)n * Hkv * hd);
    CHECK(rc == 0 && nmse_f32(gk3, k2, (size_t)n * Hkv * hd) <= 1e-7, "rope: %.3g",
          nmse_f32(gk3, k2, (size_t)n * Hkv * hd));
    gpu->ops->unprepare(gpu, &gq), gpu->ops->unprepare(gpu, &gk);
    gpu->ops->release(gpu, dq), gpu->ops->release(gpu, dk);
    free(q), free(k), free(qw), free(kw), free(gq2), free(gk2), free(k2), free(gk3);
    kv_step_buf_free(&sb), kv_free(kv);
}

static void test_elementwise(void)
{
    const long ns[] = {1, 1000, 70001};
    for (int i = 0; i < 3; i++) {
        const long n = ns[i];
        float *a = random_input(n), *b = random_input(n), *r1 = malloc(sizeof(float) * n);
        float *r2 = malloc(sizeof(float) * n);
        memcpy(r2, a, sizeof(float) * n);
        ref->ops->swiglu(ref, r1, a, b, n);
        ref->ops->add(ref, r2, b, n);
        float *da = dev_put(a, n), *db = dev_put(b, n), *dc = dev_put(NULL, n);
        struct step st = one_seq_step(1);
        int rc = gpu->ops->begin(gpu, &st);
        rc = rc ? rc : gpu->ops->swiglu(gpu, dc, da, db, n);
        rc = rc ? rc : gpu->ops->add(gpu, da, db, n);
        rc = gpu->ops->end(gpu) ? -1 : rc;
        float *c1 = dev_get(dc, n), *c2 = dev_get(da, n);
        CHECK(rc == 0 && nmse_f32(c1, r1, n) <= 1e-7 && nmse_f32(c2, r2, n) == 0,
              "swiglu/add n=%ld: %.3g %.3g", n, nmse_f32(c1, r1, n), nmse_f32(c2, r2, n));
        gpu->ops->release(gpu, da), gpu->ops->release(gpu, db), gpu->ops->release(gpu, dc);
        free(a), free(b), free(r1), free(r2), free(c1), free(c2);
    }
}

/* Embedding rows of every type and the gather of logit rows. */
static void test_embed_gather(void)
{
    static int32_t tok[5] = {0, 1023, 17, 17, 500};
    for (int t = 0; t < N_TYPES; t++) {
        struct tensor w = weight(TYPES[t], 256, 1024, 1), wg = w;
        gpu->ops->prepare(gpu, &wg);
        struct step st = one_seq_step(5);
        st.tok = tok;
        float *r = malloc(sizeof(float) * 5 * 256), *dy = dev_put(NULL, 5 * 256);
        ref->ops->embed(ref, &st, &w, r);
        int rc = gpu->ops->begin(gpu, &st);
        rc = rc ? rc : gpu->ops->embed(gpu, &st, &wg, dy);
        rc = gpu->ops->end(gpu) ? -1 : rc;
        float *y = dev_get(dy, 5 * 256);
        /* Q8_0 conversion of the other types rounds; the native ones match up to an FMA */
        const bool native = TYPES[t] != EXSA_DTYPE_Q5_0 && TYPES[t] != EXSA_DTYPE_Q2_K &&
                            TYPES[t] != EXSA_DTYPE_IQ4_NL;
        CHECK(rc == 0 && nmse_f32(y, r, 5 * 256) <= (native ? 1e-12 : 1e-4), "embed %s: %.3g",
              dtype_info(TYPES[t])->name, nmse_f32(y, r, 5 * 256));
        gpu->ops->unprepare(gpu, &wg);
        gpu->ops->release(gpu, dy);
        free(r), free(y), free((void *)w.data);
    }
    const int n = 9, dim = 300;
    float *src = random_input(n * dim), *ds = dev_put(src, n * dim), *dd = dev_put(NULL, n * dim);
    struct step st = one_seq_step(n);
    static int32_t rows[3] = {8, 0, 4};
    st.out_rows = rows, st.n_out = 3;
    int rc = gpu->ops->begin(gpu, &st);
    rc = rc ? rc : gpu->ops->gather(gpu, &st, dd, ds, 1, 2, dim);
    rc = gpu->ops->end(gpu) ? -1 : rc;
    float *y = dev_get(dd, 2 * dim);
    CHECK(rc == 0 && !memcmp(y, src, sizeof(float) * dim) &&
              !memcmp(y + dim, src + 4 * dim, sizeof(float) * dim),
          "gather");
    gpu->ops->release(gpu, ds), gpu->ops->release(gpu, dd);
    free(src), free(y);
}

/* ---- short conv and attention over caches on both backends ---------------------------------- */

struct twin {
    struct kv_cache *kv[2]; /* 0: reference (host), 1: gpu */
    struct kv_step_buf sb[2];
    int32_t len[4];
};

static void twin_init(struct twin *t, struct hparams *hp, int kv_type)
{
    memset(t, 0, sizeof *t);
    struct backend *rb[2] = {ref, ref}, *gb[2] = {gpu, gpu};
    int rt[2] = {EXSA_DTYPE_F32, EXSA_DTYPE_F32}, gt[2] = {kv_type, kv_type};
    CHECK(kv_create(hp, 4, CTX, 0, rb, rt, &t->kv[0]) == 0 &&
              kv_create(hp, 4, CTX, 0, gb, gt, &t->kv[1]) == 0,
          "caches");
    for (int i = 0; i < 2; i++) {
        kv_step_buf_init(&t->sb[i], t->kv[i], NB);
        for (int s = 0; s < 4; s++)
            kv_seq_new(t->kv[i]);
    }
}

static void twin_free(struct twin *t)
{
    for (int i = 0; i < 2; i++)
        kv_step_buf_free(&t->sb[i]), kv_free(t->kv[i]);
}

/* The next step: n entries over n_seq sequences round-robin; steps st[0] (ref), st[1] (gpu). */
static void twin_step(struct twin *t, int n, int n_seq, int32_t *pos, int32_t *seq,
                      struct step st[2], int32_t *after)
{
    memcpy(after, t->len, sizeof t->len);
    for (int i = 0; i < n; i++) {
        seq[i] = n_seq > 1 ? (i * n_seq) / n : 0;
        pos[i] = after[seq[i]]++;
    }
    for (int i = 0; i < 2; i++) {
        for (int s = 0; s < 4; s++)
            kv_reserve(t->kv[i], s, after[s]);
        kv_step_build(t->kv[i], &t->sb[i], n, NULL, pos, seq, NULL, &st[i]);
    }
}

static void twin_commit(struct twin *t, struct step st[2], const int32_t *after)
{
    for (int i = 0; i < 2; i++)
        kv_commit(t->kv[i], &st[i], after);
    memcpy(t->len, after, sizeof t->len);
}

/* The backend is made for the model's head layout (its tiles follow it): one per layout. */
static void check_attention(int H, int Hkv, int hd, int kv_type)
{
    struct hparams hp = g_hp;
    hp.n_layers = 1, hp.n_heads = H, hp.head_dim = hd, hp.n_kv_heads[0] = Hkv;
    hp.dim = H * hd;
    struct backend_config cfg = {1, NB, CTX, 4, &hp, false};
    char err[256] = "";
    struct backend *saved = gpu;
    gpu = backend_cuda_create(&cfg, err, sizeof err);
    if (!gpu) {
        CHECK(0, "cuda backend for H=%d Hkv=%d hd=%d: %s", H, Hkv, hd, err);
        gpu = saved;
        return;
    }
    struct twin t;
    twin_init(&t, &hp, kv_type);
    const int chunks[][2] = {{150, 1}, {37, 2}, {1, 1}, {1, 1}, {3, 3}, {64, 2}, {1, 2}, {90, 3}};
    double worst = 0;
    const double bar = kv_type == EXSA_DTYPE_F16 ? 1e-5 : 1e-9;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        const int n = chunks[c][0], qd = H * hd, kvd = Hkv * hd;
        int32_t pos[NB], seq[NB], after[4];
        struct step st[2];
        twin_step(&t, n, chunks[c][1], pos, seq, st, after);
        float *q = random_input((int64_t)n * qd), *k = random_input((int64_t)n * kvd);
        float *v = random_input((int64_t)n * kvd), *o = malloc(sizeof(float) * n * qd);
        CHECK(ref->ops->attention(ref, &st[0], o, q, k, v, t.kv[0], 0, H, Hkv, hd) == 0, "ref");
        float *dq = dev_put(q, (size_t)n * qd), *dk = dev_put(k, (size_t)n * kvd);
        float *dv = dev_put(v, (size_t)n * kvd), *dout = dev_put(NULL, (size_t)n * qd);
        int rc = gpu->ops->begin(gpu, &st[1]);
        rc = rc ? rc : gpu->ops->attention(gpu, &st[1], dout, dq, dk, dv, t.kv[1], 0, H, Hkv, hd);
        rc = gpu->ops->end(gpu) ? -1 : rc;
        float *g = dev_get(dout, (size_t)n * qd);
        double e = nmse_f32(g, o, (size_t)n * qd);
        worst = e > worst ? e : worst;
        CHECK(rc == 0 && e <= bar && !any_nan(g, (size_t)n * qd),
              "attention H=%d Hkv=%d hd=%d kv %s step %zu (n=%d): nmse %.3g", H, Hkv, hd,
              kv_type == EXSA_DTYPE_F16 ? "f16" : "f32", c, n, e);
        twin_commit(&t, st, after);
        gpu->ops->release(gpu, dq), gpu->ops->release(gpu, dk), gpu->ops->release(gpu, dv);
        gpu->ops->release(gpu, dout);
        free(q), free(k), free(v), free(o), free(g);
    }
    if (verbose)
        fprintf(stderr, "  attention H=%d Hkv=%d hd=%d %s: worst nmse %.3g\n", H, Hkv, hd,
                kv_type == EXSA_DTYPE_F16 ? "f16" : "f32", worst);
    twin_free(&t);
    gpu->ops->free(gpu);
    gpu = saved;
}

static void test_attention(void)
{
    check_attention(32, 8, 64, EXSA_DTYPE_F32);
    check_attention(32, 8, 64, EXSA_DTYPE_F16);
    check_attention(4, 2, 64, EXSA_DTYPE_F16);
    check_attention(6, 6, 128, EXSA_DTYPE_F32);
    check_attention(16, 1, 64, EXSA_DTYPE_F32);
}

static void test_shortconv(void)
{
    struct hparams hp = g_hp;
    hp.n_layers = 1, hp.n_kv_heads[0] = 0, hp.dim = 1024;
    const int dim = hp.dim, L = hp.l_cache;
    struct twin t;
    twin_init(&t, &hp, EXSA_DTYPE_F32);
    float *wv = random_input((int64_t)dim * L);
    struct tensor w = {.name = "conv",
                       .type = EXSA_DTYPE_F32,
                       .n_dims = 2,
                       .ne = {L, dim, 1, 1},
                       .data = wv,
                       .nbytes = 4u * dim * L};
    struct tensor wg = w;
    gpu->ops->prepare(gpu, &wg);
    const int chunks[][2] = {{20, 1}, {7, 3}, {1, 1}, {1, 1}, {64, 2}, {100, 3}, {2, 2}};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        const int n = chunks[c][0];
        int32_t pos[NB], seq[NB], after[4];
        struct step st[2];
        twin_step(&t, n, chunks[c][1], pos, seq, st, after);
        float *bcx = random_input((int64_t)n * 3 * dim), *y = malloc(sizeof(float) * n * dim);
        ref->ops->shortconv(ref, &st[0], y, bcx, &w, t.kv[0], 0, dim, L);
        float *db = dev_put(bcx, (size_t)n * 3 * dim), *dy = dev_put(NULL, (size_t)n * dim);
        int rc = gpu->ops->begin(gpu, &st[1]);
        rc = rc ? rc : gpu->ops->shortconv(gpu, &st[1], dy, db, &wg, t.kv[1], 0, dim, L);
        rc = gpu->ops->end(gpu) ? -1 : rc;
        float *g = dev_get(dy, (size_t)n * dim);
        twin_commit(&t, st, after);
        double es = 0; /* the states after the step, every sequence */
        for (int s = 0; s < 4; s++) {
            const size_t sl = (size_t)dim * (L - 1);
            float *sr = kv_conv_state(t.kv[0], 0, kv_conv_slot(t.kv[0], s, 0));
            float *sg = dev_get(kv_conv_state(t.kv[1], 0, kv_conv_slot(t.kv[1], s, 0)), sl);
            es = fmax(es, nmse_f32(sg, sr, sl));
            free(sg);
        }
        CHECK(rc == 0 && nmse_f32(g, y, (size_t)n * dim) <= 1e-12 && es <= 1e-12,
              "short conv step %zu: out %.3g state %.3g", c, nmse_f32(g, y, (size_t)n * dim), es);
        gpu->ops->release(gpu, db), gpu->ops->release(gpu, dy);
        free(bcx), free(y), free(g);
    }
    gpu->ops->unprepare(gpu, &wg);
    free(wv);
    twin_free(&t);
}

/* ---- the engine on the fixtures ---------------------------------------------------------------- */

static struct exsa_engine *engine(struct exsa_model *m, int gpu_layers, int kv_type, int n_seq)
{
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.n_ctx = 1024, p.n_seq_max = n_seq, p.n_batch = 1024, p.gpu_layers = gpu_layers;
    p.kv_type = (enum exsa_kv_type)kv_type, p.n_threads = 2;
    struct exsa_engine *e = NULL;
    char err[512];
    CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == 0, "engine (ngl %d): %s", gpu_layers,
          err);
    return e;
}

/* All prompts' stored rows of fixture f on an engine into out (rows in file order). */
static void fixture_rows(struct exsa_engine *e, const struct ref *r, float *out)
{
    for (int i = 0; i < r->n_prompts; i++) {
        const struct prompt *q = &r->p[i];
        exsa_seq_free(e,
                      run_prompt(e, q, 1024, r->n_vocab, out + (size_t)q->row_offset * r->n_vocab));
    }
}

static int total_rows(const struct ref *r)
{
    const struct prompt *q = &r->p[r->n_prompts - 1];
    return q->row_offset + q->n_pos;
}

/* EXSA_GPU_FIXTURES="a,b": only those (a device run carries part of the fixtures); unset: all. */
static bool fixture_wanted(const char *name)
{
    const char *only = getenv("EXSA_GPU_FIXTURES");
    if (!only || !*only)
        return true;
    const size_t n = strlen(name);
    for (const char *p = only; (p = strstr(p, name)) != NULL; p += n)
        if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
            return true;
    return false;
}

/* Every prompt of fixture `name` on engine e within the fast-path bar; `how` names the engine. */
static void check_fixture(struct exsa_engine *e, const char *name, const struct ref *r,
                          const char *how)
{
    const bool fl = strstr(name, "F32") || strstr(name, "F16");
    for (int i = 0; e && i < r->n_prompts; i++) {
        const struct prompt *q = &r->p[i];
        float *out = malloc(sizeof(float) * (size_t)q->n_pos * r->n_vocab);
        exsa_seq_free(e, run_prompt(e, q, 1024, r->n_vocab, out));
        int agree;
        double rel = rel_err(out, r->logits + (size_t)q->row_offset * r->n_vocab, q->n_pos,
                             r->n_vocab, &agree);
        const double bar = fl ? 2e-2 : 0.2, min_agree = fl ? 0 : 0.75;
        CHECK(rel <= bar && agree >= min_agree * q->n_pos,
              "%s%s prompt %d: rel %.3g (bar %.3g), argmax %d/%d", name, how, i, rel, bar, agree,
              q->n_pos);
        fprintf(stderr, "  gpu %-20s%s prompt %d: rel %.4f argmax %3d/%3d\n", name, how, i, rel,
                agree, q->n_pos);
        free(out);
    }
}

static void test_fixtures(void)
{
    for (int f = 0; f < N_FIXTURES; f++) {
        if (!fixture_wanted(FIXTURES[f])) {
            fprintf(stderr, "  %s: not in EXSA_GPU_FIXTURES, not run\n", FIXTURES[f]);
            continue;
        }
        struct ref r;
        if (load_ref(FIXTURES[f], &r) < 0) {
            CHECK(0, "fixture %s", FIXTURES[f]);
            continue;
        }
        struct exsa_model *m = load_model(FIXTURES[f]);
        struct exsa_engine *e = m ? engine(m, 99, EXSA_KV_DEFAULT, 1) : NULL;
        check_fixture(e, FIXTURES[f], &r, "");
        exsa_engine_free(e);
        exsa_model_free(m);
        free_ref(&r);
    }
}

/* Greedy continuations of lfm2-tiny-F32 on the GPU (f32 cache) equal the reference engine's. */
static void test_greedy_f32(void)
{
    struct ref r;
    if (load_ref("lfm2-tiny-F32", &r) < 0) {
        CHECK(0, "fixture lfm2-tiny-F32 is missing");
        return;
    }
    struct exsa_model *m = load_model("lfm2-tiny-F32");
    struct exsa_engine *e = m ? engine(m, 99, EXSA_KV_F32, 1) : NULL;
    check_greedy(e, &r);
    exsa_engine_free(e);
    exsa_model_free(m);
    free_ref(&r);
}

/* GPU_LAYERS = 1, half and all: the logits of full offload within the fast-path bar. */
static void test_partial_offload(void)
{
    const char *names[] = {"lfm2-tiny-F16", "lfm2-tiny-Q4_K_M", "lfm2moe-tiny-Q4_K_M"};
    for (int f = 0; f < 3; f++) {
        struct ref r;
        if (load_ref(names[f], &r) < 0) {
            CHECK(0, "fixture %s is missing", names[f]);
            continue;
        }
        struct exsa_model *m = load_model(names[f]);
        if (!m) {
            free_ref(&r);
            continue;
        }
        const int L = exsa_model_info(m)->n_layers, rows = total_rows(&r);
        const size_t sz = (size_t)rows * r.n_vocab;
        float *full = malloc(sizeof(float) * sz), *part = malloc(sizeof(float) * sz);
        struct exsa_engine *e = engine(m, 99, EXSA_KV_DEFAULT, 1);
        fixture_rows(e, &r, full);
        exsa_engine_free(e);
        const int ngl[] = {1, L / 2, L};
        for (int k = 0; k < 3; k++) {
            e = engine(m, ngl[k], EXSA_KV_DEFAULT, 1);
            if (!e)
                continue;
            fixture_rows(e, &r, part);
            int agree;
            double rel = rel_err(part, full, rows, r.n_vocab, &agree);
            const double bar = strstr(names[f], "F16") ? 2e-2 : 0.2;
            CHECK(rel <= bar, "%s -ngl %d: rel %.3g to full offload (bar %.2g)", names[f], ngl[k],
                  rel, bar);
            fprintf(stderr, "  %s -ngl %d of %d (%s): rel %.4f to full offload, argmax %d/%d\n",
                    names[f], ngl[k], L, exsa_engine_describe(e), rel, agree, rows);
            exsa_engine_free(e);
        }
        free(full), free(part);
        exsa_model_free(m);
        free_ref(&r);
    }
}

/* Decoding 24 tokens of 3 sequences, batched, with graphs and without, and each alone: graph
 * replay is bit-identical to eager execution; batched equals alone within rounding. */
static void decode_run(struct exsa_model *m, bool graphs, bool batched, float *out)
{
    if (graphs)
        unsetenv("EXSA_CUDA_GRAPHS");
    else
        setenv("EXSA_CUDA_GRAPHS", "off", 1);
    const int nv = exsa_model_info(m)->vocab_size, steps = 24;
    struct exsa_engine *e = engine(m, 99, EXSA_KV_DEFAULT, 3);
    for (int pass = 0; e && pass < (batched ? 1 : 3); pass++) {
        int ids[3], n = batched ? 3 : 1;
        for (int s = 0; s < n; s++)
            ids[s] = exsa_seq_new(e);
        for (int t = 0; t < steps; t++) {
            int32_t tok[3], pos[3], seq[3];
            uint8_t want[3] = {1, 1, 1};
            for (int s = 0; s < n; s++) {
                const int which = batched ? s : pass;
                tok[s] = (int32_t)((t * 31 + which * 97 + 5) % nv), pos[s] = t, seq[s] = ids[s];
            }
            float buf[3 * 1024];
            struct exsa_batch b = {n, tok, pos, seq, want, NULL};
            CHECK(exsa_decode(e, &b, buf) == 0, "decode");
            for (int s = 0; s < n; s++)
                memcpy(out + ((size_t)(batched ? s : pass) * steps + t) * nv, buf + (size_t)s * nv,
                       sizeof(float) * nv);
        }
        for (int s = 0; s < n; s++)
            exsa_seq_free(e, ids[s]);
    }
    const long replays = e ? backend_cuda_graph_replays(e->gpu) : -1;
    CHECK(graphs ? replays >= steps - 2 : replays == 0, "graphs %s: %ld replays",
          graphs ? "on" : "off", replays);
    exsa_engine_free(e);
    unsetenv("EXSA_CUDA_GRAPHS");
}

static void test_graphs_and_batching(void)
{
    struct exsa_model *m = load_model("lfm2moe-tiny-Q4_K_M");
    if (!m)
        return;
    const size_t sz = 3 * 24 * (size_t)exsa_model_info(m)->vocab_size;
    float *a = malloc(sizeof(float) * sz), *b = malloc(sizeof(float) * sz);
    float *c = malloc(sizeof(float) * sz);
    decode_run(m, true, true, a);
    decode_run(m, false, true, b);
    decode_run(m, true, false, c);
    CHECK(memcmp(a, b, sizeof(float) * sz) == 0, "graph replay differs from eager execution");
    int agree;
    double rel = rel_err(a, c, 3 * 24, exsa_model_info(m)->vocab_size, &agree);
    CHECK(rel < 1e-5, "batched vs alone: rel %.3g", rel);
    fprintf(stderr, "  graphs vs eager: %s; batched vs alone: rel %.3g, argmax %d/72\n",
            memcmp(a, b, sizeof(float) * sz) ? "DIFFER" : "identical", rel, agree);
    free(a), free(b), free(c);
    exsa_model_free(m);
}

/* Batch invariance with exsa_engine_params.deterministic (batch-harness.h): 16 sequences,
 * prompts of 5 to 300 tokens, a 160-entry step budget (steps past the 64 tokens where products
 * would switch to cuBLAS, contexts past the 256 positions of an attention split), alone and in
 * groups of 2, 8 and 16: every logit row bit for bit the same, and one prompt whole and in
 * chunks of 1, 64 and 100; the fixtures' prompts within the fast-path bar on that engine.
 * Without the setting rows differ (on the first file): the setting is not ignored. */
static void test_batch_invariance(void)
{
    static const char *const names[] = {"lfm2-tiny-Q4_K_M", "lfm2moe-tiny-Q4_K_M", "lfm2-tiny-F16"};
    static const struct bh_cfg cfg = {5, 300, 160, {300, 1, 64, 100}, true, true};
    for (int f = 0; f < 3; f++) {
        struct ref r;
        if (!fixture_wanted(names[f]) || load_ref(names[f], &r) < 0) {
            CHECK(!fixture_wanted(names[f]), "fixture %s", names[f]);
            continue;
        }
        struct exsa_model *m = load_model(names[f]);
        for (int det = 1; m && det >= (f == 0 ? 0 : 1); det--) {
            struct exsa_engine_params p;
            exsa_engine_params_default(&p);
            p.n_ctx = 1024, p.n_seq_max = BH_SEQ, p.n_batch = 1024, p.gpu_layers = 99;
            p.deterministic = det;
            struct exsa_engine *e = NULL;
            char err[512], what[96];
            CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == 0, "engine: %s", err);
            snprintf(what, sizeof what, "%s (%s)", names[f], det ? "deterministic" : "default");
            struct bh_cfg c = cfg;
            c.expect_same = det;
            int widest = 0;
            const int differed =
                e ? bh_check_engine(e, &c, exsa_model_info(m)->vocab_size, what, &widest) : 0;
            CHECK(!e || widest > 64, "%s: widest step %d entries", what, widest);
            CHECK(!e || det || differed > 0, "%s: no sequence differed from alone", what);
            fprintf(stderr,
                    "  %s: %d of 48 (sequence, group) runs differ from alone, widest "
                    "step %d\n",
                    what, differed, widest);
            if (det)
                check_fixture(e, names[f], &r, " (deterministic)");
            exsa_engine_free(e);
        }
        exsa_model_free(m);
        free_ref(&r);
    }
}

/* The prompt cache over the GPU (K/V rows copied out of device blocks and back, conv states):
 * with deterministic kernels a prefix restored at 100 or 70 positions gives bit for bit the
 * logits of a cold run (whose chunks fall elsewhere); with the default kernels within 1e-3. */
static void test_prompt_cache(void)
{
    struct exsa_model *m = load_model("lfm2-tiny-Q4_K_M");
    for (int det = 1; m && det >= 0; det--) {
        struct exsa_engine_params p;
        exsa_engine_params_default(&p);
        p.n_ctx = 512, p.n_seq_max = 4, p.n_batch = CHUNK, p.gpu_layers = 99;
        p.deterministic = det;
        struct exsa_engine *e = NULL;
        char err[256];
        CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == 0, "engine: %s", err);
        struct pcache *pc = e ? pcache_new(e, 64u << 20) : NULL;
        CHECK(pc != NULL, "pcache_new");
        if (!pc) {
            exsa_engine_free(e);
            break;
        }
        float *a[2] = {malloc(sizeof(float) * V), malloc(sizeof(float) * V)};
        float *b[2] = {malloc(sizeof(float) * V), malloc(sizeof(float) * V)};
        two_hits(e, pc, a, b);
        int agree;
        const double rel1 = rel_err(b[0], a[0], 1, V, &agree);
        const double rel2 = rel_err(b[1], a[1], 1, V, &agree);
        fprintf(stderr, "  prompt cache hit vs cold (%s): rel %.3g at 100, %.3g at 70\n",
                det ? "deterministic" : "default", rel1, rel2);
        CHECK(det ? rel1 == 0 && rel2 == 0 : rel1 < 1e-3 && rel2 < 1e-3,
              "hit vs cold (%s): rel %.3g, %.3g", det ? "deterministic" : "default", rel1, rel2);
        free(a[0]), free(a[1]), free(b[0]), free(b[1]);
        pcache_free(pc);
        exsa_engine_free(e);
    }
    exsa_model_free(m);
}

static bool wanted(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return true;
    return false;
}

#define RUN_IF(fn)                                                                                 \
    do {                                                                                           \
        if (wanted(argc, argv, #fn))                                                               \
            RUN(fn);                                                                               \
    } while (0)

int main(int argc, char **argv)
{
    size_t free_b = 0, total_b = 0;
    if (backend_cuda_mem_info(&free_b, &total_b) < 0 || total_b == 0) {
        printf("GPU tests need a CUDA device and none is usable here: run make test-gpu on a "
               "machine with one\n0 passed, 0 failed\n");
        return 0;
    }
    verbose = getenv("EXSA_TEST_VERBOSE") != NULL;
    make_backends();
    if (!gpu)
        TEST_END();
    RUN_IF(test_matmul);
    RUN_IF(test_graph_after_unprepare);
    RUN_IF(test_fused_products);
    RUN_IF(test_norm);
    RUN_IF(test_qk_norm_rope);
    RUN_IF(test_elementwise);
    RUN_IF(test_embed_gather);
    RUN_IF(test_attention);
    RUN_IF(test_shortconv);
    gpu->ops->free(gpu), ref->ops->free(ref);
    RUN_IF(test_fixtures);
    RUN_IF(test_greedy_f32);
    RUN_IF(test_partial_offload);
    RUN_IF(test_graphs_and_batching);
    RUN_IF(test_batch_invariance);
    RUN_IF(test_prompt_cache);
    /* the products again with a grid of 3 blocks, each walking many rows (last: a device fault
     * here would leave the device unusable for the tests after it) */
    setenv("EXSA_CUDA_MMV_MAX_BLOCKS", "3", 1);
    make_backends();
    if (gpu) {
        RUN_IF(test_matmul);
        RUN_IF(test_fused_products);
        gpu->ops->free(gpu), ref->ops->free(ref);
    }
    unsetenv("EXSA_CUDA_MMV_MAX_BLOCKS");
    TEST_END();
}
