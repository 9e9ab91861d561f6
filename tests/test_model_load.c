/*
 * test_model_load.c: model-level refusals and variants. Each case copies lfm2-tiny-F32.gguf
 * through the GGUF writer with one edit (a key removed or changed, a tensor removed, renamed,
 * re-typed or re-shaped), loads it with exsa_model_load, and checks the code and that the error
 * names what was wrong; the accepted variants (Ollama's output_norm name, an untied head, no
 * rope key) must load with the right hparams.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exsa.h"
#include "gguf-write.h"
#include "gguf.h"
#include "harness.h"
#include "model.h"

struct edit {
    const char *drop_key; /* key to leave out */
    const char *int_key;  /* key to (re)write as UINT32 int_val */
    int64_t int_val;
    const char *str_key; /* key to (re)write as a string */
    const char *str_val;
    const char *drop_tensor; /* tensor to leave out */
    const char *tensor;      /* tensor to re-shape / re-type / rename */
    int64_t ne1;             /* new ne[1] (0: keep) */
    bool retype;             /* give the tensor type new_type */
    int new_type;
    const char *rename; /* new name */
    bool add_output;    /* add an untied output.weight */
};

static void copy_scalar(struct gguf_writer *w, const struct gguf_kv *kv)
{
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        bool b;
        uint64_t u64;
        int64_t i64;
        double f64;
    } v;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: v.u8 = (uint8_t)kv->v.u64; break;
    case GGUF_TYPE_INT8: v.i8 = (int8_t)kv->v.i64; break;
    case GGUF_TYPE_UINT16: v.u16 = (uint16_t)kv->v.u64; break;
    case GGUF_TYPE_INT16: v.i16 = (int16_t)kv->v.i64; break;
    case GGUF_TYPE_UINT32: v.u32 = (uint32_t)kv->v.u64; break;
    case GGUF_TYPE_INT32: v.i32 = (int32_t)kv->v.i64; break;
    case GGUF_TYPE_FLOAT32: v.f32 = (float)kv->v.f64; break;
    case GGUF_TYPE_BOOL: v.b = kv->v.u64 != 0; break;
    case GGUF_TYPE_UINT64: v.u64 = kv->v.u64; break;
    case GGUF_TYPE_INT64: v.i64 = kv->v.i64; break;
    default: v.f64 = kv->v.f64; break;
    }
    gguf_w_val(w, kv->key, kv->type, &v);
}

static void copy_kv(struct gguf_writer *w, const struct gguf_kv *kv)
{
    if (kv->type == GGUF_TYPE_STRING) {
        char *s = strndup(kv->v.str.ptr, kv->v.str.len);
        gguf_w_str(w, kv->key, s);
        free(s);
    } else if (kv->type == GGUF_TYPE_ARRAY && kv->v.arr.type == GGUF_TYPE_STRING) {
        uint64_t n = kv->v.arr.n;
        char **v = malloc(sizeof(char *) * (n + 1));
        for (uint64_t i = 0; i < n; i++)
            v[i] = strndup(kv->v.arr.str[i].ptr, kv->v.arr.str[i].len);
        gguf_w_arr_str(w, kv->key, (const char *const *)v, n);
        for (uint64_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        gguf_w_arr(w, kv->key, kv->v.arr.type, kv->v.arr.data, kv->v.arr.n);
    } else {
        copy_scalar(w, kv);
    }
}

static void copy_tensor(struct gguf_writer *w, const struct gguf_tensor *t, const struct edit *e)
{
    int64_t ne[4];
    memcpy(ne, t->ne, sizeof(ne));
    const char *name = t->name;
    int type = t->type;
    const void *data = t->data;
    if (e->tensor && !strcmp(e->tensor, t->name)) {
        if (e->ne1)
            ne[1] = e->ne1, data = NULL;
        if (e->retype)
            type = e->new_type, data = NULL;
        if (e->rename)
            name = e->rename;
    }
    gguf_w_tensor(w, name, type, t->n_dims, ne, data);
}

/* Writes the edited copy to path; returns 0 on success. */
static int write_edited(const char *path, const struct edit *e)
{
    char src[512], err[256];
    snprintf(src, sizeof(src), "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    struct gguf_file *f;
    if (gguf_open(src, &f, err, sizeof(err)) < 0)
        return -1;
    struct gguf_writer *w = gguf_writer_new();
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const char *k = f->kv[i].key;
        if ((e->drop_key && !strcmp(k, e->drop_key)) || (e->int_key && !strcmp(k, e->int_key)) ||
            (e->str_key && !strcmp(k, e->str_key)))
            continue;
        copy_kv(w, &f->kv[i]);
    }
    if (e->int_key)
        gguf_w_u32(w, e->int_key, (uint32_t)e->int_val);
    if (e->str_key)
        gguf_w_str(w, e->str_key, e->str_val);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!e->drop_tensor || strcmp(f->tensors[i].name, e->drop_tensor))
            copy_tensor(w, &f->tensors[i], e);
    if (e->add_output) {
        const struct gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
        gguf_w_tensor(w, "output.weight", t->type, 2, t->ne, t->data);
    }
    int rc = gguf_writer_save(w, path);
    gguf_writer_free(w);
    gguf_close(f);
    return rc;
}

static char tmp_path[256];

/* Loads an edited copy; checks the code and the message (want_msg NULL: must load). */
static struct exsa_model *load_edited(const char *label, const struct edit *e, int want_rc,
                                      const char *want_msg)
{
    CHECK(write_edited(tmp_path, e) == 0, "%s: cannot write the edited copy", label);
    char err[512] = "";
    struct exsa_model *m = NULL;
    int rc = exsa_model_load(tmp_path, &m, err, sizeof(err));
    if (!want_msg) {
        CHECK(rc == 0, "%s: expected to load, got %d: %s", label, rc, err);
        return m;
    }
    CHECK(rc == want_rc, "%s: expected rc %d, got %d (%s)", label, want_rc, rc, err);
    CHECK(strstr(err, want_msg) != NULL, "%s: error '%s' lacks '%s'", label, err, want_msg);
    exsa_model_free(m);
    return NULL;
}

#define E(...) (&(struct edit){__VA_ARGS__})

static void test_refusals(void)
{
    struct {
        const char *label;
        struct edit *e;
        int rc;
        const char *msg;
    } cases[] = {
        {"no architecture", E(.drop_key = "general.architecture"), EXSA_EFORMAT,
         "general.architecture"},
        {"unknown architecture", E(.str_key = "general.architecture", .str_val = "llama"),
         EXSA_EUNSUPPORTED, "'llama' is not supported"},
        {"no block_count", E(.drop_key = "lfm2.block_count"), EXSA_EFORMAT,
         "lfm2.block_count: missing"},
        {"zero layers", E(.int_key = "lfm2.block_count", .int_val = 0), EXSA_EFORMAT,
         "lfm2.block_count: value 0 out of range"},
        {"no embedding_length", E(.drop_key = "lfm2.embedding_length"), EXSA_EFORMAT,
         "lfm2.embedding_length: missing"},
        {"no head_count_kv", E(.drop_key = "lfm2.attention.head_count_kv"), EXSA_EFORMAT,
         "head_count_kv: missing"},
        {"head_count_kv length", E(.int_key = "lfm2.block_count", .int_val = 5), EXSA_EFORMAT,
         "entries, expected one per layer (5)"},
        {"no eps", E(.drop_key = "lfm2.attention.layer_norm_rms_epsilon"), EXSA_EFORMAT,
         "layer_norm_rms_epsilon: missing"},
        {"no l_cache", E(.drop_key = "lfm2.shortconv.l_cache"), EXSA_EFORMAT,
         "lfm2.shortconv.l_cache: missing"},
        {"odd head size", E(.int_key = "lfm2.attention.head_count", .int_val = 3), EXSA_EFORMAT,
         "head size 85 must be even"},
        {"key_length of a wrong type",
         E(.int_key = "lfm2.attention.head_count", .int_val = 1,
           .str_key = "lfm2.attention.key_length", .str_val = "64"),
         EXSA_EFORMAT, "attention.key_length: expected an integer"},
        {"ffn width mismatch", E(.int_key = "lfm2.feed_forward_length", .int_val = 600),
         EXSA_EFORMAT, "blk.0.ffn_gate.weight: expected 256x600, got 256x512"},
        {"missing attn_q", E(.drop_tensor = "blk.2.attn_q.weight"), EXSA_ENOTFOUND,
         "tensor blk.2.attn_q.weight: missing"},
        {"missing conv", E(.drop_tensor = "blk.0.shortconv.conv.weight"), EXSA_ENOTFOUND,
         "blk.0.shortconv.conv.weight: missing"},
        {"missing final norm", E(.drop_tensor = "token_embd_norm.weight"), EXSA_ENOTFOUND,
         "token_embd_norm.weight (or output_norm.weight): missing"},
        {"missing embeddings", E(.drop_tensor = "token_embd.weight"), EXSA_ENOTFOUND,
         "token_embd.weight: missing"},
        {"wrong shape", E(.tensor = "blk.3.ffn_up.weight", .ne1 = 500), EXSA_EFORMAT,
         "blk.3.ffn_up.weight: expected 256x512, got 256x500"},
        {"conv kernel not F32",
         E(.tensor = "blk.1.shortconv.conv.weight", .retype = true, .new_type = 1), EXSA_EFORMAT,
         "blk.1.shortconv.conv.weight: expected type F32"},
        {"bos id out of range", E(.int_key = "tokenizer.ggml.bos_token_id", .int_val = 5000),
         EXSA_ERANGE, "bos_token_id"},
        {"eos id out of range", E(.int_key = "tokenizer.ggml.eos_token_id", .int_val = 1024),
         EXSA_ERANGE, "eos_token_id"},
        {"unknown pre-tokenizer", E(.str_key = "tokenizer.ggml.pre", .str_val = "foo"),
         EXSA_EUNSUPPORTED, "'foo'"},
        {"unknown tokenizer model", E(.str_key = "tokenizer.ggml.model", .str_val = "llama"),
         EXSA_EUNSUPPORTED, "llama"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        load_edited(cases[i].label, cases[i].e, cases[i].rc, cases[i].msg);
}

static void test_variants(void)
{
    struct exsa_model *m =
        load_edited("ollama final norm name",
                    E(.tensor = "token_embd_norm.weight", .rename = "output_norm.weight"), 0, NULL);
    CHECK(m && m->out_norm.data != NULL, "output_norm.weight not bound");
    exsa_model_free(m);
    m = load_edited("untied head", E(.add_output = true), 0, NULL);
    CHECK(m && !exsa_model_info(m)->tied_output, "output.weight present but the head is tied");
    exsa_model_free(m);
    m = load_edited("no rope key", E(.drop_key = "lfm2.rope.freq_base"), 0, NULL);
    CHECK(m && exsa_model_info(m)->rope_base == 1e6f, "rope base defaults to 1e6, got %g",
          m ? exsa_model_info(m)->rope_base : 0);
    exsa_model_free(m);
    m = load_edited("plain", E(.drop_key = NULL), 0, NULL);
    const struct exsa_model_info *in = m ? exsa_model_info(m) : NULL;
    CHECK(in && in->tied_output && in->n_layers == 6 && exsa_model_layer_is_attn(m, 2) &&
              !exsa_model_layer_is_attn(m, 3) && !exsa_model_layer_is_attn(m, 6) &&
              !exsa_model_layer_is_attn(m, -1) && in->vocab_size == 1024 && in->l_cache == 3 &&
              in->norm_eps == 1e-5f,
          "hparams of the fixture");
    exsa_model_free(m);
}

static void test_missing_file(void)
{
    char err[256];
    struct exsa_model *m;
    int rc = exsa_model_load("no/such/file.gguf", &m, err, sizeof(err));
    CHECK(rc == EXSA_EIO && strstr(err, "no/such/file.gguf"), "rc %d, '%s'", rc, err);
}

int main(void)
{
    snprintf(tmp_path, sizeof(tmp_path), "/tmp/exsa-test-model-%d.gguf", (int)getpid());
    RUN(test_refusals);
    RUN(test_variants);
    RUN(test_missing_file);
    unlink(tmp_path);
    TEST_END();
}
