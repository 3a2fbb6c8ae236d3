/*
 * audit_verify.c - checking an audit trail (audit.h; line format in
 * audit_int.h).
 *
 * One pass over the file.  Each line must be complete, parse, carry the
 * next sequence number and the hash of the line before; from the first
 * keyed line on, each must carry a MAC the key confirms (a line without one
 * after that was written without the key).  At the end the anchor's line
 * must exist and carry the MAC the store recorded: what an edit, a deletion
 * or a forged line in the middle cannot hide, cutting lines off the end or
 * rewriting the tail cannot hide either.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmkcert/audit.h"
#include "cmkcert/crypto.h"
#include "cmkcert/error.h"
#include "cmkcert/json.h"
#include "audit_int.h"

/* Where the walk is: the hash of the line before, and what was seen so far. */
struct walk {
	const struct cmk_audit_check *chk;
	struct cmk_audit_report *rep;
	uint64_t offset;           /* sequence number of line n is n + offset (a rotated trail starts later) */
	char prev[AUDIT_HASH_HEX + 1];
	bool anchor_seen;
	uint8_t anchor_mac[CMK_AUDIT_MAC_LEN];
};

/*
 * The fields every line must have: seq an integer, time, event, outcome and
 * prev non-empty strings.  On success *seq and *prev_field are set.
 */
static int check_fields(const json_t *obj, uint64_t no, int64_t *seq, const char **prev_field)
{
	static const char *const text_keys[] = { "time", "event", "outcome", "prev" };
	const char *s = NULL;
	char why[512];

	if (!json_is_object(obj))
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": not a JSON object", no);
	if (cmk_json_int(obj, "seq", seq) != 0)
		goto bad_field;
	for (size_t i = 0; i < sizeof(text_keys) / sizeof(text_keys[0]); i++) {
		if (cmk_json_str(obj, text_keys[i], &s) != 0)
			goto bad_field;
		if (*s == '\0')
			return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": field \"%s\" is empty", no, text_keys[i]);
	}
	*prev_field = s;   /* "prev" is the last of text_keys */
	return 0;
bad_field:
	/* cmk_json_* named the field ("missing field \"seq\""); say which line. */
	snprintf(why, sizeof(why), "%s", cmk_errdetail());
	return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": %s", no, why);
}

/* The MAC part of a line: present from the first keyed line on, and right when there is a key. */
static int check_mac(struct walk *w, const char *line, size_t len, uint64_t no)
{
	uint8_t mac[CMK_AUDIT_MAC_LEN], want[CMK_AUDIT_MAC_LEN];
	size_t body;

	if (!cmk_audit_split_mac(line, len, mac, &body)) {
		if (w->rep->keyed_from != 0)
			return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": no MAC after keyed line %" PRIu64 " (written "
					"without the trail's key)", no, w->rep->keyed_from);
		return 0;
	}
	if (w->rep->keyed_from == 0)
		w->rep->keyed_from = no;
	if (w->chk->key != NULL) {
		cmk_hmac_sha256(w->chk->key, 32, line, body, want);
		if (!cmk_memeq(mac, want, sizeof(mac)))
			return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": MAC does not match (the line was edited, or "
					"written without the trail's key)", no);
	}
	if (w->chk->anchor != NULL && no + w->offset == w->chk->anchor->seq) {
		w->anchor_seen = true;
		memcpy(w->anchor_mac, mac, sizeof(mac));
	}
	return 0;
}

static bool is_event(const json_t *obj, const char *name)
{
	const char *event = NULL;

	return cmk_json_str(obj, "event", &event) == 0 && strcmp(event, name) == 0;
}

/*
 * The first line of a rotated trail continues another file: it may carry
 * any sequence number and prev, but only as an auditRotate line whose MAC
 * the key confirms (nobody else could have written it).
 */
static bool continues_a_trail(const struct walk *w, const json_t *obj, const char *line, size_t len, int64_t seq)
{
	uint8_t mac[CMK_AUDIT_MAC_LEN], want[CMK_AUDIT_MAC_LEN];
	size_t body;

	if (seq < 2 || !is_event(obj, CMK_AUDIT_ROTATE) || w->chk->key == NULL ||
	    !cmk_audit_split_mac(line, len, mac, &body))
		return false;
	cmk_hmac_sha256(w->chk->key, 32, line, body, want);
	return cmk_memeq(mac, want, sizeof(mac));
}

static bool is_repair(const json_t *obj)
{
	const char *event = NULL, *outcome = NULL, *step = NULL;

	return cmk_json_str(obj, "event", &event) == 0 && strcmp(event, CMK_AUDIT_ERROR) == 0 &&
	       cmk_json_str(obj, "outcome", &outcome) == 0 && strcmp(outcome, AUDIT_REPAIR_OUTCOME) == 0 &&
	       json_object_get(obj, "step") != NULL && cmk_json_str(obj, "step", &step) == 0 &&
	       strcmp(step, AUDIT_REPAIR_STEP) == 0;
}

/*
 * Check line `no` (`len` bytes with its newline).  The sequence number is
 * checked before the hash because a wrong number says more about what
 * happened (a line deleted or moved) than a hash mismatch does.
 */
static int check_line(struct walk *w, const char *line, size_t len, uint64_t no)
{
	const char *prev_field = NULL;
	char why[512];
	json_t *obj = NULL;
	int64_t seq = 0;
	int rc;

	if (len == 0 || line[len - 1] != '\n')
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": incomplete last line (no newline at the end: "
				"a write was interrupted, or the file was cut; the next append removes it and "
				"records the repair)", no);
	len--;
	if ((rc = cmk_json_parse("not valid JSON", line, len, &obj)) != 0) {
		if (rc == CMK_ERR_NOMEM)
			return rc;
		snprintf(why, sizeof(why), "%s", cmk_errdetail());
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 ": %s", no, why);
	}
	if ((rc = check_fields(obj, no, &seq, &prev_field)) != 0)
		goto out;
	rc = CMK_ERR_AUDIT;
	if (no == 1 && (seq != 1 || strcmp(prev_field, w->prev) != 0) && continues_a_trail(w, obj, line, len, seq)) {
		w->offset = (uint64_t)seq - 1;
		w->rep->first_seq = (uint64_t)seq;
		memcpy(w->prev, prev_field, sizeof(w->prev) - 1);
	}
	if (seq < 0 || (uint64_t)seq != no + w->offset) {
		cmk_fail(rc, "line %" PRIu64 ": seq %" PRId64 ", expected %" PRIu64
			 " (a line was deleted, inserted or reordered)", no, seq, no + w->offset);
		goto out;
	}
	if (strcmp(prev_field, w->prev) != 0) {
		if (no == 1)
			cmk_fail(rc, "line 1: prev is not 64 zeros (the start of the trail is missing or edited)");
		else
			cmk_fail(rc, "line %" PRIu64 ": prev does not match the hash of line %" PRIu64
				 " (line edited, deleted or reordered)", no, no - 1);
		goto out;
	}
	if ((rc = check_mac(w, line, len, no)) != 0)
		goto out;
	if (is_repair(obj))
		w->rep->repairs++;
	cmk_audit_hash(line, len, w->prev);
	rc = 0;
out:
	json_decref(obj);
	return rc;
}

/* After the last line: the anchor must name a line that is there, with the MAC the store recorded. */
static int check_anchor_end(struct walk *w)
{
	const struct cmk_audit_anchor *anc = w->chk->anchor;
	struct cmk_audit_report *rep = w->rep;

	if (anc == NULL || anc->seq == 0) {
		if (w->chk->key != NULL && anc != NULL && rep->keyed_from != 0)
			return cmk_fail(CMK_ERR_AUDIT, "keyed lines from line %" PRIu64 " on, but the store has no "
					"anchor: not the trail of this store, or the store was replaced", rep->keyed_from);
		return 0;
	}
	rep->anchored = anc->seq;
	if (rep->lines + w->offset < anc->seq) {
		rep->bad_line = rep->lines + 1;
		return cmk_fail(CMK_ERR_AUDIT, "the trail ends at line %" PRIu64 " but the store recorded line %" PRIu64
				" as written: lines were removed from the end", rep->lines + w->offset, anc->seq);
	}
	if (anc->seq <= w->offset || !w->anchor_seen || !cmk_memeq(w->anchor_mac, anc->mac, sizeof(anc->mac))) {
		rep->bad_line = anc->seq > w->offset ? anc->seq - w->offset : 1;
		return cmk_fail(CMK_ERR_AUDIT, "line %" PRIu64 " is not the line the store recorded as written there "
				"(the trail was rewritten from there on)", anc->seq);
	}
	rep->unanchored = rep->lines + w->offset - anc->seq;
	return 0;
}

/*
 * Size of the trail at a moment when no append is half done: appends write
 * under LOCK_EX, so with LOCK_SH held the file ends in a whole line.  Lines
 * appended later lie beyond this size and are not read, so the daemon can
 * go on appending during a long verify.
 */
static int stable_size(int fd, const char *path, off_t *size)
{
	struct stat sb;
	int rc;

	while ((rc = flock(fd, LOCK_SH)) != 0 && errno == EINTR)
		;
	if (rc != 0)
		return cmk_fail(CMK_ERR_AUDIT, "%s: lock: %s", path, strerror(errno));
	rc = fstat(fd, &sb);
	flock(fd, LOCK_UN);
	if (rc != 0)
		return cmk_fail(CMK_ERR_AUDIT, "%s: stat: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		return cmk_fail(CMK_ERR_AUDIT, "%s: not a regular file", path);
	*size = sb.st_size;
	return 0;
}

int cmk_audit_verify(const char *path, const struct cmk_audit_check *chk, struct cmk_audit_report *rep)
{
	static const struct cmk_audit_check none = { NULL, NULL };
	struct cmk_audit_report local;
	struct walk w;
	char *line = NULL;
	off_t size = 0, off = 0;
	size_t cap = 0;
	ssize_t n;
	FILE *f = NULL;
	int fd, rc;

	w.chk = chk != NULL ? chk : &none;
	w.rep = rep != NULL ? rep : &local;
	w.anchor_seen = false;
	w.offset = 0;
	memset(w.rep, 0, sizeof(*w.rep));
	w.rep->first_seq = 1;
	memcpy(w.prev, cmk_audit_zero_hash, sizeof(w.prev));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return cmk_fail(errno == ENOENT ? CMK_ERR_NOTFOUND : CMK_ERR_AUDIT, "%s: %s", path, strerror(errno));
	if ((rc = stable_size(fd, path, &size)) != 0) {
		close(fd);
		return rc;
	}
	if ((f = fdopen(fd, "r")) == NULL) {
		close(fd);
		return CMK_ERR_NOMEM;
	}
	/* The first failure's detail is kept; later lines are only counted. */
	rc = 0;
	while (off < size && (n = getline(&line, &cap, f)) > 0) {
		int lrc;

		if (n > size - off)
			n = (ssize_t)(size - off);
		off += n;
		w.rep->lines++;
		if (w.rep->bad_line != 0)
			continue;
		if ((lrc = check_line(&w, line, (size_t)n, w.rep->lines)) == CMK_ERR_NOMEM) {
			rc = lrc;
			goto out;
		}
		if (lrc != 0)
			w.rep->bad_line = w.rep->lines;
	}
	if (ferror(f)) {
		rc = cmk_fail(CMK_ERR_AUDIT, "%s: read error after line %" PRIu64, path, w.rep->lines);
		goto out;
	}
	if (w.rep->bad_line != 0)
		rc = CMK_ERR_AUDIT;
	else
		rc = check_anchor_end(&w);
out:
	free(line);
	fclose(f);
	return rc;
}
