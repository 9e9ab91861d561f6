/*
 * schema-check.h: a small JSON Schema validator over cJSON trees, the tests' oracle for what
 * constrained decoding produced. Written from the JSON Schema rules, independently of
 * src/jsonschema.c (which compiles schemas to byte automata): type, properties, required,
 * additionalProperties, items, minItems, maxItems, minLength, maxLength (code points), enum and
 * const (deep equality), anyOf, allOf, $ref into the same document. Annotations are ignored.
 */
#ifndef EXSA_SCHEMA_CHECK_H
#define EXSA_SCHEMA_CHECK_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

static bool sc_valid(const cJSON *v, const cJSON *s, const cJSON *root);

static bool sc_type(const cJSON *v, const char *t)
{
    if (!strcmp(t, "integer"))
        return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    if (!strcmp(t, "number"))
        return cJSON_IsNumber(v);
    if (!strcmp(t, "string"))
        return cJSON_IsString(v);
    if (!strcmp(t, "boolean"))
        return cJSON_IsBool(v);
    if (!strcmp(t, "null"))
        return cJSON_IsNull(v);
    if (!strcmp(t, "object"))
        return cJSON_IsObject(v);
    return !strcmp(t, "array") && cJSON_IsArray(v);
}

static int sc_chars(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static const cJSON *sc_get(const cJSON *s, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(s, k);
}

static bool sc_object(const cJSON *v, const cJSON *s, const cJSON *root)
{
    const cJSON *props = sc_get(s, "properties"), *ap = sc_get(s, "additionalProperties");
    for (const cJSON *r = sc_get(s, "required") ? sc_get(s, "required")->child : NULL; r;
         r = r->next)
        if (!sc_get(v, r->valuestring))
            return false;
    for (const cJSON *m = v->child; m; m = m->next) {
        for (const cJSON *o = m->next; o; o = o->next)
            if (!strcmp(o->string, m->string))
                return false; /* a key twice */
        const cJSON *ps = props ? sc_get(props, m->string) : NULL;
        if (ps ? !sc_valid(m, ps, root)
               : (cJSON_IsFalse(ap) || (ap && !cJSON_IsBool(ap) && !sc_valid(m, ap, root))))
            return false;
    }
    return true;
}

static bool sc_counts(const cJSON *v, const cJSON *s)
{
    const cJSON *a;
    int n = cJSON_IsString(v) ? sc_chars(v->valuestring) : cJSON_GetArraySize(v);
    bool str = cJSON_IsString(v);
    if ((a = sc_get(s, str ? "minLength" : "minItems")) && n < a->valueint)
        return false;
    if ((a = sc_get(s, str ? "maxLength" : "maxItems")) && n > a->valueint)
        return false;
    return true;
}

static bool sc_valid(const cJSON *v, const cJSON *s, const cJSON *root)
{
    if (cJSON_IsBool(s))
        return cJSON_IsTrue(s);
    const cJSON *k;
    if ((k = sc_get(s, "$ref"))) {
        const cJSON *t = root;
        char key[128];
        for (const char *p = k->valuestring + 1; *p && t;) {
            size_t n = 0;
            for (p++; *p && *p != '/' && n + 1 < sizeof key; p++)
                key[n++] = *p;
            key[n] = 0;
            t = sc_get(t, key);
        }
        return t && sc_valid(v, t, root);
    }
    if ((k = sc_get(s, "const")) && !cJSON_Compare(v, k, true))
        return false;
    if ((k = sc_get(s, "enum"))) {
        bool hit = false;
        for (const cJSON *e = k->child; e && !hit; e = e->next)
            hit = cJSON_Compare(v, e, true);
        if (!hit)
            return false;
    }
    if ((k = sc_get(s, "anyOf"))) {
        bool hit = false;
        for (const cJSON *e = k->child; e && !hit; e = e->next)
            hit = sc_valid(v, e, root);
        if (!hit)
            return false;
    }
    for (const cJSON *e = (k = sc_get(s, "allOf")) ? k->child : NULL; e; e = e->next)
        if (!sc_valid(v, e, root))
            return false;
    if ((k = sc_get(s, "type"))) {
        bool hit = cJSON_IsString(k) && sc_type(v, k->valuestring);
        for (const cJSON *t = cJSON_IsArray(k) ? k->child : NULL; t && !hit; t = t->next)
            hit = sc_type(v, t->valuestring);
        if (!hit)
            return false;
    }
    if (cJSON_IsObject(v) && !sc_object(v, s, root))
        return false;
    if ((cJSON_IsString(v) || cJSON_IsArray(v)) && !sc_counts(v, s))
        return false;
    for (const cJSON *it = cJSON_IsArray(v) && sc_get(s, "items") ? v->child : NULL; it;
         it = it->next)
        if (!sc_valid(it, sc_get(s, "items"), root))
            return false;
    return true;
}

/* Whether the JSON text validates against the schema text. */
static bool sc_check(const char *json, const char *schema)
{
    cJSON *v = cJSON_ParseWithOpts(json, NULL, 1), *s = cJSON_Parse(schema);
    bool ok = v && s && sc_valid(v, s, s);
    cJSON_Delete(v);
    cJSON_Delete(s);
    return ok;
}

#endif
