/*
 * http_curl.c - the libcurl boundary: the only file that includes curl.
 *
 * One easy handle per struct cmk_http, reset before every request so no
 * option leaks from one request into the next, while curl keeps its
 * connection cache (OpenBao calls come in bursts: login, issue, revoke).
 * Every request is HTTPS only, verified against the configured CA file and
 * nothing else, never follows redirects (the OpenBao layer decides what a
 * 307 means) and never goes through a proxy taken from the environment.
 *
 * Bodies may carry tokens, JWTs or private keys (issue mode), so the
 * response buffer is kept in locked, undumpable pages and wiped whenever it
 * is grown or released, and the header list (which holds X-Vault-Token) is
 * wiped before it is freed.  The answer passes through libcurl and OpenSSL
 * first: curl's allocator is replaced by one that wipes every block it
 * frees, and OpenSSL is asked to wipe each decrypted TLS record once curl
 * has read it (http_openssl.c).  CURLcode is translated to CMK_ERR_* in
 * translate_curl() and nowhere else.
 */
#include <ctype.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cmkcert/error.h"
#include "cmkcert/http.h"
#include "cmkcert/log.h"
#include "cmkcert/util.h"
#include "http_int.h"

/* OpenBao answers are small (a certificate chain, a CRL); anything bigger is not an answer we asked for. */
#define BODY_MAX ((size_t)8 << 20)

/* Longest Retry-After honoured from a header before the OpenBao layer applies its own cap. */
#define RETRY_AFTER_MAX ((int64_t)24 * 3600)

struct cmk_http {
	CURL *curl;
	char *ca_cert;
	long timeout_s;
	char errbuf[CURL_ERROR_SIZE];
};

/* State of one transfer, shared by the body and header callbacks. */
struct transfer {
	struct cmk_http_response *resp;
	size_t cap;            /* allocated size of resp->body */
	bool too_large;
	bool nomem;
};

/* libcurl runs on the OpenSSL linked here, which can wipe decrypted records (http_openssl.c). */
static bool tls_cleanse;

/* CURLOPT_SSL_CTX_FUNCTION: called for each new TLS context, before the handshake. */
static CURLcode on_ssl_ctx(CURL *c, void *ssl_ctx, void *arg)
{
	(void)c;
	(void)arg;
	cmk_http_openssl_harden_ctx(ssl_ctx);
	return CURLE_OK;
}

/*
 * curl's own buffers (the 16 KiB receive buffer, header copies, the request
 * state) pass answers through unwiped memory that it frees with plain
 * free().  Its allocator is replaced so that every block it frees is wiped
 * first, to the block's real size (malloc_usable_size), since curl does not
 * say how much of it was used.
 */
static void curl_free_wiped(void *p)
{
	if (p != NULL)
		cmk_freezero(p, malloc_usable_size(p));
}

/* A moved block is copied, then the old one is wiped: libc's realloc would free it as it is. */
static void *curl_realloc_wiped(void *p, size_t len)
{
	size_t old;
	void *q;

	if (p == NULL)
		return malloc(len);
	old = malloc_usable_size(p);
	if (len <= old)
		return p;
	if ((q = malloc(len)) == NULL)
		return NULL;
	memcpy(q, p, old);
	curl_free_wiped(p);
	return q;
}

static void *curl_malloc(size_t len)
{
	return malloc(len);
}

static void *curl_calloc(size_t n, size_t len)
{
	return calloc(n, len);
}

static char *curl_strdup(const char *s)
{
	return strdup(s);
}

/*
 * From cmk_http_global_init() or, in programs that do not call it, from the
 * first cmk_http_new(): the allocator must be in place before curl allocates
 * anything, and curl allocates from its first call.
 */
static pthread_mutex_t global_mu = PTHREAD_MUTEX_INITIALIZER;
static bool global_ready;

int cmk_http_global_init(void)
{
	const char *tls;
	CURLcode cc = CURLE_OK;

	pthread_mutex_lock(&global_mu);
	if (!global_ready) {
		cc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, curl_malloc, curl_free_wiped, curl_realloc_wiped,
					  curl_strdup, curl_calloc);
		if (cc == CURLE_OK) {
			global_ready = true;
			tls = curl_version_info(CURLVERSION_NOW)->ssl_version;
			tls_cleanse = cmk_http_openssl_matches(tls);
			if (!tls_cleanse)
				cmk_log(CMK_LOG_DEBUG, "http: libcurl's TLS library (%s) is not the OpenSSL 3 "
					"linked here: decrypted answers are not wiped inside it", tls ? tls : "none");
		}
	}
	pthread_mutex_unlock(&global_mu);
	if (cc != CURLE_OK)
		return cmk_fail(cc == CURLE_OUT_OF_MEMORY ? CMK_ERR_NOMEM : CMK_ERR_INTERNAL,
				"http: curl_global_init: %s", curl_easy_strerror(cc));
	return 0;
}

void cmk_http_global_cleanup(void)
{
	pthread_mutex_lock(&global_mu);
	if (global_ready)
		curl_global_cleanup();
	global_ready = false;
	pthread_mutex_unlock(&global_mu);
}

int cmk_http_new(const char *ca_cert, long timeout_s, struct cmk_http **out)
{
	struct cmk_http *h;
	int rc;

	if (ca_cert == NULL || *ca_cert == '\0')
		return cmk_fail(CMK_ERR_INVALID, "http: a CA certificate file is required (there is no insecure mode)");
	if (timeout_s <= 0)
		return cmk_fail(CMK_ERR_INVALID, "http: timeout must be positive, not %ld", timeout_s);
	if ((rc = cmk_http_global_init()) != 0)
		return rc;
	/* Say which file is missing now rather than as a TLS failure on the first request. */
	if (access(ca_cert, R_OK) != 0)
		return cmk_fail(CMK_ERR_NOTFOUND, "http: CA certificate file %s cannot be read", ca_cert);
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return CMK_ERR_NOMEM;
	h->timeout_s = timeout_s;
	if ((h->ca_cert = strdup(ca_cert)) == NULL || (h->curl = curl_easy_init()) == NULL) {
		cmk_http_free(h);
		return cmk_fail(CMK_ERR_NOMEM, "http: cannot create a curl handle");
	}
	*out = h;
	return 0;
}

void cmk_http_free(struct cmk_http *h)
{
	if (h == NULL)
		return;
	if (h->curl != NULL)
		curl_easy_cleanup(h->curl);
	free(h->ca_cert);
	free(h);
}

void cmk_http_response_clear(struct cmk_http_response *resp)
{
	if (resp == NULL)
		return;
	/* The body may hold a token or a private key: its pages are wiped and unmapped. */
	cmk_locked_free(resp->body);
	free(resp->location);
	free(resp->content_type);
	memset(resp, 0, sizeof(*resp));
	resp->retry_after = -1;
}

/*
 * Grow the body so `need` more bytes and a NUL fit.  The body lives in
 * locked, undumpable pages (cmk_locked_alloc): in issue mode it holds a
 * private key until the answer is parsed.  The old copy is wiped when the
 * body moves.
 */
static bool body_reserve(struct transfer *t, size_t need)
{
	struct cmk_http_response *r = t->resp;
	size_t want = r->body_len + need + 1;
	char *nb;

	if (want <= t->cap)
		return true;
	/* At least double, so a long answer is copied a logarithmic number of times. */
	if (want < t->cap * 2)
		want = t->cap * 2;
	if ((nb = cmk_locked_alloc(want)) == NULL)
		return false;
	if (r->body != NULL) {
		memcpy(nb, r->body, r->body_len);
		cmk_locked_free(r->body);
	}
	r->body = nb;
	t->cap = cmk_locked_size(nb);
	return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	struct cmk_http_response *r = t->resp;
	size_t n = size * nmemb;

	if (r->body_len + n > BODY_MAX) {
		t->too_large = true;
		return 0;
	}
	if (!body_reserve(t, n)) {
		t->nomem = true;
		return 0;
	}
	memcpy(r->body + r->body_len, data, n);
	r->body_len += n;
	r->body[r->body_len] = '\0';
	return n;
}

/*
 * Retry-After is either delay-seconds or an HTTP-date (RFC 9110 10.2.3).
 * Returns seconds from now, or -1 when the value is neither.
 */
static int64_t parse_retry_after(const char *v)
{
	const char *p = v;
	int64_t n = 0;
	time_t when;

	if (*p >= '0' && *p <= '9') {
		while (*p >= '0' && *p <= '9') {
			if (n < RETRY_AFTER_MAX)
				n = n * 10 + (*p - '0');
			p++;
		}
		return *p == '\0' ? (n < RETRY_AFTER_MAX ? n : RETRY_AFTER_MAX) : -1;
	}
	if ((when = curl_getdate(v, NULL)) == -1)
		return -1;
	n = (int64_t)when - (int64_t)time(NULL);
	if (n < 0)
		return 0;
	return n < RETRY_AFTER_MAX ? n : RETRY_AFTER_MAX;
}

/* Replace *field with a copy of value; false when memory runs out. */
static bool set_header_field(char **field, const char *value)
{
	char *copy = strdup(value);

	if (copy == NULL)
		return false;
	free(*field);
	*field = copy;
	return true;
}

/* Forget headers of an earlier response in the same transfer (an interim 1xx answer). */
static void forget_headers(struct cmk_http_response *r)
{
	free(r->location);
	free(r->content_type);
	r->location = NULL;
	r->content_type = NULL;
	r->retry_after = -1;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct transfer *t = arg;
	struct cmk_http_response *r = t->resp;
	size_t n = size * nmemb, name_len;
	char line[8192], *value, *end;

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		forget_headers(r);
		return n;
	}
	/* Longer lines are headers we do not read; skip them rather than fail the transfer. */
	if (n >= sizeof(line) || (value = memchr(data, ':', n)) == NULL)
		return n;
	memcpy(line, data, n);
	line[n] = '\0';
	name_len = (size_t)(value - data);
	value = line + name_len + 1;
	line[name_len] = '\0';
	while (*value == ' ' || *value == '\t')
		value++;
	end = value + strlen(value);
	while (end > value && isspace((unsigned char)end[-1]))
		*--end = '\0';

	if (strcasecmp(line, "Retry-After") == 0) {
		r->retry_after = parse_retry_after(value);
	} else if (strcasecmp(line, "Location") == 0) {
		if (!set_header_field(&r->location, value))
			goto nomem;
	} else if (strcasecmp(line, "Content-Type") == 0) {
		if (!set_header_field(&r->content_type, value))
			goto nomem;
	}
	return n;
nomem:
	t->nomem = true;
	return 0;
}

/* curl copies header strings; the copies include X-Vault-Token, so wipe them before they are freed. */
static void free_headers(struct curl_slist *list)
{
	for (struct curl_slist *l = list; l != NULL; l = l->next)
		cmk_wipe(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

/* Copy the caller's headers into a curl list; false when memory runs out. */
static bool build_headers(const char *const *headers, struct curl_slist **out)
{
	struct curl_slist *list = NULL, *next;

	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
		if ((next = curl_slist_append(list, headers[i])) == NULL) {
			free_headers(list);
			return false;
		}
		list = next;
	}
	*out = list;
	return true;
}

/*
 * Set every option of one request.  The handle is reset first, so each
 * request starts from curl's defaults; the connection cache survives a reset.
 */
static CURLcode apply_options(struct cmk_http *h, const char *method, const char *url, struct curl_slist *hdrs,
			      const char *body, size_t body_len, struct transfer *t)
{
	CURL *c = h->curl;
	CURLcode cc;

	curl_easy_reset(c);
#define SET(opt, val) \
	if ((cc = curl_easy_setopt(c, opt, val)) != CURLE_OK) \
		return cc
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	/* Trust the configured CA file only: Debian's libcurl would otherwise also trust /etc/ssl/certs. */
	SET(CURLOPT_CAINFO, h->ca_cert);
	SET(CURLOPT_CAPATH, NULL);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	/* An empty proxy disables http_proxy/https_proxy from the environment. */
	SET(CURLOPT_PROXY, "");
	/* Signals would interrupt a multi-threaded daemon; timeouts still apply. */
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_TIMEOUT, h->timeout_s);
	SET(CURLOPT_ERRORBUFFER, h->errbuf);
	SET(CURLOPT_USERAGENT, "cmkcert");
	if (tls_cleanse) {
		SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
	}
	SET(CURLOPT_HTTPHEADER, hdrs);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, t);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, t);
	if (strcmp(method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "HEAD") == 0) {
		SET(CURLOPT_NOBODY, 1L);
	} else {
		/* POSTFIELDS with an explicit size also sends an empty body correctly. */
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
		SET(CURLOPT_POSTFIELDS, body ? body : "");
		if (strcmp(method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, method);
	}
#undef SET
	return CURLE_OK;
}

/* The one place CURLcode becomes a CMK_ERR_* code; the detail names the URL and curl's own words. */
static int translate_curl(CURLcode cc, const char *url, const char *errbuf, const struct transfer *t)
{
	const char *why = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cc);

	if (t->too_large)
		return cmk_fail(CMK_ERR_PROTOCOL, "%s: answer larger than %zu bytes", url, BODY_MAX);
	if (t->nomem)
		return cmk_fail(CMK_ERR_NOMEM, "%s: out of memory while reading the answer", url);
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return cmk_fail(CMK_ERR_UNREACHABLE, "%s: %s", url, why);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CLIENTCERT:
	case CURLE_USE_SSL_FAILED:
		return cmk_fail(CMK_ERR_TLS, "%s: %s", url, why);
	case CURLE_OPERATION_TIMEDOUT:
		return cmk_fail(CMK_ERR_TIMEOUT, "%s: %s", url, why);
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return cmk_fail(CMK_ERR_INVALID, "%s: %s (only https:// URLs are used)", url, why);
	case CURLE_OUT_OF_MEMORY:
		return cmk_fail(CMK_ERR_NOMEM, "%s: %s", url, why);
	default:
		return cmk_fail(CMK_ERR_IO, "%s: %s", url, why);
	}
}

int cmk_http_request(struct cmk_http *h, const char *method, const char *url, const char *const *headers,
		     const char *body, size_t body_len, struct cmk_http_response *resp)
{
	struct transfer t = { .resp = resp };
	struct curl_slist *hdrs = NULL;
	CURLcode cc;
	long status = 0;
	int rc = 0;

	memset(resp, 0, sizeof(*resp));
	resp->retry_after = -1;
	/* Refuse plain http before curl sees it: a token must never travel in clear text. */
	if (strncasecmp(url, "https://", 8) != 0)
		return cmk_fail(CMK_ERR_INVALID, "%s: only https:// URLs are allowed", url);
	if (!build_headers(headers, &hdrs))
		return cmk_fail(CMK_ERR_NOMEM, "%s: out of memory building headers", url);
	h->errbuf[0] = '\0';
	if ((cc = apply_options(h, method, url, hdrs, body, body_len, &t)) != CURLE_OK) {
		rc = translate_curl(cc, url, h->errbuf, &t);
		goto out;
	}
	if ((cc = curl_easy_perform(h->curl)) != CURLE_OK) {
		rc = translate_curl(cc, url, h->errbuf, &t);
		goto out;
	}
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
	resp->status = status;
	/* Callers may always treat the body as a string, even after an empty answer. */
	if (!body_reserve(&t, 0)) {
		rc = cmk_fail(CMK_ERR_NOMEM, "%s: out of memory", url);
		goto out;
	}
	resp->body[resp->body_len] = '\0';
out:
	/* The handle keeps a pointer to the list; drop it before the list goes. */
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
	free_headers(hdrs);
	if (rc != 0)
		cmk_http_response_clear(resp);
	return rc;
}
