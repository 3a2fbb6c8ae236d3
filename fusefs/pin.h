/*
 * pin.h - matching pairs across two opens (REQ-007).
 *
 * A client that opens /certs/X.crt and then /private/X.key must get the key
 * of the certificate it read, even when a rotation lands between the two
 * opens.  An open of a certificate, key or bundle file by a process pins
 * the version it got for that (process, tenant, type); an open of one of
 * the *other* files by the same process within the window gets the pinned
 * version, completing the set.  Opening a file of the set a second time
 * starts a new set with the current version, so a process that re-reads
 * one file to follow changes sees each new version at once.  Processes are
 * told apart by thread group (a multithreaded client may open the two files
 * from different threads).  A pin never brings back a name that is no
 * longer served: a revoked or expired (tenant, type) is gone from the tree,
 * and open() fails before a pin is consulted.
 *
 * The pins_* functions but pins_tgid expect the tree lock to be held.
 */
#ifndef CMKCERTFS_PIN_H
#define CMKCERTFS_PIN_H

#include <stdint.h>
#include <sys/types.h>

#include "version.h"

#define PIN_WINDOW_MS 5000

struct pins;

int pins_new(struct pins **out);
void pins_free(struct pins *p);

/* Which file of a set is opened. */
enum pin_file { PIN_CERT = 1, PIN_KEY = 2, PIN_BUNDLE = 4 };

/*
 * The version process `tgid` should get when it opens `file` of cur's
 * (tenant, type): the pinned one if the pin is within its window and this
 * file was not opened under it yet, else `cur`, which is then pinned.
 * Returns a new reference.
 */
struct fsver *pins_choose(struct pins *p, pid_t tgid, enum pin_file file, struct fsver *cur, int64_t now_ms);

/*
 * The thread group of a caller's thread id (from /proc, remembered for a
 * second), or `tid` itself when that cannot be read.  Thread-safe; call it
 * without the tree lock.
 */
pid_t pins_tgid(pid_t tid, int64_t now_ms);

#endif
