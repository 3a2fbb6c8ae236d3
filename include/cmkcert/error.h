/*
 * error.h - result codes shared by every cmkcert module.
 *
 * Fallible functions return 0 or one of the negative CMK_ERR_* codes below.
 * The human detail of the most recent failure on the calling thread (the
 * server's error text, the config file and line, curl's message) is kept in
 * a thread-local buffer: cmk_fail() sets it, cmk_errdetail() reads it.  A
 * thread-local buffer is used rather than one per context because failures
 * cross module boundaries (config -> store -> seal) and each module would
 * otherwise need its own copy of the same plumbing.
 */
#ifndef CMKCERT_ERROR_H
#define CMKCERT_ERROR_H

enum cmk_err {
	CMK_OK = 0,
	CMK_ERR_NOMEM = -1,       /* out of memory */
	CMK_ERR_INVALID = -2,     /* bad input: a name, field or value is wrong */
	CMK_ERR_CONFIG = -3,      /* configuration file is wrong */
	CMK_ERR_IO = -4,          /* file system or socket I/O failed */
	CMK_ERR_PERM = -5,        /* a file's owner or mode is unsafe, or caller not allowed */
	CMK_ERR_CRYPTO = -6,      /* a cryptographic operation failed */
	CMK_ERR_VERIFY = -7,      /* a certificate, chain, key match or seal check failed */
	CMK_ERR_STORE = -8,       /* the Berkeley DB store failed */
	CMK_ERR_NOTFOUND = -9,    /* no such record, file, role or mount */
	CMK_ERR_EXISTS = -10,     /* already exists */
	CMK_ERR_STATE = -11,      /* operation not allowed in the record's current state */
	CMK_ERR_BUSY = -12,       /* another operation holds this (tenant, type) */
	CMK_ERR_UNREACHABLE = -13,/* OpenBao (or a keystore) cannot be reached */
	CMK_ERR_TLS = -14,        /* TLS handshake or peer verification failed */
	CMK_ERR_TIMEOUT = -15,    /* operation timed out */
	CMK_ERR_SEALED = -16,     /* OpenBao answered 503: sealed or no active node */
	CMK_ERR_DENIED = -17,     /* OpenBao answered 403: permission denied */
	CMK_ERR_REJECTED = -18,   /* OpenBao answered 400: refused by role policy / bad request */
	CMK_ERR_RATELIMIT = -19,  /* OpenBao answered 429 after every retry */
	CMK_ERR_SERVER = -20,     /* OpenBao answered 5xx after every retry */
	CMK_ERR_PROTOCOL = -21,   /* an answer could not be understood */
	CMK_ERR_AUDIT = -22,      /* the audit trail could not be written or does not verify */
	CMK_ERR_KEYSTORE = -23,   /* the keystore refused the client certificate */
	CMK_ERR_INTERNAL = -24,   /* a bug: an invariant did not hold */
};

/* Static English text for a code ("unknown error" for codes not listed). */
const char *cmk_strerror(int code);

/*
 * Record detail for the current thread and return `code`, so a failure can
 * be reported in one statement: `return cmk_fail(CMK_ERR_INVALID, "tenant: ...")`.
 * The formatted message is stored escaped (cmk_escape): control characters
 * and invalid UTF-8 from quoted input appear as \xNN.  Never pass secrets
 * (keys, PEM, tokens) in the message.
 */
int cmk_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Detail of the last cmk_fail() on this thread, "" when none.  Valid until the next cmk_fail(). */
const char *cmk_errdetail(void);

/* Forget the detail of the last failure on this thread. */
void cmk_errclear(void);

#endif
