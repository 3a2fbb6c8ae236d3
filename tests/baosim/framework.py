"""A small model of OpenBao's sdk/framework: a backend is a list of routes
(regex + operation handlers + field schema); a request is matched against
them, its fields validated, and the unknown-parameter warnings added.
"""

import re

from common import (FieldData, go_error, unsupported_operation,
                    unsupported_path)

READ, LIST, UPDATE, DELETE, HEADER, PATCH, SCAN = (
    "read", "list", "update", "delete", "header", "patch", "scan")

NAME_RE = r"\w(?:(?:[\w\-.]+)?\w)?"


def name(group):
    """framework.GenericNameRegex(group)."""
    return rf"(?P<{group}>{NAME_RE})"


class Response:
    """A logical response (resp.Data/Warnings/Auth) or a raw one."""

    def __init__(self, data=None, warnings=None, auth=None):
        self.data = data
        self.warnings = list(warnings or [])
        self.auth = auth
        self.raw = None          # (status, content_type, body bytes)
        self.lease_id = ""       # only for roles with generate_lease
        self.lease_duration = 0

    @classmethod
    def raw_body(cls, content_type, body):
        resp = cls()
        resp.raw = (200 if body else 204, content_type, body)
        return resp

    def add_warning(self, text):
        self.warnings.append(text)


def list_response(keys, key_info=None):
    """logical.ListResponse(WithInfo): no "keys" entry when empty."""
    data = {}
    if keys:
        data["keys"] = list(keys)
        if key_info is not None:
            data["key_info"] = key_info
    return Response(data=data)


def add_warnings(resp, warnings):
    if warnings:
        if resp is None:
            resp = Response()
        for w in warnings:
            resp.add_warning(w)
    return resp


class Route:
    def __init__(self, pattern, ops, fields=None, unauth=False, login=False):
        self.regex = re.compile("^" + pattern + "$")
        self.ops = ops
        self.fields = dict(fields or {})
        self.unauth = unauth
        self.login = login


class Request:
    """One logical request as a backend sees it."""

    def __init__(self, op, path, data, headers=None, remote_addr="",
                 client_token=""):
        self.op = op
        self.path = path                 # full logical path, no /v1/
        self.data = data                 # request body / query data
        self.headers = headers or {}
        self.remote_addr = remote_addr
        self.client_token = client_token
        self.token = None                # auth.TokenEntry once checked
        self.mount = ""
        self.rel = ""                    # path inside the mount
        self.route = None
        self.captures = {}
        self.fd = None


class Backend:
    """Base class: subclasses fill self.routes."""

    def __init__(self, mount):
        self.mount = mount               # e.g. "pki_client_certs/"
        self.routes = []

    def is_unauthenticated(self, rel):
        """PathsSpecial.Unauthenticated: no token needed."""
        return any(r.unauth and r.regex.match(rel) for r in self.routes)

    def is_login(self, rel):
        """Login paths: errors are returned without multierror wrapping."""
        return any(r.login and r.regex.match(rel) for r in self.routes)

    def match(self, rel):
        for route in self.routes:
            m = route.regex.match(rel)
            if m:
                return route, {k: v for k, v in m.groupdict().items()
                               if v is not None}
        return None, {}

    def handle(self, req):
        """Run the matched route's handler; returns a Response or None."""
        route = req.route
        if route is None:
            raise unsupported_path()
        handler = route.ops.get(req.op)
        if handler is None:
            raise unsupported_operation()
        raw = dict(req.data)
        replaced = sorted(k for k in req.captures if raw.get(k) is not None)
        ignored = sorted(k for k in req.data if k not in route.fields)
        raw.update(req.captures)
        req.fd = FieldData(raw, route.fields)
        req.fd.validate()
        resp = handler(req)
        if resp is not None and resp.raw is None:
            if ignored:
                resp.add_warning("Endpoint ignored these unrecognized "
                                 f"parameters: [{' '.join(ignored)}]")
            if replaced:
                resp.add_warning(
                    "Endpoint replaced the value of these parameters with "
                    "the values captured from the endpoint's path: "
                    f"[{' '.join(replaced)}]")
        return resp


def internal_error(message):
    return go_error(500, message)
