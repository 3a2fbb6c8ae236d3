"""Stories 3 and 4 through the CLI: renewal keeps the subject and rotates in
one step, failures keep the old certificate active, expired certificates
stop being active, revocation is proven on the CRL and destroys the key."""

import json
import subprocess
import time

from cryptography import x509

from conftest import edit_conf


def records(cmk, conf, **filt):
    args = ["list", "--json"]
    for k, v in filt.items():
        args += ["--" + k, v]
    r = cmk(*args, conf=conf)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def short_conf(bao, tmp_path, ttl="15s", renew_before="40s", grace="1h"):
    """Certificates that live ttl (+30 s backdating): renewal is due at once."""
    conf = edit_conf(bao.conf, "template:aws_kms", "ttl", ttl, out=tmp_path / "short.conf")
    edit_conf(conf, "renewal", "renew_before", renew_before)
    edit_conf(conf, "renewal", "grace_period", grace)
    edit_conf(conf, "renewal", "jitter", "0s")
    return conf


def add(cmk, conf, tenant, keystore=None):
    args = ["keystore", "add", "--tenant", tenant, "--type", "aws_kms"]
    args += ["--endpoint", keystore.endpoint, "--server-ca", keystore.server_ca] if keystore else ["--verify", "none"]
    r = cmk(*args, conf=conf)
    assert r.returncode == 0, r.stderr


def events(bao):
    return [json.loads(l) for l in open(bao.dir / "audit.log")]


def test_renew_rotates_and_keeps_subject(bao, cmk, keystore, tmp_path):
    conf = short_conf(bao, tmp_path, ttl="1h", renew_before="10m")
    add(cmk, conf, "acme", keystore)
    old = records(cmk, conf, status="active")[0]
    r = cmk("--json", "renew", "--tenant", "acme", "--type", "aws_kms", conf=conf)
    assert r.returncode == 0, r.stderr
    new = records(cmk, conf, status="active")
    assert len(new) == 1 and new[0]["serial_number"] != old["serial_number"]
    assert new[0]["subject"] == old["subject"] and new[0]["supersedes"] == old["id"]
    rotating = records(cmk, conf, status="rotating")
    assert [r["id"] for r in rotating] == [old["id"]] and rotating[0]["key_sealed"]
    kinds = [(e["event"], e["outcome"]) for e in events(bao) if e.get("record_id") == new[0]["id"]]
    assert kinds == [("credentialRenew", "success"), ("credentialActivate", "success")]
    assert cmk("audit", "verify", conf=conf).returncode == 0


def test_due_renewal_and_cleanup_after_grace(bao, cmk, tmp_path):
    conf = short_conf(bao, tmp_path, grace="1s")
    add(cmk, conf, "t1")
    first = records(cmk, conf, status="active")[0]
    r = cmk("--json", "renew", "--due", conf=conf)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["renewed"] == 1
    time.sleep(1.5)
    r = cmk("--json", "renew", "--due", conf=conf)
    assert json.loads(r.stdout)["cleaned_up"] == 1
    old = [x for x in records(cmk, conf) if x["id"] == first["id"]][0]
    assert old["status"] == "cleaned_up" and not old["key_sealed"]
    assert ("credentialDelete", "success") in [(e["event"], e["outcome"]) for e in events(bao)]


def test_nothing_due_does_nothing(bao, cmk, tmp_path):
    add(cmk, bao.conf, "calm")
    before = records(cmk, bao.conf)
    r = cmk("--json", "renew", "--due")
    assert r.returncode == 0 and json.loads(r.stdout)["renewed"] == 0
    assert records(cmk, bao.conf) == before


def test_refused_renewal_keeps_old_active_and_backs_off(bao, cmk, keystore, tmp_path):
    conf = short_conf(bao, tmp_path, ttl="1h", renew_before="10m")
    add(cmk, conf, "acme", keystore)
    old = records(cmk, conf, status="active")[0]
    keystore.stop()                  # the keystore is gone: the new pair cannot be tested
    r = cmk("renew", "--tenant", "acme", "--type", "aws_kms", conf=conf)
    assert r.returncode != 0
    active = records(cmk, conf, status="active")
    assert [a["id"] for a in active] == [old["id"]]
    assert active[0]["last_error"] and active[0]["renew_at"] is not None
    failed = records(cmk, conf, status="failed")
    assert len(failed) == 1 and failed[0]["supersedes"] == old["id"]


def test_openbao_outage_keeps_old_active(bao, cmk, tmp_path):
    conf = short_conf(bao, tmp_path)
    add(cmk, conf, "t2")
    old = records(cmk, conf, status="active")[0]
    bao.control("seal", {"sealed": True})
    r = cmk("--json", "renew", "--due", conf=conf)
    assert json.loads(r.stdout)["failed"] == 1
    active = records(cmk, conf, status="active")
    assert [a["id"] for a in active] == [old["id"]] and "sealed" in active[0]["last_error"]
    assert records(cmk, conf, status="pending") == []
    bao.control("seal", {"sealed": False})
    # The retry is scheduled with backoff; a direct renewal succeeds at once.
    assert cmk("renew", "--tenant", "t2", "--type", "aws_kms", conf=conf).returncode == 0


def test_expired_certificate_is_no_longer_active(bao, cmk, tmp_path):
    # 1 s of validity after the 30 s backdating of the role.
    conf = short_conf(bao, tmp_path, ttl="1s")
    add(cmk, conf, "late")
    bao.control("seal", {"sealed": True})     # no renewal possible
    time.sleep(2)
    r = cmk("--json", "renew", "--due", conf=conf)
    assert json.loads(r.stdout)["expired"] == 1
    assert records(cmk, conf, status="active") == []
    assert records(cmk, conf, status="expired")[0]["tenant_id"] == "late"
    assert "credentialExpiration" in [e["event"] for e in events(bao)]


def crl_serials(bao, tmp_path):
    import urllib.request
    with urllib.request.urlopen(bao.url + "/v1/pki_client_certs/crl", context=bao.ctx) as r:
        der = r.read()
    crl = x509.load_der_x509_crl(der)
    return {":".join("%02x" % b for b in e.serial_number.to_bytes(20, "big").lstrip(b"\0")) for e in crl}


def test_revoke_compromise_is_on_crl_and_destroys_key(bao, cmk, tmp_path):
    add(cmk, bao.conf, "victim")
    rec = records(cmk, bao.conf, status="active")[0]
    t0 = time.monotonic()
    r = cmk("--json", "revoke", "--tenant", "victim", "--type", "aws_kms", "--reason", "compromise")
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "revoked"
    assert rec["serial_number"] in crl_serials(bao, tmp_path)
    after = [x for x in records(cmk, bao.conf) if x["id"] == rec["id"]][0]
    assert after["status"] == "revoked" and not after["key_sealed"] and after["revoked_at"]
    ev = [e for e in events(bao) if e["event"] == "credentialRevokation"]
    assert ev and ev[-1]["serial"] == rec["serial_number"] and "keyCompromise" in ev[-1]["detail"]
    # Revoked certificates are never renewed.
    assert json.loads(cmk("--json", "renew", "--due").stdout)["renewed"] == 0
    print("revocation end to end: %.3f s" % elapsed)


def test_keystore_remove_revokes_everything_and_forgets(bao, cmk, tmp_path):
    conf = short_conf(bao, tmp_path, ttl="1h", renew_before="10m")
    add(cmk, conf, "gone")
    assert cmk("renew", "--tenant", "gone", "--type", "aws_kms", conf=conf).returncode == 0
    serials = [x["serial_number"] for x in records(cmk, conf, tenant="gone")]
    assert len(serials) == 2          # active + rotating
    r = cmk("keystore", "remove", "--tenant", "gone", "--type", "aws_kms", conf=conf)
    assert r.returncode == 0, r.stderr
    assert all(x["status"] == "revoked" for x in records(cmk, conf, tenant="gone"))
    assert set(serials) <= crl_serials(bao, tmp_path)
    assert ("credentialDelete", "success") in [(e["event"], e["outcome"]) for e in events(bao)]
    # The keystore can be added again afterwards.
    add(cmk, conf, "gone")


def test_no_store_role_is_revoked_by_pem(bao, cmk, tmp_path):
    conf = edit_conf(bao.conf, "openbao", "role", "openkcm-client-cert-nostore", out=tmp_path / "ns.conf")
    add(cmk, conf, "nostore")
    rec = records(cmk, conf, status="active")[0]
    r = cmk("revoke", "--tenant", "nostore", "--type", "aws_kms", conf=conf)
    assert r.returncode == 0, r.stderr
    assert rec["serial_number"] in crl_serials(bao, tmp_path)


def test_revoking_an_expired_certificate_is_not_success(bao, cmk, tmp_path):
    conf = short_conf(bao, tmp_path, ttl="1s")
    add(cmk, conf, "old")
    time.sleep(4)
    r = cmk("--json", "revoke", "--tenant", "old", "--type", "aws_kms", conf=conf)
    assert r.returncode == 1
    assert "already expired" in r.stderr
    rec = records(cmk, conf, tenant="old")[0]
    assert rec["status"] == "cleaned_up" and not rec["key_sealed"]
    assert ("credentialRevokation", "not_revoked") in [(e["event"], e["outcome"]) for e in events(bao)]
