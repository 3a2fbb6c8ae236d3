/*
 * pin.h - matching pairs across opens: the version a load gets (REQ-007).
 *
 * A TLS library loads a client identity with several opens: the
 * certificate then the key (Go's LoadX509KeyPair, OpenSSL's
 * use_certificate_chain_file + use_PrivateKey_file, Python's
 * load_cert_chain), or a bundle opened twice (once for the certificate,
 * once for the key).  A rotation between two opens of one load must not
 * give it a certificate and a key of different versions.
 *
 * The rule, per process (thread group) and (tenant, type):
 *
 *   - Opens of one process that come within PIN_GAP_MS of its previous
 *     open of the set form one load group, and get the group's version.
 *     A process that has not opened any file of the set for PIN_GAP_MS
 *     starts a new group on the current version.
 *   - When the current version moves on while a group is open, the group
 *     moves with it at its first open that cannot be the second half of a
 *     load:
 *       . no certificate opened in the group is waiting for its key (opens
 *         counted per process, so any number of threads loading at once is
 *         covered; a certificate not followed by a key within PIN_LOAD_MS
 *         was not part of a load);
 *       . for a certificate: no key was opened alone within
 *         PIN_KEY_FIRST_MS before it (a load that reads the key first);
 *       . the process opened the bundle an even number of times; when its
 *         bundle opens overlapped (several loads at once), also every
 *         thread did, and no bundle was opened for PIN_QUIET_MS (a runtime
 *         such as Go moves a task between threads, which makes per-thread
 *         counts meaningless).
 *     A process that has only ever opened certificates, in a group older
 *     than PIN_CERTS_ONLY_MS, reads no pairs and moves at once (a loader
 *     opens its first key well within that of its first certificate).
 *   - A group moves at the latest at its first open PIN_MOVE_MAX_MS after
 *     the switch, and at its next open when the store changed the set
 *     again (a replaced key may have been destroyed): an older version is
 *     never served longer than that.
 *   - /tls/<s>/ca.crt follows the group without moving it.
 *
 * Limits: a process that loads a bundle with two opens from several
 * threads at once without ever pausing PIN_QUIET_MS, or keeps a certificate
 * waiting for its key for good, moves at the PIN_MOVE_MAX_MS bound and can
 * then get one mismatched pair per load in flight; a key read alone and,
 * within PIN_KEY_FIRST_MS and across a rotation, a certificate-then-key
 * load, is taken for a key-first load and mismatched; a certificate read
 * alone followed, across a rotation, by a key-first load, likewise.  A
 * bundle read with one open is always a matching set.
 *
 * The pins_* functions but pins_tgid expect the tree lock to be held.
 */
#ifndef CMKCERTFS_PIN_H
#define CMKCERTFS_PIN_H

#include <stdint.h>
#include <sys/types.h>

#include "version.h"

#define PIN_GAP_MS 5000
#define PIN_LOAD_MS 5000
#define PIN_CERTS_ONLY_MS 1000
#define PIN_KEY_FIRST_MS 50
#define PIN_QUIET_MS 20
#define PIN_MOVE_MAX_MS 10000

struct pins;
struct pin_group;

int pins_new(struct pins **out);
void pins_free(struct pins *p);

/* What an open is to a load. */
enum pin_role { PIN_CERT, PIN_KEY, PIN_BUNDLE, PIN_FOLLOW };

/*
 * The version process `tgid` (thread `tid`) gets when it opens a file of
 * role `role` of the set whose groups are *groups, current version `cur`,
 * which became current at `switched_ms`.  Returns a new reference.
 */
struct fsver *pins_choose(struct pins *p, struct pin_group **groups, struct fsver *cur, int64_t switched_ms,
			  pid_t tgid, pid_t tid, enum pin_role role, int64_t now_ms);

/*
 * Process `tgid` closed a bundle it opened (flush): loads whose bundle opens
 * never overlap run one after the other.
 */
void pins_bundle_closed(struct pin_group *groups, pid_t tgid);

/* The store changed the set without changing its version: groups on an older one move at their next open. */
void pins_touched(struct pin_group *groups, const struct fsver *cur);

/* Drop every group of a set (it went away). */
void pins_drop(struct pins *p, struct pin_group **groups);

/* Number of groups held (for tests and the logs). */
size_t pins_count(const struct pins *p);

/*
 * The thread group of a caller's thread id (from /proc, remembered for a
 * second), or `tid` itself when that cannot be read.  Thread-safe; call it
 * without the tree lock.
 */
pid_t pins_tgid(pid_t tid, int64_t now_ms);

#endif
