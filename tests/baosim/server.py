"""The simulator core (request pipeline, seal state, fault injection,
statistics, the /_sim control API) and its HTTPS server.

Request pipeline for /v1/ paths, in OpenBao's order:
  fault injection (test hook) -> sys/health, sys/seal-status (own handlers)
  -> HTTP method to operation -> body parsing -> sealed? -> namespace
  -> token + ACL (unless the path is unauthenticated) -> mount route
  -> field validation -> handler -> envelope / error body.
"""

import http.server
import json
import re
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

from cryptography.hazmat.primitives.serialization import Encoding

from auth import (AppRoleAuth, AuthRoles, Cluster, KubernetesAuth,
                  TokenAuth, TokenStore, acl_allows)
from common import (VERSION, BaoError, acl_denied, go_json, multierror,
                    parse_duration_seconds, parse_json_body,
                    permission_denied, rfc3339nano, sorted_map, to_bool,
                    unsupported_path, user_error)
from framework import (DELETE, HEADER, LIST, PATCH, READ, SCAN, UPDATE,
                       Backend, Request)
from pki import Issuer, PkiMount, issued_keys, make_ca

MAX_REQUEST_SIZE = 32 * 1024 * 1024

# sys/ paths that refuse an X-Vault-Namespace header (handler.go).
_RESTRICTED_SYS = {"raw", "generate-recovery-token", "init", "seal", "unseal",
                   "step-down", "rekey", "rekey-recovery-key",
                   "generate-root", "metrics", "pprof", "storage",
                   "in-flight-req", "health"}

PRESET_ROLE = {
    "allowed_domains": ["tenant-*.keystore.internal", "tenant-*.internal"],
    "allow_glob_domains": True, "allow_subdomains": False,
    "allow_bare_domains": False, "allow_localhost": False,
    "enforce_hostnames": True, "key_type": "any", "key_bits": 0,
    "max_ttl": 315360000, "ttl": 0, "client_flag": True,
    "server_flag": False, "use_csr_common_name": True,
    "use_csr_sans": True, "no_store": False, "not_before_duration": 30,
}


class Answer:
    """An HTTP answer: status, headers, body (None = no body)."""

    def __init__(self, status, body=None, content_type=None, headers=None,
                 drop=False):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        if content_type:
            self.headers["Content-Type"] = content_type
        self.drop = drop


def json_answer(status, obj, headers=None):
    return Answer(status, go_json(obj), "application/json", headers)


def error_answer(status, errors, headers=None):
    return json_answer(status, {"errors": list(errors)}, headers)


# --------------------------------------------------------------------------
# Fault injection and statistics
# --------------------------------------------------------------------------

_FAULT_TEXT = {
    500: multierror("internal error"),
    502: multierror("upstream rate limited"),
    503: "Vault is sealed",
    504: multierror("context deadline exceeded"),
}


class Faults:
    """POST /_sim/faults state. `count` requests (matching `path`) get the
    latency and/or status; `drop` requests are cut without an answer."""

    def __init__(self):
        self._lock = threading.Lock()
        self.clear()

    def clear(self):
        self.cfg = {"latency_ms": 0, "status": 0, "count": 0,
                    "retry_after": None, "drop": 0, "path": "",
                    "errors": None}

    def configure(self, body):
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        cfg = {"latency_ms": 0, "status": 0, "count": 0,
               "retry_after": None, "drop": 0, "path": "", "errors": None}
        for key in ("latency_ms", "status", "drop"):
            if key in body:
                cfg[key] = int(body[key])
        if body.get("retry_after") is not None:
            cfg["retry_after"] = int(body["retry_after"])
        cfg["path"] = str(body.get("path") or "")
        if body.get("errors") is not None:
            if not isinstance(body["errors"], list):
                raise ValueError("errors must be a list of strings")
            cfg["errors"] = [str(e) for e in body["errors"]]
        if "count" in body:
            cfg["count"] = int(body["count"])
        elif cfg["status"] or cfg["latency_ms"]:
            cfg["count"] = 1
        with self._lock:
            self.cfg = cfg
        return self.snapshot()

    def reset(self):
        with self._lock:
            self.clear()

    def snapshot(self):
        with self._lock:
            return dict(self.cfg)

    def _matches(self, rel):
        prefix = self.cfg["path"]
        if not prefix:
            return True
        if prefix.startswith("/v1/"):
            return ("/v1/" + rel).startswith(prefix)
        return rel.startswith(prefix.lstrip("/"))

    def take(self, rel):
        """Consume the fault for one /v1/ request: returns None, "drop", or
        (latency seconds, status, retry_after, errors)."""
        with self._lock:
            cfg = self.cfg
            if not self._matches(rel):
                return None
            if cfg["drop"] > 0:
                cfg["drop"] -= 1
                return "drop"
            if cfg["count"] == 0 or not (cfg["status"] or cfg["latency_ms"]):
                return None
            if cfg["count"] > 0:
                cfg["count"] -= 1
            return (cfg["latency_ms"] / 1000.0, cfg["status"],
                    cfg["retry_after"], cfg["errors"])


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        self.requests = 0
        self.by_path = {}
        self.by_status = {}
        self.logins = 0
        self.login_failures = 0

    def clear(self):
        with self._lock:
            self.reset()

    def request(self, path):
        with self._lock:
            self.requests += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1

    def status(self, code):
        with self._lock:
            key = str(code)
            self.by_status[key] = self.by_status.get(key, 0) + 1

    def login(self, ok):
        with self._lock:
            if ok:
                self.logins += 1
            else:
                self.login_failures += 1

    def snapshot(self):
        with self._lock:
            return {"requests": self.requests, "by_path": dict(self.by_path),
                    "by_status": dict(self.by_status), "logins": self.logins,
                    "login_failures": self.login_failures}


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------

class Simulator:
    def __init__(self, token_ttl=3600, token_max_ttl=86400):
        self.sealed = False
        self.cluster_name = "openbao-cluster-" + uuid.uuid4().hex[:8]
        self.cluster_id = str(uuid.uuid4())
        self.faults = Faults()
        self.stats = Stats()
        self.store = TokenStore()
        self.root_token = self.store.create_root()
        self.cluster = Cluster()
        self.auth_roles = AuthRoles(token_ttl, token_max_ttl)
        self.tls_ca_cert, self.tls_ca_key = make_ca("baosim TLS CA", 3650)

        root_cert, root_key = make_ca("cmkcert test root", 20 * 365)
        root = Issuer(root_cert, root_key)
        inter_cert, inter_key = make_ca("cmkcert test issuing CA", 10 * 365,
                                        parent=root)
        self.pki_root = root
        self.pki_issuer = Issuer(inter_cert, inter_key, parents=[root_cert])
        other_cert, other_key = make_ca("cmkcert other root", 20 * 365)
        other_root = Issuer(other_cert, other_key)
        oi_cert, oi_key = make_ca("cmkcert other issuing CA", 10 * 365,
                                  parent=other_root)
        self.other_issuer = Issuer(oi_cert, oi_key, parents=[other_cert])

        self.mounts = {}
        for mount, issuer in (("pki_client_certs/", self.pki_issuer),
                              ("pki_other/", self.other_issuer)):
            pki = PkiMount(mount, issuer)
            pki.add_role("openkcm-client-cert-role", PRESET_ROLE)
            pki.add_role("openkcm-client-cert-nostore",
                         dict(PRESET_ROLE, no_store=True))
            pki.add_role("openkcm-short-ttl", dict(PRESET_ROLE, max_ttl=3600))
            self.mounts[mount] = pki
        self.kubernetes = KubernetesAuth(
            "auth/kubernetes/", self.store, self.cluster, self.auth_roles,
            lambda: self.stats.login(True),
            self.tls_ca_cert.public_bytes(Encoding.PEM).decode())
        self.approle = AppRoleAuth("auth/approle/", self.store,
                                   self.auth_roles,
                                   lambda: self.stats.login(True))
        self.mounts["auth/kubernetes/"] = self.kubernetes
        self.mounts["auth/approle/"] = self.approle
        self.mounts["auth/token/"] = TokenAuth("auth/token/", self.store)
        self.mounts["sys/"] = Backend("sys/")

    # ---- entry point ------------------------------------------------------

    def handle(self, method, raw_path, query, headers, body, remote):
        if raw_path.startswith("/_sim/") or raw_path == "/_sim":
            return self.control(method, raw_path, body)
        if not raw_path.startswith("/v1/"):
            return error_answer(404, [])
        rel = raw_path[len("/v1/"):]
        self.stats.request(raw_path)
        fault = self.faults.take(rel)
        if fault == "drop":
            return Answer(0, drop=True)
        if fault is not None:
            latency, status, retry_after, errors = fault
            if latency:
                time.sleep(latency)
            if status:
                return self._fault_answer(rel, status, retry_after, errors)
        try:
            answer = self._handle_v1(method, rel, query, headers, body,
                                     remote)
        except BaoError as exc:
            answer = error_answer(exc.status, exc.error_list(), exc.headers)
        ns = headers.get("X-Vault-Namespace")
        if ns is not None:
            answer.headers["X-Vault-Namespace"] = ns
        self.stats.status(answer.status)
        return answer

    @staticmethod
    def _fault_answer(rel, status, retry_after, errors):
        if errors is None:
            if status == 429:
                errors = [f'request path "{rel}": rate limit quota exceeded']
            else:
                errors = [_FAULT_TEXT.get(
                    status, multierror(f"simulated fault (HTTP {status})"))]
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return error_answer(status, errors, headers)

    # ---- /v1/ pipeline -----------------------------------------------------

    def _handle_v1(self, method, rel, query, headers, body, remote):
        ns_header = headers.get("X-Vault-Namespace")
        if ns_header and rel.startswith("sys/") and \
                rel[4:].split("/")[0] in _RESTRICTED_SYS:
            return error_answer(400, ["operation unavailable in namespaces"])
        if rel == "sys/health":
            return self._health(method, query)
        if rel == "sys/seal-status":
            if method != "GET":
                return error_answer(405, [])
            return json_answer(200, self._seal_status())

        op, path, data = self._operation(method, rel, query, headers, body)
        if self.sealed:
            raise BaoError(503, "Vault is sealed")
        if ns_header and ns_header.strip("/") not in ("", "root"):
            raise BaoError(404, "namespace not found")
        token_id = headers.get("X-Vault-Token") or ""
        if not token_id:
            auth_header = headers.get("Authorization") or ""
            if auth_header.startswith("Bearer "):
                token_id = auth_header[len("Bearer "):].strip()
        req = Request(op, path, data, headers=headers, remote_addr=remote,
                      client_token=token_id)
        if path.endswith("/") and op in (UPDATE, PATCH):
            raise user_error("cannot write to a path ending in '/'")

        backend = self._mount_for(path)
        login = False
        if backend is not None:
            req.mount = backend.mount
            req.rel = path[len(backend.mount):]
            req.route, req.captures = backend.match(req.rel)
            login = backend.is_login(req.rel)
            unauth = backend.is_unauthenticated(req.rel)
        else:
            unauth = False
        if not unauth:
            entry = self.store.lookup(token_id)
            if entry is None:
                raise permission_denied()
            if not acl_allows(entry.policies, path, op):
                raise acl_denied()
            req.token = entry
        if backend is None:
            raise unsupported_path()
        try:
            resp = backend.handle(req)
        except BaoError as exc:
            if login:
                self.stats.login(False)
            return error_answer(exc.status, exc.error_list(login),
                                exc.headers)
        return self._respond(op, resp)

    def _operation(self, method, rel, query, headers, body):
        """buildLogicalRequestNoAuth: (operation, path, data)."""
        data = {}
        path = rel
        if method == "GET":
            op = READ
            flags = {}
            for key in ("list", "scan"):
                value = (query.get(key) or [""])[0]
                try:
                    flags[key] = _parse_go_bool(value) if value else False
                except ValueError:
                    raise BaoError(400) from None
            if flags["list"] and flags["scan"]:
                raise BaoError(400)
            if flags["list"] or flags["scan"]:
                op = LIST if flags["list"] else SCAN
                query = {k: v for k, v in query.items()
                         if k != ("list" if flags["list"] else "scan")}
                if not path.endswith("/"):
                    path += "/"
            data = _query_data(query)
        elif method in ("POST", "PUT"):
            op = UPDATE
            data = _body_data(headers, body)
        elif method == "PATCH":
            op = PATCH
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype != "application/merge-patch+json":
                raise BaoError(415, "PATCH requires Content-Type of "
                                    "application/merge-patch+json, provided "
                                    f"{ctype}")
            data = _body_data(headers, body, form_ok=False)
        elif method in ("LIST", "SCAN"):
            op = LIST if method == "LIST" else SCAN
            if not path.endswith("/"):
                path += "/"
            data = _query_data(query)
        elif method == "DELETE":
            op = DELETE
            data = _query_data(query)
        elif method == "HEAD":
            op = HEADER
            data = _query_data(query)
        else:
            raise BaoError(405)
        return op, path, data

    def _mount_for(self, path):
        best = None
        for mount in self.mounts:
            if path.startswith(mount) or path + "/" == mount:
                if best is None or len(mount) > len(best):
                    best = mount
        return self.mounts[best] if best else None

    @staticmethod
    def _respond(op, resp):
        """respondLogical / RespondErrorCommon."""
        if resp is None:
            if op in (READ, HEADER, LIST, SCAN):
                return error_answer(404, [])
            return Answer(204)
        if resp.raw is not None:
            status, ctype, body = resp.raw
            if status == 204:
                return Answer(204, None, None)
            return Answer(status, body, ctype)
        if op in (LIST, SCAN):
            data = resp.data or {}
            if (not data and not resp.warnings) or \
                    ("keys" in data and not data["keys"]):
                return error_answer(404, [])
        auth = None
        if resp.auth is not None:
            auth = dict(resp.auth)
            if auth.get("metadata") is not None:
                auth["metadata"] = sorted_map(auth["metadata"])
        envelope = {
            "request_id": str(uuid.uuid4()),
            "lease_id": resp.lease_id,
            "renewable": False,
            "lease_duration": resp.lease_duration,
            "data": sorted_map(resp.data) if resp.data is not None else None,
            "wrap_info": None,
            "warnings": list(resp.warnings) if resp.warnings else None,
            "auth": auth,
        }
        return json_answer(200, envelope)

    # ---- sys/health and sys/seal-status ------------------------------------

    def _health(self, method, query):
        if method not in ("GET", "HEAD"):
            return error_answer(405, [])
        try:
            if "standbyok" in query:
                to_bool(query["standbyok"][0])
        except ValueError:
            return error_answer(400, [])
        codes = {"uninitcode": 501, "sealedcode": 503, "standbycode": 429,
                 "activecode": 200}
        for key in codes:
            if key in query:
                try:
                    codes[key] = _go_atoi(query[key][0])
                except ValueError:
                    return error_answer(400, [])
        sealed = self.sealed
        code = codes["sealedcode"] if sealed else codes["activecode"]
        body = {
            "initialized": True,
            "sealed": sealed,
            "standby": sealed,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": VERSION,
        }
        if not sealed:
            body["cluster_name"] = self.cluster_name
            body["cluster_id"] = self.cluster_id
        if method == "HEAD":
            return Answer(code, None, "application/json")
        return json_answer(code, body)

    def _seal_status(self):
        body = {
            "type": "shamir", "initialized": True, "sealed": self.sealed,
            "t": 1, "n": 1, "progress": 0, "nonce": "",
            "recovery_seal": False, "version": VERSION,
            "commit_date": "2026-08-18T09:00:00Z", "migration": False,
        }
        if not self.sealed:
            body["cluster_name"] = self.cluster_name
            body["cluster_id"] = self.cluster_id
        body["storage_type"] = "inmem"
        return body

    # ---- /_sim control API -------------------------------------------------

    def control(self, method, path, body):
        try:
            payload = json.loads(body.decode() or "{}") if body else {}
        except ValueError as exc:
            return error_answer(400, [f"invalid JSON: {exc}"])
        if not isinstance(payload, dict):
            return error_answer(400, ["body must be a JSON object"])
        route = (method, path.rstrip("/"))
        try:
            if route == ("GET", "/_sim/faults"):
                return json_answer(200, self.faults.snapshot())
            if route == ("POST", "/_sim/faults"):
                return json_answer(200, self.faults.configure(payload))
            if route == ("DELETE", "/_sim/faults"):
                self.faults.reset()
                return json_answer(200, self.faults.snapshot())
            if route == ("POST", "/_sim/seal"):
                self.sealed = bool(payload.get("sealed", True))
                return json_answer(200, {"sealed": self.sealed})
            if route == ("POST", "/_sim/tokens/expire"):
                return json_answer(200, {"expired": self.store.expire_all()})
            if route in (("POST", "/_sim/config"), ("GET", "/_sim/config")):
                if method == "POST":
                    self.auth_roles.update(
                        _opt_int(payload.get("token_ttl")),
                        _opt_int(payload.get("token_max_ttl")))
                ttl, max_ttl = self.auth_roles.ttls()
                return json_answer(200, {"token_ttl": ttl,
                                         "token_max_ttl": max_ttl})
            if route == ("GET", "/_sim/stats"):
                return json_answer(200, self.stats.snapshot())
            if route == ("POST", "/_sim/stats/reset"):
                self.stats.clear()
                return json_answer(200, self.stats.snapshot())
            if route == ("POST", "/_sim/reset"):
                self.faults.reset()
                self.sealed = False
                return json_answer(200, {"faults": self.faults.snapshot(),
                                         "sealed": self.sealed})
            if route == ("GET", "/_sim/issued-keys"):
                return json_answer(200, {"keys": issued_keys()})
            if route == ("GET", "/_sim/time"):
                now = time.time_ns()
                return json_answer(200, {"unix": now // 10 ** 9,
                                         "unix_ns": now,
                                         "rfc3339": rfc3339nano(now)})
        except (TypeError, ValueError) as exc:
            return error_answer(400, [str(exc)])
        return error_answer(404, [f"unknown control path {method} {path}"])


def _opt_int(value):
    if value is None:
        return None
    return parse_duration_seconds(value if not isinstance(value, bool)
                                  else int(value))


def _parse_go_bool(text):
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def _go_atoi(text):
    """strconv.Atoi: optional sign, decimal digits only."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(text)
    return int(text)


def _query_data(query):
    return {k: (v[0] if len(v) == 1 else list(v)) for k, v in query.items()}


def _body_data(headers, body, form_ok=True):
    """JSON body (numbers kept as text) or a form when the content type says
    so and the body does not start with { or [ (isForm)."""
    if not body:
        return {}
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    head = body.lstrip()[:1]
    if form_ok and ctype == "application/x-www-form-urlencoded" and \
            head not in (b"{", b"["):
        try:
            form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BaoError(400, "error parsing form data") from None
        return _query_data(form)
    try:
        data = parse_json_body(body)
    except UnicodeDecodeError:
        raise BaoError(400, "failed to parse JSON input: invalid character "
                            "in string literal") from None
    except ValueError as exc:
        raise BaoError(400, "failed to parse JSON input: "
                            + _json_error_text(body, exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "array" if isinstance(data, list) else (
            "string" if isinstance(data, str) else "number")
        if isinstance(data, bool):
            kind = "bool"
        raise BaoError(400, f"failed to parse JSON input: json: cannot "
                            f"unmarshal {kind} into Go value of type "
                            f"map[string]interface {{}}")
    return data


def _json_error_text(body, exc):
    pos = getattr(exc, "pos", None)
    text = body.decode("utf-8", "replace")
    if pos is None or pos >= len(text):
        return "unexpected EOF"
    return f"invalid character '{text[pos]}' looking for beginning of value"




# --------------------------------------------------------------------------
# HTTP(S) server
# --------------------------------------------------------------------------

class _BodyError(Exception):
    def __init__(self, answer):
        super().__init__(answer.status)
        self.answer = answer


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120              # idle keep-alive connections are closed

    def __getattr__(self, attr):
        # Every method (GET, POST, LIST, SCAN, FOO, ...) goes to _dispatch;
        # the simulator answers unknown ones with 405.
        if attr.startswith("do_"):
            return self._dispatch
        raise AttributeError(attr)

    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, fmt, *args):
        self.server.log(fmt % args)

    def send_response(self, code, message=None):
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n",
                                                             b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_SIZE:
                    raise _BodyError(error_answer(
                        413, ["http: request body too large"]))
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_SIZE:
            raise _BodyError(error_answer(413,
                                          ["http: request body too large"]))
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self):
        started = time.monotonic()
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        try:
            body = self._read_body()
            query = urllib.parse.parse_qs(split.query,
                                          keep_blank_values=True)
            answer = self.server.sim.handle(self.command, path, query,
                                            self.headers, body,
                                            self.client_address[0])
        except _BodyError as exc:
            self.close_connection = True
            answer = exc.answer
        except Exception:          # a simulator bug: answer like Go would
            self.server.log(traceback.format_exc().rstrip())
            answer = error_answer(500, [multierror("internal error")])
        elapsed = (time.monotonic() - started) * 1000
        if answer.drop:
            self.server.log(f"{self.command} {path} DROP")
            self._abort()
            return
        self._send(answer)
        self.server.log(f"{self.command} {path} {answer.status} "
                        f"{elapsed:.0f}ms")

    def _send(self, answer):
        self.send_response(answer.status)
        self.send_header("Cache-Control", "no-store")
        for key, value in answer.headers.items():
            self.send_header(key, value)
        body = answer.body
        if self.command == "HEAD":
            self.send_header("Content-Length", "0")
            body = None
        elif answer.status != 204 and body is not None:
            self.send_header("Content-Length", str(len(body)))
        elif answer.status != 204:
            self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    def _abort(self):
        """Cut the TCP connection without any answer (RST)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address, sim, ssl_context, quiet=False):
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.sim = sim
        self.ssl_context = ssl_context
        self.quiet = quiet

    def log(self, line):
        if not self.quiet:
            sys.stderr.write(f"baosim: {line}\n")
            sys.stderr.flush()

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread so a slow
        # client cannot stall the accept loop.
        request.settimeout(30)
        # Headers and body leave in separate writes: without TCP_NODELAY the
        # second waits for the client's delayed ACK (40 ms on Linux).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.log(f"TLS handshake with {client_address[0]} failed: {exc}")
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        self.log(f"connection error from {client_address[0]}: "
                 f"{sys.exc_info()[1]!r}")
