"""Mounting cmkcertfs for the integration tests.

A Mount runs `build/cmkcertfs -f -c CONF MNT` in the background, waits until
the mount shows in /proc/self/mountinfo, and always unmounts in teardown:
`fusermount3 -u`, then `fusermount3 -u -z` as a last resort.  The teardown
checks that the daemon exited 0, that no process is left serving the mount
point, and that its stderr holds no unexpected warning or error.

Mount points live in a world-traversable directory under /tmp (pytest's own
tmp_path is 0700), so tests can read through the mount as another user.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

from conftest import CMKCERTFS

# stderr lines that are not a problem (the daemon logs "cmkcertfs: LEVEL: ...").
ALLOWED = [
    re.compile(r"cmkcertfs: info: "),
    re.compile(r"cmkcertfs: debug: "),
    # Containers often give a small RLIMIT_MEMLOCK; the daemon says so once and goes on.
    re.compile(r"cmkcertfs: warning: mlock: "),
]


def mounted(mnt):
    """True when `mnt` is a mount point in this mount namespace."""
    target = str(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == target:
                return True
    return False


def serving_pids(mnt):
    """Processes whose command line names the mount point (a daemon left behind)."""
    pids = []
    needle = str(mnt).encode()
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # A zombie has exited; its parent (this process) simply has not reaped it yet.
        if needle in cmd.split(b"\0") and b"cmkcertfs" in cmd and stat.split(") ")[-1][:1] != "Z":
            pids.append(int(d.name))
    return pids


def make_mount_root():
    root = pathlib.Path(tempfile.mkdtemp(prefix="cmkfs-", dir="/tmp"))
    root.chmod(0o755)
    return root


class Mount:
    def __init__(self, conf, root, name="mnt", args=(), wait=True, allowed=()):
        self.allowed = ALLOWED + [re.compile(p) for p in allowed]
        self.conf = pathlib.Path(conf)
        self.mnt = pathlib.Path(root) / name
        self.mnt.mkdir()
        self.mnt.chmod(0o755)
        self.err_path = pathlib.Path(root) / (name + ".stderr")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([str(CMKCERTFS), "-f", "-c", str(conf), *args, str(self.mnt)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        self.returncode = None
        if wait:
            self.wait_mounted()

    def wait_mounted(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if mounted(self.mnt):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("cmkcertfs exited with %s before mounting:\n%s"
                                   % (self.proc.returncode, self.stderr()))
            time.sleep(0.02)
        raise TimeoutError("cmkcertfs did not mount %s:\n%s" % (self.mnt, self.stderr()))

    def __truediv__(self, rel):
        return self.mnt / rel

    def stderr(self):
        self.err.flush()
        return self.err_path.read_text()

    def unexpected_stderr(self):
        return [line for line in self.stderr().splitlines()
                if line.strip() and not any(p.match(line) for p in self.allowed)]

    def signal(self, sig=signal.SIGTERM, timeout=10.0):
        """Stop the daemon with a signal; returns its exit status."""
        self.proc.send_signal(sig)
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def unmount(self, timeout=10.0):
        """fusermount3 -u (retried while busy), -z as a last resort; returns the daemon's status."""
        if mounted(self.mnt):
            for _ in range(20):
                if subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return self.returncode

    def close(self):
        """Teardown: unmount, then return a list of problems (empty when clean)."""
        problems = []
        if self.proc.poll() is None or mounted(self.mnt):
            try:
                rc = self.unmount()
            except subprocess.TimeoutExpired:
                problems.append("cmkcertfs did not exit after unmount")
                rc = None
        else:
            rc = self.proc.returncode
        if rc not in (0, None):
            problems.append("cmkcertfs exited %s" % rc)
        if mounted(self.mnt):
            problems.append("%s still mounted" % self.mnt)
        left = serving_pids(self.mnt)
        if left:
            problems.append("processes left behind: %s" % left)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
        bad = self.unexpected_stderr()
        if bad:
            problems.append("unexpected stderr:\n" + "\n".join(bad))
        self.err.close()
        return problems


class Mounts:
    """Factory fixture: mounts on demand, all unmounted and checked at teardown."""

    def __init__(self, default_conf, allowed=()):
        self.default_conf = default_conf
        self.allowed = allowed
        self.root = make_mount_root()
        self.all = []

    def __call__(self, conf=None, name=None, args=(), wait=True):
        m = Mount(conf or self.default_conf, self.root, name or "mnt%d" % len(self.all), args, wait, self.allowed)
        self.all.append(m)
        return m

    def close(self):
        problems = []
        for m in self.all:
            problems += m.close()
        shutil.rmtree(self.root, ignore_errors=True)
        return problems
