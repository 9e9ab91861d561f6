/*
 * gguf.h: a validated GGUF reader (versions 2 and 3) over a read-only mapping or a copy.
 *
 * gguf_open() maps the file (or, after exsa_set_mmap(false), reads it into memory) and checks
 * every count, length, offset and size against it before use; after it succeeds every pointer
 * it hands out lies inside the mapping and every tensor's bytes lie inside the data blob. Keys
 * and tensor names are unique. The struct owns the mapping or copy (or borrows caller memory
 * with gguf_open_mem) and its tables; everything returned points into it and lives until
 * gguf_close(). Called by model.c, tokenizer.c, tools and tests.
 */
#ifndef EXSA_GGUF_H
#define EXSA_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

#define GGUF_MAX_NAME 64 /* tensor names are shorter than this (llama.cpp's rule) */
#define GGUF_DEFAULT_ALIGNMENT 32

struct gguf_str {
    const char *ptr; /* into the file: NOT NUL-terminated */
    uint64_t len;
};

struct gguf_array {
    enum gguf_type type; /* element type, never ARRAY */
    uint64_t n;
    const void *data;           /* first element in the file (numeric types) */
    const struct gguf_str *str; /* n entries when type == STRING, else NULL */
};

struct gguf_kv {
    char *key; /* NUL-terminated copy */
    enum gguf_type type;
    union {
        uint64_t u64; /* every unsigned integer type and bool, widened */
        int64_t i64;  /* every signed integer type, widened */
        double f64;   /* FLOAT32 and FLOAT64, widened */
        struct gguf_str str;
        struct gguf_array arr;
    } v;
};

struct gguf_tensor {
    char name[GGUF_MAX_NAME]; /* NUL-terminated */
    int n_dims;
    int64_t ne[4];   /* missing dims are 1 */
    int type;        /* ggml type id (enum exsa_dtype); checked to be one quant.h supports */
    uint64_t offset; /* relative to the data blob */
    uint64_t nbytes;
    const void *data; /* inside the mapping */
};

struct gguf_file {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    struct gguf_kv *kv;
    struct gguf_tensor *tensors;
    uint32_t alignment;
    uint64_t data_offset; /* file offset of the tensor data blob */
    const uint8_t *base;
    uint64_t size;
    bool owns_map;  /* base is a mapping of the file */
    bool owns_copy; /* base is a malloc'd copy of the file */
};

/* Opens and validates path, mapped unless exsa_set_mmap(false) was called. On error returns
 * EXSA_EIO/EXSA_EFORMAT/EXSA_ENOMEM/EXSA_EUNSUPPORTED and writes a sentence naming the key,
 * tensor or offset into err. */
int gguf_open(const char *path, struct gguf_file **out, char *err, size_t errlen);
/* The same with the choice made here: map true maps the file (pages are read when touched; a
 * file truncated on disk then faults with SIGBUS), false reads it whole into memory (the file
 * may change or go afterwards). */
int gguf_open_ex(const char *path, bool map, struct gguf_file **out, char *err, size_t errlen);
/* Same over caller memory, which must outlive the result (tests, fuzzing). */
int gguf_open_mem(const void *data, size_t size, struct gguf_file **out, char *err, size_t errlen);
void gguf_close(struct gguf_file *f);
/* The tensor data (from the first whole page past the header) no longer references the file:
 * it reads as zeros from now on, and a file changed on disk cannot fault it. For a mapped file
 * whose weights all live elsewhere (on a GPU); a no-op for a copy in memory. */
int gguf_release_data(struct gguf_file *f);

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);
const char *gguf_type_name(enum gguf_type t);

/* Typed getters: 0, EXSA_ENOTFOUND when the key is absent, EXSA_ETYPE when its type does not fit.
 * gguf_get_int accepts every integer type (converters differ in widths); gguf_get_float accepts
 * FLOAT32 and FLOAT64; gguf_get_bool accepts BOOL only. */
int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out);
int gguf_get_float(const struct gguf_file *f, const char *key, double *out);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
int gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out);
int gguf_get_arr(const struct gguf_file *f, const char *key, struct gguf_array *out);
/* Element i of an integer array (any integer element type), widened; EXSA_ETYPE otherwise. */
int gguf_arr_int(const struct gguf_array *a, uint64_t i, int64_t *out);

/* ---- writer (tests, `exsa synth`, the demo model) ------------------------------------------- */

struct gguf_writer;
struct gguf_writer *gguf_writer_new(void);
void gguf_writer_free(struct gguf_writer *w);
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t v);
void gguf_w_f32(struct gguf_writer *w, const char *key, float v);
void gguf_w_bool(struct gguf_writer *w, const char *key, bool v);
void gguf_w_str(struct gguf_writer *w, const char *key, const char *v);
/* Arrays: elements copied; type is the element type (no nested arrays). */
void gguf_w_arr(struct gguf_writer *w, const char *key, enum gguf_type type, const void *data,
                uint64_t n);
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* A tensor: data of the size its type and shape imply is copied (NULL: zero-filled). */
void gguf_w_tensor(struct gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                   const void *data);
/* Writes the file (version 3, alignment 32). Returns 0 or EXSA_EIO/EXSA_ENOMEM. */
int gguf_writer_save(struct gguf_writer *w, const char *path);
/* Or into memory: *out is malloc'd, caller frees. */
int gguf_writer_to_mem(struct gguf_writer *w, uint8_t **out, size_t *size);

#endif
