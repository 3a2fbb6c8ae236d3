/*
 * metrics.c - the Prometheus page of the control socket (metrics.h).
 *
 * Counters are process-wide atomics: there is one daemon per process, and
 * the threads that count (scheduler workers, control requests) must never
 * wait on each other for it.  The page is written with open_memstream;
 * label values are escaped as the text format asks (\\, \", \n), although
 * tenant ids, types and serial numbers never hold those characters.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/openbao.h"
#include "cmkcert/util.h"
#include "auditq.h"
#include "cmkfs.h"
#include "metrics.h"

/* HTTP statuses the control socket gives, counted by code; anything else goes to the last slot. */
static const unsigned codes[] = { 200, 202, 400, 403, 404, 405, 409, 411, 413, 500, 502, 503 };
#define N_CODES (sizeof(codes) / sizeof(codes[0]))

static struct {
	uint64_t renewed, renew_failed, expired, cleaned;
	uint64_t requests[N_CODES + 1];
} counters;

static void add(uint64_t *c, uint64_t n)
{
	__atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

void metrics_pass(const struct cmk_pass_stats *st)
{
	add(&counters.renewed, st->renewed);
	add(&counters.renew_failed, st->failed);
	add(&counters.expired, st->expired);
	add(&counters.cleaned, st->cleaned);
}

void metrics_renewal(bool ok)
{
	add(ok ? &counters.renewed : &counters.renew_failed, 1);
}

void metrics_request(unsigned status)
{
	size_t i = 0;

	while (i < N_CODES && codes[i] != status)
		i++;
	add(&counters.requests[i], 1);
}

/* A label value as the text format wants it. */
static void put_label(FILE *o, const char *name, const char *value)
{
	fprintf(o, "%s=\"", name);
	for (const char *p = value; *p != '\0'; p++) {
		if (*p == '\\' || *p == '"')
			fprintf(o, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", o);
		else
			fputc(*p, o);
	}
	fputc('"', o);
}

static void head(FILE *o, const char *name, const char *type, const char *help)
{
	fprintf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

struct scan {
	FILE *o;
	uint64_t by_status[CMK_ST_COUNT];
	int64_t earliest;          /* not_after of the active certificate that expires first; 0 = none */
	bool started;              /* the expiry family's header is written */
};

static int scan_one(const struct cmk_cert_record *r, void *arg)
{
	struct scan *s = arg;

	if ((unsigned)r->status < CMK_ST_COUNT)
		s->by_status[r->status]++;
	if (r->status == CMK_ST_ACTIVE && r->not_after > 0 && (s->earliest == 0 || r->not_after < s->earliest))
		s->earliest = r->not_after;
	/* Served certificates: the active one and those rotating out in their grace period. */
	if ((r->status != CMK_ST_ACTIVE && r->status != CMK_ST_ROTATING) || r->not_after <= 0)
		return 0;
	if (!s->started) {
		head(s->o, "cmkcert_certificate_expiry_timestamp_seconds", "gauge",
		     "When each active or rotating certificate expires (not_after, seconds since the epoch).");
		s->started = true;
	}
	fputs("cmkcert_certificate_expiry_timestamp_seconds{", s->o);
	put_label(s->o, "tenant_id", r->tenant);
	fputc(',', s->o);
	put_label(s->o, "type", r->type);
	fputc(',', s->o);
	put_label(s->o, "serial_number", r->serial);
	fputc(',', s->o);
	put_label(s->o, "status", cmk_status_name(r->status));
	fprintf(s->o, "} %lld\n", (long long)r->not_after);
	return 0;
}

static void put_store(struct scan *s)
{
	FILE *o = s->o;

	head(o, "cmkcert_certificates", "gauge", "Certificate records in the store, by status.");
	for (int st = 0; st < CMK_ST_COUNT; st++)
		fprintf(o, "cmkcert_certificates{status=\"%s\"} %llu\n", cmk_status_name((enum cmk_status)st),
			(unsigned long long)s->by_status[st]);
	head(o, "cmkcert_earliest_expiry_seconds", "gauge",
	     "Seconds from now until the first active certificate expires (negative once it has); absent without "
	     "an active certificate.");
	if (s->earliest != 0)
		fprintf(o, "cmkcert_earliest_expiry_seconds %lld\n", (long long)(s->earliest - cmk_now()));
}

static void put_counters(FILE *o, struct cmkfs *fs)
{
	struct cmk_bao_counts b;
	struct auditq_counts q = { 0 };

	head(o, "cmkcert_renewals_total", "counter",
	     "Renewals this daemon ran (scheduler and control socket), by result.");
	fprintf(o, "cmkcert_renewals_total{result=\"success\"} %llu\n", (unsigned long long)get(&counters.renewed));
	fprintf(o, "cmkcert_renewals_total{result=\"failure\"} %llu\n",
		(unsigned long long)get(&counters.renew_failed));
	head(o, "cmkcert_expirations_total", "counter", "Active certificates the scheduler found expired unrenewed.");
	fprintf(o, "cmkcert_expirations_total %llu\n", (unsigned long long)get(&counters.expired));
	head(o, "cmkcert_cleanups_total", "counter", "Certificates the scheduler cleaned up after the grace period.");
	fprintf(o, "cmkcert_cleanups_total %llu\n", (unsigned long long)get(&counters.cleaned));

	cmk_bao_process_counts(&b);
	head(o, "cmkcert_openbao_requests_total", "counter", "HTTP requests this daemon sent to OpenBao, by outcome.");
	fprintf(o, "cmkcert_openbao_requests_total{outcome=\"success\"} %llu\n", (unsigned long long)b.success);
	fprintf(o, "cmkcert_openbao_requests_total{outcome=\"client_error\"} %llu\n",
		(unsigned long long)b.client_error);
	fprintf(o, "cmkcert_openbao_requests_total{outcome=\"rate_limited\"} %llu\n",
		(unsigned long long)b.rate_limited);
	fprintf(o, "cmkcert_openbao_requests_total{outcome=\"server_error\"} %llu\n",
		(unsigned long long)b.server_error);
	fprintf(o, "cmkcert_openbao_requests_total{outcome=\"no_answer\"} %llu\n", (unsigned long long)b.no_answer);

	if (fs->auditq != NULL)
		auditq_counts(fs->auditq, &q);
	head(o, "cmkcert_key_reads_total", "counter",
	     "Opens of private key and bundle files: served, or refused (not allowed, or not served).");
	fprintf(o, "cmkcert_key_reads_total{result=\"allowed\"} %llu\n", (unsigned long long)q.allowed);
	fprintf(o, "cmkcert_key_reads_total{result=\"refused\"} %llu\n", (unsigned long long)q.refused);
	head(o, "cmkcert_audit_queue_depth", "gauge", "Key-read audit events waiting to be written to the trail.");
	fprintf(o, "cmkcert_audit_queue_depth %llu\n", (unsigned long long)q.depth);

	head(o, "cmkcert_control_requests_total", "counter", "Requests the control socket answered, by HTTP status.");
	for (size_t i = 0; i < N_CODES; i++)
		fprintf(o, "cmkcert_control_requests_total{code=\"%u\"} %llu\n", codes[i],
			(unsigned long long)get(&counters.requests[i]));
	fprintf(o, "cmkcert_control_requests_total{code=\"other\"} %llu\n",
		(unsigned long long)get(&counters.requests[N_CODES]));
}

char *metrics_render(struct cmkfs *fs, size_t *len)
{
	struct cmk_cert_filter f = { .status = -1 };
	struct scan s = { 0 };
	char *page = NULL;
	int rc;

	if ((s.o = open_memstream(&page, len)) == NULL) {
		cmk_fail(CMK_ERR_NOMEM, "metrics: out of memory");
		return NULL;
	}
	/* The per-certificate family is written while the store is read; the totals follow. */
	rc = cmk_store_cert_each(fs->ctx->store, NULL, &f, scan_one, &s);
	if (rc == 0) {
		put_store(&s);
		put_counters(s.o, fs);
	}
	if (fclose(s.o) != 0 && rc == 0)
		rc = cmk_fail(CMK_ERR_NOMEM, "metrics: out of memory");
	if (rc != 0) {
		free(page);
		return NULL;
	}
	return page;
}
