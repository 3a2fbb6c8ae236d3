"""Bad input gets a clear error that names what is wrong, exit status 2, and
changes nothing: no record, no audit line."""

import json
import os

import pytest

from conftest import edit_conf


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
