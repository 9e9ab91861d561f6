/*
 * test_synth.c: synthetic GGUFs from src/synth.c. For the demo presets in several types and
 * for LFM2-350M Q4_K_M (written to /tmp, removed): the file opens with our GGUF reader, tensors
 * are laid out as llama.cpp requires (aligned, contiguous, in info order), shapes give the
 * official parameter count, types follow the mix rules (written out again here, independently
 * of synth.c), every fp16 scale of every block is finite and of sane size, dequantized values
 * look like N(0, 0.02), the vocabulary has 65,536 distinct tokens whose merges are valid BPE,
 * the metadata holds the LFM2 keys, and exsa_model_load accepts the file and tokenizes with it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exsa.h"
#include "gguf.h"
#include "harness.h"
#include "quant.h"
#include "synth.h"

static char tmp_path[64];

static const char *write_model(const char *preset, const char *type, uint64_t seed)
{
    char err[256] = "";
    snprintf(tmp_path, sizeof tmp_path, "/tmp/exsa-test-synth-%d.gguf", (int)getpid());
    const struct synth_preset *p = synth_find_preset(preset);
    const struct synth_ftype *ft = synth_find_ftype(type);
    CHECK(p && ft, "preset %s / type %s known", preset, type);
    if (!p || !ft)
        return NULL;
    int rc = synth_write(tmp_path, p, ft, seed, err, sizeof err);
    CHECK(rc == 0, "synth_write %s %s: %d %s", preset, type, rc, err);
    return rc == 0 ? tmp_path : NULL;
}

/* The type mix, restated: what llama.cpp's quantizer gives each tensor. */
static int expected_type(const char *name, const char *ftype, int n_layers, const int *kv)
{
    static const struct {
        const char *name;
        int base, embd;
    } t[] = {{"F32", 0, 0},      {"F16", 1, 1},      {"BF16", 30, 30}, {"Q8_0", 8, 8},
             {"Q4_0", 2, 14},    {"Q4_1", 3, 14},    {"Q5_0", 6, 14},  {"Q5_1", 7, 14},
             {"Q4_K_M", 12, 14}, {"Q5_K_M", 13, 14}, {"Q6_K", 14, 14}};
    int k = 0;
    while (strcmp(t[k].name, ftype))
        k++;
    if (!strcmp(name, "token_embd.weight"))
        return t[k].embd;
    if (strstr(name, "norm") || strstr(name, "shortconv.conv") || strstr(name, "gate_inp") ||
        strstr(name, "exp_probs_b"))
        return 0;
    bool km = strstr(ftype, "_K_M") != NULL;
    int l = atoi(name + 4), n_attn = 0, i_attn = 0;
    for (int i = 0; i < n_layers; i++)
        n_attn += kv[i] > 0, i_attn += i < l && kv[i] > 0;
    int i = strstr(name, "attn_v") ? i_attn : l, n = strstr(name, "attn_v") ? n_attn : n_layers;
    bool more = i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    if (km && more && (strstr(name, "attn_v") || strstr(name, "ffn_down")))
        return 14;
    return t[k].base;
}

/* Offsets of the fp16 scales in a block: {first, second or -1}. */
static void scale_offsets(int type, int *a, int *b)
{
    *a = 0, *b = -1;
    if (type == 3 || type == 7 || type == 12 || type == 13)
        *b = 2;
    if (type == 14)
        *a = 208;
}

/* Every block's fp16 scales are finite and sane (0 < |d| < 0.1 for the main scale). */
static void check_scales(const struct gguf_tensor *t)
{
    const struct dtype_info *di = dtype_info(t->type);
    if (di->block_size == 1)
        return;
    int a, b, bad = 0;
    scale_offsets(t->type, &a, &b);
    uint64_t n = t->nbytes / (uint64_t)di->type_size;
    const uint8_t *p = t->data;
    for (uint64_t i = 0; i < n; i++, p += di->type_size) {
        uint16_t h;
        memcpy(&h, p + a, 2);
        float d = fp16_to_f32(h);
        bad += !isfinite(d) || !(fabsf(d) > 1e-6f && fabsf(d) < 0.1f);
        if (b >= 0) {
            memcpy(&h, p + b, 2);
            bad += !isfinite(fp16_to_f32(h)) || fabsf(fp16_to_f32(h)) > 1.0f;
        }
    }
    CHECK(bad == 0, "%s: %d blocks with a bad fp16 scale", t->name, bad);
}

/* The first rows of a matrix dequantize to finite values of std ~0.02 (norms: mean ~1). */
static void check_values(const struct gguf_tensor *t)
{
    int64_t n = t->ne[0] * (t->ne[1] < 4 ? t->ne[1] : 4);
    float *y = malloc((size_t)n * sizeof *y);
    CHECK(y && dequantize_row(t->type, t->data, y, n) == 0, "%s dequantizes", t->name);
    double s = 0, s2 = 0;
    int bad = 0;
    for (int64_t i = 0; y && i < n; i++)
        bad += !isfinite(y[i]), s += y[i], s2 += (double)y[i] * y[i];
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    CHECK(bad == 0, "%s: %d non-finite values", t->name, bad);
    if (strstr(t->name, "norm.weight"))
        CHECK(fabs(mean - 1) < 0.1, "%s: mean %g", t->name, mean);
    else if (!strstr(t->name, "shortconv.conv") && n >= 256)
        CHECK(sd > 0.008 && sd < 0.05 && fabs(mean) < 0.01, "%s: mean %g sd %g", t->name, mean, sd);
    free(y);
}

/* Layout as llama.cpp requires; types per the rules; returns the parameter count. */
static uint64_t check_tensors(const struct gguf_file *f, const char *ftype)
{
    int64_t n_layers = 0;
    struct gguf_str arch;
    char key[64];
    CHECK(gguf_get_str(f, "general.architecture", &arch) == 0, "architecture");
    snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
    CHECK(gguf_get_int(f, key, &n_layers) == 0 && n_layers > 0 && n_layers <= 64, "block_count");
    int kv[64] = {0};
    struct gguf_array a;
    snprintf(key, sizeof key, "%.*s.attention.head_count_kv", (int)arch.len, arch.ptr);
    CHECK(gguf_get_arr(f, key, &a) == 0 && a.n == (uint64_t)n_layers, "head_count_kv array");
    for (uint64_t i = 0; i < a.n && i < 64; i++) {
        int64_t v = 0;
        gguf_arr_int(&a, i, &v);
        kv[i] = (int)v;
    }
    CHECK(f->alignment == 32 && f->data_offset % 32 == 0, "alignment 32");
    uint64_t off = 0, params = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        CHECK(t->offset == off, "%s at offset %llu, expected %llu", t->name,
              (unsigned long long)t->offset, (unsigned long long)off);
        off += (t->nbytes + 31) / 32 * 32;
        params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        int want = expected_type(t->name, ftype, (int)n_layers, kv);
        CHECK(t->type == want, "%s (%s): type %d, expected %d", t->name, ftype, t->type, want);
        check_scales(t);
        check_values(t);
    }
    return params;
}

struct hid {
    uint64_t h;
    int64_t id;
};

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t x = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++)
        x = (x ^ (uint8_t)p[k]) * 1099511628211ull;
    return x;
}

static int by_hash(const void *a, const void *b)
{
    uint64_t x = ((const struct hid *)a)->h, y = ((const struct hid *)b)->h;
    return x < y ? -1 : x > y;
}

/* The id of the token spelled p[0..n), or -1 (hash lookup; hashes were checked distinct). */
static int64_t find_tok(const struct hid *tab, uint64_t n_tab, const char *p, size_t n)
{
    struct hid key = {fnv(p, n), 0};
    const struct hid *r = bsearch(&key, tab, n_tab, sizeof *tab, by_hash);
    return r ? r->id : -1;
}

/* 65,536 distinct tokens; the LFM2 specials at their ids; every merge "a b" joins two earlier
 * tokens into the next filler token (valid BPE). */
static void check_vocab(const struct gguf_file *f)
{
    struct gguf_array tok, ty, mg;
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &tok) == 0 && tok.n == 65536, "65536 tokens");
    CHECK(gguf_get_arr(f, "tokenizer.ggml.token_type", &ty) == 0 && ty.n == 65536, "types");
    CHECK(gguf_get_arr(f, "tokenizer.ggml.merges", &mg) == 0 && mg.n == 65536 - 270, "merges");
    if (tok.n != 65536 || ty.n != 65536 || mg.n != 65536 - 270)
        return;
    static const char *sp[] = {"<|pad|>",
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
                               "<|tool_response_end|>"};
    for (int i = 0; i < 14; i++) {
        int64_t v = 0;
        gguf_arr_int(&ty, (uint64_t)i, &v);
        CHECK(tok.str[i].len == strlen(sp[i]) && !memcmp(tok.str[i].ptr, sp[i], tok.str[i].len) &&
                  v == 3,
              "special token %d", i);
    }
    struct hid *tab = malloc(tok.n * sizeof *tab);
    CHECK(tab != NULL, "memory");
    if (!tab)
        return;
    for (uint64_t i = 0; i < tok.n; i++)
        tab[i] = (struct hid){fnv(tok.str[i].ptr, tok.str[i].len), (int64_t)i};
    qsort(tab, tok.n, sizeof *tab, by_hash);
    int dup = 0, bad = 0;
    for (uint64_t i = 1; i < tok.n; i++)
        dup += tab[i].h == tab[i - 1].h;
    CHECK(dup == 0, "%d duplicate tokens", dup);
    for (uint64_t r = 0; r < mg.n; r++) {
        const struct gguf_str *m = &mg.str[r], *t = &tok.str[270 + r];
        const char *space = m->len > 1 ? memchr(m->ptr + 1, ' ', m->len - 1) : NULL;
        if (!space) {
            bad++;
            continue;
        }
        size_t la = (size_t)(space - m->ptr), lb = m->len - la - 1;
        int64_t a = find_tok(tab, tok.n, m->ptr, la), b = find_tok(tab, tok.n, space + 1, lb);
        bad += t->len != la + lb || memcmp(t->ptr, m->ptr, la) ||
               memcmp(t->ptr + la, space + 1, lb) || a < 14 || b < 14 || a >= 270 + (int64_t)r ||
               b >= 270 + (int64_t)r;
    }
    CHECK(bad == 0, "%d merges are not valid BPE merges of earlier tokens", bad);
    free(tab);
}

static int64_t get_int(const struct gguf_file *f, const char *key)
{
    int64_t v = -12345;
    CHECK(gguf_get_int(f, key, &v) == 0, "key %s", key);
    return v;
}

static double get_float(const struct gguf_file *f, const char *key)
{
    double v = -12345;
    CHECK(gguf_get_float(f, key, &v) == 0, "key %s", key);
    return v;
}

static bool str_is(const struct gguf_file *f, const char *key, const char *want)
{
    struct gguf_str s;
    return gguf_get_str(f, key, &s) == 0 && s.len == strlen(want) && !memcmp(s.ptr, want, s.len);
}

/* The LFM2 keys of LFM2-SPEC.md 2.1-2.4 and the chat template of the fixtures. */
static void check_meta(const struct gguf_file *f, const char *arch, int file_type)
{
    char k[96];
#define AK(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    CHECK(str_is(f, "general.architecture", arch), "architecture %s", arch);
    CHECK(gguf_find_kv(f, "general.name") != NULL, "general.name");
    CHECK(get_int(f, "general.file_type") == file_type, "file_type %d", file_type);
    CHECK(get_int(f, AK("context_length")) == 128000, "context_length");
    CHECK(get_int(f, AK("shortconv.l_cache")) == 3, "l_cache");
    CHECK(get_int(f, AK("vocab_size")) == 65536, "vocab_size");
    CHECK(get_int(f, AK("embedding_length")) > 0 && get_int(f, AK("feed_forward_length")) > 0 &&
              get_int(f, AK("attention.head_count")) > 0,
          "dims");
    CHECK(get_float(f, AK("rope.freq_base")) == 1e6, "rope base");
    CHECK(fabs(get_float(f, AK("attention.layer_norm_rms_epsilon")) - 1e-5) < 1e-9, "eps");
    CHECK(str_is(f, "tokenizer.ggml.model", "gpt2") && str_is(f, "tokenizer.ggml.pre", "lfm2"),
          "tokenizer model / pre");
    CHECK(get_int(f, "tokenizer.ggml.bos_token_id") == 1, "bos");
    CHECK(get_int(f, "tokenizer.ggml.eos_token_id") == 7, "eos");
    CHECK(get_int(f, "tokenizer.ggml.padding_token_id") == 0, "pad");
    bool add_bos = false;
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) == 0 && add_bos, "add_bos");
    if (!strcmp(arch, "lfm2moe"))
        CHECK(get_int(f, AK("expert_count")) > 0 && get_int(f, AK("expert_used_count")) > 0 &&
                  get_int(f, AK("expert_feed_forward_length")) > 0 &&
                  get_int(f, AK("leading_dense_block_count")) == 2 &&
                  get_int(f, AK("expert_gating_func")) == 2,
              "MoE keys");
#undef AK
    char path[512], want[4096];
    snprintf(path, sizeof path, "%s/templates/LFM2-8B-A1B.jinja", fixtures_dir());
    FILE *tf = fopen(path, "rb");
    size_t n = tf ? fread(want, 1, sizeof want - 1, tf) : 0;
    if (tf)
        fclose(tf);
    want[n] = 0;
    CHECK(n > 0 && str_is(f, "tokenizer.chat_template", want), "chat template == %s", path);
}

/* exsa_model_load accepts the file; its tokenizer round-trips text; optionally one decode. */
static void check_load(const char *path, int n_layers, bool decode)
{
    struct exsa_model *m = NULL;
    char err[512] = "";
    int rc = exsa_model_load(path, &m, err, sizeof err);
    CHECK(rc == 0, "exsa_model_load: %s", err);
    if (rc)
        return;
    const struct exsa_model_info *in = exsa_model_info(m);
    CHECK(in->vocab_size == 65536 && in->n_layers == n_layers, "info: vocab %d layers %d",
          in->vocab_size, in->n_layers);
    const char *text = "Hello world, the synthetic vocabulary tokenizes this!";
    int32_t ids[128];
    int n = exsa_tokenize(m, text, strlen(text), false, false, ids, 128);
    char back[256] = "";
    size_t len = 0;
    for (int i = 0; i < n && n <= 128; i++) {
        int k = exsa_token_to_piece(m, ids[i], false, back + len, sizeof back - len - 1);
        len += k > 0 ? (size_t)k : 0;
    }
    back[len] = 0;
    CHECK(n > 0 && n < (int)strlen(text) && !strcmp(back, text), "round trip: %d ids, '%s'", n,
          back);
    if (decode) {
        struct exsa_engine_params ep;
        struct exsa_engine *e = NULL;
        exsa_engine_params_default(&ep);
        ep.backend = EXSA_BACKEND_REF, ep.n_ctx = 64, ep.n_threads = 1;
        rc = exsa_engine_create(m, &ep, &e, err, sizeof err);
        CHECK(rc == 0, "engine: %s", err);
        int seq = rc == 0 ? exsa_seq_new(e) : -1;
        int32_t pos[4] = {0, 1, 2, 3}, sq[4] = {seq, seq, seq, seq};
        float *logits = malloc(65536 * sizeof *logits);
        struct exsa_batch b = {4, ids, pos, sq, NULL, NULL};
        rc = seq >= 0 && logits && n >= 4 ? exsa_decode(e, &b, logits) : -1;
        CHECK(rc == 0, "decode: %d", rc);
        int bad = 0;
        for (int i = 0; rc == 0 && i < 65536; i++)
            bad += !isfinite(logits[i]);
        CHECK(bad == 0, "%d non-finite logits", bad);
        free(logits);
        exsa_engine_free(e);
    }
    exsa_model_free(m);
}

/* Writes preset/type, runs every file check, removes the file; returns the parameter count. */
static uint64_t check_file(const char *preset, const char *type, bool decode)
{
    const struct synth_preset *p = synth_find_preset(preset);
    const struct synth_ftype *ft = synth_find_ftype(type);
    const char *path = write_model(preset, type, 1);
    if (!path)
        return 0;
    struct gguf_file *f = NULL;
    char err[256] = "";
    int rc = gguf_open(path, &f, err, sizeof err);
    CHECK(rc == 0, "gguf_open %s %s: %s", preset, type, err);
    uint64_t params = 0;
    if (rc == 0) {
        params = check_tensors(f, type);
        check_vocab(f);
        check_meta(f, p->arch, ft->file_type);
        gguf_close(f);
    }
    check_load(path, p->n_layers, decode);
    remove(path);
    return params;
}

static void test_demo_types(void)
{
    static const char *types[] = {"F32",  "F16",  "BF16",   "Q8_0",   "Q4_0", "Q4_1",
                                  "Q5_0", "Q5_1", "Q4_K_M", "Q5_K_M", "Q6_K"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        check_file("demo", types[i], i == 3);
}

static void test_demo_moe(void)
{
    check_file("demo-moe", "Q4_K_M", false);
}

static void test_lfm2_350m_q4_k_m(void)
{
    uint64_t params = check_file("lfm2-350m", "Q4_K_M", false);
    CHECK(params == 354483968ull, "LFM2-350M has %llu params, official 354,483,968",
          (unsigned long long)params);
}

/* The type rules of the presets too big to write here, from synth_tensor_type. */
static void test_rules_large_presets(void)
{
    static const char *names[] = {"lfm2-700m", "lfm2-1.2b", "lfm2-2.6b", "lfm2-8b-a1b"};
    static const char *suffix[] = {"attn_v.weight",      "ffn_down.weight", "ffn_down_exps.weight",
                                   "ffn_up_exps.weight", "attn_q.weight",   "attn_norm.weight"};
    const struct synth_ftype *ft = synth_find_ftype("Q4_K_M");
    for (int i = 0; i < 4; i++) {
        const struct synth_preset *p = synth_find_preset(names[i]);
        CHECK(p != NULL, "preset %s", names[i]);
        if (!p)
            continue;
        int n_attn = 0;
        for (int l = 0; l < p->n_layers; l++) {
            n_attn += p->n_kv_heads[l] > 0;
            for (int k = 0; k < 6; k++) {
                char name[64];
                snprintf(name, sizeof name, "blk.%d.%s", l, suffix[k]);
                int got = synth_tensor_type(p, ft, name);
                bool moe_layer = p->n_experts && l >= p->n_dense_lead;
                bool exists = k == 5 || (k == 0 || k == 4 ? p->n_kv_heads[l] > 0
                                         : k == 1         ? !moe_layer
                                                          : moe_layer);
                int want = exists ? expected_type(name, "Q4_K_M", p->n_layers, p->n_kv_heads) : -1;
                CHECK(got == want, "%s %s: %d, expected %d", names[i], name, got, want);
            }
        }
        CHECK(n_attn == (i == 2 ? 8 : 6), "%s: %d attention layers", names[i], n_attn);
    }
    CHECK(synth_tensor_type(synth_find_preset("lfm2-1.2b"), ft, "token_embd.weight") == 14,
          "tied embedding Q6_K");
    CHECK(synth_tensor_type(synth_find_preset("lfm2-1.2b"), ft, "blk.16.attn_norm.weight") == -1,
          "no layer 16");
}

static bool same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    for (int ca = 0, cb = 0; same && ca != EOF; same = ca == cb)
        ca = getc(fa), cb = getc(fb);
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static void test_deterministic(void)
{
    char a[96], b[96];
    const char *p = write_model("demo", "Q4_K_M", 7);
    snprintf(a, sizeof a, "%s.a", tmp_path);
    if (p)
        rename(p, a);
    p = write_model("demo", "Q4_K_M", 7);
    snprintf(b, sizeof b, "%s.b", tmp_path);
    if (p)
        rename(p, b);
    CHECK(same_file(a, b), "same seed, same bytes");
    p = write_model("demo", "Q4_K_M", 8);
    CHECK(p && !same_file(a, p), "another seed, other bytes");
    remove(a), remove(b);
    if (p)
        remove(p);
}

static void test_errors(void)
{
    char err[256] = "";
    int rc = synth_write("/nonexistent-dir/x.gguf", synth_find_preset("demo"),
                         synth_find_ftype("Q8_0"), 1, err, sizeof err);
    CHECK(rc == EXSA_EIO && strstr(err, "/nonexistent-dir/x.gguf"), "rc %d, '%s'", rc, err);
    CHECK(synth_find_preset("lfm2-9b") == NULL && synth_find_ftype("Q3_K_S") == NULL,
          "unknown names");
    CHECK(synth_find_ftype("q4_k_m") == synth_find_ftype("Q4_K_M"), "type names case-blind");
}

int main(void)
{
    RUN(test_errors);
    RUN(test_rules_large_presets);
    RUN(test_deterministic);
    RUN(test_demo_types);
    RUN(test_demo_moe);
    RUN(test_lfm2_350m_q4_k_m);
    TEST_END();
}
