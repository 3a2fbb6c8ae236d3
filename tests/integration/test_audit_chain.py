"""The audit trail cannot be cut or rewritten unseen.

A trail written by real operations (add, renew, revoke) is tampered with in
each of the eleven ways an attacker or an accident would: `cmkcert audit
verify` must fail for every one, and pass again once the original bytes are
back.  Someone without the master key can recompute SHA-256 hashes but not
the lines' MACs, and cannot make the file reach the line the store anchored."""

import hashlib
import json
import re

ZEROS = "0" * 64


def lines_of(path):
    return path.read_bytes().split(b"\n")[:-1]


def write(path, lines, final_newline=True):
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))


def rechain(lines, start):
    """Renumber and re-hash from `start` on, as someone without the key would (MACs left as they are)."""
    out = list(lines)
    for i in range(start, len(out)):
        prev = ZEROS if i == 0 else hashlib.sha256(out[i - 1]).hexdigest()
        text = re.sub(rb'"seq":\d+', b'"seq":%d' % (i + 1), out[i], count=1)
        out[i] = re.sub(rb'"prev":"[0-9a-f]{64}"', b'"prev":"%s"' % prev.encode(), text, count=1)
    return out


def tampered(original):
    n = len(original)
    forged = json.dumps({"seq": n + 1, "time": "2026-12-07T00:00:00.000Z", "event": "credentialCreate",
                         "tenant": "acme", "outcome": "success",
                         "prev": hashlib.sha256(original[-1]).hexdigest()}, separators=(",", ":")).encode()
    edited = list(original)
    edited[4] = edited[4].replace(b'"success"', b'"failure"', 1)
    spaced = list(original)
    spaced[4] = spaced[4].replace(b",", b", ", 1)
    swapped = list(original)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    return {
        "edit a value": (edited, True),
        "whitespace edit": (spaced, True),
        "delete a line": (original[:4] + original[5:], True),
        "swap two lines": (swapped, True),
        "duplicate a line": (original[:5] + original[4:], True),
        "torn last line": (original[:-1] + [original[-1][:len(original[-1]) // 2]], False),
        "remove the last line": (original[:-1], True),
        "remove the last 3 lines": (original[:-3], True),
        "append a forged line with a recomputed hash": (original + [forged], True),
        "edit and re-chain the rest": (rechain(edited, 5), True),
        "delete and re-chain the rest": (rechain(original[:4] + original[5:], 4), True),
    }


def test_every_tampering_is_detected(bao, cmk):
    # One login for all of them: the runs share the OpenBao token.
    for tenant in ("acme", "globex", "initech"):
        r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none")
        assert r.returncode == 0, r.stderr
    assert cmk("renew", "--tenant", "acme", "--type", "aws_kms").returncode == 0
    assert cmk("revoke", "--tenant", "globex", "--type", "aws_kms").returncode == 0
    trail = bao.dir / "audit.log"
    original = lines_of(trail)
    assert len(original) >= 10
    ok = cmk("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "every line's MAC checked" in ok.stdout and "ends where the store's anchor says" in ok.stdout
    found = {}
    for name, (lines, final_newline) in tampered(original).items():
        write(trail, lines, final_newline)
        r = cmk("--json", "audit", "verify")
        found[name] = r.returncode == 1 and not json.loads(r.stdout)["ok"]
        print("%-45s %s" % (name, json.loads(r.stdout).get("detail", "NOT DETECTED")))
        write(trail, original)
        assert cmk("audit", "verify").returncode == 0
    assert all(found.values()), [name for name, hit in found.items() if not hit]
    assert len(found) == 11


def test_interrupted_write_is_repaired_and_the_repair_verifies(bao, cmk):
    assert cmk("keystore", "add", "--tenant", "acme", "--type", "aws_kms", "--verify", "none").returncode == 0
    trail = bao.dir / "audit.log"
    with open(trail, "ab") as f:
        f.write(b'{"seq":99,"time":"2026-12-07T00:00')        # a writer died here
    assert cmk("audit", "verify").returncode == 1
    assert cmk("keystore", "add", "--tenant", "globex", "--type", "aws_kms", "--verify", "none").returncode == 0
    v = cmk("audit", "verify")
    assert v.returncode == 0, v.stderr
    assert "1 interrupted write(s) removed and recorded" in v.stdout
    repair = [json.loads(l) for l in lines_of(trail) if b'"repaired"' in l]
    assert len(repair) == 1 and "sha256 " + hashlib.sha256(b'{"seq":99,"time":"2026-12-07T00:00').hexdigest() \
        in repair[0]["detail"]


def test_an_anchored_line_cut_short_stops_appends(bao, cmk):
    assert cmk("keystore", "add", "--tenant", "acme", "--type", "aws_kms", "--verify", "none").returncode == 0
    trail = bao.dir / "audit.log"
    data = trail.read_bytes()
    trail.write_bytes(data[:-20])        # not a crash: the last line was anchored
    r = cmk("keystore", "add", "--tenant", "globex", "--type", "aws_kms", "--verify", "none")
    assert r.returncode != 0
    assert "cut inside" in r.stderr
    assert trail.read_bytes() == data[:-20]     # nothing appended, nothing "repaired"


def test_rotation_while_the_daemon_appends(bao, cmk):
    from fusefix import Mounts
    assert cmk("keystore", "add", "--tenant", "acme", "--type", "aws_kms", "--verify", "none").returncode == 0
    trail = bao.dir / "audit.log"
    ms = Mounts(bao.conf)
    try:
        m = ms()
        assert (m / "private/acme-aws_kms.key").read_text().startswith("-----BEGIN")
        r = cmk("--json", "audit", "rotate")
        assert r.returncode == 0, r.stderr
        moved = json.loads(r.stdout)["moved_to"]
        # The daemon follows to the new file at its next key read.
        assert (m / "private/acme-aws_kms.key").read_text().startswith("-----BEGIN")
    finally:
        problems = ms.close()
    assert not problems, problems
    events = [json.loads(l)["event"] for l in lines_of(trail)]
    assert events[0] == "auditRotate" and "privateKeyRead" in events[1:]
    old = [json.loads(l)["event"] for l in open(moved)]
    assert "privateKeyRead" in old and "credentialActivate" in old
    v = cmk("audit", "verify")
    assert v.returncode == 0, v.stderr
    assert "continues a rotated trail" in v.stdout
    assert cmk("audit", "verify", moved).returncode == 0
