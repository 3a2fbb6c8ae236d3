#!/usr/bin/python3
"""The store and the CLI at scale: a store of N active certificates
(CMKBENCH_SCALE, default 100,000), filled with bench/populate.c.

  scale.py BUILD POPULATE [N]

Reports, each beside its baseline where there is one (all from this run):
  - time to make the certificates (bench/gencerts.py) and to store them
  - bytes on disk per certificate, by file
  - `cmkcert renew --due` with nothing due
  - `cmkcert list`: time to the first record line and to the end (text and --json)
  - `cmkcert list --tenant T`, `list --status failed` (an empty status)
  - the daemon (cmkcertfs -n): time until it serves, its resident memory,
    `ls -l /certs` (first, and with the kernel's caches warm) against the same
    names and sizes on tmpfs, and one cold `cat` of a certificate
Needs root and /dev/fuse for the daemon's part (CMKBENCH_SCALE_DAEMON=0 leaves it out).
CMKBENCH_GENDIR=DIR keeps the generated certificates there for another run;
CMKBENCH_KEEP=1 keeps the store and says where."""

import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHON = "/usr/bin/python3"
RUNS = 5


def conf_text(w):
    return """[openbao]
address = https://127.0.0.1:1
ca_cert = {w}/etc/unused-ca.pem
pki_mount = pki_client_certs
role = bench
[auth]
method = token
token_path = {w}/etc/unused-token
[store]
path = {w}/store
[keys]
provider = local
master_key = {w}/etc/master.key
[audit]
path = {w}/audit.log
[template:aws_kms]
common_name = tenant-{{tenant_id}}-aws.keystore.internal
key_type = ec
key_bits = 256
ttl = 4380h
""".format(w=w)


def ms(s):
    return "%9.1f ms" % (s * 1000)


def timed(cmd, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, **kw)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit("scale: %s failed (%d): %s" % (" ".join(map(str, cmd)), r.returncode, r.stderr.decode()))
    return dt, r.stdout


def median_run(cmd):
    return statistics.median(timed(cmd)[0] for _ in range(RUNS))


def first_line(cmd, skip):
    """Seconds to the first record line (after `skip` lines) and to the end; the number of lines."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    first, n = None, 0
    for n, _ in enumerate(p.stdout, 1):
        if first is None and n > skip:
            first = time.perf_counter() - t0
    if p.wait() != 0:
        sys.exit("scale: %s failed" % " ".join(map(str, cmd)))
    return first or 0.0, time.perf_counter() - t0, n


def store_bytes(store):
    groups = {}
    for f in store.iterdir():
        if not f.is_file():
            continue
        n = f.name
        g = ("records (certs.db)" if n == "certs.db" else
             "sealed keys (keys*.db)" if n.startswith("keys") else
             "indexes (by_*.db)" if n.startswith("by_") else
             "log files" if n.startswith("log.") else
             "regions (__db.*)" if n.startswith("__db.") else
             "change log (changes.db)" if n == "changes.db" else "other")
        groups[g] = groups.get(g, 0) + f.stat().st_size
    return groups


def is_mounted(mnt):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mnt) for line in f)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon(build, conf, w, n, tenant):
    mnt = w / "mnt"
    mnt.mkdir()
    log = open(w / "cmkcertfs.log", "w")
    t0 = time.perf_counter()
    p = subprocess.Popen([str(build / "cmkcertfs"), "-f", "-n", "-c", str(conf), str(mnt)], stderr=log)
    try:
        while not is_mounted(mnt):
            if p.poll() is not None:
                sys.exit("scale: cmkcertfs exited: %s" % (w / "cmkcertfs.log").read_text())
            time.sleep(0.01)
        serving = time.perf_counter() - t0
        rss = rss_kb(p.pid)
        # One cold cat: the first open of this file since the daemon started.
        cat = timed(["cat", str(mnt / "certs" / ("%s-aws_kms.crt" % tenant))])[0]
        t1 = time.perf_counter()
        listed = subprocess.run(["ls", "-l", str(mnt / "certs")], capture_output=True, check=True).stdout
        ls_first = time.perf_counter() - t1
        ls_again = timed(["ls", "-l", str(mnt / "certs")])[0]
        rss_after = rss_kb(p.pid)
        entries = [l.split() for l in listed.decode().splitlines() if l.startswith("-")]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            p.kill()
            p.wait()
        log.close()
    if len(entries) != n:
        sys.exit("scale: ls -l listed %d files, expected %d" % (len(entries), n))
    # The same names, sizes and modes on tmpfs (sparse: the listing is the same, no memory is used).
    shm = pathlib.Path(tempfile.mkdtemp(prefix="cmkscale.", dir="/dev/shm"))
    try:
        for e in entries:
            fd = os.open(shm / e[-1], os.O_WRONLY | os.O_CREAT, 0o444)
            os.ftruncate(fd, int(e[4]))
            os.close(fd)
        t2 = time.perf_counter()
        subprocess.run(["ls", "-l", str(shm)], capture_output=True, check=True)
        ls_tmpfs = time.perf_counter() - t2
    finally:
        shutil.rmtree(shm)
    return serving, rss, rss_after, cat, ls_first, ls_again, ls_tmpfs


def main():
    build = pathlib.Path(sys.argv[1]).resolve()
    populate = sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else int(os.environ.get("CMKBENCH_SCALE", "100000"))
    cmk = str(build / "cmkcert")
    w = pathlib.Path(tempfile.mkdtemp(prefix="cmkscale."))
    w.chmod(0o755)
    try:
        (w / "etc").mkdir(mode=0o700)
        (w / "etc" / "master.key").write_bytes(os.urandom(32))
        (w / "etc" / "master.key").chmod(0o600)
        conf = w / "etc" / "cmkcert.conf"
        conf.write_text(conf_text(w))
        conf.chmod(0o600)

        # CMKBENCH_GENDIR keeps the certificates for another run (of the same N).
        gen = pathlib.Path(os.environ.get("CMKBENCH_GENDIR", w / "gen"))
        t_gen = 0.0
        if not (gen / "pairs.pem").exists():
            t_gen = timed([PYTHON, str(ROOT / "bench" / "gencerts.py"), str(n), str(gen)])[0]
        t_pop, out = timed([populate, str(conf), str(gen / "pairs.pem"), str(gen / "ca-chain.pem"), "bench"])
        if "CMKBENCH_GENDIR" not in os.environ:
            (gen / "pairs.pem").unlink()
        stored = int(out)
        groups = store_bytes(w / "store")
        total = sum(groups.values())
        c = [cmk, "-c", str(conf)]
        tenant = "bench%05d" % (stored // 2)

        due = median_run(c + ["renew", "--due"])
        tenant_t = median_run(c + ["list", "--tenant", tenant])
        failed_t = median_run(c + ["list", "--status", "failed"])
        l_first, l_total, l_lines = first_line(c + ["list"], 1)
        j_first, j_total, _ = first_line(c + ["--json", "list"], 1)
        # CMKBENCH_SCALE_DAEMON=0 leaves the daemon out (it takes longest at a million).
        fs = daemon(build, conf, w, stored, tenant) if os.environ.get("CMKBENCH_SCALE_DAEMON", "1") != "0" else None

        print("store: %d active certificates; certificates made in %s (gencerts.py), stored in %.1f s "
              "(%.0f per second)" % (stored, "%.1f s" % t_gen if t_gen else "an earlier run", t_pop, stored / t_pop))
        print("bytes on disk: %d in all, %.0f per certificate" % (total, total / stored))
        for g in sorted(groups, key=groups.get, reverse=True):
            print("  %-26s %12d  %8.0f per certificate" % (g, groups[g], groups[g] / stored))
        print("cmkcert (median of %d runs where it says so)" % RUNS)
        print("  renew --due, nothing due       %s  (median)" % ms(due))
        print("  list: first record line        %s  all %d lines %s" % (ms(l_first), l_lines, ms(l_total)))
        print("  list --json: first element     %s  whole array  %s" % (ms(j_first), ms(j_total)))
        print("  list --tenant %-16s %s  (median)" % (tenant, ms(tenant_t)))
        print("  list --status failed (none)    %s  (median)" % ms(failed_t))
        if fs is None:
            return
        serving, rss, rss_after, cat, ls_first, ls_again, ls_tmpfs = fs
        print("cmkcertfs -n (as it is: it loads every certificate before it mounts)")
        print("  serving after start            %s" % ms(serving))
        print("  resident memory                %9.1f MB serving, %.1f MB after ls -l (%.0f bytes per "
              "certificate)" % (rss / 1024, rss_after / 1024, rss_after * 1024 / stored))
        print("  one cold cat of a .crt         %s" % ms(cat))
        print("  ls -l /certs, first            %s  again %s  same names and sizes on tmpfs %s  (%.1fx)"
              % (ms(ls_first), ms(ls_again), ms(ls_tmpfs), ls_first / ls_tmpfs))
    finally:
        if os.environ.get("CMKBENCH_KEEP"):
            print("kept: %s" % w)
        else:
            shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))
    main()
