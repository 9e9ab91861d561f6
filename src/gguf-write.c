/*
 * gguf-write.c: builds a GGUF file (version 3) in memory and writes it to a file or a buffer.
 *
 * struct gguf_writer keeps the KV records already serialized, in insertion order, and a list of
 * tensors, each owning one copy of its data. Saving lays tensors out in order, each padded to the
 * alignment (32, or a power of two given as the UINT32 key general.alignment), and streams the
 * tensor data to the file, so a model is held in memory once (plus the caller's own copy until
 * it frees it). The writer does not validate what it is given (tests use it to build bad files):
 * the reader does. Setters never fail visibly: an allocation failure or an impossible tensor is
 * remembered and reported by gguf_writer_save / gguf_writer_to_mem.
 * Callers: tests, `exsa synth`, the demo model writer.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "gguf-write.h"
#include "gguf.h"
#include "quant.h"
#include "strbuf.h"

struct buf {
    uint8_t *p;
    size_t n, cap;
};

struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[4];
    uint64_t nbytes;
    uint8_t *data; /* nbytes, owned */
};

struct gguf_writer {
    struct buf kv; /* serialized KV records */
    uint64_t n_kv;
    struct wtensor *t; /* n_t tensors, cap_t allocated */
    uint64_t n_t;
    size_t cap_t;
    uint32_t alignment;
    int err; /* first error: EXSA_ENOMEM or EXSA_EINVAL, else 0 */
};

/* ---- serialization helpers ------------------------------------------------------------------ */

static void put(struct gguf_writer *w, struct buf *b, const void *src, size_t n)
{
    if (w->err)
        return;
    uint8_t *p = grow_array(b->p, &b->cap, b->n + n, 1, 256);
    if (!p) {
        w->err = EXSA_ENOMEM;
        return;
    }
    b->p = p;
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_le(struct gguf_writer *w, struct buf *b, uint64_t v, int n)
{
    uint8_t bytes[8];
    for (int i = 0; i < n; i++)
        bytes[i] = (uint8_t)(v >> (8 * i));
    put(w, b, bytes, (size_t)n);
}

static void put_str(struct gguf_writer *w, struct buf *b, const char *s)
{
    size_t n = strlen(s);
    put_le(w, b, n, 8);
    put(w, b, s, n);
}

static void put_key(struct gguf_writer *w, const char *key, enum gguf_type t)
{
    assert(key);
    put_str(w, &w->kv, key);
    put_le(w, &w->kv, (uint64_t)t, 4);
    w->n_kv++;
}

/* Bytes of one scalar of type t; 0 for STRING and ARRAY. */
static int scalar_bytes(enum gguf_type t)
{
    static const int sizes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert((unsigned)t < GGUF_TYPE_COUNT);
    return sizes[t];
}

/* Serializes one scalar of type t read from v (its C type); bools are written as 0/1. */
static void put_scalar(struct gguf_writer *w, enum gguf_type t, const void *v)
{
    uint64_t x = 0;
    int n = scalar_bytes(t);
    assert(n > 0);
    if (t == GGUF_TYPE_BOOL)
        x = *(const bool *)v ? 1 : 0;
    else
        memcpy(&x, v, (size_t)n); /* little-endian host (quant.h assumes it too) */
    put_le(w, &w->kv, x, n);
}

/* ---- public setters ------------------------------------------------------------------------- */

struct gguf_writer *gguf_writer_new(void)
{
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(struct gguf_writer *w)
{
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w->kv.p);
    free(w);
}

void gguf_w_val(struct gguf_writer *w, const char *key, enum gguf_type t, const void *v)
{
    put_key(w, key, t);
    put_scalar(w, t, v);
    if (t == GGUF_TYPE_UINT32 && !strcmp(key, "general.alignment")) {
        uint32_t a = *(const uint32_t *)v;
        if (a && !(a & (a - 1)))
            w->alignment = a; /* lay tensors out as the reader will expect */
    }
}

void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    gguf_w_val(w, key, GGUF_TYPE_UINT32, &v);
}

void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    gguf_w_val(w, key, GGUF_TYPE_INT32, &v);
}

void gguf_w_f32(struct gguf_writer *w, const char *key, float v)
{
    gguf_w_val(w, key, GGUF_TYPE_FLOAT32, &v);
}

void gguf_w_bool(struct gguf_writer *w, const char *key, bool v)
{
    gguf_w_val(w, key, GGUF_TYPE_BOOL, &v);
}

void gguf_w_str(struct gguf_writer *w, const char *key, const char *v)
{
    put_key(w, key, GGUF_TYPE_STRING);
    put_str(w, &w->kv, v);
}

void gguf_w_arr(struct gguf_writer *w, const char *key, enum gguf_type type, const void *data,
                uint64_t n)
{
    assert(type != GGUF_TYPE_ARRAY);
    if (type == GGUF_TYPE_STRING) {
        gguf_w_arr_str(w, key, data, n);
        return;
    }
    put_key(w, key, GGUF_TYPE_ARRAY);
    put_le(w, &w->kv, (uint64_t)type, 4);
    put_le(w, &w->kv, n, 8);
    int es = scalar_bytes(type);
    for (uint64_t i = 0; i < n; i++)
        put_scalar(w, type, (const uint8_t *)data + i * (uint64_t)es);
}

void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    put_key(w, key, GGUF_TYPE_ARRAY);
    put_le(w, &w->kv, GGUF_TYPE_STRING, 4);
    put_le(w, &w->kv, n, 8);
    for (uint64_t i = 0; i < n; i++)
        put_str(w, &w->kv, v[i]);
}

/* Bytes of a tensor of this type and shape, or 0 when the type is unknown, a dim is < 1,
 * ne[0] is not a multiple of the block size or the size overflows. */
static uint64_t tensor_bytes(int type, int n_dims, const int64_t *ne)
{
    const struct dtype_info *di = type >= 0 && type < EXSA_DTYPE_COUNT ? dtype_info(type) : NULL;
    if (!di || n_dims < 1 || n_dims > 4 || ne[0] < 1 || ne[0] % di->block_size)
        return 0;
    uint64_t n = (uint64_t)(ne[0] / di->block_size);
    if (__builtin_mul_overflow(n, (uint64_t)di->type_size, &n))
        return 0;
    for (int d = 1; d < n_dims; d++)
        if (ne[d] < 1 || __builtin_mul_overflow(n, (uint64_t)ne[d], &n))
            return 0;
    return n;
}

void gguf_w_tensor(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                   const void *data)
{
    if (w->err)
        return;
    uint64_t nbytes = tensor_bytes(type, n_dims, ne);
    if (!nbytes || nbytes > SIZE_MAX) {
        w->err = EXSA_EINVAL;
        return;
    }
    struct wtensor *t = grow_array(w->t, &w->cap_t, w->n_t + 1, sizeof *t, 16);
    if (!t) {
        w->err = EXSA_ENOMEM;
        return;
    }
    w->t = t;
    t = &w->t[w->n_t];
    *t = (struct wtensor){.type = type, .n_dims = n_dims, .nbytes = nbytes, .ne = {1, 1, 1, 1}};
    memcpy(t->ne, ne, (size_t)n_dims * sizeof *ne);
    t->name = strdup(name);
    t->data = data ? malloc(nbytes) : calloc(1, nbytes);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        w->err = EXSA_ENOMEM;
        return;
    }
    if (data)
        memcpy(t->data, data, nbytes);
    w->n_t++;
}

/* ---- output --------------------------------------------------------------------------------- */

static uint64_t pad_to(uint64_t n, uint32_t a)
{
    return (a - n % a) % a;
}

/* Header, KV records and tensor infos (with offsets), padded so the data blob is aligned. */
static void build_head(struct gguf_writer *w, struct buf *h)
{
    put_le(w, h, 0x46554747u, 4); /* "GGUF" */
    put_le(w, h, 3, 4);
    put_le(w, h, w->n_t, 8);
    put_le(w, h, w->n_kv, 8);
    put(w, h, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        put_str(w, h, t->name);
        put_le(w, h, (uint64_t)t->n_dims, 4);
        for (int d = 0; d < t->n_dims; d++)
            put_le(w, h, (uint64_t)t->ne[d], 8);
        put_le(w, h, (uint64_t)t->type, 4);
        put_le(w, h, off, 8);
        off += t->nbytes + pad_to(t->nbytes, w->alignment);
    }
    static const uint8_t zeros[256];
    for (uint64_t p = pad_to(h->n, w->alignment); p > 0;) {
        uint64_t k = p < sizeof zeros ? p : sizeof zeros;
        put(w, h, zeros, (size_t)k);
        p -= k;
    }
}

/* Emits the whole file through emit(ctx, bytes, n), which returns 0 or an error code. */
static int emit_file(struct gguf_writer *w, int (*emit)(void *, const void *, size_t), void *ctx)
{
    static const uint8_t zeros[256];
    struct buf h = {0};
    build_head(w, &h);
    int rc = w->err ? w->err : emit(ctx, h.p, h.n);
    free(h.p);
    for (uint64_t i = 0; i < w->n_t && !rc; i++) {
        rc = emit(ctx, w->t[i].data, (size_t)w->t[i].nbytes);
        for (uint64_t p = pad_to(w->t[i].nbytes, w->alignment); p > 0 && !rc;) {
            uint64_t k = p < sizeof zeros ? p : sizeof zeros;
            rc = emit(ctx, zeros, (size_t)k);
            p -= k;
        }
    }
    return rc;
}

static int emit_stdio(void *ctx, const void *p, size_t n)
{
    return fwrite(p, 1, n, ctx) == n ? 0 : EXSA_EIO;
}

static int emit_mem(void *ctx, const void *p, size_t n)
{
    struct buf *b = ctx;
    if (n > b->cap - b->n)
        return EXSA_ENOMEM; /* sized in advance: cannot happen */
    memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

int gguf_writer_save(struct gguf_writer *w, const char *path)
{
    if (w->err)
        return w->err;
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return EXSA_EIO;
    int rc = emit_file(w, emit_stdio, fp);
    if (fclose(fp) && !rc)
        rc = EXSA_EIO;
    if (rc)
        remove(path);
    return rc;
}

int gguf_writer_to_mem(struct gguf_writer *w, uint8_t **out, size_t *size)
{
    *out = NULL;
    *size = 0;
    if (w->err)
        return w->err;
    struct buf h = {0};
    build_head(w, &h);
    uint64_t total = h.n;
    free(h.p);
    for (uint64_t i = 0; i < w->n_t; i++)
        total += w->t[i].nbytes + pad_to(w->t[i].nbytes, w->alignment);
    if (w->err)
        return w->err;
    struct buf b = {.p = malloc(total ? total : 1), .cap = total};
    if (!b.p)
        return EXSA_ENOMEM;
    int rc = emit_file(w, emit_mem, &b);
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *size = b.n;
    return 0;
}
