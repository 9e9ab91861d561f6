/*
 * fuzz_jsonschema.c: a libFuzzer target over the schema compiler (jsonschema.c) and the
 * automaton (grammar.c). The input is a schema's text, a NUL byte, then a reply's bytes. A
 * schema either compiles or fails with a message; when it compiles, the reply is fed byte by
 * byte, and a reply the automaton accepts whole must be JSON that validates against the schema
 * by the tests' independent validator (tests/schema-check.h); else abort(). Seeds:
 * tests/fuzz/jsonschema/. Build and run: `make fuzz FUZZ=jsonschema`.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "jsonschema.h"
#include "schema-check.h"

static struct gr_state st[2];

static bool accepts(const struct grammar *g, const uint8_t *s, size_t n)
{
    int cur = 0;
    if (!gr_start(g, &st[0]))
        return false;
    for (size_t i = 0; i < n; i++, cur ^= 1)
        if (!gr_step(g, &st[cur], s[i], &st[cur ^ 1]))
            return false;
    return gr_step(g, &st[cur], GR_END, &st[cur ^ 1]) == 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t ns = nul ? (size_t)(nul - data) : size;
    char *schema = strndup((const char *)data, ns);
    const uint8_t *text = nul ? nul + 1 : data + size;
    size_t nt = nul ? size - ns - 1 : 0;
    char err[256] = "";
    struct grammar *g = NULL;
    int rc = schema ? js_schema(schema, &g, err, sizeof err) : 0;
    if (rc && (!err[0] || g))
        abort(); /* an error always says what was wrong */
    if (!rc && g && accepts(g, text, nt)) {
        char *t = strndup((const char *)text, nt);
        /* cJSON ends strings at a NUL, so \u0000 would change string lengths */
        if (t && strlen(t) == nt && !strstr(t, "\\u0000") && !sc_check(t, schema))
            abort();
        free(t);
    }
    js_free(g);
    free(schema);
    return 0;
}
