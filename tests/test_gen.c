/*
 * test_gen.c: src/gen.c on the tiny fixture's vocabulary, driven by one-hot logits so each step
 * samples a chosen token: UTF-8 hold-back (a 4-byte emoji in 4 byte tokens), stop strings held
 * back and matched across token borders, the finish reasons, the empty-reply sentences, the
 * penalty window fed by the prompt, and the defaults.
 */
#include <string.h>

#include "gen.h"
#include "gguf.h"
#include "harness.h"
#include "sampler.h"
#include "tokenizer.h"

static struct gguf_file *g_file;
static struct tokenizer *g_tok;
static int g_nv;
static int32_t g_byte[256]; /* the token whose piece is exactly this one byte, or -1 */
static int32_t g_eog;       /* <|im_end|> */

static int setup(void)
{
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/lfm2-tiny-F32.gguf", fixtures_dir());
    if (gguf_open(path, &g_file, err, sizeof err) || tok_load(g_file, 0, &g_tok, err, sizeof err)) {
        fprintf(stderr, "cannot open the tiny model: %s\n", err);
        return -1;
    }
    g_nv = tok_n_vocab(g_tok);
    memset(g_byte, 0xff, sizeof g_byte);
    for (int32_t id = 0; id < g_nv; id++) {
        const char *p;
        size_t n;
        if (!tok_is_control(g_tok, id) && tok_piece(g_tok, id, false, &p, &n) == 0 && n == 1 &&
            g_byte[(unsigned char)p[0]] < 0)
            g_byte[(unsigned char)p[0]] = id;
    }
    g_eog = tok_find(g_tok, "<|im_end|>");
    return 0;
}

static struct gen *make(const char *const *stop, int n_stop, int max_tokens)
{
    struct gen_params p;
    gen_params_default(&p);
    p.sp.temperature = 0; /* greedy: the one-hot logit decides */
    p.sp.seed = 1;
    p.stop = stop;
    p.n_stop = n_stop;
    p.max_tokens = max_tokens;
    struct gen *g = NULL;
    int rc = gen_create(g_tok, g_nv, &p, &g);
    CHECK(rc == 0, "gen_create: %d", rc);
    return g;
}

/* Feeds token id; appends the shown text to acc; returns the length shown by this step. */
static size_t step(struct gen *g, int32_t id, char *acc)
{
    float *l = calloc((size_t)g_nv, sizeof *l);
    l[id] = 20;
    const char *t;
    size_t n;
    int32_t got = gen_next(g, l, &t, &n);
    CHECK(got == id, "sampled %d, wanted %d", got, id);
    strncat(acc, t, n);
    free(l);
    return n;
}

static void test_utf8_holdback(void)
{
    const unsigned char emoji[4] = {0xF0, 0x9F, 0xA6, 0x99}; /* U+1F999 llama */
    for (int i = 0; i < 4; i++)
        CHECK(g_byte[emoji[i]] >= 0, "byte token for %02x", emoji[i]);
    CHECK(g_byte['a'] >= 0, "byte token for a");
    struct gen *g = make(NULL, 0, 0);
    char acc[64] = "";
    CHECK(step(g, g_byte['a'], acc) == 1, "ASCII shown at once");
    for (int i = 0; i < 3; i++)
        CHECK(step(g, g_byte[emoji[i]], acc) == 0, "byte %d of the emoji held back", i);
    CHECK(step(g, g_byte[emoji[3]], acc) == 4, "the whole emoji shown with its last byte");
    CHECK(strcmp(acc, "a\xF0\x9F\xA6\x99") == 0, "text: %s", acc);
    /* an impossible byte sequence is shown as U+FFFD rather than held forever */
    step(g, g_byte[0xF0], acc);
    CHECK(step(g, g_byte['b'], acc) == 4, "lead byte + ASCII: U+FFFD and b");
    CHECK(strcmp(acc, "a\xF0\x9F\xA6\x99\xEF\xBF\xBD"
                      "b") == 0,
          "text: %s", acc);
    /* max_tokens ends the reply mid-character: the tail becomes U+FFFD */
    gen_free(g);
    g = make(NULL, 0, 2);
    acc[0] = 0;
    step(g, g_byte[0xF0], acc);
    CHECK(gen_finished(g) == GEN_RUNNING, "running after 1 of 2");
    step(g, g_byte[0x9F], acc);
    CHECK(gen_finished(g) == GEN_LENGTH, "max_tokens -> GEN_LENGTH");
    CHECK(strcmp(acc, "\xEF\xBF\xBD\xEF\xBF\xBD") == 0, "incomplete tail replaced");
    CHECK(strcmp(gen_finish_reason(gen_finished(g)), "length") == 0, "finish_reason length");
    gen_free(g);
}

static void test_stop_strings(void)
{
    const char *stops[] = {"END", "", "xyzzy"};
    struct gen *g = make(stops, 3, 0);
    char acc[64] = "";
    CHECK(step(g, g_byte['x'], acc) == 0, "x could start xyzzy: held");
    CHECK(step(g, g_byte['E'], acc) == 1, "xE: x can no longer start a stop, shown; E held");
    CHECK(step(g, g_byte['N'], acc) == 0, "EN held");
    CHECK(step(g, g_byte['x'], acc) == 2, "ENx is no stop: EN shown, x held");
    CHECK(strcmp(acc, "xEN") == 0, "so far: %s", acc);
    step(g, g_byte['E'], acc);
    step(g, g_byte['N'], acc);
    CHECK(gen_finished(g) == GEN_RUNNING, "still running");
    step(g, g_byte['D'], acc);
    CHECK(gen_finished(g) == GEN_STOP, "END across three tokens -> GEN_STOP");
    CHECK(strcmp(acc, "xENx") == 0, "text before the stop string only: %s", acc);
    CHECK(gen_empty_reason(g) == NULL, "not an empty reply");
    CHECK(strcmp(gen_finish_reason(GEN_STOP), "stop") == 0, "finish_reason stop");
    const char *t;
    size_t n;
    gen_flush(g, &t, &n);
    CHECK(n == 0, "nothing after the stop string");
    gen_free(g);
    /* a stop string inside one multi-byte token: the text before it is shown */
    int32_t word[8];
    int nw = tok_encode(g_tok, " the", 4, false, false, word, 8);
    CHECK(nw == 1, "' the' is one token (%d)", nw);
    const char *st[] = {"he"};
    g = make(st, 1, 0);
    acc[0] = 0;
    step(g, g_byte['A'], acc);
    step(g, word[0], acc);
    CHECK(gen_finished(g) == GEN_STOP && strcmp(acc, "A t") == 0, "stop inside a token: %s", acc);
    gen_free(g);
}

/* A step that releases more held text than the output buffer had room for: the returned
 * pointer must be the grown buffer (a regression: it used to point at the freed one). */
static void test_long_release(void)
{
    char stop[202];
    memset(stop, 'a', 200);
    stop[200] = 'Z', stop[201] = 0;
    const char *stops[] = {stop};
    struct gen *g = make(stops, 1, 150);
    char acc[256] = "";
    size_t last = 0;
    for (int i = 0; i < 150; i++)
        last = step(g, g_byte['a'], acc);
    CHECK(gen_finished(g) == GEN_LENGTH, "max_tokens ends it");
    CHECK(last == 150 && strlen(acc) == 150 && strspn(acc, "a") == 150,
          "150 held bytes released at once (last step %zu, text %zu)", last, strlen(acc));
    gen_free(g);
}

static void test_eog_and_cancel(void)
{
    CHECK(g_eog == 7 && tok_is_eog(g_tok, g_eog), "<|im_end|> is EOG id 7");
    const char *stops[] = {"END"};
    struct gen *g = make(stops, 1, 0);
    char acc[64] = "";
    step(g, g_byte['h'], acc);
    step(g, g_byte['E'], acc);
    CHECK(strcmp(acc, "h") == 0, "E held back");
    step(g, g_eog, acc);
    CHECK(gen_finished(g) == GEN_EOG, "EOG -> GEN_EOG");
    CHECK(strcmp(acc, "hE") == 0, "held text released at EOG, EOG text not shown: %s", acc);
    CHECK(gen_n_tokens(g) == 3, "3 tokens, the EOG included");
    CHECK(strcmp(gen_finish_reason(GEN_EOG), "stop") == 0, "finish_reason stop");
    const char *t;
    size_t n;
    CHECK(gen_next(g, NULL, &t, &n) == -1 && n == 0, "no token after the end");
    gen_free(g);
    /* ignore_eog: the EOG token neither ends the reply nor shows */
    struct gen_params p;
    gen_params_default(&p);
    p.sp.temperature = 0;
    p.ignore_eog = true;
    gen_create(g_tok, g_nv, &p, &g);
    acc[0] = 0;
    step(g, g_eog, acc);
    step(g, g_byte['z'], acc);
    CHECK(gen_finished(g) == GEN_RUNNING && strcmp(acc, "z") == 0, "ignore_eog: %s", acc);
    gen_free(g);
    /* cancel: the held-back text comes out of gen_flush */
    g = make(stops, 1, 0);
    acc[0] = 0;
    step(g, g_byte['E'], acc);
    gen_flush(g, &t, &n);
    CHECK(n == 0, "no flush while running");
    gen_end(g, GEN_CANCELLED);
    gen_flush(g, &t, &n);
    CHECK(n == 1 && t[0] == 'E', "flush after cancel gives the held text");
    CHECK(strcmp(gen_finish_reason(gen_finished(g)), "cancelled") == 0, "cancelled");
    CHECK(gen_finish_reason(GEN_RUNNING) == NULL, "no finish_reason while running");
    gen_free(g);
}

static void test_empty_reasons(void)
{
    struct gen *g = make(NULL, 0, 0);
    char acc[64] = "";
    step(g, g_eog, acc);
    const char *r = gen_empty_reason(g);
    CHECK(r && strcmp(r, "the model ended its reply at once with end-of-generation token "
                         "<|im_end|> (id 7)") == 0,
          "EOG reason: %s", r ? r : "(null)");
    gen_free(g);
    const char *stops[] = {"\n\n", "Q"};
    g = make(stops, 2, 0);
    step(g, g_byte['\n'], acc);
    CHECK(gen_empty_reason(g) == NULL, "no reason while running");
    step(g, g_byte['\n'], acc);
    r = gen_empty_reason(g);
    CHECK(r && strcmp(r, "the stop string \"\\n\\n\" matched at the start of the reply") == 0,
          "stop reason: %s", r ? r : "(null)");
    gen_free(g);
    g = make(stops, 2, 0);
    step(g, g_byte['a'], acc);
    step(g, g_eog, acc);
    CHECK(gen_empty_reason(g) == NULL, "a reply with text has no empty reason");
    gen_free(g);
}

static void test_prompt_penalty_and_seed(void)
{
    struct gen_params p;
    gen_params_default(&p);
    CHECK(p.sp.temperature == 0.3f && p.sp.min_p == 0.15f && p.sp.repeat_penalty == 1.05f &&
              p.sp.penalty_last_n == 64 && p.sp.top_k <= 0 && p.sp.top_p >= 1 &&
              p.sp.seed == SAMPLER_SEED_RANDOM && p.max_tokens == 0 && !p.ignore_eog,
          "Liquid's defaults");
    p.sp.temperature = 0;
    struct gen *g;
    gen_create(g_tok, g_nv, &p, &g);
    int32_t a = g_byte['a'], b = g_byte['b'];
    gen_prompt(g, &a, 1);
    float *l = calloc((size_t)g_nv, sizeof *l);
    l[a] = 1.0f, l[b] = 0.99f;
    const char *t;
    size_t n;
    CHECK(gen_next(g, l, &t, &n) == b, "prompt token penalised (1/1.05 < 0.99)");
    gen_free(g);
    /* same seed, same settings, same logits -> same tokens */
    int32_t seq[2][20];
    for (int r = 0; r < 2; r++) {
        gen_params_default(&p);
        p.sp.seed = 77;
        p.sp.temperature = 1.5f;
        p.sp.min_p = 0;
        gen_create(g_tok, g_nv, &p, &g);
        for (int i = 0; i < 20; i++) {
            for (int v = 0; v < g_nv; v++)
                l[v] = (float)((v * 37) % 11) * 0.3f;
            l[g_eog] = -1e9f;
            l[2] = -1e9f;
            seq[r][i] = gen_next(g, l, &t, &n);
        }
        gen_free(g);
    }
    CHECK(memcmp(seq[0], seq[1], sizeof seq[0]) == 0, "seeded generation repeats");
    free(l);
    CHECK(gen_create(g_tok, 0, &p, &g) == EXSA_EINVAL, "n_vocab 0 rejected");
    const char *bad[] = {NULL};
    p.stop = bad;
    p.n_stop = 1;
    CHECK(gen_create(g_tok, g_nv, &p, &g) == EXSA_EINVAL, "NULL stop string rejected");
}

/* gen_logprobs: the sampled token first at temperature 0, with its bytes (special tokens as
 * their text); off unless asked for; top_logprobs out of range is refused. */
static void test_logprobs(void)
{
    struct gen_params p;
    gen_params_default(&p);
    p.sp.temperature = 0;
    p.logprobs = true;
    p.top_logprobs = 21;
    struct gen *g = NULL;
    CHECK(gen_create(g_tok, g_nv, &p, &g) == EXSA_EINVAL && !g, "top_logprobs 21 refused");
    p.top_logprobs = 3;
    CHECK(gen_create(g_tok, g_nv, &p, &g) == 0, "create");
    if (!g)
        return;
    struct gen_logprob c, top[3];
    CHECK(gen_logprobs(g, &c, top, 3) == -1, "nothing sampled yet");
    char acc[128] = "";
    int32_t tcs = tok_find(g_tok, "<|tool_call_start|>");
    int32_t ids[2] = {g_byte['q'], tcs};
    for (int i = 0; i < 2; i++) {
        step(g, ids[i], acc);
        int n = gen_logprobs(g, &c, top, 3);
        const char *want = i == 0 ? "q" : "<|tool_call_start|>";
        CHECK(n == 3 && c.id == ids[i] && top[0].id == ids[i], "chosen first (%d)", n);
        CHECK(c.len == strlen(want) && !memcmp(c.bytes, want, c.len), "bytes of %d", ids[i]);
        CHECK(c.logprob <= 0 && c.logprob > -1e-3f && top[1].logprob < -19, "one-hot logprobs %f",
              c.logprob);
    }
    gen_free(g);
    g = make(NULL, 0, 0);
    step(g, g_byte['q'], acc);
    CHECK(gen_logprobs(g, &c, top, 3) == -1, "off by default");
    gen_free(g);
}

int main(void)
{
    if (setup()) {
        h_failed++;
        TEST_END();
    }
    RUN(test_utf8_holdback);
    RUN(test_stop_strings);
    RUN(test_long_release);
    RUN(test_eog_and_cancel);
    RUN(test_empty_reasons);
    RUN(test_prompt_penalty_and_seed);
    RUN(test_logprobs);
    tok_free(g_tok);
    gguf_close(g_file);
    TEST_END();
}
