/*
 * synth.c: synthetic LFM2 / LFM2-MoE GGUF files (see synth.h).
 *
 * Layout written: GGUF v3, alignment 32 (no general.alignment key), keys in the order llama.cpp's
 * converter writes them, tensors as the converter orders them (token_embd, token_embd_norm, then
 * each block's tensors sorted by name), each tensor's data padded to 32 bytes, in info order.
 * A struct sb builds the header + metadata + tensor infos in memory (a few MB: the vocabulary);
 * tensor data is then generated block by block into a 4 MiB chunk and written, so a multi-GB file
 * needs only that chunk. Random values come from splitmix64 seeded per tensor, so the bytes depend
 * only on (preset, type, seed).
 *
 * Type mix (llama.cpp's quantizer, llama_tensor_get_type): 1-D tensors, shortconv.conv and the
 * MoE router stay F32; the tied token_embd (the LM head) is Q6_K except in Q8_0/F16/BF16/F32
 * files, where it has the base type; for Q4_K_M and Q5_K_M, attn_v of attention layer i (i
 * counted among attention layers, n = their number) and ffn_down / ffn_down_exps of layer i
 * (n = n_layers) are Q6_K when use_more_bits(i, n): i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2
 * (integer division). The 8-expert special cases of llama.cpp do not apply (no preset has 8).
 */
#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "quant.h"
#include "strbuf.h"

/* ---- presets and file types -------------------------------------------------------------- */

/* One preset a row (clang-format would give each field of a long row its own line). */
/* clang-format off */
#define ATTN6 {[2] = 8, [5] = 8, [8] = 8, [10] = 8, [12] = 8, [14] = 8}

static const struct synth_preset presets[] = {
    {"lfm2-350m", "lfm2", "LFM2-350M (synthetic)", 1024, 16, 16, 4608, SYNTH_VOCAB,
     ATTN6, 0, 0, 0, 0},
    {"lfm2-700m", "lfm2", "LFM2-700M (synthetic)", 1536, 16, 24, 6912, SYNTH_VOCAB,
     ATTN6, 0, 0, 0, 0},
    {"lfm2-1.2b", "lfm2", "LFM2-1.2B (synthetic)", 2048, 16, 32, 8192, SYNTH_VOCAB,
     ATTN6, 0, 0, 0, 0},
    /* 2.6B: the real attention indices are not published; these 8 of 30 are our choice. */
    {"lfm2-2.6b", "lfm2", "LFM2-2.6B (synthetic)", 2048, 30, 32, 10752, SYNTH_VOCAB,
     {[2] = 8, [6] = 8, [10] = 8, [14] = 8, [18] = 8, [21] = 8, [24] = 8, [27] = 8}, 0, 0, 0, 0},
    {"lfm2-8b-a1b", "lfm2moe", "LFM2-8B-A1B (synthetic)", 2048, 24, 32, 7168, SYNTH_VOCAB,
     {[2] = 8, [6] = 8, [10] = 8, [14] = 8, [18] = 8, [21] = 8}, 32, 4, 1792, 2},
    /* The fixtures' trunk with the real vocabulary: small enough for `make run`. */
    {"demo", "lfm2", "LFM2 demo (synthetic)", 256, 6, 4, 512, SYNTH_VOCAB,
     {[2] = 2, [4] = 2}, 0, 0, 0, 0},
    /* The MoE fixtures' trunk (4 experts, not 8: llama.cpp's quantizer special-cases 8). */
    {"demo-moe", "lfm2moe", "LFM2-MoE demo (synthetic)", 256, 6, 4, 512, SYNTH_VOCAB,
     {[2] = 2, [5] = 2}, 4, 2, 256, 2},
};
/* clang-format on */

static const struct synth_ftype ftypes[] = {
    {"F32", 0, EXSA_DTYPE_F32, EXSA_DTYPE_F32, false},
    {"F16", 1, EXSA_DTYPE_F16, EXSA_DTYPE_F16, false},
    {"BF16", 32, EXSA_DTYPE_BF16, EXSA_DTYPE_BF16, false},
    {"Q8_0", 7, EXSA_DTYPE_Q8_0, EXSA_DTYPE_Q8_0, false},
    {"Q4_0", 2, EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q6_K, false},
    {"Q4_1", 3, EXSA_DTYPE_Q4_1, EXSA_DTYPE_Q6_K, false},
    {"Q5_0", 8, EXSA_DTYPE_Q5_0, EXSA_DTYPE_Q6_K, false},
    {"Q5_1", 9, EXSA_DTYPE_Q5_1, EXSA_DTYPE_Q6_K, false},
    {"Q4_K_M", 15, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q6_K, true},
    {"Q5_K_M", 17, EXSA_DTYPE_Q5_K, EXSA_DTYPE_Q6_K, true},
    {"Q6_K", 18, EXSA_DTYPE_Q6_K, EXSA_DTYPE_Q6_K, false},
};

#define N_PRESETS (sizeof presets / sizeof presets[0])
#define N_FTYPES (sizeof ftypes / sizeof ftypes[0])

const struct synth_preset *synth_find_preset(const char *name)
{
    for (size_t i = 0; name && i < N_PRESETS; i++)
        if (!strcmp(presets[i].name, name))
            return &presets[i];
    return NULL;
}

const struct synth_ftype *synth_find_ftype(const char *name)
{
    for (size_t i = 0; name && i < N_FTYPES; i++)
        if (!strcasecmp(ftypes[i].name, name))
            return &ftypes[i];
    return NULL;
}

const char *synth_preset_names(void)
{
    return "lfm2-350m, lfm2-700m, lfm2-1.2b, lfm2-2.6b, lfm2-8b-a1b, demo, demo-moe";
}

const char *synth_ftype_names(void)
{
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M, Q6_K";
}

/* ---- the type mix --------------------------------------------------------------------------- */

static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static int n_attn_layers(const struct synth_preset *p, int below)
{
    int n = 0;
    for (int l = 0; l < below; l++)
        n += p->n_kv_heads[l] > 0;
    return n;
}

/* Whether s is one of the NULL-terminated list's names. */
static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

/* Whether layer l of p holds the tensor with block-local name s. */
static bool layer_has(const struct synth_preset *p, int l, const char *s)
{
    static const char *const conv[] = {"shortconv.conv.weight", "shortconv.in_proj.weight",
                                       "shortconv.out_proj.weight", NULL};
    static const char *const attn[] = {"attn_q.weight",
                                       "attn_k.weight",
                                       "attn_v.weight",
                                       "attn_output.weight",
                                       "attn_q_norm.weight",
                                       "attn_k_norm.weight",
                                       NULL};
    static const char *const dense[] = {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight",
                                        NULL};
    static const char *const moe[] = {"ffn_gate_inp.weight",  "exp_probs_b.bias",
                                      "ffn_gate_exps.weight", "ffn_up_exps.weight",
                                      "ffn_down_exps.weight", NULL};
    bool is_attn = p->n_kv_heads[l] > 0, is_moe = p->n_experts > 0 && l >= p->n_dense_lead;
    if (!strcmp(s, "attn_norm.weight") || !strcmp(s, "ffn_norm.weight"))
        return true;
    if (in_list(s, conv))
        return !is_attn;
    if (in_list(s, attn))
        return is_attn;
    if (in_list(s, dense))
        return !is_moe;
    if (in_list(s, moe))
        return is_moe;
    return false;
}

int synth_tensor_type(const struct synth_preset *p, const struct synth_ftype *ft, const char *name)
{
    if (!strcmp(name, "token_embd.weight"))
        return ft->embd;
    if (!strcmp(name, "token_embd_norm.weight"))
        return EXSA_DTYPE_F32;
    int l, off = 0;
    if (sscanf(name, "blk.%d.%n", &l, &off) != 1 || off == 0 || l < 0 || l >= p->n_layers)
        return -1;
    const char *s = name + off;
    if (!layer_has(p, l, s))
        return -1;
    if (strstr(s, "norm") || !strcmp(s, "exp_probs_b.bias") || !strcmp(s, "ffn_gate_inp.weight") ||
        !strcmp(s, "shortconv.conv.weight"))
        return EXSA_DTYPE_F32;
    if (ft->k_m && !strcmp(s, "attn_v.weight") &&
        use_more_bits(n_attn_layers(p, l), n_attn_layers(p, p->n_layers)))
        return EXSA_DTYPE_Q6_K;
    if (ft->k_m && (!strcmp(s, "ffn_down.weight") || !strcmp(s, "ffn_down_exps.weight")) &&
        use_more_bits(l, p->n_layers))
        return EXSA_DTYPE_Q6_K;
    return ft->base;
}

/* ---- random numbers ------------------------------------------------------------------------- */

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline float rng_unit(uint64_t *s) /* [0, 1) */
{
    return (float)(rng_next(s) >> 40) * (1.0f / 16777216.0f);
}

static inline float rng_range(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * rng_unit(s);
}

#define NTAB 4096 /* normal samples; elements pick one with 12 random bits */
struct normtab {
    float f32[NTAB];     /* N(0, 1) */
    uint16_t f16[NTAB];  /* N(0, 0.02) */
    uint16_t bf16[NTAB]; /* N(0, 0.02) */
};

static void normtab_init(struct normtab *t, uint64_t seed)
{
    uint64_t s = seed ^ 0x6E6F726D616CULL;
    for (int i = 0; i < NTAB; i += 2) {
        float u1 = rng_unit(&s) + 1e-7f, u2 = rng_unit(&s);
        float r = sqrtf(-2.0f * logf(u1));
        t->f32[i] = r * cosf(6.2831853f * u2);
        t->f32[i + 1] = r * sinf(6.2831853f * u2);
    }
    for (int i = 0; i < NTAB; i++) {
        t->f16[i] = f32_to_fp16(0.02f * t->f32[i]);
        t->bf16[i] = f32_to_bf16(0.02f * t->f32[i]);
    }
}

/* ---- in-memory header builder ---------------------------------------------------------------- */

/* The header is a struct sb (strbuf.h: its bytes need not be text). */
static void put(struct sb *b, const void *src, size_t n)
{
    sb_put(b, src, n);
}

static void put_u32(struct sb *b, uint32_t v)
{
    put(b, &v, 4);
}
static void put_u64(struct sb *b, uint64_t v)
{
    put(b, &v, 8);
}

static void put_str(struct sb *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

/* Key records. n_kv counts them for the header, patched at the end. */
static void kv_key(struct sb *b, int *n_kv, const char *prefix, const char *key, uint32_t type)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s", prefix, key);
    put_str(b, full);
    put_u32(b, type);
    (*n_kv)++;
}

static void kv_u32(struct sb *b, int *n, const char *pre, const char *key, uint32_t v)
{
    kv_key(b, n, pre, key, 4 /* UINT32 */);
    put_u32(b, v);
}

static void kv_f32(struct sb *b, int *n, const char *pre, const char *key, float v)
{
    kv_key(b, n, pre, key, 6 /* FLOAT32 */);
    put(b, &v, 4);
}

static void kv_bool(struct sb *b, int *n, const char *pre, const char *key, bool v)
{
    uint8_t x = v;
    kv_key(b, n, pre, key, 7 /* BOOL */);
    put(b, &x, 1);
}

static void kv_str(struct sb *b, int *n, const char *pre, const char *key, const char *v)
{
    kv_key(b, n, pre, key, 8 /* STRING */);
    put_str(b, v);
}

/* An array header; the caller puts the elements. */
static void kv_arr(struct sb *b, int *n, const char *pre, const char *key, uint32_t elem,
                   uint64_t count)
{
    kv_key(b, n, pre, key, 9 /* ARRAY */);
    put_u32(b, elem);
    put_u64(b, count);
}

/* ---- the vocabulary ------------------------------------------------------------------------ */

#define TOK_SLOT 32 /* bytes per token string: up to MAX_RAW byte-mapped chars of <= 2 bytes */
#define MERGE_SLOT 64
#define MAX_RAW 12 /* filler tokens stand for at most this many raw bytes */
#define N_SPECIAL 14
#define HASH_SIZE (1 << 17)

static const char *specials[N_SPECIAL] = {
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|fim_pre|>",
    "<|fim_mid|>",
    "<|fim_suf|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tool_list_start|>",
    "<|tool_list_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|tool_response_start|>",
    "<|tool_response_end|>",
};

struct vocab {
    int n, n_merges;
    char *tok;       /* n slots of TOK_SLOT (specials are shorter than a slot) */
    char *merge;     /* n_merges slots of MERGE_SLOT: "left right" */
    int32_t *type;   /* token_type per token */
    uint8_t *nraw;   /* raw bytes a non-special token stands for */
    uint8_t *spaced; /* the token contains the byte ' ' (shown as U+0120) */
    int32_t *hash;   /* open addressing over token ids, -1 empty */
};

/* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others for 256 + k. */
static int byte_to_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return b;
    int k = 0;
    for (int c = 0; c < b; c++)
        k += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255));
    return 256 + k;
}

static void put_utf8(char *dst, int cp)
{
    if (cp < 0x80) {
        dst[0] = (char)cp, dst[1] = 0;
    } else {
        dst[0] = (char)(0xC0 | (cp >> 6)), dst[1] = (char)(0x80 | (cp & 63)), dst[2] = 0;
    }
}

static uint32_t str_hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (uint8_t)*s++) * 16777619u;
    return h;
}

/* Inserts token id into the hash unless an equal string is there; returns false if it was. */
static bool vocab_insert(struct vocab *v, int id)
{
    const char *s = v->tok + (size_t)id * TOK_SLOT;
    for (uint32_t h = str_hash(s) & (HASH_SIZE - 1);; h = (h + 1) & (HASH_SIZE - 1)) {
        if (v->hash[h] < 0) {
            v->hash[h] = id;
            return true;
        }
        if (!strcmp(v->tok + (size_t)v->hash[h] * TOK_SLOT, s))
            return false;
    }
}

static void vocab_free(struct vocab *v)
{
    free(v->tok), free(v->merge), free(v->type), free(v->nraw), free(v->spaced), free(v->hash);
}

/* Picks the two halves of the next filler: word-like tokens (letters, optionally one leading
 * space) built from single letters and earlier fillers. */
static void pick_pair(const struct vocab *v, uint64_t *s, int *left, int *right)
{
    const int first_filler = N_SPECIAL + 256, n_fill = v->n - first_filler;
    static const char freq[] = "etaoinshrdlucmfwypvbgkjqxz"; /* English letter order */
    uint64_t r = rng_next(s);
    uint64_t i1 = (r >> 8) % 26, i2 = (r >> 13) % 26, i3 = (r >> 40) % 26, i4 = (r >> 52) % 26;
    int letter = N_SPECIAL + freq[i1 < i2 ? i1 : i2]; /* min of two draws: common letters */
    if (r % 10 < 3 || n_fill == 0)
        *left = (r >> 16) % 4 == 0 ? N_SPECIAL + ' ' : letter;
    else
        *left = first_filler + (int)((r >> 20) % (uint64_t)n_fill);
    *right = N_SPECIAL + freq[i3 < i4 ? i3 : i4];
    if ((r >> 4) % 10 >= 6 && n_fill > 0) {
        int c = first_filler + (int)((r >> 30) % (uint64_t)n_fill);
        if (!v->spaced[c])
            *right = c;
    }
}

/* Builds the 65,536-token vocabulary: specials, the 256 byte tokens in byte order, then fillers
 * each made by a merge of two earlier tokens (merge rank = filler order). */
static int vocab_build(struct vocab *v, int n_vocab)
{
    memset(v, 0, sizeof *v);
    v->n = 0;
    v->tok = calloc((size_t)n_vocab, TOK_SLOT);
    v->merge = calloc((size_t)n_vocab, MERGE_SLOT);
    v->type = calloc((size_t)n_vocab, sizeof *v->type);
    v->nraw = calloc((size_t)n_vocab, 1);
    v->spaced = calloc((size_t)n_vocab, 1);
    v->hash = malloc(HASH_SIZE * sizeof *v->hash);
    if (!v->tok || !v->merge || !v->type || !v->nraw || !v->spaced || !v->hash) {
        vocab_free(v);
        return EXSA_ENOMEM;
    }
    memset(v->hash, 0xff, HASH_SIZE * sizeof *v->hash);
    for (int i = 0; i < N_SPECIAL; i++, v->n++) {
        snprintf(v->tok + (size_t)i * TOK_SLOT, TOK_SLOT, "%s", specials[i]);
        v->type[i] = 3; /* CONTROL */
        vocab_insert(v, i);
    }
    for (int b = 0; b < 256; b++, v->n++) {
        put_utf8(v->tok + (size_t)v->n * TOK_SLOT, byte_to_cp(b));
        v->type[v->n] = 1, v->nraw[v->n] = 1, v->spaced[v->n] = b == ' ';
        vocab_insert(v, v->n);
    }
    uint64_t s = 0x766F636162ull; /* one fixed vocabulary whatever the weights' seed */
    while (v->n < n_vocab) {
        int a, b;
        pick_pair(v, &s, &a, &b);
        if (v->nraw[a] + v->nraw[b] > MAX_RAW)
            continue;
        char *t = v->tok + (size_t)v->n * TOK_SLOT;
        const char *ta = v->tok + (size_t)a * TOK_SLOT, *tb = v->tok + (size_t)b * TOK_SLOT;
        size_t la = strlen(ta), lb = strlen(tb); /* < TOK_SLOT together: MAX_RAW x 2 bytes */
        memcpy(t, ta, la), memcpy(t + la, tb, lb + 1);
        if (!vocab_insert(v, v->n))
            continue;
        snprintf(v->merge + (size_t)v->n_merges++ * MERGE_SLOT, MERGE_SLOT, "%s %s",
                 v->tok + (size_t)a * TOK_SLOT, v->tok + (size_t)b * TOK_SLOT);
        v->type[v->n] = 1, v->nraw[v->n] = v->nraw[a] + v->nraw[b];
        v->spaced[v->n] = v->spaced[a] || v->spaced[b];
        v->n++;
    }
    return 0;
}

/* ---- tensors -------------------------------------------------------------------------------- */

enum { K_MAT, K_NORM, K_CONV, K_BIAS }; /* what values a tensor gets */

struct stensor {
    char name[64];
    int type, n_dims, kind;
    int64_t ne[3];
    uint64_t offset, nbytes;
};

struct tlist {
    struct stensor *t;
    int n;
    size_t cap;
};

static int tl_add(struct tlist *l, const struct synth_preset *p, const struct synth_ftype *ft,
                  const char *name, int kind, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2)
{
    struct stensor *t = grow_array(l->t, &l->cap, (size_t)l->n + 1, sizeof *t, 64);
    if (!t)
        return EXSA_ENOMEM;
    l->t = t;
    t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = synth_tensor_type(p, ft, name);
    t->kind = kind, t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2;
    t->nbytes = dtype_row_size(t->type, ne0) * (uint64_t)ne1 * (uint64_t)ne2;
    return t->type < 0 || t->nbytes == 0 ? EXSA_EINVAL : 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct stensor *)a)->name, ((const struct stensor *)b)->name);
}

/* Adds block l's tensors, sorted by name as llama.cpp's converter writes them. */
static int tl_add_layer(struct tlist *tl, const struct synth_preset *p,
                        const struct synth_ftype *ft, int l)
{
    static const struct {
        const char *s;
        int kind, n_dims;
        char ne[3]; /* d: dim, q: n_heads*hd, k: n_kv*hd, f: hidden, e: experts, x: expert
                       hidden, h: head dim, 3: three dim, L: l_cache */
    } shapes[] = {
        {"attn_norm.weight", K_NORM, 1, "d"},
        {"ffn_norm.weight", K_NORM, 1, "d"},
        {"shortconv.conv.weight", K_CONV, 2, "Ld"},
        {"shortconv.in_proj.weight", K_MAT, 2, "d3"},
        {"shortconv.out_proj.weight", K_MAT, 2, "dd"},
        {"attn_q.weight", K_MAT, 2, "dq"},
        {"attn_k.weight", K_MAT, 2, "dk"},
        {"attn_v.weight", K_MAT, 2, "dk"},
        {"attn_output.weight", K_MAT, 2, "qd"},
        {"attn_q_norm.weight", K_NORM, 1, "h"},
        {"attn_k_norm.weight", K_NORM, 1, "h"},
        {"ffn_gate.weight", K_MAT, 2, "df"},
        {"ffn_up.weight", K_MAT, 2, "df"},
        {"ffn_down.weight", K_MAT, 2, "fd"},
        {"ffn_gate_inp.weight", K_MAT, 2, "de"},
        {"exp_probs_b.bias", K_BIAS, 1, "e"},
        {"ffn_gate_exps.weight", K_MAT, 3, "dxe"},
        {"ffn_up_exps.weight", K_MAT, 3, "dxe"},
        {"ffn_down_exps.weight", K_MAT, 3, "xde"},
    };
    int hd = p->dim / p->n_heads, first = tl->n;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        if (!layer_has(p, l, shapes[i].s))
            continue;
        int64_t ne[3] = {1, 1, 1};
        for (int k = 0; k < shapes[i].n_dims; k++) {
            switch (shapes[i].ne[k]) {
            case 'd': ne[k] = p->dim; break;
            case 'q': ne[k] = (int64_t)p->n_heads * hd; break;
            case 'k': ne[k] = (int64_t)p->n_kv_heads[l] * hd; break;
            case 'f': ne[k] = p->hidden_dim; break;
            case 'e': ne[k] = p->n_experts; break;
            case 'x': ne[k] = p->expert_hidden_dim; break;
            case 'h': ne[k] = hd; break;
            case '3': ne[k] = 3LL * p->dim; break;
            default: ne[k] = 3; break; /* 'L': l_cache */
            }
        }
        char name[64];
        snprintf(name, sizeof name, "blk.%d.%s", l, shapes[i].s);
        int rc = tl_add(tl, p, ft, name, shapes[i].kind, shapes[i].n_dims, ne[0], ne[1], ne[2]);
        if (rc)
            return rc;
    }
    qsort(tl->t + first, (size_t)(tl->n - first), sizeof *tl->t, by_name);
    return 0;
}

static int tl_build(struct tlist *tl, const struct synth_preset *p, const struct synth_ftype *ft)
{
    int rc = tl_add(tl, p, ft, "token_embd.weight", K_MAT, 2, p->dim, p->vocab_size, 1);
    if (!rc)
        rc = tl_add(tl, p, ft, "token_embd_norm.weight", K_NORM, 1, p->dim, 1, 1);
    for (int l = 0; !rc && l < p->n_layers; l++)
        rc = tl_add_layer(tl, p, ft, l);
    uint64_t off = 0;
    for (int i = 0; i < tl->n; i++) {
        tl->t[i].offset = off;
        off += (tl->t[i].nbytes + 31) & ~(uint64_t)31;
    }
    return rc;
}

/* ---- tensor data ---------------------------------------------------------------------------- */

static void set16(uint8_t *p, float v)
{
    uint16_t h = f32_to_fp16(v);
    memcpy(p, &h, 2);
}

static void fill_random(uint8_t *p, size_t n, uint64_t *s)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t r = rng_next(s);
        memcpy(p + i, &r, 8);
    }
    for (uint64_t r = rng_next(s); i < n; i++, r >>= 8)
        p[i] = (uint8_t)r;
}

/* Q4_K / Q5_K scales: 8 six-bit scales sc in [8, 40] and mins mn = sc, so that with
 * dmin = mid * d each 32-element group is centred: d*sc*q - dmin*sc, q uniform around mid. */
static void k_scales(uint8_t *q, uint64_t *s)
{
    uint8_t sc[8];
    for (int j = 0; j < 8; j++)
        sc[j] = (uint8_t)(8 + rng_next(s) % 33);
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((sc[j + 4] & 15) << 4));
    }
}

/* One quantized block with random quants and scales sized so values look like N(0, 0.02). */
static void quant_block(int type, uint8_t *b, int size, uint64_t *s)
{
    fill_random(b, (size_t)size, s);
    float d;
    switch (type) {
    case EXSA_DTYPE_Q4_0: set16(b, rng_range(s, 3e-3f, 5.5e-3f)); break;
    case EXSA_DTYPE_Q5_0: set16(b, rng_range(s, 1.6e-3f, 2.8e-3f)); break;
    case EXSA_DTYPE_Q8_0: set16(b, rng_range(s, 2e-4f, 3.4e-4f)); break;
    case EXSA_DTYPE_Q4_1:
        d = rng_range(s, 3e-3f, 5.5e-3f);
        set16(b, d), set16(b + 2, -7.5f * d);
        break;
    case EXSA_DTYPE_Q5_1:
        d = rng_range(s, 1.6e-3f, 2.8e-3f);
        set16(b, d), set16(b + 2, -15.5f * d);
        break;
    case EXSA_DTYPE_Q4_K:
        d = rng_range(s, 1.4e-4f, 2.2e-4f);
        set16(b, d), set16(b + 2, 7.5f * d), k_scales(b + 4, s);
        break;
    case EXSA_DTYPE_Q5_K:
        d = rng_range(s, 7e-5f, 1.1e-4f);
        set16(b, d), set16(b + 2, 15.5f * d), k_scales(b + 4, s);
        break;
    case EXSA_DTYPE_Q6_K:
        for (int i = 0; i < 16; i++) { /* int8 scales of magnitude 4..16, either sign */
            uint64_t r = rng_next(s);
            int v = 4 + (int)(r % 13);
            b[192 + i] = (uint8_t)(int8_t)((r >> 8) & 1 ? -v : v);
        }
        set16(b + 208, rng_range(s, 0.9e-4f, 1.4e-4f));
        break;
    default: memset(b, 0, (size_t)size); break;
    }
}

/* Element values of a float tensor by kind: norms ~1, conv taps ~N(0, 0.2), else N(0, 0.02). */
static float float_value(int kind, uint64_t r, const struct normtab *t)
{
    float z = t->f32[r & (NTAB - 1)];
    switch (kind) {
    case K_NORM: return 1.0f + 0.1f * z;
    case K_CONV: return 0.2f * z;
    case K_BIAS: return 0.01f * z;
    default: return 0.02f * z;
    }
}

/* Generates n elements (or n blocks for quantized types) of tensor t into dst. */
static void gen_chunk(const struct stensor *t, uint8_t *dst, int64_t n, uint64_t *s,
                      const struct normtab *tab)
{
    const struct dtype_info *di = dtype_info(t->type);
    if (t->type == EXSA_DTYPE_F32) {
        for (int64_t i = 0; i < n; i++) {
            float v = float_value(t->kind, rng_next(s) >> 20, tab);
            memcpy(dst + 4 * i, &v, 4);
        }
    } else if (t->type == EXSA_DTYPE_F16 || t->type == EXSA_DTYPE_BF16) {
        const uint16_t *src = t->type == EXSA_DTYPE_F16 ? tab->f16 : tab->bf16;
        uint16_t *o = (uint16_t *)(void *)dst;
        for (int64_t i = 0; i < n; i += 4) { /* 4 x 12 random bits per draw */
            uint64_t r = rng_next(s);
            for (int k = 0; k < 4 && i + k < n; k++, r >>= 16)
                o[i + k] = src[r & (NTAB - 1)];
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            quant_block(t->type, dst + i * di->type_size, di->type_size, s);
    }
}

#define CHUNK_BYTES (4u << 20)

/* Streams tensor t's data (then its padding to 32) into f through buf (CHUNK_BYTES). */
static int write_tensor(FILE *f, const struct stensor *t, uint64_t seed, uint8_t *buf,
                        const struct normtab *tab)
{
    const struct dtype_info *di = dtype_info(t->type);
    int64_t n_units = t->ne[0] * t->ne[1] * t->ne[2] / di->block_size;
    int64_t per_chunk = CHUNK_BYTES / (unsigned)di->type_size;
    uint64_t s = seed ^ (str_hash(t->name) * 0x9E3779B97F4A7C15ull);
    for (int64_t i = 0; i < n_units; i += per_chunk) {
        int64_t n = n_units - i < per_chunk ? n_units - i : per_chunk;
        gen_chunk(t, buf, n, &s, tab);
        if (fwrite(buf, (size_t)(n * di->type_size), 1, f) != 1)
            return EXSA_EIO;
    }
    static const uint8_t zeros[32];
    size_t pad = (size_t)(((t->nbytes + 31) & ~(uint64_t)31) - t->nbytes);
    return pad && fwrite(zeros, pad, 1, f) != 1 ? EXSA_EIO : 0;
}

/* ---- header and the whole file -------------------------------------------------------------- */

static void put_hparams(struct sb *b, int *n, const struct synth_preset *p)
{
    char pre[32];
    snprintf(pre, sizeof pre, "%s.", p->arch);
    kv_u32(b, n, pre, "block_count", (uint32_t)p->n_layers);
    kv_u32(b, n, pre, "context_length", 128000);
    kv_u32(b, n, pre, "embedding_length", (uint32_t)p->dim);
    kv_u32(b, n, pre, "feed_forward_length", (uint32_t)p->hidden_dim);
    kv_u32(b, n, pre, "attention.head_count", (uint32_t)p->n_heads);
    kv_arr(b, n, pre, "attention.head_count_kv", 5 /* INT32, as llama.cpp writes it */,
           (uint64_t)p->n_layers);
    for (int l = 0; l < p->n_layers; l++)
        put_u32(b, (uint32_t)p->n_kv_heads[l]);
    kv_f32(b, n, pre, "rope.freq_base", 1000000.0f);
    kv_f32(b, n, pre, "attention.layer_norm_rms_epsilon", 1e-5f);
    kv_u32(b, n, pre, "shortconv.l_cache", 3);
    kv_u32(b, n, pre, "vocab_size", (uint32_t)p->vocab_size);
    if (p->n_experts) {
        kv_u32(b, n, pre, "expert_count", (uint32_t)p->n_experts);
        kv_u32(b, n, pre, "expert_used_count", (uint32_t)p->n_experts_used);
        kv_u32(b, n, pre, "expert_feed_forward_length", (uint32_t)p->expert_hidden_dim);
        kv_u32(b, n, pre, "leading_dense_block_count", (uint32_t)p->n_dense_lead);
        kv_u32(b, n, pre, "expert_gating_func", 2); /* sigmoid */
        kv_bool(b, n, pre, "expert_weights_norm", true);
    }
}

static void put_tokenizer(struct sb *b, int *n, const struct vocab *v)
{
    kv_str(b, n, "", "tokenizer.ggml.model", "gpt2");
    kv_str(b, n, "", "tokenizer.ggml.pre", "lfm2");
    kv_arr(b, n, "", "tokenizer.ggml.tokens", 8 /* STRING */, (uint64_t)v->n);
    for (int i = 0; i < v->n; i++)
        put_str(b, v->tok + (size_t)i * TOK_SLOT);
    kv_arr(b, n, "", "tokenizer.ggml.token_type", 5 /* INT32 */, (uint64_t)v->n);
    put(b, v->type, (size_t)v->n * sizeof *v->type);
    kv_arr(b, n, "", "tokenizer.ggml.merges", 8, (uint64_t)v->n_merges);
    for (int i = 0; i < v->n_merges; i++)
        put_str(b, v->merge + (size_t)i * MERGE_SLOT);
    kv_u32(b, n, "", "tokenizer.ggml.bos_token_id", 1);
    kv_u32(b, n, "", "tokenizer.ggml.eos_token_id", 7);
    kv_u32(b, n, "", "tokenizer.ggml.padding_token_id", 0);
    kv_bool(b, n, "", "tokenizer.ggml.add_bos_token", true);
    kv_bool(b, n, "", "tokenizer.ggml.add_eos_token", false);
    kv_str(b, n, "", "tokenizer.chat_template", synth_chat_template);
}

/* Header, metadata and tensor infos, padded to the data blob's start (a multiple of 32). */
static int build_header(struct sb *b, const struct synth_preset *p, const struct synth_ftype *ft,
                        const struct tlist *tl)
{
    struct vocab v;
    int rc = vocab_build(&v, p->vocab_size), n = 0;
    if (rc)
        return rc;
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, (uint64_t)tl->n);
    size_t n_kv_at = b->len;
    put_u64(b, 0); /* n_kv, patched below */
    kv_str(b, &n, "", "general.architecture", p->arch);
    kv_str(b, &n, "", "general.name", p->gname);
    put_hparams(b, &n, p);
    put_tokenizer(b, &n, &v);
    kv_u32(b, &n, "", "general.quantization_version", 2);
    kv_u32(b, &n, "", "general.file_type", (uint32_t)ft->file_type);
    vocab_free(&v);
    for (int i = 0; i < tl->n; i++) {
        const struct stensor *t = &tl->t[i];
        put_str(b, t->name);
        put_u32(b, (uint32_t)t->n_dims);
        for (int k = 0; k < t->n_dims; k++)
            put_u64(b, (uint64_t)t->ne[k]);
        put_u32(b, (uint32_t)t->type);
        put_u64(b, t->offset);
    }
    static const uint8_t zeros[32];
    put(b, zeros, (32 - b->len % 32) % 32);
    if (b->err)
        return EXSA_ENOMEM;
    uint64_t n_kv = (uint64_t)n;
    memcpy(b->s + n_kv_at, &n_kv, 8);
    return 0;
}

static int write_file(const char *path, const struct sb *hdr, const struct tlist *tl, uint64_t seed,
                      char *err, size_t errlen)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot create %s", path);
        return EXSA_EIO;
    }
    uint8_t *buf = malloc(CHUNK_BYTES);
    struct normtab *tab = malloc(sizeof *tab);
    int rc = buf && tab ? 0 : EXSA_ENOMEM;
    if (!rc) {
        normtab_init(tab, seed);
        rc = fwrite(hdr->s, hdr->len, 1, f) == 1 ? 0 : EXSA_EIO;
    }
    for (int i = 0; !rc && i < tl->n; i++)
        rc = write_tensor(f, &tl->t[i], seed, buf, tab);
    if (fclose(f) != 0 && !rc)
        rc = EXSA_EIO;
    free(buf), free(tab);
    if (rc) {
        snprintf(err, errlen,
                 rc == EXSA_EIO ? "cannot write %s (disk full?)" : "out of memory writing %s",
                 path);
        remove(path);
    }
    return rc;
}

int synth_write(const char *path, const struct synth_preset *p, const struct synth_ftype *ft,
                uint64_t seed, char *err, size_t errlen)
{
    struct tlist tl = {0};
    struct sb hdr = {0};
    int rc = tl_build(&tl, p, ft);
    if (rc) {
        snprintf(err, errlen,
                 rc == EXSA_ENOMEM ? "out of memory"
                                   : "preset %s has a tensor that type %s cannot hold",
                 p->name, ft->name);
    } else if ((rc = build_header(&hdr, p, ft, &tl)) != 0) {
        snprintf(err, errlen, "out of memory building the GGUF header");
    } else {
        rc = write_file(path, &hdr, &tl, seed, err, errlen);
    }
    free(tl.t), sb_free(&hdr);
    return rc;
}

/* LFM2-8B-A1B's tokenizer.chat_template, byte for byte (the model family's own data). */
const char synth_chat_template[] =
    "{{- bos_token -}}\n"
    "{%- set system_prompt = \"\" -%}\n"
    "{%- set ns = namespace(system_prompt=\"\") -%}\n"
    "{%- if messages[0][\"role\"] == \"system\" -%}\n"
    "\t{%- set ns.system_prompt = messages[0][\"content\"] -%}\n"
    "\t{%- set messages = messages[1:] -%}\n"
    "{%- endif -%}\n"
    "{%- if tools -%}\n"
    "\t{%- set ns.system_prompt = ns.system_prompt + (\"\\n\" if ns.system_prompt else \"\") + "
    "\"List of tools: <|tool_list_start|>[\" -%}\n"
    "\t{%- for tool in tools -%}\n"
    "\t\t{%- if tool is not string -%}\n"
    "\t\t\t{%- set tool = tool | tojson -%}\n"
    "\t\t{%- endif -%}\n"
    "\t\t{%- set ns.system_prompt = ns.system_prompt + tool -%}\n"
    "\t\t{%- if not loop.last -%}\n"
    "\t\t\t{%- set ns.system_prompt = ns.system_prompt + \", \" -%}\n"
    "\t\t{%- endif -%}\n"
    "\t{%- endfor -%}\n"
    "\t{%- set ns.system_prompt = ns.system_prompt + \"]<|tool_list_end|>\" -%}\n"
    "{%- endif -%}\n"
    "{%- if ns.system_prompt -%}\n"
    "\t{{- \"<|im_start|>system\\n\" + ns.system_prompt + \"<|im_end|>\\n\" -}}\n"
    "{%- endif -%}\n"
    "{%- for message in messages -%}\n"
    "\t{{- \"<|im_start|>\" + message[\"role\"] + \"\\n\" -}}\n"
    "\t{%- set content = message[\"content\"] -%}\n"
    "\t{%- if content is not string -%}\n"
    "\t\t{%- set content = content | tojson -%}\n"
    "\t{%- endif -%}\n"
    "\t{%- if message[\"role\"] == \"tool\" -%}\n"
    "\t\t{%- set content = \"<|tool_response_start|>\" + content + \"<|tool_response_end|>\" -%}\n"
    "\t{%- endif -%}\n"
    "\t{{- content + \"<|im_end|>\\n\" -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "\t{{- \"<|im_start|>assistant\\n\" -}}\n"
    "{%- endif -%}";
