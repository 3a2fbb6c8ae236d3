"""A caller opening another tenant's key in a loop does not flood the audit
trail (cmkcertfs(8), AUDIT).

The first refusal of a kind is written at once; the same refusal again within
the aggregation interval is only counted and written as one summary line, with
"count" saying how many refusals it stands for, at the end of the interval or
when the daemon stops.  Nothing is lost: the counts add up to the refusals the
caller got.  Successful key reads are never aggregated.

Run with -s to see the measured rates of refusals and of audit lines."""

import json
import math
import re
import subprocess
import threading
import time

import pytest

from conftest import PYTHON
from fusefix import Mounts

INTERVAL = 10.0          # seconds; REFUSALS_INTERVAL_MS in fusefs/refusals.h
FLOOD_SECONDS = 3.0
MIN_REFUSALS = 200       # a flood, however slow the machine: many more refusals than the bound on lines
TABLE = 1024             # kinds of refusal counted at a time; REFUSALS_MAX in fusefs/refusals.h

# Opens `path` until both `seconds` passed and `least` opens were refused; prints refused and other outcomes.
FLOODER = r"""
import errno, os, sys, time
path, seconds, least = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
refused = other = 0
end = time.monotonic() + seconds
while time.monotonic() < end or refused < least:
    try:
        os.close(os.open(path, os.O_RDONLY))
        other += 1
    except OSError as e:
        if e.errno != errno.EACCES:
            raise
        refused += 1
print(refused, other, flush=True)
"""

# Opens `path` `times` times as each of `n` users from `first` on, in one process: setfsuid(2) and
# setfsgid(2) choose the credentials the kernel checks and FUSE reports.  Prints the refusals per uid.
MANY_CALLERS = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
path, first, n, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
refused = {}
for uid in range(first, first + n):
    libc.setfsgid(uid)
    libc.setfsuid(uid)
    for _ in range(times):
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as e:
            if e.errno != errno.EACCES:
                raise
            refused[uid] = refused.get(uid, 0) + 1
    libc.setfsuid(0)
    libc.setfsgid(0)
print(json.dumps(refused), flush=True)
"""


@pytest.fixture
def fuse(bao):
    ms = Mounts(bao.conf)
    yield ms
    problems = ms.close()
    assert not problems, "\n".join(problems)


def add(cmk, tenant):
    r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none")
    assert r.returncode == 0, r.stdout + r.stderr


def key_reads(bao, **match):
    """privateKeyRead lines of the trail matching `match` (a line still being written is skipped)."""
    out = []
    with open(bao.dir / "audit.log") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            e = json.loads(line)
            if e["event"] == "privateKeyRead" and all(e.get(k) == v for k, v in match.items()):
                out.append(e)
    return out


def counted(lines):
    """Refusals the lines stand for: a line without "count" stands for one."""
    return sum(e.get("count", 1) for e in lines)


def wait_for(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def flood(path, seconds, least=MIN_REFUSALS):
    """Open `path` as uid 1000 in a loop; returns (refused, elapsed seconds)."""
    start = time.monotonic()
    r = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                        PYTHON, "-c", FLOODER, str(path), str(seconds), str(least)],
                       capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    refused, other = (int(x) for x in r.stdout.split())
    assert other == 0, "uid 1000 opened another tenant's key"
    return refused, elapsed


def line_bound(span):
    """Lines one kind of refusal may take over `span` seconds: each interval of it is opened by at
    most one line written at once and closed by at most one summary."""
    return 2 * (math.floor(span / INTERVAL) + 1)


def test_refusal_flood_is_aggregated_and_every_refusal_counted(bao, cmk, fuse, tmp_path):
    add(cmk, "alice")
    add(cmk, "bob")
    conf = tmp_path / "owners.conf"
    conf.write_text(bao.conf.read_text() + "\n[tenant:alice]\nowner = 1000\ngroup = 1000\n")
    conf.chmod(0o600)
    m = fuse(conf)
    target = m / "private" / "bob-aws_kms.key"
    denied = dict(uid=1000, tenant="bob", outcome="denied")

    # Root reads the same key while uid 1000 is refused: every read keeps its own line.
    root_reads, errors, stop = [0], [], threading.Event()

    def read_as_root():
        while not stop.is_set():
            try:
                with open(target, "rb") as f:
                    if not f.read().startswith(b"-----BEGIN"):
                        errors.append("root read something that is not a key")
            except OSError as e:
                errors.append(e)
            root_reads[0] += 1
            time.sleep(0.01)

    reader = threading.Thread(target=read_as_root)
    start = time.monotonic()
    reader.start()
    try:
        refused, flood_time = flood(target, FLOOD_SECONDS)
    finally:
        stop.set()
        reader.join()
    during = len(key_reads(bao, **denied))
    assert errors == []

    # The summary comes at the end of the interval that the first refusal opened, without an unmount.
    assert wait_for(lambda: counted(key_reads(bao, **denied)) >= refused, timeout=3 * INTERVAL)
    span = time.monotonic() - start
    lines = key_reads(bao, **denied)
    print("\nflood: %d refusals in %.1f s (%.0f refusals/s); %d denied lines during the flood (%.1f lines/s); "
          "%d lines in all for them after %.1f s (%.2f lines/s)"
          % (refused, flood_time, refused / flood_time, during, during / flood_time, len(lines), span,
             len(lines) / span))
    assert counted(lines) == refused
    assert len(lines) <= line_bound(span) < refused
    first, summaries = lines[0], lines[1:]
    assert "count" not in first and first["detail"].startswith("/private/bob-aws_kms.key")
    for s in summaries:
        assert s["count"] >= 1 and re.search(r"; %d more refusals? in the last \d+ s$" % s["count"], s["detail"]), s
        assert s["serial"] == first["serial"] and s["gid"] == 1000 and s["pid"] > 0

    # A second, shorter flood, then stop the daemon at once: what was counted is written at shutdown.
    start2 = time.monotonic()
    refused2, _ = flood(target, 0.5)
    assert m.unmount() == 0
    span2 = time.monotonic() - start2
    lines2 = key_reads(bao, **denied)[len(lines):]
    assert counted(lines2) == refused2
    assert len(lines2) <= line_bound(span2)

    ok = key_reads(bao, uid=0, tenant="bob", outcome="success")
    assert root_reads[0] > 0 and len(ok) == root_reads[0]
    assert all("count" not in e for e in ok)
    v = cmk("audit", "verify")
    assert v.returncode == 0, v.stdout + v.stderr


def test_more_kinds_of_refusal_than_the_table_holds_are_all_recorded(bao, cmk, fuse):
    """Callers beyond what the aggregation table holds are written line by line; none is lost."""
    add(cmk, "bob")
    m = fuse()
    callers, times, first = TABLE + 76, 3, 20000
    r = subprocess.run([PYTHON, "-c", MANY_CALLERS, str(m / "private" / "bob-aws_kms.key"), str(first),
                        str(callers), str(times)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    refused = {int(uid): n for uid, n in json.loads(r.stdout).items()}
    assert refused == {uid: times for uid in range(first, first + callers)}
    # Unmounting writes what is still counted.
    assert m.unmount() == 0
    per_uid = {}
    for e in key_reads(bao, tenant="bob", outcome="denied"):
        assert e["gid"] == e["uid"]
        per_uid.setdefault(e["uid"], []).append(e)
    assert {uid: counted(lines) for uid, lines in per_uid.items()} == refused
    # Each caller's first refusal has a line of its own.
    assert all("count" not in lines[0] for lines in per_uid.values())
    one_by_one = sum(1 for lines in per_uid.values() if len(lines) == times)
    print("\n%d callers refused %d times each: %d aggregated, %d written line by line"
          % (callers, times, callers - one_by_one, one_by_one))
    v = cmk("audit", "verify")
    assert v.returncode == 0, v.stdout + v.stderr
