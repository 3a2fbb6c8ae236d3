/*
 * error.c - result code texts and the per-thread failure detail.
 *
 * The detail often quotes input (a name, a file name, a field of a request,
 * a server's error text) and ends up on a terminal, in a log line or in the
 * audit trail, so it is escaped here once (cmk_escape): whatever a caller
 * forgot to quote, no control character or broken UTF-8 gets through.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cmkcert/error.h"
#include "cmkcert/util.h"

static _Thread_local char detail[1024];

const char *cmk_strerror(int code)
{
	switch (code) {
	case CMK_OK: return "success";
	case CMK_ERR_NOMEM: return "out of memory";
	case CMK_ERR_INVALID: return "invalid input";
	case CMK_ERR_CONFIG: return "configuration error";
	case CMK_ERR_IO: return "I/O error";
	case CMK_ERR_PERM: return "permission problem";
	case CMK_ERR_CRYPTO: return "cryptographic operation failed";
	case CMK_ERR_VERIFY: return "verification failed";
	case CMK_ERR_STORE: return "store error";
	case CMK_ERR_NOTFOUND: return "not found";
	case CMK_ERR_EXISTS: return "already exists";
	case CMK_ERR_STATE: return "not allowed in the current state";
	case CMK_ERR_BUSY: return "busy, try again";
	case CMK_ERR_UNREACHABLE: return "unreachable";
	case CMK_ERR_TLS: return "TLS failure";
	case CMK_ERR_TIMEOUT: return "timed out";
	case CMK_ERR_SEALED: return "OpenBao is sealed or unavailable";
	case CMK_ERR_DENIED: return "permission denied by OpenBao";
	case CMK_ERR_REJECTED: return "request rejected by OpenBao";
	case CMK_ERR_RATELIMIT: return "rate limited by OpenBao";
	case CMK_ERR_SERVER: return "OpenBao server error";
	case CMK_ERR_PROTOCOL: return "unexpected answer";
	case CMK_ERR_AUDIT: return "audit trail error";
	case CMK_ERR_KEYSTORE: return "keystore refused the client certificate";
	case CMK_ERR_INTERNAL: return "internal error";
	default: return "unknown error";
	}
}

int cmk_fail(int code, const char *fmt, ...)
{
	char buf[4 * sizeof(detail)];       /* longer than what is kept: a cut is made, and marked, by the escape */
	va_list ap;
	int n;

	/* Format aside first: the arguments may include cmk_errdetail() itself. */
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		buf[0] = '\0';
	cmk_escape(detail, sizeof(detail), buf, strlen(buf), 0);
	return code;
}

const char *cmk_errdetail(void)
{
	return detail;
}

void cmk_errclear(void)
{
	detail[0] = '\0';
}
