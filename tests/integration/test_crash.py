"""Crash safety: processes killed with SIGKILL at random moments during
add, renewal (rotation) and revocation never leave a half-done state.  After
each kill the next run recovers, and then: the store opens, every keystore
that was established has exactly one active certificate whose sealed key
opens and matches it (or none, when it was being revoked), no record is left
pending or with a revocation half done, and the audit chain verifies."""

import json
import random
import signal
import subprocess
import time

from conftest import CMKCERT, edit_conf

KILLS = 50


def run(conf, *args):
    return subprocess.run([str(CMKCERT), "-c", str(conf)] + list(args), capture_output=True, text=True, timeout=120)


def records(conf):
    r = run(conf, "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fifty_kills(bao, keystore, tmp_path):
    conf = edit_conf(bao.conf, "renewal", "jitter", "0s", out=tmp_path / "crash.conf")
    # EC keys: an RSA key generation takes longer than the kill window, and every kill would land in it.
    edit_conf(conf, "template:aws_kms", "key_type", "ec")
    edit_conf(conf, "template:aws_kms", "key_bits", "256")
    ks = ["--endpoint", keystore.endpoint, "--server-ca", str(keystore.server_ca)]
    rng = random.Random(20261128)
    established, revoking, next_tenant = set(), set(), 0
    for _ in range(4):
        t = "base%d" % next_tenant
        next_tenant += 1
        assert run(conf, "keystore", "add", "--tenant", t, "--type", "aws_kms", *ks).returncode == 0
        established.add(t)

    kinds = {"add": 0, "renew": 0, "revoke": 0}
    for i in range(KILLS):
        kind = rng.choice(["add", "renew", "renew", "renew", "revoke"] if len(established) > 2 else ["add"])
        if kind == "add":
            tenant = "t%d" % next_tenant
            next_tenant += 1
            args = ["keystore", "add", "--tenant", tenant, "--type", "aws_kms"] + ks
        else:
            tenant = rng.choice(sorted(established))
            args = [kind, "--tenant", tenant, "--type", "aws_kms"]
        kinds[kind] += 1
        p = subprocess.Popen([str(CMKCERT), "-c", str(conf)] + args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()

        # The next run recovers: interrupted operations reset, requested revocations finished.
        v = run(conf, "--json", "verify")
        assert v.returncode == 0, (i, kind, v.stdout, v.stderr)
        recs = records(conf)
        active = {}
        for r in recs:
            assert r["status"] != "pending", (i, kind, r)
            assert not r["revocation_pending"], (i, kind, r)
            if r["status"] == "active":
                assert r["tenant_id"] not in active, "two active certificates for %s" % r["tenant_id"]
                assert r["key_sealed"]
                active[r["tenant_id"]] = r
        if kind == "add" and tenant in active:
            established.add(tenant)
        if kind == "revoke" and tenant not in active:
            established.discard(tenant)
            assert all(r["status"] == "revoked" for r in recs if r["tenant_id"] == tenant), (i, recs)
        for t in established:
            assert t in active, "iteration %d (%s %s): %s lost its active certificate" % (i, kind, tenant, t)
        a = run(conf, "audit", "verify")
        assert a.returncode == 0, (i, kind, a.stderr)
    print("kills per operation:", kinds, "keystores established at the end:", len(established))
