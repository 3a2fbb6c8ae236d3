"""One OpenBao token for every run: the CLI keeps the token it got sealed in
the store and later runs use it, so a thousand runs log in at most twice
(the test server counts logins); an expired token still gets one re-login,
a token near its end is renewed rather than replaced, a configuration that
points at another server never sends it there, and the token is never
written anywhere in the clear."""

import concurrent.futures
import json
import re
import subprocess
import time

from conftest import CMKCERT, Bao, edit_conf

RUNS = 1000
TOKEN = re.compile(rb"s\.[A-Za-z0-9]{24}")


def stats(bao):
    return bao.control("stats")


def check(conf, *more):
    return subprocess.run([str(CMKCERT), "-c", str(conf), "check", *more], capture_output=True, text=True,
                          timeout=60)


def test_a_thousand_runs_log_in_at_most_twice(bao):
    bao.control("stats/reset", {})
    # Two at a time: runs that find no token wait for the one that logs in, and take its token.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: check(bao.conf), range(RUNS)))
    failed = [r for r in results if r.returncode != 0]
    assert not failed, failed[0].stdout + failed[0].stderr
    s = stats(bao)
    print("%d runs of cmkcert check: %d login(s), %d requests" % (RUNS, s["logins"], s["requests"]))
    assert 1 <= s["logins"] <= 2, s
    assert sum("token shared by this store's runs" in r.stdout for r in results) >= RUNS - 2
    # One login audited per token, not per run.
    logins = [l for l in (bao.dir / "audit.log").read_text().splitlines() if '"authLogin"' in l]
    assert len(logins) == s["logins"]


def test_expired_token_logs_in_once_then_shares_again(bao):
    assert check(bao.conf).returncode == 0
    bao.control("tokens/expire", {})
    bao.control("stats/reset", {})
    for _ in range(5):
        r = check(bao.conf)
        assert r.returncode == 0, r.stdout + r.stderr
    s = stats(bao)
    assert s["logins"] == 1, s                     # the 403 made one run log in; the others took its token
    assert s["by_status"].get("403", 0) == 1, s


def test_token_near_its_end_is_renewed_not_replaced(bao):
    bao.control("config", {"token_ttl": 6, "token_max_ttl": 600})
    bao.control("stats/reset", {})
    assert check(bao.conf).returncode == 0
    time.sleep(4.5)                                # less than a third of its 6 s left
    for _ in range(3):
        r = check(bao.conf)
        assert r.returncode == 0, r.stdout + r.stderr
    s = stats(bao)
    assert s["logins"] == 1, s
    assert s["by_path"].get("/v1/auth/token/renew-self", 0) == 1, s


def test_check_login_tests_the_credentials(bao, tmp_path):
    assert check(bao.conf).returncode == 0
    bao.control("stats/reset", {})
    r = check(bao.conf, "--login")
    assert r.returncode == 0 and "kubernetes login ok" in r.stdout, r.stdout + r.stderr
    # A credential that no longer works fails --login even though a token is kept.
    conf = edit_conf(bao.conf, "auth", "jwt_path", str(bao.dir / "sa-expired.jwt"), out=tmp_path / "expired.conf")
    r = check(conf, "--login")
    assert r.returncode == 1 and "expired" in r.stderr, r.stdout + r.stderr
    assert stats(bao)["logins"] == 1


def test_token_goes_only_to_the_server_it_came_from(bao, tmp_path):
    assert check(bao.conf).returncode == 0
    other = Bao(tmp_path / "other-bao")
    try:
        # The same store, another server: it gets a login of its own, never the first server's token.
        conf = edit_conf(bao.conf, "openbao", "address", other.url, out=tmp_path / "other.conf")
        edit_conf(conf, "openbao", "ca_cert", str(other.dir / "ca.pem"))
        edit_conf(conf, "auth", "jwt_path", str(other.dir / "sa.jwt"))
        other.control("stats/reset", {})
        for _ in range(3):
            r = check(conf)
            assert r.returncode == 0, r.stdout + r.stderr
        s = other.control("stats")
        assert s["logins"] == 1 and s["by_status"].get("403", 0) == 0, s
        # And the first server's token is still there for its own runs.
        bao.control("stats/reset", {})
        assert check(bao.conf).returncode == 0
        assert stats(bao)["logins"] == 0
    finally:
        other.stop()


def test_token_never_in_the_clear(bao, tmp_path):
    outputs = []
    for args in (["-v", "-v", "check"], ["-v", "-v", "keystore", "add", "--tenant", "acme", "--type", "thales_luna",
                                          "--verify", "none"], ["--json", "check"]):
        r = subprocess.run([str(CMKCERT), "-c", str(bao.conf)] + args, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    # The pattern finds a token where there is one.
    assert TOKEN.search((bao.dir / "root.token").read_bytes())
    files = [p for p in (bao.dir / "store").rglob("*") if p.is_file()] + [bao.dir / "audit.log"]
    assert any(p.name == "session.db" for p in files)
    for p in files:
        assert not TOKEN.search(p.read_bytes()), "a token in the clear in %s" % p
    for o in outputs:
        assert not TOKEN.search(o), o
    doc = json.loads(outputs[-2])
    assert doc["ok"] is True
