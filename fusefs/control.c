/*
 * control.c - the control socket's server (control.h): the socket file,
 * libmicrohttpd, the caller's identity and the audit of each request.  The
 * only file that includes <microhttpd.h>; the endpoints are in
 * control_api.c.
 *
 * We make the listening socket ourselves and hand it to libmicrohttpd: a
 * unix socket needs its file created with the right mode and group before
 * anyone can connect, and the stale file of a killed daemon told apart
 * from a live one.  The caller's credentials are read once per connection
 * (SO_PEERCRED: what the kernel recorded at connect(), which the caller
 * cannot forge) and kept in the connection's context; a caller who is not
 * allowed gets 403 on every request without its body being read.
 *
 * Request bodies are limited to CONTROL_BODY_MAX: a larger Content-Length
 * is refused (413) before any of the body is read, and the connection is
 * closed after the answer.  A body without a Content-Length (chunked) is
 * refused the same way, with 411: libmicrohttpd cannot answer in the middle
 * of an upload, and reading it to the end to say 413 is what the limit is
 * there to avoid.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#include "cmkcert/audit.h"
#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "cmkcert/log.h"
#include "cmkcert/mounts.h"
#include "cmkcert/opjson.h"
#include "cmkcert/util.h"
#include "cmkfs.h"
#include "control.h"
#include "ctlapi.h"
#include "metrics.h"

#define CONTROL_BODY_MAX (1024 * 1024)
/*
 * Connections served at once, one thread each.  libmicrohttpd closes a
 * connection that arrives beyond it at once (it does not leave it in the
 * listen queue), so the bound is set well above what one pod's clients do.
 */
#define CONTROL_CONNECTIONS 1024
#define CONTROL_BACKLOG SOMAXCONN
#define CONTROL_IDLE_S 60            /* an idle keep-alive connection is closed after this */
#define QUERY_MAX 16                 /* query parameters of one request */
#define PEER_GROUPS_MAX 256
/* A caller refused again and again: one audit line at once, then one per interval with the count. */
#define REFUSED_INTERVAL_MS 10000
#define REFUSED_KINDS 64

struct refused_kind {
	uid_t uid;
	gid_t gid;
	pid_t pid;                   /* of the most recent refusal */
	int64_t since_ms;            /* the interval began */
	uint64_t counted;            /* refusals in it not yet written */
};

struct control {
	struct cmkfs *fs;
	struct ctl_api *api;
	struct MHD_Daemon *mhd;
	int fd;                      /* the listening socket until libmicrohttpd owns it */
	char *path;
	dev_t dev;                   /* of the socket file we made: only that one is removed at the end */
	ino_t ino;
	pthread_mutex_t mu;
	pthread_cond_t idle;
	unsigned running;            /* requests being answered */
	struct refused_kind refused[REFUSED_KINDS];
};

/* One request's state, from its headers to its answer. */
struct req {
	char *body;
	size_t len, cap;
	bool too_large;
	bool answered;               /* a response is queued */
	int64_t t0;
};

/* ---- the socket file ---------------------------------------------------- */

/* Is `path` lexically under `dir`?  (The mount cannot be looked into before it serves.) */
static bool is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static int fill_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return cmk_fail(CMK_ERR_CONFIG, "[control] socket %s: longer than %zu bytes", path,
				sizeof(sa->sun_path) - 1);
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

/*
 * Something is at `path`.  A socket nobody listens on is the leftover of a
 * daemon that was killed: remove it (1: go on).  One that answers belongs to
 * a running process: 0, and *pid that process (0 when unknown).  Anything
 * else is refused.
 */
static int check_existing(const char *path, pid_t *pid)
{
	struct sockaddr_un sa;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct stat sb;
	int fd, rc;

	*pid = 0;
	if (lstat(path, &sb) != 0)
		return errno == ENOENT ? 1 : cmk_fail(CMK_ERR_IO, "[control] socket %s: %s", path, strerror(errno));
	if (!S_ISSOCK(sb.st_mode))
		return cmk_fail(CMK_ERR_CONFIG, "[control] socket %s: exists and is not a socket", path);
	if ((rc = fill_addr(&sa, path)) != 0)
		return rc;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return cmk_fail(CMK_ERR_IO, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			*pid = cred.pid;
		close(fd);
		return 0;
	}
	rc = errno;
	close(fd);
	if (rc != ECONNREFUSED)
		return cmk_fail(CMK_ERR_IO, "[control] socket %s: %s", path, strerror(rc));
	if (unlink(path) != 0 && errno != ENOENT)
		return cmk_fail(CMK_ERR_IO, "[control] socket %s: removing the stale socket: %s", path, strerror(errno));
	cmk_log(CMK_LOG_INFO, "control: removed the stale socket %s", path);
	return 1;
}

/* Is `pid` a cmkcertfs serving this store (the mounts registry)? */
static bool serves_our_store(struct cmkfs *fs, pid_t pid)
{
	struct cmk_mount_info *v = NULL;
	size_t n = 0;
	bool ours = false;

	if (pid > 0 && cmk_mounts_live(fs->ctx->cfg->store.path, &v, &n) == 0)
		for (size_t i = 0; i < n; i++)
			ours = ours || v[i].pid == pid;
	cmk_mounts_free(v);
	return ours;
}

/* Socket, file mode and group, bind, listen. */
static int make_socket(struct control *c, const struct cmk_config *cfg)
{
	struct sockaddr_un sa;
	struct stat sb;
	char *dir = NULL, *slash;
	int rc;

	if ((rc = fill_addr(&sa, c->path)) != 0)
		return rc;
	if ((dir = cmk_strdup(c->path)) == NULL)
		return CMK_ERR_NOMEM;
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		rc = cmk_mkdirs(dir, 0755);
	}
	free(dir);
	if (rc != 0)
		return rc;
	if ((c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return cmk_fail(CMK_ERR_IO, "socket: %s", strerror(errno));
	/* Linux creates the file with the socket's own mode (less the umask): never more open than asked. */
	if (fchmod(c->fd, cfg->control.mode & 0600) != 0 || bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return cmk_fail(CMK_ERR_IO, "[control] socket %s: %s", c->path, strerror(errno));
	if (stat(c->path, &sb) != 0)
		return cmk_fail(CMK_ERR_IO, "[control] socket %s: %s", c->path, strerror(errno));
	c->dev = sb.st_dev;
	c->ino = sb.st_ino;
	/* chown only when the group must change: the shipped unit's system call filter denies it. */
	if ((sb.st_gid != cfg->control.gid && chown(c->path, (uid_t)-1, cfg->control.gid) != 0) ||
	    chmod(c->path, cfg->control.mode) != 0)
		return cmk_fail(CMK_ERR_IO, "[control] socket %s: setting group %u and mode %04o: %s", c->path,
				(unsigned)cfg->control.gid, (unsigned)cfg->control.mode, strerror(errno));
	if (listen(c->fd, CONTROL_BACKLOG) != 0)
		return cmk_fail(CMK_ERR_IO, "[control] socket %s: listen: %s", c->path, strerror(errno));
	return 0;
}

/* Remove the socket file if it is still the one we made. */
static void remove_socket(struct control *c)
{
	struct stat sb;

	if (c->path != NULL && c->ino != 0 && lstat(c->path, &sb) == 0 && sb.st_dev == c->dev && sb.st_ino == c->ino)
		unlink(c->path);
}

static void free_control(struct control *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	ctl_api_free(c->api);
	pthread_cond_destroy(&c->idle);
	pthread_mutex_destroy(&c->mu);
	free(c->path);
	free(c);
}

int control_open(struct cmkfs *fs, struct control **out)
{
	const struct cmk_config *cfg = fs->ctx->cfg;
	struct control *c;
	pid_t pid = 0;
	int rc;

	*out = NULL;
	if (cfg->control.socket == NULL)
		return 0;
	if (is_under(cfg->control.socket, fs->mountpoint)) {
		rc = cmk_fail(CMK_ERR_CONFIG, "[control] socket %s is inside the mount point %s: set [control] socket "
			      "to a path outside it (or none)", cfg->control.socket, fs->mountpoint);
		goto unusable;
	}
	if ((rc = check_existing(cfg->control.socket, &pid)) == 0) {
		if (serves_our_store(fs, pid))
			cmk_log(CMK_LOG_INFO, "control: %s is served by cmkcertfs pid %d of this store; this mount has "
				"no control socket of its own", cfg->control.socket, (int)pid);
		else
			cmk_log(CMK_LOG_WARN, "control: %s is in use by another process (pid %d); serving without a "
				"control socket", cfg->control.socket, (int)pid);
		return 0;
	}
	if (rc < 0)
		goto unusable;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return CMK_ERR_NOMEM;
	c->fs = fs;
	c->fd = -1;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->idle, NULL);
	if ((c->path = cmk_strdup(cfg->control.socket)) == NULL) {
		free_control(c);
		return CMK_ERR_NOMEM;
	}
	if ((rc = make_socket(c, cfg)) != 0 || (rc = ctl_api_new(fs, &c->api)) != 0) {
		remove_socket(c);
		free_control(c);
		goto unusable;
	}
	*out = c;
	return 0;
unusable:
	/* The built-in default may simply not fit this host (no /run/cmkcert, or the mount is there). */
	if (!cfg->control.socket_default)
		return rc;
	cmk_log(CMK_LOG_WARN, "control: %s; serving without a control socket (set [control] socket, or none)",
		cmk_errdetail());
	return 0;
}

/* ---- who calls ---------------------------------------------------------- */

/*
 * The caller's supplementary groups: as its process has them
 * (/proc/PID/status, when that process is visible here and still has the
 * caller's uid), else as the group database lists them for its user.
 */
static size_t peer_groups(pid_t pid, uid_t uid, gid_t gid, gid_t *out, size_t max)
{
	char path[64], *line = NULL;
	size_t cap = 0, n = 0;
	bool uid_ok = false, got = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (pid > 0 && (f = fopen(path, "re")) != NULL) {
		while (getline(&line, &cap, f) > 0) {
			unsigned long real, eff;

			if (sscanf(line, "Uid: %lu %lu", &real, &eff) == 2)
				uid_ok = eff == (unsigned long)uid;
			if (strncmp(line, "Groups:", 7) == 0) {
				char *p = line + 7, *end;

				got = true;
				for (unsigned long g; n < max && (g = strtoul(p, &end, 10), end != p); p = end)
					out[n++] = (gid_t)g;
			}
		}
		free(line);
		fclose(f);
		if (uid_ok && got)
			return n;
	}
	{
		struct passwd pw, *res = NULL;
		char buf[4096];
		int ng = (int)max;

		if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
			return 0;
		if (getgrouplist(pw.pw_name, gid, out, &ng) < 0)
			ng = (int)max;
		return ng > 0 ? (size_t)ng : 0;
	}
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct control *c = cls;
	const union MHD_ConnectionInfo *ci;
	struct ctl_peer *peer;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	gid_t groups[PEER_GROUPS_MAX];
	size_t n;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		free(*socket_context);
		*socket_context = NULL;
		return;
	}
	if ((peer = calloc(1, sizeof(*peer))) == NULL)
		return;       /* no context: every request of the connection is refused */
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci == NULL || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		cmk_log(CMK_LOG_WARN, "control: cannot tell who connected: %s", strerror(errno));
		peer->uid = (uid_t)-1;
		peer->gid = (gid_t)-1;
	} else {
		peer->uid = cred.uid;
		peer->gid = cred.gid;
		peer->pid = cred.pid;
		n = cred.uid == 0 ? 0 : peer_groups(cred.pid, cred.uid, cred.gid, groups, PEER_GROUPS_MAX);
		peer->allowed = cmk_config_control_allows(c->fs->ctx->cfg, cred.uid, cred.gid, groups, n);
	}
	snprintf(peer->actor, sizeof(peer->actor), "control:uid=%ld,pid=%ld", peer->uid == (uid_t)-1 ? -1L
		 : (long)peer->uid, (long)peer->pid);
	*socket_context = peer;
}

/* ---- the audit trail ---------------------------------------------------- */

static void audit_line(struct control *c, const struct ctl_peer *peer, const char *outcome, const char *operation,
		       const char *tenant, const char *type, const char *detail, uint64_t count)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	static struct cmk_log_limit lim = CMK_LOG_LIMIT_INIT;

	ev.event = CMK_AUDIT_CONTROL;
	ev.outcome = outcome;
	ev.actor = peer->actor;
	ev.step = operation;
	ev.tenant = tenant != NULL && tenant[0] ? tenant : NULL;
	ev.type = type != NULL && type[0] ? type : NULL;
	ev.detail = detail;
	ev.uid = peer->uid == (uid_t)-1 ? -1 : (long)peer->uid;
	ev.gid = peer->gid == (gid_t)-1 ? -1 : (long)peer->gid;
	ev.pid = peer->pid;
	ev.count = count;
	if (cmk_audit_append(c->fs->ctx->audit, &ev) != 0)
		cmk_log_limited(&lim, CMK_LOG_ERROR, "audit: %s by %s not recorded: %s", CMK_AUDIT_CONTROL, peer->actor,
				cmk_errdetail());
}

/*
 * A refused request.  The first of a caller (uid and gid) is written at
 * once; more within REFUSED_INTERVAL_MS are counted, and the next one after
 * the interval writes them all as one line whose "count" is how many it
 * stands for (control_stop() writes what is still counted).  A table that
 * is full writes each refusal on its own.
 */
static void audit_refused(struct control *c, const struct ctl_peer *peer, const char *detail)
{
	int64_t now = cmk_monotonic_ms();
	struct refused_kind *k = NULL, *free_slot = NULL;
	uint64_t count = 0;
	char text[480];

	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < REFUSED_KINDS && k == NULL; i++) {
		struct refused_kind *r = &c->refused[i];

		if (r->since_ms != 0 && r->uid == peer->uid && r->gid == peer->gid)
			k = r;
		else if (r->since_ms == 0 && free_slot == NULL)
			free_slot = r;
	}
	if (k != NULL && now - k->since_ms < REFUSED_INTERVAL_MS) {
		k->counted++;
		k->pid = peer->pid;
		pthread_mutex_unlock(&c->mu);
		return;
	}
	if (k != NULL) {
		count = k->counted + 1;
		k->counted = 0;
		k->since_ms = now;
	} else if (free_slot != NULL) {
		*free_slot = (struct refused_kind){ peer->uid, peer->gid, peer->pid, now, 0 };
	}
	pthread_mutex_unlock(&c->mu);
	if (count > 1)
		snprintf(text, sizeof(text), "%s; %" PRIu64 " refusals since the last line", detail, count);
	else
		snprintf(text, sizeof(text), "%s", detail);
	audit_line(c, peer, "denied", "control", NULL, NULL, text, count > 1 ? count : 0);
}

static void flush_refused(struct control *c)
{
	for (size_t i = 0; i < REFUSED_KINDS; i++) {
		struct refused_kind *r = &c->refused[i];
		struct ctl_peer peer = { r->uid, r->gid, r->pid, false, "" };
		char text[128];

		if (r->since_ms == 0 || r->counted == 0)
			continue;
		snprintf(peer.actor, sizeof(peer.actor), "control:uid=%ld,pid=%ld", (long)r->uid, (long)r->pid);
		snprintf(text, sizeof(text), "not allowed to use the control socket; %" PRIu64 " refusals since the "
			 "last line", r->counted);
		audit_line(c, &peer, "denied", "control", NULL, NULL, text, r->counted);
		r->counted = 0;
	}
}

/* ---- requests ----------------------------------------------------------- */

static enum MHD_Result send_reply(struct MHD_Connection *conn, struct req *r, struct ctl_reply *rp)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *text;
	size_t len;
	bool json = rp->text == NULL;

	if (json) {
		text = rp->json != NULL ? cmk_json_dump_pretty(rp->json) : NULL;
		if (text == NULL)
			text = cmk_strdup("{\"ok\": false, \"error\": \"out of memory\"}\n");
		len = text != NULL ? strlen(text) : 0;
	} else {
		text = rp->text;
		len = rp->text_len;
		rp->text = NULL;
	}
	resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				json ? "application/json" : "text/plain; version=0.0.4; charset=utf-8");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (rp->allow != NULL)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rp->allow);
	if (rp->retry_after > 0) {
		char s[16];

		snprintf(s, sizeof(s), "%u", rp->retry_after);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, s);
	}
	/* The body of a refused upload is not read: the connection cannot carry another request. */
	if (rp->status == 413 || rp->status == 411 || r->too_large)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, rp->status, resp);
	MHD_destroy_response(resp);
	r->answered = ret == MHD_YES;
	return ret;
}

/* Record, count and send an answer. */
static enum MHD_Result finish(struct control *c, struct MHD_Connection *conn, struct req *r,
			      const struct ctl_peer *peer, const char *method, const char *url, struct ctl_reply *rp)
{
	enum MHD_Result ret;
	char detail[400];
	const char *err = NULL;

	if (rp->status >= 400 && rp->json != NULL)
		err = json_string_value(json_object_get(rp->json, "detail"));
	snprintf(detail, sizeof(detail), "%s %s: %u%s%s", method, url, rp->status, err ? ": " : "", err ? err : "");
	if (rp->status == 403)
		audit_refused(c, peer, detail);
	else if (rp->audit)
		audit_line(c, peer, rp->status < 400 ? "success" : "failure", rp->operation, rp->tenant, rp->type,
			   detail, 0);
	metrics_request(rp->status);
	cmk_log(rp->audit ? CMK_LOG_INFO : CMK_LOG_DEBUG, "control: %s: %s in %" PRId64 " ms", peer->actor, detail,
		cmk_monotonic_ms() - r->t0);
	ret = send_reply(conn, r, rp);
	ctl_reply_clear(rp);
	return ret;
}

struct query {
	const char *kv[2 * QUERY_MAX + 1];
	size_t n;
	bool too_many;
};

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct query *q = cls;

	(void)kind;
	if (q->n == QUERY_MAX) {
		q->too_many = true;
		return MHD_NO;
	}
	q->kv[2 * q->n] = key;
	q->kv[2 * q->n + 1] = value;
	q->n++;
	return MHD_YES;
}

/* Append a piece of the body, or note that it went past the limit (nothing more is kept). */
static void take_body(struct req *r, const char *data, size_t size)
{
	if (r->too_large || r->len + size > CONTROL_BODY_MAX) {
		r->too_large = true;
		return;
	}
	if (r->len + size + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		char *b;

		while (cap < r->len + size + 1)
			cap *= 2;
		if ((b = realloc(r->body, cap)) == NULL) {
			r->too_large = true;
			return;
		}
		r->body = b;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, size);
	r->len += size;
	r->body[r->len] = '\0';
}

static void begin(struct control *c)
{
	pthread_mutex_lock(&c->mu);
	c->running++;
	pthread_mutex_unlock(&c->mu);
}

static void end(struct control *c)
{
	pthread_mutex_lock(&c->mu);
	if (--c->running == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
	static const struct ctl_peer unknown = { (uid_t)-1, (gid_t)-1, 0, false, "control:uid=-1,pid=0" };
	struct control *c = cls;
	struct req *r = *req_cls;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	const struct ctl_peer *peer = ci != NULL && ci->socket_context != NULL ? ci->socket_context : &unknown;
	struct ctl_reply rp = { 0 };
	enum MHD_Result ret;

	(void)version;
	if (r == NULL) {
		/* The headers are in: refuse what must be refused before a byte of the body is read. */
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);

		if ((r = calloc(1, sizeof(*r))) == NULL)
			return MHD_NO;
		r->t0 = cmk_monotonic_ms();
		*req_cls = r;
		if (!peer->allowed) {
			cmk_errclear();
			cmk_fail(CMK_ERR_PERM, "uid %ld (pid %ld) is not allowed to use the control socket ([control] allow)",
				 (long)(peer->uid == (uid_t)-1 ? -1L : (long)peer->uid), (long)peer->pid);
			ctl_reply_error(&rp, 403, CMK_ERR_PERM, "control");
		} else if (cl != NULL && strtoull(cl, NULL, 10) > CONTROL_BODY_MAX) {
			cmk_fail(CMK_ERR_INVALID, "request body of %s bytes: at most %d", cl, CONTROL_BODY_MAX);
			ctl_reply_error(&rp, 413, CMK_ERR_INVALID, "control");
			rp.audit = strncmp(url, "/v1/", 4) == 0;
		} else if (te != NULL && cl == NULL) {
			cmk_fail(CMK_ERR_INVALID, "a request body must come with a Content-Length (at most %d bytes)",
				 CONTROL_BODY_MAX);
			ctl_reply_error(&rp, 411, CMK_ERR_INVALID, "control");
			rp.audit = strncmp(url, "/v1/", 4) == 0;
		} else {
			return MHD_YES;
		}
		return finish(c, conn, r, peer, method, url, &rp);
	}
	if (r->answered)
		return MHD_YES;
	if (*upload_data_size != 0) {
		take_body(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		if (!r->too_large)
			return MHD_YES;
		/* Cannot happen with a Content-Length libmicrohttpd enforces; should it, drop the connection. */
		cmk_fail(CMK_ERR_INVALID, "request body larger than %d bytes", CONTROL_BODY_MAX);
		ctl_reply_error(&rp, 413, CMK_ERR_INVALID, "control");
		rp.audit = strncmp(url, "/v1/", 4) == 0;
		return finish(c, conn, r, peer, method, url, &rp) == MHD_YES ? MHD_YES : MHD_NO;
	}
	/* The whole request is in. */
	begin(c);
	{
		struct query q = { .n = 0 };
		struct ctl_request rq = { method, url, q.kv, r->body ? r->body : "", r->len, peer };

		MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, &q);
		q.kv[2 * q.n] = NULL;
		cmk_errclear();
		if (q.too_many) {
			cmk_fail(CMK_ERR_INVALID, "more than %d query parameters", QUERY_MAX);
			ctl_reply_error(&rp, 400, CMK_ERR_INVALID, "control");
		} else {
			ctl_api_handle(c->api, &rq, &rp);
		}
		ret = finish(c, conn, r, peer, method, url, &rp);
	}
	end(c);
	return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
	struct req *r = *req_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (r != NULL) {
		free(r->body);
		free(r);
	}
	*req_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	/* Its messages are diagnostics (a client that went away, a connection over the limit). */
	cmk_log(CMK_LOG_DEBUG, "control: libmicrohttpd: %s", msg);
}

/* ---- start and stop ----------------------------------------------------- */

int control_start(struct control *c)
{
	sigset_t all, old;

	if (c == NULL)
		return 0;
	/* Its threads inherit this mask: signals stay with the FUSE loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	c->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
				  MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, c,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, c,
				  MHD_OPTION_LISTEN_SOCKET, c->fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONTROL_CONNECTIONS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONTROL_IDLE_S,
				  MHD_OPTION_NOTIFY_CONNECTION, on_connection, c,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, c,
				  MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (c->mhd == NULL)
		return cmk_fail(CMK_ERR_INTERNAL, "control: %s: libmicrohttpd did not start", c->path);
	c->fd = -1;       /* libmicrohttpd closes it when it stops */
	cmk_log(CMK_LOG_INFO, "control: serving %s", c->path);
	return 0;
}

bool control_stop(struct control *c, int64_t deadline_ms)
{
	bool drained = true;

	if (c == NULL)
		return true;
	/* No new client finds the socket; operations not yet begun answer 503. */
	remove_socket(c);
	if (c->api != NULL)
		ctl_api_stopping(c->api);
	pthread_mutex_lock(&c->mu);
	while (c->running > 0 && cmk_monotonic_ms() < deadline_ms) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->idle, &c->mu, &ts);
	}
	drained = c->running == 0;
	pthread_mutex_unlock(&c->mu);
	flush_refused(c);
	if (!drained) {
		cmk_log(CMK_LOG_WARN, "control: a request did not finish in time; left behind (an operation cut short "
			"is recovered at the next start)");
		return false;
	}
	if (c->mhd != NULL)
		MHD_stop_daemon(c->mhd);
	free_control(c);
	return true;
}
