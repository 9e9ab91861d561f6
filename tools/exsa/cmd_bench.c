/*
 * cmd_bench.c: `exsa bench -m MODEL [-p 512] [-n 128] [-t THREADS] [-r REPS] [-b N_BATCH]
 * [-d DEPTH] [-np N_PARALLEL] [--backend ref|cpu|cuda] [-ngl N] [--kv-type f32|f16] [--bw GB/s]
 * [--json]`: prefill and decode speed with the decode bandwidth ceiling beside it (src/bench.h).
 * Called by main.c with argv[0] = "bench"; returns the exit code (0 ok, 1 error, 2 usage).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "cli.h"

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: exsa bench -m MODEL [options]\n"
               "  -p N            prompt tokens of the pp test (default 512; 0 skips it)\n"
               "  -n N            generated tokens of the tg test (default 128; 0 skips it)\n"
               "  -t N            threads (default: all CPUs)\n"
               "  -r N            repetitions after one warm-up (default 5)\n"
               "  -b N            batch size: prefill chunk (default 512)\n"
               "  -d N            depth: positions in the cache before each run (default 0)\n"
               "  -np N           sequences decoding together in the tg test: one token each\n"
               "                  per step, t/s counts all of them (default 1)\n"
               "  --backend B     ref, cpu (default) or cuda (every layer on the GPU)\n"
               "  -ngl N          layers on the GPU: the last N and the output head (CUDA)\n"
               "  --kv-type T     K/V cache type: f32 or f16 (default: f16 on the GPU, f32\n"
               "                  on the CPU)\n"
               "  --deterministic batch-invariant GPU kernels (the server's DETERMINISTIC)\n"
               "  --bw GBS        bandwidth for the ceiling instead of measuring DRAM (GB/s)\n"
               "  --json          a JSON array, one object per test (llama-bench fields)\n");
}

int cmd_bench(int argc, char **argv)
{
    struct bench_params p = {.n_prompt = 512, .n_gen = 128, .reps = 5, .backend = EXSA_BACKEND_CPU};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            p.json = true;
            continue;
        } else if (!strcmp(a, "--deterministic")) {
            p.deterministic = true;
            continue;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            p.model_path = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) {
            bad = cli_int("-p", v, 0, 1 << 20, &p.n_prompt);
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) {
            bad = cli_int("-n", v, 0, 1 << 20, &p.n_gen);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            bad = cli_int("-t", v, 1, 1024, &p.n_threads);
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            bad = cli_int("-r", v, 1, 1000, &p.reps);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) {
            bad = cli_int("-b", v, 1, 1 << 16, &p.n_batch);
        } else if (!strcmp(a, "-d") || !strcmp(a, "--depth")) {
            bad = cli_int("-d", v, 0, 1 << 24, &p.depth);
        } else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            bad = cli_int("-np", v, 1, 4096, &p.n_par);
        } else if (!strcmp(a, "-ngl") || !strcmp(a, "--gpu-layers")) {
            bad = cli_int("-ngl", v, 0, 1 << 20, &p.gpu_layers);
        } else if (!strcmp(a, "--kv-type")) {
            int t = cli_parse_kv_type(v);
            bad = t < 0;
            p.kv_type = (enum exsa_kv_type)(t < 0 ? 0 : t);
        } else if (!strcmp(a, "--backend")) {
            int b = cli_parse_backend(v);
            bad = b < 0;
            p.backend = (enum exsa_backend_kind)(b < 0 ? 0 : b);
        } else if (!strcmp(a, "--bw")) {
            char *end;
            p.bandwidth_gbs = strtod(v, &end);
            bad = *end || !(p.bandwidth_gbs > 0);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "exsa bench: bad or unknown option: %s%s%s\n", a, v ? " " : "",
                    v ? v : "");
            bench_usage(stderr);
            return 2;
        }
        i++;
    }
    if (!p.model_path) {
        fprintf(stderr, "exsa bench: -m MODEL is required\n");
        bench_usage(stderr);
        return 2;
    }
    char err[512] = "";
    int rc = bench_run(&p, stdout, err, sizeof err);
    if (rc) {
        fprintf(stderr, "exsa bench: %s\n", err);
        return 1;
    }
    return 0;
}
