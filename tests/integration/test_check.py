"""Story 1: `cmkcert check` reaches OpenBao, authenticates, verifies the PKI
mount and every template's role, and says clearly what is wrong when any of
that fails."""

import json

from conftest import edit_conf, make_ca


def steps(out):
    return {s["step"]: s for s in json.loads(out)["steps"]}


def test_check_passes_and_reports_each_step(cmk):
    r = cmk("--json", "check")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True
    names = [s["step"] for s in doc["steps"]]
    assert names == ["config", "reach", "authenticate", "pki-mount", "role:thales_luna", "role:aws_kms"]
    assert all(s["result"] == "ok" and s["ms"] >= 0 for s in doc["steps"])
    assert "kubernetes" in steps(r.stdout)["authenticate"]["detail"]


def test_check_text_output(cmk):
    r = cmk("check")
    assert r.returncode == 0, r.stderr
    assert "check passed" in r.stdout
    for step in ("reach", "authenticate", "pki-mount", "role:thales_luna", "role:aws_kms"):
        assert step in r.stdout


def test_check_with_approle_and_token(bao, cmk, tmp_path):
    conf = edit_conf(bao.conf, "auth", "method", "approle", out=tmp_path / "approle.conf")
    edit_conf(conf, "auth", "mount", "approle")
    r = cmk("check", conf=conf)
    assert r.returncode == 0, r.stdout + r.stderr
    conf = edit_conf(bao.conf, "auth", "method", "token", out=tmp_path / "token.conf")
    r = cmk("check", conf=conf)
    assert r.returncode == 0, r.stdout + r.stderr


def test_wrong_role_fails_naming_it(bao, cmk, tmp_path):
    conf = edit_conf(bao.conf, "openbao", "role", "no-such-role", out=tmp_path / "c.conf")
    r = cmk("check", conf=conf)
    assert r.returncode == 1
    assert "no-such-role" in r.stderr


def test_wrong_kubernetes_role_fails(bao, cmk, tmp_path):
    conf = edit_conf(bao.conf, "auth", "role", "not-a-k8s-role", out=tmp_path / "c.conf")
    r = cmk("check", conf=conf)
    assert r.returncode == 1
    assert "invalid role name" in r.stderr


def test_bad_jwt_is_denied(bao, cmk, tmp_path):
    for jwt, text in (("sa-wrong-key.jwt", "permission denied"),
                      ("sa-expired.jwt", "expired"),
                      ("sa-wrong-namespace.jwt", "namespace not authorized"),
                      ("sa-wrong-account.jwt", "service account name not authorized")):
        conf = edit_conf(bao.conf, "auth", "jwt_path", str(bao.dir / jwt), out=tmp_path / "c.conf")
        r = cmk("check", conf=conf)
        assert r.returncode == 1, jwt
        assert "authenticate" in r.stderr and text in r.stderr, (jwt, r.stderr)


def test_sealed_server_exits_3(bao, cmk):
    bao.control("seal", {"sealed": True})
    r = cmk("--json", "check")
    assert r.returncode == 3
    assert steps(r.stdout)["reach"]["result"] == "failed"
    assert "sealed" in r.stderr


def test_unreachable_address_exits_3(bao, cmk, tmp_path):
    from conftest import free_port
    conf = edit_conf(bao.conf, "openbao", "address", "https://127.0.0.1:%d" % free_port(), out=tmp_path / "c.conf")
    r = cmk("check", conf=conf)
    assert r.returncode == 3
    assert "127.0.0.1" in r.stderr


def test_untrusted_server_certificate_exits_3(bao, cmk, tmp_path):
    other, _ = make_ca(tmp_path, "not-the-openbao-ca")
    conf = edit_conf(bao.conf, "openbao", "ca_cert", str(other), out=tmp_path / "c.conf")
    r = cmk("check", conf=conf)
    assert r.returncode == 3
    assert "certificate" in r.stderr.lower()
    # Nothing was sent in the clear: the server saw no request at all.
    assert bao.control("stats")["requests"] == 0
