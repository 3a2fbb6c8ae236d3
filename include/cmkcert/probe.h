/*
 * probe.h - the keystore connection test (DESIGN §8): can this client
 * certificate and key open an mTLS connection the keystore accepts?
 *
 *   tls:  a TLS handshake presenting the client pair; the server's
 *         certificate is verified against the keystore's server CA when one
 *         is given (else the system trust store); success needs the server
 *         to accept the client (the handshake completes and the first read
 *         does not get a fatal alert).
 *   kmip: the same plus a KMIP DiscoverVersions request/response over TTLV.
 *   none: nothing is tested (recorded as skipped by the caller).
 */
#ifndef CMKCERT_PROBE_H
#define CMKCERT_PROBE_H

#include <stddef.h>
#include <stdint.h>
#include "cmkcert/config.h"
#include "cmkcert/crypto.h"

struct cmk_probe_target {
	const char *host;            /* DNS name, or IPv4 / IPv6 literal (brackets optional) */
	uint16_t port;
	const char *server_ca_pem;   /* NULL = system trust store */
	enum cmk_verify verify;
	long timeout_ms;             /* bounds connect, handshake and KMIP exchange (not DNS resolution) */
};

/*
 * 0 when the keystore accepted the client; CMK_ERR_KEYSTORE when it
 * refused it (alert, closed connection, KMIP error), CMK_ERR_TLS when its
 * own certificate does not verify, CMK_ERR_UNREACHABLE / CMK_ERR_TIMEOUT
 * when it cannot be reached; detail says which and why.
 *
 * Also: CMK_ERR_INVALID, before anything is sent, when the certificate,
 * chain or server CA cannot be parsed or the certificate is not the key's;
 * CMK_ERR_PROTOCOL when a KMIP answer cannot be understood.  A DNS host is
 * sent as SNI and must be a dNSName SAN (or the CN) of the keystore's
 * certificate; an IP literal must be one of its iPAddress SANs.  A keystore
 * that does not ask for a client certificate is accepted with a warning in
 * the log.  The key is only used, never copied.  Safe to call from several
 * threads at once.
 */
int cmk_probe(const struct cmk_probe_target *t, const char *cert_pem, const char *chain_pem,
	      const struct cmk_key *key);

#endif
