#!/usr/bin/python3
"""Make N real client certificates for the benchmarks.

gencerts.py N OUTDIR writes OUTDIR/ca-chain.pem (an intermediate and its
root) and OUTDIR/pairs.pem: for each certificate its EC P-256 private key
(SEC1 PEM) followed by the leaf certificate, signed by the intermediate.
bench/populate.c seals each key into its own store record.
"""

import datetime
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn, key, issuer_name, issuer_key, now):
    return (x509.CertificateBuilder()
            .subject_name(name(cn)).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def main():
    n, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_ca("cmkcert bench root", root_key, name("cmkcert bench root"), root_key, now)
    int_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_ca("cmkcert bench issuing CA", int_key, root.subject, root_key, now)
    pem = serialization.Encoding.PEM
    (out / "ca-chain.pem").write_bytes(inter.public_bytes(pem) + root.public_bytes(pem))
    with open(out / "pairs.pem", "wb") as f:
        for i in range(n):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder()
                    .subject_name(name("tenant-bench%05d-aws.keystore.internal" % i))
                    .issuer_name(inter.subject).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=30))
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                    .sign(int_key, hashes.SHA256()))
            f.write(key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
            f.write(cert.public_bytes(pem))


if __name__ == "__main__":
    main()
