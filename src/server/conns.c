/*
 * conns.c: deadlines for the connections of `exsa serve` against slow clients (slowloris). A
 * connection waiting for request headers (a new one, or a kept-alive one between requests)
 * must finish them within HEADER_TIMEOUT seconds, and a request must finish its body within
 * BODY_TIMEOUT seconds of its headers, however slowly it trickles bytes in (libmicrohttpd's own
 * timeout only counts silence). A watchdog thread answers a late one with a 408 and shuts its
 * socket down, which ends the connection in libmicrohttpd's own thread. Connections whose
 * request is being answered have no deadline here. struct conntrack is a list of slots under
 * one mutex; a slot lives from libmicrohttpd's "connection started" to its "closed" callback,
 * which comes before the socket is closed, so a shut-down socket is always still ours.
 * Called by http.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "server.h"

struct conn_slot {
    int fd;
    enum conn_phase phase;
    double deadline; /* monotonic seconds; 0 when the phase has none */
    bool fired;
    struct conn_slot *prev, *next;
};

struct conntrack {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop, started;
    int header_s, body_s;
    struct conn_slot head; /* circular list sentinel */
    int n_open;
    unsigned long long n_timeouts;
};

static const char timeout_body[] =
    "{\"error\":{\"message\":\"the request did not arrive in time (HEADER_TIMEOUT, "
    "BODY_TIMEOUT)\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":"
    "\"request_timeout\"}}";

/* Ends every connection past its deadline. Called under mu. */
static void expire(struct conntrack *ct, double now)
{
    char reply[512];
    int n = snprintf(reply, sizeof reply,
                     "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof timeout_body - 1, timeout_body);
    for (struct conn_slot *s = ct->head.next; s != &ct->head; s = s->next) {
        if (s->fired || !s->deadline || now < s->deadline)
            continue;
        /* nothing else writes to the socket in these phases; best effort, never blocks */
        (void)!send(s->fd, reply, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        shutdown(s->fd, SHUT_RDWR);
        s->fired = true;
        ct->n_timeouts++;
    }
}

static void *watchdog(void *arg)
{
    struct conntrack *ct = arg;
    pthread_mutex_lock(&ct->mu);
    while (!ct->stop) {
        expire(ct, sched_now());
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L; /* deadlines are in seconds: a quarter is fine */
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&ct->cv, &ct->mu, &ts);
    }
    pthread_mutex_unlock(&ct->mu);
    return NULL;
}

struct conntrack *conntrack_new(int header_s, int body_s)
{
    struct conntrack *ct = calloc(1, sizeof *ct);
    if (!ct)
        return NULL;
    pthread_mutex_init(&ct->mu, NULL);
    pthread_cond_init(&ct->cv, NULL);
    ct->header_s = header_s, ct->body_s = body_s;
    ct->head.next = ct->head.prev = &ct->head;
    if (pthread_create(&ct->thread, NULL, watchdog, ct) != 0) {
        conntrack_free(ct);
        return NULL;
    }
    ct->started = true;
    return ct;
}

void conntrack_free(struct conntrack *ct)
{
    if (!ct)
        return;
    pthread_mutex_lock(&ct->mu);
    ct->stop = true;
    pthread_cond_signal(&ct->cv);
    pthread_mutex_unlock(&ct->mu);
    if (ct->started)
        pthread_join(ct->thread, NULL);
    while (ct->head.next != &ct->head) /* none after the daemon stopped; be safe */
        conntrack_close(ct, ct->head.next);
    pthread_cond_destroy(&ct->cv);
    pthread_mutex_destroy(&ct->mu);
    free(ct);
}

/* Sets s's phase and deadline. Called under mu. */
static void set_phase(struct conntrack *ct, struct conn_slot *s, enum conn_phase ph)
{
    int secs = ph == CONN_HEADERS ? ct->header_s : ph == CONN_BODY ? ct->body_s : 0;
    s->phase = ph;
    s->deadline = secs > 0 ? sched_now() + secs : 0;
}

struct conn_slot *conntrack_open(struct conntrack *ct, int fd)
{
    struct conn_slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    pthread_mutex_lock(&ct->mu);
    set_phase(ct, s, CONN_HEADERS);
    s->next = &ct->head, s->prev = ct->head.prev;
    s->prev->next = s, ct->head.prev = s;
    ct->n_open++;
    pthread_mutex_unlock(&ct->mu);
    return s;
}

void conntrack_close(struct conntrack *ct, struct conn_slot *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&ct->mu);
    s->prev->next = s->next, s->next->prev = s->prev;
    ct->n_open--;
    pthread_mutex_unlock(&ct->mu);
    free(s);
}

void conntrack_phase(struct conntrack *ct, struct conn_slot *s, enum conn_phase ph)
{
    if (!s)
        return;
    pthread_mutex_lock(&ct->mu);
    set_phase(ct, s, ph);
    pthread_mutex_unlock(&ct->mu);
}

void conntrack_stats(struct conntrack *ct, int *n_open, unsigned long long *n_timeouts)
{
    pthread_mutex_lock(&ct->mu);
    *n_open = ct->n_open;
    *n_timeouts = ct->n_timeouts;
    pthread_mutex_unlock(&ct->mu);
}
