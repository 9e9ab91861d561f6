/*
 * fuzz_tokenizer.c: a libFuzzer target over tok_encode. The first byte picks the vocabulary
 * (bit 0: the tiny fixture's lfm2 vocabulary, or the real GPT-2 one) and special-token parsing
 * (bit 1); the rest is the text. Every input must either encode, with every id inside the
 * vocabulary and the ids' pieces giving back exactly the input bytes as tok_utf8_sanitize
 * makes them valid UTF-8 (byte-level BPE loses nothing else; with special parsing the control
 * tokens' pieces are their text), or fail with a negative code. The vocabularies come from
 * ../shared/fixtures (EXSA_FIXTURES). `make fuzz`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "harness.h"
#include "tok_pre.h"
#include "tokenizer.h"

static struct tokenizer *vocab[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const files[2] = {"lfm2-tiny-F32.gguf", "tokenizer/ggml-vocab-gpt-2.gguf"};
    for (int i = 0; i < 2; i++) {
        char path[512], err[256] = "";
        struct gguf_file *f = NULL;
        snprintf(path, sizeof path, "%s/%s", fixtures_dir(), files[i]);
        if (gguf_open(path, &f, err, sizeof err) || tok_load(f, 0, &vocab[i], err, sizeof err)) {
            fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
            abort();
        }
        gguf_close(f); /* the tokenizer keeps its own copies */
    }
    return 0;
}

/* Checks ids[0..n) decode to text[0..len). */
static void check_round_trip(const struct tokenizer *t, const int32_t *ids, int n, const char *text,
                             size_t len, bool special)
{
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(t) || tok_piece(t, ids[i], special, &p, &pl))
            abort();
        if (off + pl > len || memcmp(text + off, p, pl))
            abort();
        off += pl;
    }
    if (off != len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const struct tokenizer *t = vocab[data[0] & 1];
    bool special = data[0] & 2;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    int n = tok_encode(t, text, len, false, special, ids, cap);
    if (n > cap) { /* invalid bytes become U+FFFD: 3 bytes each */
        cap = n;
        ids = realloc(ids, sizeof(int32_t) * cap);
        if (tok_encode(t, text, len, false, special, ids, cap) != n)
            abort();
    }
    const char *want;
    size_t want_len;
    char *owned = NULL;
    if (n >= 0 && tok_utf8_sanitize(text, len, &want, &want_len, &owned) == 0)
        check_round_trip(t, ids, n, want, want_len, special);
    free(owned);
    free(ids);
    return 0;
}
