/*
 * model.c: exsa_model_load: maps the GGUF, picks the architecture from general.architecture,
 * reads hparams and binds every tensor (models/lfm2.c), then loads the tokenizer and the chat
 * template. Holds the generic binding helper and the error strings. The model is read-only
 * after load and may be shared by engines on different threads.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"

const char *exsa_strerror(int err)
{
    switch (err) {
    case EXSA_OK: return "ok";
    case EXSA_EINVAL: return "invalid argument";
    case EXSA_ENOMEM: return "out of memory or capacity";
    case EXSA_EIO: return "i/o error";
    case EXSA_EFORMAT: return "malformed file";
    case EXSA_ENOTFOUND: return "not found";
    case EXSA_ETYPE: return "wrong type";
    case EXSA_EUNSUPPORTED: return "not supported";
    case EXSA_ERANGE: return "out of range";
    case EXSA_ECANCELLED: return "cancelled";
    default: return "unknown error";
    }
}

static void shape_str(char *buf, size_t size, int n_dims, const int64_t *ne)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n_dims && o < size; i++)
        o += (size_t)snprintf(buf + o, size - o, i ? "x%lld" : "%lld", (long long)ne[i]);
}

int model_bind(const struct gguf_file *f, const char *name, int n_dims, const int64_t *ne,
               struct tensor *t, bool required, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const struct gguf_tensor *g = gguf_find_tensor(f, name);
    if (!g) {
        if (required)
            snprintf(err, errlen, "tensor %s: missing", name);
        return required ? EXSA_ENOTFOUND : 0;
    }
    int64_t got[4] = {1, 1, 1, 1}, want[4] = {1, 1, 1, 1};
    for (int i = 0; i < g->n_dims && i < 4; i++)
        got[i] = g->ne[i];
    for (int i = 0; i < n_dims; i++)
        want[i] = ne[i];
    if (memcmp(got, want, sizeof(got)) != 0) {
        char a[96], b[96];
        shape_str(a, sizeof(a), n_dims, want);
        shape_str(b, sizeof(b), g->n_dims, g->ne);
        snprintf(err, errlen, "tensor %s: expected %s, got %s", name, a, b);
        return EXSA_EFORMAT;
    }
    const struct dtype_info *di = dtype_info(g->type);
    if (!di || !di->supported) {
        snprintf(err, errlen, "tensor %s: type %s (%d) is not supported", name,
                 di ? di->name : "unknown", g->type);
        return EXSA_EUNSUPPORTED;
    }
    t->name = g->name;
    t->type = g->type;
    t->n_dims = n_dims;
    memcpy(t->ne, want, sizeof(want));
    t->data = g->data;
    t->nbytes = g->nbytes;
    return 0;
}

static void fill_info(struct exsa_model *m, const char *arch)
{
    const struct hparams *hp = &m->hp;
    struct exsa_model_info *in = &m->info;
    in->arch = arch;
    in->n_layers = hp->n_layers;
    in->dim = hp->dim;
    in->hidden_dim = hp->hidden_dim;
    in->n_heads = hp->n_heads;
    in->head_dim = hp->head_dim;
    in->vocab_size = hp->vocab_size;
    in->n_ctx_train = hp->n_ctx_train;
    in->n_experts = hp->n_experts;
    in->n_experts_used = hp->n_experts_used;
    in->expert_hidden_dim = hp->expert_hidden_dim;
    in->n_dense_lead = hp->n_dense_lead;
    in->l_cache = hp->l_cache;
    in->norm_eps = hp->eps;
    in->rope_base = hp->rope_base;
    in->tied_output = m->tied_output;
    for (int l = 0; l < hp->n_layers; l++)
        *(hp->n_kv_heads[l] ? &in->n_attn_layers : &in->n_conv_layers) += 1;
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const struct gguf_tensor *t = &m->gguf->tensors[i];
        in->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        in->weight_bytes += t->nbytes;
    }
}

static int load_arch(struct exsa_model *m, char *err, size_t errlen)
{
    struct gguf_str s;
    if (gguf_get_str(m->gguf, "general.architecture", &s) < 0) {
        snprintf(err, errlen, "key general.architecture: missing or not a string");
        return EXSA_EFORMAT;
    }
    const char *arch = NULL;
    if (s.len == 4 && memcmp(s.ptr, "lfm2", 4) == 0)
        arch = "lfm2";
    else if (s.len == 7 && memcmp(s.ptr, "lfm2moe", 7) == 0)
        arch = "lfm2moe";
    if (!arch) {
        snprintf(err, errlen, "architecture '%.*s' is not supported (known: lfm2, lfm2moe)",
                 (int)(s.len > 64 ? 64 : s.len), s.ptr);
        return EXSA_EUNSUPPORTED;
    }
    int rc = lfm2_load_hparams(m->gguf, arch, &m->hp, err, errlen);
    if (rc == 0)
        rc = lfm2_bind_tensors(m, err, errlen);
    if (rc == 0)
        fill_info(m, arch);
    return rc;
}

static void read_name(struct exsa_model *m)
{
    static const char empty[] = "";
    struct gguf_str s;
    m->info.name = empty;
    if (gguf_get_str(m->gguf, "general.name", &s) == 0) {
        char *n = malloc(s.len + 1);
        if (n) {
            memcpy(n, s.ptr, s.len);
            n[s.len] = 0;
            m->info.name = n;
        }
    }
}

int exsa_model_load(const char *path, struct exsa_model **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = 0;
    *out = NULL;
    struct exsa_model *m = calloc(1, sizeof(*m));
    if (!m || !(m->path = strdup(path))) {
        free(m);
        snprintf(err, errlen, "out of memory");
        return EXSA_ENOMEM;
    }
    m->info.path = m->path;
    int rc = gguf_open(path, &m->gguf, err, errlen);
    if (rc == 0)
        rc = load_arch(m, err, errlen);
    if (rc == 0)
        rc = tok_load(m->gguf, m->hp.vocab_size, &m->tok, err, errlen);
    if (rc == 0) {
        char warn[256] = "";
        rc = chat_template_load(m->gguf, &m->tmpl, warn, sizeof(warn));
        if (rc == 0 && warn[0])
            fprintf(stderr, "exsa: warning: %s\n", warn);
    }
    if (rc < 0) {
        exsa_model_free(m);
        return rc;
    }
    read_name(m);
    *out = m;
    return 0;
}

void exsa_model_free(struct exsa_model *m)
{
    if (!m)
        return;
    if (m->tmpl)
        chat_template_free(m->tmpl);
    if (m->tok)
        tok_free(m->tok);
    if (m->info.name && m->info.name[0])
        free((char *)m->info.name);
    free(m->layers);
    gguf_close(m->gguf);
    free(m->path);
    free(m);
}

bool exsa_model_layer_is_attn(const struct exsa_model *m, int l)
{
    return m && l >= 0 && l < m->hp.n_layers && m->layers[l].is_attn;
}

int exsa_model_release_weights(struct exsa_model *m)
{
    int rc = gguf_release_data(m->gguf);
    if (rc == 0)
        m->weights_released = true;
    return rc;
}

const struct exsa_model_info *exsa_model_info(const struct exsa_model *m)
{
    return &m->info;
}

const struct gguf_file *model_gguf(const struct exsa_model *m)
{
    return m->gguf;
}
