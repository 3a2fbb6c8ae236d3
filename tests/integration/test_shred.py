"""A destroyed key leaves every store file.

Revocation, keystore removal, the end of the grace period of a rotated
certificate, and the end of a failed record's grace period each destroy a
sealed key.  Afterwards no file under the store (databases, log files,
region files) holds its bytes - not whole, and not any 32-byte piece of it -
while the daemon keeps the store open and the keys still in use stay where
they are (the scan finds those, so it would find a leftover)."""

import json
import subprocess
import time

from conftest import BUILD, edit_conf
from fusefix import Mounts

STORE_BLOB = BUILD / "tests" / "store_blob"
WINDOW = 32


def blobs(store, tenant, ktype):
    r = subprocess.run([str(STORE_BLOB), str(store), tenant, ktype], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {int(line.split()[0]): bytes.fromhex(line.split()[1]) for line in r.stdout.splitlines()}


def copies(store, blob):
    """Whole copies, and 32-byte pieces found anywhere, per file."""
    pieces = [blob[i:i + WINDOW] for i in range(0, len(blob) - WINDOW + 1, WINDOW)]
    found = {}
    for f in sorted(p for p in store.rglob("*") if p.is_file()):
        data = f.read_bytes()
        whole, parts = data.count(blob), sum(1 for p in pieces if p in data)
        if whole or parts:
            found[f.name] = (whole, parts)
    return found


KEY_SLOT_FILES = ("keys.db", "keys_small.db", "keys_mid.db")   # key slots of each size (store_keys.c)


def in_key_slots(found):
    """How many whole copies the key slot files hold, of a copies() answer."""
    return sum(found[f][0] for f in KEY_SLOT_FILES if f in found)


def test_destroyed_keys_leave_every_store_file(bao, cmk, untrusting_keystore, tmp_path):
    conf = edit_conf(bao.conf, "renewal", "grace_period", "2s", out=tmp_path / "shred.conf")
    store = bao.dir / "store"
    for tenant, ktype in (("acme", "aws_kms"), ("globex", "aws_kms"), ("initech", "aws_kms"),
                          ("umbrella", "thales_luna")):
        r = cmk("keystore", "add", "--tenant", tenant, "--type", ktype, "--verify", "none", conf=conf)
        assert r.returncode == 0, r.stderr
    r = cmk("keystore", "add", "--tenant", "hooli", "--type", "aws_kms", "--endpoint", untrusting_keystore.endpoint,
            "--server-ca", str(untrusting_keystore.server_ca), conf=conf)
    assert r.returncode == 1                       # refused by the keystore: a failed record, key kept for now
    destroyed = {"revoke": blobs(store, "acme", "aws_kms"), "keystore remove": blobs(store, "globex", "aws_kms"),
                 "rotated, grace over": blobs(store, "initech", "aws_kms"),
                 "failed, grace over": blobs(store, "hooli", "aws_kms")}
    kept = blobs(store, "umbrella", "thales_luna")
    assert all(destroyed.values()) and kept
    # Every key is in the store now, and the scan sees it.
    for b in list(kept.values()) + [b for v in destroyed.values() for b in v.values()]:
        assert copies(store, b), "the scan cannot find a key that is there"

    ms = Mounts(conf)
    try:
        ms()                                        # the daemon keeps the store open throughout
        assert cmk("revoke", "--tenant", "acme", "--type", "aws_kms", conf=conf).returncode == 0
        assert cmk("keystore", "remove", "--tenant", "globex", "--type", "aws_kms", conf=conf).returncode == 0
        assert cmk("renew", "--tenant", "initech", "--type", "aws_kms", conf=conf).returncode == 0
        time.sleep(2.5)                             # the grace period of the rotated and the failed record
        r = cmk("--json", "renew", "--due", conf=conf)
        assert r.returncode == 0, r.stderr
    finally:
        problems = ms.close()
    assert not problems, problems

    left = {}
    for how, recs in destroyed.items():
        for rid, b in recs.items():
            found = copies(store, b)
            print("%-22s record %d (%d bytes): copies after shred: %s" % (how, rid, len(b), found or "none"))
            if found:
                left[(how, rid)] = found
    assert not left, left
    for b in kept.values():
        assert in_key_slots(copies(store, b)) == 1  # the key in use is still there, once
    assert cmk("verify", conf=conf).returncode == 0


def pool_blobs(store, pool):
    r = subprocess.run([str(STORE_BLOB), str(store), "--pool", pool], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {int(line.split()[0]): (line.split()[1], bytes.fromhex(line.split()[2])) for line in r.stdout.splitlines()}


def test_pool_keys_leave_every_store_file_once_used_or_discarded(bao, cmk, tmp_path):
    """A pool key moves into one record; the copy sealed for the pool goes with the shred that
    destroys that record's key.  A key discarded from the pool (its request may have been signed,
    but no record took it) is shredded like a revoked key."""
    conf = edit_conf(bao.conf, "template:aws_kms", "key_type", "ec", out=tmp_path / "pool.conf")
    edit_conf(conf, "template:aws_kms", "key_bits", "256")
    edit_conf(conf, "template:aws_kms", "pool_size", "3")
    store = bao.dir / "store"
    assert cmk("pool", "fill", conf=conf).returncode == 0
    before = pool_blobs(store, "ec-256")
    assert len(before) == 3
    for _, blob in before.values():
        assert copies(store, blob), "the scan cannot find a pool key that is there"
    for tenant in ("acme", "globex"):
        r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none", conf=conf)
        assert r.returncode == 0, r.stderr
    # Taken: zeroed in its slot, but the log still holds what the slot held until the next shred.
    taken = [blob for i, (_, blob) in before.items() if i not in pool_blobs(store, "ec-256")]
    assert len(taken) == 2 and all(copies(store, b) for b in taken)
    assert all(in_key_slots(copies(store, b)) == 0 for b in taken)
    # The connection drops while the third key's request is out: it may have been signed, so it is discarded.
    bao.control("faults", {"drop": 10, "path": "pki_client_certs/sign"})
    r = cmk("keystore", "add", "--tenant", "initech", "--type", "aws_kms", "--verify", "none", conf=conf)
    assert r.returncode == 3, r.stderr
    bao.control("reset", {})
    assert pool_blobs(store, "ec-256") == {}
    r = cmk("--json", "pool", "status", conf=conf)
    p = [x for x in json.loads(r.stdout)["pools"] if x["pool"] == "ec-256"][0]
    assert (p["used"], p["discarded"], p["free"]) == (2, 1, 0), p
    # Revoking acme destroys its key and shreds: every pool copy of a used or discarded key is gone.
    assert cmk("revoke", "--tenant", "acme", "--type", "aws_kms", conf=conf).returncode == 0
    left = {i: copies(store, blob) for i, (_, blob) in before.items() if copies(store, blob)}
    assert not left, left
    assert in_key_slots(copies(store, blobs(store, "globex", "aws_kms").popitem()[1])) == 1
    assert cmk("verify", conf=conf).returncode == 0
