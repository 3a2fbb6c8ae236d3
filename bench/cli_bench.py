#!/usr/bin/python3
"""Benchmarks of the CLI against the bundled OpenBao test server, each as a
ratio to a baseline measured in the same run (the two are timed in turns,
so that whatever else the machine does weighs on both alike):

  check             `cmkcert check` (reach, token, mount, roles) vs one bare curl to sys/health
  add ec256         `cmkcert keystore add` in sign mode (key generation, CSR, sign, checks, seal,
                    store, audit) vs the same sign request (a ready CSR) made by bare curl
  renew ec256       `cmkcert renew` (the same, plus the rotation) and the renewals per minute it sustains
  add rsa4096/3072  the same with the key taken from a filled key pool (`cmkcert pool fill` first),
                    vs curl with a ready CSR of that size; and RSA-4096 with an empty pool, where the
                    key is generated during the add
  logins            OpenBao logins (counted by the server) for CMKBENCH_RUNS runs of `cmkcert check`
                    (default 1000); before the shared token every run logged in once

Usage: cli_bench.py BUILD_DIR [ROUNDS]"""

import json
import os
import pathlib
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import ssl

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROLE = "openkcm-client-cert-role"

# An EC template for the EC rows: the shipped ones are RSA (aws_kms RSA-3072, thales_luna RSA-4096).
EC_TEMPLATE = """
[template:bench_ec]
common_name = tenant-{tenant_id}-ec.keystore.internal
alt_names = tenant-{tenant_id}.internal
key_type = ec
key_bits = 256
ttl = 4380h
pool_size = 0
verify = none
"""


def start_bao(d):
    p = subprocess.Popen(["/usr/bin/python3", str(ROOT / "tests/baosim/baosim.py"), "--addr", "127.0.0.1:0",
                          "--dir", str(d), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    select.select([p.stdout], [], [], 30)
    m = re.match(r"READY (\S+)", p.stdout.readline())
    return p, m.group(1)


def timed(cmd, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit("benchmark command failed: %s\n%s" % (" ".join(cmd), r.stderr))
    return dt, r.stdout


def control(url, ctx, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/_sim/" + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return json.loads(r.read().decode() or "null")


def ready_csr(tmp, cn, keyopt):
    csr = subprocess.run(["openssl", "req", "-new", "-nodes", "-keyout", "/dev/null", "-subj", "/CN=" + cn,
                          "-addext", "subjectAltName=DNS:%s,DNS:tenant-bench.internal" % cn] + keyopt,
                         capture_output=True, text=True, check=True).stdout
    body = tmp / ("sign-%s.json" % cn)
    body.write_text(json.dumps({"csr": csr, "ttl": "8760h", "format": "pem"}))
    return body


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    runs = int(os.environ.get("CMKBENCH_RUNS", "1000"))
    cmk = str(build / "cmkcert")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        bao, url = start_bao(tmp / "bao")
        try:
            ca = str(tmp / "bao/ca.pem")
            ctx = ssl.create_default_context(cafile=ca)
            base = (tmp / "bao/cmkcert.conf").read_text()
            conf = tmp / "bench.conf"
            conf.write_text(base.replace("master_key = ", "pool_size = %d\nmaster_key = " % (rounds + 1), 1)
                            + EC_TEMPLATE)
            nopool = tmp / "nopool.conf"
            nopool.write_text(base + EC_TEMPLATE)
            token = json.loads(subprocess.run(
                ["curl", "-s", "--cacert", ca, "-X", "POST", url + "/v1/auth/kubernetes/login", "-d",
                 json.dumps({"role": "cmk-api-server-role", "jwt": (tmp / "bao/sa.jwt").read_text().strip()})],
                capture_output=True, text=True).stdout)["auth"]["client_token"]
            curl_sign = ["curl", "-sf", "--cacert", ca, "-H", "X-Vault-Token: " + token, "-X", "POST",
                         url + "/v1/pki_client_certs/sign/" + ROLE, "--data-binary"]
            rows = []

            def pair(name, ours_cmd, base_name, base_cmd, n=rounds):
                ours, theirs = [], []
                for i in range(n):
                    ours.append(timed(ours_cmd(i))[0])
                    theirs.append(timed(base_cmd)[0])
                rows.append((name, statistics.median(ours), base_name, statistics.median(theirs)))
                return ours

            # Once, so the shared token and the store exist before anything is timed.
            timed([cmk, "-c", str(conf), "check"])
            pair("check", lambda i: [cmk, "-c", str(conf), "check"],
                 "curl sys/health", ["curl", "-sf", "--cacert", ca, url + "/v1/sys/health"])

            ec_body = ready_csr(tmp, "tenant-bench-ec.keystore.internal",
                                ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            pair("add ec256", lambda i: [cmk, "-c", str(conf), "keystore", "add", "--tenant", "e%d" % i,
                                         "--type", "bench_ec", "--verify", "none"],
                 "curl sign (CSR ready)", curl_sign + ["@" + str(ec_body)])
            renew = pair("renew ec256", lambda i: [cmk, "-c", str(conf), "renew", "--tenant", "e0", "--type",
                                                   "bench_ec"],
                         "curl sign (CSR ready)", curl_sign + ["@" + str(ec_body)], rounds * 2)

            timed([cmk, "-c", str(conf), "pool", "fill"])
            for bits, ktype in ((4096, "thales_luna"), (3072, "aws_kms")):
                body = ready_csr(tmp, "tenant-bench-%d.keystore.internal" % bits, ["-newkey", "rsa:%d" % bits])
                pair("add rsa%d, pool" % bits,
                     lambda i, t=ktype, b=bits: [cmk, "-c", str(conf), "keystore", "add", "--tenant",
                                                 "r%d-%d" % (b, i), "--type", t, "--verify", "none"],
                     "curl sign (CSR ready)", curl_sign + ["@" + str(body)])
                if bits == 4096:
                    pair("add rsa4096, no pool",
                         lambda i: [cmk, "-c", str(nopool), "keystore", "add", "--tenant", "n%d" % i, "--type",
                                    "thales_luna", "--verify", "none"],
                         "curl sign (CSR ready)", curl_sign + ["@" + str(body)])

            # A store of its own, so that the first of the runs finds no token and logs in.
            fresh = tmp / "fresh.conf"
            fresh.write_text(conf.read_text().replace(str(tmp / "bao/store"), str(tmp / "fresh-store"))
                             .replace(str(tmp / "bao/audit.log"), str(tmp / "fresh-audit.log")))
            control(url, ctx, "stats/reset", {})
            t0 = time.perf_counter()
            for _ in range(runs):
                r = subprocess.run([cmk, "-c", str(fresh), "check"], capture_output=True)
                if r.returncode != 0:
                    sys.exit("cmkcert check failed:\n%s" % r.stderr.decode())
            elapsed = time.perf_counter() - t0
            logins = control(url, ctx, "stats")["logins"]
        finally:
            bao.terminate()
            bao.wait()
    print("%-22s %10s   %-24s %10s %8s" % ("cmkcert", "median", "baseline (same run)", "median", "ratio"))
    for name, a, base, b in rows:
        print("%-22s %8.1f ms   %-24s %8.1f ms %7.1fx" % (name, a * 1000, base, b * 1000, a / b))
        if name.startswith("renew"):
            print("%-22s %8.0f /min  (one process at a time, each a full CLI run)" %
                  ("  renewals sustained", 60 / statistics.median(renew)))
    print("%-22s %8d      for %d runs of `cmkcert check` in %.1f s (one token, shared through the store;"
          " one login per run before)" % ("OpenBao logins", logins, runs, elapsed))


if __name__ == "__main__":
    main()
