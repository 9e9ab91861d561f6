/*
 * cmd_model.c: `exsa logits` (the logits of one token sequence, float32 rows, for comparing
 * with other engines) and `exsa inspect` (load a GGUF exactly as the server does and print its
 * metadata, hparams and tensors, or the error that would stop it from being served).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "cli.h"
#include "gguf.h"
#include "quant.h"
#include "tokenizer.h"

int cli_parse_backend(const char *s)
{
    if (!strcmp(s, "ref"))
        return EXSA_BACKEND_REF;
    if (!strcmp(s, "cpu"))
        return EXSA_BACKEND_CPU;
    if (!strcmp(s, "cuda"))
        return EXSA_BACKEND_CUDA;
    fprintf(stderr, "exsa: unknown backend '%s' (ref, cpu or cuda)\n", s);
    return -1;
}

int cli_parse_kv_type(const char *s)
{
    if (!strcmp(s, "f32"))
        return EXSA_KV_F32;
    if (!strcmp(s, "f16"))
        return EXSA_KV_F16;
    fprintf(stderr, "exsa: unknown KV cache type '%s' (f32 or f16)\n", s);
    return -1;
}

int cli_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "exsa: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* "1,6,129" -> ids; returns the count or -1. */
static int parse_tokens(const char *s, int32_t **out)
{
    int cap = 16, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    while (ids && *s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "exsa: --tokens: bad id list near '%s'\n", s);
            free(ids);
            return -1;
        }
        if (n == cap && !(ids = realloc(ids, sizeof(int32_t) * (cap *= 2))))
            break;
        ids[n++] = (int32_t)v;
        s = *end ? end + 1 : end;
    }
    *out = ids;
    return ids ? n : -1;
}

static int write_logits(struct exsa_engine *e, const int32_t *ids, int n, int n_vocab, int n_batch,
                        FILE *fp)
{
    int seq = exsa_seq_new(e);
    float *logits = malloc(sizeof(float) * (size_t)n_batch * n_vocab);
    int32_t *pos = malloc(sizeof(int32_t) * n_batch), *sq = malloc(sizeof(int32_t) * n_batch);
    uint8_t *want = malloc(n_batch);
    int rc = (!logits || !pos || !sq || !want || seq < 0) ? EXSA_ENOMEM : 0;
    for (int i = 0; rc == 0 && i < n; i += n_batch) {
        int m = n - i < n_batch ? n - i : n_batch;
        for (int j = 0; j < m; j++)
            pos[j] = i + j, sq[j] = seq, want[j] = 1;
        struct exsa_batch b = {m, ids + i, pos, sq, want, NULL};
        rc = exsa_decode(e, &b, logits);
        if (rc == 0 && fwrite(logits, sizeof(float) * n_vocab, m, fp) != (size_t)m)
            rc = EXSA_EIO;
    }
    free(logits), free(pos), free(sq), free(want);
    return rc;
}

int cmd_logits(int argc, char **argv)
{
    const char *model = NULL, *tokens = NULL, *outp = NULL;
    int backend = EXSA_BACKEND_CPU, threads = 0, ngl = 0, kvt = EXSA_KV_DEFAULT;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v)
            model = v, i++;
        else if (!strcmp(a, "-ngl") && v) {
            if (cli_int("-ngl", v, 0, 1 << 20, &ngl))
                return 2;
            i++;
        } else if (!strcmp(a, "--kv-type") && v) {
            if ((kvt = cli_parse_kv_type(v)) < 0)
                return 2;
            i++;
        } else if (!strcmp(a, "--tokens") && v)
            tokens = v, i++;
        else if (!strcmp(a, "-o") && v)
            outp = v, i++;
        else if (!strcmp(a, "--backend") && v) {
            if ((backend = cli_parse_backend(v)) < 0)
                return 2;
            i++;
        } else if (!strcmp(a, "-t") && v) {
            if (cli_int("-t", v, 1, 1024, &threads))
                return 2;
            i++;
        } else {
            fprintf(stderr, "usage: exsa logits -m MODEL --tokens 1,6,129,... "
                            "[--backend ref|cpu|cuda] [-ngl N] [--kv-type f32|f16] [-t THREADS] "
                            "-o OUT.f32\n");
            return 2;
        }
    }
    if (!model || !tokens || !outp) {
        fprintf(stderr, "exsa logits: -m, --tokens and -o are required\n");
        return 2;
    }
    int32_t *ids;
    int n = parse_tokens(tokens, &ids);
    if (n <= 0) {
        fprintf(stderr, "exsa logits: --tokens needs at least one id\n");
        return 2;
    }
    char err[512];
    struct exsa_model *m;
    struct exsa_engine *e = NULL;
    int rc = exsa_model_load(model, &m, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "exsa: %s: %s\n", model, err);
        free(ids);
        return 1;
    }
    int vocab = exsa_model_info(m)->vocab_size;
    for (int i = 0; i < n; i++)
        if (ids[i] >= vocab) {
            fprintf(stderr, "exsa logits: token id %d is outside the vocabulary (%d)\n", ids[i],
                    vocab);
            rc = EXSA_ERANGE;
        }
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.backend = backend, p.n_threads = threads, p.n_ctx = n, p.n_batch = n < 512 ? n : 512;
    p.gpu_layers = ngl, p.kv_type = (enum exsa_kv_type)kvt;
    if (rc == 0 && (rc = exsa_engine_create(m, &p, &e, err, sizeof(err))) < 0)
        fprintf(stderr, "exsa: %s\n", err);
    FILE *fp = rc == 0 ? fopen(outp, "wb") : NULL;
    if (rc == 0 && !fp) {
        fprintf(stderr, "exsa logits: cannot write %s: %s\n", outp, strerror(errno));
        rc = EXSA_EIO;
    }
    if (rc == 0 && (rc = write_logits(e, ids, n, vocab, p.n_batch, fp)) < 0)
        fprintf(stderr, "exsa logits: %s\n", exsa_strerror(rc));
    if (fp && fclose(fp) != 0 && rc == 0)
        rc = EXSA_EIO;
    exsa_engine_free(e);
    exsa_model_free(m);
    free(ids);
    return rc < 0 ? 1 : 0;
}

static void print_value(const struct gguf_kv *kv)
{
    switch (kv->type) {
    case GGUF_TYPE_STRING:
        putchar('"');
        for (uint64_t i = 0; i < kv->v.str.len && i < 60; i++) {
            unsigned char c = (unsigned char)kv->v.str.ptr[i];
            if (c < 0x20 || c == 0x7f)
                printf("\\x%02x", c);
            else
                putchar(c);
        }
        printf("\"%s", kv->v.str.len > 60 ? "..." : "");
        break;
    case GGUF_TYPE_ARRAY: {
        printf("[%s x %" PRIu64 "]", gguf_type_name(kv->v.arr.type), kv->v.arr.n);
        int64_t x;
        for (uint64_t i = 0; i < kv->v.arr.n && i < 16 && gguf_arr_int(&kv->v.arr, i, &x) == 0; i++)
            printf("%s%" PRId64, i ? "," : " ", x);
        break;
    }
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64: printf("%g", kv->v.f64); break;
    case GGUF_TYPE_BOOL: printf("%s", kv->v.u64 ? "true" : "false"); break;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64: printf("%" PRId64, kv->v.i64); break;
    default: printf("%" PRIu64, kv->v.u64); break;
    }
}

/* The file's keys and tensors as the GGUF reader sees them, and the model as the loader bound
 * it (f: the same file, opened by the GGUF reader alone). */
static void print_model(const char *path, const struct gguf_file *f, const struct exsa_model *m)
{
    printf("file: %s (GGUF v%u, %" PRIu64 " keys, %" PRIu64 " tensors)\n\nmetadata:\n", path,
           f->version, f->n_kv, f->n_tensors);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        printf("  %-44s ", f->kv[i].key);
        print_value(&f->kv[i]);
        printf("\n");
    }
    const struct exsa_model_info *in = exsa_model_info(m);
    printf("\nhparams: arch %s, %d layers (%d conv + %d attention), dim %d, ffn %d, heads %d, "
           "head_dim %d, vocab %d, n_ctx_train %d, l_cache %d, eps %g, rope_base %g\n",
           in->arch, in->n_layers, in->n_conv_layers, in->n_attn_layers, in->dim, in->hidden_dim,
           in->n_heads, in->head_dim, in->vocab_size, in->n_ctx_train, in->l_cache, in->norm_eps,
           in->rope_base);
    printf("layers: ");
    for (int l = 0; l < in->n_layers; l++)
        printf("%s%s", l ? "," : "", exsa_model_layer_is_attn(m, l) ? "attn" : "conv");
    if (in->n_experts > 0)
        printf("\nmoe: %d experts, %d used, expert ffn %d, %d dense leading layers", in->n_experts,
               in->n_experts_used, in->expert_hidden_dim, in->n_dense_lead);
    printf("\noutput: %s\nparams: %" PRIu64 ", weights %.1f MiB\n",
           in->tied_output ? "tied to token_embd" : "output.weight", in->n_params,
           in->weight_bytes / 1048576.0);
    printf("tokenizer: %d tokens, bos %d, eos %d; chat template: %s\n\ntensors:\n",
           tok_n_vocab(tok_of_model(m)), exsa_token_bos(m), exsa_token_eos(m),
           chat_variant_name(chat_template_variant(chat_of_model(m))));
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        const struct dtype_info *di = dtype_info(t->type);
        printf("  %-36s %-7s %6lld x %-6lld x %-3lld %10" PRIu64 " bytes\n", t->name,
               di ? di->name : "?", (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
               t->nbytes);
    }
}

int cmd_inspect(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: exsa inspect MODEL.gguf\n");
        return 2;
    }
    char err[512];
    struct exsa_model *m;
    struct gguf_file *f = NULL;
    if (exsa_model_load(argv[1], &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "exsa: %s: %s\n", argv[1], err);
        return 1;
    }
    if (gguf_open(argv[1], &f, err, sizeof(err)) < 0) { /* changed since the load */
        fprintf(stderr, "exsa: %s: %s\n", argv[1], err);
        exsa_model_free(m);
        return 1;
    }
    print_model(argv[1], f, m);
    gguf_close(f);
    exsa_model_free(m);
    return 0;
}
