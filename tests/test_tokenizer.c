/*
 * test_tokenizer.c: the tokenizer against ../shared/fixtures/tokenizer (llama.cpp's ids for the
 * lfm2-tiny and GPT-2 vocabularies, exact, every string), decode(encode(s)) == s, special-token
 * parsing, BOS, EOG, pieces, the exsa_* wrappers, the ref.json prompts, refusals of unknown or
 * broken vocabularies (handcrafted GGUFs), invalid UTF-8, and speed on long unbroken text.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "exsa.h"
#include "gguf.h"
#include "harness.h"
#include "tok_inp.h"
#include "tokenizer.h"

static struct gguf_file *g_lfm2_file, *g_gpt2_file;
static struct tokenizer *g_lfm2, *g_gpt2;

static char *read_all(const char *path, size_t *len)
{
    return read_whole_file(path, len);
}

static const char *fx(const char *name)
{
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof(path[k]), "%s/%s", fixtures_dir(), name);
    return path[k];
}

static struct tokenizer *load_vocab(const char *name, struct gguf_file **file)
{
    char err[256] = "";
    struct tokenizer *t = NULL;
    int rc = gguf_open(fx(name), file, err, sizeof(err));
    CHECK(rc == 0, "gguf_open %s: %s", name, err);
    if (rc == 0) {
        rc = tok_load(*file, 0, &t, err, sizeof(err));
        CHECK(rc == 0, "tok_load %s: %s", name, err);
    }
    return t;
}

/* Prints s (at most 160 bytes) with control and non-ASCII bytes escaped. */
static void print_escaped(const char *s, size_t n)
{
    for (size_t i = 0; i < n && i < 160; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    if (n > 160)
        fprintf(stderr, "... (%zu bytes)", n);
}

/* Runs an .inp file through t and compares every line with the .out file; reports the first
 * mismatch in detail and the count of all. */
static void check_fixture(const struct tokenizer *t, const char *inp, const char *outname)
{
    size_t ilen = 0, olen = 0, glen = 0;
    char *in = read_all(fx(inp), &ilen), *want = read_all(fx(outname), &olen), *got = NULL;
    CHECK(in && want, "cannot read %s or %s", inp, outname);
    if (!t || !in || !want)
        goto done;
    FILE *mem = open_memstream(&got, &glen);
    clock_t c0 = clock();
    int n = tok_inp_run(t, in, ilen, mem);
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    fclose(mem);
    CHECK(n > 0, "tok_inp_run: %d", n);
    fprintf(stderr, "  %s: %d strings in %.3f s\n", inp, n, secs);
    CHECK(secs < 1.0, "%s took %.3f s", inp, secs);
    int mismatches = 0, line = 0;
    size_t pos = 0, gp = 0, wp = 0, sn;
    const char *s;
    while (tok_inp_next(in, ilen, &pos, &s, &sn)) {
        const char *ge = memchr(got + gp, '\n', glen - gp),
                   *we = memchr(want + wp, '\n', olen - wp);
        if (!ge || !we) {
            CHECK(0, "line %d: output ended early (got %d, want %d)", line, !!ge, !!we);
            break;
        }
        size_t gl = (size_t)(ge - got - gp), wl = (size_t)(we - want - wp);
        if (gl != wl || memcmp(got + gp, want + wp, gl) != 0) {
            if (mismatches++ == 0) {
                fprintf(stderr, "  first mismatch, %s string %d: \"", inp, line);
                print_escaped(s, sn);
                fprintf(stderr, "\"\n    want: %.*s\n    got:  %.*s\n", (int)(wl > 400 ? 400 : wl),
                        want + wp, (int)(gl > 400 ? 400 : gl), got + gp);
            }
        }
        gp += gl + 1;
        wp += wl + 1;
        line++;
    }
    CHECK(mismatches == 0, "%s vs %s: %d of %d strings differ", inp, outname, mismatches, line);
    CHECK(gp == glen && wp == olen, "%s: line counts differ", inp);
done:
    free(in);
    free(want);
    free(got);
}

static void test_lfm2_llama3_cases(void)
{
    check_fixture(g_lfm2, "tokenizer/llama3-cases.inp", "tokenizer/lfm2-tiny.llama3-cases.out");
}

static void test_lfm2_extra_cases(void)
{
    check_fixture(g_lfm2, "tokenizer/extra-cases.inp", "tokenizer/lfm2-tiny.extra-cases.out");
}

static void test_lfm2_random(void)
{
    check_fixture(g_lfm2, "tokenizer/random-2000.inp", "tokenizer/lfm2-tiny.random-2000.out");
}

static void test_gpt2_cases(void)
{
    check_fixture(g_gpt2, "tokenizer/gpt-2-cases.inp", "tokenizer/gpt-2.gpt-2-cases.out");
}

static void test_gpt2_random(void)
{
    check_fixture(g_gpt2, "tokenizer/random-2000.inp", "tokenizer/gpt-2.random-2000.out");
}

/* Encodes into a malloc'd array sized by a first counting call; *n gets the count. */
static int32_t *encode(const struct tokenizer *t, const char *s, size_t len, bool bos, bool sp,
                       int *n)
{
    *n = tok_encode(t, s, len, bos, sp, NULL, 0);
    if (*n < 0)
        return NULL;
    int32_t *ids = malloc(((size_t)*n + 1) * sizeof(*ids));
    int again = tok_encode(t, s, len, bos, sp, ids, *n);
    CHECK(again == *n, "count changed: %d then %d", *n, again);
    return ids;
}

/* Concatenated pieces of ids[0..n); malloc'd, *len bytes. */
static char *decode(const struct tokenizer *t, const int32_t *ids, int n, bool special, size_t *len)
{
    size_t cap = 64, o = 0;
    char *buf = malloc(cap);
    for (int i = 0; i < n; i++) {
        const char *p;
        size_t pl;
        if (tok_piece(t, ids[i], special, &p, &pl) != 0)
            continue;
        while (o + pl > cap)
            buf = realloc(buf, cap *= 2);
        memcpy(buf + o, p, pl);
        o += pl;
    }
    *len = o;
    return buf;
}

/* decode(encode(s)) == s for every string of the fixture inputs, both vocabularies. */
static void test_roundtrip(void)
{
    static const char *const inputs[] = {"tokenizer/llama3-cases.inp", "tokenizer/extra-cases.inp",
                                         "tokenizer/gpt-2-cases.inp", "tokenizer/random-2000.inp"};
    const struct tokenizer *ts[2] = {g_lfm2, g_gpt2};
    for (int v = 0; v < 2 && ts[v]; v++) {
        int bad = 0, total = 0;
        for (size_t k = 0; k < sizeof(inputs) / sizeof(inputs[0]); k++) {
            size_t ilen, pos = 0, sn, dl;
            const char *s;
            char *in = read_all(fx(inputs[k]), &ilen);
            CHECK(in, "cannot read %s", inputs[k]);
            while (in && tok_inp_next(in, ilen, &pos, &s, &sn)) {
                int n;
                int32_t *ids = encode(ts[v], s, sn, false, false, &n);
                char *d = decode(ts[v], ids, n, false, &dl);
                if (dl != sn || memcmp(d, s, sn) != 0) {
                    if (bad++ == 0) {
                        fprintf(stderr, "  roundtrip differs: \"");
                        print_escaped(s, sn);
                        fprintf(stderr, "\"\n");
                    }
                }
                total++;
                free(ids);
                free(d);
            }
            free(in);
        }
        CHECK(bad == 0, "vocab %d: %d of %d strings do not round-trip", v, bad, total);
    }
}

static bool contains(const int32_t *ids, int n, int32_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static void test_specials(void)
{
    const struct tokenizer *t = g_lfm2;
    if (!t)
        return;
    const char *s = "<|im_start|>user\nHi there<|im_end|>\n";
    int32_t im_start = tok_find(t, "<|im_start|>"), im_end = tok_find(t, "<|im_end|>");
    CHECK(im_start == 6 && im_end == 7, "ids %d %d", im_start, im_end);
    int n1, n2;
    int32_t *a = encode(t, s, strlen(s), false, true, &n1);
    int32_t *b = encode(t, s, strlen(s), false, false, &n2);
    CHECK(n1 > 2 && a[0] == 6 && contains(a, n1, 7), "parsed: first %d, has 7 %d", a[0],
          contains(a, n1, 7));
    CHECK(!contains(b, n2, 6) && !contains(b, n2, 7), "plain text produced a control token");
    CHECK(n2 > n1, "plain %d ids, parsed %d", n2, n1);
    size_t dl;
    char *d = decode(t, a, n1, true, &dl);
    CHECK(dl == strlen(s) && memcmp(d, s, dl) == 0, "parsed decode with specials: %.*s", (int)dl,
          d);
    free(d);
    d = decode(t, a, n1, false, &dl);
    CHECK(dl == strlen("user\nHi there\n"), "controls are empty without special: %zu", dl);
    free(d);
    d = decode(t, b, n2, false, &dl);
    CHECK(dl == strlen(s) && memcmp(d, s, dl) == 0, "plain decode: %.*s", (int)dl, d);
    free(d);
    free(a);
    free(b);
    CHECK(tok_is_control(t, 7) && !tok_is_control(t, 100), "control attrs");
}

static void test_bos(void)
{
    if (!g_lfm2 || !g_gpt2)
        return;
    int n, m;
    CHECK(tok_bos(g_lfm2) == 1 && tok_eos(g_lfm2) == 7 && tok_add_bos(g_lfm2), "lfm2 bos/eos");
    int32_t *a = encode(g_lfm2, "Hello", 5, true, true, &n);
    int32_t *b = encode(g_lfm2, "Hello", 5, false, true, &m);
    CHECK(n == m + 1 && a[0] == 1 && !contains(a + 1, n - 1, 1), "BOS once: %d vs %d ids", n, m);
    free(a);
    free(b);
    a = encode(g_lfm2, "", 0, true, false, &n);
    CHECK(n == 1 && a[0] == 1, "empty text with BOS: %d ids", n);
    free(a);
    /* GPT-2's pre-tokenizer has no BOS by default (llama.cpp), and the file sets none. */
    CHECK(!tok_add_bos(g_gpt2) && tok_bos(g_gpt2) == 50256, "gpt-2 add_bos");
    a = encode(g_gpt2, "Hello", 5, true, false, &n);
    CHECK(n == 1 && a[0] != 50256, "gpt-2 with add_bos: %d ids", n);
    free(a);
}

static void test_eog_and_pieces(void)
{
    const struct tokenizer *t = g_lfm2;
    if (!t || !g_gpt2)
        return;
    CHECK(tok_is_eog(t, 2) && tok_is_eog(t, 7), "endoftext and im_end are EOG");
    CHECK(!tok_is_eog(t, 1) && !tok_is_eog(t, 6) && !tok_is_eog(t, 100) && !tok_is_eog(t, -1) &&
              !tok_is_eog(t, 5000),
          "non-EOG");
    CHECK(tok_is_eog(g_gpt2, 50256) && !tok_is_eog(g_gpt2, 0), "gpt-2 EOG");
    const char *p;
    size_t n;
    CHECK(tok_piece(t, 7, false, &p, &n) == 0 && n == 0, "control piece hidden");
    CHECK(tok_piece(t, 7, true, &p, &n) == 0 && n == 10 && memcmp(p, "<|im_end|>", 10) == 0,
          "control piece shown");
    CHECK(tok_piece(t, tok_n_vocab(t), true, &p, &n) == EXSA_ERANGE, "id past the vocab");
    CHECK(tok_piece(t, -1, true, &p, &n) == EXSA_ERANGE, "negative id");
    int32_t sp = tok_find(g_gpt2, "\xc4\xa0the"); /* "Ġthe" */
    CHECK(sp >= 0 && tok_piece(g_gpt2, sp, false, &p, &n) == 0 && n == 4 &&
              memcmp(p, " the", 4) == 0,
          "byte-mapped piece");
    CHECK(tok_find(t, "no such token text") == -1, "tok_find miss");
    CHECK(tok_n_vocab(t) == 1024 && tok_n_vocab(g_gpt2) == 50257, "n_vocab");
}

/* The tokenizer through include/exsa.h, on the loaded fixture model. */
static void test_public_api(void)
{
    char err[256];
    struct exsa_model *m = NULL;
    int rc = exsa_model_load(fx("lfm2-tiny-F32.gguf"), &m, err, sizeof(err));
    CHECK(rc == 0, "load lfm2-tiny-F32.gguf: %s", err);
    if (rc != 0)
        return;
    CHECK(tok_of_model(m) != NULL && tok_n_vocab(tok_of_model(m)) == 1024, "tok_of_model");
    CHECK(tok_of_model(NULL) == NULL, "tok_of_model(NULL)");
    int32_t ids[64];
    int n = exsa_tokenize(m, "<|im_start|>Hi", 14, true, true, ids, 64);
    CHECK(n >= 3 && ids[0] == 1 && ids[1] == 6, "exsa_tokenize: %d", n);
    CHECK(exsa_tokenize(m, "Hello world", 11, false, false, ids, 1) > 1, "count past max");
    char buf[16];
    CHECK(exsa_token_to_piece(m, 7, true, buf, sizeof(buf)) == 10 &&
              memcmp(buf, "<|im_end|>", 10) == 0,
          "to_piece");
    CHECK(exsa_token_to_piece(m, 7, false, buf, sizeof(buf)) == 0, "to_piece hidden");
    CHECK(exsa_token_to_piece(m, 7, true, buf, 4) == 10, "to_piece reports the full length");
    CHECK(exsa_token_to_piece(m, 99999, true, buf, sizeof(buf)) == EXSA_ERANGE, "bad id");
    CHECK(exsa_token_is_eog(m, 7) && !exsa_token_is_eog(m, 6), "is_eog");
    CHECK(exsa_token_bos(m) == 1 && exsa_token_eos(m) == 7, "bos/eos");
    CHECK(exsa_tokenize(NULL, "x", 1, false, false, ids, 64) == EXSA_EINVAL, "NULL model");
    CHECK(exsa_token_bos(NULL) == -1, "NULL model bos");
    exsa_model_free(m);
}

/* The ref.json prompts: tokens == encode(text) with BOS and specials. */
static void test_ref_json(void)
{
    size_t len;
    char *js = read_all(fx("lfm2-tiny-F32.ref.json"), &len);
    CHECK(js, "cannot read lfm2-tiny-F32.ref.json");
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts");
    CHECK(cJSON_IsArray(prompts) && cJSON_GetArraySize(prompts) == 5, "prompts array");
    const cJSON *p;
    int k = 0;
    cJSON_ArrayForEach (p, prompts) {
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(p, "text"));
        const cJSON *want = cJSON_GetObjectItem(p, "tokens");
        if (!text || !cJSON_IsArray(want) || !g_lfm2)
            continue;
        int n, bad = -1;
        int32_t *ids = encode(g_lfm2, text, strlen(text), true, true, &n);
        CHECK(n == cJSON_GetArraySize(want), "prompt %d: %d ids, want %d", k, n,
              cJSON_GetArraySize(want));
        for (int i = 0; i < n && i < cJSON_GetArraySize(want) && bad < 0; i++)
            if (ids[i] != cJSON_GetArrayItem(want, i)->valueint)
                bad = i;
        CHECK(bad < 0, "prompt %d: first difference at %d", k, bad);
        free(ids);
        k++;
    }
    CHECK(k == 5, "checked %d prompts", k);
    cJSON_Delete(root);
    free(js);
}

/* A tiny handcrafted vocabulary; pre, model and bos are the knobs. */
static int load_crafted(const char *model, const char *pre, int64_t bos, int vocab_size, char *err,
                        size_t errlen)
{
    static const char *const toks[] = {"a", "b", "ab", "<|endoftext|>", "<u>", "<", "|", ">"};
    static const int32_t types[] = {1, 1, 1, 3, 4, 1, 1, 1};
    static const char *const merges[] = {"a b"};
    struct gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", model);
    if (pre)
        gguf_w_str(w, "tokenizer.ggml.pre", pre);
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 8);
    gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 8);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, 1);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    uint8_t *buf = NULL;
    size_t size = 0;
    int rc = gguf_writer_to_mem(w, &buf, &size);
    gguf_writer_free(w);
    CHECK(rc == 0, "writer: %d", rc);
    struct gguf_file *f = NULL;
    struct tokenizer *t = NULL;
    if (rc == 0 && (rc = gguf_open_mem(buf, size, &f, err, errlen)) == 0) {
        rc = tok_load(f, vocab_size, &t, err, errlen);
        if (rc == 0) {
            int32_t ids[4];
            int n = tok_encode(t, "abab", 4, true, false, ids, 4);
            CHECK(n == 2 && ids[0] == 2 && ids[1] == 2, "crafted encode: %d", n);
            /* USER_DEFINED "<u>" is matched even without parse_special; CONTROL only with it. */
            n = tok_encode(t, "a<u>b", 5, false, false, ids, 4);
            CHECK(n == 3 && ids[0] == 0 && ids[1] == 4 && ids[2] == 1, "user-defined: %d", n);
            n = tok_encode(t, "<|endoftext|>", 13, false, true, ids, 4);
            CHECK(n == 1 && ids[0] == 3, "control parsed: %d", n);
            n = tok_encode(t, "<|", 2, false, false, ids, 4);
            CHECK(n == 2 && ids[0] == 5 && ids[1] == 6, "control as text: %d", n);
            CHECK(tok_is_eog(t, 3), "<|endoftext|> is EOG by text");
        }
    }
    tok_free(t);
    gguf_close(f);
    free(buf);
    return rc;
}

static void test_refusals(void)
{
    char err[256] = "";
    int rc = load_crafted("gpt2", "gpt-2", 3, 0, err, sizeof(err));
    CHECK(rc == 0, "good crafted vocab: %s", err);
    err[0] = 0;
    rc = load_crafted("gpt2", "foo", 3, 0, err, sizeof(err));
    CHECK(rc == EXSA_EUNSUPPORTED && strstr(err, "'foo'") && strstr(err, "lfm2"), "%d %s", rc, err);
    err[0] = 0;
    rc = load_crafted("gpt2", NULL, 3, 0, err, sizeof(err));
    CHECK(rc == EXSA_EUNSUPPORTED && strstr(err, "tokenizer.ggml.pre"), "%d %s", rc, err);
    err[0] = 0;
    rc = load_crafted("llama", "lfm2", 3, 0, err, sizeof(err));
    CHECK(rc == EXSA_EUNSUPPORTED && strstr(err, "'llama'"), "%d %s", rc, err);
    err[0] = 0;
    rc = load_crafted("gpt2", "lfm2", 8, 0, err, sizeof(err));
    CHECK(rc == EXSA_ERANGE && strstr(err, "tokenizer.ggml.bos_token_id"), "%d %s", rc, err);
    err[0] = 0;
    rc = load_crafted("gpt2", "lfm2", 3, 7, err, sizeof(err));
    CHECK(rc == EXSA_ERANGE && strstr(err, "embedding"), "%d %s", rc, err);
}

/* Invalid UTF-8 bytes encode as U+FFFD (llama.cpp); the rest of the text survives. */
static void test_invalid_utf8(void)
{
    if (!g_lfm2)
        return;
    const char s[] = "ok\xff"
                     "a\xc3(\xed\xa0\x80z";
    int n;
    int32_t *ids = encode(g_lfm2, s, sizeof(s) - 1, false, false, &n);
    size_t dl;
    char *d = decode(g_lfm2, ids, n, false, &dl);
    const char want[] = "ok\xef\xbf\xbd"
                        "a\xef\xbf\xbd(\xef\xbf\xbdz";
    CHECK(n > 0 && dl == sizeof(want) - 1 && memcmp(d, want, dl) == 0, "decoded %zu bytes: %.*s",
          dl, (int)dl, d);
    free(ids);
    free(d);
}

/* Seconds (CPU time, the least of three runs) to encode len bytes of s. */
static double encode_secs(const struct tokenizer *t, const char *s, size_t len, int *n_ids)
{
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        clock_t c0 = clock();
        int32_t *ids = encode(t, s, len, false, false, n_ids);
        double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
        free(ids);
        best = secs < best ? secs : best;
    }
    return best;
}

/* 200 KB without a space or a repeatable whole word: the merge loop must stay near-linear. A
 * complexity check, not a speed target: 4x the input must take well under 16x the time (a
 * quadratic loop) on whatever machine runs it, sanitizers included. */
static void test_long_piece_speed(void)
{
    const struct tokenizer *ts[2] = {g_lfm2, g_gpt2};
    size_t len = 200000;
    char *s = malloc(len);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        s[i] = (char)('a' + (x >> 16) % 26);
    }
    for (int v = 0; v < 2 && ts[v]; v++) {
        int n, n4;
        int32_t *ids = encode(ts[v], s, len, false, false, &n);
        size_t dl;
        char *d = decode(ts[v], ids, n, false, &dl);
        CHECK(dl == len && memcmp(d, s, len) == 0, "long piece round trip");
        free(ids);
        free(d);
        double quarter = encode_secs(ts[v], s, len / 4, &n4),
               whole = encode_secs(ts[v], s, len, &n);
        double ratio = whole / (quarter > 1e-4 ? quarter : 1e-4);
        CHECK(ratio < 9.0, "vocab %d: 4x the input took %.1fx the time (%.3f s vs %.3f s)", v,
              ratio, whole, quarter);
        fprintf(stderr, "  vocab %d: 200 KB unbroken letters -> %d ids in %.3f s (50 KB: %.3f s)\n",
                v, n, whole, quarter);
    }
    free(s);
}

int main(void)
{
    g_lfm2 = load_vocab("lfm2-tiny-F32.gguf", &g_lfm2_file);
    g_gpt2 = load_vocab("tokenizer/ggml-vocab-gpt-2.gguf", &g_gpt2_file);
    if (!g_lfm2 || !g_gpt2)
        h_failed++;
    RUN(test_lfm2_llama3_cases);
    RUN(test_lfm2_extra_cases);
    RUN(test_lfm2_random);
    RUN(test_gpt2_cases);
    RUN(test_gpt2_random);
    RUN(test_roundtrip);
    RUN(test_specials);
    RUN(test_bos);
    RUN(test_eog_and_pieces);
    RUN(test_public_api);
    RUN(test_ref_json);
    RUN(test_refusals);
    RUN(test_invalid_utf8);
    RUN(test_long_piece_speed);
    tok_free(g_lfm2);
    tok_free(g_gpt2);
    gguf_close(g_lfm2_file);
    gguf_close(g_gpt2_file);
    TEST_END();
}
