/*
 * exsa.h: the one public header of Exsa Engine, a local inference engine for the LFM2 family.
 *
 * Opaque handles: a model (weights + tokenizer + chat template, read-only after load), an engine
 * (a backend, the per-sequence cache and scratch memory for one model), a sampler (per request).
 * Every function returns 0 or a negative EXSA_E* code unless it says otherwise; loaders fill a
 * caller's error buffer with a sentence that names what was wrong. Nothing here exits or aborts
 * on bad input. A model may be shared by several engines; an engine is used by one thread.
 */
#ifndef EXSA_H
#define EXSA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXSA_VERSION "0.1.0"

enum {
    EXSA_OK = 0,
    EXSA_EINVAL = -1,       /* bad argument or request */
    EXSA_ENOMEM = -2,       /* allocation failed or a capacity is exhausted */
    EXSA_EIO = -3,          /* cannot open, stat or map a file */
    EXSA_EFORMAT = -4,      /* a file's bytes break the format */
    EXSA_ENOTFOUND = -5,    /* a key, tensor or sequence is missing */
    EXSA_ETYPE = -6,        /* a value has the wrong type */
    EXSA_EUNSUPPORTED = -7, /* valid, but not supported (architecture, tensor type, tokenizer) */
    EXSA_ERANGE = -8,       /* a value is out of range (token id, position, context) */
    EXSA_ECANCELLED = -9,
};

/* A short English name for an EXSA_E* code ("invalid argument", ...). */
const char *exsa_strerror(int err);

/* ggml tensor type ids, as stored in GGUF tensor infos (LFM2-SPEC.md 1.7). */
enum exsa_dtype {
    EXSA_DTYPE_F32 = 0,
    EXSA_DTYPE_F16 = 1,
    EXSA_DTYPE_Q4_0 = 2,
    EXSA_DTYPE_Q4_1 = 3,
    EXSA_DTYPE_Q5_0 = 6,
    EXSA_DTYPE_Q5_1 = 7,
    EXSA_DTYPE_Q8_0 = 8,
    EXSA_DTYPE_Q8_1 = 9,
    EXSA_DTYPE_Q2_K = 10,
    EXSA_DTYPE_Q3_K = 11,
    EXSA_DTYPE_Q4_K = 12,
    EXSA_DTYPE_Q5_K = 13,
    EXSA_DTYPE_Q6_K = 14,
    EXSA_DTYPE_Q8_K = 15,
    EXSA_DTYPE_IQ4_NL = 20,
    EXSA_DTYPE_IQ4_XS = 23,
    EXSA_DTYPE_BF16 = 30,
    EXSA_DTYPE_COUNT = 43, /* ids below this may name a type; see quant.h for which we support */
};

enum exsa_backend_kind {
    EXSA_BACKEND_REF = 0,  /* plain C, f32 everywhere: the ground truth */
    EXSA_BACKEND_CPU = 1,  /* SIMD kernels and threads; falls back to ref per op */
    EXSA_BACKEND_CUDA = 2, /* every layer on the GPU (same as gpu_layers >= n_layers) */
};

/* Element type of the attention layers' K/V cache. */
enum exsa_kv_type {
    EXSA_KV_DEFAULT = 0, /* f16 on GPU layers, f32 on CPU layers */
    EXSA_KV_F32 = 1,
    EXSA_KV_F16 = 2, /* GPU layers only */
};

/* ---- model ---------------------------------------------------------------------------------- */

struct exsa_model;

struct exsa_model_info {
    const char *path; /* the file it was loaded from */
    const char *arch; /* "lfm2" or "lfm2moe" */
    const char *name; /* general.name or "" */
    int n_layers, dim, hidden_dim, n_heads, head_dim, vocab_size, n_ctx_train;
    int n_attn_layers, n_conv_layers;
    int n_experts, n_experts_used, expert_hidden_dim, n_dense_lead;
    uint64_t n_params, weight_bytes;
    int l_cache;               /* short-conv kernel length */
    float norm_eps, rope_base; /* as the model uses them (defaults applied) */
    bool tied_output;          /* the output head is token_embd */
};

/* Maps and validates a GGUF, binds every tensor, reads the tokenizer and chat template.
 * On error returns a negative code and writes a sentence into err (if errlen > 0). */
int exsa_model_load(const char *path, struct exsa_model **out, char *err, size_t errlen);
void exsa_model_free(struct exsa_model *m);
/* Whether later loads map the GGUF file (true, the default: pages are read as they are
 * touched) or read it into memory (false: a file shrunk or rewritten in place on disk cannot
 * crash the process with SIGBUS). Process-wide; applies to every later exsa_model_load. */
void exsa_set_mmap(bool on);
const struct exsa_model_info *exsa_model_info(const struct exsa_model *m);
/* After an engine holds every weight in its own copy (all layers and the head on the GPU):
 * drops the host's reference to the weights in the file mapping, so the file may change on
 * disk without faulting the process. Engines made from m afterwards must be fully offloaded
 * too (others are refused). Returns 0 or a negative code. */
int exsa_model_release_weights(struct exsa_model *m);
/* Whether layer l (0-based) is an attention layer; false for a short-conv layer or no layer. */
bool exsa_model_layer_is_attn(const struct exsa_model *m, int l);

/* ---- engine: backend + per-sequence cache ---------------------------------------------------- */

struct exsa_engine;

struct exsa_engine_params {
    enum exsa_backend_kind backend;
    int n_ctx;      /* max positions per sequence (0: min(4096, n_ctx_train)) */
    int n_seq_max;  /* sequences alive at once (0: 1) */
    int n_batch;    /* max entries in one exsa_decode call (0: 512) */
    int n_threads;  /* CPU threads (0: all cores) */
    int gpu_layers; /* >= n_layers: all on the GPU; N > 0: the last N layers and the output
                       head on the GPU, the rest on the CPU (CUDA builds only) */
    enum exsa_kv_type kv_type;
    /* Batch-invariant GPU kernels: a sequence's logits on the GPU do not depend on what it is
     * batched with or how its prompt is cut (every product takes the matrix-vector kernels,
     * attention splits positions at fixed points). Costs GPU prefill speed, so off by default;
     * the CPU backends are batch-invariant anyway (with job lengths, see exsa_batch). */
    bool deterministic;
};
void exsa_engine_params_default(struct exsa_engine_params *p);
int exsa_engine_create(struct exsa_model *m, const struct exsa_engine_params *p,
                       struct exsa_engine **out, char *err, size_t errlen);
void exsa_engine_free(struct exsa_engine *e);
/* One line: where each layer and the head run, and the memory each backend took. */
const char *exsa_engine_describe(const struct exsa_engine *e);

/* One forward call: prefill chunks and decode tokens of several sequences together. Within one
 * sequence, entries must be in position order and continue that sequence's cache exactly
 * (the first entry's pos == exsa_seq_len()). */
struct exsa_batch {
    int n;
    const int32_t *token;
    const int32_t *pos;
    const int32_t *seq;
    const uint8_t *logits; /* NULL: only the last entry wants logits */
    /* Optional, [n], each >= 1: the length of the job each entry belongs to: its whole prompt's
     * (however the prompt is cut into batches, and whatever part of it came from a prompt
     * cache), or 1 for a generated token. The fast CPU backend then picks each entry's kernels
     * by it, as it would for that prompt or token alone, so a sequence's results do not depend
     * on what it is batched with or how its prompt is chunked, and a retried request that
     * restores its own checkpoints gets what it got the first time (batch invariance: the
     * server gives it). NULL: kernels by the batch's size, whose results change with it. */
    const int32_t *job_len;
};
/* Runs the batch; writes vocab_size floats per entry that wanted logits, in batch order, to
 * logits_out. On error nothing of any sequence's cache is changed (the batch is checked first). */
int exsa_decode(struct exsa_engine *e, const struct exsa_batch *b, float *logits_out);
/* As exsa_decode, but writes the final hidden state (after the output norm: dim floats) of each
 * entry that wanted output instead of its logits (for embeddings). */
int exsa_decode_hidden(struct exsa_engine *e, const struct exsa_batch *b, float *hidden_out);

/* Sequences: ids are small integers handed out by the engine. */
int exsa_seq_new(struct exsa_engine *e); /* id >= 0, or EXSA_ENOMEM */
void exsa_seq_free(struct exsa_engine *e, int seq);
int exsa_seq_len(const struct exsa_engine *e, int seq);
int exsa_seq_fork(struct exsa_engine *e, int src); /* new id with a copy of src's state */
int exsa_seq_truncate(struct exsa_engine *e, int seq, int n_pos); /* see exsa_seq_restore */
/* A snapshot holds a sequence's conv state and KV length: restore it to roll the sequence back
 * to that point (the KV entries past it are dropped). The conv state cannot be rolled back
 * without one. */
struct exsa_snapshot;
int exsa_seq_snapshot(struct exsa_engine *e, int seq, struct exsa_snapshot **out);
int exsa_seq_restore(struct exsa_engine *e, int seq, const struct exsa_snapshot *s);
void exsa_snapshot_free(struct exsa_snapshot *s);

/* ---- tokenizer ------------------------------------------------------------------------------- */

/* Encodes text; returns the number of ids (which may exceed max: call again with more room),
 * or a negative code. add_bos follows the vocabulary's add_bos flag only when add_bos is true. */
int exsa_tokenize(const struct exsa_model *m, const char *text, size_t len, bool add_bos,
                  bool parse_special, int32_t *out, int max);
/* The bytes of one token (control tokens: empty unless special). Returns length or < 0. */
int exsa_token_to_piece(const struct exsa_model *m, int32_t id, bool special, char *buf,
                        size_t size);
bool exsa_token_is_eog(const struct exsa_model *m, int32_t id);
int32_t exsa_token_bos(const struct exsa_model *m);
int32_t exsa_token_eos(const struct exsa_model *m);

/* ---- chat template --------------------------------------------------------------------------- */

struct exsa_chat_msg {
    const char *role;     /* "system", "user", "assistant", "tool" */
    const char *content;  /* UTF-8 text */
    const char *thinking; /* optional reasoning text (an assistant's reasoning_content), or NULL */
    const char *tool_calls; /* optional JSON array of OpenAI tool calls (assistant), or NULL */
};

/* ---- sampler --------------------------------------------------------------------------------- */

struct exsa_sampling_params {
    float temperature;       /* <= 0: greedy */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off */
    float presence_penalty;  /* 0: off */
    float frequency_penalty; /* 0: off */
    int penalty_last_n;      /* window of recent tokens the penalties look at (-1: all) */
    uint64_t seed;
    int n_logit_bias;
    const int32_t *logit_bias_id;
    const float *logit_bias;
};

#endif /* EXSA_H */
