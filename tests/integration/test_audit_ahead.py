"""Key reads are audited before they are served.

Two readers open and read a key file as fast as they can while the daemon is
killed with SIGKILL over and over (and started again on the same mount
point).  Every read a reader got must have its privateKeyRead line in the
trail, and the trail must verify afterwards (interrupted writes removed and
recorded)."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from conftest import CMKCERT, CMKCERTFS, PYTHON
from fusefix import make_mount_root, mounted

KILLS = int(os.environ.get("CMK_AUDIT_KILLS", "25"))

READER = r"""
import os, signal, sys
path = sys.argv[1]
got = 0
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
while not stop:
    try:
        with open(path, "rb") as f:
            if f.read().startswith(b"-----BEGIN"):
                got += 1
    except OSError:
        pass
print(got, flush=True)
"""


def start_daemon(conf, mnt, err):
    p = subprocess.Popen([str(CMKCERTFS), "-f", "-n", "-c", str(conf), str(mnt)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 15
    while not mounted(mnt):
        assert p.poll() is None, "cmkcertfs exited with %s" % p.returncode
        assert time.monotonic() < deadline, "cmkcertfs did not mount"
        time.sleep(0.02)
    return p


def test_every_key_read_a_reader_got_is_in_the_trail(bao, cmk, tmp_path):
    for tenant in ("t1", "t2"):
        r = cmk("keystore", "add", "--tenant", tenant, "--type", "aws_kms", "--verify", "none")
        assert r.returncode == 0, r.stderr
    root = make_mount_root()
    mnt = root / "mnt"
    mnt.mkdir()
    err = open(tmp_path / "daemon.stderr", "w")
    daemon = start_daemon(bao.conf, mnt, err)
    readers = [subprocess.Popen([PYTHON, "-c", READER, str(mnt / ("private/t%d-aws_kms.key" % i))],
                                stdout=subprocess.PIPE, text=True) for i in (1, 2)]
    rng = random.Random(7)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 0.6))
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            daemon = start_daemon(bao.conf, mnt, err)
        time.sleep(0.5)
    finally:
        for r in readers:
            r.send_signal(signal.SIGTERM)
        counts = {r.pid: int(r.communicate(timeout=30)[0].strip() or 0) for r in readers}
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        err.close()
        if mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        mnt.rmdir()
        root.rmdir()

    lines = {pid: 0 for pid in counts}
    for line in open(bao.dir / "audit.log"):
        ev = json.loads(line)
        if ev["event"] == "privateKeyRead" and ev["outcome"] == "success" and ev.get("pid") in lines:
            lines[ev["pid"]] += 1
    got, audited = sum(counts.values()), sum(lines.values())
    print("%d daemon kills: readers got %d keys, the trail has %d privateKeyRead lines for them"
          % (KILLS, got, audited))
    assert got > 0
    for pid in counts:
        assert lines[pid] >= counts[pid], "reader %d got %d keys, %d audited" % (pid, counts[pid], lines[pid])
    v = cmk("audit", "verify")
    assert v.returncode == 0, v.stderr
    print(v.stdout.strip())
