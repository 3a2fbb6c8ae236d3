"""Bad input gets a clear error that names what is wrong, exit status 2, and
changes nothing: no record, no audit line."""

import json
import os
import re
import subprocess

import pytest

from conftest import CMKCERT, edit_conf


def snapshot(bao, cmk):
    audit = bao.dir / "audit.log"
    records = cmk("list", "--json")
    assert records.returncode == 0, records.stderr
    return (audit.read_bytes() if audit.exists() else b""), records.stdout


@pytest.fixture
def baseline(bao, cmk):
    """A store and audit trail with one certificate in them, to prove nothing else changes."""
    r = cmk("keystore", "add", "--tenant", "existing", "--type", "aws_kms", "--verify", "none")
    assert r.returncode == 0, r.stderr
    return snapshot(bao, cmk)


@pytest.mark.parametrize("tenant", ["", ".", "..", "a/b", "../etc", "x" * 41, "a\nb", "tenänt", "a b"])
def test_bad_tenant(bao, cmk, baseline, tenant):
    r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--endpoint", "127.0.0.1:9")
    assert r.returncode == 2, r.stderr
    assert "tenant_id" in r.stderr
    assert snapshot(bao, cmk) == baseline


@pytest.mark.parametrize("ktype", ["Thales-Luna", "hsm9000", "", "x" * 33])
def test_bad_type(bao, cmk, baseline, ktype):
    r = cmk("keystore", "add", "--tenant", "t", "--type", ktype, "--endpoint", "127.0.0.1:9")
    assert r.returncode == 2, r.stderr
    assert "type" in r.stderr
    assert snapshot(bao, cmk) == baseline


@pytest.mark.parametrize("endpoint", ["keystore.example.com", "host:0", "host:70000", "host:12a", ":443"])
def test_bad_endpoint(bao, cmk, baseline, endpoint):
    r = cmk("keystore", "add", "--tenant", "t", "--type", "aws_kms", "--endpoint", endpoint)
    assert r.returncode == 2, r.stderr
    assert endpoint in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_missing_endpoint_when_a_test_is_required(bao, cmk, baseline):
    r = cmk("keystore", "add", "--tenant", "t", "--type", "aws_kms")
    assert r.returncode == 2 and "endpoint" in r.stderr
    assert snapshot(bao, cmk) == baseline


@pytest.mark.parametrize("body,field", [
    ("{not json", "line 1"),
    ("[]", "object"),
    ('{"tenant_id": "t"}', "keystore_config"),
    ('{"keystore_config": {"type": "aws_kms", "connection_endpoints": []}}', "tenant_id"),
    ('{"tenant_id": "t", "keystore_config": {"connection_endpoints": ["h:1"]}}', "type"),
    ('{"tenant_id": "t", "keystore_config": {"type": "aws_kms"}}', "connection_endpoints"),
    ('{"tenant_id": "t", "keystore_config": {"type": "aws_kms", "connection_endpoints": [5]}}',
     "connection_endpoints[0]"),
    ('{"tenant_id": 7, "keystore_config": {"type": "aws_kms", "connection_endpoints": ["h:1"]}}', "tenant_id"),
    ('{"tenant_id": "t", "extra": 1, "keystore_config": {"type": "aws_kms", "connection_endpoints": ["h:1"]}}',
     "extra"),
    ('{"tenant_id": "t", "keystore_config": {"type": "aws_kms", "connection_endpoints": ["h:1"], '
     '"authentication_method": "password"}}', "authentication_method"),
    ('{"tenant_id": "../x", "keystore_config": {"type": "aws_kms", "connection_endpoints": ["h:1"]}}', "tenant_id"),
])
def test_bad_keystore_json(bao, cmk, baseline, body, field):
    r = cmk("keystore", "add", "--json", "-", input=body)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_missing_request_file(bao, cmk, baseline):
    r = cmk("keystore", "add", "--json", "/nonexistent/request.json")
    assert r.returncode == 2, r.stderr
    assert "/nonexistent/request.json" in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_missing_server_ca_file(bao, cmk, baseline):
    r = cmk("keystore", "add", "--tenant", "t", "--type", "aws_kms", "--endpoint", "127.0.0.1:9",
            "--server-ca", "/nonexistent/ca.pem")
    assert r.returncode == 2, r.stderr
    assert "/nonexistent/ca.pem" in r.stderr
    assert snapshot(bao, cmk) == baseline


@pytest.mark.parametrize("args", [("check",), ("list",), ("keystore", "add", "--tenant", "t", "--type", "aws_kms"),
                                  ("renew", "--due"), ("audit", "verify")])
def test_missing_configuration_file(bao, cmk, baseline, args):
    r = cmk(*args, conf="/nonexistent/cmkcert.conf")
    assert r.returncode == 2, r.stderr
    assert "/nonexistent/cmkcert.conf" in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_missing_configuration_file_from_the_environment(bao, baseline, cmk):
    env = dict(os.environ, CMKCERT_CONF="/nonexistent/env.conf")
    r = subprocess.run([str(CMKCERT), "list"], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    assert "/nonexistent/env.conf" in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_configuration_that_is_a_directory(bao, cmk, tmp_path):
    r = cmk("check", conf=tmp_path)
    assert r.returncode == 2, r.stderr
    assert str(tmp_path) in r.stderr


@pytest.mark.parametrize("command", [
    ("keystore", "add", "--tenant", "t", "--type", "aws_kms", "--verify", "none"),
    ("renew", "--tenant", "existing", "--type", "aws_kms"),
    ("revoke", "--tenant", "existing", "--type", "aws_kms"),
])
@pytest.mark.parametrize("method,key,missing", [
    (None, "ca_cert", "/nonexistent/openbao-ca.pem"),
    ("kubernetes", "jwt_path", "/nonexistent/token.jwt"),
    ("token", "token_path", "/nonexistent/root.token"),
])
def test_file_named_by_the_configuration_is_missing(bao, cmk, baseline, tmp_path, command, method, key, missing):
    """Refused before anything is recorded: no record changes, no audit line."""
    conf = edit_conf(bao.conf, "openbao" if method is None else "auth", key, missing, out=tmp_path / "c.conf")
    if method is not None:
        edit_conf(conf, "auth", "method", method)
    r = cmk(*command, conf=conf)
    assert r.returncode == 2, r.stderr
    assert key in r.stderr and missing in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_missing_audit_file_to_verify(cmk):
    r = cmk("audit", "verify", "/nonexistent/audit.log")
    assert r.returncode == 2, r.stderr
    assert "/nonexistent/audit.log" in r.stderr


def test_usage_errors(cmk):
    assert cmk("frobnicate").returncode == 2
    assert cmk("keystore", "add", "--tenant", "t").returncode == 2
    assert cmk("keystore", "add", "--tenant", "t", "--type", "aws_kms", "--verify", "maybe").returncode == 2
    assert cmk("list", "--status", "sleeping").returncode == 2


@pytest.mark.parametrize("section,key,value,expect", [
    ("openbao", "colour", "blue", "colour"),
    ("renewal", "renew_before", "30x", "renew_before"),
    ("keys", "master_key", "/nonexistent/master.key", "/nonexistent/master.key"),
    ("template:aws_kms", "key_bits", "255", "key_bits"),
])
def test_bad_config(bao, cmk, baseline, tmp_path, section, key, value, expect):
    conf = edit_conf(bao.conf, section, key, value, out=tmp_path / "bad.conf")
    r = cmk("keystore", "add", "--tenant", "t", "--type", "aws_kms", "--verify", "none", conf=conf)
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_master_key_readable_by_others_is_refused(bao, cmk, baseline, tmp_path):
    key = tmp_path / "master.key"
    key.write_bytes((bao.dir / "master.key").read_bytes())
    os.chmod(key, 0o644)
    conf = edit_conf(bao.conf, "keys", "master_key", str(key), out=tmp_path / "c.conf")
    r = cmk("keystore", "add", "--tenant", "t", "--type", "aws_kms", "--verify", "none", conf=conf)
    assert r.returncode == 2
    assert str(key) in r.stderr and "0644" in r.stderr
    assert snapshot(bao, cmk) == baseline


def test_unknown_key_names_file_and_line(bao, cmk, tmp_path):
    conf = edit_conf(bao.conf, "store", "pathh", "/tmp/x", out=tmp_path / "bad.conf")
    lineno = [i + 1 for i, l in enumerate(conf.read_text().splitlines()) if l.startswith("pathh")][0]
    r = cmk("check", conf=conf)
    assert r.returncode == 2
    assert "%s:%d" % (conf, lineno) in r.stderr and "pathh" in r.stderr


# Bytes a terminal acts on: C0 controls (ESC starts escape sequences, BEL, CR rewinds the line), DEL,
# C1 controls in UTF-8 (U+009B is CSI) and bytes that are not UTF-8 at all.
UNSAFE = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def run_raw(conf, *args, input=None):
    """The CLI with byte-exact arguments and output (str arguments may carry lone surrogates for raw bytes)."""
    cmd = [str(CMKCERT), "-v", "-v", "-c", str(conf)] + [os.fsencode(a) for a in args]
    return subprocess.run(cmd, input=input, capture_output=True, timeout=120)


def assert_printable(out, name):
    assert not UNSAFE.search(out), "%s holds a control character: %r" % (name, out)
    out.decode("utf-8")             # raises on bytes that are not UTF-8


def request(tenant="t", ktype="aws_kms", endpoints=("h:1",), top=None, cfg=None):
    kc = {"type": ktype, "connection_endpoints": list(endpoints)}
    kc.update(cfg or {})
    r = {"tenant_id": tenant, "keystore_config": kc}
    r.update(top or {})
    return json.dumps(r).encode()


@pytest.mark.parametrize("args,field", [
    (("--tenant", "a\x1b[2Jb", "--type", "aws_kms"), "tenant_id"),
    (("--tenant", "a\x07\rb\x7f", "--type", "aws_kms"), "tenant_id"),
    (("--tenant", "ten\udcffant", "--type", "aws_kms"), "tenant_id"),
    (("--tenant", "t", "--type", "aws\x1b]0;owned\x07"), "type"),
    (("--tenant", "t", "--type", "aws_kms\u009b31m"), "type"),
    (("--tenant", "t", "--type", "aws_kms", "--endpoint", "h\x1b[1A:1"), "endpoint"),
    (("--tenant", "t", "--type", "aws_kms", "--verify", "tls\x1b[2J"), "--verify"),
])
def test_control_characters_on_the_command_line_are_not_echoed(bao, cmk, baseline, args, field):
    r = run_raw(bao.conf, "keystore", "add", *args)
    assert r.returncode == 2, r.stderr
    assert_printable(r.stderr, "stderr")
    assert_printable(r.stdout, "stdout")
    assert field.encode() in r.stderr
    assert b"\\x" in r.stderr                # the bad value is shown, escaped
    assert snapshot(bao, cmk) == baseline


@pytest.mark.parametrize("body,field", [
    (request(cfg={"authentication_method": "\x1b[2J"}), "authentication_method"),
    (request(cfg={"authentication_method": "x\u009b2J\x7f"}), "authentication_method"),
    (request(top={"k\x1b[2J": 1}), "unknown field"),
    (request(cfg={"\x1b]0;owned\x07": True}), "unknown field"),
    (request(tenant="\x1b[2J"), "tenant_id"),
    (request(ktype="aws\x7f"), "type"),
    (request(endpoints=["h\r\x1b[1A:1"]), "endpoint"),
])
def test_control_characters_in_a_request_are_not_echoed(bao, cmk, baseline, body, field):
    r = run_raw(bao.conf, "keystore", "add", "--json", "-", input=body)
    assert r.returncode == 2, r.stderr
    assert_printable(r.stderr, "stderr")
    assert_printable(r.stdout, "stdout")
    assert field.encode() in r.stderr
    assert b"\\x" in r.stderr
    assert snapshot(bao, cmk) == baseline
