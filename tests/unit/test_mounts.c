/*
 * test_mounts.c - the registry of running cmkcertfs mounts: claiming,
 * publishing, reading and giving up records; a dead process's record is not
 * live; readers never see a torn sequence; waiting for every mount; bad store
 * directories and registry files.  Every test works in its own temporary
 * directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmkcert/error.h"
#include "cmkcert/mounts.h"
#include "cmkcert/util.h"
#include "testutil.h"

struct fx {
	char dir[64];
	char file[128];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL || tu_mkdtemp(fx->dir, sizeof(fx->dir), "mounts") != 0) {
		free(fx);
		return -1;
	}
	snprintf(fx->file, sizeof(fx->file), "%s/%s", fx->dir, CMK_MOUNTS_FILE);
	/* A test that hangs on a lock fails instead of blocking the suite. */
	alarm(60);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	alarm(0);
	tu_rmtree(fx->dir);
	free(fx);
	return 0;
}

static size_t live_count(const char *dir)
{
	struct cmk_mount_info *v = NULL;
	size_t n = 99;

	assert_ok(cmk_mounts_live(dir, &v, &n));
	cmk_mounts_free(v);
	return n;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void test_register_publish_live_unregister(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_reg *a = NULL, *b = NULL;
	struct cmk_mount_info *v = NULL;
	struct stat sb;
	size_t n = 99;

	/* No daemon ever ran: no file, no mount. */
	assert_int_equal(live_count(fx->dir), 0);

	assert_ok(cmk_mounts_register(fx->dir, "/run/cmkcert", &a));
	assert_ok(cmk_mounts_register(fx->dir, "/mnt/second mount", &b));
	assert_ok(cmk_mounts_live(fx->dir, &v, &n));
	assert_int_equal(n, 2);
	assert_string_equal(v[0].mountpoint, "/run/cmkcert");
	assert_string_equal(v[1].mountpoint, "/mnt/second mount");
	assert_int_equal(v[0].pid, getpid());
	assert_int_equal(v[1].pid, getpid());
	/* Nothing published yet. */
	assert_int_equal(v[0].seq, 0);
	assert_int_equal(v[0].age_ms, -1);
	assert_int_equal(v[0].updated_ms, 0);
	cmk_mounts_free(v);

	assert_ok(cmk_mounts_publish(a, 42));
	assert_ok(cmk_mounts_publish(b, UINT64_MAX - 1));
	assert_ok(cmk_mounts_live(fx->dir, &v, &n));
	assert_int_equal(n, 2);
	assert_true(v[0].seq == 42);
	assert_true(v[1].seq == UINT64_MAX - 1);
	assert_true(v[0].age_ms >= 0 && v[0].age_ms < 5000);
	assert_true(v[0].updated_ms / 1000 >= cmk_now() - 5 && v[0].updated_ms / 1000 <= cmk_now());
	cmk_mounts_free(v);

	/* Not world-writable; readable by whoever may enter the store directory. */
	assert_int_equal(stat(fx->file, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0644);

	cmk_mounts_unregister(a);
	assert_ok(cmk_mounts_live(fx->dir, &v, &n));
	assert_int_equal(n, 1);
	assert_string_equal(v[0].mountpoint, "/mnt/second mount");
	cmk_mounts_free(v);
	cmk_mounts_unregister(b);
	assert_int_equal(live_count(fx->dir), 0);
	cmk_mounts_unregister(NULL);
}

static void test_freed_record_is_reused(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_reg *a = NULL, *b = NULL;
	struct stat sb;
	off_t one;

	assert_ok(cmk_mounts_register(fx->dir, "/a", &a));
	assert_int_equal(stat(fx->file, &sb), 0);
	one = sb.st_size;
	cmk_mounts_unregister(a);
	assert_ok(cmk_mounts_register(fx->dir, "/b", &b));
	assert_int_equal(stat(fx->file, &sb), 0);
	assert_int_equal(sb.st_size, one);
	cmk_mounts_unregister(b);
}

/*
 * A daemon that dies without unregistering (killed, or _exit()) leaves its
 * bytes in the file, but its lock goes with it: the record is not live, and
 * the next daemon takes it.
 */
static void test_dead_process_record_is_not_live(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_info *v = NULL;
	struct cmk_mount_reg *r = NULL;
	int up[2], go[2], status;
	size_t n = 0;
	struct stat sb;
	off_t one;
	pid_t pid;
	char c = 0;

	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cmk_mount_reg *mine = NULL;
		close(up[0]);
		close(go[1]);
		if (cmk_mounts_register(fx->dir, "/mnt/dying", &mine) != 0 || cmk_mounts_publish(mine, 7) != 0)
			_exit(2);
		if (write(up[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(0);                     /* no unregister */
	}
	close(up[1]);
	close(go[0]);
	assert_int_equal(read(up[0], &c, 1), 1);
	assert_ok(cmk_mounts_live(fx->dir, &v, &n));
	assert_int_equal(n, 1);
	assert_int_equal(v[0].pid, pid);
	assert_string_equal(v[0].mountpoint, "/mnt/dying");
	assert_true(v[0].seq == 7);
	cmk_mounts_free(v);

	assert_int_equal(write(go[1], "x", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(up[0]);
	close(go[1]);
	/* Its bytes are still there ... */
	assert_int_equal(stat(fx->file, &sb), 0);
	one = sb.st_size;
	assert_true(one > 0);
	/* ... but it is not live, and the record is free for the next daemon. */
	assert_int_equal(live_count(fx->dir), 0);
	assert_ok(cmk_mounts_register(fx->dir, "/mnt/next", &r));
	assert_int_equal(stat(fx->file, &sb), 0);
	assert_int_equal(sb.st_size, one);
	assert_int_equal(live_count(fx->dir), 1);
	cmk_mounts_unregister(r);
}

/* The same with SIGKILL, the way a daemon really dies. */
static void test_killed_process_record_is_not_live(void **state)
{
	struct fx *fx = *state;
	int up[2], status;
	pid_t pid;
	char c;

	assert_int_equal(pipe(up), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cmk_mount_reg *mine = NULL;
		close(up[0]);
		if (cmk_mounts_register(fx->dir, "/mnt/killed", &mine) != 0 || write(up[1], "r", 1) != 1)
			_exit(2);
		for (;;)
			pause();
	}
	close(up[1]);
	assert_int_equal(read(up[0], &c, 1), 1);
	close(up[0]);
	assert_int_equal(live_count(fx->dir), 1);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(live_count(fx->dir), 0);
}

/*
 * Another process publishes as fast as it can values whose two halves are
 * equal; every value a reader gets must be one that was published (equal
 * halves), and they only go up.
 */
static void test_no_torn_reads_under_a_concurrent_publisher(void **state)
{
	struct fx *fx = *state;
	int up[2], status;
	uint64_t last = 0;
	unsigned reads = 0, changes = 0;
	int64_t until;
	pid_t pid;
	char c;

	assert_int_equal(pipe(up), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct cmk_mount_reg *mine = NULL;
		close(up[0]);
		if (cmk_mounts_register(fx->dir, "/mnt/busy", &mine) != 0 || write(up[1], "r", 1) != 1)
			_exit(2);
		for (uint64_t k = 1;; k++)
			if (cmk_mounts_publish(mine, (k << 32) | k) != 0)
				_exit(3);
	}
	close(up[1]);
	assert_int_equal(read(up[0], &c, 1), 1);
	close(up[0]);
	until = cmk_monotonic_ms() + 1500;
	while (cmk_monotonic_ms() < until) {
		struct cmk_mount_info *v = NULL;
		size_t n = 0;
		assert_ok(cmk_mounts_live(fx->dir, &v, &n));
		assert_int_equal(n, 1);
		assert_int_equal(v[0].pid, pid);
		assert_string_equal(v[0].mountpoint, "/mnt/busy");
		if ((v[0].seq >> 32) != (v[0].seq & 0xffffffffu)) {
			print_error("torn value %#llx\n", (unsigned long long)v[0].seq);
			fail();
		}
		assert_true(v[0].seq >= last);
		changes += v[0].seq != last;
		last = v[0].seq;
		reads++;
		cmk_mounts_free(v);
	}
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	/* The publisher really ran while we read. */
	assert_true(reads > 100);
	assert_true(changes > 10);
}

struct later {
	struct cmk_mount_reg *r;
	uint64_t seq;
	long after_ms;
};

static void *publish_later(void *arg)
{
	struct later *l = arg;

	sleep_ms(l->after_ms);
	return cmk_mounts_publish(l->r, l->seq) == 0 ? NULL : l;
}

/*
 * The kernel rarely lets a read overlap a write of a few bytes, so the test
 * above seldom meets a torn value: make one.  White box: the published
 * sequence is the big-endian integer at offset 64 of the record (layout in
 * core/mounts.c).  Its new bytes with the old check value are what a read
 * overlapping the write could return; the reader must read again until the
 * publisher's next write, never return it.
 */
static void test_torn_record_is_read_again(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_reg *r = NULL;
	struct cmk_mount_info *v = NULL;
	uint8_t torn[8] = { 0, 0, 0, 0, 0, 0, 0, 9 };
	struct later l;
	pthread_t t;
	size_t n = 0;
	void *res;
	int fd;

	assert_ok(cmk_mounts_register(fx->dir, "/mnt/torn", &r));
	assert_ok(cmk_mounts_publish(r, 5));
	fd = open(fx->file, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, torn, sizeof(torn), 64), sizeof(torn));
	l = (struct later){ r, 6, 5 };
	assert_int_equal(pthread_create(&t, NULL, publish_later, &l), 0);
	assert_ok(cmk_mounts_live(fx->dir, &v, &n));
	assert_int_equal(pthread_join(t, &res), 0);
	assert_null(res);
	assert_int_equal(n, 1);
	assert_true(v[0].seq == 6);
	cmk_mounts_free(v);

	/* Left torn for good (nobody writes it right): skipped, not believed. */
	assert_int_equal(pwrite(fd, torn, sizeof(torn), 64), sizeof(torn));
	assert_ok(cmk_mounts_live(fx->dir, &v, &n));
	assert_int_equal(n, 0);
	close(fd);
	cmk_mounts_unregister(r);
}

static void test_wait(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_reg *a = NULL, *b = NULL;
	struct cmk_mount_info *v = NULL;
	struct later l;
	pthread_t t;
	void *res;
	size_t n = 99;
	int64_t t0;

	/* No mount: nothing to wait for. */
	assert_ok(cmk_mounts_wait(fx->dir, 5, cmk_monotonic_ms() + 1000, &v, &n));
	assert_int_equal(n, 0);
	assert_null(v);

	assert_ok(cmk_mounts_register(fx->dir, "/mnt/fast", &a));
	assert_ok(cmk_mounts_register(fx->dir, "/mnt/slow", &b));
	assert_ok(cmk_mounts_publish(a, 5));
	assert_ok(cmk_mounts_publish(b, 4));

	/* One behind: the deadline passes, and the detail names the one behind. */
	t0 = cmk_monotonic_ms();
	assert_int_equal(cmk_mounts_wait(fx->dir, 5, t0 + 200, &v, &n), CMK_ERR_TIMEOUT);
	assert_true(cmk_monotonic_ms() - t0 >= 200);
	assert_contains(cmk_errdetail(), "/mnt/slow");
	assert_contains(cmk_errdetail(), "serves change 4, not yet 5");
	assert_int_equal(n, 2);
	assert_true(v[0].seq == 5 && v[1].seq == 4);
	cmk_mounts_free(v);

	/* It catches up while we wait. */
	l = (struct later){ b, 6, 150 };
	assert_int_equal(pthread_create(&t, NULL, publish_later, &l), 0);
	t0 = cmk_monotonic_ms();
	assert_ok(cmk_mounts_wait(fx->dir, 5, t0 + 5000, &v, &n));
	assert_true(cmk_monotonic_ms() - t0 >= 100);
	assert_int_equal(pthread_join(t, &res), 0);
	assert_null(res);
	assert_int_equal(n, 2);
	assert_true(v[0].seq >= 5 && v[1].seq >= 5);
	cmk_mounts_free(v);

	/* Already there: returns at once, even with a deadline in the past. */
	assert_ok(cmk_mounts_wait(fx->dir, 5, cmk_monotonic_ms() - 1, &v, &n));
	assert_int_equal(n, 2);
	cmk_mounts_free(v);

	/* A mount that goes away stops counting. */
	cmk_mounts_unregister(a);
	assert_ok(cmk_mounts_publish(b, 1));
	assert_int_equal(cmk_mounts_wait(fx->dir, 5, cmk_monotonic_ms() + 50, &v, &n), CMK_ERR_TIMEOUT);
	cmk_mounts_free(v);
	cmk_mounts_unregister(b);
	assert_ok(cmk_mounts_wait(fx->dir, 5, cmk_monotonic_ms() + 50, &v, &n));
	assert_int_equal(n, 0);
}

static void test_bad_store_dir(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_info *v = (void *)1;
	struct cmk_mount_reg *r = (void *)1;
	char missing[128], file[128];
	size_t n = 99;

	snprintf(missing, sizeof(missing), "%s/no-such-store", fx->dir);
	assert_int_equal(cmk_mounts_live(missing, &v, &n), CMK_ERR_NOTFOUND);
	assert_contains(cmk_errdetail(), missing);
	assert_contains(cmk_errdetail(), "no such store directory");
	assert_null(v);
	assert_int_equal(n, 0);
	assert_int_equal(cmk_mounts_register(missing, "/mnt", &r), CMK_ERR_NOTFOUND);
	assert_null(r);
	assert_int_equal(cmk_mounts_wait(missing, 1, cmk_monotonic_ms(), &v, &n), CMK_ERR_NOTFOUND);

	/* A file where the store directory should be. */
	snprintf(file, sizeof(file), "%s/plain", fx->dir);
	assert_ok(cmk_write_file_atomic(file, "x", 1, 0600));
	assert_int_equal(cmk_mounts_live(file, &v, &n), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "not a directory");
	assert_int_equal(cmk_mounts_register(file, "/mnt", &r), CMK_ERR_INVALID);

	assert_int_equal(cmk_mounts_live(NULL, &v, &n), CMK_ERR_INVALID);
	assert_int_equal(cmk_mounts_live("", &v, &n), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "no store directory");
}

static void test_bad_mountpoint(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_reg *r = NULL;
	char *longpath = malloc(CMK_MOUNT_PATH_MAX + 1);

	assert_non_null(longpath);
	assert_int_equal(cmk_mounts_register(fx->dir, "relative/mnt", &r), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "not an absolute path");
	assert_int_equal(cmk_mounts_register(fx->dir, NULL, &r), CMK_ERR_INVALID);
	longpath[0] = '/';
	memset(longpath + 1, 'm', CMK_MOUNT_PATH_MAX - 1);
	longpath[CMK_MOUNT_PATH_MAX] = '\0';
	assert_int_equal(cmk_mounts_register(fx->dir, longpath, &r), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "at most 4095");
	assert_null(r);
	/* The longest allowed one goes through whole. */
	longpath[CMK_MOUNT_PATH_MAX - 1] = '\0';
	assert_ok(cmk_mounts_register(fx->dir, longpath, &r));
	{
		struct cmk_mount_info *v = NULL;
		size_t n = 0;
		assert_ok(cmk_mounts_live(fx->dir, &v, &n));
		assert_int_equal(n, 1);
		assert_string_equal(v[0].mountpoint, longpath);
		cmk_mounts_free(v);
	}
	cmk_mounts_unregister(r);
	free(longpath);
}

static void test_bad_registry_file(void **state)
{
	struct fx *fx = *state;
	struct cmk_mount_info *v = NULL;
	struct cmk_mount_reg *r = NULL;
	char target[128];
	size_t n = 0;

	/* A directory under the registry's name. */
	assert_int_equal(mkdir(fx->file, 0700), 0);
	assert_int_equal(cmk_mounts_live(fx->dir, &v, &n), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "not a regular file");
	assert_int_equal(rmdir(fx->file), 0);

	/* A FIFO must not hang a reader. */
	assert_int_equal(mkfifo(fx->file, 0600), 0);
	assert_int_equal(cmk_mounts_live(fx->dir, &v, &n), CMK_ERR_INVALID);
	assert_int_equal(unlink(fx->file), 0);

	/* A symbolic link is not followed. */
	snprintf(target, sizeof(target), "%s/elsewhere", fx->dir);
	assert_int_equal(symlink(target, fx->file), 0);
	assert_int_equal(cmk_mounts_register(fx->dir, "/mnt", &r), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "symbolic link");
	assert_int_equal(unlink(fx->file), 0);

	/* Our own file with a loose mode is put right; someone else's is refused (tested as root only). */
	assert_ok(cmk_write_file_atomic(fx->file, "", 0, 0666));
	assert_int_equal(chmod(fx->file, 0666), 0);
	assert_ok(cmk_mounts_register(fx->dir, "/mnt", &r));
	cmk_mounts_unregister(r);
	{
		struct stat sb;
		assert_int_equal(stat(fx->file, &sb), 0);
		assert_int_equal(sb.st_mode & 07777, 0644);
	}
	if (geteuid() == 0) {
		assert_int_equal(chown(fx->file, 65534, 65534), 0);
		assert_int_equal(chmod(fx->file, 0666), 0);
		assert_int_equal(cmk_mounts_register(fx->dir, "/mnt", &r), CMK_ERR_PERM);
		assert_contains(cmk_errdetail(), "writable by group or others");
		assert_int_equal(cmk_mounts_live(fx->dir, &v, &n), CMK_ERR_PERM);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_publish_live_unregister, setup, teardown),
		cmocka_unit_test_setup_teardown(test_freed_record_is_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_process_record_is_not_live, setup, teardown),
		cmocka_unit_test_setup_teardown(test_killed_process_record_is_not_live, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_torn_reads_under_a_concurrent_publisher, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_record_is_read_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_store_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_mountpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_registry_file, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
