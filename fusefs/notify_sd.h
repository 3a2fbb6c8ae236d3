/*
 * notify_sd.h - the service manager's notification protocol (sd_notify(3)).
 *
 * Datagrams of "KEY=VALUE" lines sent to the unix socket named by
 * $NOTIFY_SOCKET: a file system path, or "@name" for the abstract
 * namespace.  Spoken here directly rather than through libsystemd
 * (notify_sd.c says why).  What the daemon says, and when, is service.h.
 */
#ifndef CMKCERTFS_NOTIFY_SD_H
#define CMKCERTFS_NOTIFY_SD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Where notifications go, from $NOTIFY_SOCKET; see notify_sd_from_env().
 * `fd` is a datagram socket of this process (close-on-exec).
 */
struct sd_notifier {
	int fd;
	char path[108];               /* sockaddr_un.sun_path; a leading NUL: abstract */
	size_t path_len;              /* bytes of path used (no trailing NUL for abstract names) */
};

/*
 * Read $NOTIFY_SOCKET into *n and open the socket.  Returns 1 when it is set
 * and usable, 0 when it is unset or empty (not started by a service manager
 * that listens: nothing to do), or CMK_ERR_CONFIG for a value that is not an
 * absolute path or "@name" or is too long, CMK_ERR_IO when no socket can be
 * made (cmk_errdetail() says which).
 */
int notify_sd_open(const char *value, struct sd_notifier *n);

/* Close the socket.  Safe on a notifier that was never opened (fd -1) or is already closed. */
void notify_sd_close(struct sd_notifier *n);

/*
 * Send one message, e.g. "READY=1\nSTATUS=serving 2 certificates".
 * Returns 0 or CMK_ERR_IO (nobody listens, the socket went away).
 */
int notify_sd_send(const struct sd_notifier *n, const char *msg);

/*
 * The watchdog interval the service manager asks for, in microseconds, from
 * $WATCHDOG_USEC and $WATCHDOG_PID (the values passed in): 0 when the
 * watchdog is off, when usec is not a positive number, or when pid names
 * another process than `self`.
 */
uint64_t notify_sd_watchdog_usec(const char *usec, const char *pid, pid_t self);

#endif
