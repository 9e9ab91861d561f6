/*
 * fuzz_toolcall.c: a libFuzzer target over the tool-call parser (toolcall.c) and the think
 * splitter (reasoning.c). The input is a reply's raw bytes. Every reply must parse without a
 * crash, every call's arguments must be a JSON object (cJSON), and feeding the reply in pieces
 * (cut where the input's first byte says, and one byte at a time) must give exactly the
 * whole-reply result; else abort(). Seeds: tests/fuzz/toolcall/. Build and run: `make fuzz`.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reasoning.h"
#include "strbuf.h"
#include "toolcall.h"

/* Content, then each call as id \1 name \1 arguments \2, all in one string. */
static void flatten(struct sb *out, const char *content, size_t n, struct tc_parser *p)
{
    sb_put(out, content, n);
    sb_putc(out, '\3');
    for (int i = 0; i < tc_n_calls(p); i++) {
        const struct tc_call *c = tc_call(p, i);
        cJSON *j = cJSON_Parse(c->arguments);
        if (!cJSON_IsObject(j))
            abort();
        cJSON_Delete(j);
        sb_puts(out, c->id), sb_putc(out, '\1'), sb_puts(out, c->name), sb_putc(out, '\1');
        sb_puts(out, c->arguments), sb_putc(out, '\2');
    }
}

/* Feeds data in pieces of `step` bytes (0: whole) and flattens the result into out. */
static void tc_run(const uint8_t *data, size_t size, size_t step, struct sb *out)
{
    struct tc_parser *p;
    struct tc_events ev;
    struct sb content = {0};
    if (tc_parser_new(NULL, &p))
        abort();
    for (size_t at = 0; at < size;) {
        size_t n = step && size - at > step ? step : size - at;
        if (tc_feed(p, (const char *)data + at, n, &ev))
            abort();
        sb_put(&content, ev.content, ev.content_len);
        at += n;
    }
    if (tc_finish(p, &ev))
        abort();
    sb_put(&content, ev.content, ev.content_len);
    flatten(out, content.s ? content.s : "", content.len, p);
    sb_free(&content);
    tc_parser_free(p);
}

static void rsn_run(const uint8_t *data, size_t size, size_t step, struct sb *out)
{
    struct rsn *r;
    struct rsn_out o;
    struct sb rs = {0};
    if (rsn_new(size && (data[0] & 1), &r))
        abort();
    for (size_t at = 0; at < size;) {
        size_t n = step && size - at > step ? step : size - at;
        if (rsn_feed(r, (const char *)data + at, n, &o))
            abort();
        sb_put(&rs, o.reasoning, o.reasoning_len), sb_put(out, o.content, o.content_len);
        at += n;
    }
    if (rsn_finish(r, &o))
        abort();
    sb_put(&rs, o.reasoning, o.reasoning_len), sb_put(out, o.content, o.content_len);
    sb_putc(out, '\3');
    sb_put(out, rs.s, rs.len);
    sb_free(&rs);
    rsn_free(r);
}

static void same(struct sb *a, struct sb *b)
{
    if (a->len != b->len || (a->len && memcmp(a->s, b->s, a->len)))
        abort();
    sb_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t step = size ? 1 + data[0] % 23 : 1;
    struct sb whole = {0}, piece = {0};
    tc_run(data, size, 0, &whole);
    tc_run(data, size, step, &piece);
    same(&whole, &piece);
    tc_run(data, size, 1, &piece);
    same(&whole, &piece);
    sb_free(&whole);
    rsn_run(data, size, 0, &whole);
    rsn_run(data, size, step, &piece);
    same(&whole, &piece);
    sb_free(&whole);
    return 0;
}
