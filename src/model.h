/*
 * model.h: a loaded model: hyper-parameters from the GGUF metadata, every tensor bound by name
 * and checked against them, the tokenizer and the chat template. Read-only after
 * exsa_model_load(); shared by engines, the server and tools. model.c holds the architecture
 * table and the generic binding helpers; models/lfm2.c the LFM2 / LFM2-MoE specifics.
 */
#ifndef EXSA_MODEL_H
#define EXSA_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "exsa.h"
#include "gguf.h"

#define MODEL_MAX_LAYERS 256

/* A weight. ne[0] is the contiguous dimension: a matrix {K, N} is N rows of K elements and maps
 * x in R^K to y in R^N. A 3-D expert stack {K, N, E} is E such matrices back to back. */
struct tensor {
    const char *name; /* the GGUF name (points into the gguf tables) */
    int type;         /* enum exsa_dtype */
    int n_dims;
    int64_t ne[4];
    const void *data; /* host bytes inside the mapping */
    uint64_t nbytes;
    void *be_data; /* in an engine's copy: its backend's own copy (repacked or on the device);
                      NULL in the model, which backends never change */
};

struct hparams {
    bool is_moe;
    int dim, hidden_dim, n_layers, n_heads, head_dim, vocab_size, n_ctx_train, l_cache;
    int n_kv_heads[MODEL_MAX_LAYERS]; /* 0: short-conv layer */
    float eps, rope_base;
    int n_experts, n_experts_used, expert_hidden_dim, n_dense_lead, gating_func;
};

struct layer {
    bool is_attn, is_moe;
    int n_kv_heads;
    int attn_idx; /* index among attention layers (KV cache slot), -1 for conv layers */
    int conv_idx; /* index among conv layers (conv state slot), -1 for attention layers */
    struct tensor attn_norm; /* {dim} F32: pre-norm before the mixer */
    struct tensor ffn_norm;  /* {dim} F32: pre-norm before the FFN / MoE */
    /* short conv */
    struct tensor conv_in;  /* {dim, 3 dim}: rows B, then C, then X */
    struct tensor conv_w;   /* {l_cache, dim} F32: tap l_cache-1 is the current step */
    struct tensor conv_out; /* {dim, dim} */
    /* attention */
    struct tensor wq;             /* {dim, n_heads head_dim} */
    struct tensor wk, wv;         /* {dim, n_kv_heads head_dim} */
    struct tensor wo;             /* {n_heads head_dim, dim} */
    struct tensor q_norm, k_norm; /* {head_dim} F32, shared by all heads */
    /* dense FFN */
    struct tensor ffn_gate, ffn_up; /* {dim, hidden_dim} */
    struct tensor ffn_down;         /* {hidden_dim, dim} */
    /* MoE FFN */
    struct tensor router;             /* {dim, n_experts} F32 */
    struct tensor exp_bias;           /* {n_experts} F32: selection bias only */
    struct tensor gate_exps, up_exps; /* {dim, expert_hidden_dim, n_experts} */
    struct tensor down_exps;          /* {expert_hidden_dim, dim, n_experts} */
};

struct tokenizer;
struct chat_template;

struct exsa_model {
    char *path;
    struct gguf_file *gguf;
    bool weights_released; /* exsa_model_release_weights: host tensor bytes are gone */
    struct hparams hp;
    struct exsa_model_info info;
    struct tensor tok_embd; /* {dim, vocab_size} */
    struct tensor out_norm; /* {dim} F32: the final norm (token_embd_norm or output_norm) */
    struct tensor output;   /* {dim, vocab_size}: output.weight, or a copy of tok_embd if tied */
    bool tied_output;
    struct layer *layers; /* n_layers */
    struct tokenizer *tok;
    struct chat_template *tmpl;
};

/* The GGUF file a model was loaded from (its metadata: for keys the model itself does not use). */
const struct gguf_file *model_gguf(const struct exsa_model *m);

/* Binds the tensor called name into *t, checking its type is supported and its shape is
 * exactly ne[0..n_dims) (trailing 1s ignored). Errors name the tensor and both shapes. */
int model_bind(const struct gguf_file *f, const char *name, int n_dims, const int64_t *ne,
               struct tensor *t, bool required, char *err, size_t errlen);

/* Architecture hooks (models/lfm2.c). */
int lfm2_load_hparams(const struct gguf_file *f, const char *arch, struct hparams *hp, char *err,
                      size_t errlen);
int lfm2_bind_tensors(struct exsa_model *m, char *err, size_t errlen);

#endif
