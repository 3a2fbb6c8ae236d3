"""verify = kmip: the connection test is a TLS handshake with the client
pair plus a KMIP DiscoverVersions round trip against a real KMIP server
(PyKMIP) that requires client certificates, so a keystore that accepts the
TLS connection but refuses the client at the protocol level is caught."""

import json
import os
import signal
import subprocess

import pytest

from conftest import ROOT, free_port, make_ca, make_server_cert, wait_port

LAUNCHER = ROOT / "tests" / "unit" / "kmip_server.py"


class KmipKeystore:
    def __init__(self, d, trust, mode="kmip"):
        d.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(d, "kmip-server-ca")
        self.server_ca = self.ca[0]
        cert, key = make_server_cert(d, self.ca, "kmip")
        self.port = free_port()
        self.endpoint = "127.0.0.1:%d" % self.port
        self.log = open(d / "launcher.log", "w")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(LAUNCHER), mode, "--port", str(self.port), "--cert", str(cert), "--key",
             str(key), "--ca", str(trust), "--dir", str(d)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, timeout=30, proc=self.proc)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


@pytest.fixture
def kmip_server(bao, tmp_path):
    k = KmipKeystore(tmp_path / "kmip", bao.dir / "pki-ca-chain.pem")
    yield k
    k.stop()


def add(cmk, ks, tenant):
    return cmk("--json", "keystore", "add", "--tenant", tenant, "--type", "thales_luna_hsm", "--endpoint",
               ks.endpoint, "--server-ca", ks.server_ca, "--verify", "kmip")


def test_kmip_server_accepts_the_new_certificate(bao, cmk, kmip_server):
    r = add(cmk, kmip_server, "kmip-tenant")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "active"
    assert [s["detail"] for s in doc["steps"] if s["step"] == "test"] == ["keystore accepted"]


def test_kmip_server_of_another_ca_refuses(bao, cmk, tmp_path):
    other, _ = make_ca(tmp_path, "unrelated")
    ks = KmipKeystore(tmp_path / "kmip2", other)
    try:
        r = add(cmk, ks, "t")
        assert r.returncode == 1
        assert "refused" in r.stderr
        assert json.loads(cmk("list", "--json", "--status", "active").stdout) == []
    finally:
        ks.stop()


@pytest.mark.parametrize("mode", ["close", "echo"])
def test_tls_ok_but_no_kmip_is_refused(bao, cmk, tmp_path, mode):
    # "close": handshake accepted, then the connection is dropped; "echo": not a KMIP server at all.
    ks = KmipKeystore(tmp_path / mode, bao.dir / "pki-ca-chain.pem", mode=mode)
    try:
        r = add(cmk, ks, "t-" + mode)
        assert r.returncode == 1, r.stderr
        assert json.loads(r.stdout)["status"] == "failed"
        assert json.loads(cmk("list", "--json", "--status", "active").stdout) == []
    finally:
        ks.stop()
