/*
 * bench_matmul.c: micro-benchmark of cpu_matmul on a 2048x8192 weight ({K 2048, N 8192}) of each
 * fast type: decode (n_tok 1; GB/s of weights streamed, from DRAM: the matrix is rotated over
 * copies that together exceed the caches) and prefill (n_tok 512; GFLOP/s), plus the machine's
 * streaming-read bandwidth (1 GiB, n threads) as the decode ceiling. Medians of several runs.
 * Not built by `make test`. Build and run (from the repo root, after `make BUILD=build/x`):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_matmul.c build/x/libexsa.a \
 *      -lmicrohttpd -lcjson -lpcre2-8 -lpthread -lm -o build/x/bench_matmul
 *   ./build/x/bench_matmul [threads=2] [types...]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-util.h"
#include "cpu/features.h"
#include "cpu/matmul.h"
#include "quant.h"

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

/* ---- streaming read bandwidth ---------------------------------------------------------------- */

struct stream_arg {
    const uint64_t *p;
    size_t n;
    uint64_t sum[64];
};

static void stream_fn(void *arg, int ith, int nth)
{
    struct stream_arg *s = arg;
    size_t a = s->n * ith / nth, b = s->n * (ith + 1) / nth;
    uint64_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
    for (size_t i = a; i + 4 <= b; i += 4) {
        x0 += s->p[i];
        x1 += s->p[i + 1];
        x2 += s->p[i + 2];
        x3 += s->p[i + 3];
    }
    s->sum[ith] = x0 + x1 + x2 + x3;
}

static double stream_bw(struct threadpool *tp)
{
    const size_t bytes = (size_t)1 << 30;
    struct stream_arg s = {.n = bytes / 8};
    uint64_t *p = malloc(bytes);
    memset(p, 1, bytes);
    s.p = p;
    double t[7];
    for (int r = 0; r < 7; r++) {
        double t0 = now();
        tp_run(tp, stream_fn, &s);
        t[r] = now() - t0;
    }
    free(p);
    return bytes / median(t, 7) / 1e9;
}

/* ---- matmul --------------------------------------------------------------------------------- */

static void *random_matrix(int type, int64_t K, int64_t N, size_t *size)
{
    const struct dtype_info *ti = dtype_info(type);
    *size = dtype_row_size(type, K) * (size_t)N;
    uint8_t *w = malloc(*size);
    uint32_t s = 12345;
    for (size_t i = 0; i < *size; i++)
        w[i] = (uint8_t)((s = s * 1664525u + 1013904223u) >> 24);
    /* sane scales: every 2-byte field of a block read as fp16 may be huge or NaN; set the
     * fields to 0.01 where the type keeps them (speed does not depend on the values) */
    uint16_t h = f32_to_fp16(0.01f);
    int offs[3] = {-1, -1, -1};
    switch (type) {
    case EXSA_DTYPE_Q4_0:
    case EXSA_DTYPE_Q8_0: offs[0] = 0; break;
    case EXSA_DTYPE_Q4_K:
    case EXSA_DTYPE_Q5_K: offs[0] = 0, offs[1] = 2; break;
    case EXSA_DTYPE_Q6_K: offs[0] = 208; break;
    case EXSA_DTYPE_F16:
    case EXSA_DTYPE_BF16:
    case EXSA_DTYPE_F32: memset(w, 0, *size); break;
    }
    for (size_t b = 0; b < *size / ti->type_size; b++)
        for (int i = 0; i < 3 && offs[i] >= 0; i++)
            memcpy(w + b * ti->type_size + offs[i], &h, 2);
    return w;
}

static void bench_type(struct threadpool *tp, int type, double bw)
{
    const int64_t K = 2048, N = 8192, P = 512;
    size_t size;
    int copies = 1;
    void *w0 = random_matrix(type, K, N, &size);
    while ((size_t)copies * size < ((size_t)256 << 20))
        copies++;
    struct tensor w[64];
    for (int c = 0; c < copies && c < 64; c++) {
        w[c] = (struct tensor){.name = "w", .type = type, .n_dims = 2, .ne = {K, N, 1, 1}};
        void *d = malloc(size);
        memcpy(d, w0, size);
        w[c].data = d;
        w[c].nbytes = size;
    }
    float *x = malloc(sizeof(float) * K * P), *y = malloc(sizeof(float) * N * P);
    for (int64_t i = 0; i < K * P; i++)
        x[i] = (float)((i * 7919) % 2001 - 1000) / 1000;
    double td[64], tp_[5];
    for (int r = 0; r < 3 * copies; r++) /* warm-up */
        cpu_matmul(tp, &w[r % copies], 0, x, y, 1);
    int nd = copies * 4 < 64 ? copies * 4 : 64;
    if (getenv("BENCH_PREFILL_ONLY"))
        nd = 1;
    for (int r = 0; r < nd; r++) {
        double t0 = now();
        cpu_matmul(tp, &w[r % copies], 0, x, y, 1);
        td[r] = now() - t0;
    }
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        cpu_matmul(tp, &w[0], 0, x, y, (int)P);
        tp_[r] = now() - t0;
    }
    double dec = median(td, nd), pre = median(tp_, 5);
    printf("%-5s decode %-9s %7.1f us %6.1f GB/s (%3.0f%% of stream)   prefill-512 %-9s %7.1f ms "
           "%6.1f GFLOP/s\n",
           dtype_info(type)->name, cpu_matmul_kernel_name(cpu_matmul_pick(type, 1)), dec * 1e6,
           size / dec / 1e9, 100 * size / dec / 1e9 / bw,
           cpu_matmul_kernel_name(cpu_matmul_pick(type, (int)P)), pre * 1e3,
           2.0 * K * N * P / pre / 1e9);
    fflush(stdout);
    for (int c = 0; c < copies && c < 64; c++)
        free((void *)w[c].data);
    free(w0);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    struct threadpool *tp = tp_create(nth);
    double bw = getenv("BENCH_PREFILL_ONLY") ? 1 : stream_bw(tp);
    printf("threads %d, CPU features 0x%x, streaming read %.1f GB/s\n", nth, cpu_features(), bw);
    static const char *names[] = {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16", "BF16", "F32"};
    static const int types[] = {EXSA_DTYPE_Q4_0, EXSA_DTYPE_Q4_K, EXSA_DTYPE_Q5_K, EXSA_DTYPE_Q6_K,
                                EXSA_DTYPE_Q8_0, EXSA_DTYPE_F16,  EXSA_DTYPE_BF16, EXSA_DTYPE_F32};
    for (int i = 0; i < 8; i++) {
        bool want = argc <= 2;
        for (int a = 2; a < argc; a++)
            want |= strcmp(argv[a], names[i]) == 0;
        if (want)
            bench_type(tp, types[i], bw);
    }
    tp_free(tp);
    return 0;
}
