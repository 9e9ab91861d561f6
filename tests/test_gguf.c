/*
 * test_gguf.c: the GGUF reader and writer against the fixtures, a round-trip through the writer,
 * and handcrafted malformed files. A tiny byte builder (struct bb) writes headers, KV records
 * and tensor infos exactly as the format lays them out, so each bad file breaks one rule; every
 * bad case checks the return code AND a substring of the message (and that nothing leaks or
 * crashes: run it under `make SAN=1`). Reads fixtures from fixtures_dir().
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exsa.h"
#include "gguf-write.h"
#include "gguf.h"
#include "harness.h"

/* ---- byte builder ---------------------------------------------------------------------------- */

struct bb {
    uint8_t p[8192];
    size_t n;
};

static void bb_le(struct bb *b, uint64_t v, int n)
{
    if (b->n + (size_t)n > sizeof b->p)
        abort(); /* test bug */
    for (int i = 0; i < n; i++)
        b->p[b->n++] = (uint8_t)(v >> (8 * i));
}

static void bb_u32(struct bb *b, uint32_t v)
{
    bb_le(b, v, 4);
}
static void bb_u64(struct bb *b, uint64_t v)
{
    bb_le(b, v, 8);
}

static void bb_bytes(struct bb *b, const void *p, size_t n)
{
    if (b->n + n > sizeof b->p)
        abort();
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void bb_str(struct bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_bytes(b, s, strlen(s));
}

static void bb_hdr(struct bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b->n = 0;
    bb_bytes(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(struct bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, v);
}

/* A tensor info record; ne holds n_dims values (n_dims may be out of range on purpose). */
static void bb_tensor(struct bb *b, const char *name, uint32_t n_dims, const int64_t *ne,
                      uint32_t type, uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        bb_u64(b, (uint64_t)ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* Zero padding to the alignment, then n zero bytes of tensor data. */
static void bb_data(struct bb *b, size_t align, size_t n)
{
    while (b->n % align)
        bb_le(b, 0, 1);
    while (n--)
        bb_le(b, 0, 1);
}

/* ---- checking a bad file --------------------------------------------------------------------- */

static int n_bad_cases;

/* Opens p[0..n) and checks: rc == code, no file returned, message starts with "gguf: " and
 * contains want. */
static void expect_bad_at(int line, const void *p, size_t n, int code, const char *want)
{
    char err[512] = "";
    struct gguf_file *f = (struct gguf_file *)1;
    int rc = gguf_open_mem(p, n, &f, err, sizeof err);
    n_bad_cases++;
    CHECK(rc == code, "line %d: rc %d, expected %d (%s)", line, rc, code, err);
    CHECK(f == NULL, "line %d: a file was returned", line);
    CHECK(!strncmp(err, "gguf: ", 6), "line %d: message lacks the prefix: '%s'", line, err);
    CHECK(strstr(err, want), "line %d: message '%s' lacks '%s'", line, err, want);
    if (rc == 0)
        gguf_close(f);
}
#define EXPECT_BAD(b, code, want) expect_bad_at(__LINE__, (b)->p, (b)->n, code, want)

static const int64_t NE8[1] = {8};

/* A file with one F32 tensor {8} at offset 0 after the given KV count (caller adds KVs). */
static void one_tensor(struct bb *b, const char *name, uint32_t n_dims, const int64_t *ne,
                       uint32_t type, uint64_t offset, size_t data)
{
    bb_hdr(b, 3, 1, 0);
    bb_tensor(b, name, n_dims, ne, type, offset);
    bb_data(b, 32, data);
}

/* ---- fixtures ------------------------------------------------------------------------------- */

static void open_fixture(const char *path, int *n_ok)
{
    char err[512];
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err, sizeof err);
    CHECK(rc == 0, "%s: %s", path, err);
    if (rc)
        return;
    (*n_ok)++;
    CHECK(f->version == 3 || f->version == 2, "%s: version %u", path, f->version);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        const uint8_t *d = t->data;
        CHECK(d >= f->base + f->data_offset && d + t->nbytes <= f->base + f->size,
              "%s: tensor %s outside the file", path, t->name);
        CHECK(gguf_find_tensor(f, t->name) == t, "%s: lookup of %s", path, t->name);
    }
    for (uint64_t i = 0; i < f->n_kv; i++)
        CHECK(gguf_find_kv(f, f->kv[i].key) == &f->kv[i], "%s: lookup of %s", path, f->kv[i].key);
    gguf_close(f);
}

static void test_fixtures_open(void)
{
    char path[1024];
    int n_ok = 0, n_files = 0;
    DIR *dir = opendir(fixtures_dir());
    CHECK(dir != NULL, "cannot list %s", fixtures_dir());
    if (!dir)
        return;
    for (struct dirent *e; (e = readdir(dir));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf"))
            continue;
        snprintf(path, sizeof path, "%s/%s", fixtures_dir(), e->d_name);
        n_files++;
        open_fixture(path, &n_ok);
    }
    closedir(dir);
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-gpt-2.gguf", fixtures_dir());
    n_files++;
    open_fixture(path, &n_ok);
    CHECK(n_files >= 19 && n_ok == n_files, "%d of %d fixture files opened", n_ok, n_files);
}

static bool str_eq(struct gguf_str s, const char *c)
{
    return s.len == strlen(c) && !memcmp(s.ptr, c, s.len);
}

static void test_fixture_spot_checks(void)
{
    char path[1024], err[512];
    struct gguf_file *f;
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    int rc = gguf_open(path, &f, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc)
        return;
    struct gguf_str s;
    struct gguf_array a;
    int64_t v;
    CHECK(gguf_get_str(f, "general.architecture", &s) == 0 && str_eq(s, "lfm2"), "arch");
    CHECK(gguf_get_int(f, "lfm2.embedding_length", &v) == 0 && v == 256, "dim %lld", (long long)v);
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &a) == 0 && a.type == GGUF_TYPE_STRING &&
              a.n == 1024 && a.str != NULL,
          "tokens");
    if (a.str)
        CHECK(str_eq(a.str[1], "<|startoftext|>") && str_eq(a.str[7], "<|im_end|>"), "specials");
    const struct gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    CHECK(t && t->type == EXSA_DTYPE_F32 && t->n_dims == 2 && t->ne[0] == 256 && t->ne[1] == 1024 &&
              t->ne[2] == 1 && t->nbytes == 256 * 1024 * 4,
          "token_embd.weight");
    CHECK(t && ((const uint8_t *)t->data - f->base) % 32 == 0, "token_embd aligned");
    CHECK(gguf_find_tensor(f, "no.such.tensor") == NULL, "missing tensor");
    CHECK(gguf_get_int(f, "no.such.key", &v) == EXSA_ENOTFOUND, "missing key");
    CHECK(gguf_get_int(f, "general.architecture", &v) == EXSA_ETYPE, "str as int");
    gguf_close(f);

    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-gpt-2.gguf", fixtures_dir());
    rc = gguf_open(path, &f, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc)
        return;
    CHECK(f->n_tensors == 0 && f->n_kv == 16, "gpt-2: %llu tensors, %llu kv",
          (unsigned long long)f->n_tensors, (unsigned long long)f->n_kv);
    CHECK(gguf_get_arr(f, "tokenizer.ggml.token_type", &a) == 0 && a.type == GGUF_TYPE_INT32,
          "token_type");
    gguf_close(f);
}

/* ---- writer round trip ---------------------------------------------------------------------- */

/* Adds every value type (scalars and arrays of each element type) and three tensors. */
static void fill_writer(struct gguf_writer *w, bool align64)
{
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint64_t u64 = 1ull << 40, big = UINT64_MAX;
    int64_t i64 = -(1ll << 40);
    double f64 = -2.5e300;
    if (align64)
        gguf_w_u32(w, "general.alignment", 64);
    gguf_w_val(w, "t.u8", GGUF_TYPE_UINT8, &u8);
    gguf_w_val(w, "t.i8", GGUF_TYPE_INT8, &i8);
    gguf_w_val(w, "t.u16", GGUF_TYPE_UINT16, &u16);
    gguf_w_val(w, "t.i16", GGUF_TYPE_INT16, &i16);
    gguf_w_u32(w, "t.u32", 4000000000u);
    gguf_w_i32(w, "t.i32", -2000000000);
    gguf_w_f32(w, "t.f32", 0.15625f);
    gguf_w_bool(w, "t.bool", true);
    gguf_w_str(w, "t.str", "héllo");
    gguf_w_str(w, "t.empty", "");
    gguf_w_val(w, "t.u64", GGUF_TYPE_UINT64, &u64);
    gguf_w_val(w, "t.u64big", GGUF_TYPE_UINT64, &big);
    gguf_w_val(w, "t.i64", GGUF_TYPE_INT64, &i64);
    gguf_w_val(w, "t.f64", GGUF_TYPE_FLOAT64, &f64);

    const uint8_t a_u8[] = {0, 255};
    const int8_t a_i8[] = {-128, 127};
    const uint16_t a_u16[] = {1, 65535};
    const int16_t a_i16[] = {-32768, 5};
    const uint32_t a_u32[] = {7, 4294967295u};
    const int32_t a_i32[] = {-7, 2147483647};
    const float a_f32[] = {1.5f, -0.25f};
    const bool a_bool[] = {false, true};
    const uint64_t a_u64[] = {3, 1ull << 63};
    const int64_t a_i64[] = {INT64_MIN, 9};
    const double a_f64[] = {0.1, -1e-300};
    const char *const a_str[] = {"a", "", "<|im_end|>"};
    gguf_w_arr(w, "a.u8", GGUF_TYPE_UINT8, a_u8, 2);
    gguf_w_arr(w, "a.i8", GGUF_TYPE_INT8, a_i8, 2);
    gguf_w_arr(w, "a.u16", GGUF_TYPE_UINT16, a_u16, 2);
    gguf_w_arr(w, "a.i16", GGUF_TYPE_INT16, a_i16, 2);
    gguf_w_arr(w, "a.u32", GGUF_TYPE_UINT32, a_u32, 2);
    gguf_w_arr(w, "a.i32", GGUF_TYPE_INT32, a_i32, 2);
    gguf_w_arr(w, "a.f32", GGUF_TYPE_FLOAT32, a_f32, 2);
    gguf_w_arr(w, "a.bool", GGUF_TYPE_BOOL, a_bool, 2);
    gguf_w_arr(w, "a.u64", GGUF_TYPE_UINT64, a_u64, 2);
    gguf_w_arr(w, "a.i64", GGUF_TYPE_INT64, a_i64, 2);
    gguf_w_arr(w, "a.f64", GGUF_TYPE_FLOAT64, a_f64, 2);
    gguf_w_arr_str(w, "a.str", a_str, 3);
    gguf_w_arr(w, "a.none", GGUF_TYPE_INT32, NULL, 0);

    float m[24];
    for (int i = 0; i < 24; i++)
        m[i] = (float)i - 3.5f;
    uint8_t q[2 * 2 * 18];
    for (size_t i = 0; i < sizeof q; i++)
        q[i] = (uint8_t)(i * 7);
    const uint16_t h[3] = {0x3c00, 0xc000, 0x0001};
    gguf_w_tensor(w, "m.f32", EXSA_DTYPE_F32, 2, (const int64_t[]){8, 3}, m);
    gguf_w_tensor(w, "v.f16", EXSA_DTYPE_F16, 1, (const int64_t[]){3}, h);
    gguf_w_tensor(w, "q.q4_0", EXSA_DTYPE_Q4_0, 3, (const int64_t[]){64, 2, 1}, q);
    gguf_w_tensor(w, "z.zero", EXSA_DTYPE_F32, 4, (const int64_t[]){1, 2, 3, 4}, NULL);
}

static void check_ints(const struct gguf_file *f)
{
    static const struct {
        const char *key;
        int64_t v;
    } want[] = {
        {"t.u8", 200},        {"t.i8", -100},          {"t.u16", 60000},
        {"t.i16", -30000},    {"t.u32", 4000000000ll}, {"t.i32", -2000000000},
        {"t.u64", 1ll << 40}, {"t.i64", -(1ll << 40)},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int64_t v = 0;
        CHECK(gguf_get_int(f, want[i].key, &v) == 0 && v == want[i].v, "%s = %lld", want[i].key,
              (long long)v);
    }
    int64_t v;
    CHECK(gguf_get_int(f, "t.u64big", &v) == EXSA_ERANGE, "u64 above INT64_MAX");
    CHECK(gguf_get_int(f, "t.f32", &v) == EXSA_ETYPE, "float as int");
    CHECK(gguf_get_int(f, "t.bool", &v) == EXSA_ETYPE, "bool as int");
    CHECK(gguf_find_kv(f, "t.u8")->type == GGUF_TYPE_UINT8, "u8 keeps its type");
}

static void check_scalars(const struct gguf_file *f)
{
    double d;
    bool b = false;
    struct gguf_str s;
    check_ints(f);
    CHECK(gguf_get_float(f, "t.f32", &d) == 0 && d == 0.15625, "f32 %g", d);
    CHECK(gguf_get_float(f, "t.f64", &d) == 0 && d == -2.5e300, "f64 %g", d);
    CHECK(gguf_get_float(f, "t.u8", &d) == EXSA_ETYPE, "int as float");
    CHECK(gguf_get_bool(f, "t.bool", &b) == 0 && b, "bool");
    CHECK(gguf_get_bool(f, "t.u8", &b) == EXSA_ETYPE, "int as bool");
    CHECK(gguf_get_str(f, "t.str", &s) == 0 && str_eq(s, "héllo"), "str");
    CHECK(gguf_get_str(f, "t.empty", &s) == 0 && s.len == 0, "empty str");
    CHECK(gguf_get_str(f, "t.u8", &s) == EXSA_ETYPE, "int as str");
    CHECK(gguf_get_bool(f, "nope", &b) == EXSA_ENOTFOUND, "absent");
}

static void check_int_array(const struct gguf_file *f, const char *key, enum gguf_type t,
                            int64_t v0, int64_t v1)
{
    struct gguf_array a;
    int64_t x = 0, y = 0;
    int rc = gguf_get_arr(f, key, &a);
    CHECK(rc == 0 && a.type == t && a.n == 2, "%s", key);
    if (rc)
        return;
    CHECK(gguf_arr_int(&a, 0, &x) == 0 && x == v0, "%s[0] = %lld", key, (long long)x);
    CHECK(gguf_arr_int(&a, 1, &y) == 0 && y == v1, "%s[1] = %lld", key, (long long)y);
    CHECK(gguf_arr_int(&a, 2, &x) == EXSA_ERANGE, "%s[2] out of range", key);
}

static void check_arrays(const struct gguf_file *f)
{
    struct gguf_array a;
    int64_t x;
    check_int_array(f, "a.u8", GGUF_TYPE_UINT8, 0, 255);
    check_int_array(f, "a.i8", GGUF_TYPE_INT8, -128, 127);
    check_int_array(f, "a.u16", GGUF_TYPE_UINT16, 1, 65535);
    check_int_array(f, "a.i16", GGUF_TYPE_INT16, -32768, 5);
    check_int_array(f, "a.u32", GGUF_TYPE_UINT32, 7, 4294967295ll);
    check_int_array(f, "a.i32", GGUF_TYPE_INT32, -7, 2147483647);
    check_int_array(f, "a.i64", GGUF_TYPE_INT64, INT64_MIN, 9);
    CHECK(gguf_get_arr(f, "a.u64", &a) == 0 && gguf_arr_int(&a, 0, &x) == 0 && x == 3 &&
              gguf_arr_int(&a, 1, &x) == EXSA_ERANGE,
          "u64 array");
    float fl[2];
    double db[2];
    CHECK(gguf_get_arr(f, "a.f32", &a) == 0 && a.type == GGUF_TYPE_FLOAT32 && a.n == 2 &&
              gguf_arr_int(&a, 0, &x) == EXSA_ETYPE,
          "f32 array");
    memcpy(fl, a.data, sizeof fl);
    CHECK(fl[0] == 1.5f && fl[1] == -0.25f, "f32 values");
    CHECK(gguf_get_arr(f, "a.f64", &a) == 0 && a.type == GGUF_TYPE_FLOAT64, "f64 array");
    memcpy(db, a.data, sizeof db);
    CHECK(db[0] == 0.1 && db[1] == -1e-300, "f64 values");
    CHECK(gguf_get_arr(f, "a.bool", &a) == 0 && a.type == GGUF_TYPE_BOOL && a.n == 2 &&
              ((const uint8_t *)a.data)[0] == 0 && ((const uint8_t *)a.data)[1] == 1,
          "bool array");
    CHECK(gguf_get_arr(f, "a.str", &a) == 0 && a.type == GGUF_TYPE_STRING && a.n == 3 && a.str &&
              str_eq(a.str[0], "a") && str_eq(a.str[1], "") && str_eq(a.str[2], "<|im_end|>"),
          "string array");
    CHECK(gguf_get_arr(f, "a.none", &a) == 0 && a.n == 0, "empty array");
    CHECK(gguf_get_arr(f, "t.u8", &a) == EXSA_ETYPE, "scalar as array");
}

static void check_tensors(const struct gguf_file *f, uint32_t align)
{
    const struct gguf_tensor *m = gguf_find_tensor(f, "m.f32"), *h = gguf_find_tensor(f, "v.f16");
    const struct gguf_tensor *q = gguf_find_tensor(f, "q.q4_0"), *z = gguf_find_tensor(f, "z.zero");
    CHECK(f->n_tensors == 4 && m && h && q && z, "tensors present");
    if (!m || !h || !q || !z)
        return;
    CHECK(f->alignment == align && f->data_offset % align == 0, "alignment %u", f->alignment);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        CHECK(((const uint8_t *)f->tensors[i].data - f->base) % align == 0, "tensor %llu aligned",
              (unsigned long long)i);
    CHECK(m->n_dims == 2 && m->ne[0] == 8 && m->ne[1] == 3 && m->ne[3] == 1 && m->nbytes == 96,
          "m shape");
    CHECK(m->type == EXSA_DTYPE_F32 && ((const float *)m->data)[23] == 19.5f, "m data");
    CHECK(h->nbytes == 6 && ((const uint16_t *)h->data)[1] == 0xc000, "f16 data");
    CHECK(q->type == EXSA_DTYPE_Q4_0 && q->n_dims == 3 && q->nbytes == 72 &&
              ((const uint8_t *)q->data)[71] == (uint8_t)(71 * 7),
          "q4_0 data");
    CHECK(z->n_dims == 4 && z->ne[3] == 4 && z->nbytes == 96 && ((const float *)z->data)[23] == 0,
          "zero tensor");
}

static void test_round_trip(void)
{
    for (int align64 = 0; align64 < 2; align64++) {
        struct gguf_writer *w = gguf_writer_new();
        uint8_t *buf;
        size_t size;
        char err[512];
        struct gguf_file *f;
        fill_writer(w, align64);
        CHECK(gguf_writer_to_mem(w, &buf, &size) == 0, "to_mem");
        gguf_writer_free(w);
        int rc = gguf_open_mem(buf, size, &f, err, sizeof err);
        CHECK(rc == 0, "open: %s", err);
        if (rc == 0) {
            CHECK(f->version == 3 && f->n_kv == 27u + (unsigned)align64, "n_kv %llu",
                  (unsigned long long)f->n_kv);
            CHECK(!strcmp(f->kv[align64].key, "t.u8"), "insertion order");
            check_scalars(f);
            check_arrays(f);
            check_tensors(f, align64 ? 64 : 32);
            gguf_close(f);
        }
        free(buf);
    }
}

/* gguf_writer_save streams the same bytes as gguf_writer_to_mem, and gguf_open maps them. */
static void test_save_and_open(void)
{
    const char *tmp = getenv("TMPDIR");
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/exsa-test-gguf-%d.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    struct gguf_writer *w = gguf_writer_new();
    uint8_t *mem = NULL;
    size_t size = 0;
    fill_writer(w, false);
    CHECK(gguf_writer_save(w, path) == 0, "save");
    CHECK(gguf_writer_to_mem(w, &mem, &size) == 0, "to_mem");
    CHECK(gguf_writer_save(w, "/nonexistent-dir/x.gguf") == EXSA_EIO, "save to a bad path");
    gguf_writer_free(w);
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err, sizeof err);
    CHECK(rc == 0, "open: %s", err);
    if (rc == 0) {
        CHECK(f->size == size && !memcmp(f->base, mem, size), "file == memory image");
        CHECK(f->owns_map, "owns its mapping");
        check_scalars(f);
        check_tensors(f, 32);
        gguf_close(f);
    }
    remove(path);
    free(mem);
}

static void test_writer_errors(void)
{
    struct gguf_writer *w = gguf_writer_new();
    uint8_t *mem = (uint8_t *)1;
    size_t size = 1;
    gguf_w_tensor(w, "bad", EXSA_DTYPE_Q4_0, 1, (const int64_t[]){33}, NULL);
    CHECK(gguf_writer_to_mem(w, &mem, &size) == EXSA_EINVAL && mem == NULL && size == 0,
          "ne0 not a multiple of the block size is refused");
    gguf_writer_free(w);
    w = gguf_writer_new();
    gguf_w_tensor(w, "bad", 99, 1, (const int64_t[]){32}, NULL);
    CHECK(gguf_writer_to_mem(w, &mem, &size) == EXSA_EINVAL, "unknown type is refused");
    gguf_writer_free(w);
}

/* A 65,536-entry string array and 3,000 tensors open fast; lookups work on all of them. */
static void test_large(void)
{
    enum { NV = 65536, NT = 3000 };
    static char names[NV][16];
    static const char *vocab[NV];
    struct gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < NV; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        vocab[i] = names[i];
    }
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", vocab, NV);
    for (int i = 0; i < NT; i++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.w", i);
        gguf_w_tensor(w, name, EXSA_DTYPE_F32, 1, (const int64_t[]){1}, &(float){(float)i});
    }
    uint8_t *buf;
    size_t size;
    char err[512];
    struct gguf_file *f;
    CHECK(gguf_writer_to_mem(w, &buf, &size) == 0, "to_mem");
    gguf_writer_free(w);
    int rc = gguf_open_mem(buf, size, &f, err, sizeof err);
    CHECK(rc == 0, "%s", err);
    if (rc == 0) {
        struct gguf_array a;
        CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &a) == 0 && a.n == NV &&
                  str_eq(a.str[NV - 1], "t65535"),
              "vocab");
        const struct gguf_tensor *t = gguf_find_tensor(f, "blk.2999.w");
        CHECK(t && *(const float *)t->data == 2999.0f, "last tensor");
        gguf_close(f);
    }
    free(buf);
}

/* ---- malformed files ------------------------------------------------------------------------ */

/* Every proper prefix of a good file fails cleanly (its last tensor needs no padding). */
static void test_truncated_everywhere(void)
{
    struct gguf_writer *w = gguf_writer_new();
    const char *const s[] = {"x", "yz"};
    gguf_w_str(w, "general.architecture", "lfm2");
    gguf_w_arr_str(w, "tok", s, 2);
    gguf_w_arr(w, "ids", GGUF_TYPE_INT32, (const int32_t[]){1, 2, 3}, 3);
    gguf_w_u32(w, "general.alignment", 32);
    gguf_w_tensor(w, "a", EXSA_DTYPE_F16, 1, (const int64_t[]){5}, NULL);
    gguf_w_tensor(w, "b", EXSA_DTYPE_F32, 1, (const int64_t[]){8}, NULL);
    uint8_t *buf;
    size_t size;
    CHECK(gguf_writer_to_mem(w, &buf, &size) == 0, "to_mem");
    gguf_writer_free(w);
    int bad = 0;
    for (size_t n = 0; n < size; n++) {
        char err[512] = "";
        struct gguf_file *f = NULL;
        uint8_t *copy = malloc(n ? n : 1); /* exact-size copy: ASan sees any overread */
        memcpy(copy, buf, n);
        int rc = gguf_open_mem(copy, n, &f, err, sizeof err);
        if (rc != EXSA_EFORMAT || f || strncmp(err, "gguf: ", 6)) {
            bad++;
            CHECK(0, "prefix %zu: rc %d '%s'", n, rc, err);
        }
        if (f)
            gguf_close(f);
        free(copy);
    }
    n_bad_cases++;
    CHECK(bad == 0, "%d of %zu prefixes were not refused", bad, size);
    struct gguf_file *f;
    CHECK(gguf_open_mem(buf, size, &f, NULL, 0) == 0, "the whole file opens");
    gguf_close(f);
    free(buf);
}

static void test_bad_header(void)
{
    struct bb b;
    bb_hdr(&b, 3, 0, 0);
    b.n = 10;
    EXPECT_BAD(&b, EXSA_EFORMAT, "too short for a GGUF header");
    b.n = 0;
    EXPECT_BAD(&b, EXSA_EFORMAT, "file is 0 bytes");
    bb_hdr(&b, 3, 0, 0);
    b.p[0] = 'X';
    EXPECT_BAD(&b, EXSA_EFORMAT, "bad magic");
    bb_hdr(&b, 1, 0, 0);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "version 1 is not supported");
    bb_hdr(&b, 4, 0, 0);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "version 4 is not supported");
    bb_hdr(&b, 0x03000000, 0, 0);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "big-endian");
    bb_hdr(&b, 3, 0, 1ull << 40);
    EXPECT_BAD(&b, EXSA_EFORMAT, "n_kv 1099511627776 is more than");
    bb_hdr(&b, 3, UINT64_MAX, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "n_tensors 18446744073709551615 is more than");
    /* n_tensors fits the bytes after the header but not those left after the KVs */
    bb_hdr(&b, 3, 1, 1);
    bb_kv_u32(&b, "k", 1);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "n_tensors 1 is more than the 32 bytes left");
}

static void test_bad_strings(void)
{
    struct bb b;
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 100);
    bb_bytes(&b, "abcdefgh", 8);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key #0: key at offset 32 (100 bytes) runs past the end");
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 63);
    bb_bytes(&b, "abcdefgh", 8);
    EXPECT_BAD(&b, EXSA_EFORMAT, "(9223372036854775808 bytes) runs past the end");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "s");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 20);
    bb_bytes(&b, "abc", 3);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 's': string value at offset 45 (20 bytes) runs past");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "s");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, UINT64_MAX);
    bb_bytes(&b, "abc", 3);
    EXPECT_BAD(&b, EXSA_EFORMAT, "string value at offset 45 (18446744073709551615 bytes)");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "s");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_bytes(&b, "abc", 3);
    EXPECT_BAD(&b, EXSA_EFORMAT, "string value length at offset 37 (8 bytes) runs past");
}

static void test_bad_arrays(void)
{
    struct bb b;
    bb_hdr(&b, 3, 0, 1); /* count past the end */
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT32);
    bb_u64(&b, 1000);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'arr': array of 1000 UINT32 at offset 51 runs past");
    bb_hdr(&b, 3, 0, 1); /* count * 8 overflows */
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_u64(&b, 1ull << 62);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "array of 4611686018427387904 UINT64");
    bb_hdr(&b, 3, 0, 1); /* huge string array: refused before allocating its table */
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 1ull << 60);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "array of 1152921504606846976 strings");
    bb_hdr(&b, 3, 0, 1); /* second string of a string array runs past the end */
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 9);
    bb_bytes(&b, "abc", 3);
    EXPECT_BAD(&b, EXSA_EFORMAT, "string #1 at offset");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "nested arrays are refused");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'arr': unknown array element type 99");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_u64(&b, 2);
    bb_bytes(&b, "\x01\x03", 2);
    EXPECT_BAD(&b, EXSA_EFORMAT, "bool element #1 is 3");
}

static void test_bad_kv(void)
{
    struct bb b;
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'k': unknown value type 13");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, UINT32_MAX);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "unknown value type 4294967295");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, GGUF_TYPE_UINT32);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key #0: empty key at offset 24");
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_bytes(&b, "a\0b", 3);
    bb_u32(&b, GGUF_TYPE_UINT32);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key contains a NUL byte");
    bb_hdr(&b, 3, 0, 3);
    bb_kv_u32(&b, "a.b", 1);
    bb_kv_u32(&b, "a.c", 1);
    bb_kv_u32(&b, "a.b", 2);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'a.b': duplicate key");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "flag");
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_bytes(&b, "\x02", 1);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'flag': bool value 2 is neither 0 nor 1");
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "n");
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_bytes(&b, "\x01\x02\x03", 3);
    bb_u64(&b, 0);
    b.n -= 8;
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'n': value at offset 37 (8 bytes) runs past");
}

static void test_bad_alignment(void)
{
    struct bb b;
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_u64(&b, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'general.alignment': must be UINT32, not UINT64");
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 0);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "key 'general.alignment': 0 is not a non-zero power of two");
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 48);
    bb_u64(&b, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "48 is not a non-zero power of two");
    /* alignment 64 is honoured: offset 32 is misaligned under it */
    bb_hdr(&b, 3, 1, 1);
    bb_kv_u32(&b, "general.alignment", 64);
    bb_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, 32);
    bb_data(&b, 64, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': offset 32 is not a multiple of the alignment 64");
}

static void test_bad_tensor_names(void)
{
    struct bb b;
    char long_name[65];
    memset(long_name, 'n', 64);
    long_name[64] = 0;
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, 0);
    bb_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, 32);
    bb_data(&b, 32, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': duplicate tensor name");
    one_tensor(&b, long_name, 1, NE8, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor #0: name length 64 is not in 1..63");
    long_name[63] = 0; /* 63 bytes is the longest allowed */
    one_tensor(&b, long_name, 1, NE8, EXSA_DTYPE_F32, 0, 32);
    struct gguf_file *f;
    CHECK(gguf_open_mem(b.p, b.n, &f, NULL, 0) == 0 && gguf_find_tensor(f, long_name), "63");
    gguf_close(f);
    one_tensor(&b, "", 1, NE8, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "name length 0 is not in 1..63");
    bb_hdr(&b, 3, 1, 0);
    bb_u64(&b, 3);
    bb_bytes(&b, "a\0b", 3);
    bb_u32(&b, 1);
    bb_u64(&b, 8);
    bb_u32(&b, 0);
    bb_u64(&b, 0);
    bb_data(&b, 32, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor #0: name contains a NUL byte");
}

static void test_bad_tensor_shapes(void)
{
    struct bb b;
    one_tensor(&b, "w", 0, NE8, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': n_dims 0 is not in 1..4");
    one_tensor(&b, "w", 5, (const int64_t[]){8, 1, 1, 1, 1}, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': n_dims 5 is not in 1..4");
    one_tensor(&b, "w", 2, (const int64_t[]){8, -5}, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': ne[1] = -5 is negative");
    one_tensor(&b, "w", 2, (const int64_t[]){0, 8}, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': ne[0] is 0 (empty tensors are refused)");
    one_tensor(&b, "w", 3, (const int64_t[]){1ll << 32, 1ll << 32, 2}, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': element count overflows");
    one_tensor(&b, "w", 1, (const int64_t[]){1ll << 62}, EXSA_DTYPE_F32, 0, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': byte size overflows");
    one_tensor(&b, "w", 2, (const int64_t[]){33, 2}, EXSA_DTYPE_Q4_0, 0, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT, "ne[0] = 33 is not a multiple of the block size 32 of Q4_0");
    one_tensor(&b, "w", 1, (const int64_t[]){128}, EXSA_DTYPE_Q4_K, 0, 144);
    EXPECT_BAD(&b, EXSA_EFORMAT, "ne[0] = 128 is not a multiple of the block size 256 of Q4_K");
    bb_hdr(&b, 3, 1, 0); /* truncated in the middle of ne: 4 dims, 2.9 present */
    bb_str(&b, "w");
    bb_u32(&b, 4);
    bb_data(&b, 1, 23);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': ne at offset 53 (8 bytes) runs past");
}

static void test_bad_tensor_types(void)
{
    struct bb b;
    one_tensor(&b, "w", 1, NE8, 99, 0, 32);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "tensor 'w': unknown type id 99");
    one_tensor(&b, "w", 1, NE8, 4, 0, 32);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "tensor 'w': unknown type id 4");
    one_tensor(&b, "w", 1, NE8, UINT32_MAX, 0, 32);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "unknown type id 4294967295");
    one_tensor(&b, "w", 1, (const int64_t[]){256}, 16, 0, 96);
    EXPECT_BAD(&b, EXSA_EUNSUPPORTED, "tensor 'w': type IQ2_XXS (id 16) is not supported");
}

static void test_bad_tensor_data(void)
{
    struct bb b;
    one_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, 16, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor 'w': offset 16 is not a multiple of the alignment 32");
    one_tensor(&b, "w", 1, (const int64_t[]){16}, EXSA_DTYPE_F32, 32, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT,
               "tensor 'w': data [offset 32, 64 bytes] runs past the end of the file (128 bytes)");
    one_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, UINT64_MAX - 31, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "data [offset 18446744073709551584, 32 bytes] overflows");
    one_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, 1ull << 40, 32);
    EXPECT_BAD(&b, EXSA_EFORMAT, "data [offset 1099511627776, 32 bytes] runs past the end");
    bb_hdr(&b, 3, 2, 0);
    bb_tensor(&b, "a", 1, (const int64_t[]){16}, EXSA_DTYPE_F32, 0);
    bb_tensor(&b, "b", 1, NE8, EXSA_DTYPE_F32, 32);
    bb_data(&b, 32, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensors 'a' [offset 0, 64 bytes] and 'b' [offset 32] overlap");
    bb_hdr(&b, 3, 2, 0); /* overlap found whatever the order of the infos */
    bb_tensor(&b, "a", 1, NE8, EXSA_DTYPE_F32, 32);
    bb_tensor(&b, "b", 1, NE8, EXSA_DTYPE_F32, 32);
    bb_data(&b, 32, 64);
    EXPECT_BAD(&b, EXSA_EFORMAT, "overlap");
    bb_hdr(&b, 3, 1, 0); /* infos end at 61: the blob would start at 64 > 61 */
    bb_tensor(&b, "w", 1, NE8, EXSA_DTYPE_F32, 0);
    EXPECT_BAD(&b, EXSA_EFORMAT, "tensor data would start at offset 64, past the end");
    /* a file without tensors needs no padding after its KVs (like the gpt-2 vocab fixture) */
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "k", 7);
    struct gguf_file *f;
    CHECK(gguf_open_mem(b.p, b.n, &f, NULL, 0) == 0 && f->data_offset <= f->size, "no tensors");
    gguf_close(f);
}

static void test_bad_paths(void)
{
    char err[512];
    struct gguf_file *f = (struct gguf_file *)1;
    CHECK(gguf_open("no/such/file.gguf", &f, err, sizeof err) == EXSA_EIO && !f &&
              strstr(err, "gguf: cannot open no/such/file.gguf"),
          "missing file: %s", err);
    CHECK(gguf_open(".", &f, err, sizeof err) == EXSA_EIO && strstr(err, "not a regular file"),
          "directory: %s", err);
    n_bad_cases += 2;
}

/* Reads every byte the reader hands out (ASan flags any pointer outside the buffer). */
static unsigned touch_all(const struct gguf_file *f)
{
    unsigned sum = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        if (kv->type == GGUF_TYPE_STRING)
            for (uint64_t j = 0; j < kv->v.str.len; j++)
                sum += (uint8_t)kv->v.str.ptr[j];
        if (kv->type == GGUF_TYPE_ARRAY && kv->v.arr.str)
            for (uint64_t j = 0; j < kv->v.arr.n; j++)
                for (uint64_t k = 0; k < kv->v.arr.str[j].len; k++)
                    sum += (uint8_t)kv->v.arr.str[j].ptr[k];
        int64_t x;
        if (kv->type == GGUF_TYPE_ARRAY)
            for (uint64_t j = 0; j < kv->v.arr.n; j++)
                if (gguf_arr_int(&kv->v.arr, j, &x) == 0)
                    sum += (unsigned)x;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        for (uint64_t j = 0; j < f->tensors[i].nbytes; j++)
            sum += ((const uint8_t *)f->tensors[i].data)[j];
    return sum;
}

/* 20,000 random 1-4 byte mutations of a good file: each opens cleanly or fails with a message. */
static void test_mutations(void)
{
    struct gguf_writer *w = gguf_writer_new();
    uint8_t *good, *copy;
    size_t size;
    fill_writer(w, false);
    CHECK(gguf_writer_to_mem(w, &good, &size) == 0, "to_mem");
    gguf_writer_free(w);
    copy = malloc(size);
    uint64_t seed = 12345;
    int n_ok = 0, n_bad_msg = 0;
    volatile unsigned sink = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(copy, good, size);
        int k = 1 + it % 4;
        for (int j = 0; j < k; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(seed >> 33) % (it % 2 ? size : 640); /* mostly the metadata */
            copy[at] = (uint8_t)(seed >> 20);
        }
        char err[256] = "";
        struct gguf_file *f = NULL;
        size_t n = it % 8 ? size : (size_t)(seed >> 40) % size; /* sometimes truncated too */
        int rc = gguf_open_mem(copy, n, &f, err, sizeof err);
        if (rc == 0) {
            n_ok++;
            sink += touch_all(f);
            gguf_close(f);
        } else if (strncmp(err, "gguf: ", 6) || rc >= 0) {
            n_bad_msg++;
        }
    }
    (void)sink;
    CHECK(n_bad_msg == 0, "%d refusals without a proper message", n_bad_msg);
    fprintf(stderr, "  mutations: %d of 20000 still valid\n", n_ok);
    free(copy);
    free(good);
}

/* gguf_open_ex(map = false) reads the file into memory: the same tables and bytes as the
 * mapping, page-aligned, and the file may be truncated afterwards (--no-mmap). */
static void test_read_into_memory(void)
{
    char path[1024], tmp[] = "/tmp/exsa-test-gguf-XXXXXX", err[256];
    snprintf(path, sizeof path, "%s/lfm2-tiny-Q4_K_M.gguf", fixtures_dir());
    size_t size;
    char *bytes = read_whole_file(path, &size);
    int fd = mkstemp(tmp);
    CHECK(bytes && fd >= 0 && write(fd, bytes, size) == (ssize_t)size, "copy %s", path);
    struct gguf_file *mapped = NULL, *copy = NULL;
    CHECK(gguf_open_ex(tmp, true, &mapped, err, sizeof err) == 0, "map: %s", err);
    CHECK(gguf_open_ex(tmp, false, &copy, err, sizeof err) == 0, "read: %s", err);
    if (ftruncate(fd, 10) != 0) /* the copy no longer depends on the file */
        CHECK(0, "ftruncate");
    for (uint64_t i = 0; mapped && copy && i < copy->n_tensors; i++) {
        const struct gguf_tensor *a = &mapped->tensors[i], *b = &copy->tensors[i];
        CHECK(!strcmp(a->name, b->name) && a->nbytes == b->nbytes && a->data != b->data,
              "tensor %llu", (unsigned long long)i);
        CHECK(!memcmp(bytes + (a->offset + mapped->data_offset), b->data, b->nbytes), "bytes of %s",
              b->name);
    }
    CHECK(copy && copy->owns_copy && !copy->owns_map && ((uintptr_t)copy->base & 4095) == 0 &&
              mapped && copy->n_tensors == mapped->n_tensors && copy->n_kv == mapped->n_kv,
          "copy tables");
    gguf_close(mapped); /* the mapping is not touched after the truncation */
    gguf_close(copy);
    CHECK(gguf_open_ex(tmp, false, &copy, err, sizeof err) == EXSA_EFORMAT && !copy &&
              strstr(err, "too short"),
          "the truncated file: %s", err);
    close(fd);
    unlink(tmp);
    free(bytes);
}

static void test_case_count(void)
{
    CHECK(n_bad_cases >= 40, "only %d malformed-file cases", n_bad_cases);
    fprintf(stderr, "  %d malformed-file cases\n", n_bad_cases);
}

int main(void)
{
    RUN(test_fixtures_open);
    RUN(test_fixture_spot_checks);
    RUN(test_round_trip);
    RUN(test_save_and_open);
    RUN(test_writer_errors);
    RUN(test_large);
    RUN(test_truncated_everywhere);
    RUN(test_bad_header);
    RUN(test_bad_strings);
    RUN(test_bad_arrays);
    RUN(test_bad_kv);
    RUN(test_bad_alignment);
    RUN(test_bad_tensor_names);
    RUN(test_bad_tensor_shapes);
    RUN(test_bad_tensor_types);
    RUN(test_bad_tensor_data);
    RUN(test_bad_paths);
    RUN(test_mutations);
    RUN(test_read_into_memory);
    RUN(test_case_count);
    TEST_END();
}
