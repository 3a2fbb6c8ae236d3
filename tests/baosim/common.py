"""Shared helpers for the OpenBao simulator: error answers, Go-compatible
formatting (durations, timestamps, JSON) and OpenBao's weakly typed request
fields.

Everything here mirrors a documented server behaviour from
/work/shared/reference/openbao-api.md; the docstrings say which.
"""

import json
import re
import secrets
import string
import time

NS = 1_000_000_000          # nanoseconds per second
HOUR = 3600
SYSTEM_DEFAULT_LEASE_TTL = 768 * HOUR   # mount/system default lease TTL
SYSTEM_MAX_LEASE_TTL = 768 * HOUR       # mount/system max lease TTL
VERSION = "2.6.2"

_BASE62 = string.ascii_letters + string.digits


def random_base62(length):
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def now_ns():
    return time.time_ns()


# --------------------------------------------------------------------------
# Error answers
# --------------------------------------------------------------------------

def multierror(message):
    """Text of a Go hashicorp/go-multierror holding one error."""
    return f"1 error occurred:\n\t* {message}\n\n"


class BaoError(Exception):
    """An error answer: `{"errors":[...]}` with an HTTP status.

    message None gives an empty errors list. wrap=True marks a Go error
    returned by a backend; on non-login paths OpenBao's core appends those to
    a multierror, so the text becomes "1 error occurred:\\n\\t* ...\\n\\n".
    """

    def __init__(self, status, message=None, wrap=False, headers=None):
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.message = message
        self.wrap = wrap
        self.headers = headers or {}

    def error_list(self, login=False):
        if self.message is None:
            return []
        if self.wrap and not login:
            return [multierror(self.message)]
        return [self.message]


def user_error(message):
    """logical.ErrorResponse(...): always 400, text verbatim."""
    return BaoError(400, message)


def go_error(status, message):
    """A Go error from a backend (multierror-wrapped outside login paths)."""
    return BaoError(status, message, wrap=True)


def permission_denied():
    """Missing, unknown or expired token: plain text, 403."""
    return BaoError(403, "permission denied")


def acl_denied():
    """Valid token whose policies deny the request: multierror text, 403."""
    return BaoError(403, multierror("permission denied"))


def unsupported_path():
    return BaoError(404, "unsupported path", wrap=True)


def unsupported_operation():
    return BaoError(405, "unsupported operation", wrap=True)


# --------------------------------------------------------------------------
# Go formatting
# --------------------------------------------------------------------------

def go_quote(text):
    """Go's %q for plain strings (enough for names, durations, paths)."""
    return json.dumps(text, ensure_ascii=False)


def _frac(value, unit):
    whole, rest = divmod(value, unit)
    if rest == 0:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + str(rest).rjust(digits, "0").rstrip("0")


def go_duration(nanos):
    """time.Duration.String(): 8760h0m0s, 1h0m0s, 2s, 1.5s, 500ms, 0s."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    u = abs(nanos)
    if u < NS:
        if u < 1000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_frac(u, 1000)}µs"
        return f"{sign}{_frac(u, 1_000_000)}ms"
    minutes, rem = divmod(u, 60 * NS)
    text = _frac(rem, NS) + "s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = (f"{hours}h" if hours else "") + f"{minutes}m" + text
    return sign + text


def human_duration(nanos):
    """sdk/framework/lease.go humanDuration: 24h0m0s -> 24h, 30m0s -> 30m."""
    if nanos == 0:
        return "0s"
    text = go_duration(nanos)
    if text.endswith("m0s"):
        text = text[:-2]
    idx = text.find("h0m")
    if idx > 0:
        text = text[: idx + 1] + text[idx + 3:]
    return text


def rfc3339nano(nanos):
    """time.Format(time.RFC3339Nano) of a UTC instant (trailing zeros cut)."""
    secs, frac = divmod(nanos, NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        text += "." + str(frac).rjust(9, "0").rstrip("0")
    return text + "Z"


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text):
    """time.Parse(time.RFC3339, text) -> unix nanoseconds, or ValueError
    carrying Go's message."""
    import calendar
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f'parsing time {go_quote(text)} as '
                         f'"2006-01-02T15:04:05Z07:00": cannot parse '
                         f'{go_quote(text)} as "2006"')
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    try:
        secs = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
        time.gmtime(secs)
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24
                and minute < 60 and sec < 60):
            raise ValueError
    except (ValueError, OverflowError):
        raise ValueError(f'parsing time {go_quote(text)}: '
                         f'day out of range') from None
    frac = m.group(7)
    nanos = int((frac[1:] + "000000000")[:9]) if frac else 0
    zone = m.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return secs * NS + nanos


_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 1_000_000,
          "s": NS, "m": 60 * NS, "h": 3600 * NS}


def go_parse_duration(text):
    """time.ParseDuration -> nanoseconds, or ValueError with Go's text."""
    orig = text
    invalid = ValueError(f"time: invalid duration {go_quote(orig)}")
    neg = False
    if text and text[0] in "+-":
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if text == "":
        raise invalid
    total = 0
    while text:
        if not (text[0].isdigit() or text[0] == "."):
            raise invalid
        m = re.match(r"(\d*)(?:\.(\d*))?", text)
        whole, frac = m.group(1), m.group(2)
        if whole == "" and not frac:
            raise invalid
        text = text[m.end():]
        u = re.match(r"[^\d.]*", text).group(0)
        if u == "":
            raise ValueError(f"time: missing unit in duration "
                             f"{go_quote(orig)}")
        if u not in _UNITS:
            raise ValueError(f"time: unknown unit {go_quote(u)} in duration "
                             f"{go_quote(orig)}")
        text = text[len(u):]
        unit = _UNITS[u]
        value = int(whole or "0") * unit
        if frac:
            value += int(frac) * unit // (10 ** len(frac))
        total += value
    return -total if neg else total


def go_json(obj):
    """encoding/json.Encoder output: compact, HTML-escaped, newline-ended."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026").replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029"))
    return (text + "\n").encode("utf-8")


def sorted_map(value):
    """Go encodes map keys in sorted order; apply that recursively."""
    if isinstance(value, dict):
        return {k: sorted_map(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_map(v) for v in value]
    return value


def go_glob(pattern, subject):
    """github.com/ryanuber/go-glob: `*` matches any run of characters
    (dots included), everything else literally, case-sensitive."""
    if pattern == "":
        return subject == ""
    if pattern == "*":
        return True
    parts = pattern.split("*")
    if len(parts) == 1:
        return subject == pattern
    leading = pattern.startswith("*")
    trailing = pattern.endswith("*")
    last = len(parts) - 1
    for i in range(last):
        idx = subject.find(parts[i])
        if i == 0:
            if not leading and idx != 0:
                return False
        elif idx < 0:
            return False
        subject = subject[idx + len(parts[i]):]
    return trailing or subject.endswith(parts[last])


def glob_list_contains(patterns, value):
    """strutil.StrListContainsGlob."""
    return any(go_glob(p, value) for p in patterns)


# --------------------------------------------------------------------------
# Request data and weakly typed fields (sdk/framework/field_data.go)
# --------------------------------------------------------------------------

class JsonNumber(str):
    """A JSON number kept as its literal text, like Go's json.Number."""


def parse_json_body(raw):
    """Decode a request body the way OpenBao does (numbers as json.Number)."""
    text = raw.decode("utf-8")
    return json.loads(text, parse_int=JsonNumber, parse_float=JsonNumber,
                      parse_constant=_reject_constant)


def _reject_constant(name):
    raise ValueError(f"invalid character '{name[0]}' looking for beginning "
                     f"of value")


class FieldError(ValueError):
    pass


def _go_type(value):
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "float64"
    if value is None:
        return "<nil>"
    return "string"


def _unconvertible(target, value):
    return FieldError(f"'' expected type '{target}', got unconvertible type "
                      f"'{_go_type(value)}'")


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _strconv_int(text):
    """strconv.ParseInt(text, 0, 64): prefixes 0x/0o/0b, leading 0 = octal,
    underscores between digits."""
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|"
                     r"0[0-7_]*|[1-9][0-9_]*)", text)
    if not m or "__" in text or text.endswith("_"):
        raise FieldError("'' cannot parse value as 'int': "
                         "strconv.ParseInt: invalid syntax")
    body = m.group(2).replace("_", "")
    if len(body) > 1 and body[0] == "0" and body[1] in "0123456789":
        value = int(body, 8)
    else:
        value = int(body, 0)
    if m.group(1) == "-":
        value = -value
    if not -(2 ** 63) <= value < 2 ** 63:
        raise FieldError("'' cannot parse value as 'int': "
                         "strconv.ParseInt: value out of range")
    return value


def to_string(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise _unconvertible("string", value)


def to_bool(value):
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        if value in _TRUE:
            return True
        if value in _FALSE or value == "":
            return False
        raise FieldError("'' cannot parse value as 'bool': "
                         "strconv.ParseBool: invalid syntax")
    raise _unconvertible("bool", value)


def to_int(value):
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        return _strconv_int(value or "0")
    raise _unconvertible("int", value)


def parse_duration_seconds(value):
    """parseutil.ParseDurationSecond -> whole seconds (truncated)."""
    if value is None:
        return 0
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise FieldError("could not parse duration from input")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    text = str(value)
    if text == "":
        return 0
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if text.endswith("d"):
        if not re.fullmatch(r"[+-]?\d+", text[:-1]):
            raise FieldError(f"strconv.ParseInt: parsing {go_quote(text[:-1])}"
                             f": invalid syntax")
        return int(text[:-1]) * 86400
    try:
        nanos = go_parse_duration(text)
    except ValueError as exc:
        raise FieldError(str(exc)) from None
    return -(abs(nanos) // NS) if nanos < 0 else nanos // NS


def to_duration(value):
    seconds = parse_duration_seconds(value)
    if seconds < 0:
        raise FieldError(f"cannot provide negative value '{seconds}'")
    return seconds


def to_comma_slice(value):
    """parseutil.ParseCommaStringSlice: split strings on ',', trim spaces."""
    if value is None:
        return []
    if isinstance(value, str):
        if value == "":
            return []
        return [v.strip() for v in str(value).split(",")]
    if isinstance(value, list):
        return [to_string(v).strip() for v in value]
    if isinstance(value, (bool, int, float)):
        return [to_string(value)]
    raise _unconvertible("[]string", value)


def to_string_slice(value):
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [to_string(v) for v in value]
    if isinstance(value, (str, bool, int, float)):
        return [to_string(value)]
    raise _unconvertible("[]string", value)


def to_map(value):
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise _unconvertible("map[string]interface {}", value)


STRING, BOOL, INT, DURATION, COMMA_SLICE, STRING_SLICE, MAP = (
    "string", "bool", "int", "duration", "comma_slice", "string_slice", "map")

_CONVERT = {STRING: to_string, BOOL: to_bool, INT: to_int,
            DURATION: to_duration, COMMA_SLICE: to_comma_slice,
            STRING_SLICE: to_string_slice, MAP: to_map}
_ZERO = {STRING: "", BOOL: False, INT: 0, DURATION: 0, COMMA_SLICE: [],
         STRING_SLICE: [], MAP: {}}


class Field:
    def __init__(self, kind, default=None):
        self.kind = kind
        self.default = default

    def zero(self):
        if self.default is not None:
            return list(self.default) if isinstance(self.default, list) \
                else self.default
        value = _ZERO[self.kind]
        return list(value) if isinstance(value, list) else \
            (dict(value) if isinstance(value, dict) else value)


class FieldData:
    """framework.FieldData: raw request data read through a schema."""

    def __init__(self, raw, schema):
        self.raw = raw
        self.schema = schema

    def validate(self):
        for name in self.raw:
            field = self.schema.get(name)
            if field is None:
                continue
            try:
                self._convert(name, field)
            except FieldError as exc:
                raise user_error(
                    f"Field validation failed: error converting input for "
                    f"field {go_quote(name)}: {exc}") from None

    def _convert(self, name, field):
        value = self.raw[name]
        if field.kind == DURATION and value is None:
            return None, False
        return _CONVERT[field.kind](value), True

    def get_ok(self, name):
        field = self.schema[name]
        if name not in self.raw:
            return field.zero(), False
        value, present = self._convert(name, field)
        if not present:
            return field.zero(), False
        return value, True

    def get(self, name):
        return self.get_ok(name)[0]

    def unknown(self):
        return sorted(k for k in self.raw if k not in self.schema)
