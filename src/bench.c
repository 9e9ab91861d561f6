/*
 * bench.c: the `exsa bench` driver (see bench.h).
 *
 * One run: read the GGUF's tensor table for the bytes a decode step streams, measure DRAM read
 * bandwidth (threads each stream one contiguous slice of a 1 GiB buffer, best of 3 passes), load
 * the model, create one engine with a single sequence, then for each test a warm-up and `reps`
 * timed repetitions, each on a fresh sequence. pp feeds n_prompt random ids in chunks of n_batch
 * (only each chunk's last entry asks for logits, as llama-bench does); tg feeds one untimed token
 * then times n_gen single-token steps, or with n_par > 1 steps of one token for each of n_par
 * sequences (every entry asks for logits, as a server's decode step does). Entries carry their
 * job lengths (exsa_batch.job_len) as the server's do, so the kernels are the server's. Results
 * print as llama-bench's markdown table or JSON.
 */
#include "bench.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "gguf.h"
#include "kvcache.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- what a decode step reads ---------------------------------------------------------------- */

static const char *ftype_name(int64_t ft)
{
    switch (ft) {
    case 0: return "all F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K - Medium";
    case 12: return "Q3_K - Medium";
    case 14: return "Q4_K - Small";
    case 15: return "Q4_K - Medium";
    case 16: return "Q5_K - Small";
    case 17: return "Q5_K - Medium";
    case 18: return "Q6_K";
    case 25: return "IQ4_NL - 4.5 bpw";
    case 30: return "IQ4_XS - 4.25 bpw";
    case 32: return "BF16";
    default: return "?";
    }
}

static void size_label(uint64_t n, char *buf, size_t len)
{
    if (n >= 1000000000ull)
        snprintf(buf, len, "%.1fB", (double)n / 1e9);
    else
        snprintf(buf, len, "%.0fM", (double)n / 1e6);
}

static int64_t arch_int(const struct gguf_file *f, const char *arch, const char *key)
{
    char full[128];
    int64_t v = 0;
    snprintf(full, sizeof full, "%s.%s", arch, key);
    return gguf_get_int(f, full, &v) == 0 ? v : 0;
}

int bench_model_bytes(const char *path, struct bench_model_bytes *out, char *err, size_t errlen)
{
    struct gguf_file *f;
    int rc = gguf_open(path, &f, err, errlen);
    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    struct gguf_str s = {"?", 1};
    gguf_get_str(f, "general.architecture", &s);
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(s.len < 31 ? s.len : 31), s.ptr);
    int64_t n_exp = arch_int(f, arch, "expert_count"),
            n_used = arch_int(f, arch, "expert_used_count");
    bool tied = gguf_find_tensor(f, "output.weight") == NULL;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        uint64_t read = t->nbytes;
        if (!strcmp(t->name, "token_embd.weight") && !tied && t->ne[1] > 0)
            read = t->nbytes / (uint64_t)t->ne[1]; /* only the token's row */
        else if (strstr(t->name, "_exps.") && n_exp > 0 && n_used > 0)
            read = t->nbytes / (uint64_t)n_exp * (uint64_t)n_used;
        out->file_weight_bytes += t->nbytes;
        out->token_bytes += read;
        out->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    int64_t ft = -1;
    gguf_get_int(f, "general.file_type", &ft);
    char label[16];
    size_label(out->n_params, label, sizeof label);
    snprintf(out->type_name, sizeof out->type_name, "%s %s %s", arch, label, ftype_name(ft));
    gguf_close(f);
    return 0;
}

/* ---- DRAM bandwidth -------------------------------------------------------------------------- */

struct bw_slice {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
};

/* Reads a slice as fast as this core can: 64-byte vector loads, software prefetch ahead (as the
 * decode kernels do), so the ceiling is not set by a slower read loop than the engine's. */
__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint64_t *p, size_t n)
{
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch((const char *)(p + i) + 8192, _MM_HINT_T1);
        _mm_prefetch((const char *)(p + i) + 8192 + 128, _MM_HINT_T1);
        a = _mm512_or_si512(a, _mm512_load_si512(p + i));
        b = _mm512_or_si512(b, _mm512_load_si512(p + i + 8));
        c = _mm512_or_si512(c, _mm512_load_si512(p + i + 16));
        d = _mm512_or_si512(d, _mm512_load_si512(p + i + 24));
    }
    uint64_t r = (uint64_t)_mm512_reduce_or_epi64(
        _mm512_or_si512(_mm512_or_si512(a, b), _mm512_or_si512(c, d)));
    for (; i < n; i++)
        r |= p[i];
    return r;
}

static void *bw_read(void *arg)
{
    struct bw_slice *s = arg;
    if (__builtin_cpu_supports("avx512f")) {
        s->sum = read_avx512(s->p, s->n);
        return NULL;
    }
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= s->n; i += 4) /* independent sums: the loads are the limit */
        a += s->p[i], b += s->p[i + 1], c += s->p[i + 2], d += s->p[i + 3];
    s->sum = a ^ b ^ c ^ d;
    return NULL;
}

double bench_mem_bandwidth(int n_threads, size_t bytes, int passes)
{
    if (n_threads < 1)
        n_threads = 1;
    size_t n = bytes / sizeof(uint64_t);
    uint64_t *buf = aligned_alloc(64, n * sizeof(uint64_t));
    struct bw_slice *sl = calloc((size_t)n_threads, sizeof *sl);
    pthread_t *th = calloc((size_t)n_threads, sizeof *th);
    bool *started = calloc((size_t)n_threads, sizeof *started);
    if (!buf || !sl || !th || !started) {
        free(buf), free(sl), free(th), free(started);
        return -1;
    }
    for (size_t i = 0; i < n; i++) /* touch every page so reads hit DRAM, not the zero page */
        buf[i] = i * 0x9E3779B97F4A7C15ull;
    double best = 0;
    size_t per = n / (size_t)n_threads / 32 * 32; /* 256-byte slices: aligned vector loads */
    for (int pass = 0; pass < passes; pass++) {
        double t0 = now_s();
        for (int t = 0; t < n_threads; t++)
            sl[t] = (struct bw_slice){buf + (size_t)t * per, per, 0};
        for (int t = 1; t < n_threads; t++)
            started[t] = pthread_create(&th[t], NULL, bw_read, &sl[t]) == 0;
        bw_read(&sl[0]);
        for (int t = 1; t < n_threads; t++) {
            if (started[t])
                pthread_join(th[t], NULL);
            else
                bw_read(&sl[t]); /* no thread: read it here (slower, still correct) */
        }
        double gbs = (double)(per * (size_t)n_threads * sizeof(uint64_t)) / (now_s() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
    free(buf), free(sl), free(th), free(started);
    return best;
}

/* ---- the tests ------------------------------------------------------------------------------- */

struct test_result {
    int n_prompt, n_gen;
    int n_par; /* sequences decoding together (tg) */
    int reps;
    double *samples; /* tokens/s of each rep */
    double avg, stddev;
};

/* Feeds n random tokens to a fresh sequence from position 0, in chunks of n_batch (pp) or one
 * by one with the first step untimed (tg); frees the sequence. Each entry carries its job
 * length as the server gives it (the depth, the prompt, or 1 for a generated token), so the
 * kernels are the server's. Returns the seconds spent in the timed exsa_decode calls, or < 0 on
 * error (message in err). */
static double run_seq(struct exsa_engine *e, int depth, int n, int n_batch, bool tg, int vocab,
                      uint64_t *rng, int32_t *tok, int32_t *pos, int32_t *seq, int32_t *job,
                      float *logits, char *err, size_t errlen)
{
    int id = exsa_seq_new(e);
    if (id < 0) {
        snprintf(err, errlen, "cannot create a sequence (%s)", exsa_strerror(id));
        return -1;
    }
    double spent = 0;
    int done = 0, rc = 0;
    n += depth;
    while (done < n && rc == 0) {
        const bool timed_part = done >= depth;
        int m = tg && timed_part ? 1 : (n - done < n_batch ? n - done : n_batch);
        if (!timed_part && done + m > depth)
            m = depth - done; /* the depth is filled exactly, untimed */
        for (int i = 0; i < m; i++) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            tok[i] = (int32_t)((*rng >> 33) % (uint64_t)vocab);
            pos[i] = done + i, seq[i] = id;
            job[i] = !timed_part ? depth : tg ? 1 : n - depth;
        }
        struct exsa_batch b = {m, tok, pos, seq, NULL, job};
        double t0 = now_s();
        rc = exsa_decode(e, &b, logits);
        if (timed_part && (!tg || done > depth)) /* tg: the first token is not timed */
            spent += now_s() - t0;
        done += m;
    }
    exsa_seq_free(e, id);
    if (rc) {
        snprintf(err, errlen, "exsa_decode failed at position %d (%s)", done, exsa_strerror(rc));
        return -1;
    }
    return spent;
}

/* The tg test with n_par sequences: each fed its depth and one token untimed, then n_gen timed
 * steps of one token per sequence in one batch. Returns the seconds of the timed steps, or < 0
 * on error (message in err). Buffers: n_par entries, n_par rows of logits. */
static double run_par(struct exsa_engine *e, int depth, int n_gen, int n_par, int n_batch,
                      int vocab, uint64_t *rng, int32_t *tok, int32_t *pos, int32_t *seq,
                      int32_t *job, float *logits, char *err, size_t errlen)
{
    int ids[n_par], rc = 0, made = 0;
    for (; made < n_par && rc == 0; made++)
        if ((ids[made] = exsa_seq_new(e)) < 0)
            rc = ids[made];
    double spent = 0;
    /* the depth of each sequence in chunks of n_batch, then the first token of all, untimed */
    for (int s = 0; s < n_par && rc == 0; s++)
        for (int done = 0; done < depth && rc == 0;) {
            int m = depth - done < n_batch ? depth - done : n_batch;
            for (int i = 0; i < m; i++) {
                *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
                tok[i] = (int32_t)((*rng >> 33) % (uint64_t)vocab);
                pos[i] = done + i, seq[i] = ids[s], job[i] = depth;
            }
            struct exsa_batch b = {m, tok, pos, seq, NULL, job};
            rc = exsa_decode(e, &b, logits);
            done += m;
        }
    uint8_t want[n_par];
    memset(want, 1, sizeof want);
    for (int step = 0; step <= n_gen && rc == 0; step++) {
        for (int s = 0; s < n_par; s++) {
            *rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
            tok[s] = (int32_t)((*rng >> 33) % (uint64_t)vocab);
            pos[s] = depth + step, seq[s] = ids[s], job[s] = 1;
        }
        struct exsa_batch b = {n_par, tok, pos, seq, want, job};
        double t0 = now_s();
        rc = exsa_decode(e, &b, logits);
        if (step > 0) /* the first step is not timed */
            spent += now_s() - t0;
    }
    for (int s = 0; s < made; s++)
        if (ids[s] >= 0)
            exsa_seq_free(e, ids[s]);
    if (rc) {
        snprintf(err, errlen, "%d sequences: %s", n_par, exsa_strerror(rc));
        return -1;
    }
    return spent;
}

static void stats(struct test_result *r)
{
    double sum = 0, sq = 0;
    for (int i = 0; i < r->reps; i++)
        sum += r->samples[i];
    r->avg = sum / r->reps;
    for (int i = 0; i < r->reps; i++)
        sq += (r->samples[i] - r->avg) * (r->samples[i] - r->avg);
    r->stddev = r->reps > 1 ? sqrt(sq / (r->reps - 1)) : 0;
}

/* One timed run of the test (warm-up too): its seconds, or < 0 on error. */
static double run_once(struct exsa_engine *e, const struct bench_params *p, int n, int nb, bool tg,
                       int vocab, uint64_t *rng, int32_t *buf, float *logits, char *err,
                       size_t errlen)
{
    int32_t *tok = buf, *pos = buf + nb, *seq = buf + 2 * nb, *job = buf + 3 * nb;
    if (tg && p->n_par > 1)
        return run_par(e, p->depth, n - 1, p->n_par, nb, vocab, rng, tok, pos, seq, job, logits,
                       err, errlen);
    return run_seq(e, p->depth, n, nb, tg, vocab, rng, tok, pos, seq, job, logits, err, errlen);
}

/* One test: a warm-up, then reps timed runs. pp: n_prompt tokens; tg: 1 + n_gen tokens (per
 * sequence). */
static int run_test(struct exsa_engine *e, const struct bench_params *p, int vocab, bool tg,
                    struct test_result *r, char *err, size_t errlen)
{
    int n = tg ? 1 + p->n_gen : p->n_prompt, nb = p->n_batch > 0 ? p->n_batch : 512;
    const int par = tg && p->n_par > 1 ? p->n_par : 1;
    int32_t *buf = malloc(4 * (size_t)nb * sizeof *buf);
    float *logits = malloc((size_t)vocab * (size_t)par * sizeof *logits);
    r->samples = calloc((size_t)p->reps, sizeof *r->samples);
    r->n_prompt = tg ? 0 : p->n_prompt, r->n_gen = tg ? p->n_gen : 0, r->reps = p->reps;
    r->n_par = par;
    if (!buf || !logits || !r->samples) {
        free(buf), free(logits);
        snprintf(err, errlen, "out of memory");
        return EXSA_ENOMEM;
    }
    uint64_t rng = 42;
    int rc = 0;
    int warm = tg ? (n < 17 ? n : 17) : n; /* tg warm-up: 16 steps are enough */
    if (run_once(e, p, warm, nb, tg, vocab, &rng, buf, logits, err, errlen) < 0)
        rc = EXSA_EINVAL;
    for (int i = 0; i < p->reps && rc == 0; i++) {
        double t = run_once(e, p, n, nb, tg, vocab, &rng, buf, logits, err, errlen);
        if (t < 0)
            rc = EXSA_EINVAL;
        else
            r->samples[i] = (double)par * (tg ? p->n_gen : p->n_prompt) / (t > 0 ? t : 1e-9);
        fprintf(stderr, "\r%s%d rep %d/%d", tg ? "tg" : "pp", tg ? p->n_gen : p->n_prompt, i + 1,
                p->reps);
    }
    fprintf(stderr, "\n");
    free(buf), free(logits);
    if (rc == 0)
        stats(r);
    return rc;
}

/* ---- output ---------------------------------------------------------------------------------- */

struct run_info {
    const struct bench_params *p;
    struct bench_model_bytes mb;
    const char *backend;
    int n_threads, n_gpu; /* n_gpu: layers on the GPU */
    double bw_gbs;        /* 0: unknown */
};

static double ceiling_ts(const struct run_info *ri)
{
    return ri->bw_gbs > 0 && ri->mb.token_bytes ? ri->bw_gbs * 1e9 / (double)ri->mb.token_bytes : 0;
}

static void print_table_head(FILE *out, const struct run_info *ri)
{
    if (ri->bw_gbs > 0)
        fprintf(out,
                "decode reads %.1f MB of weights per token; memory bandwidth %.1f GB/s (%s)"
                "; ceiling %.1f tokens/s\n\n",
                (double)ri->mb.token_bytes / 1e6, ri->bw_gbs,
                ri->p->bandwidth_gbs > 0 ? "given" : "measured", ceiling_ts(ri));
    fprintf(out, "| %-30s | %10s | %10s | %-8s | %7s | %13s | %20s | %11s | %9s |\n", "model",
            "size", "params", "backend", "threads", "test", "t/s", "ceiling t/s", "% ceiling");
    fprintf(out, "| ------------------------------ | ---------: | ---------: | -------- | ------: "
                 "| ------------: | -------------------: | ----------: | --------: |\n");
}

static void print_table_row(FILE *out, const struct run_info *ri, const struct test_result *r)
{
    char size[32], params[32], test[32], ts[48], ceil[32] = "-", frac[32] = "-";
    double gib = (double)ri->mb.file_weight_bytes / (1024.0 * 1024 * 1024);
    if (gib < 1)
        snprintf(size, sizeof size, "%.2f MiB", gib * 1024);
    else
        snprintf(size, sizeof size, "%.2f GiB", gib);
    snprintf(params, sizeof params, "%.2f %s",
             ri->mb.n_params >= 1000000000ull ? (double)ri->mb.n_params / 1e9
                                              : (double)ri->mb.n_params / 1e6,
             ri->mb.n_params >= 1000000000ull ? "B" : "M");
    int tl =
        snprintf(test, sizeof test, r->n_gen ? "tg%d" : "pp%d", r->n_gen ? r->n_gen : r->n_prompt);
    if (r->n_par > 1)
        tl += snprintf(test + tl, sizeof test - (size_t)tl, " x%d", r->n_par);
    if (ri->p->depth > 0)
        snprintf(test + tl, sizeof test - (size_t)tl, " @ d%d", ri->p->depth);
    snprintf(ts, sizeof ts, "%.2f ± %.2f", r->avg, r->stddev);
    double c = ceiling_ts(ri) * r->n_par; /* a step of n_par sequences reads the weights once */
    if (r->n_gen && c > 0) {              /* the bandwidth ceiling bounds decode only */
        snprintf(ceil, sizeof ceil, "%.2f", c);
        snprintf(frac, sizeof frac, "%.1f%%", 100.0 * r->avg / c);
    }
    /* "±" is 2 bytes: widen the field by one so the columns line up */
    fprintf(out, "| %-30.30s | %10s | %10s | %-8s | %7d | %13s | %21s | %11s | %9s |\n",
            ri->mb.type_name, size, params, ri->backend, ri->n_threads, test, ts, ceil, frac);
}

static void print_json(FILE *out, const struct run_info *ri, const struct test_result *r, int n)
{
    fprintf(out, "[\n");
    for (int i = 0; i < n; i++) {
        const char *slash = strrchr(ri->p->model_path, '/');
        double c = r[i].n_gen ? ceiling_ts(ri) * r[i].n_par : 0;
        fprintf(out, "  {\"model_filename\": \"");
        for (const char *s = slash ? slash + 1 : ri->p->model_path; *s; s++)
            fprintf(out,
                    *s == '"' || *s == '\\'  ? "\\%c"
                    : (unsigned char)*s < 32 ? "?"
                                             : "%c",
                    *s);
        fprintf(out,
                "\", \"model_type\": \"%s\", \"model_size\": %llu, \"model_n_params\": %llu"
                ", \"backend\": \"%s\", \"n_threads\": %d, \"n_gpu_layers\": %d"
                ", \"n_batch\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d"
                ", \"n_parallel\": %d"
                ", \"avg_ts\": %.6f, \"stddev_ts\": %.6f, \"samples_ts\": [",
                ri->mb.type_name, (unsigned long long)ri->mb.file_weight_bytes,
                (unsigned long long)ri->mb.n_params, ri->backend, ri->n_threads, ri->n_gpu,
                ri->p->n_batch > 0 ? ri->p->n_batch : 512, r[i].n_prompt, r[i].n_gen, ri->p->depth,
                r[i].n_par, r[i].avg, r[i].stddev);
        for (int k = 0; k < r[i].reps; k++)
            fprintf(out, "%s%.6f", k ? ", " : "", r[i].samples[k]);
        fprintf(out, "], \"model_bytes\": %llu, \"bandwidth_gbs\": %.3f, \"ceiling_ts\": ",
                (unsigned long long)ri->mb.token_bytes, ri->bw_gbs);
        if (c > 0)
            fprintf(out, "%.3f}%s\n", c, i + 1 < n ? "," : "");
        else
            fprintf(out, "null}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(out, "]\n");
}

/* ---- the driver ------------------------------------------------------------------------------ */

static const char *backend_name(const struct bench_params *p, int n_layers)
{
    if (p->backend == EXSA_BACKEND_CUDA || p->gpu_layers >= n_layers)
        return p->deterministic ? "CUDA det" : "CUDA";
    return p->gpu_layers > 0 ? "CPU+CUDA" : p->backend == EXSA_BACKEND_REF ? "ref" : "CPU";
}

static int open_engine(const struct bench_params *p, int n_threads, struct exsa_model **m,
                       struct exsa_engine **e, char *err, size_t errlen)
{
    int rc = exsa_model_load(p->model_path, m, err, errlen);
    if (rc)
        return rc;
    struct exsa_engine_params ep;
    exsa_engine_params_default(&ep);
    ep.backend = p->backend;
    ep.gpu_layers = p->gpu_layers;
    ep.kv_type = p->kv_type;
    ep.deterministic = p->deterministic;
    ep.n_threads = n_threads;
    ep.n_seq_max = p->n_par > 1 ? p->n_par : 1;
    ep.n_ctx = p->depth + (p->n_prompt > p->n_gen + 1 ? p->n_prompt : p->n_gen + 1) + 16;
    /* whole KV blocks per sequence: the pool holds n_seq_max x n_ctx positions, rounded up
     * once, while each sequence takes whole blocks (kvcache.h) */
    ep.n_ctx = (ep.n_ctx + KV_BLOCK - 1) / KV_BLOCK * KV_BLOCK;
    if (p->n_batch > 0)
        ep.n_batch = p->n_batch;
    char why[256] = "";
    rc = exsa_engine_create(*m, &ep, e, why, sizeof why);
    if (rc) {
        snprintf(err, errlen, "cannot create the engine: %s", why);
        exsa_model_free(*m);
        *m = NULL;
    }
    return rc;
}

int bench_run(const struct bench_params *p, FILE *out, char *err, size_t errlen)
{
    struct run_info ri = {.p = p};
    if (p->n_par > (p->n_batch > 0 ? p->n_batch : 512)) {
        snprintf(err, errlen, "%d parallel sequences do not fit a batch of %d entries (-b)",
                 p->n_par, p->n_batch > 0 ? p->n_batch : 512);
        return EXSA_EINVAL;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ri.n_threads = p->n_threads > 0 ? p->n_threads : (cpus > 0 ? (int)cpus : 1);
    int rc = bench_model_bytes(p->model_path, &ri.mb, err, errlen);
    if (rc)
        return rc;
    struct exsa_model *m;
    struct exsa_engine *e;
    if ((rc = open_engine(p, ri.n_threads, &m, &e, err, errlen)) != 0)
        return rc;
    const int n_layers = exsa_model_info(m)->n_layers;
    ri.backend = backend_name(p, n_layers);
    ri.n_gpu = p->backend == EXSA_BACKEND_CUDA && p->gpu_layers == 0 ? n_layers
               : p->gpu_layers < n_layers                            ? p->gpu_layers
                                                                     : n_layers;
    if (p->bandwidth_gbs > 0)
        ri.bw_gbs = p->bandwidth_gbs;
    else if (ri.n_gpu == n_layers) /* every weight in GPU memory: its read speed bounds decode */
        ri.bw_gbs = backend_cuda_read_bandwidth((size_t)1 << 30);
    else if (ri.n_gpu == 0) /* partial offload has no single ceiling */
        ri.bw_gbs = bench_mem_bandwidth(ri.n_threads, (size_t)1 << 30, 5);
    if (ri.bw_gbs < 0)
        ri.bw_gbs = 0;
    int vocab = exsa_model_info(m)->vocab_size;
    struct test_result res[2];
    int n = 0;
    memset(res, 0, sizeof res);
    if (p->n_prompt > 0 && (rc = run_test(e, p, vocab, false, &res[n], err, errlen)) == 0)
        n++;
    if (rc == 0 && p->n_gen > 0 && (rc = run_test(e, p, vocab, true, &res[n], err, errlen)) == 0)
        n++;
    if (rc == 0 && p->json) {
        print_json(out, &ri, res, n);
    } else if (rc == 0) {
        print_table_head(out, &ri);
        for (int i = 0; i < n; i++)
            print_table_row(out, &ri, &res[i]);
    }
    for (int i = 0; i < 2; i++)
        free(res[i].samples);
    exsa_engine_free(e);
    exsa_model_free(m);
    return rc;
}
