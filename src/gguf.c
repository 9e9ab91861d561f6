/*
 * gguf.c: the validated GGUF reader (LFM2-SPEC.md section 1), versions 2 and 3, little-endian.
 *
 * struct gguf_impl wraps the public struct gguf_file with two open-addressing hash tables (keys
 * and tensor names) so lookups are O(1) and duplicates are found while parsing. A cursor
 * (struct rd) reads the header, KV records and tensor infos; every read is checked against the
 * bytes left first, every count is bounded by the bytes left before anything is allocated, and
 * all offset/size arithmetic is overflow-checked. Invariants after a successful open: keys and
 * tensor names are unique and non-empty, every gguf_str/array/tensor pointer lies inside
 * [base, base + size), tensors are aligned, inside the data blob and do not overlap.
 * Callers: model.c, tokenizer.c, tools/exsa (inspect), tests/test_gguf.c, fuzz_gguf.c.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exsa.h"
#include "quant.h"

#define HEADER_BYTES 24
#define MIN_KV_BYTES 14     /* key len 8 + key 1 + type 4 + smallest value 1 */
#define MIN_TENSOR_BYTES 33 /* name len 8 + name 1 + n_dims 4 + ne 8 + type 4 + offset 8 */
#define MAX_COUNT 0x7fffffffull

struct gguf_impl {
    struct gguf_file f;     /* must stay first: gguf_close() casts back */
    uint32_t *kv_slots;     /* kv_cap slots, each 0 (empty) or kv index + 1 */
    uint32_t *t_slots;      /* t_cap slots, each 0 (empty) or tensor index + 1 */
    uint64_t kv_cap, t_cap; /* powers of two, at least twice the entry count */
};

/* The parse cursor: pos never exceeds size; ctx names the record being read for messages. */
struct rd {
    const uint8_t *p;
    uint64_t size, pos;
    char *err;
    size_t errlen;
    char ctx[112];
};

static const char *const type_names[GGUF_TYPE_COUNT] = {
    "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
    "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64",
};

/* Bytes of one scalar of type t (0 for STRING/ARRAY, which have variable size). */
static uint64_t scalar_size(enum gguf_type t)
{
    static const uint8_t sizes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return sizes[t];
}

const char *gguf_type_name(enum gguf_type t)
{
    return (unsigned)t < GGUF_TYPE_COUNT ? type_names[t] : "unknown";
}

/* ---- errors and little-endian decoding ---------------------------------------------------- */

/* Writes "gguf: [ctx: ]message" into r->err and returns code. */
static int fail(struct rd *r, int code, const char *fmt, ...)
{
    if (!r->err || !r->errlen)
        return code;
    int n = snprintf(r->err, r->errlen, "gguf: %s%s", r->ctx, r->ctx[0] ? ": " : "");
    if (n >= 0 && (size_t)n < r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Checks that n bytes are left at the cursor; what names them in the message. */
static int need(struct rd *r, uint64_t n, const char *what)
{
    if (n <= r->size - r->pos)
        return 0;
    return fail(r, EXSA_EFORMAT,
                "%s at offset %llu (%llu bytes) runs past the end of the file (%llu bytes)", what,
                (unsigned long long)r->pos, (unsigned long long)n, (unsigned long long)r->size);
}

static int rd_uint(struct rd *r, int n, uint64_t *out, const char *what)
{
    int rc = need(r, (uint64_t)n, what);
    if (rc)
        return rc;
    *out = le(r->p + r->pos, n);
    r->pos += (uint64_t)n;
    return 0;
}

/* Reads a gguf_string (u64 length + bytes); the result points into the buffer. */
static int rd_str(struct rd *r, struct gguf_str *s, const char *what)
{
    char buf[64];
    uint64_t len;
    snprintf(buf, sizeof buf, "%s length", what);
    int rc = rd_uint(r, 8, &len, buf);
    if (rc)
        return rc;
    rc = need(r, len, what);
    if (rc)
        return rc;
    s->ptr = (const char *)r->p + r->pos;
    s->len = len;
    r->pos += len;
    return 0;
}

/* ---- hash tables ------------------------------------------------------------------------- */

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t table_cap(uint64_t n)
{
    uint64_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

/* The slot of the key table (or the tensor-name table) holding name[0..n), or the empty slot
 * where it would go. The table is never full (cap >= 2 * entries), so the probe ends. */
static uint32_t *slot_find(const struct gguf_impl *g, bool tensors, const char *name, size_t n)
{
    uint32_t *slots = tensors ? g->t_slots : g->kv_slots;
    uint64_t mask = (tensors ? g->t_cap : g->kv_cap) - 1;
    for (uint64_t i = hash(name, n) & mask;; i = (i + 1) & mask) {
        if (!slots[i])
            return &slots[i];
        const char *s = tensors ? g->f.tensors[slots[i] - 1].name : g->f.kv[slots[i] - 1].key;
        if (strlen(s) == n && !memcmp(s, name, n))
            return &slots[i];
    }
}

/* ---- KV records -------------------------------------------------------------------------- */

static int check_type(struct rd *r, uint64_t t, const char *what)
{
    if (t >= GGUF_TYPE_COUNT)
        return fail(r, EXSA_EFORMAT, "unknown %s %llu", what, (unsigned long long)t);
    return 0;
}

/* Reads one scalar of type t (not STRING/ARRAY) into kv's union, widened. */
static int rd_scalar(struct rd *r, enum gguf_type t, struct gguf_kv *kv)
{
    uint64_t v;
    int n = (int)scalar_size(t);
    int rc = rd_uint(r, n, &v, "value");
    if (rc)
        return rc;
    switch (t) {
    case GGUF_TYPE_INT8: kv->v.i64 = (int8_t)v; break;
    case GGUF_TYPE_INT16: kv->v.i64 = (int16_t)v; break;
    case GGUF_TYPE_INT32: kv->v.i64 = (int32_t)v; break;
    case GGUF_TYPE_INT64: kv->v.i64 = (int64_t)v; break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, 4);
        kv->v.f64 = f;
        break;
    }
    case GGUF_TYPE_FLOAT64: memcpy(&kv->v.f64, &v, 8); break;
    case GGUF_TYPE_BOOL:
        if (v > 1)
            return fail(r, EXSA_EFORMAT, "bool value %llu is neither 0 nor 1",
                        (unsigned long long)v);
        kv->v.u64 = v;
        break;
    default: kv->v.u64 = v; break;
    }
    return 0;
}

/* Reads an array of n strings: builds the gguf_str table (n bounded by the bytes left first). */
static int rd_str_array(struct rd *r, struct gguf_array *a)
{
    if (a->n > (r->size - r->pos) / 8)
        return fail(r, EXSA_EFORMAT,
                    "array of %llu strings at offset %llu runs past the end of the file "
                    "(%llu bytes; each string needs at least 8)",
                    (unsigned long long)a->n, (unsigned long long)r->pos,
                    (unsigned long long)r->size);
    struct gguf_str *tab = malloc((a->n ? a->n : 1) * sizeof *tab);
    if (!tab)
        return fail(r, EXSA_ENOMEM, "out of memory for an array of %llu strings",
                    (unsigned long long)a->n);
    a->str = tab;
    for (uint64_t i = 0; i < a->n; i++) {
        char what[48];
        snprintf(what, sizeof what, "string #%llu", (unsigned long long)i);
        int rc = rd_str(r, &tab[i], what);
        if (rc)
            return rc;
    }
    return 0;
}

static int rd_array(struct rd *r, struct gguf_array *a)
{
    uint64_t et, n;
    int rc = rd_uint(r, 4, &et, "array element type");
    if (!rc)
        rc = check_type(r, et, "array element type");
    if (!rc && et == GGUF_TYPE_ARRAY)
        rc = fail(r, EXSA_EFORMAT, "array of arrays (nested arrays are refused)");
    if (!rc)
        rc = rd_uint(r, 8, &n, "array count");
    if (rc)
        return rc;
    a->type = (enum gguf_type)et;
    a->n = n;
    a->data = r->p + r->pos;
    if (et == GGUF_TYPE_STRING)
        return rd_str_array(r, a);
    uint64_t es = scalar_size(a->type), bytes;
    if (__builtin_mul_overflow(n, es, &bytes) || bytes > r->size - r->pos)
        return fail(r, EXSA_EFORMAT,
                    "array of %llu %s at offset %llu runs past the end of the file (%llu bytes)",
                    (unsigned long long)n, gguf_type_name(a->type), (unsigned long long)r->pos,
                    (unsigned long long)r->size);
    if (et == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (r->p[r->pos + i] > 1)
                return fail(r, EXSA_EFORMAT, "bool element #%llu is %u, neither 0 nor 1",
                            (unsigned long long)i, r->p[r->pos + i]);
    r->pos += bytes;
    return 0;
}

/* general.alignment must be a UINT32 holding a non-zero power of two. */
static int check_alignment(struct rd *r, const struct gguf_kv *kv, uint32_t *align)
{
    if (kv->type != GGUF_TYPE_UINT32)
        return fail(r, EXSA_EFORMAT, "must be UINT32, not %s", gguf_type_name(kv->type));
    uint64_t a = kv->v.u64;
    if (a == 0 || (a & (a - 1)))
        return fail(r, EXSA_EFORMAT, "%llu is not a non-zero power of two", (unsigned long long)a);
    *align = (uint32_t)a;
    return 0;
}

/* Reads KV record i: key (copied, unique, non-empty, no NUL), type, value. */
static int rd_kv(struct rd *r, struct gguf_impl *g, uint64_t i)
{
    struct gguf_kv *kv = &g->f.kv[i];
    struct gguf_str key;
    uint64_t type;
    snprintf(r->ctx, sizeof r->ctx, "key #%llu", (unsigned long long)i);
    int rc = rd_str(r, &key, "key");
    if (rc)
        return rc;
    if (key.len == 0)
        return fail(r, EXSA_EFORMAT, "empty key at offset %llu", (unsigned long long)r->pos - 8);
    if (memchr(key.ptr, 0, key.len))
        return fail(r, EXSA_EFORMAT, "key contains a NUL byte");
    if (!(kv->key = malloc(key.len + 1)))
        return fail(r, EXSA_ENOMEM, "out of memory for a %llu-byte key",
                    (unsigned long long)key.len);
    memcpy(kv->key, key.ptr, key.len);
    kv->key[key.len] = 0;
    snprintf(r->ctx, sizeof r->ctx, "key '%.80s'", kv->key);
    uint32_t *slot = slot_find(g, false, kv->key, key.len);
    if (*slot)
        return fail(r, EXSA_EFORMAT, "duplicate key");
    *slot = (uint32_t)i + 1;
    if ((rc = rd_uint(r, 4, &type, "value type")) || (rc = check_type(r, type, "value type")))
        return rc;
    kv->type = (enum gguf_type)type;
    if (type == GGUF_TYPE_ARRAY)
        rc = rd_array(r, &kv->v.arr);
    else if (type == GGUF_TYPE_STRING)
        rc = rd_str(r, &kv->v.str, "string value");
    else
        rc = rd_scalar(r, kv->type, kv);
    if (!rc && !strcmp(kv->key, "general.alignment"))
        rc = check_alignment(r, kv, &g->f.alignment);
    return rc;
}

/* ---- tensor infos ------------------------------------------------------------------------ */

/* Shape checks of tensor t: n_dims 1..4, every ne >= 1, element count fits int64. */
static int check_shape(struct rd *r, struct gguf_tensor *t, const uint64_t *raw, uint64_t n_dims)
{
    int64_t count = 1;
    for (uint64_t d = 0; d < n_dims; d++) {
        int64_t ne = (int64_t)raw[d];
        if (ne < 0)
            return fail(r, EXSA_EFORMAT, "ne[%llu] = %lld is negative", (unsigned long long)d,
                        (long long)ne);
        if (ne == 0)
            return fail(r, EXSA_EFORMAT, "ne[%llu] is 0 (empty tensors are refused)",
                        (unsigned long long)d);
        t->ne[d] = ne;
        if (__builtin_mul_overflow(count, ne, &count))
            return fail(r, EXSA_EFORMAT, "element count overflows (ne = {%lld, %lld, %lld, %lld})",
                        (long long)raw[0], (long long)(n_dims > 1 ? raw[1] : 1),
                        (long long)(n_dims > 2 ? raw[2] : 1), (long long)(n_dims > 3 ? raw[3] : 1));
    }
    return 0;
}

/* Type checks and byte size of tensor t (known, supported, ne0 a multiple of the block). */
static int check_type_size(struct rd *r, struct gguf_tensor *t, uint64_t type)
{
    const struct dtype_info *di = type < EXSA_DTYPE_COUNT ? dtype_info((int)type) : NULL;
    if (!di)
        return fail(r, EXSA_EUNSUPPORTED, "unknown type id %llu", (unsigned long long)type);
    if (!di->supported)
        return fail(r, EXSA_EUNSUPPORTED, "type %s (id %llu) is not supported", di->name,
                    (unsigned long long)type);
    t->type = (int)type;
    if (t->ne[0] % di->block_size)
        return fail(r, EXSA_EFORMAT, "ne[0] = %lld is not a multiple of the block size %d of %s",
                    (long long)t->ne[0], di->block_size, di->name);
    uint64_t n = (uint64_t)(t->ne[0] / di->block_size);
    bool ovf = __builtin_mul_overflow(n, (uint64_t)di->type_size, &n);
    for (int d = 1; d < 4; d++)
        if (ovf || __builtin_mul_overflow(n, (uint64_t)t->ne[d], &n))
            return fail(r, EXSA_EFORMAT, "byte size overflows");
    t->nbytes = n;
    return 0;
}

/* Reads tensor info i: name (1..63 bytes, no NUL, unique), n_dims, ne, type, offset. */
static int rd_tensor(struct rd *r, struct gguf_impl *g, uint64_t i)
{
    struct gguf_tensor *t = &g->f.tensors[i];
    struct gguf_str name;
    uint64_t n_dims, raw[4], type;
    snprintf(r->ctx, sizeof r->ctx, "tensor #%llu", (unsigned long long)i);
    int rc = rd_str(r, &name, "name");
    if (rc)
        return rc;
    if (name.len == 0 || name.len >= GGUF_MAX_NAME)
        return fail(r, EXSA_EFORMAT, "name length %llu is not in 1..%d",
                    (unsigned long long)name.len, GGUF_MAX_NAME - 1);
    if (memchr(name.ptr, 0, name.len))
        return fail(r, EXSA_EFORMAT, "name contains a NUL byte");
    memcpy(t->name, name.ptr, name.len);
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name);
    uint32_t *slot = slot_find(g, true, t->name, name.len);
    if (*slot)
        return fail(r, EXSA_EFORMAT, "duplicate tensor name");
    *slot = (uint32_t)i + 1;
    if ((rc = rd_uint(r, 4, &n_dims, "n_dims")))
        return rc;
    if (n_dims < 1 || n_dims > 4)
        return fail(r, EXSA_EFORMAT, "n_dims %llu is not in 1..4", (unsigned long long)n_dims);
    t->n_dims = (int)n_dims;
    for (uint64_t d = 0; d < n_dims; d++)
        if ((rc = rd_uint(r, 8, &raw[d], "ne")))
            return rc;
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    if ((rc = check_shape(r, t, raw, n_dims)) || (rc = rd_uint(r, 4, &type, "type")) ||
        (rc = check_type_size(r, t, type)))
        return rc;
    return rd_uint(r, 8, &t->offset, "offset");
}

struct span {
    uint64_t off, n;
    const char *name;
};

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Places every tensor in the data blob: aligned, inside the file, no two overlapping. */
static int place_tensors(struct rd *r, struct gguf_file *f)
{
    uint64_t blob = f->size - f->data_offset, n = f->n_tensors;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        uint64_t end;
        snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", t->name);
        if (t->offset % f->alignment)
            return fail(r, EXSA_EFORMAT, "offset %llu is not a multiple of the alignment %u",
                        (unsigned long long)t->offset, f->alignment);
        if (__builtin_add_overflow(t->offset, t->nbytes, &end))
            return fail(r, EXSA_EFORMAT, "data [offset %llu, %llu bytes] overflows",
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        if (end > blob)
            return fail(r, EXSA_EFORMAT,
                        "data [offset %llu, %llu bytes] runs past the end of the file (%llu bytes)",
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                        (unsigned long long)f->size);
        t->data = f->base + f->data_offset + t->offset;
    }
    r->ctx[0] = 0;
    struct span *s = malloc((n ? n : 1) * sizeof *s);
    if (!s)
        return fail(r, EXSA_ENOMEM, "out of memory sorting %llu tensors", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++)
        s[i] = (struct span){f->tensors[i].offset, f->tensors[i].nbytes, f->tensors[i].name};
    qsort(s, n, sizeof *s, cmp_span);
    int rc = 0;
    for (uint64_t i = 1; i < n && !rc; i++)
        if (s[i - 1].off + s[i - 1].n > s[i].off)
            rc = fail(r, EXSA_EFORMAT,
                      "tensors '%s' [offset %llu, %llu bytes] and '%s' "
                      "[offset %llu] overlap",
                      s[i - 1].name, (unsigned long long)s[i - 1].off,
                      (unsigned long long)s[i - 1].n, s[i].name, (unsigned long long)s[i].off);
    free(s);
    return rc;
}

/* ---- open / close ------------------------------------------------------------------------ */

/* Checks a count read from the header against the bytes left (each record needs min bytes). */
static int check_count(struct rd *r, const char *what, uint64_t n, uint64_t min)
{
    uint64_t left = r->size - r->pos;
    if (n > left / min || n > MAX_COUNT)
        return fail(r, EXSA_EFORMAT,
                    "%s %llu is more than the %llu bytes left can hold (%llu bytes each)", what,
                    (unsigned long long)n, (unsigned long long)left, (unsigned long long)min);
    return 0;
}

static int rd_header(struct rd *r, struct gguf_file *f)
{
    if (r->size < HEADER_BYTES)
        return fail(r, EXSA_EFORMAT, "file is %llu bytes, too short for a GGUF header (%d bytes)",
                    (unsigned long long)r->size, HEADER_BYTES);
    uint32_t magic = (uint32_t)le(r->p, 4), version = (uint32_t)le(r->p + 4, 4);
    if (magic != 0x46554747u)
        return fail(r, EXSA_EFORMAT, "bad magic 0x%08x (expected \"GGUF\")", magic);
    if (version && !(version & 0xffff))
        return fail(r, EXSA_EUNSUPPORTED,
                    "version reads 0x%08x: a big-endian file, which is "
                    "not supported",
                    version);
    if (version != 2 && version != 3)
        return fail(r, EXSA_EUNSUPPORTED, "version %u is not supported (only 2 and 3)", version);
    f->version = version;
    f->n_tensors = le(r->p + 8, 8);
    f->n_kv = le(r->p + 16, 8);
    r->pos = HEADER_BYTES;
    int rc = check_count(r, "n_kv", f->n_kv, MIN_KV_BYTES);
    return rc ? rc : check_count(r, "n_tensors", f->n_tensors, MIN_TENSOR_BYTES);
}

static int alloc_tables(struct rd *r, struct gguf_impl *g)
{
    struct gguf_file *f = &g->f;
    g->kv_cap = table_cap(f->n_kv);
    g->t_cap = table_cap(f->n_tensors);
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    g->kv_slots = calloc(g->kv_cap, sizeof *g->kv_slots);
    g->t_slots = calloc(g->t_cap, sizeof *g->t_slots);
    if (!f->kv || !f->tensors || !g->kv_slots || !g->t_slots)
        return fail(r, EXSA_ENOMEM, "out of memory for %llu keys and %llu tensors",
                    (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors);
    return 0;
}

/* Parses everything after the header; data blob at align_up(end of infos, alignment). */
static int parse(struct rd *r, struct gguf_impl *g)
{
    struct gguf_file *f = &g->f;
    int rc = rd_header(r, f);
    if (!rc)
        rc = alloc_tables(r, g);
    for (uint64_t i = 0; i < f->n_kv && !rc; i++)
        rc = rd_kv(r, g, i);
    r->ctx[0] = 0;
    if (!rc)
        rc = check_count(r, "n_tensors", f->n_tensors, MIN_TENSOR_BYTES);
    for (uint64_t i = 0; i < f->n_tensors && !rc; i++)
        rc = rd_tensor(r, g, i);
    if (rc)
        return rc;
    r->ctx[0] = 0;
    uint64_t a = f->alignment, start = r->pos + (a - r->pos % a) % a;
    if (f->n_tensors == 0) { /* no blob needed: files without tensors may end unpadded */
        f->data_offset = start < r->size ? start : r->size;
        return 0;
    }
    if (start > r->size)
        return fail(r, EXSA_EFORMAT,
                    "tensor data would start at offset %llu, past the end of the file "
                    "(%llu bytes)",
                    (unsigned long long)start, (unsigned long long)r->size);
    f->data_offset = start;
    return place_tensors(r, f);
}

int gguf_open_mem(const void *data, size_t size, struct gguf_file **out, char *err, size_t errlen)
{
    struct rd r = {.p = data, .size = size, .err = err, .errlen = errlen};
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    struct gguf_impl *g = calloc(1, sizeof *g);
    if (!g)
        return fail(&r, EXSA_ENOMEM, "out of memory");
    g->f.base = data;
    g->f.size = size;
    g->f.alignment = GGUF_DEFAULT_ALIGNMENT;
    int rc = parse(&r, g);
    if (rc) {
        gguf_close(&g->f);
        return rc;
    }
    *out = &g->f;
    return 0;
}

static atomic_bool use_mmap = true; /* exsa_set_mmap */

void exsa_set_mmap(bool on)
{
    atomic_store(&use_mmap, on);
}

/* The size bytes of fd in a new page-aligned buffer (the alignment a mapping would give), or
 * NULL with errno set (EIO when the file got shorter while it was read). */
static void *read_whole(int fd, size_t size)
{
    void *buf = NULL;
    if ((errno = posix_memalign(&buf, 4096, size)) != 0)
        return NULL;
    for (size_t off = 0; off < size;) {
        ssize_t n = pread(fd, (char *)buf + off, size - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            errno = e;
            return NULL;
        }
        off += (size_t)n;
    }
    return buf;
}

/* Opens path for reading and checks it is a regular file long enough for a header. */
static int open_file(struct rd *r, const char *path, int *fd, struct stat *st)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return fail(r, EXSA_EIO, "cannot open %s: %s", path, strerror(errno));
    if (fstat(*fd, st)) {
        int e = errno;
        close(*fd);
        return fail(r, EXSA_EIO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st->st_mode) || st->st_size < HEADER_BYTES) {
        close(*fd);
        if (!S_ISREG(st->st_mode))
            return fail(r, EXSA_EIO, "%s is not a regular file", path);
        return fail(r, EXSA_EFORMAT, "%s is %lld bytes, too short for a GGUF header (%d bytes)",
                    path, (long long)st->st_size, HEADER_BYTES);
    }
    return 0;
}

int gguf_open_ex(const char *path, bool map, struct gguf_file **out, char *err, size_t errlen)
{
    struct rd r = {.err = err, .errlen = errlen};
    struct stat st;
    int fd;
    *out = NULL;
    int rc = open_file(&r, path, &fd, &st);
    if (rc)
        return rc;
    size_t size = (size_t)st.st_size;
    void *p = map ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : read_whole(fd, size);
    int e = errno;
    close(fd);
    if (map ? p == MAP_FAILED : !p)
        return fail(&r, e == ENOMEM ? EXSA_ENOMEM : EXSA_EIO, "cannot %s %s: %s",
                    map ? "map" : "read", path, strerror(e));
    rc = gguf_open_mem(p, size, out, err, errlen);
    if (rc) {
        if (map)
            munmap(p, size);
        else
            free(p);
        return rc;
    }
    (*out)->owns_map = map;
    (*out)->owns_copy = !map;
    return 0;
}

int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen)
{
    return gguf_open_ex(path, atomic_load(&use_mmap), out, err, errlen);
}

int gguf_release_data(struct gguf_file *f)
{
    if (!f->owns_map)
        return 0; /* a copy in memory: the file is not referenced */
    const long page = sysconf(_SC_PAGESIZE);
    const uint64_t start = (f->data_offset + (uint64_t)page - 1) / (uint64_t)page * (uint64_t)page;
    if (start >= f->size)
        return 0;
    void *p = mmap((void *)(f->base + start), f->size - start, PROT_READ,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    return p == MAP_FAILED ? EXSA_ENOMEM : 0;
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    struct gguf_impl *g = (struct gguf_impl *)f;
    for (uint64_t i = 0; f->kv && i < f->n_kv; i++) {
        free(f->kv[i].key);
        if (f->kv[i].type == GGUF_TYPE_ARRAY)
            free((void *)f->kv[i].v.arr.str);
    }
    free(f->kv);
    free(f->tensors);
    free(g->kv_slots);
    free(g->t_slots);
    if (f->owns_map)
        munmap((void *)f->base, f->size);
    if (f->owns_copy)
        free((void *)f->base);
    free(g);
}

/* ---- lookups and typed getters ----------------------------------------------------------- */

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key)
{
    const struct gguf_impl *g = (const struct gguf_impl *)f;
    uint32_t *slot = slot_find(g, false, key, strlen(key));
    return *slot ? &f->kv[*slot - 1] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
    const struct gguf_impl *g = (const struct gguf_impl *)f;
    uint32_t *slot = slot_find(g, true, name, strlen(name));
    return *slot ? &f->tensors[*slot - 1] : NULL;
}

static bool is_signed_int(enum gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static bool is_unsigned_int(enum gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

/* Finds key: 0 with *out set, or EXSA_ENOTFOUND. */
static int lookup(const struct gguf_file *f, const char *key, const struct gguf_kv **out)
{
    *out = gguf_find_kv(f, key);
    return *out ? 0 : EXSA_ENOTFOUND;
}

/* Finds key holding a value of type: 0 with *out set, EXSA_ENOTFOUND or EXSA_ETYPE. */
static int lookup_type(const struct gguf_file *f, const char *key, enum gguf_type type,
                       const struct gguf_kv **out)
{
    int rc = lookup(f, key, out);
    if (rc)
        return rc;
    return (*out)->type == type ? 0 : EXSA_ETYPE;
}

int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, &kv);
    if (rc)
        return rc;
    if (is_signed_int(kv->type)) {
        *out = kv->v.i64;
        return 0;
    }
    if (!is_unsigned_int(kv->type))
        return EXSA_ETYPE;
    if (kv->v.u64 > INT64_MAX)
        return EXSA_ERANGE; /* a UINT64 above INT64_MAX does not fit the output */
    *out = (int64_t)kv->v.u64;
    return 0;
}

int gguf_get_float(const struct gguf_file *f, const char *key, double *out)
{
    const struct gguf_kv *kv;
    int rc = lookup(f, key, &kv);
    if (rc)
        return rc;
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return EXSA_ETYPE;
    *out = kv->v.f64;
    return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
    const struct gguf_kv *kv;
    int rc = lookup_type(f, key, GGUF_TYPE_BOOL, &kv);
    if (!rc)
        *out = kv->v.u64 != 0;
    return rc;
}

int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv;
    int rc = lookup_type(f, key, GGUF_TYPE_STRING, &kv);
    if (!rc)
        *out = kv->v.str;
    return rc;
}

int gguf_get_arr(const struct gguf_file *f, const char *key, struct gguf_array *out)
{
    const struct gguf_kv *kv;
    int rc = lookup_type(f, key, GGUF_TYPE_ARRAY, &kv);
    if (!rc)
        *out = kv->v.arr;
    return rc;
}

int gguf_arr_int(const struct gguf_array *a, uint64_t i, int64_t *out)
{
    bool s = is_signed_int(a->type);
    if (!s && !is_unsigned_int(a->type))
        return EXSA_ETYPE;
    if (i >= a->n)
        return EXSA_ERANGE;
    int n = (int)scalar_size(a->type);
    uint64_t v = le((const uint8_t *)a->data + i * (uint64_t)n, n);
    if (s && n < 8 && (v >> (8 * n - 1)) & 1)
        v |= ~0ull << (8 * n); /* sign-extend */
    if (!s && v > INT64_MAX)
        return EXSA_ERANGE;
    *out = (int64_t)v;
    return 0;
}
