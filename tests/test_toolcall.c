/*
 * test_toolcall.c: src/toolcall.c and src/reasoning.c on handwritten LFM2 replies: Python and
 * JSON call syntax, nesting, several calls, text around calls, malformed blocks that must come
 * back as content byte for byte. Every reply is also fed in two pieces split at every byte, and
 * one byte at a time, and must give exactly the whole-text result (content, names, arguments,
 * ids, indices). Arguments must be valid JSON objects (cJSON is the oracle for that). Also
 * strbuf.h's grow_array, which the parser's lists and struct sb grow with.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "exsa.h"
#include "harness.h"
#include "reasoning.h"
#include "strbuf.h"
#include "toolcall.h"

#define S TC_START
#define E TC_END

struct tcase {
    const char *in;
    const char *content;
    int n;
    const char *calls[3][2]; /* name, arguments */
};

static const struct tcase cases[] = {
    {S "[get_weather(city=\"Paris\")]" E, "", 1, {{"get_weather", "{\"city\":\"Paris\"}"}}},
    {S "[get_weather(city='Paris')]" E, "", 1, {{"get_weather", "{\"city\":\"Paris\"}"}}},
    {"Let me check." S "[get_weather(city=\"Paris\")]" E,
     "Let me check.",
     1,
     {{"get_weather", "{\"city\":\"Paris\"}"}}},
    {S "[f(a=1, b=-2.5, c=1e3, d=.5, e=5., f=+3, g=2E-7)]" E,
     "",
     1,
     {{"f", "{\"a\":1,\"b\":-2.5,\"c\":1e3,\"d\":0.5,\"e\":5.0,\"f\":3,\"g\":2e-7}"}}},
    {S "[f(a=True, b=False, c=None)]" E, "", 1, {{"f", "{\"a\":true,\"b\":false,\"c\":null}"}}},
    {S "[f(a=true, b=false, c=null)]" E, "", 1, {{"f", "{\"a\":true,\"b\":false,\"c\":null}"}}},
    {S "[f(ids=[1, 2, 3], tags=['a', \"b\"])]" E,
     "",
     1,
     {{"f", "{\"ids\":[1,2,3],\"tags\":[\"a\",\"b\"]}"}}},
    {S "[f(opts={'k': 'v', \"n\": 1})]" E, "", 1, {{"f", "{\"opts\":{\"k\":\"v\",\"n\":1}}"}}},
    {S "[f(q={\"a\": [{\"b\": (1, 2)}], \"c\": {}, 'd': [[], ()]})]" E,
     "",
     1,
     {{"f", "{\"q\":{\"a\":[{\"b\":[1,2]}],\"c\":{},\"d\":[[],[]]}}"}}},
    {S "[search(q=\"cats\"), get_time(tz='UTC', utc=True)]" E,
     "",
     2,
     {{"search", "{\"q\":\"cats\"}"}, {"get_time", "{\"tz\":\"UTC\",\"utc\":true}"}}},
    {S "[math.sqrt(x=4), a.b.c(y=1)]" E,
     "",
     2,
     {{"math.sqrt", "{\"x\":4}"}, {"a.b.c", "{\"y\":1}"}}},
    {S "[f(s='it\\'s', t=\"say \\\"hi\\\"\", u='a\\nb\\tc\\\\d', v='\\q')]" E,
     "",
     1,
     {{"f", "{\"s\":\"it's\",\"t\":\"say \\\"hi\\\"\",\"u\":\"a\\nb\\tc\\\\d\",\"v\":\"\\\\q\"}"}}},
    {S "[f(city=\"Z\xc3\xbcrich\", e='\\u00e9\\U0001F600\\x41')]" E,
     "",
     1,
     {{"f", "{\"city\":\"Z\xc3\xbcrich\",\"e\":\"\xc3\xa9\xf0\x9f\x98\x80"
            "A\"}"}}},
    {S "[ping()]" E, "", 1, {{"ping", "{}"}}},
    {S " [ f( a = 1 , ) ] " E, "", 1, {{"f", "{\"a\":1}"}}},
    {S "[f(a=1,\n  b=2)]" E, "", 1, {{"f", "{\"a\":1,\"b\":2}"}}},
    {S "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]" E,
     "",
     1,
     {{"get_weather", "{\"city\":\"Paris\"}"}}},
    {S "[{\"name\": \"f\", \"arguments\": \"{\\\"x\\\": 1, \\\"y\\\": [true]}\"}]" E,
     "",
     1,
     {{"f", "{\"x\":1,\"y\":[true]}"}}},
    {S "[{\"name\":\"a\",\"arguments\":{}},{\"name\":\"b\",\"parameters\":{\"k\":[true,false]}}]" E,
     "",
     2,
     {{"a", "{}"}, {"b", "{\"k\":[true,false]}"}}},
    {S "{\"name\": \"f\", \"arguments\": {\"a\": 1}}" E, "", 1, {{"f", "{\"a\":1}"}}},
    {S "[{\"id\": 1, \"name\": \"f\", \"arguments\": {\"a\": [1]}, \"type\": \"function\"}]" E,
     "",
     1,
     {{"f", "{\"a\":[1]}"}}},
    {S "[{\"name\": \"g\"}]" E, "", 1, {{"g", "{}"}}},
    {S "f(a=1)" E, "", 1, {{"f", "{\"a\":1}"}}},
    {S "[f(a=1)]", "", 1, {{"f", "{\"a\":1}"}}},
    {S "[f(a=1)]\n", "", 1, {{"f", "{\"a\":1}"}}},
    {"A" S "[f()]" E "B" S "[g()]" E, "AB", 2, {{"f", "{}"}, {"g", "{}"}}},
    {S "[f()]" E " done", " done", 1, {{"f", "{}"}}},
    {S "[f(s=\"" E "\")]" E, "", 1, {{"f", "{\"s\":\"<|tool_call_end|>\"}"}}},
    {S "[f(), g(),]" E, "", 2, {{"f", "{}"}, {"g", "{}"}}},
    {S "[f(s=\"\xff\")]" E, "", 1, {{"f", "{\"s\":\"\xef\xbf\xbd\"}"}}},
    {S "[f(a=007, b=0, c=-0.0)]" E, "", 1, {{"f", "{\"a\":7,\"b\":0,\"c\":-0.0}"}}},
    {S "[f(a='\\101\\0')]" E, "", 1, {{"f", "{\"a\":\"A\\u0000\"}"}}},
    {S "[f(a=\"\\ud83d\\ude00\", b='\\ud83d')]" E,
     "",
     1,
     {{"f", "{\"a\":\"\xf0\x9f\x98\x80\",\"b\":\"\xef\xbf\xbd\"}"}}},
    {S "[f(a='x\x01y\x7f')]" E, "", 1, {{"f", "{\"a\":\"x\\u0001y\x7f\"}"}}},
    {S "[get-weather(city='x')]" E, "", 1, {{"get-weather", "{\"city\":\"x\"}"}}},
    {S "[f(m={1: 'a', 'b': {2.5: None}})]" E,
     "",
     1,
     {{"f", "{\"m\":{\"1\":\"a\",\"b\":{\"2.5\":null}}}"}}},
    {S "[f(path='C:\\\\dir', u=\"\\/\")]" E,
     "",
     1,
     {{"f", "{\"path\":\"C:\\\\dir\",\"u\":\"/\"}"}}},
    {"Sure.\n\n" S "[f(x=\"line1\\nline2\")]" E "\nAnything else?",
     "Sure.\n\n\nAnything else?",
     1,
     {{"f", "{\"x\":\"line1\\nline2\"}"}}},
    /* plain text, and text that only looks like a marker */
    {"Hello world", "Hello world", 0, {{0}}},
    {"a <|tool_ b <|tool_call_end|> c", "a <|tool_ b <|tool_call_end|> c", 0, {{0}}},
    {"Hi <|tool_call_st", "Hi <|tool_call_st", 0, {{0}}},
    {"", "", 0, {{0}}},
    /* malformed blocks: content, byte for byte */
    {S "[f(a=)]" E, S "[f(a=)]" E, 0, {{0}}},
    {S "[f(1, 2)]" E, S "[f(1, 2)]" E, 0, {{0}}},
    {S "[f(a=\"x)]" E, S "[f(a=\"x)]" E, 0, {{0}}},
    {S "[f(a=1", S "[f(a=1", 0, {{0}}},
    {S "[f()] oops" E, S "[f()] oops" E, 0, {{0}}},
    {S "[f(a=foo)]" E, S "[f(a=foo)]" E, 0, {{0}}},
    {S "[f(a=1, a=2)]" E, S "[f(a=1, a=2)]" E, 0, {{0}}},
    {S "[]" E, S "[]" E, 0, {{0}}},
    {S "[f(a=0x1F)]" E, S "[f(a=0x1F)]" E, 0, {{0}}},
    {S "[{\"arguments\": {}}]" E, S "[{\"arguments\": {}}]" E, 0, {{0}}},
    {S "[{\"name\": \"a b\", \"arguments\": {}}]" E,
     S "[{\"name\": \"a b\", \"arguments\": {}}]" E,
     0,
     {{0}}},
    {S "[{\"name\": \"f\", \"arguments\": \"not json\"}]" E,
     S "[{\"name\": \"f\", \"arguments\": \"not json\"}]" E,
     0,
     {{0}}},
    {S "[f(a=1)]<|tool_call_e", S "[f(a=1)]<|tool_call_e", 0, {{0}}},
    {S "[f(a=[1, 2)]" E, S "[f(a=[1, 2)]" E, 0, {{0}}},
    {S "[f(a={'k' 1})]" E, S "[f(a={'k' 1})]" E, 0, {{0}}},
    {S "I will call it." E, S "I will call it." E, 0, {{0}}},
    /* a malformed block, then a good one: the first marker is content, the second a call */
    {S "oops " S "[f()]" E, S "oops ", 1, {{"f", "{}"}}},
    {S "[f(x=" S "[g(y=2)]" E, S "[f(x=", 1, {{"g", "{\"y\":2}"}}},
};

#define N_CASES (int)(sizeof cases / sizeof cases[0])

struct got {
    struct sb content;
    int n;
    char *name[8], *args[8], *id[8];
    int index[8];
    int err;
};

static void got_free(struct got *g)
{
    sb_free(&g->content);
    for (int i = 0; i < g->n; i++)
        free(g->name[i]), free(g->args[i]), free(g->id[i]);
    memset(g, 0, sizeof *g);
}

static void absorb(struct got *g, int rc, const struct tc_events *ev)
{
    if (rc) {
        g->err = rc;
        return;
    }
    sb_put(&g->content, ev->content, ev->content_len);
    for (int i = 0; i < ev->n_deltas && g->n < 8; i++, g->n++) {
        g->index[g->n] = ev->deltas[i].index;
        g->id[g->n] = strdup(ev->deltas[i].id);
        g->name[g->n] = strdup(ev->deltas[i].name);
        g->args[g->n] = strdup(ev->deltas[i].arguments);
    }
}

/* Feeds text in pieces cut at cuts[0..n_cuts) (increasing). */
static void feed_pieces(const char *text, size_t len, const size_t *cuts, int n_cuts, struct got *g)
{
    memset(g, 0, sizeof *g);
    struct tc_parser *p;
    if (tc_parser_new("call_", &p)) {
        g->err = -1;
        return;
    }
    struct tc_events ev;
    size_t at = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        absorb(g, tc_feed(p, text + at, to - at, &ev), &ev);
        at = to;
    }
    absorb(g, tc_finish(p, &ev), &ev);
    tc_parser_free(p);
}

static bool same(const struct got *a, const struct got *b)
{
    if (a->err || b->err || a->n != b->n || a->content.len != b->content.len ||
        (a->content.len && memcmp(a->content.s, b->content.s, a->content.len)))
        return false;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->name[i], b->name[i]) || strcmp(a->args[i], b->args[i]) ||
            strcmp(a->id[i], b->id[i]) || a->index[i] != b->index[i])
            return false;
    return true;
}

static void check_whole(int k, const struct tcase *c)
{
    struct tc_result r;
    size_t len = strlen(c->in);
    CHECK(tc_parse(c->in, len, "call_", &r) == 0, "case %d: parse", k);
    CHECK(strcmp(r.content, c->content) == 0, "case %d: content [%s], want [%s]", k, r.content,
          c->content);
    CHECK(r.n_calls == c->n, "case %d: %d calls, want %d", k, r.n_calls, c->n);
    for (int i = 0; i < r.n_calls && i < c->n; i++) {
        CHECK(strcmp(r.calls[i].name, c->calls[i][0]) == 0, "case %d call %d: name %s", k, i,
              r.calls[i].name);
        CHECK(strcmp(r.calls[i].arguments, c->calls[i][1]) == 0, "case %d call %d: args %s want %s",
              k, i, r.calls[i].arguments, c->calls[i][1]);
        cJSON *j = cJSON_Parse(r.calls[i].arguments);
        CHECK(cJSON_IsObject(j), "case %d call %d: arguments are a JSON object", k, i);
        cJSON_Delete(j);
        char id[16];
        snprintf(id, sizeof id, "call_%d", i);
        CHECK(strcmp(r.calls[i].id, id) == 0, "case %d: id %s", k, r.calls[i].id);
    }
    tc_result_free(&r);
}

static void test_whole(void)
{
    CHECK(N_CASES >= 40, "at least 40 replies (%d)", N_CASES);
    for (int k = 0; k < N_CASES; k++)
        check_whole(k, &cases[k]);
}

/* Every two-piece split and one byte at a time give the whole-text result. */
static void test_splits(void)
{
    for (int k = 0; k < N_CASES; k++) {
        const char *in = cases[k].in;
        size_t len = strlen(in);
        struct got whole, g;
        feed_pieces(in, len, NULL, 0, &whole);
        CHECK(strcmp(whole.content.s ? whole.content.s : "", cases[k].content) == 0 &&
                  whole.n == cases[k].n,
              "case %d: streamed whole", k);
        int bad = -1;
        for (size_t cut = 0; cut <= len && bad < 0; cut++) {
            feed_pieces(in, len, &cut, 1, &g);
            if (!same(&whole, &g))
                bad = (int)cut;
            got_free(&g);
        }
        CHECK(bad < 0, "case %d: split at byte %d differs", k, bad);
        size_t cuts[512];
        int n = 0;
        for (size_t i = 1; i < len && n < 512; i++)
            cuts[n++] = i;
        feed_pieces(in, len, cuts, n, &g);
        CHECK(same(&whole, &g), "case %d: byte by byte differs", k);
        got_free(&g);
        got_free(&whole);
    }
}

/* Content is released as soon as it cannot be a call; a call arrives on the feed that ends it. */
static void test_streaming_holds_little(void)
{
    struct tc_parser *p;
    struct tc_events ev;
    CHECK(tc_parser_new(NULL, &p) == 0, "new");
    CHECK(tc_feed(p, "Hello <|tool", 12, &ev) == 0 && ev.content_len == 6 &&
              !memcmp(ev.content, "Hello ", 6),
          "held only the marker prefix: [%s]", ev.content);
    CHECK(tc_feed(p, "kit", 3, &ev) == 0 && !strcmp(ev.content, "<|toolkit"), "released [%s]",
          ev.content);
    const char *blk = S "[f(a=1)]";
    CHECK(tc_feed(p, blk, strlen(blk), &ev) == 0 && ev.content_len == 0 && ev.n_deltas == 0,
          "the block is held");
    CHECK(tc_feed(p, E "ok", strlen(E) + 2, &ev) == 0 && ev.n_deltas == 1 &&
              !strcmp(ev.content, "ok"),
          "the call on the feed with its end marker");
    CHECK(ev.n_deltas == 1 && ev.deltas[0].index == 0 && !strcmp(ev.deltas[0].id, "call_0") &&
              !strcmp(ev.deltas[0].name, "f") && !strcmp(ev.deltas[0].arguments, "{\"a\":1}"),
          "delta shape");
    /* a block that cannot be a call is released without waiting for the end */
    const char *junk = S "I think the answer is forty-two, and here is why it is so.";
    CHECK(tc_feed(p, junk, strlen(junk), &ev) == 0 && ev.content_len == strlen(junk),
          "junk released at once (%zu of %zu)", ev.content_len, strlen(junk));
    CHECK(tc_finish(p, &ev) == 0 && ev.content_len == 0, "finish");
    CHECK(tc_feed(p, "x", 1, &ev) == EXSA_EINVAL, "no feed after finish");
    CHECK(tc_n_calls(p) == 1 && tc_call(p, 0) && !tc_call(p, 1), "calls kept");
    tc_parser_free(p);
}

/* Deep nesting fails cleanly (no stack overflow): content. */
static void test_deep(void)
{
    struct sb b = {0};
    sb_puts(&b, S "[f(a=");
    for (int i = 0; i < 5000; i++)
        sb_putc(&b, '[');
    sb_puts(&b, "1");
    for (int i = 0; i < 5000; i++)
        sb_putc(&b, ']');
    sb_puts(&b, ")]" E);
    struct tc_result r;
    CHECK(tc_parse(b.s, b.len, NULL, &r) == 0 && r.n_calls == 0 && r.content_len == b.len,
          "deep nesting is content");
    tc_result_free(&r);
    sb_free(&b);
}

/* ---- reasoning ------------------------------------------------------------------------------ */

struct rcase {
    bool open;
    const char *in, *reasoning, *content;
};

static const struct rcase rcases[] = {
    {false, "<think>Let me see.</think>The answer is 4.", "Let me see.", "The answer is 4."},
    {false, "\n<think>\n  step 1\nstep 2  \n</think>\n\nAnswer", "step 1\nstep 2", "Answer"},
    {false, "No thinking here.", "", "No thinking here."},
    {false, "  plain <think>x</think>", "", "  plain <think>x</think>"},
    {false, "<think>unfinished", "unfinished", ""},
    {false, "<think>a </thin", "a </thin", ""},
    {false, "<think></think>", "", ""},
    {false, "<thin", "", "<thin"},
    {false, "<think>a</think>b</think>c", "a", "b</think>c"},
    {false, "<think>x < y </ z</think> ok " S "[f()]" E, "x < y </ z", "ok " S "[f()]" E},
    {true, "reasoning first</think>content", "reasoning first", "content"},
    {true, "  all thinking  ", "all thinking", ""},
    {false, "", "", ""},
    {false, "   ", "", "   "},
};

static void rsn_pieces(const struct rcase *c, const size_t *cuts, int n_cuts, struct sb *rs,
                       struct sb *ct)
{
    struct rsn *r;
    struct rsn_out o;
    size_t len = strlen(c->in), at = 0;
    if (rsn_new(c->open, &r))
        return;
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        if (rsn_feed(r, c->in + at, to - at, &o) == 0)
            sb_put(rs, o.reasoning, o.reasoning_len), sb_put(ct, o.content, o.content_len);
        at = to;
    }
    if (rsn_finish(r, &o) == 0)
        sb_put(rs, o.reasoning, o.reasoning_len), sb_put(ct, o.content, o.content_len);
    rsn_free(r);
}

static void test_reasoning(void)
{
    for (size_t k = 0; k < sizeof rcases / sizeof rcases[0]; k++) {
        const struct rcase *c = &rcases[k];
        size_t len = strlen(c->in), cuts[256];
        for (size_t cut = 0; cut <= len + 1; cut++) {
            struct sb rs = {0}, ct = {0};
            int n = 0;
            if (cut <= len) /* two pieces */
                cuts[n++] = cut;
            else /* one byte at a time */
                for (size_t i = 1; i < len; i++)
                    cuts[n++] = i;
            rsn_pieces(c, cuts, n, &rs, &ct);
            const char *r = rs.s ? rs.s : "", *t = ct.s ? ct.s : "";
            CHECK(!strcmp(r, c->reasoning) && !strcmp(t, c->content),
                  "rcase %zu cut %zu: reasoning [%s] content [%s]", k, cut, r, t);
            sb_free(&rs);
            sb_free(&ct);
        }
    }
}

/* The think block is released as it streams, holding only a possible </think>. */
static void test_reasoning_streams(void)
{
    struct rsn *r;
    struct rsn_out o;
    CHECK(rsn_new(false, &r) == 0, "new");
    CHECK(rsn_feed(r, "<thi", 4, &o) == 0 && !o.reasoning_len && !o.content_len, "held");
    CHECK(rsn_feed(r, "nk>abc</", 8, &o) == 0 && !strcmp(o.reasoning, "abc") && !o.content_len,
          "reasoning streams: [%s]", o.reasoning);
    CHECK(rsn_feed(r, "think>Hi", 8, &o) == 0 && !o.reasoning_len && !strcmp(o.content, "Hi"),
          "content after: [%s]", o.content);
    rsn_free(r);
}

/* grow_array: first capacity, doubling, the same block while it has room, contents kept. */
static void test_grow_array(void)
{
    size_t cap = 0;
    int *v = grow_array(NULL, &cap, 1, sizeof *v, 4);
    CHECK(v && cap == 4, "first: cap %zu", cap);
    if (!v)
        return;
    for (int i = 0; i < 4; i++)
        v[i] = i;
    CHECK(grow_array(v, &cap, 4, sizeof *v, 4) == v && cap == 4, "room left: cap %zu", cap);
    int *w = grow_array(v, &cap, 9, sizeof *v, 4);
    CHECK(w && cap == 16, "doubled until 9 fit: cap %zu", cap);
    if (w) {
        v = w;
        w[8] = 8;
        CHECK(w[0] == 0 && w[3] == 3 && w[8] == 8, "contents kept");
    }
    free(v);
}

int main(void)
{
    RUN(test_whole);
    RUN(test_splits);
    RUN(test_streaming_holds_little);
    RUN(test_deep);
    RUN(test_reasoning);
    RUN(test_reasoning_streams);
    RUN(test_grow_array);
    TEST_END();
}
