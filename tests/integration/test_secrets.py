"""Plaintext private keys never reach the store, the audit trail, logs or
the CLI's output: not as PEM, not as base64, not as raw DER or key bytes."""

import base64
import json
import pathlib
import re
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import edit_conf


def key_fingerprints(pem):
    """Byte strings whose presence anywhere would mean the private key leaked.

    Only pieces made of private bytes count: the public half of a key is in
    its certificate, which is printed on purpose."""
    key = serialization.load_pem_private_key(pem.encode(), None)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    out = []
    if isinstance(key, ec.EllipticCurvePrivateKey):
        n = key.private_numbers().private_value
        out.append(n.to_bytes((n.bit_length() + 7) // 8, "big"))
    else:
        nums = key.private_numbers()
        for n in (nums.p, nums.q, nums.d):
            out.append(n.to_bytes((n.bit_length() + 7) // 8, "big")[:64])
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        b64 = base64.b64encode(der).decode()
        # Pieces of the PEM's 64-character lines, 24 bytes each, that hold no public-key bytes.
        for i in range(0, len(b64) - 32, 32):
            raw = der[i // 4 * 3:i // 4 * 3 + 24]
            if raw not in public:
                out.append(b64[i:i + 32].encode())
    return out


def files_under(*roots):
    for root in roots:
        root = pathlib.Path(root)
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("ktype", ["aws_kms", "thales_luna"])
def test_no_key_material_anywhere(bao, cmk, keystore, tmp_path, ktype):
    conf = edit_conf(bao.conf, "openbao", "mode", "issue", out=tmp_path / "c.conf")
    outputs = []
    for tenant in ("tenant-one", "tenant-two"):
        r = cmk("-v", "-v", "keystore", "add", "--tenant", tenant, "--type", ktype, "--endpoint", keystore.endpoint,
                "--server-ca", keystore.server_ca, conf=conf)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    for args in (("list", "--json"), ("show", "--json", "--pem", "--tenant", "tenant-one", "--type", ktype),
                 ("-v", "-v", "check"), ("-v", "-v", "renew", "--tenant", "tenant-two", "--type", ktype),
                 ("-v", "-v", "revoke", "--tenant", "tenant-one", "--type", ktype)):
        r = cmk(*args, conf=conf)
        assert r.returncode == 0, (args, r.stderr)
        outputs += [r.stdout, r.stderr]

    keys = bao.control("issued-keys")["keys"]
    assert len(keys) == 3            # two adds and one renewal, all made by OpenBao in issue mode
    needles = [n for k in keys for n in key_fingerprints(k)]
    haystacks = [("cli output %d" % i, o.encode()) for i, o in enumerate(outputs)]
    haystacks += [(str(p), p.read_bytes()) for p in files_under(bao.dir / "store", bao.dir / "audit.log")]
    assert any("store" in name for name, _ in haystacks)
    for name, data in haystacks:
        assert b"PRIVATE KEY" not in data, name
        for n in needles:
            assert n not in data, "key material found in %s" % name


def test_no_key_material_in_sign_mode_or_daemon_logs(bao, cmk, keystore, tmp_path):
    """Keys generated here (sign mode) are read back through the mount, then searched for
    in the store, the audit trail, the CLI's output and the daemon's log."""
    from fusefix import Mounts
    outputs = []
    for tenant, ktype in (("s-one", "aws_kms"), ("s-two", "thales_luna")):
        r = cmk("-v", "-v", "keystore", "add", "--tenant", tenant, "--type", ktype, "--endpoint", keystore.endpoint,
                "--server-ca", keystore.server_ca)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    ms = Mounts(bao.conf)
    try:
        m = ms(args=("-n", "-v"))
        keys = [(m / "private" / name).read_text() for name in ("s-one-aws_kms.key", "s-two-thales_luna.key")]
        r = cmk("-v", "-v", "renew", "--tenant", "s-one", "--type", "aws_kms")
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
        daemon_log = m.stderr()
    finally:
        assert not ms.close()
    needles = [n for k in keys for n in key_fingerprints(k)]
    haystacks = [("cli output %d" % i, o.encode()) for i, o in enumerate(outputs)]
    haystacks.append(("daemon log", daemon_log.encode()))
    haystacks += [(str(p), p.read_bytes()) for p in files_under(bao.dir / "store", bao.dir / "audit.log")]
    for name, data in haystacks:
        assert b"PRIVATE KEY" not in data, name
        for n in needles:
            assert n not in data, "key material found in %s" % name


def dumpable_memory(pid):
    """(name, bytes) of every readable mapping of a live process that a core dump would hold.

    Mappings marked MADV_DONTDUMP ("dd" in smaps: the locked buffers that hold
    keys on purpose) are left out; everything else - heaps, thread arenas,
    stacks - is what a memory scan or a core dump would find."""
    regions, cur = [], None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)", line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).strip() or "anonymous", []]
                regions.append(cur)
            elif line.startswith("VmFlags:"):
                cur[4] = line.split()[1:]
    with open("/proc/%d/mem" % pid, "rb", 0) as mem:
        for start, end, perms, name, flags in regions:
            if "r" not in perms or "dd" in flags or name in ("[vvar]", "[vsyscall]"):
                continue
            try:
                mem.seek(start)
                yield "%s at %#x" % (name, start), mem.read(end - start)
            except OSError:
                continue


def test_issue_mode_renewals_leave_no_key_in_daemon_memory(bao, cmk, tmp_path):
    """In issue mode the private key arrives inside OpenBao's JSON answer, through
    OpenSSL's record buffer, curl's receive buffer and our own.  After the daemon
    has renewed several times, no piece of any issued key may remain in memory
    that could be dumped or swapped."""
    from fusefix import Mounts
    conf = edit_conf(bao.conf, "openbao", "mode", "issue", out=tmp_path / "issue.conf")
    # A 9 s certificate (not_before 30 s in the past, as OpenBao backdates it) is due at once:
    # the daemon renews on every check.
    edit_conf(conf, "template:aws_kms", "ttl", "9s")
    for key, value in (("check_interval", "1s"), ("renew_before", "1h"), ("grace_period", "1h"),
                       ("jitter", "0s"), ("max_ops_per_minute", "600")):
        edit_conf(conf, "renewal", key, value)
    tenants = ("mem-one", "mem-two")
    for tenant in tenants:
        r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none", conf=conf)
        assert r.returncode == 0, r.stderr
    # Renewals refused once OpenBao is sealed are warnings the daemon is expected to log.
    ms = Mounts(conf, allowed=[r"cmkcertfs: warning: (renew |openbao: )"])
    try:
        m = ms()
        deadline = time.monotonic() + 120
        while len(bao.control("issued-keys")["keys"]) < 3 * len(tenants) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(bao.control("issued-keys")["keys"]) >= 3 * len(tenants), "the daemon did not renew"
        # Stop further issuance, then wait until every tenant's next renewal has failed: no renewal
        # is in flight any more, so nothing can legitimately hold a key at the moment of the scan.
        bao.control("seal", {"sealed": True})
        sealed_at = len(m.stderr())

        def all_failed_since_sealed():
            return all("warning: renew %s aws_kms" % t in m.stderr()[sealed_at:] for t in tenants)
        deadline = time.monotonic() + 60
        while not all_failed_since_sealed() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert all_failed_since_sealed(), m.stderr()
        keys = bao.control("issued-keys")["keys"]
        needles = [n for k in keys for n in key_fingerprints(k)]
        found = []
        for name, data in dumpable_memory(m.proc.pid):
            found += [(name, n) for n in needles if n in data]
        assert not found, "%d fragment(s) of issued keys in the daemon's memory: %s" % (len(found), found[:5])
    finally:
        problems = ms.close()
    assert not problems, problems
