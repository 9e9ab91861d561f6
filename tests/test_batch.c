/*
 * test_batch.c: batch invariance of the engine on the fast CPU backend (exsa_decode, public
 * API, with each entry's job length as the server gives it). 16 scripted sequences (prompts of
 * 5 to 50 tokens, then 6 decode tokens) run alone and then in groups of 2, 8 and 16 through a
 * scheduler like sched.c's (decode tokens first, prompt chunks from what is left of a 32-entry
 * budget, logits for a prompt's last entry and the decode tokens, later sequences arriving a
 * step apart), so prompts are cut into different chunks and steps mix prefill and decode: every
 * logit row of every sequence must be bit for bit the one it had alone. Without job lengths the
 * kernels follow the step's size and the same run differs (the setting is not ignored). Also
 * one prompt fed whole and in chunks of 1, 16 and 17 (logits at every chunk's end). On dense
 * Q4_K_M, Q8_0 and F16 files and the MoE Q4_K_M file with all features (the AMX or AVX-512 BF16
 * GEMM and gemv), again without AMX where the CPU has it, and on some of them at the lower CPU
 * limits (VNNI only: tiled kernels; plain C). Steps of 16 or more entries occur, where a kernel
 * picked by the step's size would switch to the GEMM.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/features.h"
#include "cpu/matmul.h"
#include "exsa.h"
#include "harness.h"

enum { N_SEQ = 16, N_GEN = 6, ROWS = N_GEN + 1, MAX_PROMPT = 50, BUDGET = 32, N_BATCH = 64 };

static int g_vocab;
static bool g_jobs = true; /* give exsa_decode the entries' job lengths */

struct script {
    int n_prompt;
    int32_t tok[MAX_PROMPT + N_GEN];
};

static void make_scripts(struct script *s)
{
    for (int i = 0; i < N_SEQ; i++) {
        s[i].n_prompt = 5 + (i * 29) % (MAX_PROMPT - 4); /* 5 .. 50, some under 16 */
        for (int k = 0; k < s[i].n_prompt + N_GEN; k++)
            s[i].tok[k] = (int32_t)(20 + (i * 131 + k * 37) % (g_vocab - 20));
    }
}

static struct exsa_engine *make_engine(struct exsa_model *m)
{
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.backend = EXSA_BACKEND_CPU, p.n_threads = 2, p.n_ctx = 128, p.n_seq_max = N_SEQ;
    p.n_batch = N_BATCH;
    struct exsa_engine *e = NULL;
    char err[256];
    CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == 0, "engine: %s", err);
    return e;
}

/* A sequence being run: its engine id, how far its script is, where its logit rows go. */
struct run {
    const struct script *s;
    int id, done, rows, start_step;
    float *out; /* [ROWS][vocab] */
};

/* One step of the simulated scheduler over the running sequences; returns the entry count, or
 * -1 when nothing was left to do. Logits are copied to each sequence's rows. */
static int sched_step(struct exsa_engine *e, struct run *r, int n_run, int step, float *logits)
{
    int32_t tok[N_BATCH], pos[N_BATCH], seq[N_BATCH], job[N_BATCH];
    uint8_t want[N_BATCH];
    struct run *owner[N_BATCH];
    int n = 0, budget = BUDGET;
    for (int pass = 0; pass < 2; pass++) /* 0: decode tokens, 1: prompt chunks */
        for (int i = 0; i < n_run; i++) {
            struct run *q = &r[i];
            const int total = q->s->n_prompt + N_GEN, left_prompt = q->s->n_prompt - q->done;
            if (step < q->start_step || q->done >= total || (pass == 0) != (left_prompt <= 0))
                continue;
            const int take = pass == 0 ? 1 : (left_prompt < budget ? left_prompt : budget);
            for (int k = 0; k < take; k++, n++) {
                tok[n] = q->s->tok[q->done + k], pos[n] = q->done + k, seq[n] = q->id;
                want[n] = pass == 0 || k == left_prompt - 1;
                job[n] = pass == 0 ? 1 : q->s->n_prompt;
                owner[n] = q;
            }
            q->done += take, budget -= take;
        }
    if (n == 0)
        return -1;
    struct exsa_batch b = {n, tok, pos, seq, want, g_jobs ? job : NULL};
    const int rc = exsa_decode(e, &b, logits);
    CHECK(rc == 0, "exsa_decode: %d", rc);
    for (int i = 0, k = 0; i < n && rc == 0; i++)
        if (want[i]) {
            struct run *q = owner[i];
            if (q->rows < ROWS)
                memcpy(q->out + (size_t)q->rows * g_vocab, logits + (size_t)k * g_vocab,
                       sizeof(float) * g_vocab);
            q->rows++, k++;
        }
    return n;
}

/* Runs the scripts first..first+n together (sequence j arriving at step j * stagger); their rows
 * go to out[i]. Returns the largest step's entry count. */
static int run_group(struct exsa_engine *e, const struct script *s, int first, int n, int stagger,
                     float **out, float *logits)
{
    struct run r[N_SEQ];
    for (int j = 0; j < n; j++) {
        r[j] = (struct run){.s = &s[first + j],
                            .id = exsa_seq_new(e),
                            .start_step = j * stagger,
                            .out = out[first + j]};
        CHECK(r[j].id >= 0, "exsa_seq_new: %d", r[j].id);
    }
    int widest = 0;
    for (int step = 0; step < 1000; step++) {
        const int got = sched_step(e, r, n, step, logits);
        bool waiting = false; /* a late arrival still to come */
        for (int j = 0; j < n; j++)
            waiting |= step < r[j].start_step;
        if (got < 0 && !waiting)
            break;
        widest = got > widest ? got : widest;
    }
    for (int j = 0; j < n; j++) {
        CHECK(r[j].rows == ROWS, "sequence %d: %d logit rows", first + j, r[j].rows);
        exsa_seq_free(e, r[j].id);
    }
    return widest;
}

/* The first row of a that differs from b (bitwise), or -1. */
static int first_diff(const float *a, const float *b, int rows)
{
    for (int k = 0; k < rows; k++)
        if (memcmp(a + (size_t)k * g_vocab, b + (size_t)k * g_vocab, sizeof(float) * g_vocab))
            return k;
    return -1;
}

/* A prompt fed whole and in chunks of 1, 16, 17 (each chunk's last entry asking for logits),
 * then its decode tokens: the same rows. */
static void check_chunking(struct exsa_engine *e, const struct script *s, float *whole, float *part,
                           float *logits, const char *what)
{
    static const int chunks[] = {MAX_PROMPT, 1, 16, 17};
    for (int c = 0; c < 4; c++) {
        float *out = c == 0 ? whole : part;
        const int id = exsa_seq_new(e), n_tot = s->n_prompt + N_GEN;
        int rows = 0;
        for (int done = 0; done < n_tot;) {
            const bool prompt = done < s->n_prompt;
            const int left = s->n_prompt - done;
            const int n = !prompt ? 1 : left < chunks[c] ? left : chunks[c];
            int32_t pos[MAX_PROMPT], seq[MAX_PROMPT], job[MAX_PROMPT];
            for (int k = 0; k < n; k++)
                pos[k] = done + k, seq[k] = id, job[k] = prompt ? s->n_prompt : 1;
            struct exsa_batch b = {n, s->tok + done, pos, seq, NULL, job};
            CHECK(exsa_decode(e, &b, logits) == 0, "decode");
            done += n;
            if (done >= s->n_prompt) /* the prompt's end, then every decode token */
                memcpy(out + (size_t)rows++ * g_vocab, logits, sizeof(float) * g_vocab);
        }
        exsa_seq_free(e, id);
        const int bad = c == 0 ? -1 : first_diff(part, whole, ROWS);
        CHECK(bad < 0, "%s: chunks of %d: row %d differs from the whole prompt's", what, chunks[c],
              bad);
    }
}

/* The scripts alone and in groups on one model at one CPU limit. With job lengths (g_jobs)
 * every row must match and the chunking check runs; without, returns how many sequences
 * differed from alone in some group. */
static int check_model(const char *name, unsigned limit, const char *limit_name)
{
    char path[512], err[256], what[160];
    snprintf(path, sizeof path, "%s/%s.gguf", fixtures_dir(), name);
    snprintf(what, sizeof what, "%s (%s)", name, limit_name);
    struct exsa_model *m = NULL;
    CHECK(exsa_model_load(path, &m, err, sizeof err) == 0, "load %s: %s", path, err);
    if (!m)
        return 0;
    g_vocab = exsa_model_info(m)->vocab_size;
    cpu_limit(limit);
    struct exsa_engine *e = make_engine(m);
    struct script s[N_SEQ];
    make_scripts(s);
    float *alone[N_SEQ], *batched[N_SEQ];
    float *logits = malloc(sizeof(float) * (size_t)N_BATCH * g_vocab);
    for (int i = 0; i < N_SEQ; i++) {
        alone[i] = malloc(sizeof(float) * ROWS * (size_t)g_vocab);
        batched[i] = malloc(sizeof(float) * ROWS * (size_t)g_vocab);
    }
    for (int i = 0; e && i < N_SEQ; i++)
        run_group(e, s, i, 1, 0, alone, logits);
    static const int groups[] = {2, 8, 16};
    int differed = 0;
    for (int g = 0; e && g < 3; g++) {
        int widest = 0;
        for (int first = 0; first < N_SEQ; first += groups[g]) {
            const int w = run_group(e, s, first, groups[g], 1 + g % 2, batched, logits);
            widest = w > widest ? w : widest;
        }
        int same = 0;
        for (int i = 0; i < N_SEQ; i++) {
            const int bad = first_diff(batched[i], alone[i], ROWS);
            same += bad < 0;
            CHECK(!g_jobs || bad < 0, "%s: sequence %d with %d others: row %d differs from alone",
                  what, i, groups[g] - 1, bad);
        }
        CHECK(!g_jobs || same == N_SEQ, "%s: %d of %d sequences the same with %d others", what,
              same, N_SEQ, groups[g] - 1);
        differed += N_SEQ - same;
        if (groups[g] == 16)
            CHECK(widest >= MM_PREFILL_MIN_TOK, "%s: widest step %d entries", what, widest);
    }
    int longest = 0;
    for (int i = 1; i < N_SEQ; i++)
        longest = s[i].n_prompt > s[longest].n_prompt ? i : longest;
    if (e && g_jobs)
        check_chunking(e, &s[longest], alone[0], batched[0], logits, what);
    for (int i = 0; i < N_SEQ; i++)
        free(alone[i]), free(batched[i]);
    free(logits);
    exsa_engine_free(e);
    exsa_model_free(m);
    cpu_limit(CPU_ALL);
    return differed;
}

static const char *const models[] = {"lfm2-tiny-Q4_K_M", "lfm2moe-tiny-Q4_K_M", "lfm2-tiny-Q8_0",
                                     "lfm2-tiny-F16"};

/* The first n_models of the list at one limit. */
static void sweep(unsigned limit, const char *limit_name, int n_models)
{
    for (int i = 0; i < n_models; i++)
        check_model(models[i], limit, limit_name);
}

static void test_all_features(void)
{
    sweep(CPU_ALL, "all features", 4);
}

static void test_no_amx(void)
{
    if (!cpu_has(CPU_LEVEL_AMX)) {
        fprintf(stderr, "  no AMX on this CPU: all features is already the AVX-512 BF16 GEMM\n");
        return;
    }
    sweep(CPU_ALL & ~CPU_AMX_BF16, "no AMX", 4);
}

/* Without job lengths the step's size picks the kernels: batched runs differ from alone where
 * the CPU has the GEMM (the job lengths are what makes the results the same). */
static void test_without_jobs(void)
{
    if (!cpu_has(CPU_LEVEL_BF16) || !cpu_has(CPU_LEVEL_VBMI)) {
        fprintf(stderr, "  no GEMM and gemv on this CPU: every kernel is batch-invariant\n");
        return;
    }
    g_jobs = false;
    const int differed = check_model(models[0], CPU_ALL, "no job lengths");
    g_jobs = true;
    CHECK(differed > 0, "without job lengths no sequence differed from alone");
}

/* A job length below 1 is refused before anything changes. */
static void test_bad_job_len(void)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s.gguf", fixtures_dir(), models[0]);
    struct exsa_model *m = NULL;
    CHECK(exsa_model_load(path, &m, err, sizeof err) == 0, "load %s: %s", path, err);
    struct exsa_engine *e = m ? make_engine(m) : NULL;
    const int id = e ? exsa_seq_new(e) : -1;
    int32_t tok[2] = {20, 21}, pos[2] = {0, 1}, seq[2] = {id, id}, job[2] = {2, 0};
    float *logits = malloc(sizeof(float) * (size_t)exsa_model_info(m)->vocab_size);
    struct exsa_batch b = {2, tok, pos, seq, NULL, job};
    CHECK(e && exsa_decode(e, &b, logits) == EXSA_EINVAL, "job length 0 taken");
    CHECK(e && exsa_seq_len(e, id) == 0, "the refused batch changed the sequence");
    job[1] = 2;
    CHECK(e && exsa_decode(e, &b, logits) == 0 && exsa_seq_len(e, id) == 2, "job lengths 2, 2");
    free(logits);
    exsa_engine_free(e);
    exsa_model_free(m);
}

/* The tiled kernels for every call, and the attention's plain C path. */
static void test_lower_levels(void)
{
    sweep(CPU_LEVEL_VNNI, "VNNI only", 2);
    sweep(0, "plain C", 1);
}

int main(void)
{
    RUN(test_all_features);
    RUN(test_no_amx);
    RUN(test_lower_levels);
    RUN(test_without_jobs);
    RUN(test_bad_job_len);
    TEST_END();
}
