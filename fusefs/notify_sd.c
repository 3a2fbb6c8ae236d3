/*
 * notify_sd.c - the sd_notify(3) protocol, spoken directly (see notify_sd.h).
 *
 * Why not libsystemd's sd_notify(): the protocol is a documented interface
 * with a stability promise (systemd's "Interface Portability and Stability"
 * list; sd_notify(3) gives a standalone implementation of it), it takes a
 * socket, one sendto() and a few lines to parse $WATCHDOG_USEC, and the
 * daemon holds unsealed private keys in its memory: every library linked in
 * is more code in that process.  libsystemd would also bring its own
 * dependencies (liblzma, libzstd, libgcrypt, liblz4 and libcap in Debian 12)
 * for a feature that needs none of them, and the same binary runs in
 * containers where no service manager listens.  What is not implemented:
 * file-descriptor passing (FDSTORE) and vsock addresses, which the daemon
 * does not use.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "notify_sd.h"

int notify_sd_open(const char *value, struct sd_notifier *n)
{
	size_t len;

	n->fd = -1;
	n->path_len = 0;
	if (value == NULL || value[0] == '\0')
		return 0;
	len = strlen(value);
	if (value[0] != '/' && value[0] != '@')
		return cmk_fail(CMK_ERR_CONFIG, "NOTIFY_SOCKET=%s: not an absolute path or @name", value);
	/* A path needs its terminating NUL inside sun_path; an abstract name does not. */
	if (len > sizeof(n->path) - (value[0] == '/') || len < 2)
		return cmk_fail(CMK_ERR_CONFIG, "NOTIFY_SOCKET: a socket name of %zu bytes cannot be used", len);
	memset(n->path, 0, sizeof(n->path));
	memcpy(n->path, value, len);
	if (value[0] == '@')
		n->path[0] = '\0';
	n->path_len = len;
	if ((n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return cmk_fail(CMK_ERR_IO, "NOTIFY_SOCKET: socket: %s", strerror(errno));
	return 1;
}

void notify_sd_close(struct sd_notifier *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

int notify_sd_send(const struct sd_notifier *n, const char *msg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t salen;
	ssize_t sent;

	if (n->fd < 0)
		return cmk_fail(CMK_ERR_IO, "notify: no socket");
	memcpy(sa.sun_path, n->path, n->path_len);
	/* Abstract names are exactly their length; paths are NUL-terminated (sun_path is zeroed). */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n->path_len + (n->path[0] != '\0'));
	do
		sent = sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&sa, salen);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		return cmk_fail(CMK_ERR_IO, "notify: sendto: %s", strerror(errno));
	return 0;
}

uint64_t notify_sd_watchdog_usec(const char *usec, const char *pid, pid_t self)
{
	unsigned long long v;
	char *end;

	if (usec == NULL || usec[0] < '0' || usec[0] > '9')
		return 0;
	errno = 0;
	v = strtoull(usec, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0)
		return 0;
	if (pid != NULL && pid[0] != '\0') {
		long p;

		if (pid[0] < '0' || pid[0] > '9')
			return 0;
		errno = 0;
		p = strtol(pid, &end, 10);
		if (errno != 0 || *end != '\0' || p != (long)self)
			return 0;
	}
	return v;
}
