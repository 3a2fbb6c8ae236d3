"""cmkcert list: every filter (answered through the store's indexes) gives
what filtering the whole list gives, in id order; the text and JSON forms
printed as the records are read are the forms printed before (one header
and one row per record; one pretty-printed JSON array)."""

import json
import re

import pytest

ROW = re.compile(r"^(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")
HEADER = "%-6s %-24s %-14s %-10s %-22s %s" % ("ID", "TENANT", "TYPE", "STATUS", "NOT AFTER", "SERIAL")


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def store(cmk):
    """Records in several states: active, rotating (renewed), revoked, over three tenants and two types."""
    for tenant in ("alpha", "beta", "alphabet", "gamma"):
        ok(cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none"))
    ok(cmk("keystore", "add", "--tenant", "alpha", "--type", "thales_luna", "--verify", "none"))
    ok(cmk("renew", "--tenant", "beta", "--type", "aws_kms"))
    ok(cmk("renew", "--tenant", "alpha", "--type", "aws_kms"))
    ok(cmk("revoke", "--tenant", "gamma", "--type", "aws_kms"))
    return json.loads(ok(cmk("list", "--json")))


def test_list_forms(cmk, store):
    # Seven records, in id order, in the states made above.
    assert [r["id"] for r in store] == sorted(r["id"] for r in store)
    assert len(store) == 7
    assert sorted(r["status"] for r in store) == ["active"] * 4 + ["revoked"] + ["rotating"] * 2

    # JSON: exactly the pretty form of the whole array (two-space indent, "key": value, one
    # element per block), as jansson printed it when the array was built first.
    out = ok(cmk("list", "--json"))
    assert out == json.dumps(store, indent=2) + "\n"
    assert ok(cmk("list", "--json", "--tenant", "nobody")) == "[]\n"

    # Text: the header, then one row per record with the same facts.
    lines = ok(cmk("list")).splitlines()
    assert lines[0] == HEADER
    assert len(lines) == len(store) + 1
    for line, rec in zip(lines[1:], store):
        m = ROW.match(line)
        assert m, line
        assert (int(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(6)) == \
            (rec["id"], rec["tenant_id"], rec["type"], rec["status"], rec["serial_number"])
        assert m.group(5) == rec["not_after"]
        assert line == "%-6d %-24s %-14s %-10s %-22s %s" % (rec["id"], rec["tenant_id"], rec["type"], rec["status"],
                                                           rec["not_after"], rec["serial_number"])
    assert ok(cmk("list", "--tenant", "nobody")).splitlines() == [HEADER]


FILTERS = [
    {"tenant": "alpha"},              # two types, two states; not "alphabet"
    {"tenant": "alphabet"},
    {"tenant": "alpha", "type": "aws_kms"},
    {"tenant": "alpha", "status": "rotating"},
    {"tenant": "alpha", "type": "aws_kms", "status": "active"},
    {"status": "active"},
    {"status": "rotating"},
    {"status": "revoked"},
    {"status": "failed"},
    {"type": "thales_luna"},
    {"type": "aws_kms", "status": "rotating"},
]


def test_filters_match_the_whole_list(cmk, store):
    for filt in FILTERS:
        args = [x for k, v in filt.items() for x in ("--" + k, v)]
        got = json.loads(ok(cmk("list", "--json", *args)))
        want = [r for r in store
                if r["tenant_id"] == filt.get("tenant", r["tenant_id"]) and r["type"] == filt.get("type", r["type"])
                and r["status"] == filt.get("status", r["status"])]
        assert got == want, filt
        text = ok(cmk("list", *args)).splitlines()
        assert [int(l.split()[0]) for l in text[1:]] == [r["id"] for r in want], filt
