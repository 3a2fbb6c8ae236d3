#!/usr/bin/python3
"""Scripted HTTPS server for the http and openbao unit tests.

usage: script_server.py DIR

Writes into DIR a throwaway CA (ca.pem), a server certificate for
127.0.0.1/localhost signed by it, and an unrelated CA (other-ca.pem); listens
on 127.0.0.1 on a free port and prints "READY <port>" once it accepts.

Each request takes the first entry of DIR/queue.json (a JSON list the test
writes) and is logged as one JSON line in DIR/requests.jsonl:
{"method", "path", "headers" (names lower-cased), "body", "peer" (the
client's port, to see connection reuse)}.

Entry keys: status (default 200), headers {name: value}, body (text) or
json (any value, serialised), size (a body of that many "x"), delay (seconds
to wait first), drop (close without answering), echo (answer 200 with the
logged request as JSON), times (serve the entry that many times, default 1).
An empty queue answers 599 so a test sees that its script ran out.
"""
import datetime
import http.server
import ipaddress
import json
import os
import socket
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOCK = threading.Lock()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, key, signer, ca, sans=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(signer, hashes.SHA256())


def _pem(obj):
    return obj.public_bytes(serialization.Encoding.PEM)


def make_certs(d):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("unit test CA", "unit test CA", ca_key, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    leaf = _cert("localhost", "unit test CA", key, ca_key, False, sans)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("unrelated CA", "unrelated CA", other_key, other_key, True)
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(_pem(ca))
    with open(os.path.join(d, "other-ca.pem"), "wb") as f:
        f.write(_pem(other))
    with open(os.path.join(d, "server.pem"), "wb") as f:
        f.write(_pem(leaf))
    with open(os.path.join(d, "server.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _next_entry(self, request):
        d = self.server.dir
        with LOCK:
            with open(os.path.join(d, "requests.jsonl"), "a") as f:
                f.write(json.dumps(request) + "\n")
            path = os.path.join(d, "queue.json")
            try:
                with open(path) as f:
                    queue = json.load(f)
            except FileNotFoundError:
                queue = []
            if not queue:
                return {"status": 599, "body": "script queue is empty"}
            entry = queue[0]
            times = entry.get("times", 1)
            if times > 1:
                queue[0] = dict(entry, times=times - 1)
            else:
                queue.pop(0)
            with open(path, "w") as f:
                json.dump(queue, f)
            return entry

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        request = {"method": self.command, "path": self.path,
                   "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                   "peer": self.client_address[1]}
        entry = self._next_entry(request)
        time.sleep(entry.get("delay", 0))
        if entry.get("drop"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if entry.get("echo"):
            out = json.dumps(request)
        elif "json" in entry:
            out = json.dumps(entry["json"])
        elif "size" in entry:
            out = "x" * entry["size"]
        else:
            out = entry.get("body", "")
        data = out.encode()
        self.send_response(entry.get("status", 200))
        for k, v in entry.get("headers", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_LIST = _serve


def main():
    d = sys.argv[1]
    make_certs(d)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.dir = d
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("READY %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
