"""Real clients load a tenant's certificate and key from the mount while it
rotates (issue #8): Go's tls.LoadX509KeyPair and a Go client reloading both
files on every handshake from several goroutines, Go and Python loading a
bundle (each opens it twice per load), a Python process that read the key
alone before a rotation, and the Kubernetes TLS layout /tls/<tenant>-<type>/
used by Go and curl.

What must hold: no process ever gets a certificate and a key of different
versions, and a process that reloads continuously moves to the new version
within 10 s of a rotation.  The clients are programs of their own
(tests/clients, built by `make` into build/clients/); each runs in its own
process, as the mount tells processes apart."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "clients"))
from clientfix import (TYPE, Lines, TlsServers, add, client, figures, follow_rotations, names,  # noqa: E402
                       pyclient, renew, serial_of, wait_served)
from fusefix import Mounts  # noqa: E402

ROTATIONS = 30


@pytest.fixture
def mounts(bao):
    ms = Mounts(bao.conf)
    yield ms
    problems = ms.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def servers(bao, tmp_path):
    """servers(n): n s_server endpoints demanding a client certificate; by default they trust
    the PKI that issues the client certificates and have a server CA of their own."""
    made = []

    def make(n=1, trust=None, server=None):
        s = TlsServers(tmp_path / ("srv%d" % len(made)), trust or bao.dir / "pki-ca-chain.pem", n, server)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def show(cmk, tenant):
    r = cmk("show", "--json", "--pem", "--tenant", tenant, "--type", TYPE)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def spki(obj):
    return obj.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_go(m, crt, key, url, ca):
    r = subprocess.run([str(client("loader")), "-crt", str(m / crt), "-key", str(m / key), "-url", url,
                        "-ca", str(ca)], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout)


def report_switch(what, rots, switch, summary_line):
    seen = [s for s in switch if s is not None]
    print("%s: %d rotations; %s; first load of each new serial after the CLI returned: %s (%d of %d seen "
          "within 10 s)" % (what, len(rots), summary_line, figures(seen), len(seen), len(rots)))


# ---- Go: tls.LoadX509KeyPair on the mount paths, then an mTLS GET ---------------------------


def test_go_loader_authenticates_with_the_mount_files(bao, cmk, mounts, servers):
    add(cmk, "goload")
    m = mounts(args=("-n",))
    n = names("goload")
    srv = servers()
    rc, out = load_go(m, n["crt"], n["key"], srv.urls[0], srv.server_ca)
    before = show(cmk, "goload")["serial_number"]
    assert rc == 0 and out["ok"], out
    # The server saw the certificate the client loaded, which is the active one.
    assert out["serial"] == out["server_saw_serial"] == before, out

    rot = renew(bao.conf, "goload")
    wait_served(m / n["crt"], rot.serial)
    rc, out2 = load_go(m, n["crt"], n["key"], srv.urls[0], srv.server_ca)
    assert rc == 0 and out2["ok"], out2
    assert out2["serial"] == out2["server_saw_serial"] == rot.serial != before
    print("go loader: 2 loads, 1 rotation, 0 mismatches (%s, server saw %s then %s)"
          % (out["tls_version"], before, rot.serial))


# ---- Go: GetClientCertificate re-reading both files per handshake, 4 goroutines -------------


def run_reloader(bao, m, tenant, srv, mode_args, what, goroutines=4, max_mismatches=0, rotations=None,
                 bound=10.0):
    rotations = rotations or ROTATIONS
    rl = client("reloader")
    proc = Lines([rl, *mode_args, "-url", ",".join(srv.urls), "-ca", srv.server_ca, "-n", str(goroutines)],
                 name="reloader")
    try:
        first = proc.wait_for(lambda t, e: e.get("event") == "serial", 10)
        assert first is not None, "the reloader loaded nothing: %s" % (proc.snapshot(),)
        rots, switch = follow_rotations(bao.conf, tenant, proc, rotations, bound=bound)
        time.sleep(0.5)                      # loads on the newest version
    finally:
        rc, lines, err = proc.finish()
    summaries = [e for _, e in lines if e.get("event") == "summary"]
    assert rc == 0 and len(summaries) == 1, (rc, err)
    s = summaries[0]
    newest = rots[-1].serial
    report_switch(what, rots, switch,
                  "%d loads, %d mTLS handshakes, %d failures, %d mismatches, %d serials seen, goroutines ended "
                  "on the newest serial: %s" % (s["loads"], s["handshakes"], s["failures"], s["mismatches"],
                                                len(s["serials"]), s["last_serials"] == [newest] * goroutines))
    if s["errors"]:
        print("  errors: %s" % s["errors"])
    assert s["mismatches"] <= max_mismatches, s["errors"]
    assert s["failures"] == 0, s["errors"]
    assert len(rots) == rotations
    missed = [i for i, v in enumerate(switch) if v is None]
    assert not missed, "rotations whose new serial the reloader did not load within %g s: %s" % (bound, missed)
    assert s["handshakes"] >= rotations
    assert s["last_serials"] == [newest] * goroutines, "goroutines did not end on the newest serial %s" % newest


def test_go_reloader_four_goroutines_through_30_rotations(bao, cmk, mounts, servers):
    add(cmk, "gorel")
    m = mounts(args=("-n",))
    n = names("gorel")
    # One s_server per goroutine: s_server answers one connection at a time, and the point is
    # four handshakes (four loads) in flight at once.
    srv = servers(4)
    run_reloader(bao, m, "gorel", srv, ["-crt", m / n["crt"], "-key", m / n["key"]],
                 "go reloader (ReadFile crt, key; X509KeyPair; 4 goroutines)")


def test_go_reloader_bundle_twice_through_30_rotations(bao, cmk, mounts, servers):
    """One goroutine, loading the bundle with two opens per handshake (it may run on a
    different thread for each): loads in a row, every pair matches."""
    add(cmk, "gobun")
    m = mounts(args=("-n",))
    srv = servers(1)
    run_reloader(bao, m, "gobun", srv, ["-bundle", m / names("gobun")["bundle"]],
                 "go reloader (LoadX509KeyPair(bundle, bundle); 1 goroutine)", goroutines=1)


def test_go_reloader_bundle_twice_from_four_goroutines_stays_within_the_documented_limit(bao, cmk, mounts,
                                                                                     servers):
    """Four goroutines loading the bundle with two opens each, at once and without a pause:
    nothing tells one goroutine's second open from another's first (Go moves goroutines
    between threads), so this is the documented limit of cmkcertfs(8), MATCHING PAIRS: the
    process moves to a new version within the 10 s bound, and only the loads in flight when
    it moves (at most one per goroutine) can get a mismatched pair.  Use one open of the
    bundle, or the .crt and .key files, to be always safe."""
    add(cmk, "gobun4")
    m = mounts(args=("-n",))
    srv = servers(4)
    run_reloader(bao, m, "gobun4", srv, ["-bundle", m / names("gobun4")["bundle"]],
                 "go reloader (LoadX509KeyPair(bundle, bundle); 4 goroutines; documented limit)",
                 goroutines=4, max_mismatches=4 * 5, rotations=5,
                 # 10 s from the switch, which the daemon makes up to a poll interval after the CLI returns
                 bound=10.0 + 0.5)


# ---- Python ------------------------------------------------------------------------------------


def test_python_load_cert_chain_bundle_through_30_rotations(bao, cmk, mounts):
    add(cmk, "pybun")
    m = mounts(args=("-n",))
    proc = pyclient("bundle-loop", m / names("pybun")["bundle"])
    try:
        assert proc.wait_for(lambda t, e: e.get("event") == "serial", 10), proc.snapshot()
        rots, switch = follow_rotations(bao.conf, "pybun", proc, ROTATIONS)
        time.sleep(0.5)
    finally:
        rc, lines, err = proc.finish()
    summaries = [e for _, e in lines if e.get("event") == "summary"]
    assert rc == 0 and len(summaries) == 1, (rc, err)
    s = summaries[0]
    report_switch("python load_cert_chain(bundle), single thread", rots, switch,
                  "%d load_cert_chain loads (%d KEY_VALUES_MISMATCH, %d other failures), %d two-read loads "
                  "(%d public-key mismatches, %d failures), ended on the newest serial: %s"
                  % (s["ssl_loads"], s["ssl_mismatches"], s["ssl_failures"], s["read_loads"],
                     s["read_mismatches"], s["read_failures"], s["last_serial"] == rots[-1].serial))
    if s["errors"]:
        print("  errors: %s" % s["errors"])
    assert s["mismatches"] == 0, s["errors"]
    assert s["failures"] == 0, s["errors"]
    assert len(rots) == ROTATIONS
    assert all(v is not None for v in switch), "new serials not loaded within 10 s: %s" % switch
    assert s["last_serial"] == rots[-1].serial


def test_python_key_read_alone_then_pair_after_a_rotation(bao, cmk, mounts):
    """A process reads the key alone (say, to check it), a rotation lands, and within 5 s the
    same process loads certificate and key: it must get a matching pair.  Rounds alternate
    ssl's load_cert_chain(crt, key) and explicit reads compared with python3-cryptography."""
    add(cmk, "pykey")
    m = mounts(args=("-n",))
    n = names("pykey")
    proc = pyclient("pairs", m / n["crt"], m / n["key"])
    rounds, results = 6, []
    try:
        for i in range(rounds):
            proc.clear()
            proc.send("key")
            got = proc.wait_for(lambda t, e: e.get("cmd") == "key", 10)
            assert got and "error" not in got[1], got
            t_key = got[1]["mono"]
            rot = renew(bao.conf, "pykey")
            wait_served(m / n["crt"], rot.serial)      # the mount serves the new version to others
            cmd = "pair-ssl" if i % 2 == 0 else "pair-read"
            proc.send(cmd)
            got = proc.wait_for(lambda t, e, c=cmd: e.get("cmd") == c, 10)
            assert got and "match" in got[1], got
            assert got[1]["mono"] - t_key < 5, "the pair load came %.1f s after the key read" % (
                got[1]["mono"] - t_key)
            results.append((cmd, got[1]))
        proc.send("quit")
    finally:
        proc.finish()
    bad = [(c, r) for c, r in results if not r["match"]]
    print("python key alone, rotation, then crt+key within 5 s: %d rounds, %d rotations, %d mismatches %s"
          % (rounds, rounds, len(bad), [r.get("error", r.get("serial")) for _, r in bad]))
    assert not bad


# ---- The Kubernetes TLS layout ------------------------------------------------------------------


def certs_in(pem):
    return x509.load_pem_x509_certificates(pem) if hasattr(x509, "load_pem_x509_certificates") else [
        x509.load_pem_x509_certificate(b"-----BEGIN CERTIFICATE-----" + part)
        for part in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]]


def test_tls_layout_has_the_same_versions_owners_modes_and_audit(bao, cmk, mounts, tmp_path):
    add(cmk, "alice")
    add(cmk, "bob")
    conf = tmp_path / "owners.conf"
    conf.write_text(bao.conf.read_text() + "\n[tenant:alice]\nowner = 1000\ngroup = 1000\n")
    conf.chmod(0o600)
    m = mounts(conf, args=("-n",))
    a, b = names("alice"), names("bob")
    assert (m / "tls").is_dir(), "no /tls directory in the mount"
    assert {"alice-aws_kms", "bob-aws_kms"} <= set(os.listdir(m / "tls"))
    assert sorted(os.listdir(m / a["tlsdir"])) == ["ca.crt", "tls.crt", "tls.key"]

    rec = show(cmk, "alice")
    tls_crt, tls_key, ca_crt = read(m / a["tls.crt"]), read(m / a["tls.key"]), read(m / a["ca.crt"])
    # tls.crt: the leaf, then the CA chain (as cert-manager writes it); ca.crt: the chain.
    leaf, chain = certs_in(rec["certificate"].encode()), certs_in(rec["ca_chain"].encode())
    assert certs_in(tls_crt) == leaf + chain
    assert certs_in(ca_crt) == chain == certs_in(read(m / a["ca"]))
    assert serial_of(tls_crt) == rec["serial_number"] == serial_of(read(m / a["crt"]))
    assert spki(serialization.load_pem_private_key(tls_key, None)) == spki(leaf[0])
    # Owners and modes are those of /certs and /private.
    for tenant in (a, b):
        for tls, plain in (("tls.crt", "crt"), ("tls.key", "key")):
            st, ref = os.stat(m / tenant[tls]), os.stat(m / tenant[plain])
            assert (st.st_uid, st.st_gid, st.st_mode) == (ref.st_uid, ref.st_gid, ref.st_mode), tenant[tls]
    # Access checks: alice's owner reads her tls.key, not bob's; tls.crt is readable by everyone.
    setpriv = ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "cat"]
    own = subprocess.run(setpriv + [str(m / a["tls.key"])], capture_output=True)
    assert own.returncode == 0 and own.stdout == tls_key, own.stderr
    other = subprocess.run(setpriv + [str(m / b["tls.key"])], capture_output=True)
    assert other.returncode != 0 and other.stdout == b"" and b"Permission denied" in other.stderr
    assert subprocess.run(setpriv + [str(m / b["tls.crt"])], capture_output=True).returncode == 0

    # Audit: every tls.key open is a privateKeyRead like a /private open.
    def key_reads(**match):
        with open(bao.dir / "audit.log") as f:
            evs = [json.loads(line) for line in f if line.strip()]
        return [e for e in evs if e["event"] == "privateKeyRead" and all(e.get(k) == v for k, v in match.items())]
    deadline = time.monotonic() + 5
    while not (key_reads(uid=1000, tenant="alice", outcome="success")
               and key_reads(uid=1000, tenant="bob", outcome="denied")):
        assert time.monotonic() < deadline, "tls.key reads are not in the audit trail"
        time.sleep(0.05)
    ok = key_reads(uid=1000, tenant="alice", outcome="success")[0]
    assert ok["serial"] == rec["serial_number"] and ok["type"] == TYPE

    # A rotation shows in tls.crt/tls.key as in /certs and /private.
    rot = renew(bao.conf, "alice")
    wait_served(m / a["crt"], rot.serial)
    wait_served(m / a["tls.crt"], rot.serial, timeout=1)
    # A load in this process (certificate, then key, as TLS libraries read them) is a matching pair.
    crt_now = read(m / a["tls.crt"])
    assert spki(serialization.load_pem_private_key(read(m / a["tls.key"]), None)) == spki(
        x509.load_pem_x509_certificate(crt_now))


def pki_server_cert(bao, d):
    """A server certificate for 127.0.0.1 from the same PKI mount that issues the client
    certificates (a role of its own, server_flag), so that ca.crt verifies the server too."""
    st, body = bao.api("POST", "pki_client_certs/roles/test-tls-server",
                       {"allowed_domains": ["localhost"], "allow_bare_domains": True, "allow_localhost": True,
                        "allow_ip_sans": True, "server_flag": True, "client_flag": False,
                        "key_type": "ec", "key_bits": 256})
    assert st == 200, body
    st, body = bao.api("POST", "pki_client_certs/issue/test-tls-server",
                       {"common_name": "localhost", "ip_sans": "127.0.0.1", "ttl": "1h"})
    assert st == 200, body
    cert, key = d / "tls-server.crt", d / "tls-server.key"
    cert.write_text(body["data"]["certificate"] + "\n")
    key.write_text(body["data"]["private_key"] + "\n")
    return cert, key


def test_tls_layout_with_go_and_curl(bao, cmk, mounts, servers, tmp_path):
    add(cmk, "kube")
    m = mounts(args=("-n",))
    n = names("kube")
    assert (m / n["tlsdir"]).is_dir(), "no %s in the mount" % n["tlsdir"]
    ca_crt = m / n["ca.crt"]
    # Both sides are verified, against ca.crt only, as a pod with a kubernetes.io/tls secret
    # does: s_server requires a client certificate chaining to ca.crt (-CAfile), and its own
    # certificate is issued by the same PKI, so curl and Go verify the server with ca.crt.
    cert, key = pki_server_cert(bao, tmp_path)
    srv = servers(1, trust=ca_crt, server=(cert, key, ca_crt))
    serial = show(cmk, "kube")["serial_number"]

    rc, out = load_go(m, n["tls.crt"], n["tls.key"], srv.urls[0], ca_crt)
    assert rc == 0 and out["ok"] and out["serial"] == out["server_saw_serial"] == serial, out

    r = subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", str(ca_crt),
                        "--cert", str(m / n["tls.crt"]), "--key", str(m / n["tls.key"]), srv.urls[0]],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # s_server's page ends with the client certificate it received.
    assert serial_of(r.stdout[r.stdout.rindex(b"-----BEGIN CERTIFICATE-----"):]) == serial
    # Without ca.crt curl does not trust the server: the check above was a real one.
    r2 = subprocess.run(["curl", "-sS", "--max-time", "20", "--cert", str(m / n["tls.crt"]),
                         "--key", str(m / n["tls.key"]), srv.urls[0]], capture_output=True, timeout=60)
    assert r2.returncode != 0
    print("tls layout: go loader and curl --cacert ca.crt authenticated with tls.crt/tls.key (serial %s)"
          % serial)
