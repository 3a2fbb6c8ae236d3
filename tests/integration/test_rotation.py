"""Rotation that readers never notice (REQ-007): a process that read a
certificate gets the matching key even if a rotation landed in between, a
bundle is always a matching set, and readers hammering the mount through
100+ rotations see zero failed reads and zero mismatched pairs."""

import json
import multiprocessing
import os
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import CMKCERT, edit_conf
from fusefix import Mounts


@pytest.fixture
def mounts(bao):
    ms = Mounts(bao.conf)
    yield ms
    problems = ms.close()
    assert not problems, problems


def pub_of_cert(pem):
    return x509.load_pem_x509_certificate(pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pub_of_key(pem):
    return serialization.load_pem_private_key(pem, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def add(cmk, tenant):
    r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none")
    assert r.returncode == 0, r.stderr


def current_serial(cmk, tenant):
    return json.loads(cmk("show", "--json", "--tenant", tenant, "--type", "aws_kms").stdout)["serial_number"]


def serial_of(pem):
    n = x509.load_pem_x509_certificate(pem).serial_number
    return ":".join("%02x" % b for b in n.to_bytes(20, "big").lstrip(b"\0"))


def test_key_opened_after_a_rotation_matches_the_certificate_read_before(bao, cmk, mounts):
    add(cmk, "acme")
    m = mounts(args=("-n",))
    crt = read(m / "certs/acme-aws_kms.crt")
    mtime = os.stat(m / "certs/acme-aws_kms.crt").st_mtime
    time.sleep(1.1)                          # activation times are whole seconds
    assert cmk("renew", "--tenant", "acme", "--type", "aws_kms").returncode == 0
    new_serial = current_serial(cmk, "acme")
    # Another process sees the new version at once ...
    probe = ["/usr/bin/python3", "-c", "import sys; print(open(sys.argv[1]).read())", str(m / "certs/acme-aws_kms.crt")]
    deadline = time.monotonic() + 2
    while serial_of(subprocess.run(probe, capture_output=True).stdout) != new_serial:
        assert time.monotonic() < deadline, "the mount did not switch to the new version"
        time.sleep(0.05)
    # ... and its mtime moved, for watchers polling it ...
    assert os.stat(m / "certs/acme-aws_kms.crt").st_mtime > mtime
    # ... while this process, which read the old certificate, gets the old certificate's key.
    key = read(m / "private/acme-aws_kms.key")
    assert pub_of_key(key) == pub_of_cert(crt)
    # Reading the certificate again starts a new pair from the new version.
    crt2 = read(m / "certs/acme-aws_kms.crt")
    key2 = read(m / "private/acme-aws_kms.key")
    assert serial_of(crt2) == new_serial and pub_of_key(key2) == pub_of_cert(crt2)
    # Without a rotation in between, nothing changes: the pair is the current one.
    assert read(m / "certs/acme-aws_kms.crt") == crt2 and read(m / "private/acme-aws_kms.key") == key2


def reader(root, tenants, stop, out):
    reads = failures = mismatches = 0
    errors = []
    i = 0
    while not stop.is_set():
        t = tenants[i % len(tenants)]
        i += 1
        try:
            if i % 2:
                crt = read(os.path.join(root, "certs", t + "-aws_kms.crt"))
                key = read(os.path.join(root, "private", t + "-aws_kms.key"))
            else:
                bundle = read(os.path.join(root, "bundle", t + "-aws_kms.pem"))
                cut = bundle.index(b"-----BEGIN CERTIFICATE-----")
                key, crt = bundle[:cut], bundle[cut:]
            reads += 1
            if pub_of_key(key) != pub_of_cert(crt):
                mismatches += 1
        except Exception as e:
            failures += 1
            errors.append("%s %s: %s" % ("pair" if i % 2 else "bundle", type(e).__name__, str(e)[-40:]))
    out.put((reads, failures, mismatches, errors[:5]))


def test_readers_through_a_hundred_rotations(bao, cmk, mounts):
    # EC keys: a hundred RSA-3072 key generations would only make the test slower, not harder.
    edit_conf(bao.conf, "template:aws_kms", "key_type", "ec")
    edit_conf(bao.conf, "template:aws_kms", "key_bits", "256")
    tenants = ["r0", "r1"]
    for t in tenants:
        add(cmk, t)
    m = mounts(args=("-n",))
    stop, out = multiprocessing.Event(), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=reader, args=(str(m.mnt), tenants, stop, out)) for _ in range(4)]
    for p in procs:
        p.start()
    t0 = time.monotonic()
    for i in range(100):
        r = subprocess.run([str(CMKCERT), "-c", str(bao.conf), "renew", "--tenant", tenants[i % 2], "--type",
                            "aws_kms"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    elapsed = time.monotonic() - t0
    time.sleep(0.5)                      # reads across the last rotation
    stop.set()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    reads = sum(r[0] for r in results)
    failures = sum(r[1] for r in results)
    mismatches = sum(r[2] for r in results)
    rotating = json.loads(cmk("list", "--json", "--status", "rotating").stdout)
    print("100 rotations in %.1f s; %d reads by 4 readers, %d failed, %d mismatched" %
          (elapsed, reads, failures, mismatches))
    print([r[3] for r in results])
    assert len(rotating) == 100
    assert reads > 400 and failures == 0 and mismatches == 0


def test_file_watchers_get_an_event_on_rotation(bao, cmk, mounts):
    import ctypes
    import select
    import struct
    add(cmk, "watched")
    m = mounts(args=("-n",))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    try:
        watches = {}
        for rel in ("certs/watched-aws_kms.crt", "private/watched-aws_kms.key"):
            wd = libc.inotify_add_watch(fd, str(m / rel).encode(), 0x00000FFF)   # IN_ALL_EVENTS
            assert wd >= 0, ctypes.get_errno()
            watches[wd] = rel
        assert cmk("renew", "--tenant", "watched", "--type", "aws_kms").returncode == 0
        seen = set()
        deadline = time.monotonic() + 2
        while len(seen) < len(watches) and time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            buf = os.read(fd, 4096)
            i = 0
            while i < len(buf):
                wd, mask, _, n = struct.unpack_from("iIII", buf, i)
                if mask & 0x400:                                   # IN_DELETE_SELF: fsnotify's Remove
                    seen.add(watches[wd])
                i += 16 + n
        assert seen == set(watches.values())
    finally:
        os.close(fd)
    # The names are still there, with the new version.
    crt = read(m / "certs/watched-aws_kms.crt")
    assert serial_of(crt) == current_serial(cmk, "watched")
