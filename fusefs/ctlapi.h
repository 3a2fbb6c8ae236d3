/*
 * ctlapi.h - the control socket's endpoints (control_api.c), apart from
 * the HTTP server that carries them (control.c).
 *
 * A request arrives here whole and authorised; the answer goes back as an
 * HTTP status and a JSON document (the metrics page as text).  Operations
 * that change the store run on a bounded set of worker contexts, each with
 * its own OpenBao client and login, borrowed for the length of one
 * operation; the request's own thread runs it, so a long operation holds up
 * neither the FUSE threads nor other requests.
 */
#ifndef CMKCERTFS_CTLAPI_H
#define CMKCERTFS_CTLAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

#include "cmkcert/names.h"

struct cmkfs;

/* Who called, from SO_PEERCRED when the connection was accepted. */
struct ctl_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;              /* 0 when the caller is in a pid namespace this daemon cannot see */
	bool allowed;           /* root, or named by [control] allow */
	char actor[64];         /* audit actor: "control:uid=U,pid=P" */
};

struct ctl_request {
	const char *method;
	const char *path;           /* decoded, without the query string */
	const char *const *query;   /* name, value, name, value, ..., NULL; a value may be NULL ("?pem") */
	const char *body;           /* NUL-terminated; body_len bytes */
	size_t body_len;
	const struct ctl_peer *peer;
};

struct ctl_reply {
	unsigned status;            /* HTTP status */
	json_t *json;               /* the answer, or NULL when `text` is */
	char *text;                 /* the metrics page (malloc'd) */
	size_t text_len;
	const char *allow;          /* 405: the methods the path takes */
	unsigned retry_after;       /* 503: seconds, 0 = no header */
	bool audit;                 /* write a controlRequest line for it */
	const char *operation;      /* what the audit line and error bodies call it */
	char tenant[CMK_TENANT_MAX + 1];
	char type[CMK_TYPE_MAX + 1];
};

struct ctl_api;

/* Worker contexts for `fs` (cmk_ctx_thread()); release with ctl_api_free(). */
int ctl_api_new(struct cmkfs *fs, struct ctl_api **out);

/* Answer one request into `rp` (zeroed by the caller). */
void ctl_api_handle(struct ctl_api *api, const struct ctl_request *rq, struct ctl_reply *rp);

/* From now on operations that change the store answer 503; those running go on. */
void ctl_api_stopping(struct ctl_api *api);

/* Operations running now (holding a worker context). */
unsigned ctl_api_busy(struct ctl_api *api);

/* Free the contexts.  Only once no request runs.  NULL is a no-op. */
void ctl_api_free(struct ctl_api *api);

/* An error answer: `status` and cmk_json_error(rc, operation) (detail from cmk_errdetail()). */
void ctl_reply_error(struct ctl_reply *rp, unsigned status, int rc, const char *operation);

/* Release what `rp` holds. */
void ctl_reply_clear(struct ctl_reply *rp);

#endif
