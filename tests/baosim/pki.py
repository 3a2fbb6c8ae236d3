"""The PKI secrets engine of the simulator: CA hierarchy, roles, issue/sign,
revoke, CRLs and the fetch/list endpoints, following OpenBao's
builtin/logical/pki behaviour as described in openbao-api.md §4.
"""

import base64
import copy
import datetime
import ipaddress
import re
import secrets
import threading
import time
import urllib.parse
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (ec, ed25519, padding,
                                                       rsa)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common import (BOOL, COMMA_SLICE, DURATION, INT, NS, STRING,
                    SYSTEM_DEFAULT_LEASE_TTL, SYSTEM_MAX_LEASE_TTL, Field,
                    FieldData, FieldError, go_duration, go_error, go_glob,
                    now_ns,
                    parse_duration_seconds, parse_rfc3339, rfc3339nano,
                    user_error)
from framework import (DELETE, LIST, READ, UPDATE, Backend, Response, Route,
                       add_warnings, list_response, name)

# --------------------------------------------------------------------------
# Certificates and keys
# --------------------------------------------------------------------------

_CURVES = {224: ec.SECP224R1, 256: ec.SECP256R1, 384: ec.SECP384R1,
           521: ec.SECP521R1}
_CURVE_BITS = {"secp224r1": 224, "secp256r1": 256, "secp384r1": 384,
               "secp521r1": 521}



# Test-only: every private key made by issue mode, so tests can search the
# client's files and logs for any trace of them (GET /_sim/issued-keys).
_ISSUED_KEYS = []
_ISSUED_KEYS_LOCK = threading.Lock()


def remember_issued_key(key):
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    with _ISSUED_KEYS_LOCK:
        _ISSUED_KEYS.append(pem)


def issued_keys():
    with _ISSUED_KEYS_LOCK:
        return list(_ISSUED_KEYS)

def new_serial():
    """certutil.GenerateSerialNumber: uniform in [0, 2^159), never 0 here
    (cryptography refuses a zero serial)."""
    while True:
        serial = secrets.randbelow(2 ** 159)
        if serial:
            return serial


def serial_colon(serial):
    """GetHexFormatted(serial.Bytes(), ":"): lowercase, leading zero octets
    dropped."""
    raw = serial.to_bytes((serial.bit_length() + 7) // 8, "big")
    return ":".join(f"{b:02x}" for b in raw)


def normalize_serial(text):
    """Storage form: lowercase with '-' separators."""
    return text.lower().replace(":", "-")


def denormalize_serial(text):
    return text.replace("-", ":")


def utc_dt(nanos):
    """Whole-second naive UTC datetime (X.509 has no fractions)."""
    return datetime.datetime(1970, 1, 1) + datetime.timedelta(
        seconds=nanos // NS)


def dt_unix(value):
    return int((value - datetime.datetime(1970, 1, 1)).total_seconds())


def pem_of(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def der_of(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def ski_of(public_key):
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def _hash_for(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) \
        else hashes.SHA256()


def make_ca(common_name, days, parent=None, key=None):
    """A CA certificate shaped like the ones OpenBao generates (Go
    extension order: KeyUsage, BasicConstraints, SKI, AKI).
    Returns (certificate, private key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = now_ns()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            common_name)])
    ski = ski_of(key.public_key())
    issuer_name = parent.cert.subject if parent else subject
    aki = parent.ski if parent else ski
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(new_serial())
               .not_valid_before(utc_dt(now - 30 * NS))
               .not_valid_after(utc_dt(now + days * 86400 * NS))
               .add_extension(x509.KeyUsage(
                   digital_signature=False, content_commitment=False,
                   key_encipherment=False, data_encipherment=False,
                   key_agreement=False, key_cert_sign=True, crl_sign=True,
                   encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier(ski), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier(aki, None, None),
                              critical=False))
    signer = parent.key if parent else key
    return builder.sign(signer, _hash_for(signer)), key


def make_server_cert(ca_cert, ca_key, days, dns_names, ips):
    """A TLS server certificate (EC P-256) signed by ca_cert/ca_key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = now_ns()
    sans = [x509.DNSName(d) for d in dns_names] + \
        [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(
                NameOID.COMMON_NAME, "baosim")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(new_serial())
            .not_valid_before(utc_dt(now - 30 * NS))
            .not_valid_after(utc_dt(now + days * 86400 * NS))
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier(
                ski_of(key.public_key())), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier(
                ski_of(ca_cert.public_key()), None, None), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


class Issuer:
    """A PKI issuer: certificate, key and its chain (itself, then parents)."""

    def __init__(self, cert, key, parents=()):
        self.id = str(uuid.uuid4())
        self.cert = cert
        self.key = key
        self.chain = [cert] + list(parents)
        self.ski = ski_of(cert.public_key())
        self.der = der_of(cert)
        self.pem = pem_of(cert)
        self.serial = serial_colon(cert.serial_number)
        self.not_after_ns = dt_unix(cert.not_valid_after) * NS


def signed_by(cert, issuer_cert):
    """x509.Certificate.CheckSignatureFrom (signature check only)."""
    key = issuer_cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return cert.issuer == issuer_cert.subject


def generate_key(key_type, key_bits):
    if key_type == "rsa":
        return rsa.generate_private_key(65537, key_bits)
    if key_type == "ec":
        return ec.generate_private_key(_CURVES[key_bits]())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise go_error(500, f"unknown key type: {key_type}")


def key_type_of(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec", public_key.curve.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519", 0
    return "unknown", 0


def private_key_bytes(key, encoding, pkcs8=False):
    """Go's certutil encodings: PKCS#1 for RSA, SEC1 for EC, PKCS#8 for
    ed25519 (or everything with private_key_format=pkcs8)."""
    fmt = serialization.PrivateFormat.PKCS8 if (
        pkcs8 or isinstance(key, ed25519.Ed25519PrivateKey)) \
        else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(encoding, fmt, serialization.NoEncryption())


# --------------------------------------------------------------------------
# Key type / size rules (sdk/helper/certutil)
# --------------------------------------------------------------------------

def validate_key_type_bits(key_type, key_bits, sig_bits):
    """ValidateDefaultOrValueKeyTypeSignatureLength -> (bits, sig_bits) or
    ValueError with OpenBao's message."""
    if key_bits == 0:
        key_bits = {"rsa": 2048, "ec": 256}.get(key_type, 0)
    if key_type == "rsa":
        if key_bits < 2048:
            raise ValueError(f"RSA keys < 2048 bits are unsafe and not "
                             f"supported: got {key_bits}")
        if key_bits not in (2048, 3072, 4096, 8192):
            raise ValueError(f"unsupported bit length for RSA key: "
                             f"{key_bits}")
    elif key_type == "ec":
        if key_bits not in _CURVES:
            raise ValueError(f"unsupported bit length for EC key: "
                             f"{key_bits}")
    elif key_type not in ("any", "ed25519"):
        raise ValueError(f"unknown key type {key_type}")
    if key_type == "rsa" and sig_bits == 0:
        sig_bits = 256
    elif key_type in ("ed25519", "any"):
        sig_bits = 0
    if key_type == "rsa" and sig_bits not in (256, 384, 512):
        raise ValueError(f"unsupported hash signature algorithm: {sig_bits}")
    return key_bits, sig_bits


# --------------------------------------------------------------------------
# Name policy (cert_util.go validateNames / validateCommonName)
# --------------------------------------------------------------------------

_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])"
HOSTNAME_RE = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}\.?$")
LEFT_WILD_LABEL_RE = re.compile(
    rf"^(?:\*|\*{_LABEL}|{_LABEL}\*|{_LABEL}\*{_LABEL})$")


def idna_to_ascii(name):
    """x/net/idna with StrictDomainName + VerifyDNSLength. ASCII input passes
    through (StrictDomainName only shapes output), lengths are checked.
    Returns (converted, error text or None)."""
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return "", f'idna: invalid label "{name}"'
    body = name[:-1] if name.endswith(".") else name
    labels = body.split(".")
    if not name or "" in labels:
        return "", f'idna: invalid label "{name}"'
    for label in labels:
        if len(label) > 63:
            return "", f'idna: invalid label "{label}"'
    if len(name) > 253:
        return "", f'idna: invalid label "{name}"'
    return name, None


def validate_names(role, names):
    """Returns the first name the role does not allow, or ""."""
    for nm in names:
        reduced = nm
        email_domain = nm
        wildcard_label = ""
        is_email = False
        is_wildcard = False
        if "@" in reduced:
            parts = reduced.split("@")
            if len(parts) != 2:
                return nm
            reduced = email_domain = parts[1]
            is_email = True
        if "*" in reduced:
            is_wildcard = True
            if not role["allow_wildcard_certificates"]:
                return nm
            if reduced.count("*") > 1:
                return nm
            pieces = reduced.split(".", 1)
            if len(pieces) != 2:
                wildcard_label, reduced = pieces[0], ""
            else:
                wildcard_label, reduced = pieces
                if "*" in reduced:
                    return nm
        if is_email and is_wildcard:
            return nm
        if role["enforce_hostnames"]:
            if reduced:
                converted, err = idna_to_ascii(reduced)
                if err or not HOSTNAME_RE.match(converted):
                    return nm
            if is_wildcard and not LEFT_WILD_LABEL_RE.match(wildcard_label):
                return nm
        if role["allow_any_name"]:
            continue
        if role["allow_localhost"]:
            if reduced in ("localhost", "localdomain") or \
                    (is_email and email_domain in ("localhost",
                                                   "localdomain")):
                continue
            if role["allow_subdomains"]:
                if reduced.endswith(".localhost") or \
                        (is_wildcard and reduced == "localhost"):
                    continue
                if reduced.endswith(".localdomain") or \
                        (is_wildcard and reduced == "localdomain"):
                    continue
        valid = False
        for domain in role["allowed_domains"]:
            if domain == "":
                continue
            if role["allow_bare_domains"] and (
                    nm.lower() == domain.lower() or
                    (is_email and email_domain.lower() == domain.lower())):
                valid = True
                break
            if role["allow_subdomains"] and (
                    reduced.endswith("." + domain) or
                    (is_wildcard and reduced.lower() == domain.lower())):
                valid = True
                break
            if role["allow_glob_domains"] and "*" in domain and \
                    go_glob(domain, nm):
                valid = True
                break
        if valid:
            continue
        return nm
    return ""


def validate_common_name(role, cn):
    validations = role["cn_validations"]
    if validations == ["disabled"]:
        return ""
    if validate_names(role, [cn]):
        return cn
    if not validations:
        return ""
    if "@" in cn:
        return "" if "email" in validations else cn
    return "" if "hostname" in validations else cn


def dedup_stable(items):
    """strutil.RemoveDuplicatesStable: compares trimmed values, drops empty
    ones, keeps each first item as given (untrimmed)."""
    seen = set()
    out = []
    for item in items:
        key = item.strip()
        if key and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def dedup_sorted(items):
    """strutil.RemoveDuplicates: trimmed, empty dropped, sorted."""
    return sorted({item.strip() for item in items if item.strip()})


def parse_other_sans(others):
    result = {}
    for other in others:
        oid, sep, rest = other.partition(";")
        if not sep:
            raise ValueError(f'expected a semicolon in other SAN "{other}"')
        kind, sep, value = rest.partition(":")
        if not sep:
            raise ValueError(f'expected a colon in other SAN "{other}"')
        if kind.lower() not in ("utf8", "utf-8"):
            raise ValueError("only utf8 other SANs are supported; found "
                             f'non-supported type in other SAN "{other}"')
        result.setdefault(oid, []).append(value)
    return result


def _utf8_der(text):
    raw = text.encode("utf-8")
    if len(raw) < 128:
        length = bytes([len(raw)])
    else:
        size = (len(raw).bit_length() + 7) // 8
        length = bytes([0x80 | size]) + len(raw).to_bytes(size, "big")
    return b"\x0c" + length + raw


# --------------------------------------------------------------------------
# Roles (path_roles.go)
# --------------------------------------------------------------------------

_KEY_USAGE_DEFAULT = ["DigitalSignature", "KeyAgreement", "KeyEncipherment"]

ROLE_FIELDS = {
    "backend": Field(STRING), "name": Field(STRING),
    "ttl": Field(DURATION), "max_ttl": Field(DURATION),
    "allow_localhost": Field(BOOL, True),
    "allowed_domains": Field(COMMA_SLICE),
    "allowed_domains_template": Field(BOOL),
    "allow_globs_in_identity_templates": Field(BOOL),
    "allow_bare_domains": Field(BOOL), "allow_subdomains": Field(BOOL),
    "allow_glob_domains": Field(BOOL),
    "allow_wildcard_certificates": Field(BOOL, True),
    "allow_any_name": Field(BOOL), "enforce_hostnames": Field(BOOL, True),
    "allow_ip_sans": Field(BOOL, True),
    "allowed_ip_sans_cidr": Field(COMMA_SLICE),
    "allowed_uri_sans": Field(COMMA_SLICE),
    "allowed_uri_sans_template": Field(BOOL),
    "allowed_other_sans": Field(COMMA_SLICE),
    "allowed_serial_numbers": Field(COMMA_SLICE),
    "allowed_user_ids": Field(COMMA_SLICE),
    "server_flag": Field(BOOL, True), "client_flag": Field(BOOL, True),
    "code_signing_flag": Field(BOOL), "email_protection_flag": Field(BOOL),
    "key_type": Field(STRING, "rsa"), "key_bits": Field(INT, 0),
    "signature_bits": Field(INT, 0), "use_pss": Field(BOOL),
    "key_usage": Field(COMMA_SLICE, _KEY_USAGE_DEFAULT),
    "ext_key_usage": Field(COMMA_SLICE, []),
    "ext_key_usage_oids": Field(COMMA_SLICE),
    "use_csr_common_name": Field(BOOL, True),
    "use_csr_sans": Field(BOOL, True),
    "ou": Field(COMMA_SLICE), "organization": Field(COMMA_SLICE),
    "country": Field(COMMA_SLICE), "locality": Field(COMMA_SLICE),
    "province": Field(COMMA_SLICE), "street_address": Field(COMMA_SLICE),
    "postal_code": Field(COMMA_SLICE),
    "generate_lease": Field(BOOL), "no_store": Field(BOOL),
    "require_cn": Field(BOOL, True),
    "cn_validations": Field(COMMA_SLICE, ["email", "hostname"]),
    "policy_identifiers": Field(COMMA_SLICE),
    "basic_constraints_valid_for_non_ca": Field(BOOL),
    "not_before_duration": Field(DURATION, 30),
    "not_before": Field(STRING), "not_before_bound": Field(STRING, "permit"),
    "not_after": Field(STRING), "not_after_bound": Field(STRING, "permit"),
    "issuer_ref": Field(STRING, "default"),
}

# Keys copied verbatim from the request into the stored role.
_ROLE_COPY = [
    "ttl", "max_ttl", "allow_localhost", "allowed_domains",
    "allowed_domains_template", "allow_globs_in_identity_templates",
    "allow_bare_domains", "allow_subdomains", "allow_glob_domains",
    "allow_any_name", "allowed_uri_sans_template", "enforce_hostnames",
    "allow_ip_sans", "allowed_uri_sans", "server_flag", "client_flag",
    "code_signing_flag", "email_protection_flag", "key_type", "key_bits",
    "signature_bits", "use_pss", "use_csr_common_name", "use_csr_sans",
    "key_usage", "ext_key_usage", "ext_key_usage_oids", "ou",
    "organization", "country", "locality", "province", "street_address",
    "postal_code", "no_store", "require_cn", "cn_validations",
    "allowed_serial_numbers", "allowed_user_ids", "policy_identifiers",
    "basic_constraints_valid_for_non_ca", "not_before_duration",
    "not_before", "not_before_bound", "not_after", "not_after_bound",
]


def _check_cn_validations(values):
    if not values:
        return ["email", "hostname"]
    seen = []
    for value in values:
        low = value.lower()
        if low not in ("disabled", "email", "hostname"):
            raise ValueError(f"cn_validations value incorrect: unknown type: "
                             f"`{value}`")
        if low in seen:
            raise ValueError(f"cn_validations value incorrect: `{low}` "
                             f"specified multiple times")
        seen.append(low)
    if "disabled" in seen and len(seen) > 1:
        raise ValueError("cn_validations value incorrect: cannot specify "
                         "`disabled` along with `email` or `hostname`")
    return seen


def build_role(fd, role_name, issuer_refs):
    """pathRoleCreate + validateRole. Returns (role dict, warnings)."""
    role = {key: fd.get(key) for key in _ROLE_COPY}
    role["name"] = role_name
    role["issuer_ref"] = fd.get("issuer_ref") or "default"
    role["allow_wildcard_certificates"] = fd.get("allow_wildcard_certificates")
    role["allow_token_displayname"] = False
    allowed_other = fd.get("allowed_other_sans")
    if allowed_other and allowed_other != ["*"]:
        try:
            parse_other_sans(allowed_other)
        except ValueError as exc:
            raise user_error(f"error parsing allowed_other_sans: {exc}") \
                from None
    role["allowed_other_sans"] = allowed_other
    cidrs = []
    for text in fd.get("allowed_ip_sans_cidr"):
        try:
            cidrs.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise user_error("error parsing allowed_ip_sans_cidr: invalid "
                             f"CIDR address: {text}") from None
    role["allowed_ip_sans_cidr"] = cidrs
    warnings = []
    if role["no_store"]:
        role["generate_lease"] = False
        if fd.get("generate_lease"):
            warnings.append("mutually exclusive values no_store=true and "
                            "generate_lease=true were both specified; "
                            "no_store=true takes priority")
    else:
        role["generate_lease"] = fd.get("generate_lease")
        if role["generate_lease"]:
            warnings.append(
                "it is encouraged to disable generate_lease and rely on PKI's "
                "native capabilities when possible; this option can cause "
                "instance-wide issues with large numbers of issued "
                "certificates")
    bound, was_set = fd.get_ok("not_after_bound")
    if was_set and bound not in ("permit", "forbid", "ttl-limited"):
        try:
            parse_rfc3339(bound)
        except ValueError:
            raise user_error(
                "Unknown value for field `not_after_bound`. Possible values "
                "are `permit`, `ttl-limited`, `forbid`, or an explicit "
                "timestamp.") from None
    bound, was_set = fd.get_ok("not_before_bound")
    if was_set and bound not in ("permit", "duration", "forbid"):
        raise user_error("Unknown value for field `not_before_bound`. "
                         "Possible values are `permit` `duration` or `forbid`")
    # validateRole
    if role["max_ttl"] > 0 and role["ttl"] > role["max_ttl"]:
        raise user_error('"ttl" value must be less than "max_ttl" value')
    try:
        role["key_bits"], role["signature_bits"] = validate_key_type_bits(
            role["key_type"], role["key_bits"], role["signature_bits"])
    except ValueError as exc:
        raise user_error(str(exc)) from None
    for oid in role["ext_key_usage_oids"]:
        try:
            x509.ObjectIdentifier(oid)
        except ValueError:
            raise user_error(f'"{oid}" could not be parsed as a valid oid '
                             f'for an extended key usage') from None
    if role["issuer_ref"] not in issuer_refs:
        warnings.append(f"Issuing Certificate was set to "
                        f"{role['issuer_ref']} but no issuing certificate "
                        f"currently has that name")
    try:
        role["cn_validations"] = _check_cn_validations(role["cn_validations"])
    except ValueError as exc:
        raise go_error(500, str(exc)) from None
    return role, warnings


def role_response(role):
    """roleEntry.ToResponseData (the map is key-sorted on output)."""
    keys = [
        "ttl", "max_ttl", "allow_localhost", "allowed_domains",
        "allowed_domains_template", "allow_globs_in_identity_templates",
        "allow_bare_domains", "allow_token_displayname", "allow_subdomains",
        "allow_glob_domains", "allow_wildcard_certificates", "allow_any_name",
        "allowed_uri_sans_template", "enforce_hostnames", "allow_ip_sans",
        "allowed_ip_sans_cidr", "server_flag", "client_flag",
        "code_signing_flag", "email_protection_flag", "use_csr_common_name",
        "use_csr_sans", "key_type", "key_bits", "signature_bits", "use_pss",
        "key_usage", "ext_key_usage", "ext_key_usage_oids", "ou",
        "organization", "country", "locality", "province", "street_address",
        "postal_code", "no_store", "allowed_other_sans",
        "allowed_serial_numbers", "allowed_user_ids", "allowed_uri_sans",
        "require_cn", "cn_validations", "policy_identifiers",
        "basic_constraints_valid_for_non_ca", "not_before_duration",
        "not_before", "not_before_bound", "not_after", "not_after_bound",
        "issuer_ref", "generate_lease",
    ]
    return {k: copy.deepcopy(role[k]) for k in keys}


# --------------------------------------------------------------------------
# Issue / sign request fields (fields.go, path_issue_sign.go)
# --------------------------------------------------------------------------

_COMMON_FIELDS = {
    "role": Field(STRING), "common_name": Field(STRING),
    "alt_names": Field(STRING), "serial_number": Field(STRING),
    "ttl": Field(DURATION), "not_before": Field(STRING),
    "not_after": Field(STRING), "remove_roots_from_chain": Field(BOOL),
    "user_ids": Field(COMMA_SLICE),
    "exclude_cn_from_sans": Field(BOOL), "format": Field(STRING, "pem"),
    "private_key_format": Field(STRING, "der"),
    "ip_sans": Field(COMMA_SLICE), "uri_sans": Field(COMMA_SLICE),
    "other_sans": Field(COMMA_SLICE),
}
ISSUE_FIELDS = dict(_COMMON_FIELDS, key_bits=Field(INT, 0),
                    key_type=Field(STRING, ""))
SIGN_FIELDS = dict(_COMMON_FIELDS, csr=Field(STRING, ""))

CRL_DEFAULTS = {
    "expiry": "72h", "disable": False, "ocsp_disable": False,
    "ocsp_expiry": "12h", "auto_rebuild": False,
    "auto_rebuild_grace_period": "12h", "enable_delta": False,
    "delta_rebuild_interval": "15m", "allow_expired_cert_revocation": False,
}
CRL_FIELDS = {
    "expiry": Field(STRING, "72h"), "disable": Field(BOOL),
    "ocsp_disable": Field(BOOL), "ocsp_expiry": Field(STRING, "12h"),
    "auto_rebuild": Field(BOOL),
    "auto_rebuild_grace_period": Field(STRING, "12h"),
    "enable_delta": Field(BOOL),
    "delta_rebuild_interval": Field(STRING, "15m"),
    "allow_expired_cert_revocation": Field(BOOL),
}

_KEY_USAGE_BITS = {
    "digitalsignature": "digital_signature",
    "contentcommitment": "content_commitment",
    "keyencipherment": "key_encipherment",
    "dataencipherment": "data_encipherment",
    "keyagreement": "key_agreement", "certsign": "key_cert_sign",
    "crlsign": "crl_sign", "encipheronly": "encipher_only",
    "decipheronly": "decipher_only",
}
# certutil.AddKeyUsages order.
_EKU_ORDER = [
    ("any", ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE),
    ("serverauth", ExtendedKeyUsageOID.SERVER_AUTH),
    ("clientauth", ExtendedKeyUsageOID.CLIENT_AUTH),
    ("codesigning", ExtendedKeyUsageOID.CODE_SIGNING),
    ("emailprotection", ExtendedKeyUsageOID.EMAIL_PROTECTION),
    ("ipsecendsystem", x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5")),
    ("ipsectunnel", x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6")),
    ("ipsecuser", x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7")),
    ("timestamping", ExtendedKeyUsageOID.TIME_STAMPING),
    ("ocspsigning", ExtendedKeyUsageOID.OCSP_SIGNING),
]
_UID_OID = x509.ObjectIdentifier("0.9.2342.19200300.100.1.1")

CN_REQUIRED = ('the common_name field is required, or must be provided in a '
               'CSR with "use_csr_common_name" set to true, unless '
               '"require_cn" is set to false')


def _pem_block(text):
    """encoding/pem.Decode of the first block: (type, der) or None."""
    m = re.search(r"-----BEGIN ([^-\r\n]*)-----\r?\n(.*?)-----END \1-----",
                  text, re.S)
    if not m:
        return None
    body = "".join(line for line in m.group(2).splitlines()
                   if ":" not in line)
    try:
        return m.group(1), base64.b64decode(body, validate=False)
    except ValueError:
        return None


def _csr_names(csr):
    try:
        ext = csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], [], []
    return (ext.get_values_for_type(x509.DNSName),
            ext.get_values_for_type(x509.RFC822Name),
            ext.get_values_for_type(x509.IPAddress),
            ext.get_values_for_type(x509.UniformResourceIdentifier))


def _name_attr(name_obj, oid):
    attrs = name_obj.get_attributes_for_oid(oid)
    return attrs[0].value if attrs else ""


# --------------------------------------------------------------------------
# The mount
# --------------------------------------------------------------------------

class PkiMount(Backend):
    """One PKI mount with a single (default) issuer."""

    UNAUTH = ("cert/", "ca/pem", "ca_chain", "ca", "crl", "crl/pem")

    def __init__(self, mount, issuer, default_ttl=SYSTEM_DEFAULT_LEASE_TTL,
                 max_ttl=SYSTEM_MAX_LEASE_TTL):
        super().__init__(mount)
        self._lock = threading.RLock()
        self.issuer = issuer
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.roles = {}
        self.certs = {}          # hyphen serial -> DER
        self.revoked = {}        # hyphen serial -> revocation record
        self.crl_config = dict(CRL_DEFAULTS)
        self.crl_number = 0
        self.crl_der = b""
        self._build_crl()
        serial_re = r"(?P<serial>[0-9A-Fa-f\-:]+)"
        page = {"after": Field(STRING), "limit": Field(INT)}
        self.routes = [
            Route("issue/" + name("role"), {UPDATE: self.issue},
                  ISSUE_FIELDS),
            Route("sign/" + name("role"), {UPDATE: self.sign}, SIGN_FIELDS),
            Route("revoke", {UPDATE: self.revoke},
                  {"serial_number": Field(STRING),
                   "certificate": Field(STRING)}),
            Route("ca(?:/pem)?", {READ: self.fetch}),
            Route("(?:cert/)?ca_chain", {READ: self.fetch}),
            Route("crl(?:/pem)?", {READ: self.fetch}),
            Route("cert/crl", {READ: self.fetch}),
            Route(f"cert/{serial_re}/raw(?:/pem)?", {READ: self.fetch},
                  {"serial": Field(STRING)}),
            Route(f"cert/{serial_re}", {READ: self.fetch},
                  {"serial": Field(STRING)}),
            Route("certs/?", {LIST: self.list_certs}, page),
            Route("certs/detailed/?", {LIST: self.list_certs_detailed},
                  page),
            Route("certs/revoked/?", {LIST: self.list_revoked}, page),
            Route("roles/?", {LIST: self.list_roles}, page),
            Route("roles/" + name("name"),
                  {READ: self.read_role, UPDATE: self.write_role,
                   DELETE: self.delete_role}, ROLE_FIELDS),
            Route("config/crl", {READ: self.read_crl_config,
                                 UPDATE: self.write_crl_config}, CRL_FIELDS),
            Route("crl/rotate", {READ: self.rotate_crl}),
        ]

    def is_unauthenticated(self, rel):
        return rel.startswith("cert/") or rel in self.UNAUTH

    # ---- roles ----------------------------------------------------------

    def _issuer_refs(self):
        return {"default", self.issuer.id}

    def add_role(self, role_name, settings):
        """Create a role as `POST roles/:name` with these fields would."""
        fd = FieldData(dict(settings), ROLE_FIELDS)
        fd.validate()
        role, _ = build_role(fd, role_name, self._issuer_refs())
        with self._lock:
            self.roles[role_name] = role

    def read_role(self, req):
        with self._lock:
            role = self.roles.get(req.fd.get("name"))
            return Response(data=role_response(role)) if role else None

    def write_role(self, req):
        role_name = req.fd.get("name")
        role, warnings = build_role(req.fd, role_name, self._issuer_refs())
        with self._lock:
            self.roles[role_name] = role
        return Response(data=role_response(role), warnings=warnings)

    def delete_role(self, req):
        with self._lock:
            self.roles.pop(req.fd.get("name"), None)
        return None

    def list_roles(self, req):
        with self._lock:
            keys = sorted(self.roles)
        return list_response(self._page(keys, req.fd))

    @staticmethod
    def _page(keys, fd):
        after = fd.get("after")
        limit = fd.get("limit")
        if after:
            keys = [k for k in keys if k > after]
        if limit > 0:
            keys = keys[:limit]
        return keys

    # ---- issue / sign -------------------------------------------------------

    def issue(self, req):
        return self._issue_sign(req, use_csr=False)

    def sign(self, req):
        return self._issue_sign(req, use_csr=True)

    def _issue_sign(self, req, use_csr):
        fd = req.fd
        role_name = fd.get("role")
        with self._lock:
            role = copy.deepcopy(self.roles.get(role_name))
        if role is None:
            raise user_error(f"unknown role: {role_name}")
        ignored_key_params = False
        if not use_csr:
            key_type, kt_present = fd.get_ok("key_type")
            key_bits, kb_present = fd.get_ok("key_bits")
            if role["key_type"] == "any":
                if not kt_present:
                    raise user_error(
                        'role key type "any" not allowed for issuing '
                        'certificates without providing key_type and/or '
                        'key_bits request parameters')
                role["key_type"] = key_type
                if kb_present:
                    role["key_bits"] = key_bits
                try:
                    role["key_bits"], role["signature_bits"] = \
                        validate_key_type_bits(role["key_type"],
                                               role["key_bits"],
                                               role["signature_bits"])
                except ValueError as exc:
                    raise go_error(500, f"failed to validate role: {exc}") \
                        from None
            elif kt_present or kb_present:
                ignored_key_params = True
        if role["issuer_ref"] not in self._issuer_refs():
            raise user_error(f"unable to find PKI issuer for reference: "
                             f"{role['issuer_ref']}")
        issuer = self.issuer
        out_format = fd.get("format")
        if out_format not in ("pem", "der", "pem_bundle"):
            raise user_error('the "format" path parameter must be "pem", '
                             '"der", or "pem_bundle"')
        warnings = []
        csr = None
        if use_csr:
            csr = self._parse_csr(fd, role)
        elif role["key_type"] == "rsa" and role["key_bits"] < 2048:
            raise user_error("RSA keys < 2048 bits are unsafe and not "
                             "supported")
        bundle, bundle_warnings = self._creation_bundle(fd, role, issuer, csr)
        warnings.extend(bundle_warnings)
        private_key = None
        if use_csr:
            try:
                csr.extensions.get_extension_for_class(x509.BasicConstraints)
                if not role["basic_constraints_valid_for_non_ca"]:
                    warnings.append("specified CSR contained a Basic "
                                    "Constraints extension that was ignored "
                                    "during issuance")
            except x509.ExtensionNotFound:
                pass
            if not csr.is_signature_valid:
                raise user_error("request signature invalid")
            public_key = csr.public_key()
        else:
            private_key = generate_key(role["key_type"], role["key_bits"])
            public_key = private_key.public_key()
            remember_issued_key(private_key)
        cert = self._build_leaf(bundle, role, public_key, issuer,
                                use_csr)
        data, lease = self._cert_response(cert, private_key, issuer, fd,
                                          out_format, role, req, use_csr)
        if not role["no_store"]:
            with self._lock:
                self.certs[normalize_serial(data["serial_number"])] = \
                    der_of(cert)
        resp = Response(data=data)
        if lease:
            resp.lease_id, resp.lease_duration = lease
        if use_csr:
            if role["use_csr_common_name"] and fd.get("common_name"):
                resp.add_warning('the common_name field was provided but the '
                                 'role is set with "use_csr_common_name" set '
                                 'to true')
            if role["use_csr_sans"] and fd.get("alt_names"):
                resp.add_warning('the alt_names field was provided but the '
                                 'role is set with "use_csr_sans" set to '
                                 'true')
        resp = add_warnings(resp, warnings)
        if ignored_key_params:
            resp.add_warning("parameters key_type and key_bits ignored as "
                             "role had specific values")
        return resp

    @staticmethod
    def _parse_csr(fd, role):
        """signCert's CSR checks, in OpenBao's order."""
        text = fd.get("csr")
        if text == "":
            raise user_error('"csr" is empty')
        block = _pem_block(text)
        if block is None:
            raise user_error("csr contains no data")
        try:
            csr = x509.load_der_x509_csr(block[1])
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise user_error("certificate request could not be parsed: "
                             "x509: malformed certificate request") from None
        actual_type, actual_bits = key_type_of(public_key)
        wanted = role["key_type"]
        if wanted in ("rsa", "ec", "ed25519"):
            if actual_type != wanted:
                raise user_error(f"role requires keys of type {wanted}")
        elif wanted == "any":
            if actual_type == "unknown":
                raise user_error("Unknown key type in CSR: "
                                 f"{type(public_key).__name__}")
            if actual_type == "rsa" and actual_bits < 2048:
                raise user_error("RSA keys < 2048 bits are unsafe and not "
                                 "supported")
            role["key_bits"] = {"rsa": 2048, "ec": 224}.get(actual_type, 0)
        if actual_type in ("rsa", "ec") and actual_bits < role["key_bits"]:
            raise user_error(
                f"role requires a minimum of a {role['key_bits']}-bit key, "
                f"but CSR's key is {actual_bits} bits")
        if actual_type == "rsa" and actual_bits < 2048:
            raise user_error(f"OpenBao requires a minimum of a 2048-bit key, "
                             f"but CSR's key is {actual_bits} bits")
        return csr

    def _creation_bundle(self, fd, role, issuer, csr):
        """generateCreationBundle: names, SANs, subject, validity."""
        use_csr_cn = csr is not None and role["use_csr_common_name"]
        use_csr_sans = csr is not None and role["use_csr_sans"]
        cn = _name_attr(csr.subject, NameOID.COMMON_NAME) if use_csr_cn \
            else ""
        if cn == "":
            cn = fd.get("common_name")
            if cn == "" and role["require_cn"]:
                raise user_error(CN_REQUIRED)
        rid_serial = fd.get("serial_number")
        if rid_serial == "" and csr is not None:
            rid_serial = _name_attr(csr.subject, NameOID.SERIAL_NUMBER)
        dns, emails = [], []
        csr_dns, csr_emails, csr_ips, csr_uris = _csr_names(csr) \
            if csr is not None else ([], [], [], [])
        if use_csr_sans:
            dns, emails = list(csr_dns), list(csr_emails)

        def add_name(value):
            if "@" in value:
                emails.append(value)
                return
            converted, err = idna_to_ascii(value)
            if err:
                raise user_error(err)
            if HOSTNAME_RE.match(converted):
                dns.append(converted)

        if cn and not fd.get("exclude_cn_from_sans"):
            add_name(cn)
        if not use_csr_sans:
            alt, present = fd.get_ok("alt_names")
            if present and alt.strip():
                for value in dedup_stable(alt.strip().split(",")):
                    add_name(value)
        if cn:
            bad = validate_common_name(role, cn)
            if bad:
                raise user_error(f"common name {bad} not allowed by this role")
        if rid_serial:
            allowed = any(
                p and (("*" in p and go_glob(p, rid_serial)) or
                       p == rid_serial)
                for p in role["allowed_serial_numbers"])
            if not allowed:
                raise user_error(f"serial_number {rid_serial} not allowed by "
                                 f"this role")
        bad = validate_names(role, dns)
        if bad:
            raise user_error(f"subject alternate name {bad} not allowed by "
                             f"this role")
        bad = validate_names(role, emails)
        if bad:
            raise user_error(f"email address {bad} not allowed by this role")
        other_sans = self._other_sans(fd.get("other_sans"), role)
        ips = self._ip_sans(fd, role, csr_ips if use_csr_sans else None)
        uris = self._uri_sans(fd, role, csr_uris if use_csr_sans else None)
        not_before = self._not_before(fd, role)
        not_after, warnings = self._not_after(fd, role, issuer)
        user_ids = fd.get("user_ids")
        if not user_ids and csr is not None:
            user_ids = [a.value for a in
                        csr.subject.get_attributes_for_oid(_UID_OID)]
        for uid in user_ids:
            if not self._user_id_allowed(role, uid):
                raise user_error(f"user_id {uid} is not allowed by this role")
        return {
            "cn": cn, "serial_subject": rid_serial,
            "dns": dedup_stable(dns), "emails": dedup_sorted(emails),
            "ips": ips, "uris": uris, "other_sans": other_sans,
            "user_ids": user_ids, "not_before": not_before,
            "not_after": not_after,
        }, warnings

    @staticmethod
    def _other_sans(requested_list, role):
        if not requested_list:
            return {}
        try:
            requested = parse_other_sans(requested_list)
        except ValueError as exc:
            raise user_error(f"could not parse requested other SAN: {exc}") \
                from None
        allowed_list = role["allowed_other_sans"]
        if allowed_list == ["*"]:
            return requested
        try:
            allowed = parse_other_sans(allowed_list)
        except ValueError as exc:
            raise user_error(f"error parsing role's allowed SANs: {exc}") \
                from None
        for oid, values in requested.items():
            for value in values:
                if oid not in allowed:
                    raise user_error(f"other SAN OID {oid} not allowed by "
                                     f"this role")
                if not any(go_glob(p, value) for p in allowed[oid]):
                    raise user_error(f"other SAN {value} not allowed for OID "
                                     f"{oid} by this role")
        return requested

    @staticmethod
    def _ip_sans(fd, role, csr_ips):
        if csr_ips is not None:
            ips, source = list(csr_ips), "CSR"
        else:
            ips, source = [], "the API"
            for value in fd.get("ip_sans"):
                try:
                    ips.append(ipaddress.ip_address(value))
                except ValueError:
                    raise user_error(f'the value "{value}" is not a valid IP '
                                     f'address') from None
        if ips:
            if not role["allow_ip_sans"]:
                raise user_error("IP Subject Alternative Names are not "
                                 f"allowed in this role, but was provided "
                                 f"via {source}")
            nets = [ipaddress.ip_network(c) for c in
                    role["allowed_ip_sans_cidr"]]
            for ip in ips:
                if nets and not any(ip in n for n in nets
                                    if n.version == ip.version):
                    raise user_error(f'the IP address "{ip}" is not allowed '
                                     f'in this role')
        return ips

    @staticmethod
    def _uri_sans(fd, role, csr_uris):
        source = "CSR" if csr_uris is not None else "the API"
        uris = list(csr_uris) if csr_uris is not None else fd.get("uri_sans")
        if not uris:
            return []
        if not role["allowed_uri_sans"]:
            raise user_error("URI Subject Alternative Names are not allowed "
                             f"in this role, but were provided via {source}")
        for uri in uris:
            if not any(go_glob(p, uri) for p in role["allowed_uri_sans"]):
                raise user_error("URI Subject Alternative Names were provided "
                                 f"via {source} which are not valid for this "
                                 f"role")
            parsed = urllib.parse.urlsplit(uri)
            if not parsed.scheme and not parsed.path:
                raise user_error(f'the provided URI Subject Alternative Name '
                                 f'"{uri}" is not a valid URI')
        return uris

    @staticmethod
    def _user_id_allowed(role, uid):
        allowed = role["allowed_user_ids"]
        if any(p.lower() == uid.lower() for p in allowed):
            return True
        return any(p and "*" in p and go_glob(p, uid) for p in allowed)

    @staticmethod
    def _not_before(fd, role):
        """getCertificateNotBefore -> unix ns or None (= now - duration)."""
        bound = role["not_before_bound"]
        alt = role["not_before"]
        if alt == "":
            value, present = fd.get_ok("not_before")
            if present:
                if bound == "permit":
                    alt = value
                elif bound == "duration":
                    try:
                        nb = parse_rfc3339(value)
                    except ValueError as exc:
                        raise user_error(str(exc)) from None
                    limit = now_ns() - role["not_before_duration"] * NS
                    if nb < limit:
                        raise user_error(
                            f"not_before_bound is set to duration. Cannot "
                            f"satisfy request as it would result in notBefore "
                            f"of {rfc3339nano(nb)} that is older than the "
                            f"allowed not_before_duration of "
                            f"{go_duration(role['not_before_duration'] * NS)}")
                    return nb
                elif bound == "forbid":
                    raise user_error("not_before_bound is set to forbid. "
                                     "not_before cannot be provided.")
        if alt:
            try:
                return parse_rfc3339(alt)
            except ValueError as exc:
                raise user_error(str(exc)) from None
        return None

    def _not_after(self, fd, role, issuer):
        """getCertificateNotAfter -> (unix ns, warnings)."""
        warnings = []
        ttl = fd.get("ttl") * NS
        alt = role["not_after"]
        bound = role["not_after_bound"]
        explicit = None
        if alt == "":
            value, present = fd.get_ok("not_after")
            if present and bound == "forbid":
                raise user_error("not_after_bound is set to forbid. "
                                 "not_after cannot be provided.")
            if present:
                alt = value
                try:
                    explicit = parse_rfc3339(alt)
                except ValueError as exc:
                    raise user_error(str(exc)) from None
        if ttl > 0 and alt != "":
            raise user_error("Either ttl or not_after should be provided. "
                             "Both should not be provided in the same "
                             "request.")
        if ttl == 0 and role["ttl"] > 0:
            ttl = role["ttl"] * NS
        max_ttl = role["max_ttl"] * NS if role["max_ttl"] > 0 else 0
        if ttl == 0:
            ttl = self.default_ttl * NS
        if max_ttl == 0:
            max_ttl = self.max_ttl * NS
        if ttl > max_ttl:
            warnings.append(f'TTL "{go_duration(ttl)}" is longer than '
                            f'permitted maxTTL "{go_duration(max_ttl)}", so '
                            f'maxTTL is being used')
            ttl = max_ttl
        now = now_ns()
        if bound == "ttl-limited" and explicit is not None and \
                explicit > now + ttl:
            raise user_error(
                f"not_after_bound is set to ttl-limited. Cannot satisfy "
                f"request as that would result in notAfter of "
                f"{rfc3339nano(explicit)} that is beyond the TTL of "
                f"{go_duration(ttl)}")
        if alt != "":
            try:
                not_after = parse_rfc3339(alt)
            except ValueError as exc:
                raise user_error(str(exc)) from None
        else:
            not_after = now + ttl
        if not_after > issuer.not_after_ns:
            raise user_error(
                f"cannot satisfy request, as TTL would result in notAfter of "
                f"{rfc3339nano(not_after)} that is beyond the expiration of "
                f"the CA certificate at {rfc3339nano(issuer.not_after_ns)}")
        if bound not in ("", "permit", "forbid", "ttl-limited"):
            stamp = parse_rfc3339(bound)
            if not_after > stamp:
                raise user_error(
                    f"not_after_bound is set to {bound}. Cannot statisfy "
                    f"request as that would result in notAfter of "
                    f"{rfc3339nano(not_after)} that is beyond the maximum "
                    f"timestamp of {rfc3339nano(stamp)}")
        return not_after, warnings

    @staticmethod
    def _subject(bundle, role):
        """pkix.Name.ToRDNSequence order: C, ST, L, street, postalCode, O,
        OU, CN, serialNumber, then UIDs."""
        rdns = []
        for key, oid in (("country", NameOID.COUNTRY_NAME),
                         ("province", NameOID.STATE_OR_PROVINCE_NAME),
                         ("locality", NameOID.LOCALITY_NAME),
                         ("street_address", NameOID.STREET_ADDRESS),
                         ("postal_code", NameOID.POSTAL_CODE),
                         ("organization", NameOID.ORGANIZATION_NAME),
                         ("ou", NameOID.ORGANIZATIONAL_UNIT_NAME)):
            values = dedup_stable(role[key])
            if values:
                rdns.append(x509.RelativeDistinguishedName(
                    [x509.NameAttribute(oid, v) for v in values]))
        if bundle["cn"]:
            rdns.append(x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, bundle["cn"])]))
        if bundle["serial_subject"]:
            rdns.append(x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.SERIAL_NUMBER,
                                    bundle["serial_subject"])]))
        for uid in bundle["user_ids"]:
            rdns.append(x509.RelativeDistinguishedName(
                [x509.NameAttribute(_UID_OID, uid)]))
        return x509.Name(rdns)

    def _build_leaf(self, bundle, role, public_key, issuer, use_csr):
        """certutil createCertificate / signCertificate."""
        now = now_ns()
        nb_duration = role["not_before_duration"] * NS or 30 * NS
        not_before = now - nb_duration
        if bundle["not_before"] is not None and not use_csr:
            not_before = bundle["not_before"]
        not_after = bundle["not_after"]
        if not_before > not_after:
            raise user_error(
                f"The certificate's Not Before ({rfc3339nano(not_before)}) "
                f"is later than the certificate's Not After "
                f"({rfc3339nano(not_after)})")
        if not_before == not_after:
            raise user_error(
                f"The certificate's Not Before ({rfc3339nano(not_before)}) "
                f"is equal to the certificate's Not After "
                f"({rfc3339nano(not_after)})")
        subject = self._subject(bundle, role)
        builder = (x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(issuer.cert.subject)
                   .public_key(public_key).serial_number(new_serial())
                   .not_valid_before(utc_dt(not_before))
                   .not_valid_after(utc_dt(not_after)))
        usages = {v: False for v in _KEY_USAGE_BITS.values()}
        for item in role["key_usage"]:
            attr = _KEY_USAGE_BITS.get(item.strip().lower())
            if attr:
                usages[attr] = True
        if any(usages.values()):
            if not usages["key_agreement"]:
                usages["encipher_only"] = usages["decipher_only"] = False
            builder = builder.add_extension(x509.KeyUsage(**usages),
                                            critical=True)
        flags = {item.strip().lower() for item in role["ext_key_usage"]}
        if role["server_flag"]:
            flags.add("serverauth")
        if role["client_flag"]:
            flags.add("clientauth")
        if role["code_signing_flag"]:
            flags.add("codesigning")
        if role["email_protection_flag"]:
            flags.add("emailprotection")
        ekus = [oid for key, oid in _EKU_ORDER if key in flags]
        ekus += [x509.ObjectIdentifier(o) for o in role["ext_key_usage_oids"]]
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus),
                                            critical=False)
        if role["basic_constraints_valid_for_non_ca"]:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=False, path_length=None),
                critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier(ski_of(public_key)), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(issuer.ski, None, None),
            critical=False)
        sans = [x509.DNSName(d) for d in bundle["dns"]]
        sans += [x509.RFC822Name(e) for e in bundle["emails"]]
        sans += [x509.IPAddress(i) for i in bundle["ips"]]
        sans += [x509.UniformResourceIdentifier(u) for u in bundle["uris"]]
        for oid, values in bundle["other_sans"].items():
            for value in values:
                sans.append(x509.OtherName(x509.ObjectIdentifier(oid),
                                           _utf8_der(value)))
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(sans),
                critical=len(subject) == 0)
        return builder.sign(issuer.key, _hash_for(issuer.key))

    def _cert_response(self, cert, private_key, issuer, fd, out_format,
                       role, req, use_csr):
        """pathIssueSignCert's response data (and lease, if the role asks)."""
        chain = list(issuer.chain)
        out_chain = chain
        if fd.get("remove_roots_from_chain"):
            out_chain = [c for c in chain if c.issuer != c.subject]
        pkcs8 = fd.get("private_key_format") == "pkcs8"
        data = {
            "not_before": dt_unix(cert.not_valid_before),
            "expiration": dt_unix(cert.not_valid_after),
            "serial_number": serial_colon(cert.serial_number),
        }
        if out_format in ("pem", "pem_bundle"):
            key_pem = private_key_bytes(
                private_key, serialization.Encoding.PEM).decode().strip() \
                if private_key else ""
            data["issuing_ca"] = issuer.pem
            if out_format == "pem":
                data["certificate"] = pem_of(cert)
            else:
                parts = ([key_pem] if key_pem else []) + [pem_of(cert)] + \
                    [pem_of(c) for c in chain]
                data["certificate"] = "\n".join(parts)
            if out_chain:
                data["ca_chain"] = [pem_of(c) for c in out_chain]
            if private_key is not None:
                data["private_key"] = private_key_bytes(
                    private_key, serialization.Encoding.PEM,
                    pkcs8).decode().strip()
        else:
            b64 = base64.b64encode
            data["certificate"] = b64(der_of(cert)).decode()
            data["issuing_ca"] = b64(issuer.der).decode()
            if out_chain:
                data["ca_chain"] = [b64(der_of(c)).decode()
                                    for c in out_chain]
            if private_key is not None:
                data["private_key"] = b64(private_key_bytes(
                    private_key, serialization.Encoding.DER, pkcs8)).decode()
        if private_key is not None:
            data["private_key_type"] = key_type_of(
                private_key.public_key())[0]
        lease = None
        if role["generate_lease"]:
            lease = (f"{req.path}/{uuid.uuid4()}",
                     max(0, dt_unix(cert.not_valid_after) - int(time.time())))
        return data, lease

    # ---- revocation and CRL ----------------------------------------------

    def revoke(self, req):
        fd = req.fd
        serial_raw, have_serial = fd.get_ok("serial_number")
        cert_raw, have_cert = fd.get_ok("certificate")
        if not have_serial and not have_cert:
            raise user_error("The serial number or certificate to revoke must "
                             "be provided.")
        if have_serial and have_cert:
            raise user_error("Must provide either the certificate or the "
                             "serial to revoke; not both.")
        with self._lock:
            write_cert = False
            if have_cert:
                serial, write_cert, cert = self._presented_cert(cert_raw)
            else:
                serial = serial_raw
                if not serial:
                    raise user_error("The serial number must be provided")
                der = self.certs.get(normalize_serial(serial))
                cert = x509.load_der_x509_certificate(der) if der else None
            if cert is None:
                raise user_error(f"certificate with serial {serial} not "
                                 f"found.")
            if write_cert:
                self.certs[normalize_serial(serial)] = der_of(cert)
            return self._revoke_cert(cert)

    def _presented_cert(self, pem_text):
        """pathRevokeWriteHandleCertificate -> (serial, write, cert)."""
        if len(pem_text) < 75:
            raise user_error("provided certificate data was too short; "
                             "perhaps a path was passed to the API rather "
                             "than the contents of a PEM file")
        block = _pem_block(pem_text)
        if block is None:
            raise user_error("certificate contains no PEM data")
        try:
            cert = x509.load_der_x509_certificate(block[1])
        except ValueError:
            raise user_error("certificate could not be parsed: x509: "
                             "malformed certificate") from None
        serial = serial_colon(cert.serial_number)
        stored = self.certs.get(normalize_serial(serial))
        if stored is not None:
            if stored != der_of(cert):
                raise go_error(500, "certificate with same serial but "
                                    "unequal value already present in this "
                                    "cluster's storage; refusing to revoke")
            return serial, False, cert
        if not signed_by(cert, self.issuer.cert):
            raise user_error(
                "unable to verify signature on presented cert from any "
                "present issuer in this mount; certificates from previous "
                "CAs will need to have their issuing CA and key re-imported "
                "if revocation is necessary") from None
        return serial, True, cert

    def _revoke_cert(self, cert):
        """crl_util.go revokeCert (called with the lock held)."""
        colon = serial_colon(cert.serial_number)
        hyphen = normalize_serial(colon)
        if colon == self.issuer.serial:
            raise user_error(f"adding issuer (id: {self.issuer.id}) to its "
                             f"own CRL is not allowed")
        record = self.revoked.get(hyphen)
        if record is not None:
            return Response(data={
                "revocation_time": record["time_ns"] // NS,
                "revocation_time_rfc3339": rfc3339nano(record["time_ns"]),
                "state": "revoked",
            })
        not_after = dt_unix(cert.not_valid_after)
        if not_after < time.time() + 2 and \
                not self.crl_config["allow_expired_cert_revocation"]:
            return Response(warnings=[
                f"certificate with serial {colon} already expired; refusing "
                f"to add to CRL. Enable 'AllowExpiredCertRevocation' to allow "
                f"revoking expired certificates."])
        now = now_ns()
        self.revoked[hyphen] = {"time_ns": now, "serial": cert.serial_number,
                                "issuer_id": self.issuer.id}
        resp = Response(data={
            "revocation_time": now // NS,
            "revocation_time_rfc3339": rfc3339nano(now),
            "state": "revoked",
        })
        if not self.crl_config["auto_rebuild"]:
            self._build_crl()
        return resp

    def _build_crl(self):
        """A full CRL signed by the issuer (called with the lock held or
        during construction)."""
        issuer = self.issuer
        expiry = parse_duration_seconds(self.crl_config["expiry"])
        now = now_ns()
        self.crl_number += 1
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(issuer.cert.subject)
                   .last_update(utc_dt(now))
                   .next_update(utc_dt(now + expiry * NS)))
        if not self.crl_config["disable"]:
            for hyphen in sorted(self.revoked):
                record = self.revoked[hyphen]
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(record["serial"])
                    .revocation_date(utc_dt(record["time_ns"])).build())
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(issuer.ski, None, None),
            critical=False)
        builder = builder.add_extension(x509.CRLNumber(self.crl_number),
                                        critical=False)
        crl = builder.sign(issuer.key, _hash_for(issuer.key))
        self.crl_der = crl.public_bytes(serialization.Encoding.DER)

    def _crl_pem(self):
        return x509.load_der_x509_crl(self.crl_der).public_bytes(
            serialization.Encoding.PEM).decode().strip()

    def rotate_crl(self, req):
        with self._lock:
            self._build_crl()
        return Response(data={"success": True})

    def read_crl_config(self, req):
        with self._lock:
            return Response(data=dict(self.crl_config))

    def write_crl_config(self, req):
        fd = req.fd
        with self._lock:
            config = dict(self.crl_config)
            for key in ("expiry", "ocsp_expiry", "auto_rebuild_grace_period",
                        "delta_rebuild_interval"):
                value, present = fd.get_ok(key)
                if present:
                    try:
                        seconds = parse_duration_seconds(value)
                    except FieldError as exc:
                        raise user_error(f"given {key} could not be decoded: "
                                         f"{exc}") from None
                    if key == "ocsp_expiry" and seconds < 0:
                        raise user_error(
                            f"ocsp_expiry must be greater than or equal to 0 "
                            f"got: {go_duration(seconds * NS)}")
                    config[key] = value
            for key in ("disable", "ocsp_disable", "auto_rebuild",
                        "enable_delta", "allow_expired_cert_revocation"):
                value, present = fd.get_ok(key)
                if present:
                    config[key] = value
            expiry = parse_duration_seconds(config["expiry"])
            if config["auto_rebuild"] and parse_duration_seconds(
                    config["auto_rebuild_grace_period"]) >= expiry:
                raise user_error(
                    f"CRL auto-rebuilding grace period "
                    f"({config['auto_rebuild_grace_period']}) must be "
                    f"strictly shorter than CRL expiry ({config['expiry']}) "
                    f"value when auto-rebuilding of CRLs is enabled")
            if config["enable_delta"] and parse_duration_seconds(
                    config["delta_rebuild_interval"]) >= expiry:
                raise user_error(
                    f"CRL delta rebuild window "
                    f"({config['delta_rebuild_interval']}) must be strictly "
                    f"shorter than CRL expiry ({config['expiry']}) value when "
                    f"delta CRLs are enabled")
            if not config["auto_rebuild"] and config["enable_delta"]:
                raise user_error("Delta CRLs cannot be enabled when auto "
                                 "rebuilding is disabled as the complete CRL "
                                 "is always regenerated!")
            old = self.crl_config
            self.crl_config = config
            if old["disable"] != config["disable"] or \
                    (old["auto_rebuild"] and not config["auto_rebuild"]) or \
                    old["enable_delta"] != config["enable_delta"]:
                self._build_crl()
            return Response(data=dict(config))

    # ---- fetch and list ---------------------------------------------------

    def fetch(self, req):
        """pathFetchRead: raw DER/PEM bodies or the JSON cert/* shapes."""
        rel = req.rel
        issuer = self.issuer
        if rel == "ca":
            return Response.raw_body("application/pkix-cert", issuer.der)
        if rel == "ca/pem":
            return Response.raw_body("application/pem-certificate-chain",
                                     issuer.pem.encode())
        chain_pem = "\n".join(pem_of(c) for c in issuer.chain)
        if rel == "ca_chain":
            return Response.raw_body("application/pkix-cert",
                                     chain_pem.encode())
        if rel == "cert/ca_chain":
            return Response(data=self._fetch_json(chain_pem,
                                                  ca_chain=chain_pem))
        if rel == "cert/ca":
            return Response(data=self._fetch_json(issuer.pem))
        with self._lock:
            if rel == "crl":
                return Response.raw_body("application/pkix-crl", self.crl_der)
            if rel == "crl/pem":
                return Response.raw_body("application/x-pem-file",
                                         self._crl_pem().encode())
            if rel == "cert/crl":
                return Response(data=self._fetch_json(self._crl_pem()))
            serial = req.fd.get("serial")
            hyphen = normalize_serial(serial)
            der = self.certs.get(hyphen)
            record = self.revoked.get(hyphen)
        if rel.endswith("/raw"):
            return Response.raw_body("application/pkix-cert", der or b"")
        if rel.endswith("/raw/pem"):
            body = pem_of(x509.load_der_x509_certificate(der)).encode() \
                if der else b""
            return Response.raw_body("application/pem-certificate-chain",
                                     body)
        if der is None:
            return None
        data = self._fetch_json(pem_of(x509.load_der_x509_certificate(der)))
        if record is not None:
            data["revocation_time"] = record["time_ns"] // NS
            data["revocation_time_rfc3339"] = rfc3339nano(record["time_ns"])
            data["issuer_id"] = record["issuer_id"]
        return Response(data=data)

    @staticmethod
    def _fetch_json(certificate, ca_chain=None):
        data = {"certificate": certificate, "revocation_time": 0,
                "revocation_time_rfc3339": ""}
        if ca_chain is not None:
            data["ca_chain"] = ca_chain
        return data

    def list_certs(self, req):
        with self._lock:
            keys = sorted(self.certs)
        return list_response([denormalize_serial(k) for k in
                              self._page_serials(keys, req.fd)])

    def list_revoked(self, req):
        with self._lock:
            keys = sorted(self.revoked)
        return list_response([denormalize_serial(k) for k in
                              self._page_serials(keys, req.fd)])

    def _page_serials(self, keys, fd):
        after = normalize_serial(fd.get("after"))
        limit = fd.get("limit")
        if after:
            keys = [k for k in keys if k > after]
        if limit > 0:
            keys = keys[:limit]
        return keys

    def list_certs_detailed(self, req):
        with self._lock:
            certs = dict(self.certs)
        keys = self._page_serials(sorted(certs), req.fd)
        info = {}
        for key in keys:
            cert = x509.load_der_x509_certificate(certs[key])
            try:
                dns = cert.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName).value.get_values_for_type(
                        x509.DNSName)
            except x509.ExtensionNotFound:
                dns = []
            key_type, key_bits = key_type_of(cert.public_key())
            info[denormalize_serial(key)] = {
                "common_name": _name_attr(cert.subject, NameOID.COMMON_NAME),
                "dns_names": dns[:5],
                "issuer": cert.issuer.rfc4514_string(),
                "key_bits": key_bits,
                "key_type": key_type,
                "not_after": rfc3339nano(dt_unix(cert.not_valid_after) * NS),
                "not_before": rfc3339nano(
                    dt_unix(cert.not_valid_before) * NS),
            }
        return list_response([denormalize_serial(k) for k in keys], info)
