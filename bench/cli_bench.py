#!/usr/bin/python3
"""Benchmarks of the CLI against the bundled OpenBao test server, each as a
ratio to a baseline measured in the same run:

  check            `cmkcert check` (reach, login, mount, roles) vs one bare curl to sys/health
  add ec256/rsa4096 `cmkcert keystore add` in sign mode (key generation, CSR, sign, checks,
                   seal, store, audit) vs the same sign request (a ready CSR) made by bare curl
  renew ec256      `cmkcert renew` (the same, plus the rotation) and the renewals per minute it sustains

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

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    cmk = str(build / "cmkcert")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        bao, url = start_bao(tmp / "bao")
        try:
            conf = str(tmp / "bao/cmkcert.conf")
            ca = str(tmp / "bao/ca.pem")
            token = json.loads(subprocess.run(
                ["curl", "-s", "--cacert", ca, "-X", "POST", url + "/v1/auth/kubernetes/login", "-d",
                 json.dumps({"role": "cmk-api-server-role", "jwt": (tmp / "bao/sa.jwt").read_text().strip()})],
                capture_output=True, text=True).stdout)["auth"]["client_token"]
            rows = []

            check = [timed([cmk, "-c", conf, "check"])[0] for _ in range(rounds)]
            health = [timed(["curl", "-sf", "--cacert", ca, url + "/v1/sys/health"])[0] for _ in range(rounds)]
            rows.append(("check", statistics.median(check), "curl sys/health", statistics.median(health)))

            for name, ktype, keyopt in (("add ec256 (sign)", "aws_kms", ["-newkey", "ec", "-pkeyopt",
                                                                           "ec_paramgen_curve:P-256"]),
                                        ("add rsa4096 (sign)", "thales_luna", ["-newkey", "rsa:4096"])):
                cn = "tenant-bench-%s.keystore.internal" % ("aws" if ktype == "aws_kms" else "thales")
                csr = subprocess.run(["openssl", "req", "-new", "-nodes", "-keyout", "/dev/null", "-subj",
                                      "/CN=" + cn, "-addext", "subjectAltName=DNS:%s,DNS:tenant-bench.internal" % cn]
                                     + keyopt, capture_output=True, text=True, check=True).stdout
                body = tmp / "sign.json"
                body.write_text(json.dumps({"csr": csr, "ttl": "8760h", "format": "pem"}))
                ours, theirs = [], []
                for i in range(rounds):
                    ours.append(timed([cmk, "-c", conf, "keystore", "add", "--tenant", "b%d" % i, "--type", ktype,
                                       "--verify", "none"])[0])
                    theirs.append(timed(["curl", "-sf", "--cacert", ca, "-H", "X-Vault-Token: " + token, "-X", "POST",
                                         url + "/v1/pki_client_certs/sign/openkcm-client-cert-role",
                                         "--data-binary", "@" + str(body)])[0])
                rows.append((name, statistics.median(ours), "curl sign (CSR ready)", statistics.median(theirs)))
                if ktype == "aws_kms":
                    # Renewal: sign, check, seal, store pending, activate + rotate, audit.
                    renew = [timed([cmk, "-c", conf, "renew", "--tenant", "b0", "--type", ktype])[0]
                             for _ in range(rounds * 4)]
                    rows.append(("renew ec256 (sign)", statistics.median(renew), "curl sign (CSR ready)",
                                 statistics.median(theirs)))
        finally:
            bao.terminate()
            bao.wait()
    print("%-22s %10s   %-24s %10s %8s" % ("cmkcert", "median", "baseline (same run)", "median", "ratio"))
    for name, a, base, b in rows:
        print("%-22s %8.1f ms   %-24s %8.1f ms %7.1fx" % (name, a * 1000, base, b * 1000, a / b))
        if name.startswith("renew"):
            print("%-22s %8.0f /min  (one process at a time, each a full CLI run)" % ("  renewals sustained", 60 / a))


if __name__ == "__main__":
    main()
