#!/usr/bin/python3
"""baosim: an OpenBao-compatible HTTPS test server for cmkcert.

    /usr/bin/python3 tests/baosim/baosim.py --addr 127.0.0.1:0 --dir DIR \
        [--token-ttl SECS] [--quiet]

Prints exactly one line `READY https://HOST:PORT` on stdout once it accepts
connections; logs requests (method, path, status) on stderr. SIGTERM and
SIGINT stop it with exit status 0. See README.md in this folder for the
files it writes into DIR and the /_sim control API.
"""

import argparse
import os
import secrets
import signal
import ssl
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from pki import make_server_cert, pem_of  # noqa: E402
from server import Simulator, TLSServer  # noqa: E402


def write_file(directory, filename, data, mode=0o644):
    """Atomic write: temp file in the same directory, fsync, rename."""
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, os.path.join(directory, filename))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return os.path.join(directory, filename)


def cmkcert_conf(address, directory):
    d = directory
    return f"""\
# cmkcert configuration for the baosim OpenBao test server (generated).
# Durations take a number and one unit: s, m, h or d (for example 90s, 30m, 8760h, 30d).

[openbao]
address = {address}
ca_cert = {d}/ca.pem
# namespace = openkcm
timeout = 10s
pki_mount = pki_client_certs
role = openkcm-client-cert-role
# sign: key generated here, CSR signed by <pki_mount>/sign/<role> (the key never leaves the host)
# issue: <pki_mount>/issue/<role>, OpenBao generates the key
mode = sign
# attempts after the first for 429, 5xx and 503 answers (capped exponential backoff with jitter)
max_retries = 2

[auth]
method = kubernetes
mount = kubernetes
role = cmk-api-server-role
jwt_path = {d}/sa.jwt
role_id_path = {d}/role_id
secret_id_path = {d}/secret_id
token_path = {d}/root.token

[store]
path = {d}/store

[keys]
provider = local
master_key = {d}/master.key

[renewal]
renew_before = 30d
grace_period = 7d
check_interval = 1m
max_parallel = 4
max_ops_per_minute = 60
jitter = 10m

[audit]
path = {d}/audit.log

[fuse]
owner = root
group = root
cert_mode = 0444
key_mode = 0400
ca_mode = 0444

[control]
# cmkcertfs's HTTP control socket, beside this server's files (each test its own)
socket = {d}/control.sock
allow =

[template:thales_luna]
common_name = tenant-{{tenant_id}}-thales.keystore.internal
alt_names = tenant-{{tenant_id}}.internal
key_type = rsa
key_bits = 4096
ttl = 8760h
aliases = thales_luna_hsm
verify = tls

# RSA-3072 as shipped (conf/cmkcert.conf): OpenKCM's keystore plugins load RSA keys only.
[template:aws_kms]
common_name = tenant-{{tenant_id}}-aws.keystore.internal
alt_names = tenant-{{tenant_id}}.internal
key_type = rsa
key_bits = 3072
ttl = 4380h
aliases = aws_kms_keystore
verify = tls
"""


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"bad address {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def write_state(sim, directory, address, tls_cert, tls_key):
    """Everything tests and the C client need, written atomically."""
    d = directory
    secret = 0o600
    write_file(d, "ca.pem", pem_of(sim.tls_ca_cert) + "\n")
    write_file(d, "tls-server.pem", pem_of(tls_cert) + "\n")
    write_file(d, "tls-server.key", tls_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), secret)
    write_file(d, "pki-ca-chain.pem",
               "".join(pem_of(c) + "\n" for c in sim.pki_issuer.chain))
    write_file(d, "pki-other-ca-chain.pem",
               "".join(pem_of(c) + "\n" for c in sim.other_issuer.chain))
    cluster = sim.cluster
    ns, sa = "openkcm-system", "cmk-api-server"
    # Any key the cluster did not sign with; 1024 bits keeps startup fast.
    wrong_key = rsa.generate_private_key(65537, 1024)
    write_file(d, "sa.jwt", cluster.mint(ns, sa), secret)
    write_file(d, "sa-wrong-key.jwt", cluster.mint(ns, sa, key=wrong_key),
               secret)
    write_file(d, "sa-expired.jwt", cluster.mint(ns, sa, exp_delta=-3600),
               secret)
    write_file(d, "sa-wrong-account.jwt", cluster.mint(ns, "other-sa"),
               secret)
    write_file(d, "sa-wrong-namespace.jwt", cluster.mint("default", sa),
               secret)
    write_file(d, "role_id", sim.approle.role_id, secret)
    write_file(d, "secret_id", sim.approle.secret_id, secret)
    write_file(d, "root.token", sim.root_token.id, secret)
    write_file(d, "master.key", secrets.token_bytes(32), secret)
    write_file(d, "cmkcert.conf", cmkcert_conf(address, d))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="OpenBao-compatible HTTPS test server for cmkcert")
    parser.add_argument("--addr", default="127.0.0.1:0", type=parse_addr,
                        help="listen address HOST:PORT (port 0 = any)")
    parser.add_argument("--dir", required=True,
                        help="directory for the CA, credentials and config")
    parser.add_argument("--token-ttl", type=int, default=3600,
                        help="TTL in seconds of tokens from logins")
    parser.add_argument("--quiet", action="store_true",
                        help="do not log requests on stderr")
    args = parser.parse_args(argv)

    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)

    sim = Simulator(token_ttl=args.token_ttl)
    tls_cert, tls_key = make_server_cert(sim.tls_ca_cert, sim.tls_ca_key,
                                         365, ["localhost"], ["127.0.0.1"])
    # Bind first so the port is known for cmkcert.conf.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    server = TLSServer(args.addr, sim, context, quiet=args.quiet)
    host = args.addr[0]
    shown = f"[{host}]" if ":" in host else host
    address = f"https://{shown}:{server.server_address[1]}"
    write_state(sim, directory, address, tls_cert, tls_key)
    context.load_cert_chain(os.path.join(directory, "tls-server.pem"),
                            os.path.join(directory, "tls-server.key"))

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"READY {address}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
