/*
 * bench.h: `exsa bench`, the llama-bench-like speed test: prompt processing (pp: one sequence,
 * a prefill of n_prompt random tokens in chunks of n_batch) and generation (tg: n_gen decode
 * steps of one token after a 1-token prompt, or of one token for each of n_par sequences in one
 * batch: the aggregate speed of batched decoding), each optionally at a depth (positions already
 * in the cache, untimed), mean and stddev over reps after one warm-up, each beside its decode
 * ceiling: the read bandwidth of the memory the weights are in (host DRAM, or the GPU's when
 * every layer is offloaded), measured in the same run, divided by the weight bytes one decode
 * step reads. Called by tools/exsa/cmd_bench.c and tests.
 */
#ifndef EXSA_BENCH_H
#define EXSA_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "exsa.h"

struct bench_params {
    const char *model_path;
    int n_prompt;  /* 0: skip pp */
    int n_gen;     /* 0: skip tg */
    int n_threads; /* 0: all online CPUs */
    int reps;      /* >= 1 */
    int n_batch;   /* 0: the engine's default */
    enum exsa_backend_kind backend;
    int gpu_layers;            /* the engine's gpu_layers (CUDA builds) */
    enum exsa_kv_type kv_type; /* the engine's K/V cache type */
    int depth;                 /* positions already in the cache before each timed run */
    int n_par; /* sequences decoding together in the tg test (0 or 1: one; tokens/s counts all) */
    double bandwidth_gbs; /* > 0: use this instead of measuring */
    bool deterministic;   /* the engine's batch-invariant GPU kernels */
    bool json;
};

/* What a decode step reads, from the GGUF's tensor table: all weight bytes, with expert stacks
 * counted at n_experts_used / n_experts and an untied token_embd at one row. */
struct bench_model_bytes {
    uint64_t file_weight_bytes; /* every tensor's bytes */
    uint64_t token_bytes;       /* read per decode step */
    uint64_t n_params;
    char type_name[96]; /* llama-bench's model_type, e.g. "lfm2 1.2B Q4_K - Medium" */
};
int bench_model_bytes(const char *path, struct bench_model_bytes *out, char *err, size_t errlen);

/* Best-of-passes streaming read bandwidth over a buffer of `bytes` (>> caches), split across
 * n_threads threads, in GB/s (1e9 bytes). Returns < 0 if the buffer cannot be allocated. */
double bench_mem_bandwidth(int n_threads, size_t bytes, int passes);

/* Runs the tests and prints the table (or JSON) to out; progress goes to stderr. Returns 0 or
 * a negative EXSA_E* code with a sentence in err. */
int bench_run(const struct bench_params *p, FILE *out, char *err, size_t errlen);

#endif
