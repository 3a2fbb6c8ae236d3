"""Fixtures for the integration tests: the OpenBao test server, the cmkcert
CLI, and real TLS keystore servers (openssl s_server requiring a client
certificate)."""

import json
import os
import pathlib
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("CMKCERT_BUILD", ROOT / "build"))
CMKCERT = BUILD / "cmkcert"
CMKCERTFS = BUILD / "cmkcertfs"
# Test helper: gets itself killed inside a Berkeley DB call on a store (tests/helpers/die_inside_store.c).
DIE_INSIDE_STORE = BUILD / "tests" / "die_inside_store"
BAOSIM = ROOT / "tests" / "baosim" / "baosim.py"
PYTHON = "/usr/bin/python3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("port %d did not open" % port)


class Bao:
    """A running OpenBao test server (tests/baosim) in its own directory."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.dir / "baosim.log", "w")
        self.proc = subprocess.Popen(
            [PYTHON, str(BAOSIM), "--addr", "127.0.0.1:0", "--dir", str(self.dir)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        m = re.match(r"READY (https://127\.0\.0\.1:(\d+))", line)
        if not m:
            self.stop()
            raise RuntimeError("baosim did not start: %r" % line)
        self.url = m.group(1)
        self.port = int(m.group(2))
        self.conf = self.dir / "cmkcert.conf"
        self.ctx = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))

    def control(self, path, body=None):
        """POST (with a body) or GET a /_sim/ control path; returns the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/_sim/" + path.lstrip("/"), data=data,
                                     method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            text = r.read().decode()
            return json.loads(text) if text.strip() else None

    def api(self, method, path, body=None, token=None):
        """Call the OpenBao API as an operator (root token by default); returns (status, json)."""
        token = token or (self.dir / "root.token").read_text().strip()
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/v1/" + path.lstrip("/"), data=data, method=method,
                                     headers={"X-Vault-Token": token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text.strip() else None)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text.strip() else None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def edit_conf(path, section, key, value, out=None):
    """Rewrite one key of an INI file (adding it to the section if absent); value None removes it."""
    lines = pathlib.Path(path).read_text().splitlines()
    result, cur, done = [], None, False
    for line in lines:
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            if cur == section and not done and value is not None:
                result.append("%s = %s" % (key, value))
                done = True
            cur = s[1:-1]
        elif cur == section and re.match(r"%s\s*=" % re.escape(key), s):
            if value is not None:
                result.append("%s = %s" % (key, value))
            done = True
            continue
        result.append(line)
    if cur == section and not done and value is not None:
        result.append("%s = %s" % (key, value))
    target = pathlib.Path(out or path)
    target.write_text("\n".join(result) + "\n")
    return target


@pytest.fixture
def bao(tmp_path):
    b = Bao(tmp_path / "bao")
    yield b
    b.stop()


@pytest.fixture
def cmk(bao):
    """Run the cmkcert CLI with the test server's configuration (or conf=...)."""
    def run(*args, conf=None, input=None, env=None, timeout=300):
        cmd = [str(CMKCERT), "-c", str(conf or bao.conf)] + [str(a) for a in args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                              env=env)
    return run


def make_ca(d, name):
    """A self-signed CA made with the openssl CLI; returns (cert, key) paths."""
    key, cert = d / (name + ".key"), d / (name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=" + name,
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)
    return cert, key


def make_server_cert(d, ca, name="keystore"):
    """A server certificate for 127.0.0.1 / localhost signed by ca=(cert, key)."""
    key, csr, cert = d / (name + ".key"), d / (name + ".csr"), d / (name + ".crt")
    ext = d / (name + ".ext")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-days", "30", "-out", str(cert), "-extfile", str(ext)],
                   check=True, capture_output=True)
    return cert, key


class Keystore:
    """openssl s_server demanding a client certificate that chains to `trust`."""

    def __init__(self, d, trust, name="keystore"):
        d.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(d, name + "-ca")
        self.server_ca = self.ca[0]
        cert, key = make_server_cert(d, self.ca, name)
        self.port = free_port()
        self.endpoint = "127.0.0.1:%d" % self.port
        self.log = open(d / (name + ".log"), "w")
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", str(cert), "-key", str(key),
             "-CAfile", str(trust), "-Verify", "1", "-verify_return_error", "-www"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, proc=self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def keystore(bao, tmp_path):
    """A keystore that trusts the PKI CA of the test server."""
    k = Keystore(tmp_path / "ks", bao.dir / "pki-ca-chain.pem")
    yield k
    k.stop()


@pytest.fixture
def untrusting_keystore(tmp_path):
    """A keystore that trusts only an unrelated CA."""
    d = tmp_path / "ks-other"
    d.mkdir()
    other, _ = make_ca(d, "unrelated-client-ca")
    k = Keystore(d, other, name="untrusting")
    yield k
    k.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "systemd: needs systemd as the service manager; not part of make check "
                            "(make check-systemd runs it)")
