/*
 * backend.h: the seam between model code and hardware. models/lfm2.c calls only these ops;
 * a backend fills struct backend_ops. The reference CPU backend (cpu/ops-ref.c) implements
 * every op in plain f32 C and is the ground truth; a fast backend starts from a copy of the
 * reference table and replaces the ops it does better (cpu/backend-cpu.c).
 *
 * Activations are row-major [n_tok][width] float arrays in memory the backend owns or can
 * address (host memory for the CPU backends). Ops run on the calling thread and return when
 * done; a backend may use its own worker threads inside an op.
 */
#ifndef EXSA_BACKEND_H
#define EXSA_BACKEND_H

#include <stdint.h>

#include "model.h"

struct kv_cache;
struct backend;

/* Where each batch entry belongs; shared by the ops that look at sequence boundaries. */
struct batch_view {
    int n;
    const int32_t *pos; /* n */
    const int32_t *seq; /* n */
};

struct backend_ops {
    const char *name;
    void (*free)(struct backend *be);
    /* Optional: called once per weight at engine creation; may set w->be_data (a repacked copy).
     * Returns 0 or a negative code. */
    int (*prepare)(struct backend *be, struct tensor *w);

    /* y[t][n] = sum_k W[n][k] x[t][k] for t < n_tok; W {K, N} (or expert e of {K, N, E}). */
    void (*matmul)(struct backend *be, const struct tensor *w, int expert, const float *x,
                   float *y, int n_tok);
    /* out[i] = row tok[i] of w (dequantized); w {dim, vocab}. */
    void (*embed)(struct backend *be, const struct tensor *w, const int32_t *tok, int n,
                  float *out);
    /* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for n_rows rows of dim; y may equal x. */
    void (*rmsnorm)(struct backend *be, float *y, const float *x, const float *w, int n_rows,
                    int dim, float eps);
    /* NEOX RoPE in place on n_tok rows of n_heads heads of head_dim, at each row's position. */
    void (*rope)(struct backend *be, float *x, const int32_t *pos, int n_tok, int n_heads,
                 int head_dim, float base);
    /* out[i] = silu(gate[i]) * up[i], i < n. out may equal gate. */
    void (*swiglu)(struct backend *be, float *out, const float *gate, const float *up, long n);
    /* y[i] += x[i], i < n */
    void (*add)(struct backend *be, float *y, const float *x, long n);
    /* The gated short conv, given in_proj's output bcx [n][3 dim] (B, C, X): for every entry in
     * batch order, s = B*X, c = sum_k w[:,k] * window(state, s)[k], y = C*c; updates the entry's
     * sequence's rolling state state[seq] ([dim][l_cache-1], oldest first). */
    void (*shortconv)(struct backend *be, float *y, const float *bcx, const struct tensor *w,
                      float *const *state, const struct batch_view *b, int dim, int l_cache);
    /* Writes k, v ([n][n_kv_heads head_dim]) of every entry into attention layer attn_idx of
     * the cache at (seq, pos), then out[i] = causal GQA attention of q[i] over positions
     * 0..pos[i] of seq[i]. q, out: [n][n_heads head_dim]. */
    void (*attention)(struct backend *be, float *out, const float *q, const float *k,
                      const float *v, struct kv_cache *kv, int attn_idx,
                      const struct batch_view *b, int n_heads, int n_kv_heads, int head_dim);
    /* Sigmoid-routed top-k MoE FFN (LFM2-MoE): out[n][dim] = sum over the k experts with the
     * largest sigmoid(router x) + bias, weighted by the normalised un-biased sigmoid scores. */
    void (*moe)(struct backend *be, float *out, const float *x, const struct layer *l,
                int n_tok, int dim, int n_experts, int k, int expert_hidden);
};

struct backend {
    const struct backend_ops *ops;
    int n_threads;
    void *priv;
};

/* LFM2-MoE routing of one token (reference semantics, shared by backends): the k experts with
 * the largest sigmoid(logits) + bias (n_experts <= 512, k <= 64) into ids, their un-biased
 * sigmoid scores normalised to sum 1 into wts. */
void moe_route(const float *logits, const float *bias, int n_experts, int k, int *ids,
               float *wts);

/* The reference backend (plain C, f32). */
struct backend *backend_ref_create(void);
/* The reference ops table, for fast backends to copy and override. */
extern const struct backend_ops backend_ref_ops;
/* The fast CPU backend; n_threads 0 means all cores. NULL if it cannot be created. */
struct backend *backend_cpu_create(int n_threads);

#endif
