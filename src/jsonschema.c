/*
 * jsonschema.c: the compiler of jsonschema.h, JSON Schema (parsed by cJSON) into grammar nodes.
 *
 * struct jsc carries the grammar being built, the document root (for $ref), the literal
 * flavour (JSON, or Python for tool arguments: True/False/None), the one shared "any value"
 * node, and a memo from $ref targets to their nodes, so a recursive schema becomes a cycle in
 * the grammar rather than an endless compile. Each schema object becomes one node: its type's
 * node, an ALT for several types or anyOf, a LITSET for enum and const (their values written
 * compactly in the flavour, filtered by the schema's type). Kids are compiled before the node
 * that points at them, so node pointers are only taken after the last gr_add of a step.
 */
#include "jsonschema.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"
#include "grammar.h"
#include "strbuf.h"

#define MAX_NEST 64 /* schema nesting the compiler follows */

struct memo {
    const cJSON *schema;
    int node;
};

struct jsc {
    struct grammar *g;
    const cJSON *root;
    bool python;
    int any;
    struct memo *memo;
    int n_memo;
    size_t cap_memo;
    int depth;
    char *err;
    size_t errlen;
};

/* Writes "path: message" into the error buffer; returns EXSA_EINVAL. */
static int fail(struct jsc *c, const char *path, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s: ", path);
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < c->errlen)
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return EXSA_EINVAL;
}

static int schema(struct jsc *c, const cJSON *s, const char *path);

/* ---- literals ----------------------------------------------------------------------------- */

static void lit_number(struct sb *b, double v)
{
    char buf[40];
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(buf, sizeof buf, "%.0f", v);
    } else {
        for (int p = 15; p <= 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
    sb_puts(b, buf);
}

/* A value written compactly: JSON, or Python literals for true/false/null. */
static void lit_value(struct sb *b, const cJSON *v, bool python)
{
    if (cJSON_IsNull(v)) {
        sb_puts(b, python ? "None" : "null");
    } else if (cJSON_IsBool(v)) {
        bool t = cJSON_IsTrue(v);
        sb_puts(b, python ? (t ? "True" : "False") : (t ? "true" : "false"));
    } else if (cJSON_IsNumber(v)) {
        lit_number(b, v->valuedouble);
    } else if (cJSON_IsString(v)) {
        sb_putc(b, '"');
        sb_put_json_escaped(b, v->valuestring, strlen(v->valuestring));
        sb_putc(b, '"');
    } else {
        bool obj = cJSON_IsObject(v);
        sb_putc(b, obj ? '{' : '[');
        for (const cJSON *k = v->child; k; k = k->next) {
            if (obj) {
                sb_putc(b, '"');
                sb_put_json_escaped(b, k->string, strlen(k->string));
                sb_puts(b, "\":");
            }
            lit_value(b, k, python);
            if (k->next)
                sb_putc(b, ',');
        }
        sb_putc(b, obj ? '}' : ']');
    }
}

/* Whether v is an instance of the JSON Schema type name t. */
static bool has_type(const cJSON *v, const char *t)
{
    if (!strcmp(t, "integer"))
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    return (!strcmp(t, "number") && cJSON_IsNumber(v)) ||
           (!strcmp(t, "string") && cJSON_IsString(v)) ||
           (!strcmp(t, "boolean") && cJSON_IsBool(v)) || (!strcmp(t, "null") && cJSON_IsNull(v)) ||
           (!strcmp(t, "object") && cJSON_IsObject(v)) || (!strcmp(t, "array") && cJSON_IsArray(v));
}

/* Whether v fits the schema's "type" (any type when there is none). */
static bool fits_type(const cJSON *v, const cJSON *type)
{
    if (!type)
        return true;
    if (cJSON_IsString(type))
        return has_type(v, type->valuestring);
    for (const cJSON *t = type->child; t; t = t->next)
        if (cJSON_IsString(t) && has_type(v, t->valuestring))
            return true;
    return false;
}

/* A LITSET of the values (one for const) that fit type. */
static int litset(struct jsc *c, const cJSON *vals, bool one, const cJSON *type, const char *path)
{
    int n = one ? 1 : cJSON_GetArraySize(vals), k = 0;
    struct gr_prop *set = calloc((size_t)(n ? n : 1), sizeof *set);
    if (!set)
        return EXSA_ENOMEM;
    for (const cJSON *v = one ? vals : vals->child; v && k < n; v = one ? NULL : v->next) {
        if (!fits_type(v, type))
            continue;
        struct sb b = {0};
        lit_value(&b, v, c->python);
        set[k].len = b.len;
        if (!(set[k++].name = sb_take(&b)))
            n = -1;
    }
    int rc = n < 0 ? EXSA_ENOMEM
             : !k  ? fail(c, path, "no value of %s fits the schema's type", one ? "const" : "enum")
             : !gr_sort(set, k) ? fail(c, path, "enum lists a value twice")
                                : 0;
    int node = rc ? rc : gr_add(c->g, GR_LITSET);
    if (node < 0) {
        gr_props_free(set, k);
        return node;
    }
    c->g->nodes[node].set = set;
    c->g->nodes[node].n_set = k;
    return node;
}

/* A LITSET of the given literal words (true/false, null). */
static int words(struct jsc *c, const char *json_words)
{
    cJSON *v = cJSON_Parse(json_words);
    int rc = v ? litset(c, v, false, NULL, "") : EXSA_ENOMEM;
    cJSON_Delete(v);
    return rc;
}

/* ---- nodes ---------------------------------------------------------------------------------- */

static int new_alt(struct jsc *c, const int *kids, int n)
{
    int *k = malloc(sizeof *k * (size_t)(n ? n : 1));
    int node = k ? gr_add(c->g, GR_ALT) : EXSA_ENOMEM;
    if (node < 0) {
        free(k);
        return node;
    }
    memcpy(k, kids, sizeof *k * (size_t)n);
    c->g->nodes[node].kids = k;
    c->g->nodes[node].n_kids = n;
    return node;
}

/* The one "any JSON value" node: an ALT over object, array, string, number, bool, null. */
static int any(struct jsc *c)
{
    if (c->any >= 0)
        return c->any;
    int kids[6] = {0};
    int self = new_alt(c, kids, 0); /* filled below: the object and array kids point back */
    if (self < 0)
        return self;
    c->any = self;
    kids[0] = gr_add(c->g, GR_OBJECT);
    kids[1] = gr_add(c->g, GR_ARRAY);
    kids[2] = gr_add(c->g, GR_STRING);
    kids[3] = gr_add(c->g, GR_NUMBER);
    kids[4] = words(c, "[false, true]");
    kids[5] = words(c, "[null]");
    for (int i = 0; i < 6; i++)
        if (kids[i] < 0)
            return kids[i];
    int *k = malloc(sizeof kids);
    if (!k)
        return EXSA_ENOMEM;
    memcpy(k, kids, sizeof kids);
    struct gr_node *n = c->g->nodes;
    n[kids[0]].additional = self;
    n[kids[1]].items = self;
    free(n[self].kids);
    n[self].kids = k;
    n[self].n_kids = 6;
    return self;
}

/* A non-negative integer keyword, or def when absent; -2 on a bad value. */
static int count_kw(struct jsc *c, const cJSON *s, const char *kw, int def, const char *path)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, kw);
    if (!v)
        return def;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 1e9) {
        fail(c, path, "%s must be a non-negative integer", kw);
        return -2;
    }
    return (int)v->valuedouble;
}

static int string_node(struct jsc *c, const cJSON *s, const char *path)
{
    int lo = count_kw(c, s, "minLength", 0, path), hi = count_kw(c, s, "maxLength", -1, path);
    if (lo == -2 || hi == -2)
        return EXSA_EINVAL;
    if (hi >= 0 && lo > hi)
        return fail(c, path, "minLength %d is above maxLength %d", lo, hi);
    int node = gr_add(c->g, GR_STRING);
    if (node >= 0)
        c->g->nodes[node].min_len = lo, c->g->nodes[node].max_len = hi;
    return node;
}

static int array_node(struct jsc *c, const cJSON *s, const char *path)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    char sub[512];
    snprintf(sub, sizeof sub, "%s.items", path);
    if (cJSON_IsArray(items))
        return fail(c, path, "items as a list (tuple validation) is not supported");
    int it = items ? schema(c, items, sub) : any(c);
    int lo = count_kw(c, s, "minItems", 0, path), hi = count_kw(c, s, "maxItems", -1, path);
    if (it < 0 || lo == -2 || hi == -2)
        return it < 0 ? it : EXSA_EINVAL;
    if (hi >= 0 && lo > hi)
        return fail(c, path, "minItems %d is above maxItems %d", lo, hi);
    int node = gr_add(c->g, GR_ARRAY);
    if (node >= 0) {
        struct gr_node *n = &c->g->nodes[node];
        n->items = it, n->min_items = lo, n->max_items = hi;
    }
    return node;
}

static bool is_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

/* One property into props[*n]: its name as typed (JSON-escaped, or an identifier with
 * kwargs) and its value's node. */
static int add_prop(struct jsc *c, struct gr_prop *props, int *n, const char *name, int node,
                    bool kwargs, const char *path)
{
    if (*n == GR_MAX_PROPS)
        return fail(c, path, "more than %d properties in one object are not supported",
                    GR_MAX_PROPS);
    if (kwargs && !is_ident(name))
        return fail(c, path, "property \"%s\" cannot be written as a keyword argument", name);
    struct sb b = {0};
    sb_put_json_escaped(&b, name, strlen(name));
    props[*n].len = b.len;
    props[*n].node = node;
    if (!(props[*n].name = sb_take(&b)))
        return EXSA_ENOMEM;
    (*n)++;
    return 0;
}

/* The properties (and required names missing from them, typed by additionalProperties). */
static int gather_props(struct jsc *c, const cJSON *s, int addl, bool kwargs, struct gr_prop *props,
                        int *n, const char *path)
{
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    char sub[512];
    if (pr && !cJSON_IsObject(pr))
        return fail(c, path, "properties must be an object");
    if (req && !cJSON_IsArray(req))
        return fail(c, path, "required must be a list of names");
    for (const cJSON *p = pr ? pr->child : NULL; p; p = p->next) {
        snprintf(sub, sizeof sub, "%s.properties.%s", path, p->string);
        int node = schema(c, p, sub);
        int rc = node < 0 ? node : add_prop(c, props, n, p->string, node, kwargs, path);
        if (rc)
            return rc;
    }
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r))
            return fail(c, path, "required must be a list of names");
        if (cJSON_GetObjectItemCaseSensitive(pr, r->valuestring))
            continue;
        if (addl < 0)
            return fail(c, path,
                        "required property \"%s\" is not in properties and "
                        "additionalProperties is false",
                        r->valuestring);
        int rc = add_prop(c, props, n, r->valuestring, addl, kwargs, path);
        if (rc)
            return rc;
    }
    return 0;
}

static int object_node(struct jsc *c, const cJSON *s, bool kwargs, const char *path)
{
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    char sub[512];
    snprintf(sub, sizeof sub, "%s.additionalProperties", path);
    int addl = !ap || cJSON_IsTrue(ap) ? any(c) : cJSON_IsFalse(ap) ? -1 : schema(c, ap, sub);
    if (addl < -1 || (addl == -1 && ap && !cJSON_IsFalse(ap)))
        return addl;
    struct gr_prop *props = calloc(GR_MAX_PROPS, sizeof *props);
    int n = 0, rc = props ? gather_props(c, s, addl, kwargs, props, &n, path) : EXSA_ENOMEM;
    if (!rc && !gr_sort(props, n))
        rc = fail(c, path, "a property is named twice");
    int node = rc ? rc : gr_add(c->g, GR_OBJECT);
    if (node < 0) {
        gr_props_free(props, n);
        return node;
    }
    struct gr_node *o = &c->g->nodes[node];
    o->props = props, o->n_props = n, o->additional = addl, o->kwargs = kwargs;
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
        for (int i = 0; i < n; i++) {
            struct sb b = {0};
            sb_put_json_escaped(&b, r->valuestring, strlen(r->valuestring));
            if (!b.err && b.len == props[i].len && !memcmp(b.s, props[i].name, b.len))
                o->required |= 1ull << i;
            sb_free(&b);
        }
    return node;
}

/* The node of one type name, shaped by the schema's keywords for that type. */
static int typed(struct jsc *c, const cJSON *s, const char *t, const char *path)
{
    if (!strcmp(t, "object"))
        return object_node(c, s, false, path);
    if (!strcmp(t, "array"))
        return array_node(c, s, path);
    if (!strcmp(t, "string"))
        return string_node(c, s, path);
    if (!strcmp(t, "integer") || !strcmp(t, "number")) {
        int node = gr_add(c->g, GR_NUMBER);
        if (node >= 0)
            c->g->nodes[node].integer = t[0] == 'i';
        return node;
    }
    if (!strcmp(t, "boolean"))
        return words(c, "[false, true]");
    if (!strcmp(t, "null"))
        return words(c, "[null]");
    return fail(c, path, "unknown type \"%s\"", t);
}

/* ---- keywords -------------------------------------------------------------------------------- */

static const char *const annotations[] = {
    "title",       "description",      "default",         "examples", "format",    "$schema",
    "$id",         "$comment",         "deprecated",      "readOnly", "writeOnly", "$defs",
    "definitions", "contentMediaType", "contentEncoding", NULL};
static const char *const keywords[] = {
    "type",      "properties", "required", "additionalProperties",
    "items",     "minItems",   "maxItems", "minLength",
    "maxLength", "enum",       "const",    "anyOf",
    "allOf",     "$ref",       NULL};

static bool in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (!strcmp(*l, k))
            return true;
    return false;
}

/* Every key of s is a supported keyword or an annotation; *n_kw counts the keywords. */
static int check_keywords(struct jsc *c, const cJSON *s, int *n_kw, const char *path)
{
    *n_kw = 0;
    for (const cJSON *k = s->child; k; k = k->next) {
        if (in_list(keywords, k->string))
            (*n_kw)++;
        else if (!in_list(annotations, k->string))
            return fail(c, path, "unsupported keyword \"%s\"", k->string);
    }
    return 0;
}

/* $ref "#/a/b" (a JSON pointer into the document, ~0 and ~1 unescaped). */
static const cJSON *resolve(const cJSON *root, const char *ref)
{
    if (ref[0] != '#' || (ref[1] && ref[1] != '/'))
        return NULL;
    const cJSON *at = root;
    char key[256];
    for (const char *p = ref + 1; *p && at;) {
        size_t n = 0;
        for (p++; *p && *p != '/' && n + 1 < sizeof key; p++)
            key[n++] =
                p[0] == '~' && (p[1] == '0' || p[1] == '1') ? (++p)[0] == '0' ? '~' : '/' : p[0];
        key[n] = 0;
        at = cJSON_IsArray(at) ? cJSON_GetArrayItem(at, atoi(key))
                               : cJSON_GetObjectItemCaseSensitive(at, key);
    }
    return at;
}

/* A $ref: the target's node, compiled once behind an ALT of one kid so that a reference back
 * to it (recursion) finds the node before its body exists. */
static int ref_node(struct jsc *c, const cJSON *s, int n_kw, const char *path)
{
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (!cJSON_IsString(ref))
        return fail(c, path, "$ref must be a string");
    if (n_kw > 1)
        return fail(c, path, "$ref beside other keywords is not supported");
    const cJSON *t = resolve(c->root, ref->valuestring);
    if (!t)
        return fail(c, path, "$ref \"%s\" does not point into this schema", ref->valuestring);
    for (int i = 0; i < c->n_memo; i++)
        if (c->memo[i].schema == t)
            return c->memo[i].node;
    struct memo *m = grow_array(c->memo, &c->cap_memo, (size_t)c->n_memo + 1, sizeof *m, 8);
    if (!m)
        return EXSA_ENOMEM;
    c->memo = m;
    int kid = 0, self = new_alt(c, &kid, 1);
    if (self < 0)
        return self;
    c->memo[c->n_memo++] = (struct memo){t, self};
    char sub[512];
    snprintf(sub, sizeof sub, "%s", ref->valuestring);
    kid = schema(c, t, sub);
    if (kid < 0)
        return kid;
    c->g->nodes[self].kids[0] = kid;
    return self;
}

/* anyOf (an ALT of its schemas) and allOf with one schema. */
static int combo(struct jsc *c, const cJSON *s, int n_kw, const char *path)
{
    const cJSON *any_of = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const cJSON *all_of = cJSON_GetObjectItemCaseSensitive(s, "allOf");
    const cJSON *l = any_of ? any_of : all_of;
    const char *kw = any_of ? "anyOf" : "allOf";
    if (n_kw > 1)
        return fail(c, path, "%s beside other keywords is not supported", kw);
    int n = cJSON_GetArraySize(l);
    if (!cJSON_IsArray(l) || n == 0)
        return fail(c, path, "%s must be a non-empty list of schemas", kw);
    if (all_of && n > 1)
        return fail(c, path, "allOf with more than one schema is not supported");
    int *kids = malloc(sizeof *kids * (size_t)n), k = 0, rc = kids ? 0 : EXSA_ENOMEM;
    char sub[512];
    for (const cJSON *x = l->child; x && !rc; x = x->next, k++) {
        snprintf(sub, sizeof sub, "%s.%s[%d]", path, kw, k);
        rc = kids[k] = schema(c, x, sub);
        rc = rc < 0 ? rc : 0;
    }
    int node = rc ? rc : n == 1 ? kids[0] : new_alt(c, kids, n);
    free(kids);
    return node;
}

/* The node of the types in "type" (an ALT for several), or of the inferred type. */
static int types(struct jsc *c, const cJSON *s, const char *path)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!type) {
        bool obj = cJSON_GetObjectItemCaseSensitive(s, "properties") ||
                   cJSON_GetObjectItemCaseSensitive(s, "required") ||
                   cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
        bool arr = cJSON_GetObjectItemCaseSensitive(s, "items") ||
                   cJSON_GetObjectItemCaseSensitive(s, "minItems") ||
                   cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        bool str = cJSON_GetObjectItemCaseSensitive(s, "minLength") ||
                   cJSON_GetObjectItemCaseSensitive(s, "maxLength");
        return obj   ? typed(c, s, "object", path)
               : arr ? typed(c, s, "array", path)
               : str ? typed(c, s, "string", path)
                     : any(c);
    }
    if (cJSON_IsString(type))
        return typed(c, s, type->valuestring, path);
    int n = cJSON_GetArraySize(type), k = 0;
    if (!cJSON_IsArray(type) || n == 0 || n > 8)
        return fail(c, path, "type must be a type name or a list of up to 8");
    int kids[8];
    for (const cJSON *t = type->child; t; t = t->next, k++) {
        if (!cJSON_IsString(t))
            return fail(c, path, "type must be a type name or a list of up to 8");
        if ((kids[k] = typed(c, s, t->valuestring, path)) < 0)
            return kids[k];
    }
    return n == 1 ? kids[0] : new_alt(c, kids, n);
}

static int schema(struct jsc *c, const cJSON *s, const char *path)
{
    if (cJSON_IsTrue(s))
        return any(c);
    if (cJSON_IsFalse(s))
        return fail(c, path, "the schema false allows nothing");
    if (!cJSON_IsObject(s))
        return fail(c, path, "a schema must be an object or a boolean");
    if (++c->depth > MAX_NEST)
        return fail(c, path, "schema nested deeper than %d", MAX_NEST);
    int n_kw, rc = check_keywords(c, s, &n_kw, path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (rc)
        ;
    else if (cJSON_GetObjectItemCaseSensitive(s, "$ref"))
        rc = ref_node(c, s, n_kw, path);
    else if (cn)
        rc = litset(c, cn, true, type, path);
    else if (en)
        rc = cJSON_IsArray(en) ? litset(c, en, false, type, path)
                               : fail(c, path, "enum must be a list");
    else if (cJSON_GetObjectItemCaseSensitive(s, "anyOf") ||
             cJSON_GetObjectItemCaseSensitive(s, "allOf"))
        rc = combo(c, s, n_kw, path);
    else
        rc = types(c, s, path);
    c->depth--;
    return rc;
}

/* ---- entry points -------------------------------------------------------------------------- */

static int begin(struct jsc *c, bool python, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->g = calloc(1, sizeof *c->g);
    c->python = python;
    c->any = -1;
    c->err = err, c->errlen = errlen;
    if (err && errlen)
        err[0] = 0;
    return c->g ? 0 : EXSA_ENOMEM;
}

/* Finishes a compile: on success *out gets the grammar with root node rc. */
static int end(struct jsc *c, int rc, struct grammar **out)
{
    free(c->memo);
    if (rc < 0) {
        js_free(c->g);
        if (rc == EXSA_ENOMEM && c->err && c->errlen && !c->err[0])
            snprintf(c->err, c->errlen, "out of memory compiling the schema");
        return rc;
    }
    c->g->root = rc;
    if (!gr_check(c->g)) {
        js_free(c->g);
        snprintf(c->err, c->errlen, "schema: a $ref leads back to itself before any value");
        return EXSA_EINVAL;
    }
    *out = c->g;
    return 0;
}

static int compile_root(const cJSON *s, const char *path, struct grammar **out, char *err,
                        size_t errlen)
{
    struct jsc c;
    int rc = begin(&c, false, err, errlen);
    if (rc)
        return rc;
    c.root = s;
    return end(&c, schema(&c, s, path), out);
}

int js_schema(const char *schema_json, struct grammar **out, char *err, size_t errlen)
{
    *out = NULL;
    cJSON *s = cJSON_Parse(schema_json);
    if (!s) {
        snprintf(err, errlen, "schema: not valid JSON");
        return EXSA_EINVAL;
    }
    int rc = compile_root(s, "schema", out, err, errlen);
    cJSON_Delete(s);
    return rc;
}

int js_response_format(const char *json, struct grammar **out, char *err, size_t errlen)
{
    *out = NULL;
    cJSON *rf = cJSON_Parse(json);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    int rc = 0;
    if (!cJSON_IsString(type)) {
        snprintf(err, errlen, "response_format: an object with a \"type\" is expected");
        rc = EXSA_EINVAL;
    } else if (!strcmp(type->valuestring, "text")) {
        rc = 0;
    } else if (!strcmp(type->valuestring, "json_object")) {
        cJSON *obj = cJSON_Parse("{\"type\": \"object\"}");
        rc = obj ? compile_root(obj, "response_format", out, err, errlen) : EXSA_ENOMEM;
        cJSON_Delete(obj);
    } else if (!strcmp(type->valuestring, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (!s) {
            snprintf(err, errlen, "response_format.json_schema.schema is missing");
            rc = EXSA_EINVAL;
        } else {
            rc = compile_root(s, "response_format.json_schema.schema", out, err, errlen);
        }
    } else {
        snprintf(err, errlen,
                 "response_format.type \"%s\" is not one of text, json_object, "
                 "json_schema",
                 type->valuestring);
        rc = EXSA_EINVAL;
    }
    cJSON_Delete(rf);
    return rc;
}

/* ---- tool calls --------------------------------------------------------------------------- */

/* A node of kind k with the given kids (SEQ, ALT). */
static int with_kids(struct jsc *c, enum gr_kind k, const int *kids, int n)
{
    int node = new_alt(c, kids, n);
    if (node >= 0)
        c->g->nodes[node].kind = k;
    return node;
}

static int lit_node(struct jsc *c, const char *s)
{
    char *d = strdup(s);
    int node = d ? gr_add(c->g, GR_LIT) : EXSA_ENOMEM;
    if (node < 0) {
        free(d);
        return node;
    }
    c->g->nodes[node].lit = d;
    c->g->nodes[node].lit_len = strlen(d);
    return node;
}

static int token_node(struct jsc *c, int32_t id)
{
    int node = gr_add(c->g, GR_TOKEN);
    if (node >= 0)
        c->g->nodes[node].token = id;
    return node;
}

/* A name the LFM2 call syntax (and toolcall.c) can carry: [A-Za-z0-9_-] runs joined by dots. */
static bool call_name_ok(const char *s)
{
    bool run = false;
    for (; *s; s++) {
        bool w = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                 *s == '_' || *s == '-';
        if (!w && !(*s == '.' && run && s[1]))
            return false;
        run = w;
    }
    return run;
}

/* name(arg=value, ...) for one function: keyword arguments shaped by its parameters (none
 * when it has no parameters). */
static int call_node(struct jsc *c, const cJSON *fn, const char *path)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    char sub[512];
    if (!cJSON_IsString(name) || !call_name_ok(name->valuestring))
        return fail(c, path, "a function needs a name of letters, digits, _, - and dots");
    snprintf(sub, sizeof sub, "%s.parameters", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(par, "type");
    int n_kw = 0, rc = par ? (cJSON_IsObject(par) ? check_keywords(c, par, &n_kw, sub)
                                                  : fail(c, sub, "must be an object schema"))
                           : 0;
    const char *const not_object[] = {"enum", "const", "anyOf", "allOf", "$ref", "items", NULL};
    for (int i = 0; !rc && not_object[i]; i++)
        if (cJSON_GetObjectItemCaseSensitive(par, not_object[i]))
            rc = fail(c, sub,
                      "keyword \"%s\" at the top of parameters is not supported (it "
                      "must be a plain object schema)",
                      not_object[i]);
    if (!rc && type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "object")))
        rc = fail(c, sub, "type must be \"object\"");
    if (rc)
        return rc;
    cJSON *none = par ? NULL : cJSON_Parse("{\"additionalProperties\": false}");
    if (!par && !none)
        return EXSA_ENOMEM;
    int kids[2] = {lit_node(c, name->valuestring), object_node(c, par ? par : none, true, sub)};
    cJSON_Delete(none);
    if (kids[0] < 0 || kids[1] < 0)
        return kids[0] < 0 ? kids[0] : kids[1];
    return with_kids(c, GR_SEQ, kids, 2);
}

/* The function object of tools[i]: {"type": "function", "function": {...}} or bare. */
static const cJSON *tool_fn(const cJSON *t)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
    return cJSON_IsObject(fn) ? fn : t;
}

/* The calls allowed: every tool ("required") or the one named; an ALT when several. */
static int calls_node(struct jsc *c, const cJSON *tools, const char *only)
{
    int n = cJSON_GetArraySize(tools), k = 0, i = 0;
    int *kids = malloc(sizeof *kids * (size_t)(n ? n : 1));
    if (!kids)
        return EXSA_ENOMEM;
    int rc = 0;
    char path[64];
    for (const cJSON *t = tools->child; t && !rc; t = t->next, i++) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(tool_fn(t), "name");
        if (only && !(cJSON_IsString(name) && !strcmp(name->valuestring, only)))
            continue;
        snprintf(path, sizeof path, "tools[%d].function", i);
        rc = kids[k] = call_node(c, tool_fn(t), path);
        rc = rc < 0 ? rc : (k++, 0);
    }
    if (!rc && !k)
        rc = only ? fail(c, "tool_choice", "names function \"%s\", which is not in tools", only)
                  : fail(c, "tool_choice", "\"required\" needs at least one tool");
    int node = rc ? rc : k == 1 ? kids[0] : new_alt(c, kids, k);
    free(kids);
    return node;
}

/* The function tool_choice forces: *only NULL for "required"; returns 1 for none/auto. */
static int parse_choice(struct jsc *c, const cJSON *ch, const char **only)
{
    *only = NULL;
    if (cJSON_IsString(ch) &&
        (!strcmp(ch->valuestring, "none") || !strcmp(ch->valuestring, "auto")))
        return 1;
    if (cJSON_IsString(ch) && !strcmp(ch->valuestring, "required"))
        return 0;
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(ch, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (cJSON_IsObject(ch) && cJSON_IsString(name)) {
        *only = name->valuestring;
        return 0;
    }
    return fail(c, "tool_choice",
                "must be \"none\", \"auto\", \"required\" or {\"type\": "
                "\"function\", \"function\": {\"name\": ...}}");
}

int js_tool_choice(const char *tools, const char *tool_choice, int32_t call_start, int32_t call_end,
                   int max_calls, struct grammar **out, char *err, size_t errlen)
{
    *out = NULL;
    struct jsc c;
    int rc = begin(&c, true, err, errlen);
    if (rc)
        return rc;
    cJSON *t = cJSON_Parse(tools ? tools : "[]"), *ch = cJSON_Parse(tool_choice);
    const char *only = NULL;
    rc = !ch ? fail(&c, "tool_choice", "not valid JSON") : parse_choice(&c, ch, &only);
    if (rc == 1) { /* none or auto: no constraint */
        cJSON_Delete(t);
        cJSON_Delete(ch);
        end(&c, EXSA_EINVAL, out);
        return 0;
    }
    if (rc == 0 && !cJSON_IsArray(t))
        rc = fail(&c, "tools", "must be a list of tools");
    if (rc == 0 && (max_calls < 1 || call_start < 0 || call_end < 0))
        rc = fail(&c, "tool_choice", "the model has no tool-call tokens");
    int list = rc ? -1 : calls_node(&c, t, only), arr = list < 0 ? list : gr_add(c.g, GR_ARRAY);
    if (!rc && arr >= 0) {
        c.g->nodes[arr].items = list;
        c.g->nodes[arr].min_items = 1;
        c.g->nodes[arr].max_items = max_calls;
        int kids[3] = {token_node(&c, call_start), arr, token_node(&c, call_end)};
        rc = kids[0] < 0 || kids[2] < 0 ? EXSA_ENOMEM : with_kids(&c, GR_SEQ, kids, 3);
    } else if (!rc) {
        rc = arr;
    }
    cJSON_Delete(t);
    cJSON_Delete(ch);
    return end(&c, rc, out);
}

void js_free(struct grammar *g)
{
    if (!g)
        return;
    gr_free(g);
    free(g);
}
