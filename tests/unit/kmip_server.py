#!/usr/bin/python3
"""Loopback keystore servers for tests/unit/test_probe.c.

  kmip   a real PyKMIP server (kmip.services.server.KmipServer) on
         127.0.0.1:PORT speaking TLS 1.2, requiring a client certificate
         signed by --ca; with TLS client auth enabled it also requires the
         certificate's ExtendedKeyUsage to allow clientAuth and answers a
         request from any other certificate with a KMIP error.
  close  a plain TLS 1.2 server that requires a client certificate signed
         by --ca, completes the handshake and closes the connection at once:
         a keystore that refuses only after the handshake.
  echo   the same server, but it sends back whatever it receives: an
         endpoint that is not a KMIP server.

All run until killed.  The test starts this in its own process group and
kills the group (PyKMIP keeps a multiprocessing manager process beside it).
Should the test die without that, the death signal set below takes this
launcher's own children (that manager) down with it.
"""
import argparse
import ctypes
import os
import signal
import socket
import ssl
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """Linux: ask the kernel for SIGKILL when our parent exits."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def serve_kmip(args):
    from kmip.services.server import KmipServer

    policies = os.path.join(args.dir, "kmip-policies")
    os.makedirs(policies, exist_ok=True)
    server = KmipServer(
        hostname="127.0.0.1",
        port=args.port,
        certificate_path=args.cert,
        key_path=args.key,
        ca_path=args.ca,
        auth_suite="TLS1.2",
        config_path=None,  # everything is given here; never read /etc/pykmip
        log_path=os.path.join(args.dir, "kmip-server.log"),
        policy_path=policies,
        enable_tls_client_auth=True,
        logging_level="DEBUG",
        database_path=os.path.join(args.dir, "kmip.db"),
    )
    with server:
        server.serve()


def echo(tls):
    while True:
        data = tls.recv(4096)
        if not data:
            return
        tls.sendall(data)


def serve_plain_tls(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with socket.create_server(("127.0.0.1", args.port)) as listener:
        while True:
            conn, _ = listener.accept()
            try:
                # The handshake happens in wrap_socket; leaving the block closes the connection.
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    if args.mode == "echo":
                        echo(tls)
            except (ssl.SSLError, OSError):
                conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("kmip", "close", "echo"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server private key (PEM)")
    ap.add_argument("--ca", required=True, help="CA that client certificates must chain to")
    ap.add_argument("--dir", required=True, help="directory for logs and state")
    args = ap.parse_args()
    os.register_at_fork(after_in_child=die_with_parent)
    if args.mode == "kmip":
        serve_kmip(args)
    else:
        serve_plain_tls(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
