/*
 * backend.h: the seam between model code and hardware. models/lfm2.c calls only these ops;
 * a backend fills struct backend_ops. The reference CPU backend (cpu/ops-ref.c) implements
 * every op in plain f32 C and is the ground truth; the fast CPU backend starts from a copy of
 * the reference table and replaces the ops it does better (cpu/backend-cpu.c); the CUDA backend
 * (cuda/) implements every op on the device.
 *
 * Memory: a backend owns its memory (alloc, upload, download, copy). Activations are row-major
 * [n_tok][width] f32 arrays in the memory of the backend that runs the op; `host_memory` says
 * whether the host may touch them directly (the CPU backends). Weights reach ops as
 * `const struct tensor *`, the engine's copy of a model tensor, whose be_data the backend set
 * in prepare (a repacked or device copy).
 *
 * A step: the engine calls begin(step) once per forward call on each backend that runs a part
 * of it, then the ops in order, then end(), which waits for the work, finishes the downloads
 * queued during the step and returns the step's first error. Ops return 0 or a negative
 * EXSA_E* code; a backend may queue work and report an asynchronous failure at end() only.
 * Between begin and end, download may be asynchronous; outside a step every call is complete
 * when it returns.
 */
#ifndef EXSA_BACKEND_H
#define EXSA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

struct kv_cache;
struct backend;

/* One forward call, as every backend that runs part of it sees it. Host arrays, valid from
 * begin to end; a device backend copies them to its memory in begin. */
struct step {
    int n;                   /* entries */
    const int32_t *tok;      /* [n] token ids */
    const int32_t *pos;      /* [n] positions */
    const int32_t *seq;      /* [n] engine sequence id of each entry */
    const int32_t *ent_sq;   /* [n] index of the entry's sequence among the step's sequences */
    int n_out;               /* entries whose final state goes to the head */
    const int32_t *out_rows; /* [n_out] their indices, ascending */
    /* The step's distinct sequences, in order of first appearance. */
    int n_sq;
    const int32_t *sq_seq;     /* [n_sq] engine sequence id */
    const int32_t *sq_ent_off; /* [n_sq + 1]: sequence j's entries are sq_ent[off[j]..off[j+1]) */
    const int32_t *sq_ent;     /* [n] entry indices grouped by sequence, in position order */
    const int32_t *sq_conv_rd; /* [n_sq] conv slot holding the state before the step */
    const int32_t *sq_conv_wr; /* [n_sq] conv slot the step writes the state after it to */
    const int32_t *sq_blk_off; /* [n_sq + 1]: sequence j's block table is blk[off[j]..off[j+1]) */
    const int32_t *blk;        /* block ids covering positions 0..(last position of j) */
    const int32_t *job_len;    /* [n] or NULL: each entry's job length (exsa_batch.job_len) */
};

struct backend_ops {
    const char *name;
    void (*free)(struct backend *be);

    /* ---- memory: zeroed allocations; NULL when out of memory; release(NULL) is a no-op. */
    void *(*alloc)(struct backend *be, size_t bytes);
    void (*release)(struct backend *be, void *p);
    int (*upload)(struct backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(struct backend *be, void *host_dst, const void *src, size_t bytes);
    int (*copy)(struct backend *be, void *dst, const void *src, size_t bytes);
    int (*zero)(struct backend *be, void *dst, size_t bytes);

    /* ---- weights: called once per tensor of the engine's copy at engine creation; may set
     * w->be_data. unprepare frees what prepare made. Optional (NULL: nothing to do). */
    int (*prepare)(struct backend *be, struct tensor *w);
    void (*unprepare)(struct backend *be, struct tensor *w);

    /* ---- step boundary. Optional for host backends. */
    int (*begin)(struct backend *be, const struct step *st);
    int (*end)(struct backend *be);

    /* ---- ops */
    /* y[t][n] = sum_k W[n][k] x[t][k] for t < n_tok; W {K, N} (or expert e of {K, N, E}). */
    int (*matmul)(struct backend *be, const struct tensor *w, int expert, const float *x, float *y,
                  int n_tok);
    /* out[i] = row st->tok[i] of w (dequantized); w {dim, vocab}. */
    int (*embed)(struct backend *be, const struct step *st, const struct tensor *w, float *out);
    /* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for n_rows rows of dim; y may equal x. */
    int (*rmsnorm)(struct backend *be, float *y, const float *x, const struct tensor *w, int n_rows,
                   int dim, float eps);
    /* NEOX RoPE in place on the step's n rows of n_heads heads, at each entry's position. */
    int (*rope)(struct backend *be, const struct step *st, float *x, int n_heads, int head_dim,
                float base);
    /* out[i] = silu(gate[i]) * up[i], i < n. out may equal gate. */
    int (*swiglu)(struct backend *be, float *out, const float *gate, const float *up, long n);
    /* y[i] += x[i], i < n */
    int (*add)(struct backend *be, float *y, const float *x, long n);
    /* The gated short conv of conv layer conv_idx, given in_proj's output bcx [n][3 dim]
     * (B, C, X): for each sequence of the step, its entries in position order, s = B*X,
     * c = sum_k w[:,k] * window(state, s)[k], y = C*c. The state is read from slot
     * st->sq_conv_rd[j] of the cache and the state after the step written to sq_conv_wr[j]. */
    int (*shortconv)(struct backend *be, const struct step *st, float *y, const float *bcx,
                     const struct tensor *w, struct kv_cache *kv, int conv_idx, int dim,
                     int l_cache);
    /* Writes k, v ([n][n_kv_heads head_dim]) of every entry into attention layer attn_idx of
     * the cache at (seq, pos), then out[i] = causal GQA attention of q[i] over positions
     * 0..pos[i] of its sequence. q, out: [n][n_heads head_dim]. */
    int (*attention)(struct backend *be, const struct step *st, float *out, const float *q,
                     const float *k, const float *v, struct kv_cache *kv, int attn_idx, int n_heads,
                     int n_kv_heads, int head_dim);
    /* Sigmoid-routed top-k MoE FFN (LFM2-MoE): out[n][dim] = sum over the k experts with the
     * largest sigmoid(router x) + bias, weighted by the normalised un-biased sigmoid scores. */
    int (*moe)(struct backend *be, float *out, const float *x, const struct layer *l, int n_tok,
               int dim, int n_experts, int k, int expert_hidden);
    /* dst[r] = src[rows[r]] for r < n_rows, rows of dim floats (rows: st->out_rows from r0). */
    int (*gather)(struct backend *be, const struct step *st, float *dst, const float *src, int r0,
                  int n_rows, int dim);

    /* Optional hint: x will not be read again before it is next written, so work that only
     * produces x may be dropped (a deferred norm). Never changes results. */
    void (*discard)(struct backend *be, const float *x);

    /* ---- fused ops, optional (NULL: models/lfm2.c calls the plain ops instead) */
    /* y += W x (matmul then add). */
    int (*matmul_add)(struct backend *be, const struct tensor *w, const float *x, float *y,
                      int n_tok);
    /* out = silu(gate x) * (up x): the dense FFN's first half. */
    int (*glu)(struct backend *be, const struct tensor *gate, const struct tensor *up,
               const float *x, float *out, int n_tok);
    /* q, k, v = wq x, wk x, wv x. */
    int (*qkv)(struct backend *be, const struct tensor *wq, const struct tensor *wk,
               const struct tensor *wv, const float *x, float *q, float *k, float *v, int n_tok);
    /* Per-head RMSNorm (q_norm, k_norm) then RoPE at each entry's position, of q and k. */
    int (*qk_norm_rope)(struct backend *be, const struct step *st, float *q, float *k,
                        const struct tensor *q_norm, const struct tensor *k_norm, int n_heads,
                        int n_kv_heads, int head_dim, float eps, float base);
};

struct backend {
    const struct backend_ops *ops;
    int n_threads;
    bool host_memory; /* its buffers are host memory the engine may read and write */
    void *priv;
};

/* What a backend is created for: sizes its internal scratch once, so steps never allocate. */
struct backend_config {
    int n_threads;            /* CPU threads (0: all cores) */
    int n_batch;              /* most entries in one step */
    int n_ctx;                /* most positions per sequence */
    int n_seq_max;            /* most sequences alive at once */
    const struct hparams *hp; /* the model's shapes */
    bool deterministic;       /* batch-invariant kernels (exsa_engine_params.deterministic) */
};

/* Copies bytes from src (memory of backend `from`) to dst (memory of `to`): one download or
 * upload when one side is the host, through a host bounce buffer between two devices. */
int backend_transfer(struct backend *to, void *dst, struct backend *from, const void *src,
                     size_t bytes);

/* LFM2-MoE routing of one token (reference semantics, shared by backends): the k experts with
 * the largest sigmoid(logits) + bias (n_experts <= 512, k <= 64) into ids, their un-biased
 * sigmoid scores normalised to sum 1 into wts. */
void moe_route(const float *logits, const float *bias, int n_experts, int k, int *ids, float *wts);

/* The reference backend (plain C, f32). */
struct backend *backend_ref_create(const struct backend_config *c);
/* The reference ops table, for fast backends to copy and override. */
extern const struct backend_ops backend_ref_ops;
/* The fast CPU backend. NULL if it cannot be created. */
struct backend *backend_cpu_create(const struct backend_config *c);
/* The CUDA backend on device 0; NULL with a sentence in err when there is no usable device or
 * this build has no CUDA (cuda/ is built by make CUDA=1). */
struct backend *backend_cuda_create(const struct backend_config *c, char *err, size_t errlen);
/* Free and total bytes of a CUDA device's memory (0 and EXSA_EUNSUPPORTED without CUDA). */
int backend_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* Read bandwidth of device 0's memory in GB/s: the best of several passes of a streaming-read
 * kernel over `bytes`; < 0 without a device. */
double backend_cuda_read_bandwidth(size_t bytes);
/* CUDA graph replays of a CUDA backend so far (-1 for another backend): for tests. */
long backend_cuda_graph_replays(const struct backend *be);

#endif
