/*
 * chat.c: the LFM2-family chat templates (LFM2-SPEC.md section 7) rendered in C, no Jinja.
 *
 * chat_template_load() picks the variant from the template source (the markers llama.cpp keys
 * on) and reads the BOS token's text. Rendering writes into a struct out: the text plus a list
 * of segments, each either plain text (template text and message contents alike) or a marker
 * (one special token's text). chat_render() returns the text; chat_tokenize() turns each
 * marker into its token id and tokenizes each run of plain text between markers WITHOUT
 * special-token parsing, so a user typing "<|im_end|>" gets plain-text tokens, while the
 * tokens match llama.cpp's wherever the contents hold no special-token text (it also splits at
 * special tokens and tokenizes the runs between them). Exactly one BOS: the first segment.
 * Assistant contents are the model's own words: the tool-call and think markers in them stay
 * markers. An assistant turn's tool_calls and thinking fields render where each template puts
 * them; the LFM2 v1 and LFM2.5-Instruct templates have no such fields, so the calls go after the
 * content in the model's own syntax and LFM2.5's reasoning into the content (lfm2_asst).
 * tojson is Python's json.dumps(ensure_ascii=False); numbers keep their JSON spelling.
 * Callers: the server, `exsa run`/`exsa chat`, tests.
 */
#include "chat.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "strbuf.h"
#include "tokenizer.h"

struct chat_template {
    enum chat_variant variant;
    char *bos; /* the BOS token's text ("<|startoftext|>") */
};

#define IM_START "<|im_start|>"
#define IM_END "<|im_end|>"
#define CFM_TAG "CONTINUE_FINAL_MESSAGE_TAG "

/* ---- output: text + segments ---------------------------------------------------------------- */

enum seg_kind { SEG_TEXT, SEG_MARKER, SEG_BOS };

struct seg {
    size_t off, len;
    enum seg_kind kind;
};

struct out {
    char *s; /* NUL-terminated when err == 0 */
    size_t len, cap;
    struct seg *seg;
    int n_seg;
    size_t cap_seg;
    int err;
};

static void put(struct out *o, enum seg_kind kind, const char *s, size_t n)
{
    if (o->err)
        return;
    bool extend = kind == SEG_TEXT && o->n_seg && o->seg[o->n_seg - 1].kind == SEG_TEXT;
    char *str = grow_array(o->s, &o->cap, o->len + n + 1, 1, 256);
    if (str)
        o->s = str;
    struct seg *seg = o->seg;
    if (!extend && (seg = grow_array(o->seg, &o->cap_seg, (size_t)o->n_seg + 1, sizeof *seg, 32)))
        o->seg = seg;
    if (!str || !seg) {
        o->err = EXSA_ENOMEM;
        return;
    }
    if (extend)
        o->seg[o->n_seg - 1].len += n;
    else
        o->seg[o->n_seg++] = (struct seg){o->len, n, kind};
    memcpy(o->s + o->len, s, n);
    o->len += n;
    o->s[o->len] = 0;
}

static void text(struct out *o, const char *s)
{
    put(o, SEG_TEXT, s, strlen(s));
}
static void mark(struct out *o, const char *s)
{
    put(o, SEG_MARKER, s, strlen(s));
}

static void textf(struct out *o, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    put(o, SEG_TEXT, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static const char *const asst_markers[] = {"<|tool_call_start|>", "<|tool_call_end|>", "<think>",
                                           "</think>"};

/* An assistant content: the tool-call and think markers in it stay markers. */
static void asst_content(struct out *o, const char *s, size_t n)
{
    size_t i = 0, start = 0;
    while (i < n) {
        int hit = -1;
        if (s[i] == '<')
            for (int k = 0; k < 4 && hit < 0; k++) {
                size_t ml = strlen(asst_markers[k]);
                if (ml <= n - i && memcmp(s + i, asst_markers[k], ml) == 0)
                    hit = k;
            }
        if (hit < 0) {
            i++;
            continue;
        }
        put(o, SEG_TEXT, s + start, i - start);
        mark(o, asst_markers[hit]);
        i += strlen(asst_markers[hit]);
        start = i;
    }
    put(o, SEG_TEXT, s + start, n - start);
}

/* ---- JSON printing: Python's json.dumps(ensure_ascii=False) and str() ------------------------ */

/* A parsed JSON value with the source spelling of its numbers: each number node's valueint is
 * overwritten with its index in num[] (cJSON keeps document order; the scan below too). */
struct json {
    cJSON *root;
    const char **num; /* spelling of number i in the source */
    size_t *num_len;
    int n_num;
};

static void json_free(struct json *j)
{
    cJSON_Delete(j->root);
    free(j->num);
    free(j->num_len);
    memset(j, 0, sizeof *j);
}

static int count_numbers(cJSON *v, int i)
{
    for (; v; v = v->next) {
        if (cJSON_IsNumber(v))
            v->valueint = i++;
        i = count_numbers(v->child, i);
    }
    return i;
}

/* Parses s (n bytes); returns 0 or EXSA_EINVAL (not JSON) / EXSA_ENOMEM. */
static int json_parse(const char *s, size_t n, struct json *j)
{
    memset(j, 0, sizeof *j);
    const char *end = NULL;
    j->root = cJSON_ParseWithLengthOpts(s, n, &end, false);
    if (!j->root)
        return EXSA_EINVAL;
    while (end && end < s + n && strchr(" \t\r\n", *end) && *end)
        end++;
    if (!end || end < s + n) { /* trailing bytes after the value */
        json_free(j);
        return EXSA_EINVAL;
    }
    size_t cap = 0;
    for (size_t i = 0; i < n; i++)
        cap += s[i] == '-' || (s[i] >= '0' && s[i] <= '9');
    j->num = malloc(sizeof *j->num * (cap + 1));
    j->num_len = malloc(sizeof *j->num_len * (cap + 1));
    if (!j->num || !j->num_len) {
        json_free(j);
        return EXSA_ENOMEM;
    }
    for (size_t i = 0; i < n;) {
        if (s[i] == '"') { /* skip a string */
            for (i++; i < n && s[i] != '"'; i++)
                i += s[i] == '\\';
            i++;
        } else if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
            size_t b = i;
            while (i < n && strchr("+-.eE0123456789", s[i]))
                i++;
            j->num[j->n_num] = s + b;
            j->num_len[j->n_num++] = i - b;
        } else
            i++;
    }
    if (count_numbers(j->root, 0) != j->n_num)
        j->n_num = 0; /* should not happen: print numbers from their values */
    return 0;
}

/* repr() of a Python float: the shortest digits that read back the same; fixed notation for
 * exponents -4..15, else d.ddde+XX. */
static void py_float(struct out *o, double v)
{
    char buf[40], dig[24];
    int p = 1;
    for (; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    snprintf(buf, sizeof buf, "%.*e", p - 1, v);
    const char *b = buf;
    if (*b == '-')
        text(o, "-"), b++;
    int nd = 0;
    for (; *b && *b != 'e'; b++)
        if (*b != '.')
            dig[nd++] = *b;
    dig[nd] = 0;
    int e = atoi(b + 1);
    if (e >= 16 || e < -4) {
        put(o, SEG_TEXT, dig, 1);
        if (nd > 1)
            text(o, "."), put(o, SEG_TEXT, dig + 1, (size_t)nd - 1);
        textf(o, "e%c%02d", e < 0 ? '-' : '+', abs(e));
    } else if (e < 0) {
        text(o, "0.");
        for (int i = 0; i < -e - 1; i++)
            text(o, "0");
        text(o, dig);
    } else {
        for (int i = 0; i <= e; i++)
            put(o, SEG_TEXT, i < nd ? &dig[i] : "0", 1);
        text(o, ".");
        text(o, nd > e + 1 ? dig + e + 1 : "0");
    }
}

static void number(struct out *o, const struct json *j, const cJSON *v)
{
    if (v->valueint < 0 || v->valueint >= j->n_num) {
        py_float(o, v->valuedouble);
        return;
    }
    const char *s = j->num[v->valueint];
    size_t n = j->num_len[v->valueint];
    bool is_float = memchr(s, '.', n) || memchr(s, 'e', n) || memchr(s, 'E', n);
    if (is_float)
        py_float(o, v->valuedouble);
    else if (n == 2 && memcmp(s, "-0", 2) == 0)
        text(o, "0"); /* Python int -0 is 0 */
    else
        put(o, SEG_TEXT, s, n);
}

static void json_str(struct out *o, const char *s)
{
    text(o, "\"");
    const char *run = s;
    char u[8];
    for (; *s; s++) {
        const char *esc = json_escape((unsigned char)*s, u);
        if (!esc)
            continue;
        put(o, SEG_TEXT, run, (size_t)(s - run));
        text(o, esc);
        run = s + 1;
    }
    put(o, SEG_TEXT, run, (size_t)(s - run));
    text(o, "\"");
}

/* tojson: json.dumps(v, ensure_ascii=False) with separators ", " and ": ", key order kept. */
static void tojson(struct out *o, const struct json *j, const cJSON *v)
{
    if (cJSON_IsNull(v))
        text(o, "null");
    else if (cJSON_IsBool(v))
        text(o, cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNumber(v))
        number(o, j, v);
    else if (cJSON_IsString(v))
        json_str(o, v->valuestring);
    else {
        bool obj = cJSON_IsObject(v);
        text(o, obj ? "{" : "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (obj)
                json_str(o, c->string), text(o, ": ");
            tojson(o, j, c);
            if (c->next)
                text(o, ", ");
        }
        text(o, obj ? "}" : "]");
    }
}

/* repr() of a Python str: single quotes unless the text has ' and no ". */
static void py_repr_str(struct out *o, const char *s)
{
    char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    put(o, SEG_TEXT, &q, 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == (unsigned char)q)
            textf(o, "\\%c", c);
        else if (c == '\n' || c == '\r' || c == '\t')
            text(o, c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t");
        else if (c < 0x20 || c == 0x7f)
            textf(o, "\\x%02x", c);
        else if (c == 0xC2 && (unsigned char)s[1] >= 0x80 && (unsigned char)s[1] < 0xA0)
            textf(o, "\\x%02x", (unsigned char)*++s); /* C1 controls U+0080..U+009F */
        else
            put(o, SEG_TEXT, s, 1);
    }
    put(o, SEG_TEXT, &q, 1);
}

/* A JSON value as Python text: str(v) (Jinja's `string` filter: True/None, a top-level string
 * as it is, repr() inside containers), or with dq the syntax LFM2 v1 writes call arguments in:
 * strings double-quoted with JSON escapes at every level (city="Paris", d={"k": False}). */
static void py_value(struct out *o, const struct json *j, const cJSON *v, bool top, bool dq)
{
    if (cJSON_IsNull(v))
        text(o, "None");
    else if (cJSON_IsBool(v))
        text(o, cJSON_IsTrue(v) ? "True" : "False");
    else if (cJSON_IsNumber(v))
        number(o, j, v);
    else if (cJSON_IsString(v)) {
        if (dq)
            json_str(o, v->valuestring);
        else if (top)
            text(o, v->valuestring);
        else
            py_repr_str(o, v->valuestring);
    } else {
        bool obj = cJSON_IsObject(v);
        text(o, obj ? "{" : "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (obj && dq)
                json_str(o, c->string), text(o, ": ");
            else if (obj)
                py_repr_str(o, c->string), text(o, ": ");
            py_value(o, j, c, false, dq);
            if (c->next)
                text(o, ", ");
        }
        text(o, obj ? "}" : "]");
    }
}

/* ---- template pieces ------------------------------------------------------------------------- */

static bool has(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

/* The tool list: "List of tools: [" + tools (strings as they are, others tojson) + "]", with
 * the LFM2 v1 list markers around the brackets. */
static void tool_list(struct out *o, const struct json *tools, bool v1)
{
    text(o, "List of tools: ");
    if (v1)
        mark(o, "<|tool_list_start|>");
    text(o, "[");
    for (const cJSON *c = tools->root->child; c; c = c->next) {
        if (cJSON_IsString(c))
            text(o, c->valuestring);
        else
            tojson(o, tools, c);
        if (c->next)
            text(o, ", ");
    }
    text(o, "]");
    if (v1)
        mark(o, "<|tool_list_end|>");
}

/* The system turn: the system content, then the tool list (if any) on its own line. */
static void system_turn(struct out *o, const char *sys, const struct json *tools, bool v1)
{
    bool has_tools = tools->root && tools->root->child;
    if ((!sys || !*sys) && !has_tools)
        return;
    mark(o, IM_START);
    text(o, "system\n");
    if (sys)
        text(o, sys);
    if (has_tools) {
        if (sys && *sys)
            text(o, "\n");
        tool_list(o, tools, v1);
    }
    mark(o, IM_END);
    text(o, "\n");
}

/* Python's s.split("</think>")[-1] | trim: the text after the last </think>, whitespace
 * stripped. Returns s unchanged (len n) when there is no </think>. */
static const char *after_think(const char *s, size_t *n)
{
    const char *p = s, *q;
    while ((q = memmem(p, *n - (size_t)(p - s), "</think>", 8)))
        p = q + 8;
    if (p == s)
        return s;
    const char *e = s + *n;
    while (p < e && strchr(" \t\n\r\v\f\x1c\x1d\x1e\x1f", *p))
        p++;
    while (e > p && strchr(" \t\n\r\v\f\x1c\x1d\x1e\x1f", e[-1]))
        e--;
    *n = (size_t)(e - p);
    return p;
}

/* One argument value: LFM2.5's format_arg_value ('text' unescaped, mappings as tojson, else
 * str()), or LFM2 v1's double-quoted Python (dq). */
static void arg_value(struct out *o, const struct json *j, const cJSON *v, bool dq)
{
    if (dq)
        py_value(o, j, v, true, true);
    else if (cJSON_IsString(v))
        text(o, "'"), text(o, v->valuestring), text(o, "'");
    else if (cJSON_IsObject(v))
        tojson(o, j, v);
    else
        py_value(o, j, v, true, false);
}

/* One call as name(arg=value, ...). OpenAI's arguments are a JSON string: parsed here. */
static int one_call(struct out *o, const struct json *j, const cJSON *call, bool dq)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    fn = cJSON_IsObject(fn) ? fn : call;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
    if (!cJSON_IsString(name))
        return EXSA_EINVAL;
    struct json parsed = {0};
    if (cJSON_IsString(args)) {
        int rc = json_parse(args->valuestring, strlen(args->valuestring), &parsed);
        if (rc)
            return rc;
        args = parsed.root, j = &parsed;
    }
    int rc = args && !cJSON_IsObject(args) && !cJSON_IsNull(args) ? EXSA_EINVAL : 0;
    text(o, name->valuestring);
    text(o, "(");
    for (const cJSON *a = args && !rc ? args->child : NULL; a; a = a->next) {
        text(o, a->string);
        text(o, "=");
        arg_value(o, j, a, dq);
        if (a->next)
            text(o, ", ");
    }
    text(o, ")");
    json_free(&parsed);
    return rc;
}

/* <|tool_call_start|>[call, call]<|tool_call_end|> from a JSON array of OpenAI tool calls;
 * dq: LFM2 v1's value syntax (see arg_value). */
static int tool_calls(struct out *o, const char *calls_json, bool dq)
{
    struct json j;
    int rc = json_parse(calls_json, strlen(calls_json), &j);
    if (rc)
        return rc;
    if (!cJSON_IsArray(j.root)) {
        json_free(&j);
        return EXSA_EINVAL;
    }
    mark(o, "<|tool_call_start|>");
    text(o, "[");
    for (const cJSON *c = j.root->child; c && !rc; c = c->next) {
        rc = one_call(o, &j, c, dq);
        if (c->next)
            text(o, ", ");
    }
    text(o, "]");
    mark(o, "<|tool_call_end|>");
    json_free(&j);
    return rc;
}

/* ---- the three layouts ----------------------------------------------------------------------- */

/* An assistant turn of LFM2 v1 or LFM2.5-Instruct. Their templates only render the content, so
 * the fields a client sends beside it go where the model wrote them: the reasoning as
 * <think>...</think> before the content (LFM2.5; the template's own rule then drops it from
 * past turns; v1 models do not think), tool calls after it in the model's call syntax (v1:
 * double quotes, LFM2.5: single). A None content with tool calls is no content. */
static int lfm2_asst(struct out *o, const struct exsa_chat_msg *m, bool v25, bool last)
{
    const char *c = m->content ? m->content : m->tool_calls ? "" : "null";
    char *joined = NULL;
    size_t len = strlen(c);
    if (v25 && m->thinking) {
        size_t lt = strlen(m->thinking);
        if (!(joined = malloc(lt + len + 16)))
            return EXSA_ENOMEM;
        snprintf(joined, lt + len + 16, "<think>%s</think>%s", m->thinking, c);
        c = joined, len = strlen(joined);
    }
    if (v25 && !last)
        c = after_think(c, &len);
    asst_content(o, c, len);
    free(joined);
    return m->tool_calls ? tool_calls(o, m->tool_calls, !v25) : 0;
}

/* LFM2 v1 (7.1), LFM2.5-Instruct (7.2) and the fallback: content None renders as "null". */
static int render_lfm2(const struct chat_template *t, const struct exsa_chat_msg *m, int n,
                       struct out *o)
{
    bool v25 = t->variant == CHAT_LFM25;
    int last_asst = -1, rc = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(m[i].role, "assistant") == 0)
            last_asst = i;
    for (int i = 0; i < n && !rc; i++) {
        const char *c = m[i].content ? m[i].content : "null";
        mark(o, IM_START);
        text(o, m[i].role);
        text(o, "\n");
        if (!v25 && strcmp(m[i].role, "tool") == 0) {
            mark(o, "<|tool_response_start|>");
            text(o, c);
            mark(o, "<|tool_response_end|>");
        } else if (strcmp(m[i].role, "assistant") == 0) {
            rc = lfm2_asst(o, &m[i], v25, i == last_asst);
        } else
            text(o, c);
        mark(o, IM_END);
        text(o, "\n");
    }
    return rc;
}

/* An assistant turn of the LFM2.5 reasoning template (7.3); recent: after the last user turn. */
static int reasoning_asst(struct out *o, const struct exsa_chat_msg *m, bool recent)
{
    if (m->thinking && recent) {
        mark(o, "<think>");
        asst_content(o, m->thinking, strlen(m->thinking));
        mark(o, "</think>");
    }
    bool cfm = false;
    if (m->content) {
        size_t len = strlen(m->content), tl = strlen(CFM_TAG);
        const char *c = recent ? m->content : after_think(m->content, &len);
        if (m->tool_calls && len >= tl && memcmp(c + len - tl, CFM_TAG, tl) == 0)
            cfm = true, len -= tl;
        asst_content(o, c, len);
    }
    int rc = m->tool_calls ? tool_calls(o, m->tool_calls, false) : 0;
    if (cfm)
        text(o, CFM_TAG);
    mark(o, IM_END);
    text(o, "\n");
    return rc;
}

static int render_reasoning(const struct exsa_chat_msg *m, int n, struct out *o)
{
    int last_user = -1;
    for (int i = 0; i < n; i++)
        if (strcmp(m[i].role, "user") == 0)
            last_user = i;
    for (int i = 0; i < n; i++) {
        mark(o, IM_START);
        text(o, m[i].role);
        text(o, "\n");
        if (strcmp(m[i].role, "assistant") == 0) {
            int rc = reasoning_asst(o, &m[i], i > last_user);
            if (rc)
                return rc;
            continue;
        }
        if (m[i].content)
            text(o, m[i].content);
        mark(o, IM_END);
        text(o, "\n");
    }
    return 0;
}

static int render(const struct chat_template *t, const struct exsa_chat_msg *msgs, int n,
                  const char *tools_json, bool add_generation_prompt, struct out *o)
{
    if (!t || n < 0 || (n > 0 && !msgs))
        return EXSA_EINVAL;
    for (int i = 0; i < n; i++)
        if (!msgs[i].role)
            return EXSA_EINVAL;
    struct json tools = {0};
    if (tools_json) {
        int rc = json_parse(tools_json, strlen(tools_json), &tools);
        if (rc)
            return rc;
        if (!cJSON_IsArray(tools.root) && !cJSON_IsNull(tools.root)) {
            json_free(&tools);
            return EXSA_EINVAL;
        }
    }
    put(o, SEG_BOS, t->bos, strlen(t->bos));
    const char *sys = NULL;
    if (n > 0 && strcmp(msgs[0].role, "system") == 0)
        sys = msgs[0].content, msgs++, n--;
    system_turn(o, sys, &tools, t->variant != CHAT_LFM25 && t->variant != CHAT_LFM25_REASONING);
    json_free(&tools);
    int rc = 0;
    if (t->variant == CHAT_LFM25_REASONING)
        rc = render_reasoning(msgs, n, o);
    else
        rc = render_lfm2(t, msgs, n, o);
    if (add_generation_prompt) {
        mark(o, IM_START);
        text(o, "assistant\n");
    }
    return rc ? rc : o->err;
}

/* ---- public functions ------------------------------------------------------------------------ */

const char *chat_variant_name(enum chat_variant v)
{
    switch (v) {
    case CHAT_LFM2: return "lfm2";
    case CHAT_LFM25: return "lfm2.5";
    case CHAT_LFM25_REASONING: return "lfm2.5-reasoning";
    case CHAT_FALLBACK: return "fallback";
    }
    return "unknown";
}

/* The variant a template source is written for (see chat.h); *chatml set when it is only
 * recognised by its <|im_start|> markers. */
static enum chat_variant detect(const char *s, size_t n, bool *chatml)
{
    *chatml = false;
    if (has(s, n, "<|tool_list_start|>"))
        return CHAT_LFM2;
    if (has(s, n, "List of tools: ["))
        return has(s, n, "<think>") || has(s, n, "preserve_thinking") ||
                       has(s, n, "message.thinking")
                   ? CHAT_LFM25_REASONING
                   : CHAT_LFM25;
    if (has(s, n, IM_START)) {
        *chatml = true;
        return CHAT_LFM2;
    }
    return CHAT_FALLBACK;
}

/* The BOS token's text from the vocabulary, or "<|startoftext|>". */
static char *bos_text(const struct gguf_file *f)
{
    int64_t id;
    struct gguf_array a;
    if (f && gguf_get_int(f, "tokenizer.ggml.bos_token_id", &id) == 0 &&
        gguf_get_arr(f, "tokenizer.ggml.tokens", &a) == 0 && a.type == GGUF_TYPE_STRING &&
        id >= 0 && (uint64_t)id < a.n)
        return strndup(a.str[id].ptr, a.str[id].len);
    return strdup("<|startoftext|>");
}

int chat_template_load(const struct gguf_file *f, struct chat_template **out, char *warn,
                       size_t warnlen)
{
    *out = NULL;
    if (warn && warnlen)
        warn[0] = 0;
    struct chat_template *t = calloc(1, sizeof *t);
    if (!t || !(t->bos = bos_text(f))) {
        free(t);
        return EXSA_ENOMEM;
    }
    struct gguf_str src;
    bool chatml = false;
    if (!f || gguf_get_str(f, "tokenizer.chat_template", &src) != 0) {
        t->variant = CHAT_FALLBACK;
        if (warn && warnlen)
            snprintf(warn, warnlen,
                     "the model has no tokenizer.chat_template; prompts use the "
                     "LFM2 (ChatML) layout");
    } else {
        t->variant = detect(src.ptr, (size_t)src.len, &chatml);
        if (t->variant == CHAT_FALLBACK && warn && warnlen)
            snprintf(warn, warnlen,
                     "tokenizer.chat_template is not an LFM2-family template (no "
                     "<|im_start|> in it); prompts use the LFM2 (ChatML) layout, "
                     "which this model may not expect");
    }
    *out = t;
    return 0;
}

void chat_template_free(struct chat_template *t)
{
    if (!t)
        return;
    free(t->bos);
    free(t);
}

enum chat_variant chat_template_variant(const struct chat_template *t)
{
    return t->variant;
}

const struct chat_template *chat_of_model(const struct exsa_model *m)
{
    return m ? m->tmpl : NULL;
}

int chat_render(const struct chat_template *t, const struct exsa_chat_msg *msgs, int n_msgs,
                const char *tools_json, bool add_generation_prompt, char **out)
{
    struct out o = {0};
    *out = NULL;
    int rc = render(t, msgs, n_msgs, tools_json, add_generation_prompt, &o);
    free(o.seg);
    if (rc) {
        free(o.s);
        return rc;
    }
    *out = o.s;
    return 0;
}

struct ids {
    int32_t *v;
    int n, cap;
};

static int ids_room(struct ids *d, int more)
{
    if (d->n + more <= d->cap)
        return 0;
    int cap = d->cap ? d->cap : 256;
    while (cap < d->n + more)
        cap *= 2;
    int32_t *p = realloc(d->v, sizeof *p * (size_t)cap);
    if (!p)
        return EXSA_ENOMEM;
    d->v = p, d->cap = cap;
    return 0;
}

/* Appends the ids of s[0..n) tokenized as plain text (no BOS, no special tokens). */
static int encode_run(const struct tokenizer *tok, const char *s, size_t n, struct ids *d)
{
    if (n == 0)
        return 0;
    for (;;) {
        int got = tok_encode(tok, s, n, false, false, d->v + d->n, d->cap - d->n);
        if (got < 0)
            return got;
        if (got <= d->cap - d->n) {
            d->n += got;
            return 0;
        }
        int rc = ids_room(d, got);
        if (rc)
            return rc;
    }
}

/* Markers become their ids (unknown markers: plain text); runs of text between them are
 * tokenized without special parsing; the BOS segment becomes the one BOS id. */
static int tokenize_out(const struct tokenizer *tok, const struct out *o, struct ids *d)
{
    size_t run = 0, run_len = 0;
    int rc = ids_room(d, 256);
    for (int i = 0; i < o->n_seg && !rc; i++) {
        const struct seg *s = &o->seg[i];
        int32_t id = -1;
        if (s->kind == SEG_BOS)
            id = tok_bos(tok);
        else if (s->kind == SEG_MARKER) {
            char buf[64];
            if (s->len < sizeof buf) {
                memcpy(buf, o->s + s->off, s->len);
                buf[s->len] = 0;
                id = tok_find(tok, buf);
            }
        }
        if (s->kind == SEG_TEXT || (s->kind == SEG_MARKER && id < 0)) {
            if (!run_len)
                run = s->off;
            run_len = s->off + s->len - run;
            continue;
        }
        rc = encode_run(tok, o->s + run, run_len, d);
        run_len = 0;
        if (!rc && id >= 0 && !(rc = ids_room(d, 1)))
            d->v[d->n++] = id;
    }
    return rc ? rc : encode_run(tok, o->s + run, run_len, d);
}

int chat_tokenize(const struct chat_template *t, const struct tokenizer *tok,
                  const struct exsa_chat_msg *msgs, int n_msgs, const char *tools_json,
                  bool add_generation_prompt, int32_t **out, int *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (!tok)
        return EXSA_EINVAL;
    struct out o = {0};
    struct ids d = {0};
    int rc = render(t, msgs, n_msgs, tools_json, add_generation_prompt, &o);
    if (!rc)
        rc = tokenize_out(tok, &o, &d);
    free(o.s);
    free(o.seg);
    if (rc) {
        free(d.v);
        return rc;
    }
    *out = d.v;
    *n_out = d.n;
    return 0;
}

int chat_msg_starts(const struct tokenizer *tok, const int32_t *ids, int n, int32_t **out,
                    int *n_out)
{
    *out = NULL;
    *n_out = 0;
    const int32_t start = tok ? tok_find(tok, IM_START) : -1;
    int cnt = 0;
    for (int i = 1; i < n && start >= 0; i++)
        cnt += ids[i] == start;
    if (!cnt)
        return 0;
    if (!(*out = malloc(sizeof(int32_t) * cnt)))
        return EXSA_ENOMEM;
    for (int i = 1; i < n; i++)
        if (ids[i] == start)
            (*out)[(*n_out)++] = i;
    return 0;
}
