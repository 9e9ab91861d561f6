/*
 * cmd_synth.c: `exsa synth --preset NAME --type TYPE -o FILE [--seed N]`: writes a GGUF with
 * random weights of a real LFM2 model's shapes and type mix (src/synth.h). Called by main.c
 * with argv[0] = "synth"; returns the process exit code (0 ok, 1 error, 2 usage).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "exsa.h"
#include "synth.h"

static void synth_usage(FILE *f)
{
    fprintf(f,
            "usage: exsa synth --preset NAME [--type TYPE] -o FILE [--seed N]\n"
            "  --preset  %s\n"
            "  --type    %s\n"
            "            (default Q4_K_M; Q8_0 for the demo presets)\n"
            "  -o FILE   output path\n"
            "  --seed N  random seed of the weights (default 1)\n",
            synth_preset_names(), synth_ftype_names());
}

int cmd_synth(int argc, char **argv)
{
    const char *preset = NULL, *type = NULL, *out = NULL;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            synth_usage(stdout);
            return 0;
        }
        if (!val) {
            fprintf(stderr, "exsa synth: unknown option or missing value: %s\n", a);
            synth_usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--preset") || !strcmp(a, "-p")) {
            preset = val;
        } else if (!strcmp(a, "--type") || !strcmp(a, "-t")) {
            type = val;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = val;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            seed = strtoull(val, &end, 0);
            if (errno || *end || !*val) {
                fprintf(stderr, "exsa synth: --seed wants a number, got '%s'\n", val);
                return 2;
            }
        } else {
            fprintf(stderr, "exsa synth: unknown option: %s\n", a);
            synth_usage(stderr);
            return 2;
        }
        i++;
    }
    if (!preset || !out) {
        fprintf(stderr, "exsa synth: --preset and -o are required\n");
        synth_usage(stderr);
        return 2;
    }
    const struct synth_preset *p = synth_find_preset(preset);
    if (!p) {
        fprintf(stderr, "exsa synth: unknown preset '%s' (known: %s)\n", preset,
                synth_preset_names());
        return 2;
    }
    if (!type)
        type = strncmp(p->name, "demo", 4) ? "Q4_K_M" : "Q8_0";
    const struct synth_ftype *ft = synth_find_ftype(type);
    if (!ft) {
        fprintf(stderr, "exsa synth: unknown type '%s' (known: %s)\n", type, synth_ftype_names());
        return 2;
    }
    char err[256] = "";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = synth_write(out, p, ft, seed, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc) {
        fprintf(stderr, "exsa synth: %s (%s)\n", err, exsa_strerror(rc));
        return 1;
    }
    struct stat st;
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "exsa synth: wrote %s: %s %s, %.1f MiB in %.1f s\n", out, p->name, ft->name,
            stat(out, &st) == 0 ? (double)st.st_size / 1048576.0 : 0.0, secs);
    return 0;
}
