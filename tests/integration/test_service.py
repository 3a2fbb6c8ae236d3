"""cmkcertfs as a systemd service (Type=notify, WatchdogSec=), with the test
playing the service manager: a unix datagram socket named by NOTIFY_SOCKET
receives what the daemon says.  READY=1 comes only once the mount serves (a
file is readable the moment it arrives), STATUS= says what it serves and when
the next renewal is due, STOPPING=1 comes on SIGTERM, WATCHDOG=1 pings arrive
every half of WATCHDOG_USEC and only for the process they are meant for.  Log
lines carry syslog priorities when stderr is the journal's stream."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import CMKCERT
from fusefix import Mounts, mounted
from notifyfix import Manager


@pytest.fixture
def manager(tmp_path):
    m = Manager(tmp_path / "notify.sock")
    yield m
    m.close()


@pytest.fixture
def mounts(bao):
    ms = Mounts(bao.conf)
    yield ms
    problems = ms.close()
    assert not problems, problems


def add(cmk, tenant, ktype="aws_kms"):
    r = cmk("keystore", "add", "--tenant", tenant, "--type", ktype, "--verify", "none")
    assert r.returncode == 0, r.stderr


def show(cmk, tenant, ktype="aws_kms"):
    r = cmk("show", "--json", "--pem", "--tenant", tenant, "--type", ktype)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ready_only_once_the_mount_serves_with_status(bao, cmk, mounts, manager, monkeypatch):
    add(cmk, "acme")
    rec = show(cmk, "acme")
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    m = mounts(wait=False)
    ready = manager.wait_for("READY", 15)
    # The moment READY=1 arrives, the mount is there and a file reads as the store has it.
    assert ready is not None, manager.seen
    assert mounted(m.mnt)
    assert (m / "certs/acme-aws_kms.crt").read_text().strip() == rec["certificate"].strip()
    assert ready["READY"] == "1"
    # Nothing claimed readiness (or stopping) before the mount served.
    assert [s for s in manager.seen[:-1] if "READY" in s or "STOPPING" in s] == []
    status = ready["STATUS"]
    assert status.startswith("serving 1 certificate at %s; " % m.mnt), status
    # The next renewal is the store's renew_at of the only certificate.
    assert "next renewal %s (acme-aws_kms)" % rec["renew_at"] in status, (status, rec["renew_at"])
    assert "fail closed" not in status


def test_status_follows_the_store(bao, cmk, mounts, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    m = mounts(wait=False)
    ready = manager.wait_for("READY", 15)
    assert ready is not None and ready["STATUS"] == "serving 0 certificates at %s; no renewal scheduled" % m.mnt
    add(cmk, "first")
    add(cmk, "second", "thales_luna")
    due = sorted((show(cmk, t, k)["renew_at"], "%s-%s" % (t, k))
                 for t, k in (("first", "aws_kms"), ("second", "thales_luna")))[0]
    want = "serving 2 certificates at %s; next renewal %s (%s)" % (m.mnt, due[0], due[1])
    assert manager.wait_for("STATUS", 10, want) is not None, manager.seen
    r = cmk("revoke", "--tenant", "first", "--type", "aws_kms")
    assert r.returncode == 0, r.stderr
    left = show(cmk, "second", "thales_luna")["renew_at"]
    want = "serving 1 certificate at %s; next renewal %s (second-thales_luna)" % (m.mnt, left)
    assert manager.wait_for("STATUS", 10, want) is not None, manager.seen
    # STATUS is sent when it changes, not on every turn.
    assert manager.collect(2.5) == []


def test_stopping_on_sigterm(bao, cmk, mounts, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    m = mounts(wait=False)
    assert manager.wait_for("READY", 15) is not None
    m.proc.send_signal(signal.SIGTERM)
    stopping = manager.wait_for("STOPPING", 10)
    assert stopping is not None and stopping["STOPPING"] == "1", manager.seen
    assert m.proc.wait(10) == 0
    assert not mounted(m.mnt)


def test_scheduler_off_is_said(bao, cmk, mounts, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    mounts(args=["-n"], wait=False)
    ready = manager.wait_for("READY", 15)
    assert ready is not None and ready["STATUS"].endswith("; renewals run elsewhere (-n)"), ready


def test_watchdog_pings_every_half_interval(bao, cmk, mounts, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    m = mounts(wait=False)
    assert manager.wait_for("READY", 15) is not None
    pings = [msg for msg in manager.collect(2.0) if msg.get("WATCHDOG") == "1"]
    # One every 200 ms: about 10 in 2 s; a loaded machine may delay some, none may come early.
    assert 5 <= len(pings) <= 11, manager.seen
    # A stopped daemon (standing in for a hung one) does not ping: systemd would restart it.
    os.kill(m.proc.pid, signal.SIGSTOP)
    try:
        manager.collect(0.3)          # what was already on its way
        assert [msg for msg in manager.collect(1.0) if "WATCHDOG" in msg] == []
    finally:
        os.kill(m.proc.pid, signal.SIGCONT)
    assert manager.wait_for("WATCHDOG", 2) is not None


def test_watchdog_meant_for_another_process_is_not_served(bao, cmk, mounts, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    mounts(wait=False)
    assert manager.wait_for("READY", 15) is not None
    assert [msg for msg in manager.collect(1.5) if "WATCHDOG" in msg] == []


def test_no_watchdog_without_watchdog_usec(bao, cmk, mounts, manager, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    mounts(wait=False)
    assert manager.wait_for("READY", 15) is not None
    assert [msg for msg in manager.collect(1.5) if "WATCHDOG" in msg] == []


def test_unusable_notify_socket_fails_the_start(bao, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify.sock")
    ms = Mounts(bao.conf, allowed=[r"cmkcertfs: error: NOTIFY_SOCKET=relative/notify.sock: not an absolute"])
    try:
        m = ms(wait=False)
        assert m.proc.wait(15) == 1
        assert "NOTIFY_SOCKET" in m.stderr()
        assert not mounted(m.mnt)
    finally:
        problems = ms.close()
    assert problems == ["cmkcertfs exited 1"], problems


def journal_stream_of(path):
    st = os.stat(path)
    return "%d:%d" % (st.st_dev, st.st_ino)


def test_log_lines_carry_priorities_on_the_journal_stream(bao, cmk, monkeypatch):
    ms = Mounts(bao.conf, allowed=[r"<6>info: ", r"<7>debug: ", r"<4>warning: mlock: "])
    try:
        # The fixture opens <root>/journal.stderr for writing (same inode): name it as the journal's stream.
        err = ms.root / "journal.stderr"
        err.touch()
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(err))
        m = ms(name="journal")
        assert (m / "certs").is_dir()
        m.unmount()
        lines = err.read_text().splitlines()
    finally:
        problems = ms.close()
    assert not problems, problems
    assert any(re.match(r"<6>info: serving \d+ files at ", l) for l in lines), lines
    assert all(re.match(r"<[0-7]>", l) for l in lines), lines


def test_cli_errors_carry_priorities_on_the_journal_stream(bao, tmp_path):
    err = tmp_path / "cli.stderr"
    with open(err, "w") as f:
        env = dict(os.environ, JOURNAL_STREAM=journal_stream_of(err))
        r = subprocess.run([str(CMKCERT), "-c", str(bao.conf), "keystore", "add", "--tenant", "bad/name",
                            "--type", "aws_kms"], stdout=subprocess.PIPE, stderr=f, env=env, timeout=60)
    assert r.returncode == 2
    text = err.read_text()
    assert text.startswith("<3>cmkcert: "), text
    # Without the journal the same line has no prefix.
    r = subprocess.run([str(CMKCERT), "-c", str(bao.conf), "keystore", "add", "--tenant", "bad/name",
                        "--type", "aws_kms"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, JOURNAL_STREAM=journal_stream_of(err)))
    assert r.returncode == 2 and r.stderr.startswith("cmkcert: "), r.stderr


def test_daemon_serves_and_renews_inside_the_units_sandbox(bao, cmk, keystore, manager, tmp_path):
    """The unit's capability bounding set, no-new-privileges, system call filter, address
    families, W^X and UTS namespace (tests/integration/sandbox.py), applied as systemd would:
    the daemon mounts, says READY=1, serves a key, renews over TLS to OpenBao with the mTLS test
    against the keystore, pings the watchdog and stops cleanly, with nothing refused on the way."""
    import sandbox
    from conftest import CMKCERTFS, ROOT, edit_conf
    from fusefix import make_mount_root

    conf = edit_conf(bao.conf, "template:aws_kms", "ttl", "12s", out=tmp_path / "sandbox.conf")
    for key, value in (("check_interval", "1s"), ("renew_before", "1h"), ("jitter", "0s"),
                       ("max_ops_per_minute", "600"), ("grace_period", "1h")):
        edit_conf(conf, "renewal", key, value)
    r = cmk("keystore", "add", "--tenant", "boxed", "--type", "aws_kms", "--endpoint", keystore.endpoint,
            "--server-ca", keystore.server_ca, conf=conf)
    assert r.returncode == 0, r.stderr
    first = json.loads(cmk("show", "--json", "--pem", "--tenant", "boxed", "--type", "aws_kms",
                           conf=conf).stdout)["certificate"]
    root = make_mount_root()
    mnt = root / "mnt"
    mnt.mkdir()
    err_path = root / "stderr"
    env = dict(os.environ, NOTIFY_SOCKET=manager.path, WATCHDOG_USEC="1000000")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([str(CMKCERTFS), "-f", "-c", str(conf), str(mnt)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env,
                                preexec_fn=sandbox.preexec(ROOT / "packaging" / "cmkcertfs.service"))
    try:
        assert manager.wait_for("READY", 15) is not None, err_path.read_text()
        # The sandbox is in force: only the two capabilities, no new privileges, a seccomp filter.
        status = dict(l.split(":\t", 1) for l in open("/proc/%d/status" % proc.pid).read().splitlines()
                      if ":\t" in l)
        assert int(status["CapBnd"], 16) == (1 << 21) | (1 << 14) | (1 << 1), status["CapBnd"]
        assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
        assert (mnt / "private/boxed-aws_kms.key").read_text().startswith("-----BEGIN")
        # The scheduler renews (12 s certificates are due after 8 s): OpenBao over TLS, then the
        # keystore probe, then activation; the mount follows.
        deadline = time.monotonic() + 40
        while (mnt / "certs/boxed-aws_kms.crt").read_text().strip() == first.strip():
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.2)
        assert manager.wait_for("WATCHDOG", 3) is not None
        proc.send_signal(signal.SIGTERM)
        assert manager.wait_for("STOPPING", 10) is not None
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
    lines = [l for l in err_path.read_text().splitlines()
             if not re.match(r"cmkcertfs: (info|debug): |cmkcertfs: warning: mlock: ", l)]
    assert lines == [], lines
    import shutil
    shutil.rmtree(root, ignore_errors=True)
