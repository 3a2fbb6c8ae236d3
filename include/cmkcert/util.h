/*
 * util.h - small helpers every module uses: secret wiping, locked buffers,
 * escaping untrusted text, durations, time, file reading and the one atomic
 * file writer.
 */
#ifndef CMKCERT_UTIL_H
#define CMKCERT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

/* Overwrite `len` bytes at `p` in a way the compiler cannot remove. NULL is a no-op. */
void cmk_wipe(void *p, size_t len);

/* Wipe `len` bytes then free(). NULL is a no-op. */
void cmk_freezero(void *p, size_t len);

/* Wipe a NUL-terminated string (strlen bytes) then free(). NULL is a no-op. */
void cmk_strfreezero(char *s);

/*
 * A buffer for secrets in transit (an HTTP answer holding a private key or a
 * token): at least `len` bytes of zeroed, page-backed memory, locked against
 * swapping when RLIMIT_MEMLOCK allows (otherwise an info message is logged
 * once per process and the buffer is used unlocked), excluded from core
 * dumps and not inherited by child processes.  NULL only when memory runs
 * out.  Release with cmk_locked_free(), never free().
 */
void *cmk_locked_alloc(size_t len);

/* Usable size of a buffer from cmk_locked_alloc() (>= the `len` asked for); 0 for NULL. */
size_t cmk_locked_size(const void *p);

/* Wipe the whole buffer, unlock and unmap it. NULL is a no-op. */
void cmk_locked_free(void *p);

/* Flags for cmk_escape(). */
#define CMK_ESCAPE_QUOTES 0x1u  /* also '"' as \" and '\\' as \\ (a value shown between quotes) */
#define CMK_ESCAPE_ASCII  0x2u  /* every byte >= 0x80 as \xNN, valid UTF-8 too (names that must be ASCII) */

/*
 * Make text that may come from input (a command line, a request, a file,
 * a server's answer) safe to print on a terminal or in a log line: the
 * `len` bytes at `s` are copied to `out` with every control character
 * (0x00-0x1f, including newline), DEL, C1 control (U+0080-U+009F) and
 * byte that is not part of well-formed UTF-8 written as \xNN; printable
 * ASCII and well-formed UTF-8 stay as they are.  Without
 * CMK_ESCAPE_QUOTES the backslash is not escaped, so escaping escaped text
 * changes nothing (messages pass through it more than once).
 *
 * `out` is always NUL-terminated (when size > 0).  When the result does not
 * fit, it is cut before an escape or character, never inside one, and
 * "..." marks the cut (when size >= 4).  Returns how many bytes of `s`
 * were written, `len` when all of them.
 */
size_t cmk_escape(char *out, size_t size, const char *s, size_t len, unsigned flags);

/* strdup that returns NULL only for NULL input or out of memory. */
char *cmk_strdup(const char *s);

/* malloc'd printf. Returns NULL only when memory runs out. */
char *cmk_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Seconds since the epoch (wall clock) and a monotonic clock in milliseconds. */
int64_t cmk_now(void);
int64_t cmk_monotonic_ms(void);

/*
 * Parse a duration: a decimal number followed by one unit s, m, h or d
 * ("90s", "30m", "8760h", "30d").  A bare number is refused.  On error
 * returns CMK_ERR_INVALID with detail naming the value.
 */
int cmk_parse_duration(const char *s, int64_t *seconds);

/* Format seconds with the largest unit that divides it exactly: 86400 -> "1d", 5400 -> "90m". */
void cmk_format_duration(int64_t seconds, char *buf, size_t len);

/* UTC ISO-8601 "2026-11-28T19:47:45Z". */
void cmk_format_time(int64_t t, char *buf, size_t len);

/*
 * Read a whole file (at most `max` bytes, else CMK_ERR_INVALID) into a
 * NUL-terminated malloc'd buffer.  Caller frees (cmk_freezero if secret).
 */
int cmk_read_file(const char *path, size_t max, char **out, size_t *outlen);

/*
 * Write a file atomically: temporary file in the same directory, fchmod
 * `mode`, write loop, fsync, rename over `path`, fsync the directory.
 * On failure the previous file (if any) is untouched and no temporary remains.
 */
int cmk_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

/*
 * Refuse a secret file unless it is a regular file owned by root (or by the
 * effective uid), with no group or other permission bits (0400 or 0600).
 * Symbolic links are followed (a Kubernetes Secret volume presents each key
 * as a link, through a link, to a file in a timestamped directory): the file
 * they lead to is what is judged.  CMK_ERR_PERM / CMK_ERR_NOTFOUND with
 * detail naming the path and the problem.
 */
int cmk_check_secret_file(const char *path);

/* The same check, also giving the stat of the file judged (its size, for one). */
struct stat;
int cmk_stat_secret_file(const char *path, struct stat *out);

/* mkdir -p with `mode` for each created component. */
int cmk_mkdirs(const char *path, mode_t mode);

/* Process hardening: not dumpable, no core files. Returns 0 or CMK_ERR_IO. */
int cmk_harden_process(void);

#endif
