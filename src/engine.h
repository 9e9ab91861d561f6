/*
 * engine.h: the engine behind struct exsa_engine. The layers are split into stages, each run by
 * one backend: with GPU_LAYERS = N < n_layers, layers [0, n_layers - N) on the CPU and the last
 * N layers plus the output head on the GPU; otherwise one stage. Each stage's activations
 * (sized for the largest batch at creation, so the step loop never allocates) live in its
 * backend's memory; the hidden state crosses between stages once per step. The engine holds its
 * own copy of the model's tensor structs, prepared by the backend of the stage that uses them
 * (the model stays read-only and may be shared). engine.c checks batches, builds the step and
 * manages sequences; models/lfm2.c runs the forward pass over a checked step.
 */
#ifndef EXSA_ENGINE_H
#define EXSA_ENGINE_H

#include "backend.h"
#include "kvcache.h"
#include "model.h"

#define ENGINE_MAX_STAGES 2
#define ENGINE_HEAD_ROWS 64 /* logit rows per LM-head pass on a device backend */

/* Activations of one stage, in its backend's memory. */
struct acts {
    float *h;      /* [n_batch][dim] residual stream */
    float *xn;     /* [n_batch][dim] normed input of a block */
    float *y;      /* [n_batch][dim] block output */
    float *wide;   /* [n_batch][max(3 dim, q + k + v)] in_proj output, or q|k|v */
    float *att;    /* [n_batch][max(n_heads head_dim, dim)] attention output, conv output */
    float *gate;   /* [n_batch][hidden] */
    float *up;     /* [n_batch][hidden] */
    float *logits; /* [ENGINE_HEAD_ROWS][vocab] (head stage of a device backend), or NULL */
};

struct stage {
    struct backend *be;
    int l0, l1; /* layers [l0, l1) */
    bool embed; /* the first stage embeds the tokens */
    bool head;  /* the last stage runs the final norm and the LM head */
    struct acts a;
    void *mem; /* the allocation the activations are carved from */
    size_t mem_bytes;
};

/* The engine's copy of the model's tensors (be_data set by each one's backend). */
struct weights {
    struct tensor tok_embd, out_norm, output;
    struct layer *layers; /* n_layers */
};

struct exsa_engine {
    struct exsa_model *m;
    struct exsa_engine_params p;
    struct backend *cpu, *gpu; /* either may be NULL */
    int n_stages;
    struct stage stages[ENGINE_MAX_STAGES];
    struct backend **layer_be; /* n_layers */
    int *kv_type;              /* n_layers */
    struct kv_cache *kv;
    struct weights w;
    struct kv_step_buf sb;
    struct gpu_need {
        uint64_t weights; /* bytes of the tensors the GPU stage uploads */
        size_t kv, acts;  /* its K/V pools and activations */
    } gpu_need;
    char describe[512]; /* where each layer runs, and the memory it took */
};

/* The engine's sequence cache. For tests and benchmarks of the modules built on it (the prompt
 * cache sizes its budget in kv_row_bytes): they ask through this instead of reading the engine's
 * fields, so the struct can change under them. The engine keeps owning it. */
struct kv_cache *engine_kv(const struct exsa_engine *e);

/* What the head stage writes for each entry that wants output. */
enum head_out { HEAD_LOGITS, HEAD_HIDDEN };

/* The forward pass over a checked step for which engine.c reserved KV blocks. Writes
 * vocab_size logits (or dim normed hidden floats) per entry of st->out_rows, in order, to out
 * (host). Returns 0 or the first error of any op or backend. */
int lfm2_forward(struct exsa_engine *e, const struct step *st, enum head_out what, float *out);

#endif
