/*
 * kmip_int.h - the KMIP 1.x TTLV codec used by the keystore probe
 * (core/probe_tls.c) and its tests.  Internal to the library.
 *
 * TTLV: every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian
 * length and the value, padded with zero bytes to a multiple of 8.  A
 * Structure's value is the concatenation of its children.
 *
 * The encoder writes into a caller's fixed buffer and remembers the first
 * failure (overflow, unbalanced structures), so a message is written as a
 * plain sequence of calls and checked once in cmk_kmip_finish().
 *
 * The decoder never trusts a length: cmk_kmip_check() validates a whole
 * message (every length inside its parent, fixed sizes per type, zero
 * padding, known types, nesting depth) before anything reads values, and
 * the cursor functions are bounds-checked on their own as well.
 */
#ifndef CMKCERT_KMIP_INT_H
#define CMKCERT_KMIP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Item types (KMIP 1.x, 9.1.1.3). */
enum cmk_kmip_type {
	CMK_KMIP_STRUCTURE = 0x01,
	CMK_KMIP_INTEGER = 0x02,
	CMK_KMIP_LONG_INTEGER = 0x03,
	CMK_KMIP_BIG_INTEGER = 0x04,
	CMK_KMIP_ENUMERATION = 0x05,
	CMK_KMIP_BOOLEAN = 0x06,
	CMK_KMIP_TEXT_STRING = 0x07,
	CMK_KMIP_BYTE_STRING = 0x08,
	CMK_KMIP_DATE_TIME = 0x09,
	CMK_KMIP_INTERVAL = 0x0A,
};

/* The few tags the probe needs. */
#define CMK_KMIP_TAG_BATCH_COUNT            0x42000Du
#define CMK_KMIP_TAG_BATCH_ITEM             0x42000Fu
#define CMK_KMIP_TAG_OPERATION              0x42005Cu
#define CMK_KMIP_TAG_PROTOCOL_VERSION       0x420069u
#define CMK_KMIP_TAG_PROTOCOL_VERSION_MAJOR 0x42006Au
#define CMK_KMIP_TAG_PROTOCOL_VERSION_MINOR 0x42006Bu
#define CMK_KMIP_TAG_REQUEST_HEADER         0x420077u
#define CMK_KMIP_TAG_REQUEST_MESSAGE        0x420078u
#define CMK_KMIP_TAG_REQUEST_PAYLOAD        0x420079u
#define CMK_KMIP_TAG_RESPONSE_HEADER        0x42007Au
#define CMK_KMIP_TAG_RESPONSE_MESSAGE       0x42007Bu
#define CMK_KMIP_TAG_RESPONSE_PAYLOAD       0x42007Cu
#define CMK_KMIP_TAG_RESULT_MESSAGE         0x42007Du
#define CMK_KMIP_TAG_RESULT_REASON          0x42007Eu
#define CMK_KMIP_TAG_RESULT_STATUS          0x42007Fu
#define CMK_KMIP_TAG_TIME_STAMP             0x420092u

#define CMK_KMIP_OP_DISCOVER_VERSIONS       0x1Eu

/* Result Status enumeration. */
#define CMK_KMIP_STATUS_SUCCESS             0u
#define CMK_KMIP_STATUS_OPERATION_FAILED    1u
#define CMK_KMIP_STATUS_OPERATION_PENDING   2u
#define CMK_KMIP_STATUS_OPERATION_UNDONE    3u

#define CMK_KMIP_HEADER_LEN 8
/* Largest response the probe accepts; a DiscoverVersions answer is a few hundred bytes. */
#define CMK_KMIP_MSG_MAX (64 * 1024)
/* Deepest nesting accepted; real messages use four or five levels. */
#define CMK_KMIP_DEPTH_MAX 16

/* ---- encoder ---------------------------------------------------------- */

struct cmk_kmip_writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
	size_t open[CMK_KMIP_DEPTH_MAX];  /* offsets of the open structures' headers */
	int depth;
	bool failed;                      /* sticky: reported by cmk_kmip_finish() */
};

void cmk_kmip_writer_init(struct cmk_kmip_writer *w, uint8_t *buf, size_t cap);

/* Open and close a Structure; its length is filled in when it is closed. */
void cmk_kmip_begin(struct cmk_kmip_writer *w, uint32_t tag);
void cmk_kmip_end(struct cmk_kmip_writer *w);

void cmk_kmip_put_int(struct cmk_kmip_writer *w, uint32_t tag, int32_t v);
void cmk_kmip_put_enum(struct cmk_kmip_writer *w, uint32_t tag, uint32_t v);
void cmk_kmip_put_long(struct cmk_kmip_writer *w, uint32_t tag, int64_t v);
void cmk_kmip_put_datetime(struct cmk_kmip_writer *w, uint32_t tag, int64_t t);
void cmk_kmip_put_text(struct cmk_kmip_writer *w, uint32_t tag, const char *s, size_t len);
void cmk_kmip_put_bytes(struct cmk_kmip_writer *w, uint32_t tag, const void *b, size_t len);

/*
 * 0 and the message length in *len when every call fit and every structure
 * was closed; CMK_ERR_INTERNAL otherwise (the messages are built by this
 * library, so a failure is a bug, not bad input).
 */
int cmk_kmip_finish(struct cmk_kmip_writer *w, size_t *len);

/*
 * The probe's request: RequestMessage > RequestHeader (ProtocolVersion 1.2,
 * BatchCount 1) > BatchItem (Operation DiscoverVersions, empty payload).
 */
int cmk_kmip_discover_versions_request(uint8_t *buf, size_t cap, size_t *len);

/* ---- decoder ---------------------------------------------------------- */

struct cmk_kmip_item {
	uint32_t tag;
	uint8_t type;
	uint32_t len;             /* value length without padding */
	const uint8_t *value;     /* points into the message */
};

/* Position inside one structure's value (or a whole message). */
struct cmk_kmip_cursor {
	const uint8_t *p;
	const uint8_t *end;
};

/*
 * Validate a whole message: exactly one top-level item spanning `len`
 * bytes, each child inside its parent, fixed lengths for fixed-size types,
 * zero padding, known types, at most CMK_KMIP_DEPTH_MAX levels.
 * 0 or CMK_ERR_PROTOCOL with detail naming the offset and the fault.
 */
int cmk_kmip_check(const uint8_t *msg, size_t len);

/*
 * The length of the body that follows an 8-byte message header, after
 * checking that the header opens a ResponseMessage structure of at most
 * CMK_KMIP_MSG_MAX bytes.  CMK_ERR_PROTOCOL otherwise.
 */
int cmk_kmip_response_body_len(const uint8_t hdr[CMK_KMIP_HEADER_LEN], size_t *body_len);

void cmk_kmip_cursor_init(struct cmk_kmip_cursor *c, const uint8_t *msg, size_t len);

/* A cursor over the children of structure `st`. */
void cmk_kmip_enter(const struct cmk_kmip_item *st, struct cmk_kmip_cursor *c);

/*
 * The next item at the cursor; false at the end or when the bytes there do
 * not form a complete item (which cmk_kmip_check() has already ruled out).
 */
bool cmk_kmip_next(struct cmk_kmip_cursor *c, struct cmk_kmip_item *it);

/* First child of `st` with `tag` and `type`; false when there is none. */
bool cmk_kmip_find(const struct cmk_kmip_item *st, uint32_t tag, uint8_t type, struct cmk_kmip_item *out);

/* Values of Integer / Enumeration (4 bytes) and LongInteger / DateTime (8 bytes) items. */
uint32_t cmk_kmip_u32(const struct cmk_kmip_item *it);
int64_t cmk_kmip_i64(const struct cmk_kmip_item *it);

/* ---- DiscoverVersions response ------------------------------------------ */

#define CMK_KMIP_VERSIONS_MAX 16

struct cmk_kmip_version {
	int32_t major;
	int32_t minor;
};

struct cmk_kmip_result {
	uint32_t status;          /* CMK_KMIP_STATUS_* */
	uint32_t reason;          /* Result Reason enumeration, 0 when absent */
	char message[256];        /* Result Message, printable ASCII only (others become '?'), "" when absent */
	struct cmk_kmip_version versions[CMK_KMIP_VERSIONS_MAX];
	size_t n_versions;        /* versions listed in a successful answer (at most CMK_KMIP_VERSIONS_MAX kept) */
};

/*
 * Decode a complete ResponseMessage (header included) answering a
 * DiscoverVersions request: the first batch item's status, reason and
 * message, and on success the protocol versions the server lists.
 * 0 when the message is well formed (whatever its status);
 * CMK_ERR_PROTOCOL with detail when it is not.
 */
int cmk_kmip_parse_discover_versions(const uint8_t *msg, size_t len, struct cmk_kmip_result *out);

/* "success", "operation failed", ...; "unknown" for other values. */
const char *cmk_kmip_status_name(uint32_t status);

/* Spec name of a Result Reason ("authentication not successful"); NULL when not known. */
const char *cmk_kmip_reason_name(uint32_t reason);

#endif
