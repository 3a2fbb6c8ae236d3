"""Driving the real clients of tests/clients from the integration tests.

The client programs (the Go loader, reloader and watcher built by `make` into
build/clients/, pyclient.py, inotifywait) run as processes of their own: the
mount tells processes apart, so a client must never share a process with the
test that rotates certificates and looks at the mount.

Clients that report as they go print one line per event; a Lines object reads
them on a thread and stamps each with time.monotonic() on arrival.  The Go
programs also stamp their lines with CLOCK_MONOTONIC themselves (`mono`), the
same clock, so latencies are measured from the CLI's return on one clock.
"""

import ctypes
import json
import os
import pathlib
import select
import statistics
import struct
import subprocess
import tempfile
import threading
import time

from conftest import BUILD, CMKCERT, PYTHON, free_port, make_ca, make_server_cert, wait_port

CLIENTS = BUILD / "clients"
PYCLIENT = pathlib.Path(__file__).resolve().parent / "pyclient.py"
TYPE = "aws_kms"


def client(name):
    """Path of a built Go client; a missing one is a build problem, not a reason to skip."""
    path = CLIENTS / name
    assert path.is_file(), "%s is not built: run `make integration` (or `make %s`)" % (path, path)
    return path


def names(tenant, ktype=TYPE):
    """The mount's names for one keystore, relative to the mount point."""
    kt = "%s-%s" % (tenant, ktype)
    return {
        "crt": "certs/%s.crt" % kt,
        "key": "private/%s.key" % kt,
        "bundle": "bundle/%s.pem" % kt,
        "ca": "ca/%s-ca-chain.pem" % ktype,
        "tlsdir": "tls/%s" % kt,
        "tls.crt": "tls/%s/tls.crt" % kt,
        "tls.key": "tls/%s/tls.key" % kt,
        "ca.crt": "tls/%s/ca.crt" % kt,
    }


def add(cmk, tenant, ktype=TYPE):
    r = cmk("keystore", "add", "--tenant", tenant, "--type", ktype, "--verify", "none")
    assert r.returncode == 0, r.stderr


class Rotation:
    """One `cmkcert renew`: when it started and returned (time.monotonic) and the new serial."""

    def __init__(self, start, end, serial):
        self.start, self.end, self.serial = start, end, serial


def renew(conf, tenant, ktype=TYPE):
    cmd = [str(CMKCERT), "-c", str(conf), "--json", "renew", "--tenant", tenant, "--type", ktype]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    end = time.monotonic()
    assert r.returncode == 0, r.stderr
    return Rotation(start, end, json.loads(r.stdout)["serial_number"])


def run_cli(conf, *args):
    """A CLI command timed like renew(): returns (start, end)."""
    start = time.monotonic()
    r = subprocess.run([str(CMKCERT), "-c", str(conf)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=60)
    end = time.monotonic()
    assert r.returncode == 0, r.stderr
    return start, end


def serial_of(pem):
    from cryptography import x509
    n = x509.load_pem_x509_certificate(pem).serial_number
    return ":".join("%02x" % b for b in n.to_bytes(20, "big").lstrip(b"\0"))


def served_serial(path):
    """The serial another process gets when it reads `path` now (cat is that other process)."""
    r = subprocess.run(["cat", str(path)], capture_output=True)
    if r.returncode != 0 or b"BEGIN CERTIFICATE" not in r.stdout:
        return None
    return serial_of(r.stdout)


def wait_served(path, serial, timeout=5.0):
    deadline = time.monotonic() + timeout
    while served_serial(path) != serial:
        assert time.monotonic() < deadline, "%s did not show serial %s within %.0f s" % (path, serial, timeout)
        time.sleep(0.02)


class Lines:
    """A client process whose stdout lines are read on a thread, each stamped on arrival."""

    def __init__(self, argv, parse=json.loads, stderr=None, name=None):
        """stderr: a file for the client's standard error (default: a temporary file that
        finish() reads back; never a pipe nobody reads)."""
        self.name = name or pathlib.Path(argv[0]).name
        self.err = None if stderr is not None else tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr if stderr is not None else self.err, text=True, bufsize=1)
        self.parse = parse
        self.lines = []                      # (arrival time, parsed line)
        self.cond = threading.Condition()
        self.eof = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            now = time.monotonic()
            try:
                item = self.parse(raw.rstrip("\n"))
            except ValueError:
                item = {"event": "unparsed", "text": raw}
            with self.cond:
                self.lines.append((now, item))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def clear(self):
        """Forget the lines read so far (a command-driven client's earlier answers)."""
        with self.cond:
            self.lines.clear()

    def snapshot(self):
        with self.cond:
            return list(self.lines)

    def wait_for(self, pred, timeout):
        """The first (time, line) satisfying pred(time, line), or None after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, item in self.lines:
                    if pred(t, item):
                        return t, item
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cond.wait(left)

    def send(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=30, terminate=False):
        """Close stdin (the clients' stop signal; inotifywait needs terminate=True: SIGTERM),
        wait; returns (status, lines, stderr)."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        if terminate and self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(10)
        err = ""
        if self.err is not None:
            self.err.seek(0)
            err = self.err.read()
            self.err.close()
            self.err = None
        return self.proc.returncode, self.snapshot(), err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TlsServers:
    """openssl s_server -Verify 1 -www endpoints that demand a client certificate chaining to
    `trust`.  The servers' own certificate comes from `server` = (cert, key, ca) or, by
    default, from a CA of their own made here (then `server_ca` verifies them).  One
    s_server answers one connection at a time, so concurrent clients get one each."""

    def __init__(self, d, trust, n=1, server=None):
        d = pathlib.Path(d)
        d.mkdir(parents=True, exist_ok=True)
        if server is None:
            ca = make_ca(d, "server-ca")
            cert, key = make_server_cert(d, ca, "server")
            self.server_ca = ca[0]
        else:
            cert, key, self.server_ca = server
        self.procs, self.ports, self.logs = [], [], []
        for i in range(n):
            port = free_port()
            log = open(d / ("s_server%d.log" % i), "w")
            proc = subprocess.Popen(
                ["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", str(cert), "-key", str(key),
                 "-CAfile", str(trust), "-Verify", "1", "-verify_return_error", "-www", "-quiet"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            self.ports.append(port)
            self.logs.append(log)
        for proc, port in zip(self.procs, self.ports):
            wait_port(port, proc=proc)
        self.urls = ["https://127.0.0.1:%d/" % p for p in self.ports]

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self.logs:
            log.close()


def follow_rotations(conf, tenant, client, rotations, dwell=0.2, bound=10.0):
    """Rotate `rotations` times; after each, wait until `client` reports the new serial
    ({"event": "serial", "serial": S, "mono": T} lines), at most `bound` seconds after the
    CLI returned, then let it load that version for `dwell` seconds.  Returns the
    Rotations and, for each, the time from the CLI's return until the client first loaded
    the new serial (None: not within the bound)."""
    rots, switch = [], []
    for _ in range(rotations):
        r = renew(conf, tenant)
        rots.append(r)
        hit = client.wait_for(lambda t, e, s=r.serial: e.get("event") == "serial" and e.get("serial") == s,
                              r.end + bound - time.monotonic())
        switch.append(None if hit is None else max(0.0, hit[1]["mono"] - r.end))
        if client.proc.poll() is not None:
            break
        time.sleep(dwell)
    return rots, switch


def pyclient(*args):
    return Lines([PYTHON, str(PYCLIENT)] + [str(a) for a in args], name="pyclient")


# inotify(7), through libc, for the tests that check exact event masks.
IN_ACCESS, IN_MODIFY, IN_ATTRIB = 0x1, 0x2, 0x4
IN_CLOSE_WRITE, IN_CLOSE_NOWRITE, IN_OPEN = 0x8, 0x10, 0x20
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_IGNORED, IN_ISDIR = 0x8000, 0x40000000
IN_ALL_EVENTS = 0xFFF
MASK_NAMES = [(v, k[3:]) for k, v in sorted(globals().items()) if k.startswith("IN_") and k != "IN_ALL_EVENTS"]


def mask_text(mask):
    return "|".join(n for v, n in MASK_NAMES if mask & v) or hex(mask)


class Inotify:
    """One inotify instance; events are read on a thread into (arrival, watched path, mask, cookie, name)."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.paths = {}
        self.events = []
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def watch(self, path, mask=IN_ALL_EVENTS & ~(IN_ACCESS | IN_OPEN | IN_CLOSE_NOWRITE)):
        """Add a watch; returns None on success, else the error text (the path may be missing)."""
        wd = self.libc.inotify_add_watch(self.fd, str(path).encode(), mask)
        if wd < 0:
            return os.strerror(ctypes.get_errno())
        with self.cond:
            self.paths[wd] = str(path)
        return None

    def _read(self):
        while not self.stopping:
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            now = time.monotonic()
            i = 0
            with self.cond:
                while i < len(buf):
                    wd, mask, cookie, n = struct.unpack_from("iIII", buf, i)
                    name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode()
                    self.events.append((now, self.paths.get(wd, "?%d" % wd), mask, cookie, name))
                    i += 16 + n
                self.cond.notify_all()

    def wait_until(self, done, timeout):
        """Wait until done(events) is true or timeout; returns the events so far."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return list(self.events)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        os.close(self.fd)


def figures(values):
    """'max X ms, median Y ms' of latencies in seconds (or 'none')."""
    if not values:
        return "none"
    return "max %.0f ms, median %.0f ms" % (max(values) * 1000, statistics.median(values) * 1000)
