"""The key pool: keys generated ahead of need are taken by `keystore add` and
renewals (the audit trail says so), refilled by hand and by the daemon, and
never used twice: no two certificates OpenBao ever issued carry the same
public key, no key left in the pool is one of theirs, and every key ever
generated is accounted for - also when CLI runs are killed at random moments
in the middle of taking one."""

import hashlib
import json
import pathlib
import random
import signal
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import CMKCERT, edit_conf
from fusefix import Mounts


def pool_conf(bao, tmp_path, name, key_type, bits, size):
    """aws_kms with its own key pool of `size` (the other template has none)."""
    conf = edit_conf(bao.conf, "template:aws_kms", "key_type", key_type, out=tmp_path / name)
    edit_conf(conf, "template:aws_kms", "key_bits", str(bits))
    edit_conf(conf, "template:aws_kms", "pool_size", str(size))
    edit_conf(conf, "renewal", "jitter", "0s")
    return conf


def status(cmk, conf, pool):
    r = cmk("--json", "pool", "status", "--keys", conf=conf)
    assert r.returncode == 0, r.stderr
    for p in json.loads(r.stdout)["pools"]:
        if p["pool"] == pool:
            # Every key ever generated is in exactly one place.
            assert p["generated"] == p["free"] + p["claimed"] + p["used"] + p["discarded"], p
            return p
    raise AssertionError("no pool %s" % pool)


def spki_sha256(pem):
    cert = x509.load_pem_x509_certificate(pem.encode())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def issued_public_keys(bao):
    """The public key of every certificate OpenBao issued, by serial."""
    st, body = bao.api("GET", "pki_client_certs/certs?list=true")
    assert st == 200, body
    keys = {}
    for serial in body["data"]["keys"]:
        st, c = bao.api("GET", "pki_client_certs/cert/" + serial)
        assert st == 200, c
        cert = x509.load_pem_x509_certificate(c["data"]["certificate"].encode())
        if cert.issuer == cert.subject:
            continue                       # the CA's own
        keys[serial] = spki_sha256(c["data"]["certificate"])
    return keys


def origins(bao):
    """Key origin of each issuance line of the audit trail, by serial."""
    out = {}
    for line in (bao.dir / "audit.log").read_text().splitlines():
        e = json.loads(line)
        if e["event"] in ("credentialCreate", "credentialRenew"):
            out[e["serial"]] = e.get("key_origin")
    return out


def test_pool_taken_then_refilled_never_reused(bao, cmk, tmp_path):
    conf = pool_conf(bao, tmp_path, "pool.conf", "rsa", 3072, 3)
    p = status(cmk, conf, "rsa-3072")
    assert (p["target"], p["free"], p["generated"]) == (3, 0, 0)
    r = cmk("pool", "fill", conf=conf)
    assert r.returncode == 0, r.stderr
    assert "rsa-3072   3 of 3 keys ready (3 added" in r.stdout
    # Only the pools the configuration asks for: thales_luna has no pool_size here.
    assert "rsa-4096" not in r.stdout
    filled = {k["public_key_sha256"] for k in status(cmk, conf, "rsa-3072")["keys"]}
    assert len(filled) == 3

    for tenant in ("acme", "globex"):
        r = cmk("--json", "keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none", conf=conf)
        assert r.returncode == 0, r.stderr
    r = cmk("--json", "renew", "--tenant", "acme", "--type", "aws_kms", conf=conf)
    assert r.returncode == 0, r.stderr
    p = status(cmk, conf, "rsa-3072")
    assert (p["free"], p["used"], p["discarded"]) == (0, 3, 0)
    # The pool is empty: the next add makes its key itself, and says so.
    r = cmk("--json", "keystore", "add", "--tenant", "initech", "--type", "aws_kms", "--verify", "none", conf=conf)
    assert r.returncode == 0, r.stderr
    issued = issued_public_keys(bao)
    origin = origins(bao)
    assert sorted(origin[s] for s in issued) == ["inline", "pool", "pool", "pool"]
    # Each pool key went into exactly one certificate.
    assert {issued[s] for s in issued if origin[s] == "pool"} == filled
    assert len(set(issued.values())) == len(issued) == 4
    # The key served is the pool key, whole: the certificate and the record's key match (verify).
    v = cmk("verify", conf=conf)
    assert v.returncode == 0, v.stdout + v.stderr

    # The daemon refills in the background, at nice 19, with keys no certificate has.
    ms = Mounts(conf)
    try:
        m = ms()
        deadline = time.monotonic() + 60
        while status(cmk, conf, "rsa-3072")["free"] < 3:
            assert time.monotonic() < deadline, "the daemon did not refill the pool"
            time.sleep(0.5)
        nice = {}
        for t in pathlib.Path("/proc/%d/task" % m.proc.pid).iterdir():
            fields = (t / "stat").read_text().rsplit(") ", 1)[1].split()
            nice[t.name] = int(fields[16])
        assert sorted(nice.values()).count(19) == 1, nice      # one thread, and only it, lowered
        assert "key pool refill: 1 pool(s), at nice 19" in m.stderr()
    finally:
        problems = ms.close()
    assert not problems, problems
    refilled = {k["public_key_sha256"] for k in status(cmk, conf, "rsa-3072")["keys"]}
    assert len(refilled) == 3 and not refilled & set(issued.values())
    assert cmk("audit", "verify", conf=conf).returncode == 0


def test_refused_requests_give_keys_back(bao, cmk, tmp_path):
    conf = pool_conf(bao, tmp_path, "pool.conf", "ec", 256, 2)
    assert cmk("pool", "fill", conf=conf).returncode == 0
    # OpenBao refuses the request (a role that does not exist): nothing was issued, the key goes back.
    bad = edit_conf(conf, "template:aws_kms", "role", "no-such-role", out=tmp_path / "bad.conf")
    r = cmk("keystore", "add", "--tenant", "acme", "--type", "aws_kms", "--verify", "none", conf=bad)
    assert r.returncode == 1, r.stderr
    p = status(cmk, conf, "ec-256")
    assert (p["free"], p["claimed"], p["used"], p["discarded"]) == (2, 0, 0, 0)
    # Issued, then refused by the keystore: the failed record keeps the key; it left the pool.
    r = cmk("keystore", "add", "--tenant", "acme", "--type", "aws_kms", "--endpoint", "127.0.0.1:1",
            "--verify", "tls", conf=conf)
    assert r.returncode == 1
    p = status(cmk, conf, "ec-256")
    assert (p["free"], p["claimed"], p["used"], p["discarded"]) == (1, 0, 1, 0)
    assert sorted(origins(bao).values()) == ["pool"]


def test_killed_runs_never_lose_or_reuse_a_key(bao, cmk, tmp_path):
    """CLI runs killed (SIGKILL) at random moments while they add and renew with pool keys."""
    # EC keys: the pool's bookkeeping is the same for every key type, and filling stays fast.
    conf = pool_conf(bao, tmp_path, "crash.conf", "ec", 256, 60)
    assert cmk("pool", "fill", conf=conf).returncode == 0
    rng = random.Random(20261207)
    tenants = []
    for i in range(40):
        if tenants and rng.random() < 0.5:
            args = ["renew", "--tenant", rng.choice(tenants), "--type", "aws_kms"]
        else:
            tenants.append("t%d" % i)
            args = ["keystore", "add", "--tenant", tenants[-1], "--type", "aws_kms", "--verify", "none"]
        p = subprocess.Popen([str(CMKCERT), "-c", str(conf)] + args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.12))
        p.send_signal(signal.SIGKILL)
        p.wait()
        if i % 8 == 7:
            # The next run finds what the dead ones held: interrupted records reset, claims discarded.
            v = cmk("verify", conf=conf)
            assert v.returncode == 0, v.stdout + v.stderr
    p = status(cmk, conf, "ec-256")
    assert p["claimed"] == 0, p              # nobody is running: every claim was settled
    issued = issued_public_keys(bao)
    assert len(set(issued.values())) == len(issued), "two certificates share a public key"
    left = {k["public_key_sha256"] for k in p["keys"]}
    assert not left & set(issued.values()), "a key still in the pool is in a certificate"
    # Every key that went into a record left the pool in the record's own transaction.
    records = json.loads(cmk("list", "--json", conf=conf).stdout)
    assert p["used"] <= len(records)
    print("issued %d, records %d, pool: %s" % (len(issued), len(records),
                                                {k: p[k] for k in ("free", "used", "discarded", "generated")}))
    assert cmk("audit", "verify", conf=conf).returncode == 0
