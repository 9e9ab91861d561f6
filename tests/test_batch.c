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

#include "batch-harness.h"
#include "cpu/features.h"
#include "cpu/matmul.h"
#include "exsa.h"
#include "harness.h"

static const struct bh_cfg g_cfg = {5, 50, 32, {50, 1, 16, 17}, true, true};
static bool g_jobs = true; /* give exsa_decode the entries' job lengths */

static struct exsa_engine *make_engine(struct exsa_model *m)
{
    struct exsa_engine_params p;
    exsa_engine_params_default(&p);
    p.backend = EXSA_BACKEND_CPU, p.n_threads = 2, p.n_ctx = 128, p.n_seq_max = BH_SEQ;
    p.n_batch = 64;
    struct exsa_engine *e = NULL;
    char err[256];
    CHECK(exsa_engine_create(m, &p, &e, err, sizeof err) == 0, "engine: %s", err);
    return e;
}

/* The scripts alone and in groups on one model at one CPU limit (batch-harness.h). With job
 * lengths (g_jobs) every row must match and the chunking check runs; without, returns how many
 * sequences differed from alone in some group. */
static int check_model(const char *name, unsigned limit, const char *limit_name)
{
    char path[512], err[256], what[160];
    snprintf(path, sizeof path, "%s/%s.gguf", fixtures_dir(), name);
    snprintf(what, sizeof what, "%s (%s)", name, limit_name);
    struct exsa_model *m = NULL;
    CHECK(exsa_model_load(path, &m, err, sizeof err) == 0, "load %s: %s", path, err);
    if (!m)
        return 0;
    cpu_limit(limit);
    struct exsa_engine *e = make_engine(m);
    struct bh_cfg cfg = g_cfg;
    cfg.jobs = cfg.expect_same = g_jobs;
    int widest = 0, differed = 0;
    if (e)
        differed = bh_check_engine(e, &cfg, exsa_model_info(m)->vocab_size, what, &widest);
    CHECK(!e || widest >= MM_PREFILL_MIN_TOK, "%s: widest step %d entries", what, widest);
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
    float *logits = m ? malloc(sizeof(float) * (size_t)exsa_model_info(m)->vocab_size) : NULL;
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
