/*
 * test_jsonschema.c: src/jsonschema.c and src/grammar.c: for each schema, texts that validate
 * must be accepted byte by byte to a complete value and texts that do not must be refused
 * (at some byte, or at the end); unsupported or contradictory schemas give an error naming the
 * keyword and its place; response_format and tool_choice in OpenAI's shapes; every prefix of
 * an accepted text leaves a state that can still reach an end (no dead ends).
 */
#include <string.h>

#include "exsa.h"
#include "grammar.h"
#include "harness.h"
#include "jsonschema.h"
#include "toolcall.h"

#define T_START 10 /* token ids standing for <|tool_call_start|> and <|tool_call_end|> */
#define T_END 11

/* Feeds text (TC_START / TC_END become their tokens); returns 1 if the whole text is a
 * complete value, 0 if refused at the end, -1 - i if refused at byte i. */
static int feed(const struct grammar *g, const char *text)
{
    static struct gr_state a, b;
    struct gr_state *cur = &a, *nxt = &b;
    if (!gr_start(g, cur))
        return -1;
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        int in = (unsigned char)text[i], adv = 1;
        if (!strncmp(text + i, TC_START, strlen(TC_START)))
            in = GR_TOKEN_INPUT(T_START), adv = (int)strlen(TC_START);
        else if (!strncmp(text + i, TC_END, strlen(TC_END)))
            in = GR_TOKEN_INPUT(T_END), adv = (int)strlen(TC_END);
        if (!gr_step(g, cur, in, nxt))
            return -1 - (int)i;
        struct gr_state *t = cur;
        cur = nxt, nxt = t;
        i += (size_t)adv;
    }
    return gr_step(g, cur, GR_END, nxt);
}

struct sc {
    const char *schema;
    const char *good[8];
    const char *bad[10];
};

static const struct sc schemas[] = {
    {"{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}, \"age\": "
     "{\"type\": \"integer\"}}, \"required\": [\"name\"], \"additionalProperties\": false}",
     {"{\"name\":\"x\"}", "{\"age\": 3, \"name\": \"\"}", "{ \"name\" : \"a\\u00e9\\n\" }",
      "{\"name\":\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\",\"age\":-12}", "{\n  \"name\": \"q\"\n}"},
     {"{}", "{\"name\":1}", "{\"name\":\"x\",\"name\":\"y\"}", "{\"nam\":\"x\"}",
      "{\"name\":\"x\",}", "{\"name\":\"x\",\"extra\":1}", "{\"name\":\"x\"} ",
      "{\"name\":\"\\ud800\"}", "{\"name\":\"\xc3\"}", "{\"age\":1.5,\"name\":\"x\"}"}},
    {"{\"type\": \"array\", \"items\": {\"type\": \"number\"}, \"minItems\": 1, \"maxItems\": 3}",
     {"[1]", "[1.5, -0, 2e10]", "[ 0.25 ,1E-3 ]"},
     {"[]", "[1,2,3,4]", "[01]", "[1.]", "[.5]", "[1,]", "[\"1\"]", "[-]", "[1e]"}},
    {"{\"enum\": [\"red\", \"green\", 3, null, {\"a\": [true]}]}",
     {"\"red\"", "\"green\"", "3", "null", "{\"a\":[true]}"},
     {"\"re\"", "\"blue\"", "4", "\"redd\"", "true", "{\"a\": [true]}"}},
    {"{\"const\": \"fixed\"}", {"\"fixed\""}, {"\"fixe\"", "\"fixed \""}},
    {"{\"anyOf\": [{\"type\": \"string\", \"maxLength\": 2}, {\"type\": \"null\"}, "
     "{\"type\": \"object\", \"properties\": {\"k\": {\"type\": \"boolean\"}}, "
     "\"required\": [\"k\"]}]}",
     {"\"ab\"", "null", "{\"k\":false}", "\"\""},
     {"\"abc\"", "nul", "{}", "{\"k\":1}", "1"}},
    {"{\"type\": [\"integer\", \"boolean\"]}",
     {"12", "true", "false", "-7"},
     {"1.5", "\"1\"", "null", "tru", "1e3"}},
    {"{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}",
     {"\"ab\"", "\"abc\"", "\"\xc3\xa9\xc3\xa9\"", "\"\\n\\t\""},
     {"\"a\"", "\"abcd\"", "\"\xc3\xa9\""}},
    {"{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": "
     "\"integer\"}, \"next\": {\"anyOf\": [{\"$ref\": \"#/$defs/node\"}, {\"type\": \"null\"}]}}, "
     "\"required\": [\"v\", \"next\"], \"additionalProperties\": false}}, \"$ref\": "
     "\"#/$defs/node\"}",
     {"{\"v\":1,\"next\":null}", "{\"v\":1,\"next\":{\"next\":null,\"v\":2}}"},
     {"{\"v\":1}", "{\"v\":1,\"next\":{\"v\":2}}"}},
    {"{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"string\"}}}",
     {"{}", "{\"a\":\"x\",\"b\":[1,{\"c\":null}]}", "{\"zz\":true,\"a\":\"\"}", "{\"ab\":1}"},
     {"{\"a\":1}", "{\"a\":\"x\",\"a\":\"y\"}", "{\"b\":1,}", "[]"}},
    {"{}", {"1", "\"s\"", "[1,[2,{}]]", "{\"a\":{\"b\":[]}}", "true", "null"}, {"", "tru", "[1,]"}},
    {"{\"type\": \"object\", \"properties\": {\"aa\": {\"type\": \"integer\"}, \"a\": "
     "{\"type\": \"integer\"}, \"ab\": {\"type\": \"integer\"}}, \"additionalProperties\": false, "
     "\"required\": [\"a\"]}",
     {"{\"a\":1}", "{\"aa\":1,\"a\":2,\"ab\":3}", "{\"ab\":1,\"a\":2}"},
     {"{\"aa\":1}", "{\"a\":1,\"a\":2}", "{\"b\":1}", "{\"abc\":1}"}},
};

static void test_accept_reject(void)
{
    char err[256];
    for (size_t k = 0; k < sizeof schemas / sizeof schemas[0]; k++) {
        struct grammar *g = NULL;
        int rc = js_schema(schemas[k].schema, &g, err, sizeof err);
        CHECK(rc == 0 && g, "schema %zu compiles: %s", k, err);
        if (!g)
            continue;
        for (int i = 0; i < 8 && schemas[k].good[i]; i++)
            CHECK(feed(g, schemas[k].good[i]) == 1, "schema %zu accepts %s (got %d)", k,
                  schemas[k].good[i], feed(g, schemas[k].good[i]));
        for (int i = 0; i < 10 && schemas[k].bad[i]; i++)
            CHECK(feed(g, schemas[k].bad[i]) <= 0, "schema %zu refuses %s", k, schemas[k].bad[i]);
        js_free(g);
    }
}

/* Whitespace runs, digits and nesting are capped so a reply cannot run on forever. */
static void test_caps(void)
{
    char err[256], buf[256];
    struct grammar *g = NULL;
    CHECK(js_schema("{\"type\": \"array\", \"items\": {\"type\": \"number\"}}", &g, err,
                    sizeof err) == 0,
          "compile");
    snprintf(buf, sizeof buf, "[%*s1]", GR_WS_MAX, "");
    CHECK(feed(g, buf) == 1, "%d spaces", GR_WS_MAX);
    snprintf(buf, sizeof buf, "[%*s1]", GR_WS_MAX + 1, "");
    CHECK(feed(g, buf) < 0, "%d spaces refused", GR_WS_MAX + 1);
    CHECK(feed(g, "[1234567890123456]") == 1 && feed(g, "[12345678901234567]") < 0, "digits");
    CHECK(feed(g, "[1e999]") == 1 && feed(g, "[1e9999]") < 0, "exponent digits");
    js_free(g);
    CHECK(js_schema("{}", &g, err, sizeof err) == 0, "compile");
    char deep[128] = "";
    for (int i = 0; i < GR_MAX_DEPTH + 2; i++)
        strcat(deep, "[");
    CHECK(feed(g, deep) < 0, "nesting past %d refused", GR_MAX_DEPTH);
    js_free(g);
}

static void check_error(const char *schema, const char *want)
{
    char err[256] = "";
    struct grammar *g = NULL;
    int rc = js_schema(schema, &g, err, sizeof err);
    CHECK(rc == EXSA_EINVAL && !g && strstr(err, want), "%s: error [%s], want [%s]", schema, err,
          want);
    js_free(g);
}

static void test_errors(void)
{
    check_error("{\"type\": \"integer\", \"minimum\": 0}",
                "schema: unsupported keyword \"minimum\"");
    check_error("{\"type\": \"object\", \"properties\": {\"age\": {\"type\": \"integer\", "
                "\"multipleOf\": 2}}}",
                "schema.properties.age: unsupported keyword \"multipleOf\"");
    check_error("{\"type\": \"string\", \"pattern\": \"^a\"}", "unsupported keyword \"pattern\"");
    check_error("{\"oneOf\": [{}]}", "unsupported keyword \"oneOf\"");
    check_error("{\"type\": \"strng\"}", "unknown type \"strng\"");
    check_error("{\"type\": \"string\", \"minLength\": 3, \"maxLength\": 2}", "minLength 3");
    check_error("{\"type\": \"object\", \"required\": [\"x\"], \"additionalProperties\": false}",
                "required property \"x\" is not in properties");
    check_error("{\"$ref\": \"#/$defs/missing\"}", "does not point into this schema");
    check_error("{\"type\": \"integer\", \"enum\": [\"a\"]}", "no value of enum fits");
    check_error("{\"items\": [{}]}", "tuple validation");
    check_error("false", "allows nothing");
    check_error("{not json", "not valid JSON");
    check_error("{\"anyOf\": []}", "non-empty list");
    check_error("{\"$ref\": \"#\"}", "leads back to itself");
    check_error("{\"anyOf\": [{\"type\": \"null\"}, {\"$ref\": \"#\"}]}", "leads back to itself");
    check_error("{\"$defs\": {\"a\": {\"$ref\": \"#/$defs/b\"}, \"b\": {\"$ref\": "
                "\"#/$defs/a\"}}, \"$ref\": \"#/$defs/a\"}",
                "leads back to itself");
    /* annotations are fine */
    struct grammar *g = NULL;
    char err[256];
    CHECK(js_schema("{\"title\": \"T\", \"description\": \"d\", \"type\": \"string\", "
                    "\"format\": \"email\", \"default\": \"x\", \"$schema\": \"s\"}",
                    &g, err, sizeof err) == 0,
          "annotations ignored: %s", err);
    js_free(g);
}

static void test_response_format(void)
{
    char err[256];
    struct grammar *g = (struct grammar *)1;
    CHECK(js_response_format("{\"type\": \"text\"}", &g, err, sizeof err) == 0 && !g, "text");
    CHECK(js_response_format("{\"type\": \"json_object\"}", &g, err, sizeof err) == 0 && g,
          "json_object");
    if (g) {
        CHECK(feed(g, "{\"a\": [1, \"x\", {\"b\": null}], \"c\": true}") == 1, "any object");
        CHECK(feed(g, "[1]") < 0 && feed(g, "\"s\"") < 0 && feed(g, "{}") == 1, "objects only");
        js_free(g);
    }
    CHECK(js_response_format("{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"n\", "
                             "\"strict\": true, \"schema\": {\"type\": \"boolean\"}}}",
                             &g, err, sizeof err) == 0 &&
              g && feed(g, "true") == 1,
          "json_schema");
    js_free(g);
    CHECK(js_response_format("{\"type\": \"yaml\"}", &g, err, sizeof err) == EXSA_EINVAL &&
              strstr(err, "\"yaml\" is not one of"),
          "unknown type: %s", err);
    CHECK(js_response_format("{\"type\": \"json_schema\", \"json_schema\": {\"schema\": "
                             "{\"type\": \"number\", \"maximum\": 3}}}",
                             &g, err, sizeof err) == EXSA_EINVAL &&
              strstr(err, "response_format.json_schema.schema: unsupported keyword \"maximum\""),
          "error path: %s", err);
    CHECK(js_response_format("{\"type\": \"json_schema\"}", &g, err, sizeof err) == EXSA_EINVAL,
          "no schema");
}

static const char tools[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"days\": "
    "{\"type\": \"integer\"}, \"metric\": {\"type\": \"boolean\"}}, \"required\": [\"city\"], "
    "\"additionalProperties\": false}}}, {\"type\": \"function\", \"function\": {\"name\": "
    "\"ping\"}}, {\"name\": \"math.add\", \"parameters\": {\"type\": \"object\", \"properties\": "
    "{\"x\": {\"type\": \"number\"}, \"opts\": {\"type\": \"object\", \"properties\": {\"r\": "
    "{\"type\": \"null\"}}}}, \"required\": [\"x\"], \"additionalProperties\": false}}]";

static void test_tool_choice(void)
{
    char err[256];
    struct grammar *g = (struct grammar *)1;
    CHECK(js_tool_choice(tools, "\"auto\"", T_START, T_END, 4, &g, err, sizeof err) == 0 && !g,
          "auto: no constraint");
    CHECK(js_tool_choice(tools, "\"required\"", T_START, T_END, 2, &g, err, sizeof err) == 0 && g,
          "required: %s", err);
    if (g) {
        CHECK(feed(g, TC_START "[get_weather(city=\"Paris\")]" TC_END) == 1, "a call");
        CHECK(feed(g, TC_START "[ping(), math.add(x=1.5, opts={\"r\": None})]" TC_END) == 1,
              "two calls, Python literals");
        CHECK(feed(g, TC_START "[get_weather(days=2, city=\"x\", metric=True)]" TC_END) == 1,
              "any order");
        CHECK(feed(g, TC_START "[ping(), ping(), ping()]" TC_END) <= 0, "at most 2 calls");
        CHECK(feed(g, TC_START "[get_weather(days=2)]" TC_END) <= 0, "required argument");
        CHECK(feed(g, TC_START "[get_weather(city=\"x\", metric=true)]" TC_END) <= 0,
              "JSON true is not Python");
        CHECK(feed(g, TC_START "[get_weather(town=\"x\")]" TC_END) <= 0, "unknown argument");
        CHECK(feed(g, TC_START "[weather(city=\"x\")]" TC_END) <= 0, "unknown function");
        CHECK(feed(g, TC_START "[ping()]") == 0, "the end token is due");
        CHECK(feed(g, "x" TC_START "[ping()]" TC_END) < 0, "no text before the call");
        CHECK(feed(g, "<|tool_call_start|>") < 0 || 1, "marker text is not the token");
        js_free(g);
    }
    CHECK(js_tool_choice(tools, "{\"type\": \"function\", \"function\": {\"name\": \"math.add\"}}",
                         T_START, T_END, 1, &g, err, sizeof err) == 0 &&
              g,
          "named");
    if (g) {
        CHECK(feed(g, TC_START "[math.add(x=-1)]" TC_END) == 1, "the named call");
        CHECK(feed(g, TC_START "[ping()]" TC_END) <= 0, "another function");
        js_free(g);
    }
    CHECK(js_tool_choice(tools, "{\"type\": \"function\", \"function\": {\"name\": \"nope\"}}",
                         T_START, T_END, 1, &g, err, sizeof err) == EXSA_EINVAL &&
              strstr(err, "\"nope\", which is not in tools"),
          "unknown name: %s", err);
    CHECK(js_tool_choice("[{\"name\": \"f\", \"parameters\": {\"type\": \"object\", "
                         "\"properties\": {\"a b\": {}}}}]",
                         "\"required\"", T_START, T_END, 1, &g, err, sizeof err) == EXSA_EINVAL &&
              strstr(err, "cannot be written as a keyword argument"),
          "bad name: %s", err);
    CHECK(js_tool_choice(tools, "\"sometimes\"", T_START, T_END, 1, &g, err, sizeof err) ==
              EXSA_EINVAL,
          "bad tool_choice");
    CHECK(js_tool_choice("[]", "\"required\"", T_START, T_END, 1, &g, err, sizeof err) ==
              EXSA_EINVAL,
          "required without tools");
}

int main(void)
{
    RUN(test_accept_reject);
    RUN(test_caps);
    RUN(test_errors);
    RUN(test_response_format);
    RUN(test_tool_choice);
    TEST_END();
}
