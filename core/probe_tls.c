/*
 * probe_tls.c - the keystore connection test (DESIGN §8, probe.h): open a
 * TLS 1.2 connection to a keystore with a tenant's new certificate and key
 * and decide whether the keystore accepted them.  With crypto_mbedtls.c,
 * the only core file that includes mbedTLS; the key's mbedTLS context comes
 * from crypto_int.h.
 *
 * Time.  t->timeout_ms bounds the probe from the first connect() to the
 * goodbye.  The socket is non-blocking and every wait is a poll() limited
 * by what is left, so a keystore that accepts TCP and then stays silent
 * cannot hang a worker.  Name resolution is the exception: getaddrinfo()
 * is bounded by the resolver's own timeout and attempts (resolv.conf).
 *
 * Verdicts, in TLS 1.2 terms:
 *  - the keystore's certificate does not verify against its CA (or the
 *    system trust store), or does not name the host: CMK_ERR_TLS;
 *  - a fatal alert or a closed connection after our certificate went out
 *    is the keystore refusing it: CMK_ERR_KEYSTORE.  Before that point
 *    nothing about the certificate was judged, so it is CMK_ERR_TLS;
 *  - verify=tls: after the handshake we listen briefly, because a server
 *    may refuse only once the handshake is over; silence means it waits
 *    for us to speak, and counts as acceptance;
 *  - verify=kmip: a DiscoverVersions round trip; an error result is a
 *    refusal.
 *
 * mbedTLS 2.28 checks a host name only against dNSName SANs and the CN, so
 * for an IP literal its name check is left off and the address is compared
 * with the certificate's iPAddress SANs here, in the verify callback: a
 * mismatch stops the handshake before our certificate is sent.
 *
 * The received alert, the handshake position and whether the server asked
 * for a certificate are read from mbedtls_ssl_context fields (in_msg,
 * state, client_auth) that 2.28 leaves public; mbedTLS 3 makes them private.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/asn1.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "cmkcert/error.h"
#include "cmkcert/log.h"
#include "cmkcert/names.h"
#include "cmkcert/probe.h"
#include "cmkcert/util.h"
#include "crypto_int.h"
#include "kmip_int.h"

#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
/* How long to listen after the handshake for a refusal that comes late. */
#define SETTLE_MS 200
/* How long the close_notify may take; the verdict is already made. */
#define CLOSE_MS 100
#define ALERT_UNKNOWN (-1)

struct probe {
	const struct cmk_probe_target *t;
	char host[CMK_HOST_MAX + 1];     /* without brackets */
	char where[CMK_HOST_MAX + 16];   /* "host:port" or "[v6]:port", for messages */
	unsigned char ip[16];            /* the host as an address when it is an IP literal */
	size_t ip_len;                   /* 4, 16, or 0 for a DNS name */
	bool ip_mismatch;                /* the verify callback found no matching iPAddress SAN */
	int64_t deadline;                /* monotonic ms: end of the whole probe */
	int64_t io_deadline;             /* end of the current wait, never after deadline */
	int fd;
	int sock_errno;                  /* errno of the last failed socket call */
	bool established;                /* handshake done and the peer has not closed or alerted */
	mbedtls_x509_crt ca;             /* whom we trust for the keystore's certificate */
	mbedtls_x509_crt own;            /* our certificate, then its chain */
	mbedtls_ssl_config conf;
	mbedtls_ssl_context ssl;
};

/* ---- messages ---------------------------------------------------------- */

/* Record an mbedTLS failure as "keystore HOST:PORT <what>: <mbedTLS text>"; returns `code`, or CMK_ERR_NOMEM. */
static int mbed_fail(const struct probe *p, int code, int ret, const char *what)
{
	char label[sizeof(p->where) + 96];
	int rc;

	snprintf(label, sizeof(label), "keystore %s %s", p->where, what);
	rc = cmk_mbedtls_fail(ret, label);
	return rc == CMK_ERR_NOMEM ? rc : code;
}

static const char *alert_name(int alert)
{
	switch (alert) {
	case MBEDTLS_SSL_ALERT_MSG_CLOSE_NOTIFY: return "close_notify";
	case MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE: return "unexpected_message";
	case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC: return "bad_record_mac";
	case MBEDTLS_SSL_ALERT_MSG_RECORD_OVERFLOW: return "record_overflow";
	case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE: return "handshake_failure";
	case MBEDTLS_SSL_ALERT_MSG_BAD_CERT: return "bad_certificate";
	case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT: return "unsupported_certificate";
	case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED: return "certificate_revoked";
	case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED: return "certificate_expired";
	case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN: return "certificate_unknown";
	case MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER: return "illegal_parameter";
	case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA: return "unknown_ca";
	case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED: return "access_denied";
	case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR: return "decode_error";
	case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR: return "decrypt_error";
	case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION: return "protocol_version";
	case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY: return "insufficient_security";
	case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR: return "internal_error";
	case MBEDTLS_SSL_ALERT_MSG_USER_CANCELED: return "user_canceled";
	case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_EXT: return "unsupported_extension";
	case MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME: return "unrecognized_name";
	case 116: return "certificate_required";   /* defined by TLS 1.3; some servers send it in 1.2 */
	case MBEDTLS_SSL_ALERT_MSG_NO_APPLICATION_PROTOCOL: return "no_application_protocol";
	case ALERT_UNKNOWN: return "fatal alert";
	default: return "unknown alert";
	}
}

/* The description byte of the fatal alert mbedTLS has just received. */
static int received_alert(const struct probe *p)
{
	if (p->ssl.in_msgtype == MBEDTLS_SSL_MSG_ALERT && p->ssl.in_msglen == 2 && p->ssl.in_msg != NULL)
		return p->ssl.in_msg[1];
	return ALERT_UNKNOWN;
}

/*
 * A keystore that refuses our certificate often sends its alert and closes
 * at once, while we are still writing the rest of our handshake; the write
 * then meets a reset connection before mbedTLS has read the alert.  The
 * alert is still in the socket's receive queue, and since the keystore
 * sent no ChangeCipherSpec it is in the clear: a 7-byte record
 * 21, 3, minor, 0, 2, level, description.  Used only on that dead path.
 */
static int pending_alert(const struct probe *p)
{
	unsigned char rec[7];

	if (p->fd < 0 || p->ssl.state > MBEDTLS_SSL_SERVER_CHANGE_CIPHER_SPEC)
		return ALERT_UNKNOWN;
	if (recv(p->fd, rec, sizeof(rec), MSG_DONTWAIT) != (ssize_t)sizeof(rec))
		return ALERT_UNKNOWN;
	if (rec[0] != MBEDTLS_SSL_MSG_ALERT || rec[1] != MBEDTLS_SSL_MAJOR_VERSION_3 || rec[3] != 0 || rec[4] != 2 ||
	    rec[5] != MBEDTLS_SSL_ALERT_LEVEL_FATAL)
		return ALERT_UNKNOWN;
	return rec[6];
}

/* Whether the server asked for our certificate and it has gone out: from then on a refusal is a verdict on it. */
static bool cert_was_sent(const struct probe *p)
{
	return p->ssl.client_auth && p->ssl.state > MBEDTLS_SSL_CLIENT_CERTIFICATE;
}

/* ---- socket I/O with one deadline ---------------------------------------- */

/* Wait until the socket is ready for `events`: 0, CMK_ERR_TIMEOUT at io_deadline, CMK_ERR_IO. */
static int wait_fd(struct probe *p, short events)
{
	struct pollfd pfd = { .fd = p->fd, .events = events };

	for (;;) {
		int64_t left = p->io_deadline - cmk_monotonic_ms();
		int n;

		if (left <= 0)
			return CMK_ERR_TIMEOUT;
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		/* Readiness includes errors and hang-ups: the next call on the socket reports them. */
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR) {
			p->sock_errno = errno;
			return CMK_ERR_IO;
		}
	}
}

/* mbedTLS send callback.  MSG_NOSIGNAL: a keystore closing on us must not kill the daemon with SIGPIPE. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct probe *p = ctx;

	for (;;) {
		ssize_t n = send(p->fd, buf, len, MSG_NOSIGNAL);
		int rc;

		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			p->sock_errno = errno;
			return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
		}
		if ((rc = wait_fd(p, POLLOUT)) != 0)
			return rc == CMK_ERR_TIMEOUT ? MBEDTLS_ERR_SSL_TIMEOUT : MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

/* mbedTLS receive callback.  Its own timeout argument is unused: io_deadline governs every wait. */
static int bio_recv(void *ctx, unsigned char *buf, size_t len, uint32_t timeout)
{
	struct probe *p = ctx;

	(void)timeout;
	for (;;) {
		ssize_t n = recv(p->fd, buf, len, 0);
		int rc;

		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			p->sock_errno = errno;
			return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
		}
		if ((rc = wait_fd(p, POLLIN)) != 0)
			return rc == CMK_ERR_TIMEOUT ? MBEDTLS_ERR_SSL_TIMEOUT : MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

/* One address: 0 connected (p->fd set), CMK_ERR_TIMEOUT, CMK_ERR_IO, or CMK_ERR_UNREACHABLE to try the next. */
static int try_connect(struct probe *p, const struct addrinfo *ai)
{
	int soerr = 0, rc;
	socklen_t sl = sizeof(soerr);

	p->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (p->fd < 0) {
		p->sock_errno = errno;
		return CMK_ERR_IO;
	}
	if (connect(p->fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return 0;
	/* A non-blocking connect interrupted by a signal goes on in the background, like EINPROGRESS. */
	if (errno != EINPROGRESS && errno != EINTR) {
		soerr = errno;
	} else if ((rc = wait_fd(p, POLLOUT)) != 0) {
		return rc;                   /* the socket is closed by probe_free() */
	} else if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
		soerr = errno;
	}
	if (soerr == 0)
		return 0;
	p->sock_errno = soerr;
	close(p->fd);
	p->fd = -1;
	return soerr == ETIMEDOUT ? CMK_ERR_TIMEOUT : CMK_ERR_UNREACHABLE;
}

static int tcp_connect(struct probe *p)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char port[8];
	int rc = CMK_ERR_UNREACHABLE, gai;

	/* No AI_ADDRCONFIG: it hides loopback addresses on hosts that have no other. */
	if (p->ip_len != 0)
		hints.ai_flags |= AI_NUMERICHOST;
	snprintf(port, sizeof(port), "%u", (unsigned)p->t->port);
	gai = getaddrinfo(p->host, port, &hints, &res);
	if (gai == EAI_MEMORY)
		return CMK_ERR_NOMEM;
	if (gai != 0)
		return cmk_fail(CMK_ERR_UNREACHABLE, "keystore %s: cannot resolve the host: %s", p->where,
				gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
	for (const struct addrinfo *ai = res; ai != NULL && rc == CMK_ERR_UNREACHABLE; ai = ai->ai_next)
		rc = try_connect(p, ai);
	freeaddrinfo(res);
	if (rc == 0)
		return 0;
	if (rc == CMK_ERR_TIMEOUT)
		return cmk_fail(rc, "keystore %s: no TCP connection within %ld ms", p->where, p->t->timeout_ms);
	return cmk_fail(rc, "keystore %s: cannot connect: %s", p->where, strerror(p->sock_errno));
}

/* ---- IP literal hosts ---------------------------------------------------- */

/* Whether a GeneralNames SEQUENCE at [p, end) holds iPAddress `ip`. */
static bool names_contain_ip(unsigned char *p, const unsigned char *end, const unsigned char *ip, size_t ip_len)
{
	size_t len;

	if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
		return false;
	end = p + len;
	while (p < end) {
		unsigned char tag = *p++;

		if (mbedtls_asn1_get_len(&p, end, &len) != 0)
			return false;
		/* iPAddress is [7] IMPLICIT OCTET STRING: 4 bytes for IPv4, 16 for IPv6. */
		if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && len == ip_len && memcmp(p, ip, ip_len) == 0)
			return true;
		p += len;
	}
	return false;
}

/*
 * Whether the certificate lists `ip` among its subjectAltName iPAddress
 * entries (RFC 5280 4.2.1.6).  v3_ext holds the content of the [3]
 * wrapper: SEQUENCE OF Extension { extnID, critical DEFAULT FALSE,
 * extnValue OCTET STRING }.  Anything malformed counts as no match.
 */
static bool has_ip_san(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t ip_len)
{
	unsigned char *p = crt->v3_ext.p;
	const unsigned char *end;
	size_t len;

	if (p == NULL)
		return false;
	end = p + crt->v3_ext.len;
	if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
		return false;
	end = p + len;
	while (p < end) {
		unsigned char *ext_end;
		mbedtls_asn1_buf oid;
		int critical;

		if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
			return false;
		ext_end = p + len;
		if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID) != 0)
			return false;
		oid.p = p;
		p += oid.len;
		if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) != 0) {
			p = ext_end;
			continue;
		}
		/* The critical flag is optional; when absent p does not move. */
		(void)mbedtls_asn1_get_bool(&p, ext_end, &critical);
		if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0)
			return false;
		return names_contain_ip(p, p + len, ip, ip_len);
	}
	return false;
}

/* Verify callback, set only for IP literal hosts: the leaf must carry the address. */
static int verify_ip_san(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct probe *p = ctx;

	if (depth == 0 && !has_ip_san(crt, p->ip, p->ip_len)) {
		*flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
		p->ip_mismatch = true;
	}
	return 0;
}

/* ---- credentials and configuration --------------------------------------- */

/* Parse a PEM text (one or more certificates) onto `crt`; any unparsable certificate refuses the lot. */
static int load_pem(const struct probe *p, mbedtls_x509_crt *crt, const char *pem, const char *what)
{
	/* mbedTLS recognises PEM only when the length includes the terminating NUL. */
	int ret = mbedtls_x509_crt_parse(crt, (const unsigned char *)pem, strlen(pem) + 1);

	if (ret > 0)
		return cmk_fail(CMK_ERR_INVALID, "keystore %s %s: %d certificate(s) could not be parsed", p->where,
				what, ret);
	if (ret < 0)
		return mbed_fail(p, CMK_ERR_INVALID, ret, what);
	return 0;
}

static int load_trust(struct probe *p)
{
	int ret;

	if (p->t->server_ca_pem != NULL)
		return load_pem(p, &p->ca, p->t->server_ca_pem, "server CA");
	ret = mbedtls_x509_crt_parse_file(&p->ca, SYSTEM_CA_BUNDLE);
	if (ret < 0)
		return mbed_fail(p, CMK_ERR_IO, ret, "system trust store " SYSTEM_CA_BUNDLE);
	/* Distribution bundles may hold a few certificates mbedTLS cannot read; the rest still serve. */
	if (ret > 0)
		cmk_log(CMK_LOG_DEBUG, "probe: %d certificates in %s could not be parsed and are ignored", ret,
			SYSTEM_CA_BUNDLE);
	return 0;
}

static int load_client(struct probe *p, const char *cert_pem, const char *chain_pem, const struct cmk_key *key)
{
	int rc, ret;

	if ((rc = load_pem(p, &p->own, cert_pem, "client certificate")) != 0)
		return rc;
	if (chain_pem != NULL && chain_pem[0] != '\0' &&
	    (rc = load_pem(p, &p->own, chain_pem, "client CA chain")) != 0)
		return rc;
	/* A mismatched pair would be refused by the keystore and blamed on it; say what is really wrong. */
	if (mbedtls_pk_check_pair(&p->own.pk, cmk_key_pk(key)) != 0)
		return cmk_fail(CMK_ERR_INVALID, "keystore %s: the client certificate does not belong to the key",
				p->where);
	if ((ret = mbedtls_ssl_conf_own_cert(&p->conf, &p->own, cmk_key_pk(key))) != 0)
		return mbed_fail(p, CMK_ERR_CRYPTO, ret, "client certificate");
	return 0;
}

static int configure(struct probe *p)
{
	int ret, rc;

	ret = mbedtls_ssl_config_defaults(&p->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
					  MBEDTLS_SSL_PRESET_DEFAULT);
	if (ret != 0)
		return mbed_fail(p, CMK_ERR_CRYPTO, ret, "TLS configuration");
	/* Keystores speak TLS 1.2 (KMIP requires it); nothing older is offered. */
	mbedtls_ssl_conf_min_version(&p->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_authmode(&p->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&p->conf, &p->ca, NULL);
	if ((rc = cmk_rng_ready()) != 0)
		return rc;
	mbedtls_ssl_conf_rng(&p->conf, cmk_rng, NULL);
	if (p->ip_len != 0)
		mbedtls_ssl_conf_verify(&p->conf, verify_ip_san, p);
	return 0;
}

static int start_session(struct probe *p)
{
	int ret;

	if ((ret = mbedtls_ssl_setup(&p->ssl, &p->conf)) != 0)
		return mbed_fail(p, CMK_ERR_CRYPTO, ret, "TLS setup");
	/* A DNS name is both the SNI and the name the certificate must carry; an IP literal is neither (RFC 6066). */
	if (p->ip_len == 0 && (ret = mbedtls_ssl_set_hostname(&p->ssl, p->host)) != 0)
		return mbed_fail(p, CMK_ERR_INVALID, ret, "host name");
	mbedtls_ssl_set_bio(&p->ssl, p, bio_send, NULL, bio_recv);
	return 0;
}

/* ---- handshake and verdicts ------------------------------------------------ */

/* Why verification failed, as "reason; reason" (mbedTLS gives one line per flag). */
static void verify_reason(const struct probe *p, char *buf, size_t len)
{
	uint32_t flags = mbedtls_ssl_get_verify_result(&p->ssl);
	char info[512], *line, *save = NULL;
	const char *sep = "";
	size_t used = 0;

	buf[0] = '\0';
	if (p->ip_mismatch) {
		/* mbedTLS would call it a CN mismatch; say what was really compared. */
		flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
		used = (size_t)snprintf(buf, len, "no iPAddress subjectAltName matches %s", p->host);
		sep = "; ";
	}
	if (flags == 0 || mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags) <= 0)
		return;
	for (line = strtok_r(info, "\n", &save); line != NULL && used < len; line = strtok_r(NULL, "\n", &save)) {
		used += (size_t)snprintf(buf + used, len - used, "%s%s", sep, line);
		sep = "; ";
	}
}

static int handshake_failed(struct probe *p, int ret)
{
	char why[512];
	int alert;

	cmk_log(CMK_LOG_DEBUG, "probe: keystore %s: handshake ended with mbedTLS -0x%04x in state %d%s", p->where,
		(unsigned)-ret, p->ssl.state, p->ssl.client_auth ? ", client certificate requested" : "");
	switch (ret) {
	case MBEDTLS_ERR_SSL_TIMEOUT:
		return cmk_fail(CMK_ERR_TIMEOUT, "keystore %s: TLS handshake not finished within %ld ms", p->where,
				p->t->timeout_ms);
	case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
		verify_reason(p, why, sizeof(why));
		return cmk_fail(CMK_ERR_TLS, "keystore %s certificate not trusted: %s", p->where, why);
	case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
		if (cert_was_sent(p))
			return cmk_fail(CMK_ERR_KEYSTORE, "keystore %s refused the client certificate: %s", p->where,
					alert_name(received_alert(p)));
		return cmk_fail(CMK_ERR_TLS, "keystore %s ended the TLS handshake before it saw a client certificate: %s",
				p->where, alert_name(received_alert(p)));
	case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
	case MBEDTLS_ERR_SSL_CONN_EOF:
	case MBEDTLS_ERR_NET_CONN_RESET:
		if (!cert_was_sent(p))
			return cmk_fail(CMK_ERR_TLS, "keystore %s closed the connection during the TLS handshake",
					p->where);
		if ((alert = pending_alert(p)) != ALERT_UNKNOWN)
			return cmk_fail(CMK_ERR_KEYSTORE, "keystore %s refused the client certificate: %s", p->where,
					alert_name(alert));
		return cmk_fail(CMK_ERR_KEYSTORE, "keystore %s refused the client certificate: connection closed",
				p->where);
	case MBEDTLS_ERR_NET_SEND_FAILED:
	case MBEDTLS_ERR_NET_RECV_FAILED:
		return cmk_fail(CMK_ERR_IO, "keystore %s: connection failed during the TLS handshake: %s", p->where,
				strerror(p->sock_errno));
	default:
		return mbed_fail(p, CMK_ERR_TLS, ret, "TLS handshake failed");
	}
}

static int handshake(struct probe *p)
{
	int ret;

	p->io_deadline = p->deadline;
	do
		ret = mbedtls_ssl_handshake(&p->ssl);
	while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	if (ret != 0)
		return handshake_failed(p, ret);
	p->established = true;
	cmk_log(CMK_LOG_DEBUG, "probe: keystore %s: %s, %s", p->where, mbedtls_ssl_get_version(&p->ssl),
		mbedtls_ssl_get_ciphersuite(&p->ssl));
	if (!p->ssl.client_auth)
		cmk_log(CMK_LOG_WARN, "probe: keystore %s did not ask for a client certificate; "
			"the test shows only that it is reachable", p->where);
	return 0;
}

/* A failure on the established connection: the keystore's verdict, a timeout or a transport error. */
static int session_failed(struct probe *p, int ret, const char *when)
{
	if (ret != MBEDTLS_ERR_SSL_TIMEOUT)
		p->established = false;
	switch (ret) {
	case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
		return cmk_fail(CMK_ERR_KEYSTORE, "keystore %s refused the client certificate: %s %s", p->where,
				alert_name(received_alert(p)), when);
	case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
	case MBEDTLS_ERR_SSL_CONN_EOF:
	case MBEDTLS_ERR_NET_CONN_RESET:
		return cmk_fail(CMK_ERR_KEYSTORE, "keystore %s refused the client certificate: connection closed %s",
				p->where, when);
	case MBEDTLS_ERR_SSL_TIMEOUT:
		return cmk_fail(CMK_ERR_TIMEOUT, "keystore %s: timed out %s", p->where, when);
	case MBEDTLS_ERR_NET_SEND_FAILED:
	case MBEDTLS_ERR_NET_RECV_FAILED:
		return cmk_fail(CMK_ERR_IO, "keystore %s: connection failed %s: %s", p->where, when,
				strerror(p->sock_errno));
	default:
		return mbed_fail(p, CMK_ERR_TLS, ret, when);
	}
}

/*
 * verify=tls: listen briefly after the handshake.  An alert or a close is
 * a refusal; silence (the server waits for a request) or data is acceptance.
 */
static int settle(struct probe *p)
{
	unsigned char buf[256];
	int64_t soon = cmk_monotonic_ms() + SETTLE_MS;
	int ret;

	p->io_deadline = soon < p->deadline ? soon : p->deadline;
	do
		ret = mbedtls_ssl_read(&p->ssl, buf, sizeof(buf));
	while (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE);
	if (ret > 0 || ret == MBEDTLS_ERR_SSL_TIMEOUT)
		return 0;
	/* mbedtls_ssl_read() returns 0 for a plain end of stream. */
	return session_failed(p, ret == 0 ? MBEDTLS_ERR_SSL_CONN_EOF : ret, "right after the handshake");
}

static int write_all(struct probe *p, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		int ret = mbedtls_ssl_write(&p->ssl, buf, len);

		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (ret < 0)
			return ret;
		buf += ret;
		len -= (size_t)ret;
	}
	return 0;
}

static int read_exact(struct probe *p, uint8_t *buf, size_t len)
{
	while (len > 0) {
		int ret = mbedtls_ssl_read(&p->ssl, buf, len);

		if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (ret == 0)
			return MBEDTLS_ERR_SSL_CONN_EOF;
		if (ret < 0)
			return ret;
		buf += ret;
		len -= (size_t)ret;
	}
	return 0;
}

/* Re-label the codec's CMK_ERR_PROTOCOL detail with the keystore's name. */
static int kmip_invalid(const struct probe *p)
{
	char why[512];

	/* cmk_fail() writes the buffer cmk_errdetail() returns: copy it first. */
	snprintf(why, sizeof(why), "%s", cmk_errdetail());
	return cmk_fail(CMK_ERR_PROTOCOL, "keystore %s sent an invalid KMIP answer: %s", p->where, why);
}

static int kmip_verdict(const struct probe *p, const struct cmk_kmip_result *res)
{
	const char *reason = cmk_kmip_reason_name(res->reason);
	char versions[CMK_KMIP_VERSIONS_MAX * 12] = "none in common", other[24];
	size_t used = 0;

	if (res->status != CMK_KMIP_STATUS_SUCCESS) {
		if (reason == NULL) {
			snprintf(other, sizeof(other), res->reason == 0 ? "no reason given" : "reason 0x%x",
				 (unsigned)res->reason);
			reason = other;
		}
		return cmk_fail(CMK_ERR_KEYSTORE, "keystore %s refused the KMIP request (%s): %s%s%s", p->where,
				cmk_kmip_status_name(res->status), reason, res->message[0] != '\0' ? ": " : "",
				res->message);
	}
	for (size_t i = 0; i < res->n_versions && used < sizeof(versions); i++)
		used += (size_t)snprintf(versions + used, sizeof(versions) - used, "%s%d.%d", i > 0 ? " " : "",
					 (int)res->versions[i].major, (int)res->versions[i].minor);
	cmk_log(CMK_LOG_DEBUG, "probe: keystore %s answered DiscoverVersions: %s", p->where, versions);
	return 0;
}

/* verify=kmip: DiscoverVersions over the established connection. */
static int kmip_round_trip(struct probe *p)
{
	uint8_t req[128], hdr[CMK_KMIP_HEADER_LEN], *msg = NULL;
	struct cmk_kmip_result res;
	size_t len, body;
	int ret, rc;

	if ((rc = cmk_kmip_discover_versions_request(req, sizeof(req), &len)) != 0)
		return rc;
	p->io_deadline = p->deadline;
	if ((ret = write_all(p, req, len)) != 0)
		return session_failed(p, ret, "while sending the KMIP request");
	if ((ret = read_exact(p, hdr, sizeof(hdr))) != 0)
		return session_failed(p, ret, "while waiting for the KMIP answer");
	if (cmk_kmip_response_body_len(hdr, &body) != 0)
		return kmip_invalid(p);
	if ((msg = malloc(sizeof(hdr) + body)) == NULL)
		return CMK_ERR_NOMEM;
	memcpy(msg, hdr, sizeof(hdr));
	if ((ret = read_exact(p, msg + sizeof(hdr), body)) != 0) {
		rc = session_failed(p, ret, "in the middle of the KMIP answer");
		goto out;
	}
	if (cmk_kmip_parse_discover_versions(msg, sizeof(hdr) + body, &res) != 0) {
		rc = kmip_invalid(p);
		goto out;
	}
	rc = kmip_verdict(p, &res);
out:
	free(msg);
	return rc;
}

/* ---- the probe ------------------------------------------------------------- */

static int probe_init(struct probe *p, const struct cmk_probe_target *t)
{
	const char *h = t->host;
	size_t n = strlen(h);
	int64_t now = cmk_monotonic_ms();

	memset(p, 0, sizeof(*p));
	p->t = t;
	p->fd = -1;
	mbedtls_x509_crt_init(&p->ca);
	mbedtls_x509_crt_init(&p->own);
	mbedtls_ssl_config_init(&p->conf);
	mbedtls_ssl_init(&p->ssl);
	p->deadline = t->timeout_ms > INT64_MAX - now ? INT64_MAX : now + t->timeout_ms;
	p->io_deadline = p->deadline;

	/* Accept "[v6]" as well as a bare IPv6 address. */
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n == 0 || n > CMK_HOST_MAX)
		return cmk_fail(CMK_ERR_INVALID, "probe: keystore host \"%.*s\" is empty or too long", 64, t->host);
	memcpy(p->host, h, n);
	p->host[n] = '\0';
	if (inet_pton(AF_INET, p->host, p->ip) == 1)
		p->ip_len = 4;
	else if (inet_pton(AF_INET6, p->host, p->ip) == 1)
		p->ip_len = 16;
	if (p->ip_len == 16)
		snprintf(p->where, sizeof(p->where), "[%s]:%u", p->host, (unsigned)t->port);
	else
		snprintf(p->where, sizeof(p->where), "%s:%u", p->host, (unsigned)t->port);
	return 0;
}

/* Say goodbye on a connection the keystore still holds open, within a short bound. */
static void close_politely(struct probe *p)
{
	int64_t soon = cmk_monotonic_ms() + CLOSE_MS;

	if (!p->established)
		return;
	p->io_deadline = soon < p->deadline ? soon : p->deadline;
	(void)mbedtls_ssl_close_notify(&p->ssl);
}

static void probe_free(struct probe *p)
{
	/* mbedtls_ssl_free() wipes the session keys. */
	mbedtls_ssl_free(&p->ssl);
	mbedtls_ssl_config_free(&p->conf);
	mbedtls_x509_crt_free(&p->own);
	mbedtls_x509_crt_free(&p->ca);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

int cmk_probe(const struct cmk_probe_target *t, const char *cert_pem, const char *chain_pem,
	      const struct cmk_key *key)
{
	struct probe p;
	int rc;

	if (t == NULL || t->host == NULL)
		return cmk_fail(CMK_ERR_INVALID, "probe: no keystore given");
	if (t->verify == CMK_VERIFY_NONE)
		return 0;
	if (t->verify != CMK_VERIFY_TLS && t->verify != CMK_VERIFY_KMIP)
		return cmk_fail(CMK_ERR_INVALID, "probe: unknown verify mode %d", (int)t->verify);
	if (cert_pem == NULL || key == NULL || t->port == 0 || t->timeout_ms <= 0)
		return cmk_fail(CMK_ERR_INVALID, "probe: keystore %.64s: a certificate, a key, a port and a positive "
				"timeout are required", t->host);

	if ((rc = probe_init(&p, t)) != 0)
		goto out;
	/* Everything that can be checked locally is checked before the keystore is contacted. */
	if ((rc = configure(&p)) != 0 || (rc = load_trust(&p)) != 0 ||
	    (rc = load_client(&p, cert_pem, chain_pem, key)) != 0 || (rc = start_session(&p)) != 0)
		goto out;
	if ((rc = tcp_connect(&p)) != 0 || (rc = handshake(&p)) != 0)
		goto out;
	rc = t->verify == CMK_VERIFY_KMIP ? kmip_round_trip(&p) : settle(&p);
	if (rc == 0)
		cmk_log(CMK_LOG_DEBUG, "probe: keystore %s accepted the client certificate", p.where);
	close_politely(&p);
out:
	probe_free(&p);
	return rc;
}
