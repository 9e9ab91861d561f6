/*
 * bench_pcache.c: what a prompt-cache hit costs against computing the prefix: prefills n
 * tokens of a model (chunks of 512, fast CPU backend), records them in a pcache (K/V rows out to
 * host memory, conv snapshot), then restores them into a new sequence (rows back into the
 * pool). Prints the three times, the bytes moved and the restore's share of the prefill.
 * Medians of `reps` restores. Not built by `make test`. Build and run (repo root, after make):
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Iinclude -Isrc bench/bench_pcache.c build/cpu/libexsa.a \
 *      -lmicrohttpd -lcjson -lpcre2-8 -lpthread -lm -o build/cpu/bench_pcache
 *   ./build/cpu/bench_pcache model.gguf [n_tokens=2048] [threads=2] [reps=5]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-util.h"
#include "engine.h"
#include "pcache.h"

/* Prefills toks[0..n) into seq in chunks of 512. */
static int prefill(struct exsa_engine *e, int seq, const int32_t *toks, int n, float *logits)
{
    static int32_t pos[512], sq[512];
    for (int off = 0; off < n; off += 512) {
        int m = n - off < 512 ? n - off : 512;
        for (int i = 0; i < m; i++)
            pos[i] = off + i, sq[i] = seq;
        struct exsa_batch b = {m, toks + off, pos, sq, NULL, NULL};
        int rc = exsa_decode(e, &b, logits);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_pcache model.gguf [n_tokens] [threads] [reps]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 2048, th = argc > 3 ? atoi(argv[3]) : 2;
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    char err[512];
    struct exsa_model *m = NULL;
    struct exsa_engine *e = NULL;
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.n_threads = th, p.n_ctx = n + 1, p.n_seq_max = 2, p.n_batch = 512;
    if (exsa_model_load(argv[1], &m, err, sizeof err) < 0 ||
        exsa_engine_create(m, &p, &e, err, sizeof err) < 0) {
        fprintf(stderr, "bench_pcache: %s\n", err);
        return 1;
    }
    const int vocab = exsa_model_info(m)->vocab_size;
    int32_t *toks = malloc(sizeof(int32_t) * n);
    float *logits = malloc(sizeof(float) * vocab);
    for (int i = 0; i < n; i++)
        toks[i] = (int32_t)((i + 1) * 7919u % (unsigned)(vocab - 16)) + 16;
    struct pcache *pc = pcache_new(e, (size_t)8 << 30);
    int seq = exsa_seq_new(e);
    double t0 = now();
    if (!toks || !logits || !pc || prefill(e, seq, toks, n, logits) < 0) {
        fprintf(stderr, "bench_pcache: prefill failed\n");
        return 1;
    }
    double t_prefill = now() - t0;
    struct exsa_snapshot *s = NULL;
    t0 = now();
    exsa_seq_snapshot(e, seq, &s);
    int rc = pcache_insert(pc, seq, toks, n, &s, 1);
    double t_insert = now() - t0, *t_restore = malloc(sizeof(double) * reps);
    exsa_seq_free(e, seq);
    for (int r = 0; rc == 0 && r < reps; r++) {
        seq = exsa_seq_new(e);
        t0 = now();
        int got = pcache_restore(pc, seq, toks, n);
        t_restore[r] = now() - t0;
        if (got != n)
            rc = -1;
        exsa_seq_free(e, seq);
    }
    if (rc < 0) {
        fprintf(stderr, "bench_pcache: insert or restore failed\n");
        return 1;
    }
    qsort(t_restore, reps, sizeof(double), cmp_d);
    struct pcache_stats st;
    pcache_get_stats(pc, &st);
    double mb = (double)kv_row_bytes(engine_kv(e)) * n / 1e6, tr = t_restore[reps / 2];
    printf("%s: %d tokens, %d threads: prefill %.3f s (%.1f tok/s); insert %.1f ms; restore "
           "%.1f ms (median of %d; %.1f MB of K/V rows, %.2f GB/s) = %.2f%% of the prefill; "
           "cache holds %.1f MB\n",
           argv[1], n, th, t_prefill, n / t_prefill, t_insert * 1e3, tr * 1e3, reps, mb,
           mb / 1e3 / tr, 100 * tr / t_prefill, st.bytes / 1e6);
    pcache_free(pc);
    exsa_engine_free(e);
    exsa_model_free(m);
    free(toks), free(logits), free(t_restore);
    return 0;
}
