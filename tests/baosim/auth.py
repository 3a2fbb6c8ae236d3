"""Authentication side of the simulator: the token store, ACL policies, the
simulated Kubernetes cluster (service-account JWTs and TokenReview), and the
kubernetes / approle / token auth backends.
"""

import base64
import hashlib
import json
import threading
import time
import uuid

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common import (DURATION, INT, NS, STRING,
                    SYSTEM_DEFAULT_LEASE_TTL, SYSTEM_MAX_LEASE_TTL, BaoError,
                    Field, go_error, glob_list_contains, human_duration,
                    now_ns, permission_denied, random_base62, rfc3339nano,
                    user_error)
from framework import (LIST, READ, UPDATE, Backend, Response, Route,
                       list_response, name)

# --------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------

PKI_MOUNTS = ("pki_client_certs", "pki_other")
_ALL = {"create", "read", "update", "delete", "list"}


def _build_policies():
    policies = {
        # OpenBao's built-in default policy (token self-service part).
        "default": {
            "auth/token/lookup-self": {"read", "update"},
            "auth/token/renew-self": {"update"},
            "auth/token/revoke-self": {"update"},
            "sys/capabilities-self": {"update"},
        },
        "cmk-pki": {},
        "cmk-read": {},
    }
    for mount in PKI_MOUNTS:
        # Issue, sign, revoke, read and list everything; roles and CRL
        # configuration are read-only (writing them needs root).
        policies["cmk-pki"][f"{mount}/*"] = set(_ALL)
        policies["cmk-pki"][f"{mount}/roles/*"] = {"read", "list"}
        policies["cmk-pki"][f"{mount}/config/*"] = {"read"}
        policies["cmk-read"][f"{mount}/*"] = {"read", "list"}
    for pol in ("cmk-pki", "cmk-read"):
        policies[pol]["auth/token/lookup-self"] = {"read", "update"}
        policies[pol]["auth/token/renew-self"] = {"update"}
    return policies


POLICIES = _build_policies()

_OP_CAPS = {"read": {"read"}, "list": {"list"}, "update": {"update", "create"},
            "delete": {"delete"}, "patch": {"patch"}, "header": {"read"},
            "scan": {"scan"}}


def acl_allows(policy_names, path, op):
    """Merge the token's policies and apply the most specific rule: an exact
    path beats a glob; among globs the longest prefix wins."""
    if "root" in policy_names:
        return True
    rules = {}
    for pol in policy_names:
        for pattern, caps in POLICIES.get(pol, {}).items():
            rules.setdefault(pattern, set()).update(caps)
    if path in rules:
        caps = rules[path]
    else:
        best = None
        for pattern in rules:
            if pattern.endswith("*") and path.startswith(pattern[:-1]):
                if best is None or len(pattern) > len(best):
                    best = pattern
        if best is None:
            return False
        caps = rules[best]
    return bool(caps & _OP_CAPS.get(op, set()))


# --------------------------------------------------------------------------
# TTL arithmetic (sdk/framework/lease.go CalculateTTL)
# --------------------------------------------------------------------------

def calculate_ttl(increment, backend_ttl, backend_max_ttl, start_ns,
                  now=None):
    """Returns (ttl in nanoseconds, warnings). Raises BaoError when the token
    is already past its max TTL."""
    now = (now or now_ns()) // NS * NS
    start = start_ns // NS * NS if start_ns else now
    max_ttl = SYSTEM_MAX_LEASE_TTL * NS
    if 0 < backend_max_ttl * NS < max_ttl:
        max_ttl = backend_max_ttl * NS
    if increment > 0:
        ttl = increment * NS
    elif backend_ttl > 0:
        ttl = backend_ttl * NS
    else:
        ttl = SYSTEM_DEFAULT_LEASE_TTL * NS
    warnings = []
    max_valid = start + max_ttl - now
    if max_valid <= 0:
        raise go_error(500, "past the max TTL, cannot renew")
    if max_valid - ttl < 0:
        warnings.append(
            f'TTL of "{human_duration(ttl)}" exceeded the effective max_ttl '
            f'of "{human_duration(max_valid)}"; TTL value is capped '
            f'accordingly')
        ttl = max_valid
    return ttl, warnings


# --------------------------------------------------------------------------
# Token store
# --------------------------------------------------------------------------

class TokenEntry:
    def __init__(self, **kw):
        self.id = kw["id"]
        self.accessor = kw["accessor"]
        self.policies = kw["policies"]
        self.path = kw["path"]
        self.meta = kw.get("meta")
        self.display_name = kw["display_name"]
        self.entity_id = kw.get("entity_id", "")
        self.creation_ns = kw["creation_ns"]
        self.creation_ttl = kw.get("creation_ttl", 0)
        self.expire_ns = kw.get("expire_ns")          # None: never expires
        self.renewable = kw.get("renewable", False)
        self.last_renewal_ns = None
        self.role_source = kw.get("role_source")      # callable -> role dict
        self.root = kw.get("root", False)

    def valid(self, now=None):
        return self.expire_ns is None or (now or now_ns()) < self.expire_ns


class TokenStore:
    def __init__(self):
        self._lock = threading.Lock()
        self._tokens = {}

    def _new_id(self):
        while True:
            tid = "s." + random_base62(24)
            if tid not in self._tokens:
                return tid

    def create_root(self):
        with self._lock:
            now = now_ns()
            entry = TokenEntry(id=self._new_id(), accessor=random_base62(24),
                               policies=["root"], path="auth/token/root",
                               display_name="root", creation_ns=now,
                               root=True)
            self._tokens[entry.id] = entry
            return entry

    def create(self, *, policies, path, meta, display_name, entity_id,
               ttl_ns, role_source):
        with self._lock:
            now = now_ns()
            entry = TokenEntry(
                id=self._new_id(), accessor=random_base62(24),
                policies=sorted(set(policies) | {"default"}), path=path,
                meta=meta, display_name=display_name, entity_id=entity_id,
                creation_ns=now, creation_ttl=ttl_ns // NS,
                expire_ns=now + ttl_ns, renewable=True,
                role_source=role_source)
            self._tokens[entry.id] = entry
            return entry

    def lookup(self, token_id):
        """The live entry for a token id, or None (expired ones are revoked,
        as the expiration manager would)."""
        if not token_id:
            return None
        with self._lock:
            entry = self._tokens.get(token_id)
            if entry is None:
                return None
            if not entry.valid():
                del self._tokens[token_id]
                return None
            return entry

    def revoke(self, entry):
        with self._lock:
            self._tokens.pop(entry.id, None)

    def expire_all(self):
        """Every issued non-root token expires now; returns how many."""
        with self._lock:
            now = now_ns()
            count = 0
            for entry in self._tokens.values():
                if not entry.root and entry.valid(now):
                    entry.expire_ns = now
                    count += 1
            return count

    def count(self):
        with self._lock:
            return sum(1 for e in self._tokens.values() if e.valid())

    @staticmethod
    def auth_block(entry, lease_seconds):
        """logical.HTTPAuth in its JSON field order."""
        block = {
            "client_token": entry.id,
            "accessor": entry.accessor,
            "policies": list(entry.policies),
        }
        if not entry.root:
            block["token_policies"] = list(entry.policies)
        block.update({
            "metadata": dict(entry.meta) if entry.meta is not None else None,
            "lease_duration": lease_seconds,
            "renewable": entry.renewable,
            "entity_id": entry.entity_id,
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        })
        return block

    def lookup_data(self, entry):
        now = now_ns()
        data = {
            "id": entry.id,
            "accessor": entry.accessor,
            "policies": list(entry.policies),
            "path": entry.path,
            "meta": dict(entry.meta) if entry.meta is not None else None,
            "display_name": entry.display_name,
            "num_uses": 0,
            "orphan": True,
            "creation_time": entry.creation_ns // NS,
            "creation_ttl": entry.creation_ttl,
            "expire_time": None,
            "ttl": 0,
            "explicit_max_ttl": 0,
            "entity_id": entry.entity_id,
            "type": "service",
        }
        if entry.expire_ns is not None:
            data["expire_time"] = rfc3339nano(entry.expire_ns)
            rounded_now = (now + NS // 2) // NS * NS
            data["ttl"] = int((entry.expire_ns - rounded_now) / NS)
            data["renewable"] = entry.renewable and entry.valid(now)
            data["issue_time"] = rfc3339nano(entry.creation_ns)
            if entry.last_renewal_ns is not None:
                data["last_renewal_time"] = entry.last_renewal_ns // NS
                data["last_renewal"] = rfc3339nano(entry.last_renewal_ns)
        return data

    def renew(self, entry, increment):
        """auth/token/renew-self. Returns a Response with only an auth block
        (and the cap warning when the increment was cut)."""
        if entry.expire_ns is None:
            raise user_error("lease is not renewable")
        role = entry.role_source() if entry.role_source else None
        if role is None:
            raise go_error(500, "role does not exist during renewal")
        ttl_ns, warnings = calculate_ttl(increment, role["token_ttl"],
                                         role["token_max_ttl"],
                                         entry.creation_ns)
        with self._lock:
            now = now_ns()
            entry.expire_ns = now + ttl_ns
            entry.last_renewal_ns = now
        return Response(warnings=warnings,
                        auth=self.auth_block(entry, ttl_ns // NS))


# --------------------------------------------------------------------------
# The simulated Kubernetes cluster
# --------------------------------------------------------------------------

K8S_ISSUER = "https://kubernetes.default.svc.cluster.local"


class Cluster:
    """A fake Kubernetes control plane: it signs projected service-account
    tokens and answers TokenReview."""

    def __init__(self):
        self.signing_key = rsa.generate_private_key(65537, 2048)
        self.public_pem = self.signing_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        der = self.signing_key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = base64.urlsafe_b64encode(
            hashlib.sha256(der).digest()).rstrip(b"=").decode()
        self._uids = {}

    def uid(self, namespace, sa_name):
        return self._uids.setdefault((namespace, sa_name), str(uuid.uuid4()))

    def mint(self, namespace, sa_name, *, exp_delta=365 * 86400, key=None,
             issued_delta=0):
        """A projected service-account token (RS256)."""
        now = int(time.time()) + issued_delta
        claims = {
            "aud": [K8S_ISSUER],
            "exp": now + exp_delta,
            "iat": now - 60 if exp_delta > 0 else now - 7200,
            "iss": K8S_ISSUER,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": sa_name,
                                   "uid": self.uid(namespace, sa_name)},
            },
            "nbf": now - 60 if exp_delta > 0 else now - 7200,
            "sub": f"system:serviceaccount:{namespace}:{sa_name}",
        }
        signer = key or self.signing_key
        kid = self.kid if key is None else "other-" + self.kid[:16]
        return pyjwt.encode(claims, signer, algorithm="RS256",
                            headers={"kid": kid})

    def token_review(self, token):
        """TokenReview: authenticated only for unexpired tokens this cluster
        signed. Returns (namespace, name, uid) or None."""
        try:
            claims = pyjwt.decode(token, self.signing_key.public_key(),
                                  algorithms=["RS256"],
                                  options={"verify_aud": False})
        except pyjwt.PyJWTError:
            return None
        sub = claims.get("sub", "")
        parts = sub.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return None
        info = claims.get("kubernetes.io") or {}
        sa = info.get("serviceaccount") or {}
        return parts[2], parts[3], sa.get("uid", "")


# JWS algorithms the static key set can verify (cap/jwt), and the ones the
# kubernetes auth method then accepts.
_VERIFY_ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                "PS256", "PS384", "PS512", "EdDSA"]
_SUPPORTED_ALGS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
_CLOCK_SKEW = 60          # go-jose jwt.DefaultLeeway
_DEFAULT_LEEWAY = 150     # cap/jwt DefaultLeewaySeconds


def _claim_time(claims, key):
    value = claims.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(key)
    return int(value)


# --------------------------------------------------------------------------
# Auth backends
# --------------------------------------------------------------------------

class AuthRoles:
    """Token TTL settings shared by the preset auth roles (changeable at run
    time through /_sim/config)."""

    def __init__(self, token_ttl, token_max_ttl):
        self._lock = threading.Lock()
        self.token_ttl = token_ttl
        self.token_max_ttl = token_max_ttl

    def update(self, token_ttl=None, token_max_ttl=None):
        with self._lock:
            if token_ttl is not None:
                self.token_ttl = token_ttl
            if token_max_ttl is not None:
                self.token_max_ttl = token_max_ttl

    def ttls(self):
        with self._lock:
            return self.token_ttl, self.token_max_ttl


def _login_token(store, ttls, *, policies, path, meta, display_name,
                 entity_id, role_source):
    ttl, max_ttl = ttls
    ttl_ns, warnings = calculate_ttl(0, ttl, max_ttl, 0)
    entry = store.create(policies=policies, path=path, meta=meta,
                         display_name=display_name, entity_id=entity_id,
                         ttl_ns=ttl_ns, role_source=role_source)
    return Response(warnings=warnings,
                    auth=store.auth_block(entry, ttl_ns // NS))


class KubernetesAuth(Backend):
    """auth/kubernetes: login with a service-account JWT."""

    def __init__(self, mount, store, cluster, roles_cfg, on_login,
                 kubernetes_ca_pem):
        super().__init__(mount)
        self.store = store
        self.cluster = cluster
        self.cfg = roles_cfg
        self.on_login = on_login
        self.kubernetes_ca_pem = kubernetes_ca_pem
        self.pem_keys = [cluster.public_pem]
        self.roles = {
            "cmk-api-server-role": {"names": ["cmk-api-server"],
                                    "namespaces": ["openkcm-system"],
                                    "policies": ["cmk-pki"]},
            "cmk-readonly-role": {"names": ["cmk-api-server"],
                                  "namespaces": ["openkcm-system"],
                                  "policies": ["cmk-read"]},
        }
        self._entities = {}
        self.routes = [
            Route("login", {UPDATE: self.login},
                  {"role": Field(STRING), "jwt": Field(STRING)},
                  unauth=True, login=True),
            Route("config", {READ: self.read_config}),
            Route("role/?", {LIST: self.list_roles},
                  {"after": Field(STRING), "limit": Field(INT)}),
            Route("role/" + name("name"), {READ: self.read_role},
                  {"name": Field(STRING)}),
        ]

    def role(self, role_name):
        spec = self.roles.get(role_name.lower())
        if spec is None:
            return None
        ttl, max_ttl = self.cfg.ttls()
        return dict(spec, token_ttl=ttl, token_max_ttl=max_ttl)

    def login(self, req):
        fd = req.fd
        role_name = fd.get("role")
        if not role_name:
            raise user_error("missing role")
        token = fd.get("jwt")
        if not token:
            raise user_error("missing jwt")
        role = self.role(role_name)
        if role is None:
            raise user_error(f'invalid role name "{role_name}"')
        claims = self._validate_jwt(token)
        sa = self._service_account(claims)
        if not glob_list_contains(role["names"], sa["name"]):
            raise BaoError(403, "service account name not authorized")
        if not (role["namespaces"][0] == "*" or
                glob_list_contains(role["namespaces"], sa["namespace"])):
            raise BaoError(403, "namespace not authorized")
        review = self.cluster.token_review(token)
        if review is None or review != (sa["namespace"], sa["name"],
                                        sa["uid"]):
            raise permission_denied()
        meta = {
            "role": role_name,
            "service_account_name": sa["name"],
            "service_account_namespace": sa["namespace"],
            "service_account_secret_name": sa["secret_name"],
            "service_account_uid": sa["uid"],
        }
        entity = self._entities.setdefault(sa["uid"], str(uuid.uuid4()))
        key = role_name.lower()
        resp = _login_token(
            self.store, self.cfg.ttls(), policies=role["policies"],
            path="auth/kubernetes/login", meta=meta,
            display_name=f"kubernetes-{sa['namespace']}-{sa['name']}",
            entity_id=entity, role_source=lambda: self.role(key))
        self.on_login()
        return resp

    def _validate_jwt(self, token):
        """cap/jwt ValidateAllowMissingIatNbfExp against pem_keys."""
        key = self.cluster.signing_key.public_key()
        try:
            payload = pyjwt.api_jws.PyJWS().decode_complete(
                token, key, algorithms=_VERIFY_ALGS)
            claims = json.loads(payload["payload"])
            if not isinstance(claims, dict):
                raise ValueError("claims")
        except (pyjwt.PyJWTError, ValueError, TypeError):
            # "error verifying token signature: ..." is collapsed
            raise permission_denied() from None
        if payload["header"].get("alg") not in _SUPPORTED_ALGS:
            raise BaoError(403, "invalid algorithm (alg) header parameter: "
                                "token signed with unexpected algorithm")
        try:
            iat = _claim_time(claims, "iat")
            exp = _claim_time(claims, "exp")
            nbf = _claim_time(claims, "nbf")
        except ValueError:
            raise permission_denied() from None
        if iat == 0 and exp == 0 and nbf == 0:
            return claims
        if exp == 0:
            exp = max(iat, nbf) + _DEFAULT_LEEWAY
        if nbf == 0:
            nbf = iat if iat else exp - _DEFAULT_LEEWAY
        now = time.time()
        if now + _CLOCK_SKEW < nbf:
            raise BaoError(403, "invalid not before (nbf) claim: token not "
                                "yet valid")
        if now - _CLOCK_SKEW > exp:
            raise BaoError(403, "invalid expiration time (exp) claim: token "
                                "is expired")
        if iat and now + _CLOCK_SKEW < iat:
            raise BaoError(403, "invalid issued at (iat) claim: token issued "
                                "in the future")
        return claims

    @staticmethod
    def _service_account(claims):
        projected = claims.get("kubernetes.io")
        if isinstance(projected, dict):
            sa = projected.get("serviceaccount") or {}
            return {"namespace": str(projected.get("namespace", "")),
                    "name": str(sa.get("name", "")),
                    "uid": str(sa.get("uid", "")), "secret_name": ""}
        prefix = "kubernetes.io/serviceaccount/"
        return {"namespace": str(claims.get(prefix + "namespace", "")),
                "name": str(claims.get(prefix + "service-account.name", "")),
                "uid": str(claims.get(prefix + "service-account.uid", "")),
                "secret_name": str(claims.get(prefix + "secret.name", ""))}

    def read_config(self, req):
        return Response(data={
            "kubernetes_host": "https://kubernetes.default.svc",
            "kubernetes_ca_cert": self.kubernetes_ca_pem,
            "pem_keys": list(self.pem_keys),
            "issuer": "",
            "disable_iss_validation": True,
            "disable_local_ca_jwt": False,
            "token_reviewer_jwt_set": False,
        })

    def list_roles(self, req):
        return list_response(sorted(self.roles))

    def read_role(self, req):
        role = self.role(req.fd.get("name"))
        if role is None:
            return None
        return Response(data={
            "alias_name_source": "serviceaccount_uid",
            "bound_service_account_names": role["names"],
            "bound_service_account_namespace_selector": "",
            "bound_service_account_namespaces": role["namespaces"],
            "token_bound_cidrs": [],
            "token_explicit_max_ttl": 0,
            "token_max_ttl": role["token_max_ttl"],
            "token_no_default_policy": False,
            "token_num_uses": 0,
            "token_period": 0,
            "token_policies": role["policies"],
            "token_strictly_bind_ip": False,
            "token_ttl": role["token_ttl"],
            "token_type": "default",
        })


class AppRoleAuth(Backend):
    """auth/approle: login with role_id + secret_id."""

    ROLE = "cmk-api-server"

    def __init__(self, mount, store, roles_cfg, on_login):
        super().__init__(mount)
        self.store = store
        self.cfg = roles_cfg
        self.on_login = on_login
        self.role_id = str(uuid.uuid4())
        self.secret_id = str(uuid.uuid4())
        self.entity_id = str(uuid.uuid4())
        self.routes = [
            Route("login", {UPDATE: self.login},
                  {"role_id": Field(STRING), "secret_id": Field(STRING)},
                  unauth=True, login=True),
        ]

    def role(self):
        ttl, max_ttl = self.cfg.ttls()
        return {"policies": ["cmk-pki"], "token_ttl": ttl,
                "token_max_ttl": max_ttl}

    def login(self, req):
        role_id = req.fd.get("role_id").strip()
        if not role_id:
            raise user_error("missing role_id")
        if role_id != self.role_id:
            raise user_error("invalid role or secret ID")
        secret_id = req.fd.get("secret_id").strip()
        if not secret_id:
            raise user_error("missing secret_id")
        if secret_id != self.secret_id:
            raise user_error("invalid role or secret ID")
        resp = _login_token(
            self.store, self.cfg.ttls(), policies=self.role()["policies"],
            path="auth/approle/login", meta={"role_name": self.ROLE},
            display_name="approle", entity_id=self.entity_id,
            role_source=self.role)
        self.on_login()
        return resp


class TokenAuth(Backend):
    """auth/token: the self-service endpoints."""

    def __init__(self, mount, store):
        super().__init__(mount)
        self.store = store
        self.routes = [
            Route("lookup-self", {READ: self.lookup_self,
                                  UPDATE: self.lookup_self},
                  {"token": Field(STRING)}),
            Route("renew-self", {UPDATE: self.renew_self},
                  {"token": Field(STRING), "increment": Field(DURATION)}),
            Route("revoke-self", {UPDATE: self.revoke_self}),
        ]

    def lookup_self(self, req):
        return Response(data=self.store.lookup_data(req.token))

    def renew_self(self, req):
        return self.store.renew(req.token, req.fd.get("increment"))

    def revoke_self(self, req):
        self.store.revoke(req.token)
        return None

