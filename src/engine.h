/*
 * engine.h: the engine behind struct exsa_engine: a backend, the sequence cache and the
 * activation scratch for the largest batch, carved from one allocation at creation so the step
 * loop never calls malloc. engine.c checks batches and manages sequences; models/lfm2.c runs
 * the forward pass over a checked batch.
 */
#ifndef EXSA_ENGINE_H
#define EXSA_ENGINE_H

#include "backend.h"
#include "kvcache.h"
#include "model.h"

struct scratch {
    float *h;      /* [n_batch][dim] residual stream */
    float *xn;     /* [n_batch][dim] normed input of a block */
    float *y;      /* [n_batch][dim] block output */
    float *wide;   /* [n_batch][max(3 dim, q + k + v)] in_proj output, or q|k|v */
    float *att;    /* [n_batch][n_heads head_dim] attention output, conv output */
    float *gate;   /* [n_batch][hidden_dim] */
    float *up;     /* [n_batch][hidden_dim] */
    float **state; /* [n_batch] conv state of each entry, for the current layer */
    int32_t *rows; /* [n_batch] entries that want logits */
};

struct exsa_engine {
    struct exsa_model *m;
    struct exsa_engine_params p;
    struct backend *be;
    struct kv_cache *kv;
    struct scratch s;
    void *scratch_mem;
};

/* The forward pass over a batch that engine.c has checked and for which it reserved KV blocks.
 * Writes vocab_size floats per entry with want[i] set, in order. */
void lfm2_forward(struct exsa_engine *e, const int32_t *tok, const struct batch_view *b,
                  const uint8_t *want, float *logits);

#endif
