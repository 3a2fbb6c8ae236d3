"""cmkcertfs's control socket (issue #11): HTTP/1.1 with JSON on a unix
socket, called the way the CMK API server calls it, with curl
--unix-socket and with a Go program (net/http over a unix dialer,
tests/clients/ctlclient).

Every endpoint answers with the document `cmkcert --json` prints for the
same operation and refuses bad input the same way, changing nothing;
errors map to HTTP statuses; a caller whose uid (or group) [control] allow
does not name gets 403; bodies over 1 MiB are refused unread; long
operations hold up neither other requests nor the mount; /metrics parses
as Prometheus text and its expiry figures are the store's."""

import calendar
import json
import os
import pathlib
import re
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from conftest import BUILD, CMKCERT, Keystore, edit_conf
from fusefix import Mounts

CTLCLIENT = BUILD / "clients" / "ctlclient"
TYPE = "aws_kms"
ALLOWED_UID = 65533        # named in [control] allow
OTHER_UID = 65534          # nobody: may connect (mode 0666), is not allowed
ALLOWED_GID = 65532        # named in [control] allow as @65532


class Control:
    """A mounted cmkcertfs with its control socket in a directory every user can reach."""

    def __init__(self, mounts, conf):
        self.sock = mounts.root / "control.sock"
        self.conf = conf
        edit_conf(conf, "control", "socket", str(self.sock))
        edit_conf(conf, "control", "mode", "0666")
        edit_conf(conf, "control", "allow", "%d, @%d" % (ALLOWED_UID, ALLOWED_GID))
        self.mount = mounts(conf, args=("-n",))

    def curl(self, method, path, body=None, user=None, groups=None, extra=()):
        """(status, text, headers) of one request made with curl."""
        cmd = ["curl", "-sS", "--unix-socket", str(self.sock), "-X", method, "-D", "-",
               "-o", "-", "http://cmkcertfs" + path, *extra]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        r = subprocess.run(as_user(cmd, user, groups), input=body.encode() if isinstance(body, str) else body,
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return parse_http(r.stdout.decode())

    def go(self, method, path, body=None, user=None, groups=None, n=1, big=0, expect=False):
        """The Go client's results: one dict, or a list of n (status, body, headers, ms, error)."""
        cmd = [str(CTLCLIENT), "-socket", str(self.sock), "-n", str(n)]
        if body is not None:
            cmd += ["-body", "-"]
        if big:
            cmd += ["-big", str(big)]
        if expect:
            cmd += ["-expect-continue"]
        r = subprocess.run(as_user(cmd + [method, path], user, groups), input=body, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def call(self, client, method, path, body=None, **kw):
        """(status, decoded JSON body) with either client."""
        if client == "curl":
            status, text, _ = self.curl(method, path, body, **kw)
        else:
            res = self.go(method, path, body, **kw)
            assert not res.get("error"), res
            status, text = res["status"], res["body"]
        return status, json.loads(text) if text.strip() else None


def as_user(cmd, user, groups):
    if user is None:
        return cmd
    g = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return ["setpriv", "--reuid", str(user), "--regid", str(user), *g, *cmd]


def parse_http(raw):
    """curl -D - -o -: the last response's headers (after any 100 Continue), then the body."""
    heads = []
    while raw.startswith("HTTP/"):
        head, _, raw = raw.partition("\r\n\r\n")
        heads.append(head)
    lines = heads[-1].split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    return status, raw, headers


def request(tenant, ktype=TYPE, endpoints=(), verify="none", server_ca=None):
    kc = {"type": ktype, "connection_endpoints": list(endpoints), "authentication_method": "client_certificate",
          "certificate_required": True, "verify": verify}
    if server_ca is not None:
        kc["server_ca"] = pathlib.Path(server_ca).read_text()
    return json.dumps({"tenant_id": tenant, "keystore_config": kc})


def read_elsewhere(path):
    """A file of the mount as a new process reads it (the daemon pairs versions per process); None if absent."""
    r = subprocess.run(["cat", str(path)], capture_output=True, text=True, timeout=10)
    return r.stdout if r.returncode == 0 else None


def cli_json(cmk, conf, *args, input=None):
    r = cmk("--json", *args, conf=conf, input=input)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None


def store_list(cmk, conf, *args):
    r = cmk("list", "--json", *args, conf=conf)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def audit_events(bao):
    return [json.loads(l) for l in open(bao.dir / "audit.log")]


def epoch(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def without_ms(doc):
    """A result with its step timings removed (they differ from run to run)."""
    doc = json.loads(json.dumps(doc))
    for s in doc.get("steps", []):
        s.pop("ms", None)
    return doc


@pytest.fixture
def mounts(bao):
    # The tests provoke these on purpose: OpenBao failing and sealed, keystores refusing.
    ms = Mounts(bao.conf, allowed=[r"cmkcertfs: warning: (openbao: |keystore_add: )"])
    yield ms
    problems = ms.close()
    assert not problems, problems


@pytest.fixture
def ctl(bao, mounts, tmp_path):
    assert CTLCLIENT.is_file(), "%s is not built: run `make integration`" % CTLCLIENT
    return Control(mounts, edit_conf(bao.conf, "control", "mode", "0666", out=tmp_path / "control.conf"))


# ---- every endpoint -------------------------------------------------------------


@pytest.mark.parametrize("client", ["curl", "go"])
def test_every_endpoint_answers_as_the_cli_does(bao, cmk, ctl, keystore, client):
    conf = ctl.conf
    status, live = ctl.call(client, "GET", "/healthz")
    assert status == 200 and live["ok"] and live["pid"] == ctl.mount.proc.pid
    status, ready = ctl.call(client, "GET", "/readyz")
    assert status == 200 and ready["ok"], ready
    assert all(c["ok"] for c in ready["checks"].values()) and set(ready["checks"]) == {"mount", "store", "openbao"}

    # Story 2 with the use case's request, tested against a real keystore that demands the certificate.
    body = request("acme-corp-12345", "aws_kms_keystore", [keystore.endpoint], "tls", keystore.server_ca)
    status, added = ctl.call(client, "POST", "/v1/keystores", body)
    assert status == 200, added
    assert added["ok"] and added["status"] == "active" and added["type"] == TYPE
    assert [s["step"] for s in added["steps"]] == ["validate", "sign", "store", "test", "activate"]
    assert added["steps"][3]["detail"] == "keystore accepted"
    # The answer comes once the mount shows the certificate.
    assert added["mount"]["shows_change"] and added["mount"]["mounts"][0]["pid"] == ctl.mount.proc.pid
    crt = ctl.mount / ("certs/acme-corp-12345-%s.crt" % TYPE)
    assert read_elsewhere(crt).startswith("-----BEGIN CERTIFICATE-----")

    # The list and one certificate: the CLI's documents, the certificate but never a key.
    status, listed = ctl.call(client, "GET", "/v1/certificates?tenant=acme-corp-12345")
    assert status == 200 and listed == store_list(cmk, conf, "--tenant", "acme-corp-12345")
    status, one = ctl.call(client, "GET", "/v1/certificates/acme-corp-12345/" + TYPE)
    rc, shown = cli_json(cmk, conf, "show", "--pem", "--tenant", "acme-corp-12345", "--type", TYPE)
    assert status == 200 and rc == 0 and one == shown
    assert one["certificate"].strip() == read_elsewhere(crt).strip() and one["serial_number"] == added["serial_number"]
    assert "PRIVATE KEY" not in json.dumps([added, listed, one])

    # Story 3: renew now; the old certificate rotates out, the mount serves the new one.
    status, renewed = ctl.call(client, "POST", "/v1/keystores/acme-corp-12345/%s/renew" % TYPE)
    assert status == 200, renewed
    assert renewed["ok"] and renewed["status"] == "active" and renewed["serial_number"] != added["serial_number"]
    assert renewed["mount"]["shows_change"]
    assert {r["serial_number"]: r["status"] for r in store_list(cmk, conf)} == {
        added["serial_number"]: "rotating", renewed["serial_number"]: "active"}
    assert one["certificate"].strip() != read_elsewhere(crt).strip()

    # Story 4: revoke (with a reason), with CRL proof; then disconnect a second keystore.
    status, revoked = ctl.call(client, "POST", "/v1/keystores/acme-corp-12345/%s/revoke" % TYPE,
                               json.dumps({"reason": "compromise"}))
    assert status == 200, revoked
    assert revoked["ok"] and revoked["operation"] == "revoke" and revoked["status"] == "revoked"
    assert read_elsewhere(crt) is None
    status, _ = ctl.call(client, "POST", "/v1/keystores", request("other", TYPE))
    assert status == 200
    status, removed = ctl.call(client, "DELETE", "/v1/keystores/other/" + TYPE)
    assert status == 200, removed
    assert removed["operation"] == "keystore remove" and removed["status"] == "revoked"
    assert [s["step"] for s in removed["steps"]] == ["revoke", "forget"]
    assert {r["status"] for r in store_list(cmk, conf)} == {"revoked"}
    # Each revocation is on the issuing CA's CRL.
    crl = x509.load_pem_x509_crl(crl_pem(bao).encode())
    on_crl = {":".join("%02x" % b for b in r.serial_number.to_bytes(20, "big").lstrip(b"\0")) for r in crl}
    assert {r["serial_number"] for r in store_list(cmk, conf)} <= on_crl

    status, text, headers = ctl.curl("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "cmkcert_certificates{status=\"revoked\"} 3" in text

    # Every call is in the trail with the caller as actor, and the trail verifies.
    assert cmk("audit", "verify", conf=conf).returncode == 0
    events = audit_events(bao)
    calls = [e for e in events if e["event"] == "controlRequest"]
    assert [c["step"] for c in calls] == ["keystore add", "list", "show", "renew", "revoke", "keystore add",
                                          "keystore remove"]
    assert all(re.fullmatch(r"control:uid=0,pid=\d+", c["actor"]) and c["uid"] == 0 and c["pid"] > 0
               for c in calls)
    assert all(c["outcome"] == "success" for c in calls)
    changes = [e for e in events if e["event"].startswith("credential")]
    assert changes and all(e["actor"].startswith("control:uid=0,pid=") for e in changes)


def crl_pem(bao):
    with urllib.request.urlopen(bao.url + "/v1/pki_client_certs/crl/pem", context=bao.ctx, timeout=10) as r:
        return r.read().decode()


# ---- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("client", ["curl", "go"])
def test_bad_input_is_refused_as_the_cli_refuses_it_and_changes_nothing(bao, cmk, ctl, client):
    conf = ctl.conf
    cases = [
        "{bad json",
        "[]",
        json.dumps({"tenant_id": "acme", "keystore_config": {"type": TYPE, "connection_endpoints": [],
                                                              "colour": "blue"}}),
        request("../etc"),
        request("a" * 41),
        request("a~b"),
        request("acme", "no_such_type"),
        request("acme", endpoints=["host-without-port"]),
        request("acme", verify="tls"),          # nothing to test the connection against
        request("acme", verify="sometimes"),
    ]
    for body in cases:
        status, doc = ctl.call(client, "POST", "/v1/keystores", body)
        rc, cli = cli_json(cmk, conf, "keystore", "add", "--json", "-", input=body)
        assert status == 400 and rc == 2, (body, doc)
        assert without_ms(doc) == without_ms(cli), body
        assert doc["ok"] is False and doc["error"] == "invalid input" and doc["code"] == -2
    # Names in paths are checked the same way.
    for path in ("/v1/keystores/a%%20b/%s/renew" % TYPE, "/v1/keystores/%%2e%%2e/%s" % TYPE,
                 "/v1/keystores/acme/Bad-Type/revoke",
                 "/v1/certificates/%s/%s" % ("x" * 41, TYPE)):
        method = "GET" if "certificates" in path else "POST" if path.count("/") == 5 else "DELETE"
        status, doc = ctl.call(client, method, path)
        assert status == 400 and doc["error"] == "invalid input", (path, doc)
    status, doc = ctl.call(client, "GET", "/v1/certificates?status=sleeping")
    assert status == 400 and "sleeping" in doc["detail"]
    status, doc = ctl.call(client, "POST", "/v1/keystores/acme/%s/revoke" % TYPE, json.dumps({"reason": "boredom"}))
    assert status == 400 and "boredom" in doc["detail"]
    status, doc = ctl.call(client, "POST", "/v1/keystores/acme/%s/renew" % TYPE, json.dumps({"now": True}))
    assert status == 400 and "now" in doc["detail"]
    # Nothing was stored, and the trail holds the refused calls only.
    assert store_list(cmk, conf) == []
    assert {e["event"] for e in audit_events(bao)} == {"controlRequest"}
    assert cmk("audit", "verify", conf=conf).returncode == 0


@pytest.mark.parametrize("client", ["curl", "go"])
def test_not_found_conflict_and_method(bao, cmk, ctl, client):
    assert ctl.call(client, "GET", "/v1/certificates/nobody/" + TYPE)[0] == 404
    assert ctl.call(client, "POST", "/v1/keystores/nobody/%s/renew" % TYPE)[0] == 404
    assert ctl.call(client, "POST", "/v1/keystores/nobody/%s/revoke" % TYPE)[0] == 404
    status, doc = ctl.call(client, "GET", "/v2/everything")
    assert status == 404 and doc["error"] == "not found"
    status, doc = ctl.call(client, "POST", "/v1/keystores", request("twice"))
    assert status == 200
    # A second add of the same keystore: the CLI's refusal (exit 2), here a conflict.
    status, doc = ctl.call(client, "POST", "/v1/keystores", request("twice"))
    rc, cli = cli_json(cmk, ctl.conf, "keystore", "add", "--json", "-", input=request("twice"))
    assert status == 409 and rc == 2 and "already has an active" in doc["detail"]
    assert without_ms(doc) == without_ms(cli)
    if client == "curl":
        status, text, headers = ctl.curl("PUT", "/v1/keystores")
        assert status == 405 and headers["allow"] == "POST"
        status, text, headers = ctl.curl("GET", "/v1/keystores/twice/" + TYPE)
        assert status == 405 and headers["allow"] == "DELETE"
    else:
        res = ctl.go("PATCH", "/v1/certificates")
        assert res["status"] == 405 and res["headers"]["Allow"] == "GET"


@pytest.mark.parametrize("client", ["curl", "go"])
def test_openbao_and_keystore_failures_are_502_and_sealed_is_503(bao, cmk, ctl, untrusting_keystore, client):
    # The keystore refuses the certificate: the record is failed, nothing is active.
    body = request("refused", TYPE, [untrusting_keystore.endpoint], "tls", untrusting_keystore.server_ca)
    status, doc = ctl.call(client, "POST", "/v1/keystores", body)
    assert status == 502 and doc["failed_step"] == "test" and doc["status"] == "failed", doc
    # OpenBao answers 500 to every attempt.
    bao.control("faults", {"status": 500, "count": 3, "path": "pki_client_certs/sign"})
    status, doc = ctl.call(client, "POST", "/v1/keystores", request("five-hundred"))
    assert status == 502 and doc["failed_step"] == "sign" and doc["error"] == "OpenBao server error", doc
    # OpenBao is sealed: try again later.
    assert ctl.call(client, "GET", "/readyz")[0] == 200
    bao.control("seal", {"sealed": True})
    status, doc = ctl.call(client, "POST", "/v1/keystores", request("sealed"))
    assert status == 503 and "sealed" in doc["detail"], doc
    deadline = time.monotonic() + 15
    while ctl.call(client, "GET", "/readyz")[0] != 503:
        assert time.monotonic() < deadline, "readyz did not notice the sealed OpenBao"
        time.sleep(0.2)
    status, ready = ctl.call(client, "GET", "/readyz")
    assert not ready["checks"]["openbao"]["ok"] and ready["checks"]["mount"]["ok"]
    bao.control("seal", {"sealed": False})
    assert [r["status"] for r in store_list(cmk, ctl.conf)] == ["failed"]


def test_a_caller_not_allowed_gets_403_and_is_audited(bao, cmk, ctl):
    assert ctl.call("curl", "POST", "/v1/keystores", request("mine"))[0] == 200
    for client in ("curl", "go"):
        status, doc = ctl.call(client, "GET", "/v1/certificates", user=OTHER_UID)
        assert status == 403 and doc["error"] == "permission problem", doc
        assert "uid %d" % OTHER_UID in doc["detail"]
        # Not even a body is read, and nothing is done.
        status, doc = ctl.call(client, "POST", "/v1/keystores/mine/%s/revoke" % TYPE, "{}", user=OTHER_UID)
        assert status == 403
        assert ctl.call(client, "GET", "/healthz", user=OTHER_UID)[0] == 403
        # The uid named in allow, and a caller with the allowed group among its supplementary groups.
        status, listed = ctl.call(client, "GET", "/v1/certificates", user=ALLOWED_UID)
        assert status == 200 and [r["tenant_id"] for r in listed] == ["mine"]
        assert ctl.call(client, "GET", "/v1/certificates", user=OTHER_UID, groups=[ALLOWED_GID])[0] == 200
    assert [r["status"] for r in store_list(cmk, ctl.conf)] == ["active"]
    denied = [e for e in audit_events(bao) if e["event"] == "controlRequest" and e["outcome"] == "denied"]
    # The first refusal is written at once; the next ones within 10 s are counted for a later line.
    assert denied and denied[0]["uid"] == OTHER_UID and denied[0]["actor"].startswith("control:uid=%d," % OTHER_UID)
    allowed = [e for e in audit_events(bao) if e["event"] == "controlRequest" and e["uid"] == ALLOWED_UID]
    assert allowed and allowed[0]["outcome"] == "success"
    # At the end the counted refusals are written with their count: six in all.
    ctl.mount.unmount()
    denied = [e for e in audit_events(bao) if e["event"] == "controlRequest" and e["outcome"] == "denied"]
    assert sum(e.get("count", 1) for e in denied) == 6
    assert cmk("audit", "verify", conf=ctl.conf).returncode == 0


def test_bodies_over_the_limit_are_refused_unread(bao, cmk, ctl, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"a" * 10_000_000)
    # curl asks for 100-continue before a body this size: the 413 comes instead, nothing is sent.
    status, text, headers = ctl.curl("POST", "/v1/keystores", extra=("--data-binary", "@%s" % big))
    assert status == 413 and "at most 1048576" in json.loads(text)["detail"]
    assert headers["connection"] == "close"
    # Go, asking for 100-continue as well.
    res = ctl.go("POST", "/v1/keystores", big=10_000_000, expect=True)
    assert res["status"] == 413, res
    # Go writing the body at once: the daemon answers 413 and closes the connection without reading it; Go
    # reports the answer or, when its write fails first, the closed connection (never anything else).
    res = ctl.go("POST", "/v1/keystores", big=10_000_000)
    assert res["status"] == 413 or re.search(r"broken pipe|connection reset", res["error"]), res
    # Chunked, without a length: refused before a byte is read.
    status, text, _ = ctl.curl("POST", "/v1/keystores", extra=("-H", "Transfer-Encoding: chunked",
                                                                 "--data-binary", "@%s" % big))
    assert status == 411
    # Just under the limit is read (and is bad JSON).
    status, doc = ctl.call("go", "POST", "/v1/keystores", "a" * (1024 * 1024 - 1))
    assert status == 400
    assert store_list(cmk, ctl.conf) == []
    assert ctl.call("go", "GET", "/healthz")[0] == 200


# ---- concurrency ----------------------------------------------------------------


def test_100_concurrent_requests(bao, cmk, ctl):
    for i in range(5):
        assert ctl.call("curl", "POST", "/v1/keystores", request("t%d" % i))[0] == 200
    # 100 at once from Go, one connection each.
    results = ctl.go("GET", "/v1/certificates", n=100)
    assert len(results) == 100 and all(r["status"] == 200 and not r.get("error") for r in results)
    assert all(len(json.loads(r["body"])) == 5 for r in results)
    # 100 at once from one curl, one connection each.
    r = subprocess.run(["curl", "-s", "--unix-socket", str(ctl.sock), "--parallel", "--parallel-max", "100",
                        "-w", "%{http_code}\n"] + ["http://cmkcertfs/metrics", "-o", "/dev/null"] * 100,
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["200"] * 100
    # 20 adds of the same keystore racing 80 reads: exactly one add wins, the others conflict.
    out = {}

    def adds():
        out["adds"] = ctl.go("POST", "/v1/keystores", request("race"), n=20)

    t = threading.Thread(target=adds)
    t.start()
    reads = ctl.go("GET", "/v1/certificates/t0/" + TYPE, n=80)
    t.join()
    assert sorted(r["status"] for r in out["adds"]) == [200] + [409] * 19, [r["body"] for r in out["adds"]]
    assert all(r["status"] == 200 for r in reads)
    assert [r["tenant_id"] for r in store_list(cmk, ctl.conf, "--status", "active")].count("race") == 1
    assert cmk("audit", "verify", conf=ctl.conf).returncode == 0


def test_a_long_operation_holds_up_neither_other_requests_nor_the_mount(bao, cmk, ctl):
    assert ctl.call("curl", "POST", "/v1/keystores", request("quick"))[0] == 200
    crt = ctl.mount / ("certs/quick-%s.crt" % TYPE)
    # OpenBao takes 4 s to sign the next certificate.
    sign = "/v1/pki_client_certs/sign/openkcm-client-cert-role"
    signed_before = bao.control("stats")["by_path"].get(sign, 0)
    bao.control("faults", {"latency_ms": 4000, "count": 1, "path": "pki_client_certs/sign"})
    done = {}

    def slow():
        done["add"] = ctl.go("POST", "/v1/keystores", request("slow"))
        done["at"] = time.monotonic()

    t = threading.Thread(target=slow)
    t.start()
    # Wait until OpenBao holds the daemon's request.
    deadline = time.monotonic() + 10
    while bao.control("stats")["by_path"].get(sign, 0) == signed_before:
        assert time.monotonic() < deadline and "add" not in done
        time.sleep(0.05)
    answered = {}
    for path in ("/healthz", "/v1/certificates", "/metrics"):
        assert ctl.go("GET", path)["status"] == 200
        answered[path] = time.monotonic()
    served = read_elsewhere(crt)
    answered["mount"] = time.monotonic()
    t.join()
    assert done["add"]["status"] == 200, done["add"]
    assert served.startswith("-----BEGIN CERTIFICATE-----")
    # Every one of them was answered while the add was still waiting for OpenBao.
    assert all(at < done["at"] for at in answered.values()), (answered, done["at"])


# ---- metrics ----------------------------------------------------------------------


def test_metrics_parse_and_match_the_store(bao, cmk, ctl):
    for t in ("m1", "m2", "m3"):
        assert ctl.call("curl", "POST", "/v1/keystores", request(t))[0] == 200
    assert ctl.call("curl", "POST", "/v1/keystores/m2/%s/renew" % TYPE)[0] == 200
    assert ctl.call("curl", "POST", "/v1/keystores/m3/%s/revoke" % TYPE)[0] == 200
    # Key reads: one served to root, one refused to another user (the kernel's check, audited by the daemon).
    (ctl.mount / ("private/m1-%s.key" % TYPE)).read_bytes()
    r = subprocess.run(as_user(["cat", str(ctl.mount / ("private/m1-%s.key" % TYPE))], OTHER_UID, None),
                       capture_output=True)
    assert r.returncode != 0

    before = time.time()
    status, text, _ = ctl.curl("GET", "/metrics")
    after = time.time()
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {f.name: [(s.labels, s.value) for s in f.samples] for f in families.values()}

    records = store_list(cmk, ctl.conf)
    by_status = {}
    for rec in records:
        by_status[rec["status"]] = by_status.get(rec["status"], 0) + 1
    assert {l["status"]: v for l, v in samples["cmkcert_certificates"] if v} == by_status
    assert by_status == {"active": 2, "rotating": 1, "revoked": 1}

    # Each active and rotating certificate's expiry, exactly the store's not_after.
    expiry = {(l["tenant_id"], l["serial_number"], l["status"]): v
              for l, v in samples["cmkcert_certificate_expiry_timestamp_seconds"]}
    assert expiry == {(r["tenant_id"], r["serial_number"], r["status"]): epoch(r["not_after"])
                      for r in records if r["status"] in ("active", "rotating")}
    earliest = min(epoch(r["not_after"]) for r in records if r["status"] == "active")
    [(_, seconds)] = samples["cmkcert_earliest_expiry_seconds"]
    assert earliest - after - 1 <= seconds <= earliest - before + 1

    assert families["cmkcert_renewals"].type == "counter"
    renewals = {l["result"]: v for l, v in samples["cmkcert_renewals"]}
    assert renewals == {"success": 1.0, "failure": 0.0}
    reads = {l["result"]: v for l, v in samples["cmkcert_key_reads"]}
    assert reads["allowed"] == 1.0 and reads["refused"] >= 1.0
    bao_requests = {l["outcome"]: v for l, v in samples["cmkcert_openbao_requests"]}
    assert bao_requests["success"] >= 6 and bao_requests["no_answer"] == 0
    assert samples["cmkcert_audit_queue_depth"][0][1] >= 0
    codes = {l["code"]: v for l, v in samples["cmkcert_control_requests"]}
    assert codes["200"] == 5.0


# ---- the socket file -------------------------------------------------------------


def test_socket_file_mode_group_stale_socket_and_shutdown(bao, cmk, mounts, tmp_path):
    sock = mounts.root / "ctl.sock"
    conf = edit_conf(bao.conf, "control", "socket", str(sock), out=tmp_path / "c.conf")
    edit_conf(conf, "control", "group", str(ALLOWED_GID))
    # A socket left by a daemon that was killed: nobody listens on it.
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    m = mounts(conf, args=("-n",))
    st = os.stat(sock)
    assert oct(st.st_mode & 0o7777) == oct(0o660) and st.st_gid == ALLOWED_GID and st.st_uid == 0
    assert "removed the stale socket" in m.stderr()
    # A second daemon of the same store leaves the socket to the first.
    m2 = mounts(conf, args=("-n",))
    assert "is served by cmkcertfs pid %d of this store" % m.proc.pid in m2.stderr()
    assert m2.unmount() == 0 and sock.exists()
    assert m.unmount() == 0 and not sock.exists()


def test_socket_inside_the_mount_point_or_none(bao, cmk, mounts, tmp_path):
    root = mounts.root
    conf = edit_conf(bao.conf, "control", "socket", str(root / "inside" / "control.sock"), out=tmp_path / "c.conf")
    (root / "inside").mkdir()
    r = subprocess.run([str(BUILD / "cmkcertfs"), "-f", "-c", str(conf), str(root / "inside")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is inside the mount point" in r.stderr
    edit_conf(conf, "control", "socket", "none")
    m = mounts(conf, args=("-n",))
    assert "control: serving" not in m.stderr()
    assert not any(p.suffix == ".sock" for p in root.iterdir())


# ---- latency, reported --------------------------------------------------------------


def test_latency_of_keystore_add_control_socket_and_cli(bao, cmk, ctl):
    """One keystore add each way, side by side (a report, not an assertion on time)."""
    def timed(fn):
        t0 = time.monotonic()
        out = fn()
        return out, (time.monotonic() - t0) * 1000

    r, cli_ms = timed(lambda: cmk("--json", "keystore", "add", "--tenant", "lat-cli", "--type", TYPE, "--verify",
                                  "none", "--wait", conf=ctl.conf))
    assert r.returncode == 0, r.stderr
    r, cli_nowait_ms = timed(lambda: cmk("--json", "keystore", "add", "--tenant", "lat-cli2", "--type", TYPE,
                                         "--verify", "none", conf=ctl.conf))
    assert r.returncode == 0, r.stderr
    (status, _, _), curl_ms = timed(lambda: ctl.curl("POST", "/v1/keystores", request("lat-curl")))
    assert status == 200
    res, go_proc_ms = timed(lambda: ctl.go("POST", "/v1/keystores", request("lat-go")))
    assert res["status"] == 200
    res_nowait = ctl.go("POST", "/v1/keystores?wait=0", request("lat-go2"))
    assert res_nowait["status"] == 200
    report = ("keystore add (aws_kms, EC P-256, sign mode, verify none), one run each:\n"
              "  cmkcert --wait (process start to exit)           %8.1f ms\n"
              "  cmkcert (no --wait)                              %8.1f ms\n"
              "  control socket, curl (process start to exit)     %8.1f ms\n"
              "  control socket, Go client (request to answer)    %8.1f ms\n"
              "  control socket, Go client, ?wait=0               %8.1f ms\n"
              "  (the control socket waits for the mount to show the change, as --wait does)\n"
              % (cli_ms, cli_nowait_ms, curl_ms, res["ms"], res_nowait["ms"]))
    (BUILD / "control-latency.txt").write_text(report)
    print("\n" + report)
