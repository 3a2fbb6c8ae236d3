/*
 * service.h - the daemon as a systemd service (Type=notify, WatchdogSec=).
 *
 * When $NOTIFY_SOCKET is set, a thread runs while the mount is up and tells
 * the service manager (notify_sd.h):
 *   - READY=1 once a statfs(2) of the mount point has been answered by this
 *     daemon's own FUSE session and the announcer has set itself up
 *     (announce.h): units ordered after the service find the mount serving,
 *     and watchers they start hear of every change;
 *   - STATUS= what it serves and when the next renewal is due (service_status()),
 *     sent again whenever that text changes;
 *   - WATCHDOG=1 every half of $WATCHDOG_USEC (unless $WATCHDOG_PID names
 *     another process), and only while both the FUSE session answers a statfs
 *     and the watcher keeps finishing its ticks (cmkfs.watch_beat_ms): a
 *     daemon whose file system or store follower hangs stops pinging, and
 *     systemd restarts it.
 * STOPPING=1 goes out when shutdown begins (service_stopping()).
 *
 * Without $NOTIFY_SOCKET none of this runs.  The daemon must then stay in
 * the foreground (-f) for systemd to accept its messages: after the fork of
 * a background start, the main process systemd watches has exited.
 */
#ifndef CMKCERTFS_SERVICE_H
#define CMKCERTFS_SERVICE_H

#include <stddef.h>

#include "cmkfs.h"

struct service;

/*
 * Start the thread for the mounted `fs`, just before the FUSE loop runs.
 * *out is NULL when $NOTIFY_SOCKET is unset.  Returns 0, or a negative
 * CMK_ERR_* (a $NOTIFY_SOCKET that cannot be used, no memory, no thread;
 * cmk_errdetail() says which).
 */
int service_start(struct cmkfs *fs, struct service **out);

/* Send STOPPING=1: shutdown has begun.  NULL is a no-op. */
void service_stopping(struct service *s);

/*
 * Stop the thread and free it.  Call it after the session is unmounted: a
 * statfs the thread has in flight returns only then.  NULL is a no-op.
 */
void service_stop(struct service *s);

/*
 * The STATUS= text for `fs` into buf (always NUL-terminated), e.g.
 * "serving 2 certificates at /run/cmkcert/files; next renewal
 * 2026-03-01T12:00:00Z (acme-aws_kms)".  Takes the tree lock and synced_mu.
 */
void service_status(struct cmkfs *fs, char *buf, size_t size);

#endif
