/*
 * http.c: the libmicrohttpd glue of `exsa serve`: one thread per connection (poll(), with a
 * total and a per-address connection limit, and the header and body deadlines of conns.c); the
 * access handler collects the body (refusing past max_body with 413), then admits it: Host
 * (403, against DNS rebinding), CORS preflight, route lookup (exact paths, then patterns such
 * as /v1/models/{id}; 404 / 405), rate limit (429), Bearer key (401) for every route but
 * /v1/health and /health, JSON content type of a POST (415), then the route. A struct srv_conn
 * lives from the first call of a request to MHD's completed callback, which counts the request in
 * the metrics and cancels its scheduler request if the client left. Every error goes out in
 * OpenAI's shape. Called by cmd_serve.c (srv_start / srv_stop).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "server.h"
#include "strbuf.h"
#include "tokmask.h"

struct route {
    const char *method, *path; /* a path with "{" matches any URL that starts with what is
                                  before it and goes on (tried when no exact path matched) */
    int (*fn)(struct srv_conn *c);
    bool manage; /* model management: no CORS unless CORS_MANAGEMENT */
};

static const struct route routes[] = {
    {"GET", "/v1/models", route_models, false},
    {"POST", "/v1/chat/completions", route_chat, false},
    {"POST", "/v1/completions", route_completions, false},
    {"GET", "/v1/health", route_health, false},
    {"GET", "/health", route_health, false},
    {"GET", "/v1/status", route_status, false},
    {"GET", "/slots", route_slots, false},
    {"GET", "/v1/model/info", route_model_info, false},
    {"POST", "/v1/generate", route_generate, false},
    {"GET", "/v1/models/list", route_models_list, true},
    {"GET", "/v1/models/active", route_model_info, false},
    {"POST", "/v1/models/load", route_models_load, true},
    {"POST", "/v1/models/reload", route_models_reload, true},
    {"POST", "/v1/models/unload", route_models_unload, true},
    {"GET", "/metrics", route_metrics, false},
    {"POST", "/tokenize", route_tokenize, false},
    {"POST", "/detokenize", route_detokenize, false},
    {"POST", "/v1/embeddings", route_embeddings, false},
    {"GET", "/v1/models/{id}", route_model_get, false},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

/* ---- replies -------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 character at s[0..n) (1 to 4), or 0 when s starts an invalid or
 * incomplete sequence (the text is whole here: an incomplete tail is as bad as an invalid one). */
static int utf8_len(const unsigned char *s, size_t n)
{
    int k = utf8_char(s, n);
    return k > 0 ? k : 0;
}

char *srv_json_quote(const char *s, size_t n)
{
    char *o = malloc(n * 6 + 3), *p = o; /* worst case: every byte as \u00XX */
    if (!o)
        return NULL;
    *p++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int k = utf8_len((const unsigned char *)s + i, n - i);
        if (c == '"' || c == '\\')
            p += sprintf(p, "\\%c", c);
        else if (c == '\n' || c == '\r' || c == '\t')
            p += sprintf(p, "\\%c", c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        else if (c < 0x20 || c == 0x7F)
            p += sprintf(p, "\\u%04x", c);
        else if (k > 0)
            memcpy(p, s + i, (size_t)k), p += k;
        else
            memcpy(p, "\xEF\xBF\xBD", 3), p += 3, k = 1;
        i += (size_t)k;
    }
    *p++ = '"';
    *p = 0;
    return o;
}

char *srv_utf8_scrub(char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s), bad = 0;
    for (size_t i = 0; i < n;) {
        int k = utf8_len((const unsigned char *)s + i, n - i);
        bad += k == 0;
        i += k ? (size_t)k : 1;
    }
    if (!bad)
        return s;
    char *o = malloc(n + 2 * bad + 1), *p = o;
    for (size_t i = 0; o && i < n;) {
        int k = utf8_len((const unsigned char *)s + i, n - i);
        if (k)
            memcpy(p, s + i, (size_t)k), p += k, i += (size_t)k;
        else
            memcpy(p, "\xEF\xBF\xBD", 3), p += 3, i++;
    }
    if (o)
        *p = 0;
    free(s);
    return o;
}

/* CORS headers for c's origin, when CORS is on and the origin is allowed. */
static void add_cors(struct srv_conn *c, struct MHD_Response *r)
{
    const struct srv_config *cfg = &c->srv->cfg;
    if (!cfg->cors || (c->manage && !cfg->cors_manage))
        return;
    if (!strcmp(cfg->cors_origins, "*")) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
        return;
    }
    const char *origin = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Origin");
    if (!origin)
        return;
    size_t n = strlen(origin);
    for (const char *p = cfg->cors_origins; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        if (len == n && !strncmp(p, origin, n)) {
            MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
            MHD_add_response_header(r, "Vary", "Origin");
            return;
        }
        p += len + (e ? 1 : 0);
        if (!e)
            break;
    }
}

/* Queues response r with status on c; adds CORS and Retry-After; destroys our handle on r. */
static int queue(struct srv_conn *c, int status, struct MHD_Response *r)
{
    if (!r)
        return MHD_NO;
    add_cors(c, r);
    if (c->retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", c->retry_after);
        MHD_add_response_header(r, "Retry-After", v);
    }
    c->status = status;
    int ret = MHD_queue_response(c->mc, status, r);
    MHD_destroy_response(r);
    return ret;
}

int srv_reply_text(struct srv_conn *c, int status, const char *ctype, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (r)
        MHD_add_response_header(r, "Content-Type", ctype);
    return queue(c, status, r);
}

/* Queues the malloc'd text s (ownership passes to libmicrohttpd) with content type ctype. */
static int queue_owned(struct srv_conn *c, int status, const char *ctype, char *s)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", ctype);
    return queue(c, status, r);
}

static int queue_json(struct srv_conn *c, int status, char *s)
{
    return queue_owned(c, status, "application/json", s);
}

int srv_reply_take(struct srv_conn *c, const char *ctype, char *text)
{
    if (!text)
        return srv_reply_error(c, 503, "server_error", NULL, NULL, "out of memory");
    return queue_owned(c, 200, ctype, text);
}

int srv_reply_json(struct srv_conn *c, int status, cJSON *body)
{
    /* cJSON passes bytes >= 0x80 through unchecked: echoed input may not be UTF-8 */
    char *s = body ? srv_utf8_scrub(cJSON_PrintUnformatted(body)) : NULL;
    cJSON_Delete(body);
    if (!s)
        return srv_reply_text(c, 500, "application/json",
                              "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                              "\"param\":null,\"code\":null}}");
    return queue_json(c, status, s);
}

char *srv_error_json(const char *message, const char *type, const char *param, const char *code)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    char *s = srv_utf8_scrub(cJSON_PrintUnformatted(o));
    cJSON_Delete(o);
    return s;
}

int srv_reply_error(struct srv_conn *c, int status, const char *type, const char *param,
                    const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status >= 500 || status == 413)
        fprintf(stderr, "exsa serve: %s %s -> %d: %s\n", c->method, c->url, status, msg);
    char *s = srv_error_json(msg, type, param, code);
    if (!s)
        return MHD_NO;
    return queue_json(c, status, s);
}

int srv_reply_err(struct srv_conn *c, const struct srv_err *e)
{
    int st = e->status;
    const char *type = st == 401   ? "authentication_error"
                       : st == 403 ? "permission_error"
                       : st == 429 ? "rate_limit_error"
                       : st >= 500 ? "server_error"
                                   : "invalid_request_error";
    if (e->retry_after > 0)
        c->retry_after = e->retry_after;
    return srv_reply_error(c, st, type, e->param, e->code, "%s", e->message);
}

int srv_queue_response(struct srv_conn *c, int status, struct MHD_Response *r)
{
    return queue(c, status, r);
}

enum srv_peer_state srv_peer_check(struct srv_peer *p)
{
    struct pollfd pf = {.fd = p->fd, .events = POLLIN | POLLRDHUP};
    if (p->fd < 0 || poll(&pf, 1, 0) <= 0)
        return PEER_THERE;
    if (pf.revents & (POLLERR | POLLHUP | POLLNVAL)) /* a reset, or both halves shut */
        return PEER_GONE;
    double now = sched_now();
    if (!(pf.revents & POLLRDHUP) || now < p->next)
        return PEER_THERE;
    p->gap = p->gap > 0 ? (p->gap < 4 ? p->gap * 2 : 8) : 0.5;
    p->next = now + p->gap;
    return PEER_PROBE;
}

bool srv_peer_probe_continue(struct srv_peer *p)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    /* HTTP/1.0 clients must not get a 1xx: such a client is kept until the reply is done */
    return !p->http11 || send(p->fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT) > 0 ||
           errno == EAGAIN || errno == EWOULDBLOCK;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

/* The request headers a page may send: what the official OpenAI clients send (the key, the
 * body's type, OpenAI-Organization / -Project / -Beta, the Stainless SDK's x-stainless-os,
 * -lang, -package-version, -runtime, -runtime-version, -arch, -retry-count, -timeout,
 * -helper-method, -async, ...). A preflight without Access-Control-Request-Headers gets them
 * all; one with it gets back those of its names that are in these families. */
#define CORS_HEADERS                                                                               \
    "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project, OpenAI-Beta, "              \
    "X-Stainless-OS, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-Runtime, "         \
    "X-Stainless-Runtime-Version, X-Stainless-Arch, X-Stainless-Retry-Count, "                     \
    "X-Stainless-Timeout, X-Stainless-Helper-Method, X-Stainless-Async"

/* Whether the header name s[0..n) is one of the families of CORS_HEADERS. */
static bool cors_header_allowed(const char *s, size_t n)
{
    static const char *const exact[] = {"authorization", "content-type"};
    static const char *const family[] = {"x-stainless-", "openai-"};
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
            return false;
    for (int i = 0; i < 2; i++)
        if ((n == strlen(exact[i]) && !strncasecmp(s, exact[i], n)) ||
            (n > strlen(family[i]) && !strncasecmp(s, family[i], strlen(family[i]))))
            return true;
    return false;
}

/* The allowed names among a preflight's comma-separated Access-Control-Request-Headers, into
 * out (lowercase, ", "-separated; names that do not fit are left out). */
static void cors_echo_headers(const char *want, char *out, size_t size)
{
    size_t len = 0;
    out[0] = 0;
    for (const char *p = want; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t n = strcspn(p, ", \t");
        if (n && cors_header_allowed(p, n) && len + n + 3 < size) {
            len += (size_t)snprintf(out + len, size - len, "%s", len ? ", " : "");
            for (size_t i = 0; i < n; i++)
                out[len++] = (char)tolower((unsigned char)p[i]);
            out[len] = 0;
        }
        p += n;
    }
}

/* Answers a CORS preflight. */
static int preflight(struct srv_conn *c)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    const char *want =
        MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    char echo[1024];
    if (want)
        cors_echo_headers(want, echo, sizeof echo);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", want ? echo : CORS_HEADERS);
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    MHD_add_response_header(r, "Vary", "Access-Control-Request-Headers");
    return queue(c, 204, r);
}

/* Checks the Bearer key of c; true when none is configured or it matches. */
static bool authorized(struct srv_conn *c)
{
    const char *key = c->srv->cfg.api_key;
    if (!key[0])
        return true;
    const char *h = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return srv_consttime_eq(h, key);
}

#define ADMITTED 2 /* neither MHD_YES nor MHD_NO */

/* Whether url is routes[i]'s path; prefix: whether it matches routes[i]'s "{...}" pattern. */
static bool path_matches(size_t i, const char *url, bool prefix)
{
    const char *brace = strchr(routes[i].path, '{');
    if (!prefix)
        return !brace && !strcmp(routes[i].path, url);
    size_t n = brace ? (size_t)(brace - routes[i].path) : 0;
    return brace && !strncmp(routes[i].path, url, n) && url[n];
}

/* The route of c's path and method (NULL: none); sets c->route, c->manage and *path_known.
 * Exact paths first; the patterns only when none matched. */
static const struct route *find_route(struct srv_conn *c, bool *path_known)
{
    const struct route *rt = NULL;
    *path_known = false;
    for (int pattern = 0; pattern < 2 && !*path_known; pattern++)
        for (size_t i = 0; i < N_ROUTES; i++) {
            if (!path_matches(i, c->url, pattern))
                continue;
            *path_known = true;
            c->route = routes[i].path;
            c->manage = routes[i].manage;
            if (!strcmp(routes[i].method, c->method))
                rt = &routes[i];
        }
    return rt;
}

/* The Host check and the CORS preflight. Returns ADMITTED, or the reply's MHD result. */
static int admit_origin(struct srv_conn *c)
{
    const struct srv_config *cfg = &c->srv->cfg;
    const char *host = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Host");
    if (!srv_host_allowed(cfg, host))
        return srv_reply_error(c, 403, "permission_error", NULL, "host_not_allowed",
                               "Host '%s' is not an address of this server; add the name to "
                               "ALLOWED_HOSTS to accept it",
                               host);
    if (!cfg->cors || strcmp(c->method, "OPTIONS"))
        return ADMITTED;
    if (c->manage && !cfg->cors_manage)
        return srv_reply_error(c, 403, "permission_error", NULL, "cors_not_allowed",
                               "%s takes no cross-origin requests (CORS_MANAGEMENT)", c->url);
    return preflight(c);
}

/* The checks before a route's own: Host, CORS preflight, rate limit, key, route, body size,
 * content type. Returns ADMITTED when the request may go to its route, else the reply's MHD
 * result. */
static int admit(struct srv_conn *c, const struct route *rt, bool path_known)
{
    struct server *srv = c->srv;
    int rc = admit_origin(c);
    if (rc != ADMITTED)
        return rc;
    bool is_health = path_known && (!strcmp(c->url, "/v1/health") || !strcmp(c->url, "/health"));
    int retry;
    if (!is_health && srv->rl && !ratelimit_allow(srv->rl, c->addr, &retry)) {
        c->retry_after = retry;
        return srv_reply_error(c, 429, "rate_limit_error", NULL, "rate_limit_exceeded",
                               "too many requests from %s: at most %d per %d s", c->addr,
                               srv->cfg.rate_limit_max, srv->cfg.rate_limit_window);
    }
    c->authed = authorized(c);
    if (!is_health && !c->authed)
        return srv_reply_error(c, 401, "authentication_error", NULL, "invalid_api_key",
                               "a valid API key is needed: send 'Authorization: Bearer <key>'");
    if (!path_known)
        return srv_reply_error(c, 404, "invalid_request_error", NULL, "not_found", "no route %s %s",
                               c->method, c->url);
    if (!rt)
        return srv_reply_error(c, 405, "invalid_request_error", NULL, "method_not_allowed",
                               "%s does not accept %s", c->url, c->method);
    if (c->body_too_big)
        return srv_reply_error(c, 413, "invalid_request_error", NULL, "body_too_large",
                               "the request body is larger than %ld bytes (MAX_BODY_SIZE)",
                               srv->cfg.max_body);
    const char *ct = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Content-Type");
    if (!strcmp(c->method, "POST") && !srv_is_json_type(ct))
        return srv_reply_error(c, 415, "invalid_request_error", NULL, "unsupported_media_type",
                               "POST %s needs 'Content-Type: application/json' (got '%s')", c->url,
                               ct ? ct : "none");
    return ADMITTED;
}

static int dispatch(struct srv_conn *c)
{
    bool path_known;
    const struct route *rt = find_route(c, &path_known);
    int rc = admit(c, rt, path_known);
    return rc == ADMITTED ? rt->fn(c) : rc;
}

/* Fills c's client address, socket and deadline slot. */
static void conn_info(struct srv_conn *c)
{
    c->fd = -1;
    snprintf(c->addr, sizeof c->addr, "unknown");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->addr,
                      sizeof c->addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->addr,
                      sizeof c->addr);
    }
    ci = MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci)
        c->fd = ci->connect_fd;
    ci = MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    c->slot = ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct server *srv = cls;
    struct srv_conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        c->srv = srv, c->mc = mc, c->method = method, c->url = url, c->route = "other";
        c->http11 = !strcmp(version, MHD_HTTP_VERSION_1_1);
        conn_info(c);
        *con_cls = c;
        conntrack_phase(srv->ct, c->slot, CONN_BODY); /* the headers are in */
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll(cl, NULL, 10) > srv->cfg.max_body) {
            c->body_too_big = true;
            conntrack_phase(srv->ct, c->slot, CONN_BUSY);
            return dispatch(c) == MHD_YES ? MHD_YES : MHD_NO;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (!c->body_too_big && c->body_len + n > (size_t)srv->cfg.max_body) {
            c->body_too_big = true;
            free(c->body);
            c->body = NULL;
            c->body_len = 0;
        }
        if (!c->body_too_big) {
            char *b = realloc(c->body, c->body_len + n + 1);
            if (!b)
                return MHD_NO;
            memcpy(b + c->body_len, upload_data, n);
            c->body = b;
            c->body_len += n;
            b[c->body_len] = 0;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->status)
        return MHD_YES;
    conntrack_phase(srv->ct, c->slot, CONN_BUSY);
    return dispatch(c) == MHD_YES ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *srv = cls;
    struct srv_conn *c = *con_cls;
    if (!c)
        return;
    if (c->req) {
        sched_cancel(c->req); /* a no-op when it finished; only this request otherwise */
        sched_req_put(c->req);
    }
    metrics_request(srv->metrics, c->route, c->status ? c->status : 499);
    conntrack_phase(srv->ct, c->slot, CONN_HEADERS); /* a kept-alive connection waits again */
    free(c->body);
    free(c);
    *con_cls = NULL;
}

/* libmicrohttpd's connection start and end (the end comes before it closes the socket). */
static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conntrack_close(srv->ct, *socket_ctx);
        *socket_ctx = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    *socket_ctx = ci ? conntrack_open(srv->ct, ci->connect_fd) : NULL;
}

/* ---- start and stop ------------------------------------------------------------------------- */

/* Resolves host:port into *ss. */
static int resolve(const char *host, int port, struct sockaddr_storage *ss, char *err,
                   size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve HOST '%s': %s", host, gai_strerror(rc));
        return EXSA_EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* The models folder: MODELS_DIR, else ./models, else ../models (realpath; "" if none). */
static void find_models_root(struct server *srv)
{
    const char *cands[3] = {srv->cfg.models_dir, "./models", "../models"};
    int first = srv->cfg.models_dir[0] ? 0 : 1;
    srv->models_root[0] = 0;
    for (int i = first; i < (first ? 3 : 1); i++)
        if (realpath(cands[i], srv->models_root))
            return;
    srv->models_root[0] = 0;
}

/* Starts libmicrohttpd on ss: one thread per connection (poll(), not select(), which fails past
 * descriptor 1024), the connection limits, the deadline watchdog. Stops srv on failure. */
static int start_daemon(struct server *srv, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    const struct srv_config *cfg = &srv->cfg;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ss->ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->ct = conntrack_new(cfg->header_timeout, cfg->body_timeout);
    if (srv->ct)
        srv->daemon = MHD_start_daemon(
            flags, (uint16_t)cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
            MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_CONNECTION_LIMIT,
            (unsigned)cfg->max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            (unsigned)cfg->max_conns_per_addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!srv->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not an address of this host)",
                 cfg->host, cfg->port);
        srv_stop(srv);
        return EXSA_EIO;
    }
    return 0;
}

int srv_start(struct server *srv, const struct srv_config *cfg, char *err, size_t errlen)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = *cfg;
    pthread_mutex_init(&srv->vocab_mu, NULL);
    srv->t_start = sched_now();
    srv->t_start_wall = (long)time(NULL);
    find_models_root(srv);
    srv->metrics = metrics_new();
    if (cfg->rate_limit)
        srv->rl = ratelimit_new(cfg->rate_limit_max, cfg->rate_limit_window);
    struct sched_params sp;
    sched_params_default(&sp);
    sp.backend = cfg->backend;
    sp.n_ctx = cfg->n_ctx;
    sp.n_batch = cfg->n_batch;
    sp.n_threads = cfg->n_threads;
    sp.gpu_layers = cfg->gpu_layers;
    sp.kv_type = (enum exsa_kv_type)cfg->kv_type;
    sp.max_queue = cfg->max_queue;
    sp.max_batch = cfg->max_batch;
    sp.continuous = cfg->continuous;
    sp.deterministic = cfg->deterministic;
    sp.batch_timeout_ms = cfg->batch_timeout_ms;
    sp.step_delay_ms = cfg->step_delay_ms;
    sp.cache_bytes = (size_t)cfg->cache_mb << 20;
    if (!srv->metrics || (cfg->rate_limit && !srv->rl) || sched_create(&sp, &srv->sched) < 0) {
        snprintf(err, errlen, "out of memory while starting the server");
        srv_stop(srv);
        return EXSA_ENOMEM;
    }
    exsa_set_mmap(cfg->mmap); /* for this load and every later one */
    if (cfg->model_path[0]) {
        fprintf(stderr, "exsa serve: loading %s\n", cfg->model_path);
        int rc = sched_load(srv->sched, cfg->model_path, cfg->gpu_layers, cfg->n_ctx, err, errlen);
        if (rc < 0) {
            srv_stop(srv);
            return rc;
        }
    }
    struct sockaddr_storage ss;
    int rc = resolve(cfg->host, cfg->port, &ss, err, errlen);
    if (rc < 0) {
        srv_stop(srv);
        return rc;
    }
    return start_daemon(srv, &ss, err, errlen);
}

int srv_port(const struct server *srv)
{
    const union MHD_DaemonInfo *di =
        srv->daemon ? MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    return di ? di->port : srv->cfg.port;
}

void srv_stop(struct server *srv)
{
    srv->shutting_down = 1;
    if (srv->daemon) {
        MHD_socket ls = MHD_quiesce_daemon(srv->daemon);
        if (ls != MHD_INVALID_SOCKET)
            close(ls);
    }
    if (srv->sched)
        sched_close(srv->sched, srv->cfg.grace_ms);
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    sched_destroy(srv->sched, 0);
    srv->sched = NULL;
    metrics_free(srv->metrics);
    ratelimit_free(srv->rl);
    conntrack_free(srv->ct);
    srv->ct = NULL;
    srv->metrics = NULL, srv->rl = NULL;
    tm_vocab_free(srv->vocab); /* every request is over: no mask reads it */
    srv->vocab = NULL;
}
