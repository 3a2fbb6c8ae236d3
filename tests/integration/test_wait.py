"""The CLI says when the mount shows a change, and --wait waits for it: after
`keystore add --wait`, `renew --wait`, `revoke --wait` or `keystore remove
--wait` returns, another process reading the mount already sees the change;
without a daemon --wait has nothing to wait for and succeeds; a daemon that is
alive but not following the store (SIGSTOP) makes --wait fail with status 4
and the mount named; without --wait the line is printed too."""

import configparser
import json
import os
import re
import signal
import subprocess
import time

import pytest
from cryptography import x509

from fusefix import Mounts

EXIT_WAIT = 4


@pytest.fixture
def mounts(bao):
    ms = Mounts(bao.conf)
    yield ms
    problems = ms.close()
    assert not problems, problems


def store_dir(bao):
    c = configparser.ConfigParser()
    c.read(bao.conf)
    return c["store"]["path"]


def serial_of(pem):
    n = x509.load_pem_x509_certificate(pem).serial_number
    return ":".join("%02x" % b for b in n.to_bytes(20, "big").lstrip(b"\0"))


def read_elsewhere(path):
    """Read a file of the mount from a new process (the daemon pairs versions per process); None if absent."""
    r = subprocess.run(["cat", str(path)], capture_output=True, timeout=10)
    return r.stdout if r.returncode == 0 else None


def mount_line(stdout):
    lines = [l for l in stdout.splitlines() if l.startswith("mount: ")]
    assert len(lines) == 1, stdout
    return lines[0]


def add_args(tenant):
    return ["keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none"]


def test_keystore_add_wait_returns_once_the_mount_serves_the_file(bao, cmk, mounts):
    m = mounts(args=("-n",))
    who = "%s (cmkcertfs pid %d)" % (m.mnt, m.proc.pid)
    for i in range(6):
        tenant = "wait%d" % i
        if i % 2:
            r = cmk("--json", *add_args(tenant), "--wait")
            crt = read_elsewhere(m / ("certs/%s-aws_kms.crt" % tenant))
            assert r.returncode == 0, r.stderr
            out = json.loads(r.stdout)
            serial = out["serial_number"]
            mount = out["mount"]
            assert mount["served"] and mount["shows_change"] and not mount["timed_out"]
            assert mount["waited_ms"] >= 0 and mount["store"] == store_dir(bao)
            assert [(x["mountpoint"], x["pid"], x["shows_change"]) for x in mount["mounts"]] == \
                [(str(m.mnt), m.proc.pid, True)]
            assert mount["mounts"][0]["change"] >= mount["change"] > 0
        else:
            r = cmk(*add_args(tenant), "--wait")
            crt = read_elsewhere(m / ("certs/%s-aws_kms.crt" % tenant))
            assert r.returncode == 0, r.stderr
            serial = re.search(r"^certificate \d+ active: serial (\S+),", r.stdout, re.M).group(1)
            assert re.fullmatch(re.escape("mount: %s shows the change; waited " % who) + r"\d+\.\d\d s",
                                mount_line(r.stdout)), r.stdout
        assert crt is not None, "%s: not on the mount when keystore add --wait returned" % tenant
        assert serial_of(crt) == serial
        assert read_elsewhere(m / ("private/%s-aws_kms.key" % tenant)) is not None


def test_renew_wait_shows_the_new_serial_at_once(bao, cmk, mounts):
    m = mounts(args=("-n",))
    assert cmk(*add_args("rot"), "--wait").returncode == 0
    path = m / "certs/rot-aws_kms.crt"
    old = serial_of(read_elsewhere(path))
    for _ in range(6):
        r = cmk("--json", "renew", "--tenant", "rot", "--type", "aws_kms", "--wait=5")
        crt = read_elsewhere(path)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["mount"]["shows_change"]
        assert out["serial_number"] != old
        assert serial_of(crt) == out["serial_number"], "the mount still served the old certificate"
        old = out["serial_number"]


def test_revoke_and_remove_wait_until_the_files_are_gone(bao, cmk, mounts):
    m = mounts(args=("-n",))
    for t in ("gone1", "gone2"):
        assert cmk(*add_args(t), "--wait").returncode == 0
        assert read_elsewhere(m / ("certs/%s-aws_kms.crt" % t)) is not None
    r = cmk("revoke", "--tenant", "gone1", "--type", "aws_kms", "--wait")
    assert read_elsewhere(m / "certs/gone1-aws_kms.crt") is None
    assert r.returncode == 0, r.stderr
    assert mount_line(r.stdout).startswith("mount: %s (cmkcertfs pid %d) shows the change" % (m.mnt, m.proc.pid))
    r = cmk("--json", "keystore", "remove", "--tenant", "gone2", "--type", "aws_kms", "--wait")
    assert read_elsewhere(m / "certs/gone2-aws_kms.crt") is None
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mount"]["shows_change"]


def test_without_a_daemon_wait_succeeds_and_says_so(bao, cmk):
    r = cmk(*add_args("alone"), "--wait")
    assert r.returncode == 0, r.stderr
    assert mount_line(r.stdout) == "mount: no cmkcertfs serves this store (%s); nothing to wait for" % store_dir(bao)
    r = cmk("--json", "renew", "--tenant", "alone", "--type", "aws_kms", "--wait=2")
    assert r.returncode == 0, r.stderr
    mount = json.loads(r.stdout)["mount"]
    assert mount["served"] is False and mount["mounts"] == [] and mount["timed_out"] is False
    # Without --wait the line is printed too.
    r = cmk("renew", "--tenant", "alone", "--type", "aws_kms")
    assert r.returncode == 0, r.stderr
    assert mount_line(r.stdout) == "mount: no cmkcertfs serves this store (%s)" % store_dir(bao)
    # A bad value is a usage error, before anything is done.
    for bad in ("--wait=soon", "--wait=-1", "--wait=nan", "--wait=1e9"):
        r = cmk("renew", "--tenant", "alone", "--type", "aws_kms", bad)
        assert r.returncode == 2 and "--wait=" in r.stderr, (bad, r.stderr)


def test_info_line_without_wait(bao, cmk, mounts):
    m = mounts(args=("-n",))
    r = cmk(*add_args("info"))
    assert r.returncode == 0, r.stderr
    line = mount_line(r.stdout)
    assert re.fullmatch(re.escape("mount: %s (cmkcertfs pid %d) shows the change " % (m.mnt, m.proc.pid)) +
                        r"(now|within 0\.2 s)", line), line
    r = cmk("--json", "renew", "--tenant", "info", "--type", "aws_kms")
    assert r.returncode == 0, r.stderr
    mount = json.loads(r.stdout)["mount"]
    assert mount["served"] and mount["waited_ms"] is None and mount["mounts"][0]["following"]
    assert mount["mounts"][0]["mountpoint"] == str(m.mnt)
    # Two mounts of the same store: both are named.
    m2 = mounts(args=("-n",))
    r = cmk("renew", "--tenant", "info", "--type", "aws_kms", "--wait")
    assert r.returncode == 0, r.stderr
    line = mount_line(r.stdout)
    assert str(m.mnt) in line and str(m2.mnt) in line and "; waited " in line


def run_stopped(cmk, m, *args):
    """Run the CLI while the daemon is stopped (alive, not following the store).

    A process stopped at an unlucky instant may hold a store lock for the
    moment it takes to read the change log; a command that would wait on it
    is given up, the daemon continued, and the whole tried again.
    """
    for _ in range(3):
        os.kill(m.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = cmk(*args, timeout=30)
            return r, time.monotonic() - t0
        except subprocess.TimeoutExpired:
            pass
        finally:
            os.kill(m.proc.pid, signal.SIGCONT)
        time.sleep(0.5)
    pytest.fail("the CLI kept waiting on the stopped daemon's store locks")


def test_wait_on_a_stopped_daemon_fails_and_names_the_mount(bao, cmk, mounts):
    m = mounts(args=("-n",))
    assert cmk(*add_args("stuck"), "--wait").returncode == 0
    who = "%s (cmkcertfs pid %d)" % (m.mnt, m.proc.pid)
    r, took = run_stopped(cmk, m, "renew", "--tenant", "stuck", "--type", "aws_kms", "--wait=1")
    assert r.returncode == EXIT_WAIT, (r.returncode, r.stdout, r.stderr)
    assert took >= 1.0
    assert mount_line(r.stdout).startswith("mount: %s does not show the change after 1.0 s: it serves change " % who)
    assert "--wait" in r.stderr and who in r.stderr
    # The renewal itself happened.
    assert re.search(r"^certificate \d+ active: serial ", r.stdout, re.M)
    # The same in JSON.
    r, _ = run_stopped(cmk, m, "--json", "renew", "--tenant", "stuck", "--type", "aws_kms", "--wait=0.5")
    assert r.returncode == EXIT_WAIT, (r.returncode, r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["status"] == "active"
    mount = out["mount"]
    assert mount["timed_out"] and not mount["shows_change"]
    assert [(x["pid"], x["shows_change"]) for x in mount["mounts"]] == [(m.proc.pid, False)]
    # Going again, the daemon catches up and --wait succeeds.
    r = cmk("renew", "--tenant", "stuck", "--type", "aws_kms", "--wait")
    assert r.returncode == 0, r.stderr
    assert serial_of(read_elsewhere(m / "certs/stuck-aws_kms.crt")) == \
        json.loads(cmk("show", "--json", "--tenant", "stuck", "--type", "aws_kms").stdout)["serial_number"]
