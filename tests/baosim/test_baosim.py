"""Tests for the baosim OpenBao test server: shapes, status codes and texts
checked against /work/shared/reference/openbao-api.md.

Run: /usr/bin/python3 -m pytest tests/baosim -q
"""

import base64
import http.client
import json
import os
import re
import select
import ssl
import stat
import subprocess
import time
import urllib.parse

import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
BAOSIM = os.path.join(HERE, "baosim.py")
PYTHON = "/usr/bin/python3"

MOUNT = "pki_client_certs"
ROLE = "openkcm-client-cert-role"
CN = "tenant-acme-thales.keystore.internal"
ALT = "tenant-acme.internal"
ENVELOPE_KEYS = ["request_id", "lease_id", "renewable", "lease_duration",
                 "data", "wrap_info", "warnings", "auth"]
AUTH_KEYS = ["client_token", "accessor", "policies", "token_policies",
             "metadata", "lease_duration", "renewable", "entity_id",
             "token_type", "orphan", "mfa_requirement", "num_uses"]
SERIAL_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2})*$")


# --------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------

class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def errors(self):
        return self.json["errors"]

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:300]!r}>"


class Sim:
    def __init__(self, url, directory, proc):
        self.url = url
        self.dir = directory
        self.proc = proc
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        self._conn = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name)) as fh:
            return fh.read()

    def connect(self):
        return http.client.HTTPSConnection(self.host, self.port,
                                           context=self.ctx, timeout=30)

    def request(self, method, path, body=None, token=None, headers=None,
                conn=None):
        """One request on the shared keep-alive connection (or `conn`)."""
        hdrs = dict(headers or {})
        if token:
            hdrs["X-Vault-Token"] = token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        own = conn is None
        if own:
            if self._conn is None:
                self._conn = self.connect()
            conn = self._conn
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except Exception:
            if own:
                self._conn.close()
                self._conn = None
            raise
        return Reply(resp.status, resp.headers, data)

    def control(self, method, path, body=None):
        reply = self.request(method, path, body if body is not None else {})
        assert reply.status == 200, reply
        return reply.json

    def root(self):
        return self.read("root.token")

    def login(self, role="cmk-api-server-role", jwt_file="sa.jwt"):
        reply = self.request("POST", "/v1/auth/kubernetes/login",
                             {"role": role, "jwt": self.read(jwt_file)})
        assert reply.status == 200, reply
        return reply.json["auth"]["client_token"]


def _read_ready(proc, timeout=15):
    deadline = time.time() + timeout
    line = b""
    while time.time() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    return line.decode().strip()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("baosim") / "state")
    with open(os.path.join(os.path.dirname(directory), "stderr.log"),
              "wb") as err:
        proc = subprocess.Popen(
            [PYTHON, BAOSIM, "--addr", "127.0.0.1:0", "--dir", directory],
            stdout=subprocess.PIPE, stderr=err)
    line = _read_ready(proc)
    assert re.fullmatch(r"READY https://127\.0\.0\.1:\d+", line), line
    s = Sim(line.split(" ", 1)[1], directory, proc)
    s.token = s.login()
    yield s
    proc.terminate()
    assert proc.wait(timeout=10) == 0


@pytest.fixture(autouse=True)
def clean(sim):
    yield
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/config", {"token_ttl": 3600,
                                         "token_max_ttl": 86400})


def issue(sim, body=None, role=ROLE, mount=MOUNT, token=None):
    payload = {"common_name": CN, "alt_names": ALT, "key_type": "ec",
               "key_bits": 256}
    payload.update(body or {})
    return sim.request("POST", f"/v1/{mount}/issue/{role}", payload,
                       token=token or sim.token)


def load_cert(pem):
    return x509.load_pem_x509_certificate(pem.encode())


def sans(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def openssl_verify(sim, tmp_path, leaf_pem):
    chain = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE"
                       r"-----", sim.read("pki-ca-chain.pem"), re.S)
    assert len(chain) == 2
    (tmp_path / "inter.pem").write_text(chain[0] + "\n")
    (tmp_path / "root.pem").write_text(chain[1] + "\n")
    (tmp_path / "leaf.pem").write_text(leaf_pem + "\n")
    out = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile",
         str(tmp_path / "root.pem"), "-untrusted", str(tmp_path / "inter.pem"),
         str(tmp_path / "leaf.pem")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith(": OK")


# --------------------------------------------------------------------------
# Startup files
# --------------------------------------------------------------------------

def test_files_written(sim):
    for name in ("role_id", "secret_id", "root.token", "master.key",
                 "sa.jwt", "tls-server.key"):
        mode = stat.S_IMODE(os.stat(sim.path(name)).st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert os.path.getsize(sim.path("master.key")) == 32
    assert re.fullmatch(r"s\.[A-Za-z0-9]{24}", sim.root())
    chain = [x509.load_pem_x509_certificate(b) for b in re.findall(
        rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n",
        sim.read("pki-ca-chain.pem").encode(), re.S)]
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=cmkcert test issuing CA", "CN=cmkcert test root"]
    tls_ca = load_cert(sim.read("ca.pem"))
    assert tls_ca.subject.rfc4514_string() == "CN=baosim TLS CA"
    conf = sim.read("cmkcert.conf")
    assert f"address = {sim.url}\n" in conf
    assert f"ca_cert = {sim.path('ca.pem')}\n" in conf
    assert f"jwt_path = {sim.path('sa.jwt')}\n" in conf
    assert f"master_key = {sim.path('master.key')}\n" in conf
    assert "mode = sign\nmax_retries = 2\n" not in conf  # comment between
    for line in ("timeout = 10s", "max_retries = 2", "[template:aws_kms]",
                 "common_name = tenant-{tenant_id}-thales.keystore.internal",
                 "aliases = thales_luna_hsm", "key_bits = 4096"):
        assert line + "\n" in conf
    claims = pyjwt.decode(sim.read("sa.jwt"),
                          options={"verify_signature": False})
    assert claims["sub"] == \
        "system:serviceaccount:openkcm-system:cmk-api-server"
    assert claims["kubernetes.io"]["serviceaccount"]["name"] == \
        "cmk-api-server"
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]


# --------------------------------------------------------------------------
# sys/health, seal-status, general conventions
# --------------------------------------------------------------------------

def test_health_active(sim):
    reply = sim.request("GET", "/v1/sys/health")
    assert reply.status == 200
    assert reply.body.endswith(b"}\n")
    assert list(reply.json) == [
        "initialized", "sealed", "standby", "replication_performance_mode",
        "replication_dr_mode", "server_time_utc", "version", "cluster_name",
        "cluster_id"]
    assert reply.json["version"] == "2.6.2"
    assert reply.headers["Cache-Control"] == "no-store"
    assert sim.request("HEAD", "/v1/sys/health").body == b""
    assert sim.request("GET", "/v1/sys/health?activecode=299").status == 299
    bad = sim.request("GET", "/v1/sys/health?standbyok=maybe")
    assert (bad.status, bad.json) == (400, {"errors": []})
    assert sim.request("POST", "/v1/sys/health").status == 405
    ns = sim.request("GET", "/v1/sys/health",
                     headers={"X-Vault-Namespace": "root"})
    assert (ns.status, ns.errors) == (400,
                                      ["operation unavailable in namespaces"])


def test_sealed(sim):
    assert sim.control("POST", "/_sim/seal", {"sealed": True}) == \
        {"sealed": True}
    health = sim.request("GET", "/v1/sys/health")
    assert health.status == 503
    assert health.json["sealed"] is True and health.json["standby"] is True
    assert "cluster_name" not in health.json
    assert sim.request("GET", "/v1/sys/health?sealedcode=200").status == 200
    status = sim.request("GET", "/v1/sys/seal-status")
    assert status.status == 200 and status.json["sealed"] is True
    for method, path in (("POST", f"/v1/{MOUNT}/issue/{ROLE}"),
                         ("POST", "/v1/auth/kubernetes/login"),
                         ("GET", f"/v1/{MOUNT}/ca/pem")):
        reply = sim.request(method, path, {}, token=sim.token)
        assert (reply.status, reply.errors) == (503, ["Vault is sealed"])
    sim.control("POST", "/_sim/seal", {"sealed": False})
    status = sim.request("GET", "/v1/sys/seal-status").json
    assert status["sealed"] is False and "cluster_id" in status
    assert sim.request("GET", "/v1/sys/health").status == 200


def test_general_conventions(sim):
    root = sim.root()
    assert sim.request("FOO", "/v1/sys/mounts").json == {"errors": []}
    assert sim.request("FOO", "/v1/sys/mounts").status == 405
    outside = sim.request("GET", "/nothing")
    assert (outside.status, outside.json) == (404, {"errors": []})
    unknown = sim.request("GET", "/v1/secret/data/x", token=root)
    assert (unknown.status, unknown.errors) == (
        404, ["1 error occurred:\n\t* unsupported path\n\n"])
    in_mount = sim.request("GET", f"/v1/{MOUNT}/nope", token=sim.token)
    assert in_mount.status == 404
    for token in (None, "s.notavalidtoken000000000"):
        reply = sim.request("POST", f"/v1/{MOUNT}/issue/{ROLE}", {},
                            token=token)
        assert (reply.status, reply.errors) == (403, ["permission denied"])
    bearer = sim.request("GET", "/v1/auth/token/lookup-self",
                         headers={"Authorization": f"Bearer {sim.token}"})
    assert bearer.status == 200
    ns = sim.request("GET", "/v1/auth/token/lookup-self", token=sim.token,
                     headers={"X-Vault-Namespace": "team-a"})
    assert (ns.status, ns.errors) == (404, ["namespace not found"])
    assert ns.headers["X-Vault-Namespace"] == "team-a"
    ok = sim.request("GET", "/v1/auth/token/lookup-self", token=sim.token,
                     headers={"X-Vault-Namespace": "root"})
    assert ok.status == 200
    bad_json = sim.request("POST", f"/v1/{MOUNT}/issue/{ROLE}", "{nope",
                           token=sim.token)
    assert bad_json.status == 400
    assert bad_json.errors[0].startswith("failed to parse JSON input: ")
    slash = sim.request("POST", f"/v1/{MOUNT}/roles/", {}, token=root)
    assert slash.errors == ["cannot write to a path ending in '/'"]


def test_unrecognized_parameters_and_weak_typing(sim):
    reply = issue(sim, {"frobnicate": 1, "zeta": "x", "ttl": "3600"})
    assert reply.status == 200, reply
    assert reply.json["warnings"] == [
        "Endpoint ignored these unrecognized parameters: [frobnicate zeta]"]
    data = reply.json["data"]
    assert data["expiration"] - data["not_before"] == 3600 + 30
    bad = issue(sim, {"ttl": "abc"})
    assert (bad.status, bad.errors) == (400, [
        'Field validation failed: error converting input for field "ttl": '
        'time: invalid duration "abc"'])
    ints = issue(sim, {"ttl": 7200, "key_bits": "384"})
    assert ints.status == 200
    assert ints.json["data"]["expiration"] - \
        ints.json["data"]["not_before"] == 7230


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------

def test_kubernetes_login_ok(sim):
    reply = sim.request("POST", "/v1/auth/kubernetes/login",
                        {"role": "cmk-api-server-role",
                         "jwt": sim.read("sa.jwt")})
    assert reply.status == 200
    body = reply.json
    assert list(body) == ENVELOPE_KEYS
    assert body["data"] is None and body["lease_id"] == ""
    auth = body["auth"]
    assert list(auth) == AUTH_KEYS
    assert re.fullmatch(r"s\.[A-Za-z0-9]{24}", auth["client_token"])
    assert auth["policies"] == ["cmk-pki", "default"]
    assert auth["lease_duration"] == 3600
    assert (auth["renewable"], auth["orphan"], auth["token_type"],
            auth["num_uses"], auth["mfa_requirement"]) == (
        True, True, "service", 0, None)
    assert list(auth["metadata"]) == [
        "role", "service_account_name", "service_account_namespace",
        "service_account_secret_name", "service_account_uid"]
    assert auth["metadata"]["service_account_namespace"] == "openkcm-system"
    assert auth["metadata"]["service_account_secret_name"] == ""


def _hs256_token(sim):
    claims = pyjwt.decode(sim.read("sa.jwt"),
                          options={"verify_signature": False})
    return pyjwt.encode(claims, "secret", algorithm="HS256")


@pytest.mark.parametrize("body,status,error", [
    ({"jwt": "x"}, 400, "missing role"),
    ({"role": "cmk-api-server-role"}, 400, "missing jwt"),
    ({"role": "nope", "jwt": "file:sa.jwt"}, 400, 'invalid role name "nope"'),
    ({"role": "cmk-api-server-role", "jwt": "not.a.jwt"}, 403,
     "permission denied"),
    ({"role": "cmk-api-server-role", "jwt": "file:sa-wrong-key.jwt"}, 403,
     "permission denied"),
    ({"role": "cmk-api-server-role", "jwt": "hs256"}, 403,
     "permission denied"),
    ({"role": "cmk-api-server-role", "jwt": "file:sa-expired.jwt"}, 403,
     "invalid expiration time (exp) claim: token is expired"),
    ({"role": "cmk-api-server-role", "jwt": "file:sa-wrong-account.jwt"},
     403, "service account name not authorized"),
    ({"role": "cmk-api-server-role", "jwt": "file:sa-wrong-namespace.jwt"},
     403, "namespace not authorized"),
])
def test_kubernetes_login_failures(sim, body, status, error):
    body = dict(body)
    if body.get("jwt", "").startswith("file:"):
        body["jwt"] = sim.read(body["jwt"][5:])
    elif body.get("jwt") == "hs256":
        body["jwt"] = _hs256_token(sim)
    reply = sim.request("POST", "/v1/auth/kubernetes/login", body)
    assert (reply.status, reply.json) == (status, {"errors": [error]})


def test_approle_login(sim):
    role_id, secret_id = sim.read("role_id"), sim.read("secret_id")
    reply = sim.request("POST", "/v1/auth/approle/login",
                        {"role_id": role_id, "secret_id": secret_id})
    assert reply.status == 200
    auth = reply.json["auth"]
    assert auth["metadata"] == {"role_name": "cmk-api-server"}
    assert auth["policies"] == ["cmk-pki", "default"]
    for body, error in (({"secret_id": secret_id}, "missing role_id"),
                        ({"role_id": role_id}, "missing secret_id"),
                        ({"role_id": role_id, "secret_id": "x"},
                         "invalid role or secret ID"),
                        ({"role_id": "x", "secret_id": secret_id},
                         "invalid role or secret ID")):
        bad = sim.request("POST", "/v1/auth/approle/login", body)
        assert (bad.status, bad.errors) == (400, [error])


def test_lookup_and_renew_self(sim):
    token = sim.login()
    data = sim.request("GET", "/v1/auth/token/lookup-self",
                       token=token).json["data"]
    for key in ("accessor", "creation_time", "creation_ttl", "display_name",
                "entity_id", "expire_time", "explicit_max_ttl", "id",
                "issue_time", "meta", "num_uses", "orphan", "path",
                "policies", "renewable", "ttl", "type"):
        assert key in data, key
    assert list(data) == sorted(data)
    assert data["id"] == token and data["type"] == "service"
    assert 3590 <= data["ttl"] <= 3600 and data["creation_ttl"] == 3600
    assert data["path"] == "auth/kubernetes/login"
    renew = sim.request("POST", "/v1/auth/token/renew-self",
                        {"increment": "48h"}, token=token)
    assert renew.status == 200
    assert renew.json["data"] is None
    [warning] = renew.json["warnings"]
    assert re.fullmatch(r'TTL of "48h" exceeded the effective max_ttl of '
                        r'"(24h|23h59m\d+s)"; TTL value is capped '
                        r'accordingly', warning), warning
    assert 86390 <= renew.json["auth"]["lease_duration"] <= 86400
    assert renew.json["auth"]["client_token"] == token
    plain = sim.request("POST", "/v1/auth/token/renew-self", {"increment": 60},
                        token=token)
    assert plain.json["warnings"] is None
    assert plain.json["auth"]["lease_duration"] == 60
    root = sim.root()
    root_data = sim.request("GET", "/v1/auth/token/lookup-self",
                            token=root).json["data"]
    assert root_data["expire_time"] is None and root_data["ttl"] == 0
    assert root_data["policies"] == ["root"] and "renewable" not in root_data
    refused = sim.request("POST", "/v1/auth/token/renew-self", {},
                          token=root)
    assert (refused.status, refused.errors) == (400,
                                                ["lease is not renewable"])


def test_tokens_expire(sim):
    sim.control("POST", "/_sim/config", {"token_ttl": 1})
    token = sim.login()
    assert sim.request("GET", "/v1/auth/token/lookup-self",
                       token=token).status == 200
    time.sleep(1.2)
    gone = sim.request("GET", "/v1/auth/token/lookup-self", token=token)
    assert (gone.status, gone.errors) == (403, ["permission denied"])
    sim.control("POST", "/_sim/config", {"token_ttl": 3600})
    token = sim.login()
    assert sim.control("POST", "/_sim/tokens/expire")["expired"] >= 1
    assert sim.request("POST", "/v1/auth/token/renew-self", {},
                       token=token).status == 403
    assert sim.request("GET", "/v1/auth/token/lookup-self",
                       token=sim.root()).status == 200
    sim.token = sim.login()


def test_readonly_policy(sim):
    token = sim.login(role="cmk-readonly-role")
    denied = issue(sim, token=token)
    assert (denied.status, denied.errors) == (
        403, ["1 error occurred:\n\t* permission denied\n\n"])
    assert sim.request("GET", f"/v1/{MOUNT}/roles/{ROLE}",
                       token=token).status == 200
    write = sim.request("POST", f"/v1/{MOUNT}/roles/x", {}, token=sim.token)
    assert write.status == 403


# --------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------

def _check_leaf(data, key_type):
    for key in ("certificate", "issuing_ca", "private_key"):
        assert not data[key].endswith("\n")
    assert all(not c.endswith("\n") for c in data["ca_chain"])
    assert isinstance(data["expiration"], int)
    assert isinstance(data["not_before"], int)
    assert SERIAL_RE.match(data["serial_number"])
    cert = load_cert(data["certificate"])
    assert data["serial_number"] == ":".join(
        f"{b:02x}" for b in cert.serial_number.to_bytes(
            (cert.serial_number.bit_length() + 7) // 8, "big"))
    assert cert.subject.rfc4514_string() == f"CN={CN}"
    assert sans(cert) == [CN, ALT]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert data["private_key_type"] == key_type
    key = serialization.load_pem_private_key(data["private_key"].encode(),
                                             None)
    assert key.public_key().public_numbers() == \
        cert.public_key().public_numbers()
    return cert


def test_issue_rsa4096(sim, tmp_path):
    reply = issue(sim, {"key_type": "rsa", "key_bits": 4096, "ttl": "8760h"})
    assert reply.status == 200, reply
    body = reply.json
    assert list(body) == ENVELOPE_KEYS and body["warnings"] is None
    data = body["data"]
    assert list(data) == ["ca_chain", "certificate", "expiration",
                          "issuing_ca", "not_before", "private_key",
                          "private_key_type", "serial_number"]
    cert = _check_leaf(data, "rsa")
    assert cert.public_key().key_size == 4096
    assert data["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    # NotAfter is fixed before the key is generated, NotBefore after it.
    assert 0 <= 8760 * 3600 + 30 - (data["expiration"] - data["not_before"]) \
        <= 20
    openssl_verify(sim, tmp_path, data["certificate"])


def test_issue_ec256_formats(sim, tmp_path):
    reply = issue(sim)
    assert reply.status == 200, reply
    data = reply.json["data"]
    cert = _check_leaf(data, "ec")
    assert cert.public_key().curve.name == "secp256r1"
    assert data["private_key"].startswith("-----BEGIN EC PRIVATE KEY-----")
    assert data["issuing_ca"] == data["ca_chain"][0]
    openssl_verify(sim, tmp_path, data["certificate"])
    der = issue(sim, {"format": "der", "private_key_format": "pkcs8"})
    dd = der.json["data"]
    x509.load_der_x509_certificate(base64.b64decode(dd["certificate"]))
    serialization.load_der_private_key(base64.b64decode(dd["private_key"]),
                                       None)
    bundle = issue(sim, {"format": "pem_bundle"}).json["data"]
    assert bundle["certificate"].startswith("-----BEGIN EC PRIVATE KEY")
    assert bundle["certificate"].count("BEGIN CERTIFICATE") == 3
    bad = issue(sim, {"format": "p12"})
    assert bad.errors == ['the "format" path parameter must be "pem", '
                          '"der", or "pem_bundle"']


def test_sign_csr(sim, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                       CN)]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.DNSName(ALT)]), critical=False)
           .sign(key, hashes.SHA256()))
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    reply = sim.request("POST", f"/v1/{MOUNT}/sign/{ROLE}",
                        {"csr": pem, "common_name": "ignored.example",
                         "alt_names": "also-ignored.example", "ttl": "4380h"},
                        token=sim.token)
    assert reply.status == 200, reply
    data = reply.json["data"]
    assert list(data) == ["ca_chain", "certificate", "expiration",
                          "issuing_ca", "not_before", "serial_number"]
    assert reply.json["warnings"] == [
        'the common_name field was provided but the role is set with '
        '"use_csr_common_name" set to true',
        'the alt_names field was provided but the role is set with '
        '"use_csr_sans" set to true']
    cert = load_cert(data["certificate"])
    assert cert.public_key().public_numbers() == \
        key.public_key().public_numbers()
    assert sans(cert) == [ALT, CN]       # CSR SANs first, then the CN
    openssl_verify(sim, tmp_path, data["certificate"])
    small = rsa.generate_private_key(65537, 1024)
    weak = (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        CN)]))
            .sign(small, hashes.SHA256()))
    refused = sim.request("POST", f"/v1/{MOUNT}/sign/{ROLE}", {
        "csr": weak.public_bytes(serialization.Encoding.PEM).decode()},
        token=sim.token)
    assert refused.errors == ["RSA keys < 2048 bits are unsafe and not "
                              "supported"]
    evil = (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        "evil.example")]))
            .sign(key, hashes.SHA256()))
    refused = sim.request("POST", f"/v1/{MOUNT}/sign/{ROLE}", {
        "csr": evil.public_bytes(serialization.Encoding.PEM).decode()},
        token=sim.token)
    assert refused.errors == ["common name evil.example not allowed by this "
                              "role"]
    empty = sim.request("POST", f"/v1/{MOUNT}/sign/{ROLE}", {},
                        token=sim.token)
    assert empty.errors == ['"csr" is empty']


def test_ttl_truncation(sim):
    reply = issue(sim, {"ttl": "8760h"}, role="openkcm-short-ttl")
    assert reply.status == 200, reply
    assert reply.json["warnings"] == [
        'TTL "8760h0m0s" is longer than permitted maxTTL "1h0m0s", so maxTTL '
        'is being used']
    data = reply.json["data"]
    assert data["expiration"] - data["not_before"] == 3600 + 30


def test_issue_validation_errors(sim):
    cases = [
        ({"common_name": "evil.example.org"},
         "common name evil.example.org not allowed by this role"),
        ({"alt_names": "tenant-acme.internal,evil.example.org"},
         "subject alternate name evil.example.org not allowed by this role"),
        ({"alt_names": ["a", "b"]},
         "Field validation failed: error converting input for field "
         "\"alt_names\": '' expected type 'string', got unconvertible type "
         "'[]interface {}'"),
        ({"key_type": None, "key_bits": None}, None),
        ({"ttl": "1h", "not_after": "2030-01-01T00:00:00Z"},
         "Either ttl or not_after should be provided. Both should not be "
         "provided in the same request."),
    ]
    for body, error in cases:
        payload = {"common_name": CN, "alt_names": ALT, "key_type": "ec"}
        payload.update(body)
        payload = {k: v for k, v in payload.items() if v is not None}
        reply = sim.request("POST", f"/v1/{MOUNT}/issue/{ROLE}", payload,
                            token=sim.token)
        if error is None:
            error = ('role key type "any" not allowed for issuing '
                     'certificates without providing key_type and/or '
                     'key_bits request parameters')
        assert (reply.status, reply.errors) == (400, [error]), body
    unknown = issue(sim, role="nope")
    assert (unknown.status, unknown.errors) == (400, ["unknown role: nope"])
    beyond = issue(sim, {"ttl": "87600h"})
    assert beyond.status == 400
    assert re.fullmatch(
        r"cannot satisfy request, as TTL would result in notAfter of "
        r"\S+Z that is beyond the expiration of the CA certificate at \S+Z",
        beyond.errors[0]), beyond.errors


def test_revoke_and_crl(sim):
    data = issue(sim).json["data"]
    serial = data["serial_number"]
    reply = sim.request("POST", f"/v1/{MOUNT}/revoke",
                        {"serial_number": serial}, token=sim.token)
    assert reply.status == 200, reply
    revoked = reply.json["data"]
    assert list(revoked) == ["revocation_time", "revocation_time_rfc3339",
                             "state"]
    assert revoked["state"] == "revoked"
    again = sim.request("POST", f"/v1/{MOUNT}/revoke",
                        {"serial_number": serial.upper().replace(":", "-")},
                        token=sim.token).json["data"]
    assert again == revoked
    crl = x509.load_der_x509_crl(sim.request("GET", f"/v1/{MOUNT}/crl").body)
    entry = crl.get_revoked_certificate_by_serial_number(
        load_cert(data["certificate"]).serial_number)
    assert entry is not None
    issuer = load_cert(data["issuing_ca"])
    assert crl.issuer == issuer.subject
    assert crl.is_signature_valid(issuer.public_key())
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
    rotated = sim.request("GET", f"/v1/{MOUNT}/crl/rotate", token=sim.token)
    assert rotated.json["data"] == {"success": True}
    crl2 = x509.load_der_x509_crl(sim.request("GET", f"/v1/{MOUNT}/crl").body)
    assert crl2.extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number > number.crl_number
    read = sim.request("GET", f"/v1/{MOUNT}/cert/{serial}").json["data"]
    assert read["revocation_time"] == revoked["revocation_time"]
    assert "issuer_id" in read
    listed = sim.request("LIST", f"/v1/{MOUNT}/certs/revoked",
                         token=sim.token).json["data"]["keys"]
    assert serial in listed
    both = sim.request("POST", f"/v1/{MOUNT}/revoke",
                       {"serial_number": serial, "certificate": "x"},
                       token=sim.token)
    assert both.errors == ["Must provide either the certificate or the "
                           "serial to revoke; not both."]
    neither = sim.request("POST", f"/v1/{MOUNT}/revoke", {}, token=sim.token)
    assert neither.errors == ["The serial number or certificate to revoke "
                              "must be provided."]


def test_revoke_expired(sim):
    data = issue(sim, {"ttl": "2s"}).json["data"]
    time.sleep(max(0.0, data["expiration"] - time.time() + 0.3))
    reply = sim.request("POST", f"/v1/{MOUNT}/revoke",
                        {"serial_number": data["serial_number"]},
                        token=sim.token)
    assert reply.status == 200
    assert reply.json["data"] is None
    assert reply.json["warnings"] == [
        f"certificate with serial {data['serial_number']} already expired; "
        f"refusing to add to CRL. Enable 'AllowExpiredCertRevocation' to "
        f"allow revoking expired certificates."]


def test_no_store_revocation(sim):
    data = issue(sim, role="openkcm-client-cert-nostore").json["data"]
    serial = data["serial_number"]
    assert sim.request("GET", f"/v1/{MOUNT}/cert/{serial}").status == 404
    by_serial = sim.request("POST", f"/v1/{MOUNT}/revoke",
                            {"serial_number": serial}, token=sim.token)
    assert (by_serial.status, by_serial.errors) == (
        400, [f"certificate with serial {serial} not found."])
    by_pem = sim.request("POST", f"/v1/{MOUNT}/revoke",
                         {"certificate": data["certificate"]},
                         token=sim.token)
    assert by_pem.status == 200 and by_pem.json["data"]["state"] == "revoked"
    other = issue(sim, mount="pki_other").json["data"]
    foreign = sim.request("POST", f"/v1/{MOUNT}/revoke",
                          {"certificate": other["certificate"]},
                          token=sim.token)
    assert foreign.status == 400
    assert foreign.errors[0].startswith("unable to verify signature")


def test_reads_and_lists(sim):
    root = sim.root()
    empty = sim.request("LIST", "/v1/pki_other/certs/revoked", token=root)
    assert (empty.status, empty.json) == (404, {"errors": []})
    roles = sim.request("GET", f"/v1/{MOUNT}/roles?list=true", token=root)
    assert roles.json["data"]["keys"] == [
        "openkcm-client-cert-nostore", ROLE, "openkcm-short-ttl"]
    role = sim.request("GET", f"/v1/{MOUNT}/roles/{ROLE}",
                       token=root).json["data"]
    assert list(role) == sorted(role) and len(role) == 52
    assert (role["max_ttl"], role["ttl"], role["not_before_duration"],
            role["key_type"], role["key_bits"]) == (315360000, 0, 30, "any", 0)
    assert role["allowed_domains"] == ["tenant-*.keystore.internal",
                                       "tenant-*.internal"]
    assert role["server_flag"] is False and role["client_flag"] is True
    missing = sim.request("GET", f"/v1/{MOUNT}/roles/nope", token=root)
    assert (missing.status, missing.json) == (404, {"errors": []})
    made = sim.request("POST", f"/v1/{MOUNT}/roles/extra",
                       {"allowed_domains": "example.com",
                        "allow_subdomains": True, "max_ttl": "72h"},
                       token=root)
    assert made.status == 200 and made.json["data"]["max_ttl"] == 259200
    assert made.json["data"]["key_bits"] == 2048
    assert sim.request("DELETE", f"/v1/{MOUNT}/roles/extra",
                       token=root).status == 204
    ca_pem = sim.request("GET", f"/v1/{MOUNT}/ca/pem")
    assert ca_pem.headers["Content-Type"] == \
        "application/pem-certificate-chain"
    assert not ca_pem.body.endswith(b"\n")
    ca_der = sim.request("GET", f"/v1/{MOUNT}/ca")
    assert load_cert(ca_pem.body.decode()) == \
        x509.load_der_x509_certificate(ca_der.body)
    chain = sim.request("GET", f"/v1/{MOUNT}/ca_chain").body.decode()
    assert chain.count("BEGIN CERTIFICATE") == 2
    jchain = sim.request("GET", f"/v1/{MOUNT}/cert/ca_chain").json["data"]
    assert jchain["certificate"] == jchain["ca_chain"] == chain
    crl_pem = sim.request("GET", f"/v1/{MOUNT}/crl/pem").body.decode()
    assert crl_pem.startswith("-----BEGIN X509 CRL-----")
    assert sim.request("GET", f"/v1/{MOUNT}/cert/crl").json["data"][
        "certificate"] == crl_pem
    config = sim.request("GET", f"/v1/{MOUNT}/config/crl",
                         token=root).json["data"]
    assert config == {"allow_expired_cert_revocation": False,
                      "auto_rebuild": False,
                      "auto_rebuild_grace_period": "12h",
                      "delta_rebuild_interval": "15m", "disable": False,
                      "enable_delta": False, "expiry": "72h",
                      "ocsp_disable": False, "ocsp_expiry": "12h"}
    data = issue(sim).json["data"]
    cert = sim.request("GET", f"/v1/{MOUNT}/cert/{data['serial_number']}")
    assert cert.json["data"] == {"certificate": data["certificate"],
                                 "revocation_time": 0,
                                 "revocation_time_rfc3339": ""}
    listed = sim.request("LIST", f"/v1/{MOUNT}/certs", token=sim.token)
    assert data["serial_number"] in listed.json["data"]["keys"]
    unknown = sim.request("GET", f"/v1/{MOUNT}/cert/00:11")
    assert (unknown.status, unknown.json) == (404, {"errors": []})


# --------------------------------------------------------------------------
# Fault injection and statistics
# --------------------------------------------------------------------------

def test_fault_status_and_retry_after(sim):
    path = f"/v1/{MOUNT}/roles/{ROLE}"
    sim.control("POST", "/_sim/faults", {"status": 500, "count": 2})
    for _ in range(2):
        reply = sim.request("GET", path, token=sim.token)
        assert (reply.status, reply.errors) == (
            500, ["1 error occurred:\n\t* internal error\n\n"])
    assert sim.request("GET", path, token=sim.token).status == 200
    sim.control("POST", "/_sim/faults",
                {"status": 429, "retry_after": 7, "path": f"{MOUNT}/issue"})
    assert sim.request("GET", path, token=sim.token).status == 200
    limited = issue(sim)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.errors == [f'request path "{MOUNT}/issue/{ROLE}": rate '
                              f'limit quota exceeded']
    assert issue(sim).status == 200
    sim.control("POST", "/_sim/faults", {"status": 503, "count": -1})
    for _ in range(3):
        assert sim.request("GET", "/v1/sys/health").errors == \
            ["Vault is sealed"]
    sim.request("DELETE", "/_sim/faults")
    assert sim.request("GET", "/v1/sys/health").status == 200


def test_fault_drop_and_latency(sim):
    sim.control("POST", "/_sim/faults", {"drop": 1})
    conn = sim.connect()
    with pytest.raises((http.client.HTTPException, ConnectionError,
                        ssl.SSLError, OSError)):
        sim.request("GET", "/v1/sys/health", conn=conn)
    conn.close()
    assert sim.request("GET", "/v1/sys/health", conn=sim.connect()).status \
        == 200
    sim.control("POST", "/_sim/faults", {"latency_ms": 300})
    started = time.monotonic()
    assert sim.request("GET", "/v1/sys/health").status == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    sim.request("GET", "/v1/sys/health")
    assert time.monotonic() - started < 0.3


def test_stats(sim):
    sim.control("POST", "/_sim/stats/reset")
    sim.login()
    sim.request("GET", "/v1/sys/health")
    sim.request("GET", "/v1/sys/health")
    sim.request("POST", "/v1/auth/kubernetes/login", {"role": "x", "jwt": "y"})
    stats = sim.control("GET", "/_sim/stats")
    assert stats["requests"] == 4
    assert stats["by_path"] == {"/v1/auth/kubernetes/login": 2,
                                "/v1/sys/health": 2}
    assert stats["logins"] == 1 and stats["login_failures"] == 1
    assert stats["by_status"] == {"200": 3, "400": 1}
