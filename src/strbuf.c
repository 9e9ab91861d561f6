/*
 * strbuf.c: struct sb and the UTF-8 checks of strbuf.h. Growth doubles the capacity, so
 * appending n bytes one at a time costs O(n) in all.
 */
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exsa.h"

void *grow_array(void *p, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap && p)
        return p;
    size_t c = *cap ? *cap : first ? first : 1;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * elem);
    if (q)
        *cap = c;
    return q;
}

static int room(struct sb *b, size_t more)
{
    if (b->err)
        return b->err;
    char *p = grow_array(b->s, &b->cap, b->len + more + 1, 1, 64);
    if (!p)
        return b->err = EXSA_ENOMEM;
    b->s = p;
    return 0;
}

void sb_put(struct sb *b, const char *s, size_t n)
{
    if (room(b, n))
        return;
    if (n)
        memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void sb_puts(struct sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

void sb_putc(struct sb *b, char c)
{
    sb_put(b, &c, 1);
}

void sb_put_utf8(struct sb *b, uint32_t cp)
{
    char u[4];
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x80) {
        u[0] = (char)cp;
        sb_put(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F));
        sb_put(b, u, 4);
    }
}

const char *json_escape(unsigned char c, char u[8])
{
    if (c >= 0x20 && c != '"' && c != '\\')
        return NULL;
    const char *esc = c == '"'    ? "\\\""
                      : c == '\\' ? "\\\\"
                      : c == '\n' ? "\\n"
                      : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t"
                      : c == '\b' ? "\\b"
                      : c == '\f' ? "\\f"
                                  : NULL;
    if (esc)
        return esc;
    snprintf(u, 8, "\\u%04x", c);
    return u;
}

void sb_put_json_escaped(struct sb *b, const char *s, size_t n)
{
    size_t run = 0;
    char u[8];
    for (size_t i = 0; i < n; i++) {
        const char *esc = json_escape((unsigned char)s[i], u);
        if (!esc)
            continue;
        sb_put(b, s + run, i - run);
        sb_puts(b, esc);
        run = i + 1;
    }
    sb_put(b, s + run, n - run);
}

void sb_clear(struct sb *b)
{
    b->len = 0;
    if (b->s)
        b->s[0] = 0;
}

void sb_drop(struct sb *b, size_t n)
{
    if (n >= b->len) {
        sb_clear(b);
        return;
    }
    memmove(b->s, b->s + n, b->len - n);
    b->len -= n;
    b->s[b->len] = 0;
}

void sb_free(struct sb *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

char *sb_take(struct sb *b)
{
    if (b->err) {
        sb_free(b);
        return NULL;
    }
    char *s = b->s ? b->s : strdup("");
    memset(b, 0, sizeof *b);
    return s;
}

int utf8_char(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    int need = s[0] >= 0xC2 && s[0] <= 0xDF   ? 2
               : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
               : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4
                                              : 0;
    if (!need)
        return 0;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range (no overlongs, surrogates) */
    if (s[0] == 0xE0)
        lo = 0xA0;
    else if (s[0] == 0xED)
        hi = 0x9F;
    else if (s[0] == 0xF0)
        lo = 0x90;
    else if (s[0] == 0xF4)
        hi = 0x8F;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n)
            return -1;
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF))
            return 0;
    }
    return need;
}

uint32_t utf8_decode(const unsigned char *s, int len)
{
    if (len == 1)
        return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++)
        cp = cp << 6 | (s[i] & 0x3F);
    return cp;
}
