/*
 * test_audit.c - the audit trail: line format, the hash chain, detection of
 * edits, deletions, reordering and cut-off lines, and appends from several
 * threads and processes at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <ctype.h>
#include <inttypes.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/sha256.h>

#include "cmkcert/audit.h"
#include "cmkcert/error.h"
#include "cmkcert/store.h"
#include "cmkcert/json.h"
#include "cmkcert/util.h"

#define ZEROS "0000000000000000000000000000000000000000000000000000000000000000"


/* ---- fixture: a temporary directory; the trail goes in a subdirectory not yet made ---- */

struct fx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	if (tu_mkdtemp(fx->dir, sizeof(fx->dir), "audit") != 0) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/log/audit.log", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	int rc = tu_rmtree(fx->dir);

	free(fx);
	return rc;
}

/* ---- helpers ---------------------------------------------------------- */

static int append(struct cmk_audit *a, const char *event, const char *actor, const char *detail)
{
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;

	ev.event = event;
	ev.outcome = "success";
	ev.tenant = "acme";
	ev.type = "aws_kms";
	ev.actor = actor;
	ev.detail = detail;
	return cmk_audit_append(a, &ev);
}

/* Append `n` events "detail-1" ... through a fresh handle. */
static void make_trail(const char *path, int n)
{
	struct cmk_audit *a = NULL;
	char detail[32];

	assert_int_equal(cmk_audit_open(path, &a), 0);
	for (int i = 1; i <= n; i++) {
		snprintf(detail, sizeof(detail), "detail-%d", i);
		assert_int_equal(append(a, CMK_AUDIT_CREATE, "test", detail), 0);
	}
	cmk_audit_close(a);
}

/* The trail split into lines (without newlines); *final_nl says whether the file ends in one. */
struct lines {
	char *v[16];
	size_t n;
	bool final_nl;
	char *text;
};

static void read_lines(const char *path, struct lines *l)
{
	size_t len = 0;
	char *p;

	memset(l, 0, sizeof(*l));
	assert_int_equal(cmk_read_file(path, 1 << 24, &l->text, &len), 0);
	l->final_nl = len > 0 && l->text[len - 1] == '\n';
	p = l->text;
	while (*p != '\0') {
		char *nl = strchr(p, '\n');
		assert_true(l->n < sizeof(l->v) / sizeof(l->v[0]));
		l->v[l->n++] = p;
		if (nl == NULL)
			break;
		*nl = '\0';
		p = nl + 1;
	}
}

static void write_lines(const char *path, char *const *v, size_t n, bool final_nl)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%s", v[i], i + 1 < n || final_nl ? "\n" : "");
	assert_int_equal(fclose(f), 0);
}

static void sha256_hex(const char *s, char out[65])
{
	unsigned char d[32];

	assert_int_equal(mbedtls_sha256_ret((const unsigned char *)s, strlen(s), d, 0), 0);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static bool is_time_ms(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i] != '\0'; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
			return false;
	return true;
}

/* Verify and expect a failure at `bad` with `why` in the detail. */
static void expect_bad(const char *path, uint64_t bad, uint64_t lines, const char *why)
{
	struct cmk_audit_report r;

	assert_int_equal(cmk_audit_verify(path, NULL, &r), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), why);
	assert_int_equal(r.bad_line, bad);
	assert_int_equal(r.lines, lines);
}

static void expect_ok(const char *path, uint64_t lines)
{
	struct cmk_audit_report r;
	int rc = cmk_audit_verify(path, NULL, &r);

	if (rc != 0)
		print_error("verify: %s\n", cmk_errdetail());
	assert_int_equal(rc, 0);
	assert_int_equal(r.lines, lines);
	assert_int_equal(r.bad_line, 0);
}

/* ---- format ----------------------------------------------------------- */

static void test_append_three_and_verify(void **state)
{
	static const char *const full_keys[] = { "seq", "time", "event", "tenant", "type", "serial",
		"fingerprint", "record_id", "actor", "uid", "gid", "pid", "step", "outcome", "detail", "prev" };
	struct fx *fx = *state;
	struct cmk_audit_event full = CMK_AUDIT_EVENT_INIT, minimal = CMK_AUDIT_EVENT_INIT;
	struct cmk_audit *a = NULL;
	struct lines l;
	struct stat sb;
	char *dir, prev[65] = ZEROS;
	void *it;
	size_t k;

	full.event = CMK_AUDIT_KEY_READ;
	full.tenant = "acme";
	full.type = "thales_luna";
	full.serial = "1a:2b";
	full.fingerprint = "ab12";
	full.record_id = 7;
	full.actor = "cmkcertfs";
	full.uid = 0;       /* root is a real uid: it must be written, not omitted */
	full.gid = 1000;
	full.pid = 4242;
	full.step = "open";
	full.outcome = "success";
	full.detail = "read";
	minimal.event = CMK_AUDIT_LOGIN;
	minimal.outcome = "failure";

	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(cmk_audit_append(a, &full), 0);
	assert_int_equal(cmk_audit_append(a, &minimal), 0);
	assert_int_equal(append(a, CMK_AUDIT_REVOKE, "cli:uid=0", "revoked"), 0);
	cmk_audit_close(a);

	expect_ok(fx->path, 3);
	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	dir = cmk_asprintf("%s/log", fx->dir);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	free(dir);

	read_lines(fx->path, &l);
	assert_int_equal(l.n, 3);
	assert_true(l.final_nl);
	for (size_t i = 0; i < l.n; i++) {
		json_t *o = NULL;
		const char *s;
		int64_t seq;

		assert_int_equal(cmk_json_parse("line", l.v[i], strlen(l.v[i]), &o), 0);
		assert_int_equal(cmk_json_int(o, "seq", &seq), 0);
		assert_int_equal(seq, (int64_t)i + 1);
		assert_int_equal(cmk_json_str(o, "time", &s), 0);
		assert_true(is_time_ms(s));
		assert_int_equal(cmk_json_str(o, "prev", &s), 0);
		assert_string_equal(s, prev);
		/* The next prev is the SHA-256 of this line's exact bytes, computed independently here. */
		sha256_hex(l.v[i], prev);
		json_decref(o);
	}

	/* Line 1 carries every field, in the documented order, with the given values. */
	json_t *o = NULL;
	assert_int_equal(cmk_json_parse("line", l.v[0], strlen(l.v[0]), &o), 0);
	k = 0;
	for (it = json_object_iter(o); it != NULL; it = json_object_iter_next(o, it), k++) {
		assert_true(k < sizeof(full_keys) / sizeof(full_keys[0]));
		assert_string_equal(json_object_iter_key(it), full_keys[k]);
	}
	assert_int_equal(k, sizeof(full_keys) / sizeof(full_keys[0]));
	assert_string_equal(json_string_value(json_object_get(o, "event")), "privateKeyRead");
	assert_int_equal(json_integer_value(json_object_get(o, "uid")), 0);
	assert_int_equal(json_integer_value(json_object_get(o, "gid")), 1000);
	assert_int_equal(json_integer_value(json_object_get(o, "pid")), 4242);
	assert_int_equal(json_integer_value(json_object_get(o, "record_id")), 7);
	assert_string_equal(json_string_value(json_object_get(o, "serial")), "1a:2b");
	json_decref(o);

	/* Line 2 set only the required fields: nothing else appears. */
	assert_int_equal(cmk_json_parse("line", l.v[1], strlen(l.v[1]), &o), 0);
	assert_int_equal(json_object_size(o), 5);
	assert_string_equal(json_string_value(json_object_get(o, "outcome")), "failure");
	json_decref(o);
	free(l.text);
}

static void test_detail_stays_on_one_line(void **state)
{
	struct fx *fx = *state;
	const char *nasty = "bad\n{\"seq\":2,\"event\":\"forged\"}\r\n\"quoted\" \\ \x01 tab\t";
	struct cmk_audit *a = NULL;
	struct lines l;
	json_t *o = NULL;

	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(append(a, CMK_AUDIT_ERROR, "test", nasty), 0);
	/* Bytes that are not UTF-8 (a file name in Latin-1) do not cost the record. */
	assert_int_equal(append(a, CMK_AUDIT_ERROR, "test", "caf\xe9"), 0);
	cmk_audit_close(a);

	expect_ok(fx->path, 2);
	read_lines(fx->path, &l);
	assert_int_equal(l.n, 2);
	assert_int_equal(cmk_json_parse("line", l.v[0], strlen(l.v[0]), &o), 0);
	assert_string_equal(json_string_value(json_object_get(o, "detail")), nasty);
	json_decref(o);
	assert_int_equal(cmk_json_parse("line", l.v[1], strlen(l.v[1]), &o), 0);
	assert_string_equal(json_string_value(json_object_get(o, "detail")), "caf\xef\xbf\xbd");
	json_decref(o);
	free(l.text);
}

static void test_event_and_outcome_required(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	struct cmk_audit *a = NULL;
	struct stat sb;

	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	ev.outcome = "success";
	assert_int_equal(cmk_audit_append(a, &ev), CMK_ERR_INVALID);
	ev.event = "";
	assert_int_equal(cmk_audit_append(a, &ev), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "event");
	ev.event = CMK_AUDIT_CREATE;
	ev.outcome = NULL;
	assert_int_equal(cmk_audit_append(a, &ev), CMK_ERR_INVALID);
	assert_contains(cmk_errdetail(), "outcome");
	ev.outcome = "";
	assert_int_equal(cmk_audit_append(a, &ev), CMK_ERR_INVALID);
	cmk_audit_close(a);

	assert_int_equal(stat(fx->path, &sb), 0);
	assert_int_equal(sb.st_size, 0);
}

/* ---- tampering -------------------------------------------------------- */

static void test_edited_value_breaks_next_line(void **state)
{
	struct fx *fx = *state;
	struct lines l;
	char *d;

	make_trail(fx->path, 3);
	read_lines(fx->path, &l);
	/* Still valid JSON with the right seq and prev: only line 3's prev reveals it. */
	d = strstr(l.v[1], "detail-2");
	assert_non_null(d);
	d[7] = '9';
	write_lines(fx->path, l.v, l.n, true);
	free(l.text);
	expect_bad(fx->path, 3, 3, "line 3: prev does not match the hash of line 2");
}

static void test_edit_that_breaks_json(void **state)
{
	struct fx *fx = *state;
	struct lines l;

	make_trail(fx->path, 3);
	read_lines(fx->path, &l);
	l.v[1][0] = 'x';
	write_lines(fx->path, l.v, l.n, true);
	free(l.text);
	expect_bad(fx->path, 2, 3, "line 2: not valid JSON");
}

static void test_edited_seq(void **state)
{
	struct fx *fx = *state;
	struct lines l;

	make_trail(fx->path, 3);
	read_lines(fx->path, &l);
	assert_memory_equal(l.v[1], "{\"seq\":2,", 9);
	l.v[1][7] = '7';
	write_lines(fx->path, l.v, l.n, true);
	free(l.text);
	expect_bad(fx->path, 2, 3, "line 2: seq 7, expected 2");
}

static void test_deleted_line(void **state)
{
	struct fx *fx = *state;
	struct lines l;

	make_trail(fx->path, 4);
	read_lines(fx->path, &l);
	write_lines(fx->path, (char *[]){ l.v[0], l.v[2], l.v[3] }, 3, true);
	free(l.text);
	expect_bad(fx->path, 2, 3, "line 2: seq 3, expected 2");
}

static void test_deleted_first_line_renumbered(void **state)
{
	struct fx *fx = *state;
	struct lines l;

	/* Someone deletes line 1 and renumbers the rest: the chain still tells. */
	make_trail(fx->path, 2);
	read_lines(fx->path, &l);
	l.v[1][7] = '1';
	write_lines(fx->path, (char *[]){ l.v[1] }, 1, true);
	free(l.text);
	expect_bad(fx->path, 1, 1, "line 1: prev is not 64 zeros");
}

static void test_swapped_lines(void **state)
{
	struct fx *fx = *state;
	struct lines l;

	make_trail(fx->path, 3);
	read_lines(fx->path, &l);
	write_lines(fx->path, (char *[]){ l.v[0], l.v[2], l.v[1] }, 3, true);
	free(l.text);
	expect_bad(fx->path, 2, 3, "line 2: seq 3, expected 2");
}

static void test_incomplete_last_line(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	struct stat before, after;
	struct lines l;

	make_trail(fx->path, 3);
	read_lines(fx->path, &l);
	l.v[2][strlen(l.v[2]) - 5] = '\0';   /* as if the machine died mid-write */
	write_lines(fx->path, l.v, l.n, false);
	free(l.text);

	expect_bad(fx->path, 3, 3, "line 3: incomplete last line");

	/* The next append removes the torn line, records that, then appends: the trail verifies again. */
	assert_int_equal(stat(fx->path, &before), 0);
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(append(a, CMK_AUDIT_CREATE, "test", "after the crash"), 0);
	cmk_audit_close(a);
	assert_int_equal(stat(fx->path, &after), 0);
	assert_true(after.st_size > before.st_size);
	expect_ok(fx->path, 4);
	read_lines(fx->path, &l);
	assert_int_equal(l.n, 4);
	assert_contains(l.v[2], "\"outcome\":\"repaired\"");
	assert_contains(l.v[2], "removed an incomplete last line");
	assert_contains(l.v[2], "\"seq\":3");
	assert_contains(l.v[3], "after the crash");
	free(l.text);
}

static void test_batch_append(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	struct cmk_audit_event evs[3];
	struct lines l;

	make_trail(fx->path, 2);
	for (int i = 0; i < 3; i++) {
		evs[i] = (struct cmk_audit_event)CMK_AUDIT_EVENT_INIT;
		evs[i].event = CMK_AUDIT_KEY_READ;
		evs[i].outcome = "success";
		evs[i].uid = 1000 + i;
	}
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(cmk_audit_append_batch(a, evs, 3), 0);
	/* A bad event anywhere in a batch refuses the whole batch. */
	evs[1].outcome = NULL;
	assert_int_equal(cmk_audit_append_batch(a, evs, 3), CMK_ERR_INVALID);
	cmk_audit_close(a);
	expect_ok(fx->path, 5);
	read_lines(fx->path, &l);
	assert_int_equal(l.n, 5);
	assert_contains(l.v[2], "\"seq\":3");
	assert_contains(l.v[2], "\"uid\":1000");
	assert_contains(l.v[4], "\"seq\":5");
	assert_contains(l.v[4], "\"uid\":1002");
	free(l.text);
}

static void test_garbage_last_line_refused(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	FILE *f;

	make_trail(fx->path, 2);
	f = fopen(fx->path, "a");
	assert_non_null(f);
	fputs("not a record\n", f);
	assert_int_equal(fclose(f), 0);

	expect_bad(fx->path, 3, 3, "line 3: not valid JSON");
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(append(a, CMK_AUDIT_CREATE, "test", "x"), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), "last line is not an audit record");
	cmk_audit_close(a);
}

static void test_missing_field(void **state)
{
	struct fx *fx = *state;
	struct lines l;
	char *o;

	make_trail(fx->path, 2);
	read_lines(fx->path, &l);
	o = strstr(l.v[1], "\"outcome\"");
	assert_non_null(o);
	memcpy(o, "\"OUTCOME\"", 9);
	write_lines(fx->path, l.v, l.n, true);
	free(l.text);
	expect_bad(fx->path, 2, 2, "line 2: missing field \"outcome\"");
}

/* ---- continuing the chain --------------------------------------------- */

static void test_empty_and_missing_files(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	char *missing = cmk_asprintf("%s/nothing.log", fx->dir);

	assert_int_equal(cmk_audit_verify(missing, NULL, NULL), CMK_ERR_NOTFOUND);
	free(missing);
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	cmk_audit_close(a);
	expect_ok(fx->path, 0);
	assert_int_equal(cmk_audit_verify(fx->path, NULL, NULL), 0);
	cmk_audit_close(NULL);
}

static void test_open_refusals(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = (struct cmk_audit *)1;
	char *file = cmk_asprintf("%s/plain", fx->dir), *under = cmk_asprintf("%s/plain/sub/audit.log", fx->dir);
	FILE *f = fopen(file, "w");

	assert_non_null(f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(cmk_audit_open("", &a), CMK_ERR_INVALID);
	assert_null(a);
	/* A regular file is in the way of its directory. */
	assert_int_equal(cmk_audit_open(under, &a), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), under);
	/* Its directory cannot be made (not even by root: /proc takes no new entries). */
	assert_int_equal(cmk_audit_open("/proc/cmk-test-no-such-dir/audit.log", &a), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), "creating its directory");
	/* A directory is not a trail. */
	assert_int_equal(cmk_audit_open(fx->dir, &a), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), fx->dir);
	assert_int_equal(cmk_audit_verify(fx->dir, NULL, NULL), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), "not a regular file");
	free(under);
	free(file);
}

static void test_reopen_continues_from_file(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL, *b = NULL;
	struct lines l;

	make_trail(fx->path, 2);
	/* Two handles on one file: each append continues whatever is in the file. */
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(cmk_audit_open(fx->path, &b), 0);
	assert_int_equal(append(a, CMK_AUDIT_RENEW, "a", "3"), 0);
	assert_int_equal(append(b, CMK_AUDIT_RENEW, "b", "4"), 0);
	assert_int_equal(append(a, CMK_AUDIT_RENEW, "a", "5"), 0);
	cmk_audit_close(b);
	cmk_audit_close(a);
	expect_ok(fx->path, 5);
	read_lines(fx->path, &l);
	assert_int_equal(l.n, 5);
	assert_memory_equal(l.v[3], "{\"seq\":4,", 9);
	assert_contains(l.v[3], "\"actor\":\"b\"");
	free(l.text);
}

static void test_long_lines(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	char *big = malloc(20001);

	/* The tail is found by reading backwards in blocks: lines longer than a block must work. */
	assert_non_null(big);
	memset(big, 'x', 20000);
	big[20000] = '\0';
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(append(a, CMK_AUDIT_ERROR, "test", big), 0);
	assert_int_equal(append(a, CMK_AUDIT_ERROR, "test", big), 0);
	assert_int_equal(append(a, CMK_AUDIT_ERROR, "test", "short"), 0);
	assert_int_equal(append(a, CMK_AUDIT_ERROR, "test", big), 0);
	cmk_audit_close(a);
	free(big);
	expect_ok(fx->path, 4);
}

/* Child body: append with the file size capped just above its current size. */
static void child_disk_full(const char *path)
{
	struct cmk_audit *a = NULL;
	struct rlimit rl;
	struct stat sb;
	int rc;

	/* RLIMIT_FSIZE makes write() stop part-way, as a full disk would. */
	signal(SIGXFSZ, SIG_IGN);
	if (stat(path, &sb) != 0 || cmk_audit_open(path, &a) != 0)
		_exit(2);
	rl.rlim_cur = rl.rlim_max = (rlim_t)sb.st_size + 10;
	if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
		_exit(3);
	rc = append(a, CMK_AUDIT_CREATE, "test", "does not fit");
	cmk_audit_close(a);
	_exit(rc == CMK_ERR_AUDIT ? 0 : 1);
}

static void test_failed_write_is_rolled_back(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	struct stat before, after;
	int status;
	pid_t pid;

	make_trail(fx->path, 2);
	assert_int_equal(stat(fx->path, &before), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_disk_full(fx->path);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	/* The part written was taken back: the trail verifies and takes the next line. */
	assert_int_equal(stat(fx->path, &after), 0);
	assert_int_equal(after.st_size, before.st_size);
	expect_ok(fx->path, 2);
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	assert_int_equal(append(a, CMK_AUDIT_CREATE, "test", "fits"), 0);
	cmk_audit_close(a);
	expect_ok(fx->path, 3);
}

/* ---- concurrency ------------------------------------------------------ */

/* Child body: append `n` events; exit status 0 when all succeeded.  No cmocka asserts in a child. */
static void child_appends(const char *path, struct cmk_audit *shared, const char *actor, int n)
{
	struct cmk_audit *a = shared;
	int bad = 0;

	if (a == NULL && cmk_audit_open(path, &a) != 0)
		_exit(2);
	for (int i = 0; i < n; i++)
		if (append(a, CMK_AUDIT_KEY_READ, actor, "concurrent") != 0)
			bad++;
	if (shared == NULL)
		cmk_audit_close(a);
	_exit(bad == 0 ? 0 : 1);
}

static void run_two_processes(const char *path, struct cmk_audit *shared, int each)
{
	pid_t pids[2];
	int status;

	for (int i = 0; i < 2; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0)
			child_appends(path, shared, i == 0 ? "proc-1" : "proc-2", each);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
}

/* The chain holds, and every record of both processes is there. */
static void check_concurrent_trail(const char *path, int each)
{
	static const char actor[] = "\"actor\":\"proc-";
	char *text = NULL, *p;
	size_t len = 0, lines = 0;
	int n1 = 0, n2 = 0;

	expect_ok(path, (uint64_t)each * 2);
	assert_int_equal(cmk_read_file(path, 1 << 24, &text, &len), 0);
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	assert_int_equal(lines, (size_t)each * 2);
	for (p = text; (p = strstr(p, actor)) != NULL; ) {
		p += sizeof(actor) - 1;
		n1 += *p == '1';
		n2 += *p == '2';
	}
	assert_int_equal(n1, each);
	assert_int_equal(n2, each);
	free(text);
}

static void test_two_processes(void **state)
{
	struct fx *fx = *state;

	run_two_processes(fx->path, NULL, 200);
	check_concurrent_trail(fx->path, 200);
}

static void test_handle_inherited_by_fork(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;

	/* Opened before fork(): the children share one file description and so one flock. */
	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	run_two_processes(fx->path, a, 100);
	cmk_audit_close(a);
	check_concurrent_trail(fx->path, 100);
}

struct thread_arg {
	struct cmk_audit *a;
	char actor[32];
	int failures;
};

static void *thread_appends(void *p)
{
	struct thread_arg *t = p;

	for (int i = 0; i < 50; i++)
		if (append(t->a, CMK_AUDIT_KEY_READ, t->actor, "thread") != 0)
			t->failures++;
	return NULL;
}

static void test_threads_share_a_handle(void **state)
{
	struct fx *fx = *state;
	struct cmk_audit *a = NULL;
	struct thread_arg args[4];
	pthread_t th[4];

	assert_int_equal(cmk_audit_open(fx->path, &a), 0);
	for (int i = 0; i < 4; i++) {
		args[i].a = a;
		args[i].failures = 0;
		snprintf(args[i].actor, sizeof(args[i].actor), "thread-%d", i);
		assert_int_equal(pthread_create(&th[i], NULL, thread_appends, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].failures, 0);
	}
	cmk_audit_close(a);
	expect_ok(fx->path, 200);
}

/* ---- keyed and anchored ---------------------------------------------- */

static const uint8_t test_key[32] = "0123456789abcdef0123456789abcdef";

struct kfx {
	char dir[64];
	char path[128];
	char store_path[128];
	struct cmk_store *st;
	struct cmk_audit *a;
};

static int setup_keyed(void **state)
{
	struct kfx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL || tu_mkdtemp(fx->dir, sizeof(fx->dir), "kaudit") != 0) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/audit.log", fx->dir);
	snprintf(fx->store_path, sizeof(fx->store_path), "%s/store", fx->dir);
	if (cmk_store_open(fx->store_path, &fx->st) != 0 || cmk_audit_open(fx->path, &fx->a) != 0)
		return -1;
	cmk_audit_bind(fx->a, fx->st, test_key);
	*state = fx;
	return 0;
}

static int teardown_keyed(void **state)
{
	struct kfx *fx = *state;
	int rc;

	cmk_audit_close(fx->a);
	cmk_store_close(fx->st);
	rc = tu_rmtree(fx->dir);
	free(fx);
	return rc;
}

/* Verify with the key and the store's anchor. */
static int verify_keyed(struct kfx *fx, struct cmk_audit_report *r)
{
	struct cmk_audit_anchor anc = { 0 };
	struct cmk_audit_check chk = { test_key, &anc };
	int rc = cmk_store_audit_anchor_get(fx->st, NULL, &anc);

	assert_true(rc == 0 || rc == CMK_ERR_NOTFOUND);
	return cmk_audit_verify(fx->path, &chk, r);
}

static void keyed_lines(struct kfx *fx, int n)
{
	for (int i = 0; i < n; i++)
		assert_ok(append(fx->a, i % 2 ? CMK_AUDIT_KEY_READ : CMK_AUDIT_CREATE, "cmkcertfs", "ten lines"));
}

static void test_keyed_trail_verifies_with_its_key_only(void **state)
{
	static const uint8_t other[32] = "another key, not the trail's one";
	struct kfx *fx = *state;
	struct cmk_audit_check chk = { other, NULL };
	struct cmk_audit_report r;
	struct lines l;

	keyed_lines(fx, 3);
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(r.lines, 3);
	assert_int_equal(r.keyed_from, 1);
	assert_int_equal(r.anchored, 3);
	assert_int_equal(r.unanchored, 0);
	read_lines(fx->path, &l);
	assert_contains(l.v[2], "\"mac\":\"");
	free(l.text);
	/* The wrong key: the first line already fails. */
	assert_int_equal(cmk_audit_verify(fx->path, &chk, &r), CMK_ERR_AUDIT);
	assert_int_equal(r.bad_line, 1);
	assert_contains(cmk_errdetail(), "MAC does not match");
}

/* Rewrite line i (0-based) of l in place with new text (the caller keeps `text` alive). */
static void rechain(struct lines *l, size_t from)
{
	static char buf[64][4096];
	char prev[65];

	for (size_t i = from; i < l->n; i++) {
		char *p;

		if (i == 0)
			memcpy(prev, ZEROS, sizeof(prev));
		else
			sha256_hex(l->v[i - 1], prev);
		snprintf(buf[i], sizeof(buf[i]), "%s", l->v[i]);
		/* Renumber and re-hash as someone without the key would: seq and prev, MAC left as it was. */
		p = strstr(buf[i], "\"seq\":");
		assert_non_null(p);
		{
			char tail[4096];
			char *end = strchr(p, ',');
			snprintf(tail, sizeof(tail), "%s", end);
			snprintf(p, sizeof(buf[i]) - (size_t)(p - buf[i]), "\"seq\":%zu%s", i + 1, tail);
		}
		p = strstr(buf[i], "\"prev\":\"");
		assert_non_null(p);
		memcpy(p + 8, prev, 64);
		l->v[i] = buf[i];
	}
}

enum tamper { T_EDIT, T_SPACE, T_DELETE, T_SWAP, T_DUPLICATE, T_TORN, T_CUT_LAST, T_CUT_THREE, T_FORGE_APPEND,
	      T_EDIT_RECHAIN, T_DELETE_RECHAIN, T_COUNT };

static const char *const tamper_names[T_COUNT] = { "edit a value", "whitespace edit", "delete a line",
	"swap two lines", "duplicate a line", "torn last line", "remove the last line", "remove the last 3 lines",
	"append a forged line with a recomputed hash", "edit and re-chain the rest",
	"delete and re-chain the rest" };

static void tamper(struct kfx *fx, enum tamper t)
{
	static char forged[4096], edited[4096];
	struct lines l;
	char prev[65], *p;
	size_t n;

	read_lines(fx->path, &l);
	n = l.n;
	switch (t) {
	case T_EDIT:
		snprintf(edited, sizeof(edited), "%s", l.v[4]);
		p = strstr(edited, "ten lines");
		memcpy(p, "TEN", 3);
		l.v[4] = edited;
		break;
	case T_SPACE:
		snprintf(edited, sizeof(edited), "%s", l.v[4]);
		p = strchr(edited, ',');
		memmove(p + 2, p + 1, strlen(p + 1) + 1);
		p[1] = ' ';
		l.v[4] = edited;
		break;
	case T_DELETE:
		memmove(&l.v[4], &l.v[5], (n - 5) * sizeof(l.v[0]));
		n--;
		break;
	case T_SWAP:
		p = l.v[3];
		l.v[3] = l.v[4];
		l.v[4] = p;
		break;
	case T_DUPLICATE:
		memmove(&l.v[5], &l.v[4], (n - 4) * sizeof(l.v[0]));
		n++;
		break;
	case T_TORN:
		l.v[n - 1][strlen(l.v[n - 1]) / 2] = '\0';
		write_lines(fx->path, l.v, n, false);
		free(l.text);
		return;
	case T_CUT_LAST:
		n -= 1;
		break;
	case T_CUT_THREE:
		n -= 3;
		break;
	case T_FORGE_APPEND:
		sha256_hex(l.v[n - 1], prev);
		snprintf(forged, sizeof(forged), "{\"seq\":%zu,\"time\":\"2026-12-07T00:00:00.000Z\",\"event\":"
			 "\"credentialCreate\",\"outcome\":\"success\",\"prev\":\"%s\"}", n + 1, prev);
		l.v[n++] = forged;
		break;
	case T_EDIT_RECHAIN:
		snprintf(edited, sizeof(edited), "%s", l.v[4]);
		p = strstr(edited, "ten lines");
		memcpy(p, "TEN", 3);
		l.v[4] = edited;
		l.n = n;
		rechain(&l, 5);
		break;
	case T_DELETE_RECHAIN:
		memmove(&l.v[4], &l.v[5], (n - 5) * sizeof(l.v[0]));
		n--;
		l.n = n;
		rechain(&l, 4);
		break;
	case T_COUNT:
		break;
	}
	write_lines(fx->path, l.v, n, true);
	free(l.text);
}

/* Each of the ways to tamper with a trail, on a fresh keyed, anchored trail of ten lines. */
static void test_every_tampering_is_found(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_report r;
	char *orig = NULL;
	size_t len;

	keyed_lines(fx, 10);
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(cmk_read_file(fx->path, 1 << 20, &orig, &len), 0);
	for (int t = 0; t < T_COUNT; t++) {
		FILE *f;
		int rc;

		tamper(fx, (enum tamper)t);
		rc = verify_keyed(fx, &r);
		if (rc != CMK_ERR_AUDIT)
			fail_msg("tampering not found: %s", tamper_names[t]);
		if (getenv("CMK_TEST_SHOW") != NULL)
			print_message("%-45s line %" PRIu64 ": %s\n", tamper_names[t], r.bad_line, cmk_errdetail());
		assert_true(r.bad_line > 0);
		/* Nor does an append continue such a trail: it would bless the damage. */
		if (t == T_CUT_LAST || t == T_CUT_THREE) {
			assert_int_equal(append(fx->a, CMK_AUDIT_KEY_READ, "cmkcertfs", "after the cut"), CMK_ERR_AUDIT);
			assert_contains(cmk_errdetail(), "lines were removed");
		}
		f = fopen(fx->path, "w");
		assert_non_null(f);
		assert_int_equal(fwrite(orig, 1, len, f), len);
		assert_int_equal(fclose(f), 0);
		assert_ok(verify_keyed(fx, &r));
	}
	free(orig);
}

/* A write cut short by a crash (never anchored) is removed by the next append, which records it. */
static void test_interrupted_write_is_repaired_and_recorded(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_report r;
	struct lines l;
	FILE *f;

	keyed_lines(fx, 3);
	f = fopen(fx->path, "a");
	assert_non_null(f);
	fputs("{\"seq\":4,\"time\":\"2026-12-07T", f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(verify_keyed(fx, &r), CMK_ERR_AUDIT);
	assert_int_equal(r.bad_line, 4);
	assert_contains(cmk_errdetail(), "incomplete last line");
	assert_ok(append(fx->a, CMK_AUDIT_KEY_READ, "cmkcertfs", "after a crash"));
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(r.lines, 5);
	assert_int_equal(r.repairs, 1);
	read_lines(fx->path, &l);
	assert_contains(l.v[3], "\"outcome\":\"repaired\"");
	assert_contains(l.v[3], "removed an incomplete last line of 28 bytes (sha256 ");
	free(l.text);
}

/* An anchored line cut short was not a crash: appending stops, verify says so. */
static void test_cut_inside_an_anchored_line_is_not_repaired(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_report r;

	keyed_lines(fx, 4);
	assert_int_equal(truncate(fx->path, 200), 0);
	assert_int_equal(append(fx->a, CMK_AUDIT_KEY_READ, "cmkcertfs", "after the cut"), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), "cut inside");
	assert_int_equal(verify_keyed(fx, &r), CMK_ERR_AUDIT);
}

/* Lines of a transaction that did not commit stay, unanchored, and verify. */
static void test_lines_of_an_aborted_transaction_are_unanchored(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_event ev = CMK_AUDIT_EVENT_INIT;
	struct cmk_audit_report r;
	struct cmk_txn *txn;

	keyed_lines(fx, 2);
	ev.event = CMK_AUDIT_ACTIVATE;
	ev.outcome = "success";
	assert_ok(cmk_store_begin(fx->st, &txn));
	assert_ok(cmk_audit_append_txn(fx->a, txn, &ev, 1));
	cmk_store_abort(txn);
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(r.anchored, 2);
	assert_int_equal(r.unanchored, 1);
	/* The next committed append anchors past it. */
	keyed_lines(fx, 1);
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(r.anchored, 4);
	assert_int_equal(r.unanchored, 0);
}

/* A trail written before keying: its lines are vouched for by the first keyed line. */
static void test_older_unkeyed_lines_then_keyed(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_report r;
	struct cmk_audit *old = NULL;
	struct lines l;

	assert_ok(cmk_audit_open(fx->path, &old));
	assert_ok(append(old, CMK_AUDIT_CREATE, "cli:uid=0", "before keying"));
	assert_ok(append(old, CMK_AUDIT_ACTIVATE, "cli:uid=0", "before keying"));
	cmk_audit_close(old);
	keyed_lines(fx, 2);
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(r.keyed_from, 3);
	/* An edit in the unkeyed part still breaks the keyed line after it. */
	read_lines(fx->path, &l);
	*strstr(l.v[0], "before") = 'B';
	write_lines(fx->path, l.v, l.n, true);
	free(l.text);
	assert_int_equal(verify_keyed(fx, &r), CMK_ERR_AUDIT);
	assert_int_equal(r.bad_line, 2);
	/* Stripping every MAC (and re-chaining) does not make it an "older" trail: the anchor remembers. */
}

static void test_stripped_macs_are_found(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_report r;
	struct lines l;

	keyed_lines(fx, 3);
	read_lines(fx->path, &l);
	for (size_t i = 0; i < l.n; i++) {
		char *m = strstr(l.v[i], ",\"mac\":\"");
		strcpy(m, "}");
	}
	rechain(&l, 1);
	write_lines(fx->path, l.v, l.n, true);
	free(l.text);
	assert_int_equal(verify_keyed(fx, &r), CMK_ERR_AUDIT);
	assert_contains(cmk_errdetail(), "not the line the store recorded");
}

/* A rotated trail: the old file keeps its lines, the new one continues the chain and verifies alone. */
static void test_rotation_continues_the_chain(void **state)
{
	struct kfx *fx = *state;
	struct cmk_audit_report r;
	struct cmk_audit_check plain = { test_key, NULL };
	char moved[256];
	struct lines l;

	keyed_lines(fx, 4);
	assert_ok(cmk_audit_rotate(fx->a, moved, sizeof(moved)));
	keyed_lines(fx, 2);
	assert_ok(verify_keyed(fx, &r));
	assert_int_equal(r.lines, 3);
	assert_int_equal(r.first_seq, 5);
	assert_int_equal(r.anchored, 7);
	read_lines(fx->path, &l);
	assert_contains(l.v[0], "\"event\":\"auditRotate\"");
	assert_contains(l.v[0], "lines 1 to 4");
	free(l.text);
	/* The old file verifies on its own (no anchor for it any more). */
	assert_ok(cmk_audit_verify(moved, &plain, &r));
	assert_int_equal(r.lines, 4);
	/* A forged continuation - an unkeyed first line with a later number - is refused. */
	read_lines(fx->path, &l);
	{
		char forged[] = "{\"seq\":5,\"time\":\"2026-12-07T00:00:00.000Z\",\"event\":\"auditRotate\","
				"\"outcome\":\"success\",\"prev\":\"" ZEROS "\"}";
		l.v[0] = forged;
		write_lines(fx->path, l.v, l.n, true);
	}
	free(l.text);
	assert_int_equal(verify_keyed(fx, &r), CMK_ERR_AUDIT);
	assert_int_equal(r.bad_line, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_three_and_verify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_detail_stays_on_one_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_and_outcome_required, setup, teardown),
		cmocka_unit_test_setup_teardown(test_edited_value_breaks_next_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_edit_that_breaks_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_edited_seq, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_first_line_renumbered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_swapped_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incomplete_last_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_last_line_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_field, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_and_missing_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_continues_from_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_write_is_rolled_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handle_inherited_by_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_share_a_handle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keyed_trail_verifies_with_its_key_only, setup_keyed, teardown_keyed),
		cmocka_unit_test_setup_teardown(test_every_tampering_is_found, setup_keyed, teardown_keyed),
		cmocka_unit_test_setup_teardown(test_interrupted_write_is_repaired_and_recorded, setup_keyed,
						teardown_keyed),
		cmocka_unit_test_setup_teardown(test_cut_inside_an_anchored_line_is_not_repaired, setup_keyed,
						teardown_keyed),
		cmocka_unit_test_setup_teardown(test_lines_of_an_aborted_transaction_are_unanchored, setup_keyed,
						teardown_keyed),
		cmocka_unit_test_setup_teardown(test_older_unkeyed_lines_then_keyed, setup_keyed, teardown_keyed),
		cmocka_unit_test_setup_teardown(test_stripped_macs_are_found, setup_keyed, teardown_keyed),
		cmocka_unit_test_setup_teardown(test_rotation_continues_the_chain, setup_keyed, teardown_keyed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
