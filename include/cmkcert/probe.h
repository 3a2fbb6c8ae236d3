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
	const char *host;
	uint16_t port;
	const char *server_ca_pem;   /* NULL = system trust store */
	enum cmk_verify verify;
	long timeout_ms;
};

/*
 * 0 when the keystore accepted the client; CMK_ERR_KEYSTORE when it
 * refused it (alert, closed connection, KMIP error), CMK_ERR_TLS when its
 * own certificate does not verify, CMK_ERR_UNREACHABLE / CMK_ERR_TIMEOUT
 * when it cannot be reached; detail says which and why.
 */
int cmk_probe(const struct cmk_probe_target *t, const char *cert_pem, const char *chain_pem,
	      const struct cmk_key *key);

#endif
