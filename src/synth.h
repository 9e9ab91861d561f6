/*
 * synth.h: synthetic LFM2 / LFM2-MoE GGUF files with random weights of the real shapes and the
 * real per-tensor type mix (what llama.cpp's converter + quantizer would produce), a valid
 * 65,536-token byte-level BPE vocabulary and the LFM2 chat template. Used by `exsa synth`,
 * `make bench`, `make run` (the demo model) and tests. The file is streamed: header and tensor
 * infos are built in memory, then tensor data is generated and written chunk by chunk, so
 * memory use stays small whatever the file size.
 */
#ifndef EXSA_SYNTH_H
#define EXSA_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYNTH_VOCAB 65536
#define SYNTH_MAX_LAYERS 64

/* A model shape. n_kv_heads[l] == 0 marks a short-conv layer. */
struct synth_preset {
    const char *name;  /* "lfm2-350m", ... "demo" */
    const char *arch;  /* "lfm2" or "lfm2moe" */
    const char *gname; /* general.name */
    int dim, n_layers, n_heads, hidden_dim, vocab_size;
    int n_kv_heads[SYNTH_MAX_LAYERS];
    int n_experts, n_experts_used, expert_hidden_dim, n_dense_lead; /* 0 for dense models */
};

/* A file type as named on the command line ("Q4_K_M"). */
struct synth_ftype {
    const char *name;
    int file_type; /* general.file_type (llama_ftype) */
    int base;      /* enum exsa_dtype of most matrices */
    int embd;      /* type of the tied token_embd / LM head */
    bool k_m;      /* the _K_M "use_more_bits" bumps of attn_v and ffn_down to Q6_K */
};

/* NULL when the name is unknown. */
const struct synth_preset *synth_find_preset(const char *name);
const struct synth_ftype *synth_find_ftype(const char *name);
/* Comma-separated lists of the known names, for usage messages. */
const char *synth_preset_names(void);
const char *synth_ftype_names(void);

/* Writes a synthetic model to path. The same (preset, ftype, seed) always gives the same bytes.
 * Returns 0, EXSA_EIO (cannot create or write the file; it is removed) or EXSA_ENOMEM, and
 * writes a sentence into err. */
int synth_write(const char *path, const struct synth_preset *p, const struct synth_ftype *ft,
                uint64_t seed, char *err, size_t errlen);

/* The tensor type synth_write gives tensor `name` (e.g. "blk.4.attn_v.weight") of preset p in
 * file type ft; -1 if p has no such tensor. Exposed for tools and tests. */
int synth_tensor_type(const struct synth_preset *p, const struct synth_ftype *ft, const char *name);

/* The LFM2 chat template (LFM2-8B-A1B's tokenizer.chat_template). */
extern const char synth_chat_template[];

#endif
