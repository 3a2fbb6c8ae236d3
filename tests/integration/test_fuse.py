"""cmkcertfs: the store's active certificates as a read-only file tree
(DESIGN §7), read by real TLS clients against servers that demand a client
certificate, with per-tenant ownership, audited key reads, snapshots per open
file, and changes that show without a remount."""

import ctypes
import datetime
import errno
import json
import mmap
import os
import resource
import signal
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from conftest import PYTHON, edit_conf
from fusefix import Mounts, mounted, serving_pids

TENANTS = [("acme-corp-12345", "aws_kms"), ("globex", "aws_kms"), ("initech", "thales_luna")]


@pytest.fixture
def fuse(bao):
    ms = Mounts(bao.conf)
    yield ms
    problems = ms.close()
    assert not problems, "\n".join(problems)


def add(cmk, tenant, ktype="aws_kms", conf=None):
    r = cmk("keystore", "add", "--tenant", tenant, "--type", ktype, "--verify", "none", conf=conf)
    assert r.returncode == 0, r.stdout + r.stderr


def active(cmk, conf=None):
    r = cmk("list", "--json", "--status", "active", conf=conf)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def show(cmk, tenant, ktype, conf=None):
    r = cmk("show", "--json", "--pem", "--tenant", tenant, "--type", ktype, conf=conf)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def nl(pem):
    return pem if pem.endswith("\n") else pem + "\n"


def wait_for(pred, timeout=2.0, step=0.02):
    """Poll until pred() is truthy; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def audit_events(bao):
    with open(bao.dir / "audit.log") as f:
        return [json.loads(line) for line in f]


def key_reads(bao, **match):
    return [e for e in audit_events(bao) if e["event"] == "privateKeyRead"
            and all(e.get(k) == v for k, v in match.items())]


def parse_time(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp())


def pubkey_der(obj):
    return obj.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def populate(cmk, bao, tmp_path):
    """Three tenants on two types; thales_luna issued by the server (issue mode) to keep it quick."""
    issue = edit_conf(bao.conf, "openbao", "mode", "issue", out=tmp_path / "issue.conf")
    for tenant, ktype in TENANTS:
        add(cmk, tenant, ktype, conf=issue if ktype == "thales_luna" else None)


# ---- what the tree shows -------------------------------------------------------


def test_tree_lists_exactly_the_active_certificates(bao, cmk, fuse, tmp_path):
    populate(cmk, bao, tmp_path)
    # A revoked one must not appear.
    add(cmk, "gone", "aws_kms")
    assert cmk("revoke", "--tenant", "gone", "--type", "aws_kms").returncode == 0
    m = fuse()
    recs = active(cmk)
    want = sorted("%s-%s" % (r["tenant_id"], r["type"]) for r in recs)
    assert want == sorted("%s-%s" % t for t in TENANTS)
    assert sorted(os.listdir(m.mnt)) == ["bundle", "ca", "certs", "private", "tls"]
    assert sorted(os.listdir(m / "certs")) == [w + ".crt" for w in want]
    assert sorted(os.listdir(m / "private")) == [w + ".key" for w in want]
    assert sorted(os.listdir(m / "bundle")) == [w + ".pem" for w in want]
    assert sorted(os.listdir(m / "ca")) == ["aws_kms-ca-chain.pem", "thales_luna-ca-chain.pem"]
    assert not (m / "certs" / "gone-aws_kms.crt").exists()
    # The paths the CLI reports are the paths in the mount.
    for r in recs:
        for k in ("certificate_path", "private_key_path", "ca_chain_path"):
            assert (m.mnt / r[k].lstrip("/")).is_file()


def test_contents_match_the_store_and_the_key_matches(bao, cmk, fuse, tmp_path):
    populate(cmk, bao, tmp_path)
    m = fuse()
    for tenant, ktype in TENANTS:
        rec = show(cmk, tenant, ktype)
        name = "%s-%s" % (tenant, ktype)
        crt = read(m / "certs" / (name + ".crt")).decode()
        key = read(m / "private" / (name + ".key"))
        chain = read(m / "ca" / (ktype + "-ca-chain.pem")).decode()
        bundle = read(m / "bundle" / (name + ".pem"))
        assert crt == nl(rec["certificate"])
        assert chain == nl(rec["ca_chain"])
        assert b"PRIVATE KEY" in key
        priv = serialization.load_pem_private_key(key, password=None)
        cert = x509.load_pem_x509_certificate(crt.encode())
        assert pubkey_der(priv) == pubkey_der(cert)
        assert cert.fingerprint(hashes.SHA256()).hex() == rec["fingerprint_sha256"]
        # One version's key, leaf and chain in one file, in that order.
        assert bundle == key + b"\n" + crt.encode() + chain.encode()
        # The chain really issued the leaf.
        v = subprocess.run(["openssl", "verify", "-partial_chain", "-CAfile", str(m / "ca" / (ktype + "-ca-chain.pem")),
                            str(m / "certs" / (name + ".crt"))], capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr


def test_stat_reports_exact_sizes_times_and_modes(bao, cmk, fuse, tmp_path):
    populate(cmk, bao, tmp_path)
    m = fuse()
    for d in ("certs", "private", "ca", "bundle"):
        st = os.stat(m / d)
        assert oct(st.st_mode & 0o7777) == "0o555" and st.st_uid == 0
        for f in os.listdir(m / d):
            p = m / d / f
            st = os.stat(p)
            assert st.st_size == len(read(p)), p
            assert st.st_nlink == 1 and st.st_uid == 0 and st.st_gid == 0
            want = {"certs": 0o444, "ca": 0o444, "private": 0o400, "bundle": 0o400}[d]
            assert st.st_mode & 0o7777 == want, p
    for tenant, ktype in TENANTS:
        rec = show(cmk, tenant, ktype)
        st = os.stat(m / "certs" / ("%s-%s.crt" % (tenant, ktype)))
        assert int(st.st_mtime) == parse_time(rec["activated_at"])


def test_ca_file_follows_the_latest_activation(bao, cmk, fuse, tmp_path):
    add(cmk, "first", "aws_kms")
    m = fuse()
    chain = read(m / "ca" / "aws_kms-ca-chain.pem")
    assert chain.decode() == nl(show(cmk, "first", "aws_kms")["ca_chain"])
    # A certificate of the same type from an unrelated CA, activated later, provides the chain now.
    other = edit_conf(bao.conf, "openbao", "pki_mount", "pki_other", out=tmp_path / "other.conf")
    add(cmk, "second", "aws_kms", conf=other)
    want = nl(show(cmk, "second", "aws_kms")["ca_chain"]).encode()
    assert want != chain
    assert wait_for(lambda: read(m / "ca" / "aws_kms-ca-chain.pem") == want)
    # ...and when it goes away, the chain of the one still active comes back.
    assert cmk("revoke", "--tenant", "second", "--type", "aws_kms", conf=other).returncode == 0
    assert wait_for(lambda: read(m / "ca" / "aws_kms-ca-chain.pem") == chain)


# ---- real clients against servers that require a client certificate --------------


def s_client(endpoint, server_ca, cert, key):
    return subprocess.run(["openssl", "s_client", "-connect", endpoint, "-CAfile", str(server_ca),
                           "-cert", str(cert), "-key", str(key), "-verify_return_error", "-ign_eof"],
                          input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=30)


def python_client(endpoint, server_ca, certfile, keyfile=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(server_ca))
    ctx.load_cert_chain(certfile=str(certfile), keyfile=str(keyfile) if keyfile else None)
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk


def test_openssl_curl_and_python_clients_use_the_mount(bao, cmk, fuse, keystore):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    crt, key = m / "certs" / "acme-aws_kms.crt", m / "private" / "acme-aws_kms.key"
    bundle = m / "bundle" / "acme-aws_kms.pem"

    r = s_client(keystore.endpoint, keystore.server_ca, crt, key)
    assert r.returncode == 0, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert b"200 ok" in r.stdout
    # s_server -www echoes the client certificate it accepted.
    assert b"CN=tenant-acme-aws.keystore.internal" in r.stdout.replace(b" = ", b"=")

    r = subprocess.run(["curl", "-sS", "--fail", "--cert", str(crt), "--key", str(key), "--cacert",
                        str(keystore.server_ca), "https://%s/" % keystore.endpoint],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b"s_server" in r.stdout

    out = python_client(keystore.endpoint, keystore.server_ca, crt, key)
    assert b"200 ok" in out
    # The bundle alone carries a matching key and certificate.
    out = python_client(keystore.endpoint, keystore.server_ca, bundle)
    assert b"200 ok" in out
    r = s_client(keystore.endpoint, keystore.server_ca, bundle, bundle)
    assert r.returncode == 0, r.stderr


def test_certificate_from_an_untrusted_ca_is_refused(bao, cmk, fuse, keystore, untrusting_keystore, tmp_path):
    add(cmk, "acme", "aws_kms")
    other = edit_conf(bao.conf, "openbao", "pki_mount", "pki_other", out=tmp_path / "other.conf")
    add(cmk, "rogue", "thales_luna", conf=edit_conf(other, "openbao", "mode", "issue", out=tmp_path / "o2.conf"))
    m = fuse()
    good = (m / "certs" / "acme-aws_kms.crt", m / "private" / "acme-aws_kms.key")
    rogue = (m / "certs" / "rogue-thales_luna.crt", m / "private" / "rogue-thales_luna.key")
    # The server trusts the PKI CA: a certificate from pki_other is refused...
    assert s_client(keystore.endpoint, keystore.server_ca, *rogue).returncode != 0
    with pytest.raises(ssl.SSLError):
        python_client(keystore.endpoint, keystore.server_ca, *rogue)
    r = subprocess.run(["curl", "-sS", "--fail", "--cert", str(rogue[0]), "--key", str(rogue[1]), "--cacert",
                        str(keystore.server_ca), "https://%s/" % keystore.endpoint], capture_output=True, timeout=30)
    assert r.returncode != 0
    # ...and a server trusting another CA refuses ours.
    assert s_client(untrusting_keystore.endpoint, untrusting_keystore.server_ca, *good).returncode != 0
    # The same good pair is accepted where it is trusted.
    assert s_client(keystore.endpoint, keystore.server_ca, *good).returncode == 0


# ---- who may read a key ---------------------------------------------------------


def as_uid(uid, *cmd):
    return subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", *cmd],
                          capture_output=True, timeout=30)


def test_tenant_owner_reads_its_key_and_no_other(bao, cmk, fuse, tmp_path):
    add(cmk, "alice", "aws_kms")
    add(cmk, "bob", "aws_kms")
    conf = tmp_path / "owners.conf"
    conf.write_text(bao.conf.read_text() + "\n[tenant:alice]\nowner = 1000\ngroup = 1000\n")
    conf.chmod(0o600)
    m = fuse(conf)
    for d, ext, mode in (("private", "key", 0o400), ("bundle", "pem", 0o400), ("certs", "crt", 0o444)):
        st = os.stat(m / d / ("alice-aws_kms." + ext))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, mode)
        st = os.stat(m / d / ("bob-aws_kms." + ext))
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert os.stat(m / "ca" / "aws_kms-ca-chain.pem").st_uid == 0

    own = as_uid(1000, "cat", str(m / "private" / "alice-aws_kms.key"))
    assert own.returncode == 0, own.stderr
    assert own.stdout == read(m / "private" / "alice-aws_kms.key")
    assert as_uid(1000, "cat", str(m / "bundle" / "alice-aws_kms.pem")).returncode == 0
    other = as_uid(1000, "cat", str(m / "private" / "bob-aws_kms.key"))
    assert other.returncode != 0 and b"Permission denied" in other.stderr and other.stdout == b""
    # Certificates stay readable by everyone.
    assert as_uid(1000, "cat", str(m / "certs" / "bob-aws_kms.crt")).returncode == 0

    bob = show(cmk, "bob", "aws_kms")
    alice = show(cmk, "alice", "aws_kms")
    assert wait_for(lambda: key_reads(bao, uid=1000, tenant="bob", outcome="denied"))
    denied = key_reads(bao, uid=1000, tenant="bob", outcome="denied")[0]
    assert denied["serial"] == bob["serial_number"] and denied["gid"] == 1000 and denied["pid"] > 0
    assert wait_for(lambda: len(key_reads(bao, uid=1000, tenant="alice", outcome="success")) == 2)
    ok = key_reads(bao, uid=1000, tenant="alice", outcome="success")[0]
    assert ok["serial"] == alice["serial_number"] and ok["fingerprint"] == alice["fingerprint_sha256"]
    assert ok["actor"] == "cmkcertfs" and ok["type"] == "aws_kms"
    assert not key_reads(bao, uid=1000, tenant="bob", outcome="success")
    assert cmk("audit", "verify").returncode == 0


def listing_as(uid, d, groups=None):
    """os.listdir(d) as `uid` (with only `groups` as supplementary groups)."""
    who = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    r = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), *who, PYTHON, "-c",
                        "import json, os, sys; print(json.dumps(sorted(os.listdir(sys.argv[1]))))", str(d)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_key_listings_show_a_caller_only_what_it_may_open(bao, cmk, fuse, tmp_path):
    add(cmk, "alice", "aws_kms")
    add(cmk, "bob", "aws_kms")
    conf = tmp_path / "owners.conf"
    conf.write_text(bao.conf.read_text() + "\n[tenant:alice]\nowner = 1000\ngroup = 1000\n")
    conf.chmod(0o600)
    m = fuse(conf)
    both = ["alice-aws_kms", "bob-aws_kms"]
    # Root first, then the tenant owner, then root again: no caller is shown another's listing.
    for _ in range(2):
        assert sorted(os.listdir(m / "private")) == [n + ".key" for n in both]
        assert sorted(os.listdir(m / "bundle")) == [n + ".pem" for n in both]
        assert listing_as(1000, m / "private") == ["alice-aws_kms.key"]
        assert listing_as(1000, m / "bundle") == ["alice-aws_kms.pem"]
        assert listing_as(2000, m / "private") == [] and listing_as(2000, m / "bundle") == []
    # Certificates and chains are listed to everyone.
    assert listing_as(2000, m / "certs") == [n + ".crt" for n in both]
    assert listing_as(2000, m / "ca") == ["aws_kms-ca-chain.pem"]
    # A name known already is still found (cmkcertfs(8)); opening it is refused as before.
    assert as_uid(1000, "test", "-e", str(m / "private" / "bob-aws_kms.key")).returncode == 0
    other = as_uid(1000, "cat", str(m / "private" / "bob-aws_kms.key"))
    assert other.returncode != 0 and b"Permission denied" in other.stderr


def test_supplementary_group_grants_group_read(bao, cmk, fuse, tmp_path):
    """The daemon's own check looks at supplementary groups too (fuse_req_getgroups)."""
    add(cmk, "alice", "aws_kms")
    conf = edit_conf(bao.conf, "fuse", "key_mode", "0440", out=tmp_path / "groups.conf")
    conf.write_text(conf.read_text() + "\n[tenant:alice]\nowner = 0\ngroup = 1234\n")
    conf.chmod(0o600)
    m = fuse(conf)
    key = m / "private" / "alice-aws_kms.key"
    st = os.stat(key)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 1234, 0o440)
    member = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--groups", "1234",
                             "cat", str(key)], capture_output=True, timeout=30)
    assert member.returncode == 0, member.stderr
    assert member.stdout == read(key)
    stranger = as_uid(1000, "cat", str(key))
    assert stranger.returncode != 0 and b"Permission denied" in stranger.stderr
    # The listing follows the same rule.
    assert listing_as(1000, m / "private", groups=[1234]) == ["alice-aws_kms.key"]
    assert listing_as(1000, m / "private") == []
    assert wait_for(lambda: key_reads(bao, uid=1000, outcome="success") and
                    key_reads(bao, uid=1000, outcome="denied"))


def test_every_key_read_is_audited_in_order(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    before = len(key_reads(bao))
    for _ in range(50):
        read(m / "private" / "acme-aws_kms.key")
        read(m / "bundle" / "acme-aws_kms.pem")
        read(m / "certs" / "acme-aws_kms.crt")      # not a key read
    assert wait_for(lambda: len(key_reads(bao)) - before == 100)
    details = [e["detail"] for e in key_reads(bao)[before:]]
    assert details == ["/private/acme-aws_kms.key", "/bundle/acme-aws_kms.pem"] * 50
    assert all(e["uid"] == 0 and e["pid"] > 0 for e in key_reads(bao))
    # Unmounting flushes the queue; the chain verifies.
    assert m.unmount() == 0
    assert cmk("audit", "verify").returncode == 0


# ---- read-only ------------------------------------------------------------------

SHELL_WRITES = [
    ("write", "echo x > {crt}"),
    ("append", "echo x >> {key}"),
    ("truncate", "truncate -s 0 {crt}"),
    ("create", "echo x > {mnt}/certs/new.crt"),
    ("mkdir", "mkdir {mnt}/certs/dir"),
    ("rm", "rm -f {crt}"),
    ("mv", "mv {crt} {mnt}/certs/renamed.crt"),
    ("ln", "ln {crt} {mnt}/certs/hard.crt"),
    ("ln -s", "ln -s {crt} {mnt}/certs/soft.crt"),
    ("chmod", "chmod 0666 {key}"),
    ("chown", "chown 1000 {key}"),
    ("touch", "touch {crt}"),
    ("rmdir", "rmdir {mnt}/ca"),
    ("rm tls.key", "rm -f {tlskey}"),
    ("rmdir tls dir", "rmdir {mnt}/tls/acme-aws_kms"),
    ("mv onto a name", "mv -f {mnt}/tls/acme-aws_kms/ca.crt {mnt}/tls/acme-aws_kms/tls.crt"),
]

PY_WRITES = [
    ("open O_WRONLY", lambda p: os.open(p["crt"], os.O_WRONLY)),
    ("open O_RDWR", lambda p: os.open(p["key"], os.O_RDWR)),
    ("open O_TRUNC", lambda p: os.open(p["crt"], os.O_RDONLY | os.O_TRUNC)),
    ("creat", lambda p: os.open(p["mnt"] + "/private/x.key", os.O_CREAT | os.O_WRONLY, 0o600)),
    ("mknod", lambda p: os.mknod(p["mnt"] + "/certs/fifo", 0o600 | 0o010000)),
    ("truncate", lambda p: os.truncate(p["crt"], 0)),
    ("utime", lambda p: os.utime(p["crt"], (0, 0))),
    ("setxattr", lambda p: os.setxattr(p["crt"], "user.test", b"1")),
    ("removexattr", lambda p: os.removexattr(p["crt"], "user.test")),
    ("rename", lambda p: os.rename(p["key"], p["mnt"] + "/private/y.key")),
    ("rename onto", lambda p: os.rename(p["crt"], p["mnt"] + "/certs/acme-aws_kms.crt.x")),
    ("unlink", lambda p: os.unlink(p["tlskey"])),
    ("rmdir", lambda p: os.rmdir(p["mnt"] + "/tls")),
]


@pytest.fixture(params=["kernel", "daemon"])
def ro_mount(request, bao, cmk, fuse):
    """The mount is read-only for the kernel; with "daemon", root first makes
    it writable for the kernel (as it is when cmkcertfs cannot change mount
    attributes), so every change reaches the daemon, which must refuse it."""
    add(cmk, "acme", "aws_kms")
    m = fuse()
    if request.param == "daemon":
        subprocess.run(["mount", "-o", "remount,bind,rw", str(m.mnt)], check=True)
        with open("/proc/self/mountinfo") as f:
            line = next(l for l in f if l.split()[4] == str(m.mnt))
        assert "rw" in line.split()[5].split(",")
    paths = {"mnt": str(m.mnt), "crt": str(m / "certs" / "acme-aws_kms.crt"),
             "key": str(m / "private" / "acme-aws_kms.key"),
             "tlskey": str(m / "tls" / "acme-aws_kms" / "tls.key")}
    return m, paths


def snapshot(mnt):
    out = {}
    for root, dirs, files in os.walk(mnt):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.stat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime,
                      read(p) if os.path.isfile(p) else None)
    return out


@pytest.mark.parametrize("name,cmd", SHELL_WRITES, ids=[n for n, _ in SHELL_WRITES])
def test_shell_writes_are_refused(ro_mount, name, cmd):
    m, paths = ro_mount
    before = snapshot(m.mnt)
    r = subprocess.run(["sh", "-c", cmd.format(**paths)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr, r.stderr
    assert snapshot(m.mnt) == before


@pytest.mark.parametrize("name,op", PY_WRITES, ids=[n for n, _ in PY_WRITES])
def test_system_call_writes_get_erofs(ro_mount, name, op):
    m, paths = ro_mount
    before = snapshot(m.mnt)
    with pytest.raises(OSError) as e:
        op(paths)
    assert e.value.errno == errno.EROFS
    assert snapshot(m.mnt) == before


# ---- snapshots and changes without a remount -----------------------------------------


def ec_conf(bao, tmp_path):
    """The aws_kms template with EC P-256 keys: its certificates and keys are shorter than the RSA-3072 ones."""
    conf = edit_conf(bao.conf, "template:aws_kms", "key_type", "ec", out=tmp_path / "ec.conf")
    return edit_conf(conf, "template:aws_kms", "key_bits", "256")


def read_rest(fd):
    rest = b""
    while True:
        chunk = os.read(fd, 7)
        if not chunk:
            return rest
        rest += chunk


def test_open_handle_keeps_its_version_new_opens_see_the_new_one(bao, cmk, fuse, tmp_path):
    # The old version is the longer one (RSA), so a reader cut short by the new size would show.
    add(cmk, "acme", "aws_kms")
    m = fuse()
    names = {"key": m / "private" / "acme-aws_kms.key", "bundle": m / "bundle" / "acme-aws_kms.pem",
             "crt": m / "certs" / "acme-aws_kms.crt"}
    old = {k: read(p) for k, p in names.items()}
    fds = {k: os.open(p, os.O_RDONLY) for k, p in names.items()}
    try:
        head = {k: os.read(fd, 16) for k, fd in fds.items()}
        r = cmk("renew", "--tenant", "acme", "--type", "aws_kms", conf=ec_conf(bao, tmp_path))
        assert r.returncode == 0, r.stderr
        # Wait for the change through a file that is not open here.
        probe = m / "private" / "acme-aws_kms.key"
        assert wait_for(lambda: read(probe) != old["key"])
        for k, fd in fds.items():
            assert head[k] + read_rest(fd) == old[k], k
    finally:
        for fd in fds.values():
            os.close(fd)
    new = {k: read(p) for k, p in names.items()}
    for k in names:
        assert len(new[k]) < len(old[k]), k
    rec = show(cmk, "acme", "aws_kms")
    assert new["crt"].decode() == nl(rec["certificate"])
    priv = serialization.load_pem_private_key(new["key"], password=None)
    assert pubkey_der(priv) == pubkey_der(x509.load_pem_x509_certificate(new["crt"]))
    assert new["bundle"] == new["key"] + b"\n" + new["crt"] + nl(rec["ca_chain"]).encode()
    # Once the old readers are gone the kernel's size settles on the new version (cmkcertfs(8), CACHING).
    assert wait_for(lambda: os.stat(names["crt"]).st_size == len(new["crt"]), timeout=1.0)


def test_cached_reader_of_an_old_version_never_cuts_short_a_new_reader(bao, cmk, fuse, tmp_path):
    """The kernel keeps one size per inode.  A cached reader of a shorter old
    version that reads past its end makes the kernel shrink that size; a
    reader of the newer, longer version must still get all of it."""
    add(cmk, "acme", "aws_kms", conf=ec_conf(bao, tmp_path))
    m = fuse()
    crt = m / "certs" / "acme-aws_kms.crt"
    old = read(crt)
    fd = os.open(crt, os.O_RDONLY)
    try:
        head = os.read(fd, 16)
        r = cmk("renew", "--tenant", "acme", "--type", "aws_kms")
        assert r.returncode == 0, r.stderr
        new = nl(show(cmk, "acme", "aws_kms")["certificate"]).encode()
        assert len(new) > len(old)
        # The kernel learns the new, longer size; then the old reader reads past its own end.
        assert wait_for(lambda: os.stat(crt).st_size == len(new))
        assert head + os.read(fd, 1 << 16) == old
        assert os.read(fd, 1 << 16) == b""
    finally:
        os.close(fd)
    # Right after the old reader is gone, and a moment later: other processes read all of the new one.
    # (This process itself may get the old version for a moment more: its open left a certificate
    # without its key, which could be half a load - see the load pins in cmkcertfs(8).)
    cat = lambda: subprocess.run(["cat", str(crt)], capture_output=True, check=True).stdout
    assert cat() == new
    time.sleep(0.5)
    assert cat() == new and cat() == new
    assert os.stat(crt).st_size == len(new)


def test_new_and_removed_certificates_show_without_remount(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    crt = m / "certs" / "late-aws_kms.crt"
    # A lookup that fails now leaves a negative entry in the kernel; it must not hide the new file.
    assert not crt.exists()
    assert subprocess.run(["cat", str(crt)], capture_output=True).returncode != 0
    add(cmk, "late", "aws_kms")
    want = nl(show(cmk, "late", "aws_kms")["certificate"]).encode()
    assert wait_for(lambda: subprocess.run(["cat", str(crt)], capture_output=True).stdout == want)
    assert "late-aws_kms.crt" in os.listdir(m / "certs")
    assert (m / "private" / "late-aws_kms.key").is_file()
    ino = os.stat(crt).st_ino

    assert cmk("revoke", "--tenant", "late", "--type", "aws_kms").returncode == 0
    assert wait_for(lambda: not crt.exists())
    assert "late-aws_kms.crt" not in os.listdir(m / "certs")
    assert not (m / "private" / "late-aws_kms.key").exists()
    assert not (m / "bundle" / "late-aws_kms.pem").exists()
    # Re-added: same name, new content under a new inode number (a number never names two files).
    add(cmk, "late", "aws_kms")
    want = nl(show(cmk, "late", "aws_kms")["certificate"]).encode()
    assert wait_for(lambda: crt.exists() and read(crt) == want)
    assert os.stat(crt).st_ino != ino


def test_renewal_is_visible_to_cat_within_a_second(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    crt = m / "certs" / "acme-aws_kms.crt"
    old = read(crt)
    r = cmk("renew", "--tenant", "acme", "--type", "aws_kms")
    assert r.returncode == 0, r.stderr
    committed = time.monotonic()
    want = nl(show(cmk, "acme", "aws_kms")["certificate"]).encode()
    assert want != old
    assert wait_for(lambda: subprocess.run(["cat", str(crt)], capture_output=True).stdout == want, timeout=2.0)
    assert time.monotonic() - committed < 2.0
    st = os.stat(crt)
    assert st.st_size == len(want)


# ---- no plaintext key in the page cache -----------------------------------------------

class CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


class CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def cached_pages(path):
    """Pages of `path` in the page cache (cachestat(2), Linux 6.5+); None when unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, cs = CacheStatRange(0, 0), CacheStat()
        if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(cs), 0) != 0:
            return None
        return cs.nr_cache
    finally:
        os.close(fd)


def test_keys_bypass_the_page_cache(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    key, bundle, crt = m / "private" / "acme-aws_kms.key", m / "bundle" / "acme-aws_kms.pem", \
        m / "certs" / "acme-aws_kms.crt"
    chain = m / "ca" / "aws_kms-ca-chain.pem"
    for p in (key, bundle, crt, chain):
        read(p)
    # A shared mapping of a direct-I/O file is refused by the kernel.  Certificates use
    # direct I/O too: a process may be given an older version of one (pin.h).
    for p in (key, bundle, crt):
        with open(p, "rb") as f:
            with pytest.raises(OSError) as e:
                mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            assert e.value.errno == errno.ENODEV
    # CA chains are served through the page cache, and map fine.
    with open(chain, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert mm[:] == read(chain)
    n = cached_pages(key)
    assert n is not None, "cachestat(2) failed"
    assert n == 0 and cached_pages(bundle) == 0
    assert cached_pages(chain) > 0


# ---- life of the daemon -----------------------------------------------------------------


def test_mount_options_and_process_hardening(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    # Start it with core files allowed: the daemon itself must turn them off.
    old = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    try:
        m = fuse()
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, old)
    with open("/proc/self/mountinfo") as f:
        line = next(l for l in f if l.split()[4] == str(m.mnt))
    pre, post = line.split(" - ")
    fstype, source, super_opts = post.split()
    assert fstype == "fuse.cmkcert" and source == "cmkcertfs"
    # Read-only as mounted; the file system itself is not, so that the daemon can rename
    # through a private clone of the mount for inotify watchers (cmkcertfs(8), EVENTS).
    assert "ro" in pre.split()[5].split(",")
    opts = super_opts.split(",")
    assert "default_permissions" in opts and "allow_other" in opts
    limits = open("/proc/%d/limits" % m.proc.pid).read()
    core = next(l for l in limits.splitlines() if l.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_and_exits_zero(bao, cmk, fuse, sig):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    with open(m / "private" / "acme-aws_kms.key", "rb") as f:
        f.read()
    assert m.signal(sig) == 0
    assert not mounted(m.mnt)
    assert serving_pids(m.mnt) == []
    assert m.unexpected_stderr() == []


def test_fusermount_unmount_exits_zero(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    m = fuse()
    read(m / "bundle" / "acme-aws_kms.pem")
    assert m.unmount() == 0
    assert not mounted(m.mnt) and serving_pids(m.mnt) == []


def test_background_mode_waits_for_the_mount(bao, cmk, fuse):
    add(cmk, "acme", "aws_kms")
    root = fuse.root
    mnt = root / "bg"
    mnt.mkdir()
    from conftest import CMKCERTFS
    r = subprocess.run([str(CMKCERTFS), "-c", str(bao.conf), str(mnt)], capture_output=True, text=True, timeout=30)
    try:
        assert r.returncode == 0, r.stderr
        # The parent returns only once the mount serves.
        assert mounted(mnt)
        assert read(mnt / "certs" / "acme-aws_kms.crt").startswith(b"-----BEGIN CERTIFICATE-----")
        pids = serving_pids(mnt)
        assert len(pids) == 1
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    assert wait_for(lambda: serving_pids(mnt) == [], timeout=10)


def test_bad_configuration_fails_before_mounting(bao, fuse, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(bao.conf.read_text().replace("[store]", "[store]\nbogus = 1"))
    conf.chmod(0o600)
    from conftest import CMKCERTFS
    mnt = fuse.root / "bad"
    mnt.mkdir()
    for args in (["-f"], []):
        r = subprocess.run([str(CMKCERTFS), *args, "-c", str(conf), str(mnt)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1
        assert "bogus" in r.stderr
        assert not mounted(mnt)
