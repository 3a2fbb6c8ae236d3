"""A Python TLS client's ways of loading its certificate and key from the mount.

    pyclient.py bundle-loop BUNDLE
        One thread, in a loop until standard input is closed:
        ssl.SSLContext.load_cert_chain(BUNDLE) (OpenSSL opens the file twice:
        once for the certificate chain, once for the key, and refuses a key that
        does not match with [X509: KEY_VALUES_MISMATCH]); then the same two opens
        done by hand (certificate from the first read, key from the second),
        compared with python3-cryptography.  Prints {"event":"serial",...} at the
        first load of each serial and {"event":"summary",...} at the end.

    pyclient.py pairs CRT KEY
        Answers commands on standard input, one JSON line each:
        "key"       read the key file alone (open, read, close)
        "pair-ssl"  ssl.SSLContext.load_cert_chain(CRT, KEY)
        "pair-read" read CRT, then KEY (each its own open/read/close), compare
        "quit"

Run by the integration tests in a process of its own; lines are flushed at once.
"""

import hashlib
import json
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def spki(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_of(pem):
    """The first certificate in a PEM text (a bundle's key comes before it)."""
    return x509.load_pem_x509_certificate(pem[pem.index(CERT_BEGIN):])


def key_of(pem):
    """The private key of a PEM text: everything before the first certificate."""
    cut = pem.find(CERT_BEGIN)
    return serialization.load_pem_private_key(pem if cut < 0 else pem[:cut], None)


def serial_text(cert):
    n = cert.serial_number
    return ":".join("%02x" % b for b in n.to_bytes(20, "big").lstrip(b"\0"))


def is_mismatch(err):
    return "KEY_VALUES_MISMATCH" in str(err) or "key values mismatch" in str(err).lower()


def bundle_loop(bundle):
    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    counts = {"ssl_loads": 0, "ssl_mismatches": 0, "ssl_failures": 0,
              "read_loads": 0, "read_mismatches": 0, "read_failures": 0}
    errors, serials, last = [], {}, None

    def note(text):
        if len(errors) < 10 and text not in errors:
            errors.append(text)

    start = time.monotonic()
    while not stop.is_set():
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(bundle)
            counts["ssl_loads"] += 1
        except ssl.SSLError as e:
            counts["ssl_loads"] += 1
            counts["ssl_mismatches" if is_mismatch(e) else "ssl_failures"] += 1
            note("load_cert_chain: %s" % e)
        except OSError as e:
            counts["ssl_failures"] += 1
            note("load_cert_chain: %s" % e)
        try:
            cert = cert_of(read(bundle))
            key = key_of(read(bundle))
            counts["read_loads"] += 1
            if spki(cert.public_key()) != spki(key.public_key()):
                counts["read_mismatches"] += 1
                note("two reads: the key does not match the certificate %s" % serial_text(cert))
                continue
            serial = serial_text(cert)
            last = serial
            if serial not in serials:
                serials[serial] = time.monotonic()
                say({"event": "serial", "serial": serial, "mono": serials[serial]})
        except (OSError, ValueError) as e:
            counts["read_failures"] += 1
            note("two reads: %s: %s" % (type(e).__name__, e))
    counts.update(event="summary", elapsed_s=time.monotonic() - start, errors=errors, last_serial=last,
                  serials=len(serials),
                  mismatches=counts["ssl_mismatches"] + counts["read_mismatches"],
                  failures=counts["ssl_failures"] + counts["read_failures"])
    say(counts)


def pairs(crt, key):
    for line in sys.stdin:
        cmd = line.strip()
        now = time.monotonic()
        try:
            if cmd == "key":
                k = key_of(read(key))
                say({"cmd": cmd, "mono": now, "key_spki": hashlib.sha256(spki(k.public_key())).hexdigest()})
            elif cmd == "pair-ssl":
                try:
                    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(crt, key)
                    say({"cmd": cmd, "mono": now, "match": True})
                except ssl.SSLError as e:
                    say({"cmd": cmd, "mono": now, "match": not is_mismatch(e), "error": str(e)})
            elif cmd == "pair-read":
                c = cert_of(read(crt))
                k = key_of(read(key))
                say({"cmd": cmd, "mono": now, "serial": serial_text(c),
                     "match": spki(c.public_key()) == spki(k.public_key()),
                     "key_spki": hashlib.sha256(spki(k.public_key())).hexdigest()})
            elif cmd == "quit":
                return
            else:
                say({"cmd": cmd, "error": "unknown command"})
        except (OSError, ValueError) as e:
            say({"cmd": cmd, "mono": now, "error": "%s: %s" % (type(e).__name__, e)})


def main(argv):
    if len(argv) == 3 and argv[1] == "bundle-loop":
        bundle_loop(argv[2])
    elif len(argv) == 4 and argv[1] == "pairs":
        pairs(argv[2], argv[3])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
