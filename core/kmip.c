/*
 * kmip.c - KMIP 1.x TTLV encoding and decoding, just enough for the
 * keystore probe's DiscoverVersions round trip (DESIGN §8).
 *
 * The bytes decoded here come from a keystore we are only testing, so none
 * of its lengths are trusted: a whole response is validated by
 * cmk_kmip_check() before any value is read, and the cursor functions
 * re-check bounds themselves so that a caller who skipped the check still
 * cannot read outside the message.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cmkcert/error.h"
#include "kmip_int.h"

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* Values are padded to 8 bytes; computed in 64 bits so a 0xFFFFFFFF length cannot wrap. */
static uint64_t padded(uint64_t len)
{
	return (len + 7) & ~(uint64_t)7;
}

/* ---- encoder ---------------------------------------------------------- */

void cmk_kmip_writer_init(struct cmk_kmip_writer *w, uint8_t *buf, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->buf = buf;
	w->cap = cap;
}

/* Append a zeroed item of `len` value bytes and return its value, or NULL once anything failed. */
static uint8_t *put_item(struct cmk_kmip_writer *w, uint32_t tag, uint8_t type, size_t len)
{
	uint8_t *p;
	size_t need;

	if (w->failed)
		return NULL;
	/* len is at most 32 bits, so header + padded length cannot wrap in 64. */
	if (tag > 0xFFFFFFu || len > UINT32_MAX || CMK_KMIP_HEADER_LEN + padded(len) > w->cap - w->len) {
		w->failed = true;
		return NULL;
	}
	need = CMK_KMIP_HEADER_LEN + (size_t)padded(len);
	p = w->buf + w->len;
	memset(p, 0, need);
	p[0] = (uint8_t)(tag >> 16);
	p[1] = (uint8_t)(tag >> 8);
	p[2] = (uint8_t)tag;
	p[3] = type;
	put_be32(p + 4, (uint32_t)len);
	w->len += need;
	return p + CMK_KMIP_HEADER_LEN;
}

void cmk_kmip_begin(struct cmk_kmip_writer *w, uint32_t tag)
{
	if (w->depth == CMK_KMIP_DEPTH_MAX) {
		w->failed = true;
		return;
	}
	if (put_item(w, tag, CMK_KMIP_STRUCTURE, 0) != NULL)
		w->open[w->depth++] = w->len - CMK_KMIP_HEADER_LEN;
}

void cmk_kmip_end(struct cmk_kmip_writer *w)
{
	size_t start, body;

	if (w->failed)
		return;
	if (w->depth == 0) {
		w->failed = true;
		return;
	}
	start = w->open[--w->depth];
	body = w->len - start - CMK_KMIP_HEADER_LEN;
	if (body > UINT32_MAX) {
		w->failed = true;
		return;
	}
	put_be32(w->buf + start + 4, (uint32_t)body);
}

void cmk_kmip_put_int(struct cmk_kmip_writer *w, uint32_t tag, int32_t v)
{
	uint8_t *p = put_item(w, tag, CMK_KMIP_INTEGER, 4);

	if (p != NULL)
		put_be32(p, (uint32_t)v);
}

void cmk_kmip_put_enum(struct cmk_kmip_writer *w, uint32_t tag, uint32_t v)
{
	uint8_t *p = put_item(w, tag, CMK_KMIP_ENUMERATION, 4);

	if (p != NULL)
		put_be32(p, v);
}

void cmk_kmip_put_long(struct cmk_kmip_writer *w, uint32_t tag, int64_t v)
{
	uint8_t *p = put_item(w, tag, CMK_KMIP_LONG_INTEGER, 8);

	if (p != NULL)
		put_be64(p, (uint64_t)v);
}

void cmk_kmip_put_datetime(struct cmk_kmip_writer *w, uint32_t tag, int64_t t)
{
	uint8_t *p = put_item(w, tag, CMK_KMIP_DATE_TIME, 8);

	if (p != NULL)
		put_be64(p, (uint64_t)t);
}

static void put_string(struct cmk_kmip_writer *w, uint32_t tag, uint8_t type, const void *s, size_t len)
{
	uint8_t *p = put_item(w, tag, type, len);

	if (p != NULL && len > 0)
		memcpy(p, s, len);
}

void cmk_kmip_put_text(struct cmk_kmip_writer *w, uint32_t tag, const char *s, size_t len)
{
	put_string(w, tag, CMK_KMIP_TEXT_STRING, s, len);
}

void cmk_kmip_put_bytes(struct cmk_kmip_writer *w, uint32_t tag, const void *b, size_t len)
{
	put_string(w, tag, CMK_KMIP_BYTE_STRING, b, len);
}

int cmk_kmip_finish(struct cmk_kmip_writer *w, size_t *len)
{
	if (w->failed || w->depth != 0)
		return cmk_fail(CMK_ERR_INTERNAL, "kmip: message does not fit its buffer or a structure is left open");
	*len = w->len;
	return 0;
}

int cmk_kmip_discover_versions_request(uint8_t *buf, size_t cap, size_t *len)
{
	struct cmk_kmip_writer w;

	cmk_kmip_writer_init(&w, buf, cap);
	cmk_kmip_begin(&w, CMK_KMIP_TAG_REQUEST_MESSAGE);
	cmk_kmip_begin(&w, CMK_KMIP_TAG_REQUEST_HEADER);
	/* 1.2 is what KMIP keystores (HSMs, PyKMIP, cloud KMIP gateways) all speak. */
	cmk_kmip_begin(&w, CMK_KMIP_TAG_PROTOCOL_VERSION);
	cmk_kmip_put_int(&w, CMK_KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
	cmk_kmip_put_int(&w, CMK_KMIP_TAG_PROTOCOL_VERSION_MINOR, 2);
	cmk_kmip_end(&w);
	cmk_kmip_put_int(&w, CMK_KMIP_TAG_BATCH_COUNT, 1);
	cmk_kmip_end(&w);
	cmk_kmip_begin(&w, CMK_KMIP_TAG_BATCH_ITEM);
	cmk_kmip_put_enum(&w, CMK_KMIP_TAG_OPERATION, CMK_KMIP_OP_DISCOVER_VERSIONS);
	/* An empty payload asks for every version the server supports. */
	cmk_kmip_begin(&w, CMK_KMIP_TAG_REQUEST_PAYLOAD);
	cmk_kmip_end(&w);
	cmk_kmip_end(&w);
	cmk_kmip_end(&w);
	return cmk_kmip_finish(&w, len);
}

/* ---- decoder ---------------------------------------------------------- */

/* Value length a fixed-size type must have; 0 for the variable-length ones. */
static uint32_t fixed_len(uint8_t type)
{
	switch (type) {
	case CMK_KMIP_INTEGER:
	case CMK_KMIP_ENUMERATION:
	case CMK_KMIP_INTERVAL:
		return 4;
	case CMK_KMIP_LONG_INTEGER:
	case CMK_KMIP_BOOLEAN:
	case CMK_KMIP_DATE_TIME:
		return 8;
	default:
		return 0;
	}
}

static bool is_known_type(uint8_t type)
{
	return type >= CMK_KMIP_STRUCTURE && type <= CMK_KMIP_INTERVAL;
}

/*
 * Read the item header at [p, end) and the size of the whole item (header,
 * value, padding).  Only bounds are checked here; NULL when the item fits,
 * else why it does not.
 */
static const char *read_item(const uint8_t *p, const uint8_t *end, struct cmk_kmip_item *it, size_t *size)
{
	size_t avail = (size_t)(end - p);

	if (avail < CMK_KMIP_HEADER_LEN)
		return "truncated item header";
	it->tag = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
	it->type = p[3];
	it->len = get_be32(p + 4);
	it->value = p + CMK_KMIP_HEADER_LEN;
	if (padded(it->len) > avail - CMK_KMIP_HEADER_LEN)
		return "item length runs past the end of its structure";
	*size = CMK_KMIP_HEADER_LEN + (size_t)padded(it->len);
	return NULL;
}

static int bad(size_t off, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(size_t off, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return cmk_fail(CMK_ERR_PROTOCOL, "malformed KMIP message at byte %zu: %s", off, why);
}

/* Type-specific rules for one item whose bounds are already known to hold. */
static int check_value(const struct cmk_kmip_item *it, size_t off)
{
	uint32_t want = fixed_len(it->type);

	if (!is_known_type(it->type))
		return bad(off, "unknown item type 0x%02x (tag 0x%06x)", it->type, it->tag);
	if (want != 0 && it->len != want)
		return bad(off, "item type 0x%02x has length %u, expected %u", it->type, it->len, want);
	if ((it->type == CMK_KMIP_STRUCTURE || it->type == CMK_KMIP_BIG_INTEGER) && it->len % 8 != 0)
		return bad(off, "item type 0x%02x has length %u, not a multiple of 8", it->type, it->len);
	if (it->type == CMK_KMIP_BOOLEAN && get_be64(it->value) > 1)
		return bad(off, "boolean is neither 0 nor 1");
	for (uint64_t i = it->len; i < padded(it->len); i++)
		if (it->value[i] != 0)
			return bad(off, "non-zero padding after item tag 0x%06x", it->tag);
	return 0;
}

/* Every item in [p, end), recursing into structures; `base` only serves the offsets in messages. */
static int check_items(const uint8_t *base, const uint8_t *p, const uint8_t *end, int depth)
{
	while (p < end) {
		struct cmk_kmip_item it;
		size_t off = (size_t)(p - base), size;
		const char *why;
		int rc;

		if ((why = read_item(p, end, &it, &size)) != NULL)
			return bad(off, "%s", why);
		if ((rc = check_value(&it, off)) != 0)
			return rc;
		if (it.type == CMK_KMIP_STRUCTURE) {
			if (depth + 1 > CMK_KMIP_DEPTH_MAX)
				return bad(off, "structures nested deeper than %d levels", CMK_KMIP_DEPTH_MAX);
			if ((rc = check_items(base, it.value, it.value + it.len, depth + 1)) != 0)
				return rc;
		}
		p += size;
	}
	return 0;
}

int cmk_kmip_check(const uint8_t *msg, size_t len)
{
	struct cmk_kmip_item top;
	const char *why;
	size_t size;

	if (msg == NULL)
		return bad(0, "empty message");
	if ((why = read_item(msg, msg + len, &top, &size)) != NULL)
		return bad(0, "%s", why);
	if (top.type != CMK_KMIP_STRUCTURE)
		return bad(0, "the message is not a structure (type 0x%02x)", top.type);
	if (size != len)
		return bad(size, "%zu bytes follow the end of the message", len - size);
	return check_items(msg, msg, msg + len, 0);
}

int cmk_kmip_response_body_len(const uint8_t hdr[CMK_KMIP_HEADER_LEN], size_t *body_len)
{
	uint32_t tag = (uint32_t)hdr[0] << 16 | (uint32_t)hdr[1] << 8 | hdr[2];
	uint32_t len = get_be32(hdr + 4);

	if (tag != CMK_KMIP_TAG_RESPONSE_MESSAGE || hdr[3] != CMK_KMIP_STRUCTURE)
		return cmk_fail(CMK_ERR_PROTOCOL, "not a KMIP ResponseMessage (tag 0x%06x, type 0x%02x)", tag, hdr[3]);
	if (len % 8 != 0)
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP ResponseMessage length %u is not a multiple of 8", len);
	if (len > CMK_KMIP_MSG_MAX - CMK_KMIP_HEADER_LEN)
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP ResponseMessage of %u bytes is larger than the %d accepted",
				len, CMK_KMIP_MSG_MAX);
	*body_len = len;
	return 0;
}

void cmk_kmip_cursor_init(struct cmk_kmip_cursor *c, const uint8_t *msg, size_t len)
{
	c->p = msg;
	c->end = msg + len;
}

void cmk_kmip_enter(const struct cmk_kmip_item *st, struct cmk_kmip_cursor *c)
{
	/* Only a structure has children; anything else is an empty range. */
	c->p = st->value;
	c->end = st->type == CMK_KMIP_STRUCTURE ? st->value + st->len : st->value;
}

bool cmk_kmip_next(struct cmk_kmip_cursor *c, struct cmk_kmip_item *it)
{
	size_t size;

	if (c->p >= c->end || read_item(c->p, c->end, it, &size) != NULL)
		return false;
	c->p += size;
	return true;
}

bool cmk_kmip_find(const struct cmk_kmip_item *st, uint32_t tag, uint8_t type, struct cmk_kmip_item *out)
{
	struct cmk_kmip_cursor c;

	cmk_kmip_enter(st, &c);
	while (cmk_kmip_next(&c, out))
		if (out->tag == tag && out->type == type)
			return true;
	return false;
}

uint32_t cmk_kmip_u32(const struct cmk_kmip_item *it)
{
	return it->len >= 4 ? get_be32(it->value) : 0;
}

int64_t cmk_kmip_i64(const struct cmk_kmip_item *it)
{
	return it->len >= 8 ? (int64_t)get_be64(it->value) : 0;
}

/* ---- DiscoverVersions response ------------------------------------------ */

/* Keep a server's text printable: it ends up in logs and error details. */
static void copy_text(char *dst, size_t cap, const struct cmk_kmip_item *it)
{
	size_t n = it->len < cap - 1 ? it->len : cap - 1;

	for (size_t i = 0; i < n; i++)
		dst[i] = it->value[i] >= 0x20 && it->value[i] < 0x7f ? (char)it->value[i] : '?';
	dst[n] = '\0';
}

static int parse_versions(const struct cmk_kmip_item *batch, struct cmk_kmip_result *out)
{
	struct cmk_kmip_item payload, pv, major, minor;
	struct cmk_kmip_cursor c;

	/* A server that shares no version with us may answer with no payload at all. */
	if (!cmk_kmip_find(batch, CMK_KMIP_TAG_RESPONSE_PAYLOAD, CMK_KMIP_STRUCTURE, &payload))
		return 0;
	cmk_kmip_enter(&payload, &c);
	while (cmk_kmip_next(&c, &pv)) {
		if (pv.tag != CMK_KMIP_TAG_PROTOCOL_VERSION)
			continue;
		if (pv.type != CMK_KMIP_STRUCTURE ||
		    !cmk_kmip_find(&pv, CMK_KMIP_TAG_PROTOCOL_VERSION_MAJOR, CMK_KMIP_INTEGER, &major) ||
		    !cmk_kmip_find(&pv, CMK_KMIP_TAG_PROTOCOL_VERSION_MINOR, CMK_KMIP_INTEGER, &minor))
			return cmk_fail(CMK_ERR_PROTOCOL, "KMIP DiscoverVersions answer: a ProtocolVersion lacks its major or minor number");
		if (out->n_versions < CMK_KMIP_VERSIONS_MAX) {
			out->versions[out->n_versions].major = (int32_t)cmk_kmip_u32(&major);
			out->versions[out->n_versions].minor = (int32_t)cmk_kmip_u32(&minor);
			out->n_versions++;
		}
	}
	return 0;
}

int cmk_kmip_parse_discover_versions(const uint8_t *msg, size_t len, struct cmk_kmip_result *out)
{
	struct cmk_kmip_item top, header, batch, field;
	struct cmk_kmip_cursor c;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = cmk_kmip_check(msg, len)) != 0)
		return rc;
	cmk_kmip_cursor_init(&c, msg, len);
	if (!cmk_kmip_next(&c, &top))
		return cmk_fail(CMK_ERR_INTERNAL, "kmip: a checked message has no item");
	if (top.tag != CMK_KMIP_TAG_RESPONSE_MESSAGE)
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP answer is not a ResponseMessage (tag 0x%06x)", top.tag);
	if (!cmk_kmip_find(&top, CMK_KMIP_TAG_RESPONSE_HEADER, CMK_KMIP_STRUCTURE, &header))
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP answer has no ResponseHeader");
	/* We sent one batch item; its answer is the first (and only) one. */
	if (!cmk_kmip_find(&top, CMK_KMIP_TAG_BATCH_ITEM, CMK_KMIP_STRUCTURE, &batch))
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP answer has no BatchItem");
	/* Error answers to a request the server could not parse may omit the operation. */
	if (cmk_kmip_find(&batch, CMK_KMIP_TAG_OPERATION, CMK_KMIP_ENUMERATION, &field) &&
	    cmk_kmip_u32(&field) != CMK_KMIP_OP_DISCOVER_VERSIONS)
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP answer is for operation 0x%x, not DiscoverVersions",
				cmk_kmip_u32(&field));
	if (!cmk_kmip_find(&batch, CMK_KMIP_TAG_RESULT_STATUS, CMK_KMIP_ENUMERATION, &field))
		return cmk_fail(CMK_ERR_PROTOCOL, "KMIP answer has no ResultStatus");
	out->status = cmk_kmip_u32(&field);
	if (cmk_kmip_find(&batch, CMK_KMIP_TAG_RESULT_REASON, CMK_KMIP_ENUMERATION, &field))
		out->reason = cmk_kmip_u32(&field);
	if (cmk_kmip_find(&batch, CMK_KMIP_TAG_RESULT_MESSAGE, CMK_KMIP_TEXT_STRING, &field))
		copy_text(out->message, sizeof(out->message), &field);
	if (out->status == CMK_KMIP_STATUS_SUCCESS)
		return parse_versions(&batch, out);
	return 0;
}

const char *cmk_kmip_status_name(uint32_t status)
{
	switch (status) {
	case CMK_KMIP_STATUS_SUCCESS: return "success";
	case CMK_KMIP_STATUS_OPERATION_FAILED: return "operation failed";
	case CMK_KMIP_STATUS_OPERATION_PENDING: return "operation pending";
	case CMK_KMIP_STATUS_OPERATION_UNDONE: return "operation undone";
	default: return "unknown";
	}
}

const char *cmk_kmip_reason_name(uint32_t reason)
{
	static const char *const names[] = {
		[0x01] = "item not found",
		[0x02] = "response too large",
		[0x03] = "authentication not successful",
		[0x04] = "invalid message",
		[0x05] = "operation not supported",
		[0x06] = "missing data",
		[0x07] = "invalid field",
		[0x08] = "feature not supported",
		[0x09] = "operation canceled by requester",
		[0x0A] = "cryptographic failure",
		[0x0B] = "illegal operation",
		[0x0C] = "permission denied",
		[0x0D] = "object archived",
		[0x0E] = "index out of bounds",
		[0x0F] = "application namespace not supported",
		[0x10] = "key format type not supported",
		[0x11] = "key compression type not supported",
		[0x12] = "encoding option error",
		[0x13] = "key value not present",
		[0x14] = "attestation required",
		[0x15] = "attestation failed",
		[0x16] = "sensitive",
		[0x17] = "not extractable",
		[0x18] = "object already exists",
	};

	if (reason == 0x100)
		return "general failure";
	if (reason < sizeof(names) / sizeof(names[0]))
		return names[reason];
	return NULL;
}
