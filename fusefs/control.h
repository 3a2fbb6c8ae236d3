/*
 * control.h - the control socket: HTTP/1.1 with JSON on a unix socket, for
 * the processes of the same host or pod (the CMK API server) to add,
 * remove, renew and revoke keystore certificates, list them, and probe and
 * scrape the daemon (cmkcertfs(8), CONTROL SOCKET; endpoints in
 * control_api.c).
 *
 * Who may call: whoever can connect (the socket file's mode and group,
 * [control] mode and group) and whose uid, or one of whose groups, from
 * SO_PEERCRED, [control] allow names; root always.  Every /v1/ request,
 * and every refused one, is recorded in the audit trail with the caller's
 * uid, gid and pid.
 *
 * libmicrohttpd serves the socket with one thread per connection (at most
 * CONTROL_CONNECTIONS, control.c), so a request that waits for OpenBao holds
 * up no other request and no FUSE thread; operations that change the store
 * share a bounded set of worker contexts (ctlapi.h).
 */
#ifndef CMKCERTFS_CONTROL_H
#define CMKCERTFS_CONTROL_H

#include <stdbool.h>
#include <stdint.h>

struct cmkfs;
struct control;

/*
 * Before the mount: create the socket file ([control] socket, its mode and
 * group) and listen on it.  *out is NULL, with 0, when there is to be no
 * socket: "socket = none", or the path is served by a running process
 * (another cmkcertfs of this store: info; anything else: a warning), or the
 * default path cannot be used (a warning; an explicitly configured path is
 * an error instead).  Errors: CMK_ERR_* with detail; the daemon does not start.
 */
int control_open(struct cmkfs *fs, struct control **out);

/* Once the mount serves: answer requests.  NULL is a no-op. */
int control_start(struct control *c);

/*
 * Stop answering and remove the socket file: requests still running get
 * until `deadline_ms` (monotonic) to finish.  False when one did not: the
 * server is left behind (a request thread may still use the store), and the
 * caller must not free what it uses.  NULL is a no-op (true).
 */
bool control_stop(struct control *c, int64_t deadline_ms);

#endif
