/*
 * ops-ref.h: pieces of the reference backend (ops-ref.c) that the fast CPU backend reuses:
 * host memory (zeroed; 64-byte aligned; large blocks mapped so untouched pages cost nothing),
 * the ops it keeps as they are, the K/V store into an f32 host pool, and the conv-state slot
 * copy a CPU short conv starts with.
 */
#ifndef EXSA_CPU_OPS_REF_H
#define EXSA_CPU_OPS_REF_H

#include <stddef.h>

#include "backend.h"

void *cpu_host_alloc(struct backend *be, size_t bytes);
void cpu_host_release(struct backend *be, void *p);
int cpu_host_copy(struct backend *be, void *dst, const void *src, size_t bytes);
int cpu_host_zero(struct backend *be, void *dst, size_t bytes);
/* The memory members of a host backend's ops table: both CPU tables start with these, so they
 * are written once. */
#define CPU_HOST_MEMORY_OPS                                                                        \
    .alloc = cpu_host_alloc, .release = cpu_host_release, .upload = cpu_host_copy,                 \
    .download = cpu_host_copy, .copy = cpu_host_copy, .zero = cpu_host_zero

/* Reference ops the fast CPU backend keeps as they are (contracts: backend.h). */
int ref_embed(struct backend *be, const struct step *st, const struct tensor *w, float *out);
int ref_rope(struct backend *be, const struct step *st, float *x, int n_heads, int head_dim,
             float base);
int ref_shortconv(struct backend *be, const struct step *st, float *y, const float *bcx,
                  const struct tensor *w, struct kv_cache *kv, int conv_idx, int dim, int l_cache);
int ref_attention(struct backend *be, const struct step *st, float *out, const float *q,
                  const float *k, const float *v, struct kv_cache *kv, int a, int n_heads,
                  int n_kv_heads, int head_dim);
int ref_moe(struct backend *be, float *out, const float *x, const struct layer *l, int n_tok,
            int dim, int n_experts, int k, int expert_hidden);
int ref_gather(struct backend *be, const struct step *st, float *dst, const float *src, int r0,
               int n_rows, int dim);
/* K and V rows of every entry of st into attention layer a's pool; EXSA_EUNSUPPORTED unless
 * that pool is f32. */
int ref_kv_store(const struct step *st, struct kv_cache *kv, int a, const float *k, const float *v);
/* Each step sequence's conv state of conv layer c, read slot -> write slot (entries then
 * update the write slot in place). */
int ref_conv_begin(const struct step *st, struct kv_cache *kv, int c);

#endif
