/*
 * metrics.h - what the control socket's GET /metrics reports, in the
 * Prometheus text format (version 0.0.4).
 *
 * Gauges are read when the page is made: certificates by status and the
 * expiry of every active and rotating certificate from the store, the
 * audit queue from the daemon.  Counters count what this daemon did since
 * it started: renewals, expirations and clean-ups by the scheduler and the
 * control socket (a `cmkcert renew` run elsewhere is another process and
 * is not counted here), OpenBao requests by outcome (openbao.h), key reads
 * served and refused (auditq.h), control requests by HTTP status.
 */
#ifndef CMKCERTFS_METRICS_H
#define CMKCERTFS_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "cmkcert/lifecycle.h"

struct cmkfs;

/* A scheduler pass finished with these counts (sched.c). */
void metrics_pass(const struct cmk_pass_stats *st);

/* A renewal asked for on the control socket finished. */
void metrics_renewal(bool ok);

/* The control socket answered a request with HTTP `status`. */
void metrics_request(unsigned status);

/*
 * The page, malloc'd (free() it), *len its length; NULL with detail when
 * the store cannot be read or memory runs out.
 */
char *metrics_render(struct cmkfs *fs, size_t *len);

#endif
