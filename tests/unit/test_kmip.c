/*
 * test_kmip.c - the KMIP TTLV codec: the exact bytes of the probe's
 * request, decoding of success and failure answers, and refusal of every
 * kind of malformed input a hostile keystore could send.
 *
 * Inputs are copied into buffers of exactly their length, so that under
 * AddressSanitizer any read past the end of a message fails the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cmkcert/error.h"
#include "kmip_int.h"

/* RequestMessage > RequestHeader(ProtocolVersion 1.2, BatchCount 1) > BatchItem(DiscoverVersions, empty payload). */
static const uint8_t discover_request[] = {
	0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x00, 0x60, /* RequestMessage, 96 */
	0x42, 0x00, 0x77, 0x01, 0x00, 0x00, 0x00, 0x38, /*  RequestHeader, 56 */
	0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, /*   ProtocolVersion, 32 */
	0x42, 0x00, 0x6a, 0x02, 0x00, 0x00, 0x00, 0x04, /*    Major, Integer */
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /*    1 + padding */
	0x42, 0x00, 0x6b, 0x02, 0x00, 0x00, 0x00, 0x04, /*    Minor, Integer */
	0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, /*    2 + padding */
	0x42, 0x00, 0x0d, 0x02, 0x00, 0x00, 0x00, 0x04, /*   BatchCount, Integer */
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /*   1 + padding */
	0x42, 0x00, 0x0f, 0x01, 0x00, 0x00, 0x00, 0x18, /*  BatchItem, 24 */
	0x42, 0x00, 0x5c, 0x05, 0x00, 0x00, 0x00, 0x04, /*   Operation, Enumeration */
	0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, /*   DiscoverVersions + padding */
	0x42, 0x00, 0x79, 0x01, 0x00, 0x00, 0x00, 0x00, /*   RequestPayload, empty */
};

/* Success, listing versions 1.4 and 1.2. */
static const uint8_t success_response[] = {
	0x42, 0x00, 0x7b, 0x01, 0x00, 0x00, 0x00, 0xd0, /* ResponseMessage, 208 */
	0x42, 0x00, 0x7a, 0x01, 0x00, 0x00, 0x00, 0x48, /*  ResponseHeader, 72 */
	0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, /*   ProtocolVersion */
	0x42, 0x00, 0x6a, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x6b, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x92, 0x09, 0x00, 0x00, 0x00, 0x08, /*   TimeStamp, DateTime */
	0x00, 0x00, 0x00, 0x00, 0x69, 0x29, 0xf1, 0x00,
	0x42, 0x00, 0x0d, 0x02, 0x00, 0x00, 0x00, 0x04, /*   BatchCount 1 */
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x0f, 0x01, 0x00, 0x00, 0x00, 0x78, /*  BatchItem, 120 */
	0x42, 0x00, 0x5c, 0x05, 0x00, 0x00, 0x00, 0x04, /*   Operation DiscoverVersions */
	0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x7f, 0x05, 0x00, 0x00, 0x00, 0x04, /*   ResultStatus Success */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x7c, 0x01, 0x00, 0x00, 0x00, 0x50, /*   ResponsePayload, 80 */
	0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, /*    ProtocolVersion 1.4 */
	0x42, 0x00, 0x6a, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x6b, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, /*    ProtocolVersion 1.2 */
	0x42, 0x00, 0x6a, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x6b, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
};

/* OperationFailed, AuthenticationNotSuccessful, "Client certificate rejected"; no Operation, as error answers may do. */
static const uint8_t failed_response[] = {
	0x42, 0x00, 0x7b, 0x01, 0x00, 0x00, 0x00, 0xa0, /* ResponseMessage, 160 */
	0x42, 0x00, 0x7a, 0x01, 0x00, 0x00, 0x00, 0x48, /*  ResponseHeader, 72 */
	0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20,
	0x42, 0x00, 0x6a, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x6b, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x92, 0x09, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x69, 0x29, 0xf1, 0x00,
	0x42, 0x00, 0x0d, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x0f, 0x01, 0x00, 0x00, 0x00, 0x48, /*  BatchItem, 72 */
	0x42, 0x00, 0x7f, 0x05, 0x00, 0x00, 0x00, 0x04, /*   ResultStatus OperationFailed */
	0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x7e, 0x05, 0x00, 0x00, 0x00, 0x04, /*   ResultReason AuthenticationNotSuccessful */
	0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x7d, 0x07, 0x00, 0x00, 0x00, 0x1b, /*   ResultMessage, TextString, 27 */
	'C', 'l', 'i', 'e', 'n', 't', ' ', 'c',
	'e', 'r', 't', 'i', 'f', 'i', 'c', 'a',
	't', 'e', ' ', 'r', 'e', 'j', 'e', 'c',
	't', 'e', 'd', 0x00, 0x00, 0x00, 0x00, 0x00,
};
/* Offsets into failed_response used by the malformed-input tests. */
#define FAILED_MSG_TEXT 136       /* first byte of the ResultMessage text */
#define FAILED_MSG_PAD 163        /* first padding byte after it */

/* An exact-size heap copy, so reading one byte past the end is caught by ASan. */
static uint8_t *dup_exact(const uint8_t *src, size_t len)
{
	uint8_t *p = malloc(len > 0 ? len : 1);

	assert_non_null(p);
	if (len > 0)
		memcpy(p, src, len);
	return p;
}

static int parse(const uint8_t *src, size_t len, struct cmk_kmip_result *res)
{
	uint8_t *copy = dup_exact(src, len);
	int rc = cmk_kmip_parse_discover_versions(copy, len, res);

	free(copy);
	return rc;
}

/* ---- encoder ---------------------------------------------------------- */

static void test_request_bytes(void **state)
{
	uint8_t buf[256];
	size_t len = 0;

	(void)state;
	assert_int_equal(cmk_kmip_discover_versions_request(buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(discover_request));
	assert_memory_equal(buf, discover_request, sizeof(discover_request));
}

static void test_request_too_small_buffer(void **state)
{
	uint8_t buf[sizeof(discover_request)];
	size_t len = 0;

	(void)state;
	/* One byte short fails; the exact size fits. */
	assert_int_equal(cmk_kmip_discover_versions_request(buf, sizeof(buf) - 1, &len), CMK_ERR_INTERNAL);
	assert_int_equal(cmk_kmip_discover_versions_request(buf, sizeof(buf), &len), 0);
	assert_int_equal(len, sizeof(buf));
}

static void test_writer_types_and_padding(void **state)
{
	static const uint8_t want[] = {
		0x42, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x58,             /* Structure, 88 */
		0x42, 0x00, 0x02, 0x07, 0x00, 0x00, 0x00, 0x03,             /*  TextString "abc" */
		'a', 'b', 'c', 0, 0, 0, 0, 0,
		0x42, 0x00, 0x03, 0x08, 0x00, 0x00, 0x00, 0x08,             /*  ByteString, 8: no padding */
		1, 2, 3, 4, 5, 6, 7, 8,
		0x42, 0x00, 0x04, 0x03, 0x00, 0x00, 0x00, 0x08,             /*  LongInteger -2 */
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
		0x42, 0x00, 0x05, 0x09, 0x00, 0x00, 0x00, 0x08,             /*  DateTime 2026-11-28T19:47:44Z */
		0x00, 0x00, 0x00, 0x00, 0x69, 0x29, 0xfc, 0x20,
		0x42, 0x00, 0x06, 0x02, 0x00, 0x00, 0x00, 0x04,             /*  Integer -1 */
		0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
		0x42, 0x00, 0x07, 0x08, 0x00, 0x00, 0x00, 0x00,             /*  empty ByteString */
	};
	static const uint8_t bytes[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	struct cmk_kmip_writer w;
	uint8_t buf[128];
	size_t len = 0;

	(void)state;
	memset(buf, 0xAA, sizeof(buf));
	cmk_kmip_writer_init(&w, buf, sizeof(buf));
	cmk_kmip_begin(&w, 0x420001);
	cmk_kmip_put_text(&w, 0x420002, "abc", 3);
	cmk_kmip_put_bytes(&w, 0x420003, bytes, sizeof(bytes));
	cmk_kmip_put_long(&w, 0x420004, -2);
	cmk_kmip_put_datetime(&w, 0x420005, 1764359200);
	cmk_kmip_put_int(&w, 0x420006, -1);
	cmk_kmip_put_bytes(&w, 0x420007, NULL, 0);
	cmk_kmip_end(&w);
	assert_int_equal(cmk_kmip_finish(&w, &len), 0);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
	/* What the encoder writes, the decoder's checker accepts. */
	assert_int_equal(cmk_kmip_check(buf, len), 0);
}

static void test_writer_refuses_misuse(void **state)
{
	struct cmk_kmip_writer w;
	uint8_t buf[64];
	size_t len;

	(void)state;
	/* A structure left open. */
	cmk_kmip_writer_init(&w, buf, sizeof(buf));
	cmk_kmip_begin(&w, 0x420001);
	assert_int_equal(cmk_kmip_finish(&w, &len), CMK_ERR_INTERNAL);
	/* A close without an open. */
	cmk_kmip_writer_init(&w, buf, sizeof(buf));
	cmk_kmip_end(&w);
	assert_int_equal(cmk_kmip_finish(&w, &len), CMK_ERR_INTERNAL);
	/* A tag wider than 24 bits. */
	cmk_kmip_writer_init(&w, buf, sizeof(buf));
	cmk_kmip_put_int(&w, 0x1000000, 1);
	assert_int_equal(cmk_kmip_finish(&w, &len), CMK_ERR_INTERNAL);
	/* Text that does not fit: nothing is written past the buffer (ASan would see it). */
	{
		uint8_t *small = malloc(20);
		assert_non_null(small);
		cmk_kmip_writer_init(&w, small, 20);
		cmk_kmip_put_text(&w, 0x420002, "0123456789abc", 13);
		assert_int_equal(cmk_kmip_finish(&w, &len), CMK_ERR_INTERNAL);
		free(small);
	}
}

/* ---- decoder: well-formed answers -------------------------------------- */

static void test_decode_success_two_versions(void **state)
{
	struct cmk_kmip_result res;

	(void)state;
	assert_int_equal(parse(success_response, sizeof(success_response), &res), 0);
	assert_int_equal(res.status, CMK_KMIP_STATUS_SUCCESS);
	assert_int_equal(res.reason, 0);
	assert_string_equal(res.message, "");
	assert_int_equal(res.n_versions, 2);
	assert_int_equal(res.versions[0].major, 1);
	assert_int_equal(res.versions[0].minor, 4);
	assert_int_equal(res.versions[1].major, 1);
	assert_int_equal(res.versions[1].minor, 2);
}

static void test_decode_operation_failed(void **state)
{
	struct cmk_kmip_result res;

	(void)state;
	assert_int_equal(parse(failed_response, sizeof(failed_response), &res), 0);
	assert_int_equal(res.status, CMK_KMIP_STATUS_OPERATION_FAILED);
	assert_int_equal(res.reason, 3);
	assert_string_equal(cmk_kmip_reason_name(res.reason), "authentication not successful");
	assert_string_equal(cmk_kmip_status_name(res.status), "operation failed");
	assert_string_equal(res.message, "Client certificate rejected");
	assert_int_equal(res.n_versions, 0);
}

static void test_decode_sanitizes_message(void **state)
{
	uint8_t msg[sizeof(failed_response)];
	struct cmk_kmip_result res;

	(void)state;
	memcpy(msg, failed_response, sizeof(msg));
	msg[FAILED_MSG_TEXT] = '\n';        /* a server must not be able to forge log lines */
	msg[FAILED_MSG_TEXT + 1] = 0x1b;    /* nor send terminal escapes */
	msg[FAILED_MSG_TEXT + 2] = 0xc3;    /* non-ASCII */
	assert_int_equal(parse(msg, sizeof(msg), &res), 0);
	assert_string_equal(res.message, "???ent certificate rejected");
}

static void test_decode_reason_names(void **state)
{
	(void)state;
	assert_string_equal(cmk_kmip_reason_name(0x0C), "permission denied");
	assert_string_equal(cmk_kmip_reason_name(0x100), "general failure");
	assert_null(cmk_kmip_reason_name(0));
	assert_null(cmk_kmip_reason_name(0x99));
	assert_string_equal(cmk_kmip_status_name(7), "unknown");
}

/* ---- decoder: malformed input ------------------------------------------ */

static void test_every_truncation_refused(void **state)
{
	struct cmk_kmip_result res;

	(void)state;
	for (size_t len = 0; len < sizeof(success_response); len++) {
		cmk_errclear();
		assert_int_equal(parse(success_response, len, &res), CMK_ERR_PROTOCOL);
		assert_true(strlen(cmk_errdetail()) > 0);
	}
}

static void test_over_long_refused(void **state)
{
	uint8_t msg[sizeof(success_response) + 8];
	struct cmk_kmip_result res;

	(void)state;
	memcpy(msg, success_response, sizeof(success_response));
	memset(msg + sizeof(success_response), 0, 8);
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "follow the end"));
}

static void test_mispadded_refused(void **state)
{
	uint8_t msg[sizeof(failed_response)];
	struct cmk_kmip_result res;

	(void)state;
	memcpy(msg, failed_response, sizeof(msg));
	msg[FAILED_MSG_PAD] = 'X';
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "padding"));

	/* Padding after a 4-byte Integer too (BatchCount's value is bytes 80..83, its padding 84..87). */
	{
		uint8_t s[sizeof(success_response)];
		memcpy(s, success_response, sizeof(s));
		s[85] = 1;
		assert_int_equal(parse(s, sizeof(s), &res), CMK_ERR_PROTOCOL);
	}
}

static void test_inner_length_past_parent_refused(void **state)
{
	uint8_t msg[sizeof(success_response)];
	struct cmk_kmip_result res;

	(void)state;
	/* The ResponsePayload (at byte 128) claims 8 more bytes than its BatchItem holds. */
	memcpy(msg, success_response, sizeof(msg));
	assert_int_equal(msg[128 + 7], 0x50);
	msg[128 + 7] = 0x58;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);

	/* A TextString length of 0xFFFFFFFF must not wrap any size computation. */
	{
		uint8_t f[sizeof(failed_response)];
		memcpy(f, failed_response, sizeof(f));
		f[FAILED_MSG_TEXT - 4] = f[FAILED_MSG_TEXT - 3] = f[FAILED_MSG_TEXT - 2] = f[FAILED_MSG_TEXT - 1] = 0xff;
		assert_int_equal(parse(f, sizeof(f), &res), CMK_ERR_PROTOCOL);
	}
}

static void test_bad_types_and_sizes_refused(void **state)
{
	uint8_t msg[sizeof(success_response)];
	struct cmk_kmip_result res;

	(void)state;
	/* BatchCount (header at 72) typed as an unknown type 0x0C. */
	memcpy(msg, success_response, sizeof(msg));
	msg[72 + 3] = 0x0c;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "unknown item type"));

	/* An Integer whose length says 8. */
	memcpy(msg, success_response, sizeof(msg));
	msg[72 + 7] = 0x08;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);

	/* A DateTime (TimeStamp at 56) claiming 4 bytes. */
	memcpy(msg, success_response, sizeof(msg));
	msg[56 + 7] = 0x04;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);

	/* The top item is not a structure. */
	memcpy(msg, success_response, sizeof(msg));
	msg[3] = CMK_KMIP_BYTE_STRING;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);
}

static void test_boolean_must_be_0_or_1(void **state)
{
	struct cmk_kmip_writer w;
	uint8_t buf[64];
	size_t len;

	(void)state;
	cmk_kmip_writer_init(&w, buf, sizeof(buf));
	cmk_kmip_begin(&w, CMK_KMIP_TAG_RESPONSE_MESSAGE);
	cmk_kmip_put_long(&w, 0x420008, 2);
	cmk_kmip_end(&w);
	assert_int_equal(cmk_kmip_finish(&w, &len), 0);
	/* The value occupies bytes 16..23. */
	buf[8 + 3] = CMK_KMIP_BOOLEAN;
	assert_int_equal(cmk_kmip_check(buf, len), CMK_ERR_PROTOCOL);   /* 2 */
	buf[23] = 1;
	assert_int_equal(cmk_kmip_check(buf, len), 0);                  /* 1: a real boolean */
	buf[16] = 0x80;
	assert_int_equal(cmk_kmip_check(buf, len), CMK_ERR_PROTOCOL);   /* high bits set */
}

static void test_deep_nesting_refused(void **state)
{
	uint8_t buf[8 * (CMK_KMIP_DEPTH_MAX + 1)];
	struct cmk_kmip_writer w;
	size_t len;

	(void)state;
	/* CMK_KMIP_DEPTH_MAX levels are fine; one more is refused (the writer itself cannot go deeper). */
	cmk_kmip_writer_init(&w, buf, sizeof(buf));
	for (int i = 0; i < CMK_KMIP_DEPTH_MAX; i++)
		cmk_kmip_begin(&w, CMK_KMIP_TAG_RESPONSE_MESSAGE);
	for (int i = 0; i < CMK_KMIP_DEPTH_MAX; i++)
		cmk_kmip_end(&w);
	assert_int_equal(cmk_kmip_finish(&w, &len), 0);
	assert_int_equal(cmk_kmip_check(buf, len), 0);

	/* Build depth + 1 by hand: each level's length covers everything inside it. */
	len = sizeof(buf);
	for (size_t i = 0; i <= CMK_KMIP_DEPTH_MAX; i++) {
		uint8_t *p = buf + 8 * i;
		uint32_t inner = (uint32_t)(len - 8 * (i + 1));
		p[0] = 0x42; p[1] = 0x00; p[2] = 0x7b; p[3] = CMK_KMIP_STRUCTURE;
		p[4] = (uint8_t)(inner >> 24); p[5] = (uint8_t)(inner >> 16);
		p[6] = (uint8_t)(inner >> 8); p[7] = (uint8_t)inner;
	}
	assert_int_equal(cmk_kmip_check(buf, len), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "nested"));
}

static void test_missing_fields_refused(void **state)
{
	struct cmk_kmip_result res;
	uint8_t msg[sizeof(success_response)];

	(void)state;
	/* Our own request is well-formed TTLV but not an answer. */
	assert_int_equal(parse(discover_request, sizeof(discover_request), &res), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "not a ResponseMessage"));

	/* ResultStatus renamed to an unknown tag: no status, no verdict. */
	memcpy(msg, success_response, sizeof(msg));
	msg[112 + 2] = 0x70;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "ResultStatus"));

	/* An answer to another operation (Query = 0x18). */
	memcpy(msg, success_response, sizeof(msg));
	msg[96 + 11] = 0x18;
	assert_int_equal(parse(msg, sizeof(msg), &res), CMK_ERR_PROTOCOL);
	assert_non_null(strstr(cmk_errdetail(), "DiscoverVersions"));
}

/* Every single-byte corruption either parses or is refused; never an out-of-bounds read. */
static void test_corruption_never_reads_out_of_bounds(void **state)
{
	static const uint8_t values[] = { 0x00, 0x01, 0x07, 0x08, 0x42, 0x7f, 0x80, 0xff };
	uint8_t msg[sizeof(success_response)];
	struct cmk_kmip_result res;

	(void)state;
	for (size_t i = 0; i < sizeof(msg); i++) {
		for (size_t v = 0; v < sizeof(values); v++) {
			int rc;

			memcpy(msg, success_response, sizeof(msg));
			msg[i] = values[v];
			rc = parse(msg, sizeof(msg), &res);
			assert_true(rc == 0 || rc == CMK_ERR_PROTOCOL);
			assert_true(res.n_versions <= CMK_KMIP_VERSIONS_MAX);
		}
	}
}

/* ---- message header ----------------------------------------------------- */

static void test_response_header(void **state)
{
	static const uint8_t http[8] = { 'H', 'T', 'T', 'P', '/', '1', '.', '1' };
	uint8_t hdr[8];
	size_t body = 0;

	(void)state;
	assert_int_equal(cmk_kmip_response_body_len(success_response, &body), 0);
	assert_int_equal(body, sizeof(success_response) - 8);

	/* A non-KMIP server answering with text. */
	assert_int_equal(cmk_kmip_response_body_len(http, &body), CMK_ERR_PROTOCOL);
	/* Our own request echoed back. */
	assert_int_equal(cmk_kmip_response_body_len(discover_request, &body), CMK_ERR_PROTOCOL);
	/* Too large to be accepted: one step over the limit, and the maximum length. */
	memcpy(hdr, success_response, 8);
	hdr[4] = 0x00; hdr[5] = 0x01; hdr[6] = 0x00; hdr[7] = 0x00;   /* 65536 + header > 64 KiB */
	assert_int_equal(cmk_kmip_response_body_len(hdr, &body), CMK_ERR_PROTOCOL);
	hdr[4] = hdr[5] = hdr[6] = 0xff; hdr[7] = 0xf8;
	assert_int_equal(cmk_kmip_response_body_len(hdr, &body), CMK_ERR_PROTOCOL);
	/* The largest accepted body. */
	hdr[4] = 0x00; hdr[5] = 0x00; hdr[6] = 0xff; hdr[7] = 0xf8;
	assert_int_equal(cmk_kmip_response_body_len(hdr, &body), 0);
	assert_int_equal(body, CMK_KMIP_MSG_MAX - 8);
	/* A structure length that is not a multiple of 8. */
	hdr[4] = 0; hdr[5] = 0; hdr[6] = 0; hdr[7] = 0x0c;
	assert_int_equal(cmk_kmip_response_body_len(hdr, &body), CMK_ERR_PROTOCOL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_bytes),
		cmocka_unit_test(test_request_too_small_buffer),
		cmocka_unit_test(test_writer_types_and_padding),
		cmocka_unit_test(test_writer_refuses_misuse),
		cmocka_unit_test(test_decode_success_two_versions),
		cmocka_unit_test(test_decode_operation_failed),
		cmocka_unit_test(test_decode_sanitizes_message),
		cmocka_unit_test(test_decode_reason_names),
		cmocka_unit_test(test_every_truncation_refused),
		cmocka_unit_test(test_over_long_refused),
		cmocka_unit_test(test_mispadded_refused),
		cmocka_unit_test(test_inner_length_past_parent_refused),
		cmocka_unit_test(test_bad_types_and_sizes_refused),
		cmocka_unit_test(test_boolean_must_be_0_or_1),
		cmocka_unit_test(test_deep_nesting_refused),
		cmocka_unit_test(test_missing_fields_refused),
		cmocka_unit_test(test_corruption_never_reads_out_of_bounds),
		cmocka_unit_test(test_response_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
