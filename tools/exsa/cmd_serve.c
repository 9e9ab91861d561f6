/*
 * cmd_serve.c: `exsa serve`: reads the configuration (defaults < environment < flags), starts
 * the server (src/server/), waits for SIGINT or SIGTERM with sigwait() (both are blocked in
 * every thread, so no handler runs inside the server), then stops: new work is refused, what is
 * in flight may finish for SHUTDOWN_GRACE_MS, the rest is cancelled, and the process exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "server/server.h"

int cmd_serve(int argc, char **argv)
{
    struct srv_config cfg;
    char err[1024] = "";
    srv_config_default(&cfg);
    if (srv_config_from_env(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "exsa serve: %s\n", err);
        return 2;
    }
    int rc = srv_config_from_args(&cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "exsa serve: %s\n", err);
        return rc > 0 ? 0 : 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!cfg.model_path[0])
        fprintf(stderr, "exsa serve: no model (set MODEL_PATH or -m); POST /v1/models/load "
                        "to load one\n");
    if (strcmp(cfg.host, "127.0.0.1") && strcmp(cfg.host, "localhost") && strcmp(cfg.host, "::1"))
        fprintf(stderr,
                "exsa serve: warning: listening on %s opens the server beyond this "
                "machine%s (requests by a host name need ALLOWED_HOSTS)\n",
                cfg.host, cfg.api_key[0] ? "" : ", with no API_KEY");
    static struct server srv;
    if (srv_start(&srv, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "exsa serve: %s\n", err);
        return 1;
    }
    fprintf(stderr, "exsa serve: listening on http://%s:%d (queue %d, batch %d sequences%s%s%s)\n",
            cfg.host, srv_port(&srv), cfg.max_queue, cfg.continuous ? cfg.max_batch : 1,
            cfg.api_key[0] ? ", API key on" : "", cfg.rate_limit ? ", rate limit on" : "",
            cfg.cors ? ", CORS on" : "");
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "exsa serve: %s: stopping (requests in flight get up to %d ms)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", cfg.grace_ms);
    srv_stop(&srv);
    fprintf(stderr, "exsa serve: stopped\n");
    return 0;
}
