/*
 * test_engine.c: the engine's step contract on lfm2-tiny-F32 (conv and attention layers), on
 * the reference and the fast CPU backend: a step that fails at any op (injected by swapping
 * the backend's ops table for one whose op number k fails) returns that error and leaves
 * every sequence's cache as it was, so the same step run again gives the logits of an engine
 * that never failed; fork, snapshot and restore through the backends give the logits of a
 * plain run; hidden-state output is the normed state the head multiplies; released weights are
 * gone from the mapping while the vocabulary stays.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "harness.h"
#include "quant.h"

#define V 1024 /* the fixture's vocabulary */

static struct exsa_model *load(void)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    struct exsa_model *m = NULL;
    CHECK(exsa_model_load(path, &m, err, sizeof err) == 0, "load %s: %s", path, err);
    return m;
}

static struct exsa_engine *engine(struct exsa_model *m, enum exsa_backend_kind kind, int n_seq)
{
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.backend = kind, p.n_threads = 2, p.n_ctx = 256, p.n_seq_max = n_seq, p.n_batch = 64;
    struct exsa_engine *e = NULL;
    char err[256];
    CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == 0, "engine: %s", err);
    return e;
}

/* Feeds n tokens (a fixed pseudo-random sequence from position p0) of seq in one batch;
 * logits of the last into out. */
static int feed(struct exsa_engine *e, int seq, int p0, int n, float *out)
{
    int32_t tok[64], pos[64], sq[64];
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)((p0 + i) * 7919u % 1000u) + 10, pos[i] = p0 + i, sq[i] = seq;
    struct exsa_batch b = {n, tok, pos, sq, NULL, NULL};
    return exsa_decode(e, &b, out);
}

/* ---- fault injection: op number `fail_at` of a step returns EXSA_EIO ------------------------ */

static int n_calls, fail_at;
static const struct backend_ops *real;

static int tick(void)
{
    return n_calls++ == fail_at ? EXSA_EIO : 0;
}

static int f_matmul(struct backend *be, const struct tensor *w, int ex, const float *x, float *y,
                    int n)
{
    return tick() ? EXSA_EIO : real->matmul(be, w, ex, x, y, n);
}
static int f_rmsnorm(struct backend *be, float *y, const float *x, const struct tensor *w, int rows,
                     int dim, float eps)
{
    return tick() ? EXSA_EIO : real->rmsnorm(be, y, x, w, rows, dim, eps);
}
static int f_shortconv(struct backend *be, const struct step *st, float *y, const float *bcx,
                       const struct tensor *w, struct kv_cache *kv, int c, int dim, int l)
{
    return tick() ? EXSA_EIO : real->shortconv(be, st, y, bcx, w, kv, c, dim, l);
}
static int f_attention(struct backend *be, const struct step *st, float *out, const float *q,
                       const float *k, const float *v, struct kv_cache *kv, int a, int h, int hkv,
                       int hd)
{
    return tick() ? EXSA_EIO : real->attention(be, st, out, q, k, v, kv, a, h, hkv, hd);
}
static int f_add(struct backend *be, float *y, const float *x, long n)
{
    return tick() ? EXSA_EIO : real->add(be, y, x, n);
}

/* Runs one step of 5 tokens on seq 0 with a fault at op k; returns the decode's code. */
static int faulty_step(struct exsa_engine *e, int k, int p0, float *out)
{
    struct backend *be = e->stages[0].be;
    struct backend_ops t = *be->ops;
    real = be->ops;
    t.matmul = f_matmul, t.rmsnorm = f_rmsnorm, t.shortconv = f_shortconv;
    t.attention = f_attention, t.add = f_add;
    n_calls = 0, fail_at = k;
    be->ops = &t;
    int rc = feed(e, 0, p0, 5, out);
    be->ops = real;
    return rc;
}

static void check_faults(enum exsa_backend_kind kind)
{
    struct exsa_model *m = load();
    if (!m)
        return;
    struct exsa_engine *a = engine(m, kind, 1), *b = engine(m, kind, 1);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    exsa_seq_new(a), exsa_seq_new(b);
    CHECK(feed(a, 0, 0, 20, la) == 0 && feed(b, 0, 0, 20, lb) == 0, "prompt");
    int p0 = 20, faults = 0;
    /* every op position of the first layers, and some far into the step */
    const int ks[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 30, 40, 50};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        int rc = faulty_step(a, ks[i], p0, la);
        if (rc == 0) { /* past the step's last op: it ran whole; keep b in step */
            CHECK(feed(b, 0, p0, 5, lb) == 0, "b");
            p0 += 5;
        } else {
            faults++;
            CHECK(rc == EXSA_EIO, "op %d: rc %d", ks[i], rc);
        }
        CHECK(exsa_seq_len(a, 0) == p0, "op %d: length %d, expected %d", ks[i], exsa_seq_len(a, 0),
              p0);
        CHECK(feed(a, 0, p0, 5, la) == 0 && feed(b, 0, p0, 5, lb) == 0, "after op %d", ks[i]);
        p0 += 5;
        CHECK(memcmp(la, lb, sizeof(float) * V) == 0, "op %d: logits differ after a failure",
              ks[i]);
    }
    CHECK(faults >= 17, "only %d of the injected faults were hit", faults);
    free(la), free(lb);
    exsa_engine_free(a), exsa_engine_free(b);
    exsa_model_free(m);
}

static void test_fault_ref(void)
{
    check_faults(EXSA_BACKEND_REF);
}

static void test_fault_cpu(void)
{
    check_faults(EXSA_BACKEND_CPU);
}

/* fork / snapshot / restore through the backends equal a plain run */
static void test_fork_snapshot(void)
{
    struct exsa_model *m = load();
    if (!m)
        return;
    struct exsa_engine *e = engine(m, EXSA_BACKEND_CPU, 3), *r = engine(m, EXSA_BACKEND_CPU, 1);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    int s = exsa_seq_new(e);
    exsa_seq_new(r);
    CHECK(feed(e, s, 0, 30, l1) == 0 && feed(r, 0, 0, 30, l2) == 0, "prompt");
    struct exsa_snapshot *snap = NULL;
    CHECK(exsa_seq_snapshot(e, s, &snap) == 0, "snapshot");
    int f = exsa_seq_fork(e, s);
    CHECK(f >= 0 && exsa_seq_len(e, f) == 30, "fork %d", f);
    CHECK(feed(e, s, 30, 9, l1) == 0, "advance"); /* s moves on; the fork must not see it */
    CHECK(feed(e, f, 30, 6, l1) == 0 && feed(r, 0, 30, 6, l2) == 0, "fork step");
    CHECK(memcmp(l1, l2, sizeof(float) * V) == 0, "fork differs from a plain run");
    CHECK(exsa_seq_restore(e, s, snap) == 0 && exsa_seq_len(e, s) == 30, "restore");
    CHECK(feed(e, s, 30, 6, l1) == 0, "after restore");
    CHECK(memcmp(l1, l2, sizeof(float) * V) == 0, "restored sequence differs from a plain run");
    exsa_snapshot_free(snap);
    free(l1), free(l2);
    exsa_engine_free(e), exsa_engine_free(r);
    exsa_model_free(m);
}

/* exsa_decode_hidden: unit-RMS rows scaled by the output norm, and the logits are their
 * product with the tied embedding. */
static void test_hidden(void)
{
    struct exsa_model *m = load();
    if (!m)
        return;
    struct exsa_engine *e = engine(m, EXSA_BACKEND_REF, 2);
    const int d = exsa_model_info(m)->dim;
    float *h = malloc(sizeof(float) * d), *l = malloc(sizeof(float) * V);
    int a = exsa_seq_new(e), b = exsa_seq_new(e);
    int32_t tok[3] = {1, 200, 300}, pos[3] = {0, 1, 2}, sa[3] = {a, a, a}, sb[3] = {b, b, b};
    struct exsa_batch ba = {3, tok, pos, sa, NULL, NULL}, bb = {3, tok, pos, sb, NULL, NULL};
    CHECK(exsa_decode_hidden(e, &ba, h) == 0 && exsa_decode(e, &bb, l) == 0, "decode");
    float *row = malloc(sizeof(float) * d);
    /* the file's embedding (the model's tensors are its own business: model_gguf is the way in) */
    const struct gguf_tensor *emb = gguf_find_tensor(model_gguf(m), "token_embd.weight");
    CHECK(emb && emb->type == EXSA_DTYPE_F32, "token_embd.weight: F32 expected");
    double worst = 0;
    for (int v = 0; emb && emb->type == EXSA_DTYPE_F32 && v < V; v += 97) {
        dequantize_row(emb->type, (const uint8_t *)emb->data + (size_t)v * d * sizeof(float), row,
                       d);
        double dot = 0;
        for (int i = 0; i < d; i++)
            dot += (double)row[i] * h[i];
        worst = fmax(worst, fabs(dot - l[v]) / (fabs(l[v]) + 1e-3));
    }
    CHECK(worst < 1e-3, "hidden x embedding vs logits: rel %.3g", worst);
    free(h), free(l), free(row);
    exsa_engine_free(e);
    exsa_model_free(m);
}

/* After exsa_model_release_weights the tensor bytes no longer come from the file (zeros),
 * the vocabulary still works, and an engine with CPU layers is refused with a reason. */
static void test_release_weights(void)
{
    struct exsa_model *m = load();
    if (!m)
        return;
    int32_t before[16], after[16];
    int nb = exsa_tokenize(m, "Hello world", 11, true, false, before, 16);
    /* the bytes the model's blk.0.ffn_up binds (model.c points its tensors into the file) */
    const struct gguf_tensor *t = gguf_find_tensor(model_gguf(m), "blk.0.ffn_up.weight");
    CHECK(t && t->type == EXSA_DTYPE_F32, "blk.0.ffn_up.weight: F32 expected");
    if (!t || t->type != EXSA_DTYPE_F32) {
        exsa_model_free(m);
        return;
    }
    const float *w = t->data;
    float w0 = w[0];
    CHECK(w0 != 0, "fixture weight is zero");
    CHECK(exsa_model_release_weights(m) == 0, "release");
    CHECK(w[0] == 0, "weights still read %g from the file", w[0]);
    int na = exsa_tokenize(m, "Hello world", 11, true, false, after, 16);
    CHECK(na == nb && nb > 0 && !memcmp(before, after, sizeof(int32_t) * (size_t)na),
          "tokenizer changed after the release");
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    struct exsa_engine *e = NULL;
    char err[256] = "";
    CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == EXSA_EINVAL && strstr(err, "released"),
          "CPU engine on released weights: %s", err);
    exsa_model_free(m);
}

int main(void)
{
    RUN(test_fault_ref);
    RUN(test_fault_cpu);
    RUN(test_fork_snapshot);
    RUN(test_hidden);
    RUN(test_release_weights);
    TEST_END();
}
