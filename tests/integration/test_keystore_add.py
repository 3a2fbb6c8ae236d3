"""Story 2: `cmkcert keystore add` issues (or signs) a tenant's certificate
from the template, seals the key, tests the mTLS connection against a real
keystore server, and only then activates it."""

import json
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import edit_conf

TEMPLATES = {
    "thales_luna": ("tenant-{t}-thales.keystore.internal", rsa.RSAPublicKey, 4096),
    # RSA-3072 as shipped: OpenKCM's keystore plugins load RSA keys only.
    "aws_kms": ("tenant-{t}-aws.keystore.internal", rsa.RSAPublicKey, 3072),
}


def show(cmk, tenant, ktype, conf=None):
    r = cmk("show", "--json", "--pem", "--tenant", tenant, "--type", ktype, conf=conf)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def openssl_verify(tmp_path, cert_pem, chain_pem):
    certs = [c + "-----END CERTIFICATE-----\n" for c in chain_pem.split("-----END CERTIFICATE-----") if c.strip()]
    (tmp_path / "leaf.pem").write_text(cert_pem + "\n")
    (tmp_path / "root.pem").write_text(certs[-1].strip() + "\n")
    (tmp_path / "inter.pem").write_text("".join(c.strip() + "\n" for c in certs[:-1]))
    return subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                           str(tmp_path / "inter.pem"), "-purpose", "sslclient", str(tmp_path / "leaf.pem")],
                          capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["sign", "issue"])
@pytest.mark.parametrize("ktype", ["aws_kms", "thales_luna"])
def test_add_activates_after_mtls_test(bao, cmk, keystore, tmp_path, mode, ktype):
    conf = edit_conf(bao.conf, "openbao", "mode", mode, out=tmp_path / "c.conf")
    tenant = "acme-corp-12345"
    r = cmk("--json", "keystore", "add", "--tenant", tenant, "--type", ktype, "--endpoint", keystore.endpoint,
            "--server-ca", keystore.server_ca, conf=conf)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["ok"] and res["status"] == "active"
    assert [s["step"] for s in res["steps"]] == ["validate", mode, "store", "test", "activate"]

    rec = show(cmk, tenant, ktype, conf=conf)
    assert rec["status"] == "active" and rec["serial_number"] == res["serial_number"]
    assert rec["renew_at"] is not None and rec["activated_at"] is not None
    assert "certificate" in rec and "PRIVATE KEY" not in r.stdout + json.dumps(rec)

    v = openssl_verify(tmp_path, rec["certificate"], rec["ca_chain"])
    assert v.returncode == 0, v.stdout + v.stderr

    cn_pattern, key_class, bits = TEMPLATES[ktype]
    cert = x509.load_pem_x509_certificate(rec["certificate"].encode())
    cn = cn_pattern.format(t=tenant)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert cn in sans and "tenant-%s.internal" % tenant in sans
    assert isinstance(cert.public_key(), key_class) and cert.public_key().key_size == bits
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert ":".join("%02x" % b for b in cert.serial_number.to_bytes(20, "big").lstrip(b"\0")) == rec["serial_number"]

    # The keystore saw a handshake with this very certificate, so the key matched it.
    a = cmk("audit", "verify", conf=conf)
    assert a.returncode == 0, a.stderr
    events = [json.loads(l) for l in open(bao.dir / "audit.log")]
    assert [e["event"] for e in events if e.get("serial") == rec["serial_number"]] == \
        ["credentialCreate", "credentialActivate"]
    assert all(e["outcome"] == "success" for e in events)


def test_add_from_use_case_json(bao, cmk, keystore, tmp_path):
    req = {"tenant_id": "acme-corp-12345",
           "keystore_config": {"type": "thales_luna_hsm", "connection_endpoints": [keystore.endpoint],
                               "authentication_method": "client_certificate", "certificate_required": True}}
    conf = edit_conf(bao.conf, "openbao", "mode", "issue", out=tmp_path / "c.conf")
    r = cmk("keystore", "add", "--json", "-", "--server-ca", keystore.server_ca, conf=conf, input=json.dumps(req))
    assert r.returncode == 0, r.stdout + r.stderr
    rec = show(cmk, "acme-corp-12345", "thales_luna", conf=conf)
    assert rec["type"] == "thales_luna" and rec["status"] == "active"
    assert rec["certificate_path"] == "/certs/acme-corp-12345-thales_luna.crt"
    assert rec["private_key_path"] == "/private/acme-corp-12345-thales_luna.key"
    assert rec["ca_chain_path"] == "/ca/thales_luna-ca-chain.pem"


def test_refused_by_keystore_leaves_nothing_active(bao, cmk, untrusting_keystore):
    r = cmk("--json", "keystore", "add", "--tenant", "t1", "--type", "aws_kms",
            "--endpoint", untrusting_keystore.endpoint, "--server-ca", untrusting_keystore.server_ca)
    assert r.returncode == 1
    assert "refused" in r.stderr and untrusting_keystore.endpoint in r.stderr
    assert json.loads(r.stdout)["status"] == "failed"
    active = json.loads(cmk("list", "--json", "--status", "active").stdout)
    assert active == []
    failed = json.loads(cmk("list", "--json", "--status", "failed").stdout)
    assert len(failed) == 1 and failed[0]["tenant_id"] == "t1" and failed[0]["last_error"]
    events = [json.loads(l) for l in open(bao.dir / "audit.log")]
    assert ("credentialActivate", "failure") in [(e["event"], e["outcome"]) for e in events]
    assert cmk("audit", "verify").returncode == 0


def test_keystore_server_certificate_is_verified(bao, cmk, keystore, tmp_path):
    from conftest import make_ca
    wrong, _ = make_ca(tmp_path, "wrong-server-ca")
    r = cmk("keystore", "add", "--tenant", "t2", "--type", "aws_kms", "--endpoint", keystore.endpoint,
            "--server-ca", wrong)
    assert r.returncode == 1
    assert "not trusted" in r.stderr
    assert json.loads(cmk("list", "--json", "--status", "active").stdout) == []


def test_second_add_of_same_keystore_is_refused(bao, cmk):
    assert cmk("keystore", "add", "--tenant", "t3", "--type", "aws_kms", "--verify", "none").returncode == 0
    before = open(bao.dir / "audit.log").read()
    r = cmk("keystore", "add", "--tenant", "t3", "--type", "aws_kms", "--verify", "none")
    assert r.returncode == 2 and "already has an active" in r.stderr
    assert open(bao.dir / "audit.log").read() == before


def test_tenant_that_makes_no_dns_name_is_bad_input(bao, cmk):
    # "~" is a valid tenant character but cannot appear in a certificate's DNS name.
    r = cmk("keystore", "add", "--tenant", "a~b", "--type", "aws_kms", "--verify", "none")
    assert r.returncode == 2
    assert "tenant_id" in r.stderr and "DNS name" in r.stderr
    assert json.loads(cmk("list", "--json").stdout) == []


@pytest.mark.parametrize("mode", ["sign", "issue"])
def test_role_policy_rejection_is_reported(bao, cmk, tmp_path, mode):
    conf = edit_conf(bao.conf, "template:aws_kms", "common_name", "{tenant_id}.elsewhere.example",
                     out=tmp_path / "c.conf")
    edit_conf(conf, "openbao", "mode", mode)
    r = cmk("keystore", "add", "--tenant", "t4", "--type", "aws_kms", "--verify", "none", conf=conf)
    assert r.returncode == 1, r.stderr
    assert "t4.elsewhere.example not allowed by this role" in r.stderr
    assert json.loads(cmk("list", "--json", conf=conf).stdout) == []
    events = [json.loads(l) for l in open(bao.dir / "audit.log")]
    assert events[-1]["event"] == "error" and events[-1]["outcome"] == "failure"
