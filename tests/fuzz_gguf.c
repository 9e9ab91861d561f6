/*
 * fuzz_gguf.c: a libFuzzer target over gguf_open_mem. Not named test_*, so `make` does not build
 * it. Every input must either open (then every string, array element and tensor byte the reader
 * hands out is read, so ASan catches a pointer outside the input) or fail with a negative code
 * and a message starting with "gguf: ". `make fuzz` builds and runs it (seeds: tests/fuzz/gguf/).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

static volatile unsigned sink;

static void touch(const struct gguf_file *f)
{
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        if (kv->type == GGUF_TYPE_STRING)
            for (uint64_t j = 0; j < kv->v.str.len; j++)
                sink += (uint8_t)kv->v.str.ptr[j];
        if (kv->type != GGUF_TYPE_ARRAY)
            continue;
        for (uint64_t j = 0; j < kv->v.arr.n; j++) {
            int64_t x;
            if (kv->v.arr.str)
                for (uint64_t k = 0; k < kv->v.arr.str[j].len; k++)
                    sink += (uint8_t)kv->v.arr.str[j].ptr[k];
            else if (gguf_arr_int(&kv->v.arr, j, &x) == 0)
                sink += (unsigned)x;
        }
        if (gguf_find_kv(f, kv->key) != kv)
            abort();
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        for (uint64_t j = 0; j < t->nbytes; j++)
            sink += ((const uint8_t *)t->data)[j];
        if (gguf_find_tensor(f, t->name) != t)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    struct gguf_file *f = NULL;
    int rc = gguf_open_mem(data, size, &f, err, sizeof err);
    if (rc == 0) {
        touch(f);
        gguf_close(f);
    } else if (rc > 0 || f || strncmp(err, "gguf: ", 6)) {
        abort();
    }
    return 0;
}
