/*
 * cmd_tokenize.c: `exsa tokenize -m MODEL -p TEXT [--no-bos] [--no-special]` prints the ids of
 * TEXT space-separated (BOS added and special tokens parsed unless told otherwise);
 * `exsa tokenize -m MODEL --inp FILE` reads llama.cpp's tokenizer-test layout and prints one line
 * of ids per string, no BOS, specials not parsed: the `.out` layout (src/tok_inp.h). Opens the
 * GGUF directly, so vocabulary-only files work too. Called by main.c with argv[0] = "tokenize";
 * returns the exit code (0 ok, 1 error, 2 usage).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "gguf.h"
#include "tok_inp.h"
#include "tokenizer.h"

static void tokenize_usage(FILE *f)
{
    fprintf(f, "usage: exsa tokenize -m MODEL (-p TEXT [--no-bos] [--no-special] | --inp FILE)\n"
               "  -m MODEL      a GGUF with a tokenizer (MODEL_PATH if not given)\n"
               "  -p TEXT       print the ids of TEXT, space-separated\n"
               "  --no-bos      do not add BOS\n"
               "  --no-special  treat special-token text as plain text\n"
               "  --inp FILE    llama.cpp tokenizer-test input: one line of ids per string\n");
}

/* Reads a whole file; malloc'd, NULL (with a message) on failure. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) {
        fprintf(stderr, "exsa tokenize: cannot open %s\n", path);
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap = cap ? 2 * cap : 65536);
            if (!b)
                break;
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool bad = ferror(f) || n == SIZE_MAX || n == cap;
    fclose(f);
    if (bad) {
        fprintf(stderr, "exsa tokenize: cannot read %s\n", path);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Prints the ids of text; returns 0 or a negative code. */
static int print_text_ids(const struct tokenizer *t, const char *text, bool bos, bool special)
{
    size_t len = strlen(text);
    int n = tok_encode(t, text, len, bos, special, NULL, 0);
    if (n < 0)
        return n;
    int32_t *ids = malloc(((size_t)n + 1) * sizeof(*ids));
    if (!ids)
        return EXSA_ENOMEM;
    n = tok_encode(t, text, len, bos, special, ids, n);
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
    free(ids);
    return n < 0 ? n : 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = getenv("MODEL_PATH"), *text = NULL, *inp = NULL;
    bool bos = true, special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-bos")) {
            bos = false;
        } else if (!strcmp(a, "--no-special")) {
            special = false;
        } else if (val && (!strcmp(a, "-m") || !strcmp(a, "--model"))) {
            model = argv[++i];
        } else if (val && (!strcmp(a, "-p") || !strcmp(a, "--prompt"))) {
            text = argv[++i];
        } else if (val && !strcmp(a, "--inp")) {
            inp = argv[++i];
        } else {
            fprintf(stderr, "exsa tokenize: unknown option or missing value: %s\n", a);
            tokenize_usage(stderr);
            return 2;
        }
    }
    if (!model || !*model || (!text) == (!inp)) {
        fprintf(stderr, "exsa tokenize: need -m MODEL and exactly one of -p TEXT or --inp FILE\n");
        tokenize_usage(stderr);
        return 2;
    }
    char err[512] = "";
    struct gguf_file *f = NULL;
    struct tokenizer *t = NULL;
    int rc = gguf_open(model, &f, err, sizeof(err));
    if (rc == 0)
        rc = tok_load(f, 0, &t, err, sizeof(err));
    if (rc == 0 && text) {
        rc = print_text_ids(t, text, bos, special);
    } else if (rc == 0) {
        size_t len = 0;
        char *data = slurp(inp, &len);
        rc = data ? tok_inp_run(t, data, len, stdout) : EXSA_EIO;
        rc = rc > 0 ? 0 : rc;
        free(data);
    }
    if (rc < 0 && !err[0])
        snprintf(err, sizeof(err), "%s", exsa_strerror(rc));
    if (rc < 0)
        fprintf(stderr, "exsa tokenize: %s\n", err);
    tok_free(t);
    gguf_close(f);
    return rc < 0 ? 1 : 0;
}
