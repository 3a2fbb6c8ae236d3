"""Dead processes never wedge the daemon.

CLI runs are killed with SIGKILL at random moments while cmkcertfs runs its
renewal scheduler on the same store.  After every kill the daemon must go on
following the store: a keystore added next appears in the mount within a
second, a revoked key leaves it within a second, renewals continue, and
SIGTERM still stops the daemon."""

import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import CMKCERT, edit_conf
from fusefix import Mounts

ITERATIONS = int(os.environ.get("CMK_LIVENESS_ITERATIONS", "100"))


@pytest.fixture
def mounts(bao):
    ms = Mounts(bao.conf, allowed=[r"cmkcertfs: warning: ", r"cmkcertfs: error: (scheduler|watch|store|renew)"])
    yield ms
    problems = ms.close()
    assert not problems, problems


def run(conf, *args, timeout=60):
    return subprocess.run([str(CMKCERT), "-c", str(conf)] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def test_killed_cli_runs_never_wedge_the_daemon(bao, mounts, tmp_path):
    conf = edit_conf(bao.conf, "template:aws_kms", "ttl", "20s", out=tmp_path / "live.conf")
    # EC keys: an RSA key generation takes longer than the kill window, and every kill would land in it.
    edit_conf(conf, "template:aws_kms", "key_type", "ec")
    edit_conf(conf, "template:aws_kms", "key_bits", "256")
    for key, value in (("check_interval", "1s"), ("renew_before", "15s"), ("grace_period", "5s"),
                       ("jitter", "0s"), ("max_ops_per_minute", "6000")):
        edit_conf(conf, "renewal", key, value)
    for t in range(4):
        r = run(conf, "keystore", "add", "--tenant", "t%d" % t, "--type", "aws_kms", "--verify", "none")
        assert r.returncode == 0, r.stderr
    m = mounts(conf)
    rng = random.Random(20261207)
    slow_appear, slow_gone, verify_failed, appear = [], [], [], []
    for i in range(ITERATIONS):
        p = subprocess.Popen([str(CMKCERT), "-c", str(conf), "renew", "--tenant", "t%d" % (i % 4),
                              "--type", "aws_kms"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.02, 0.12))
        p.send_signal(signal.SIGKILL)
        p.wait()
        v = run(conf, "verify")
        if v.returncode != 0:
            verify_failed.append((i, v.stderr.strip()[-300:]))
        tenant = "n%d" % i
        r = run(conf, "keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none")
        assert r.returncode == 0, (i, r.stderr)
        t0 = time.monotonic()
        if not wait_for(lambda: (m / ("private/%s-aws_kms.key" % tenant)).exists(), 1.0):
            slow_appear.append(i)
            if os.environ.get("CMK_LIVENESS_DEBUG"):
                late = wait_for(lambda: (m / ("private/%s-aws_kms.key" % tenant)).exists(), 10.0)
                print("iteration %d: appeared %s after %.2f s; stderr since: %s" % (i, late, time.monotonic() - t0, m.stderr()[-1500:]))
        appear.append(time.monotonic() - t0)
        if i % 10 == 9:
            r = run(conf, "revoke", "--tenant", tenant, "--type", "aws_kms", "--reason", "compromise")
            assert r.returncode == 0, (i, r.stderr)
            if not wait_for(lambda: not (m / ("private/%s-aws_kms.key" % tenant)).exists(), 1.0):
                slow_gone.append(i)
    appear.sort()
    print("new tenant served after: median %.0f ms, max %.0f ms" % (appear[len(appear) // 2] * 1000, appear[-1] * 1000))
    assert not slow_appear, "new tenants not served within 1 s after iterations %s" % slow_appear
    assert not slow_gone, "revoked keys still served 1 s later after iterations %s" % slow_gone
    assert not verify_failed, verify_failed
    # Renewals went on: every base tenant has been renewed at least once during the run.
    recs = json.loads(run(conf, "list", "--json").stdout)
    for t in range(4):
        ids = [r for r in recs if r["tenant_id"] == "t%d" % t]
        assert len(ids) > 1, "t%d was never renewed" % t
    err = m.stderr()
    print("daemon: released a dead process's locks %d times, opened a new environment %d times, "
          "replaced stuck threads %d times" % (err.count("released the locks"), err.count("opened a new environment"),
                                                err.count("starting new watcher")))
    t0 = time.monotonic()
    assert m.signal(signal.SIGTERM, timeout=12) == 0
    print("SIGTERM to exit: %.2f s" % (time.monotonic() - t0))
