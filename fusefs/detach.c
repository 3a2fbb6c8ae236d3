/*
 * detach.c - background start with the child's status as the exit code
 * (see detach.h).  One byte travels through a pipe: the child's status.
 * If the child dies first, the parent reads end-of-file and exits 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "detach.h"

static int status_fd = -1;

void detach_start(void)
{
	int fds[2];
	unsigned char st = 1;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) != 0) {
		perror("cmkcertfs: pipe");
		exit(1);
	}
	if ((pid = fork()) < 0) {
		perror("cmkcertfs: fork");
		exit(1);
	}
	if (pid > 0) {
		close(fds[1]);
		do
			n = read(fds[0], &st, 1);
		while (n < 0 && errno == EINTR);
		_exit(n == 1 ? st : 1);
	}
	close(fds[0]);
	status_fd = fds[1];
	/* No controlling terminal: a closing terminal's SIGHUP must not unmount. */
	(void)setsid();
}

void detach_done(int status)
{
	unsigned char st = (unsigned char)(status != 0 ? (status > 255 ? 1 : status) : 0);
	int null;

	if (status_fd < 0)
		return;
	if (status == 0) {
		if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) >= 0) {
			(void)dup2(null, STDIN_FILENO);
			(void)dup2(null, STDOUT_FILENO);
			(void)dup2(null, STDERR_FILENO);
			if (null > STDERR_FILENO)
				close(null);
		}
		/* Do not keep the start directory busy.  Staying there if this fails is harmless. */
		if (chdir("/") != 0)
			(void)0;
	}
	while (write(status_fd, &st, 1) < 0 && errno == EINTR)
		;
	close(status_fd);
	status_fd = -1;
}
