/*
 * detach.h - running in the background without losing the exit status.
 *
 * The daemon forks before it opens anything (the store tracks processes by
 * pid, so a handle must not cross a fork); the parent waits until the child
 * is mounted and serving, or has failed, and exits with the child's status,
 * so `cmkcertfs MNT && use MNT` works and a bad configuration is reported
 * on the terminal that started it.
 */
#ifndef CMKCERTFS_DETACH_H
#define CMKCERTFS_DETACH_H

/* Fork.  Returns in the child only (in a new session); the parent exits with the child's status. */
void detach_start(void);

/*
 * In the child: report `status` (0 = serving) to the waiting parent.  With
 * status 0, standard input, output and error then go to /dev/null and the
 * working directory becomes "/".  A no-op when detach_start() was not called.
 */
void detach_done(int status);

#endif
