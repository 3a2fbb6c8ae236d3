"""The Debian packages `make deb` builds (packaging/debian), and the unit.

Without installing anything: lintian reports no error and no warning that
is not overridden with a reason; every shared library the binaries need,
and every program the unit runs, comes from a declared dependency; the unit
keeps the daemon in the host's mount namespace and its exposure score is the
one packaging/README.md gives.

On this machine, as root (CI runs `make check` as root on a fresh Debian):
`apt-get install ./cmkcert_*.deb ./libcmkcert-dev_*.deb`, then the packaged
`cmkcert` with the packaged configuration path (/etc/cmkcert/cmkcert.conf,
pointed at the test server) checks OpenBao and issues a certificate into
/var/lib/cmkcert; the unit's own ExecStart serves it at /run/cmkcert/files
and says READY=1; a program builds against libcmkcert-dev with pkg-config;
`apt-get remove` keeps the configuration, the store and the audit trail;
`apt-get purge` removes them.  The machine is left as it was found: the
test refuses to run (skips) where cmkcert is installed already or
/etc/cmkcert, /var/lib/cmkcert or /run/cmkcert exist.
"""

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import BUILD, ROOT
from fusefix import mounted
from notifyfix import Manager

DEB_DIR = BUILD / "deb"
DEBIAN = ROOT / "packaging" / "debian"
UNIT = ROOT / "packaging" / "cmkcertfs.service"
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]
# Settings that give a service a mount namespace of its own: a FUSE mount made inside one
# is invisible to every other process (packaging/README.md).
NAMESPACE_SETTINGS = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
                      "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                      "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateIPC", "PrivateNetwork",
                      "PrivateUsers", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "BindPaths",
                      "BindReadOnlyPaths", "TemporaryFileSystem", "RootDirectory", "RootImage",
                      "MountFlags", "MountAPIVFS", "ExecPaths", "NoExecPaths")


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    return subprocess.run([str(c) for c in cmd], **kw)


def version():
    r = run(["dpkg-parsechangelog", "-l", DEBIAN / "changelog", "-S", "Version"])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def debs():
    """{package name: path} of what `make deb` built for this version; fails when it was not run."""
    v = version()
    found = {p.name.split("_")[0]: p for p in DEB_DIR.glob("*_%s_*.deb" % v)}
    if "cmkcert" not in found or "libcmkcert-dev" not in found:
        pytest.fail("no cmkcert %s packages in %s: run `make deb` (make check does)" % (v, DEB_DIR))
    return found


def unit_settings(path):
    """[(key, value)] of the [Service] section of a unit file."""
    out, section = [], None
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def test_lintian_reports_nothing_unjustified():
    debs()
    changes = list(DEB_DIR.glob("cmkcert_%s_*.changes" % version()))
    assert len(changes) == 1, changes
    # What lintian says, overrides included (O:) for the log; then whether it fails.
    shown = run(["lintian", "--pedantic", "--display-info", "--display-experimental", "--show-overrides",
                 changes[0]])
    tags = [l for l in shown.stdout.splitlines() if re.match(r"[EWIPXO]: ", l)]
    print("lintian:\n" + "\n".join(tags))
    assert [t for t in tags if t[0] in "EW"] == []
    r = run(["lintian", "--pedantic", "--fail-on", "error,warning", changes[0]])
    assert r.returncode == 0, r.stdout + r.stderr
    # Every override carries its reason: comment lines right above it.
    for name in ("cmkcert", "libcmkcert-dev"):
        path = DEBIAN / ("%s.lintian-overrides" % name)
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() and not line.startswith("#"):
                assert i > 0 and lines[i - 1].startswith("# "), "override without a reason: " + line


def depends_of(deb):
    r = run(["dpkg-deb", "-f", deb, "Depends"])
    assert r.returncode == 0, r.stderr
    return {alt.strip().split()[0].split(":")[0] for dep in r.stdout.split(",") for alt in dep.split("|")
            if alt.strip()}


def owner_of(path):
    r = run(["dpkg-query", "-S", os.path.realpath(path)])
    if r.returncode != 0:       # usrmerge: dpkg knows /lib/... while the loader says /usr/lib/...
        alt = re.sub(r"^/usr/", "/", os.path.realpath(path))
        r = run(["dpkg-query", "-S", alt])
    assert r.returncode == 0, "no package owns %s" % path
    return r.stdout.split(":")[0].split(",")[0].strip()


def test_every_library_and_program_comes_from_a_declared_dependency(tmp_path):
    deb = debs()["cmkcert"]
    depends = depends_of(deb)
    root = tmp_path / "root"
    assert run(["dpkg-deb", "-x", deb, root]).returncode == 0
    for binary in ("cmkcert", "cmkcertfs"):
        dyn = run(["readelf", "-d", root / "usr/bin" / binary]).stdout
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        assert needed, dyn
        # Where the loader finds each (ldd also lists what those need in turn: only NEEDED counts here).
        libs = dict(re.findall(r"^\s*(\S+) => (/\S+)", run(["ldd", root / "usr/bin" / binary]).stdout, re.M))
        for soname in needed:
            assert soname in libs, "%s needs %s, which this machine does not have" % (binary, soname)
            pkg = owner_of(libs[soname])
            assert pkg in depends, "%s needs %s from %s, not in Depends: %s" % (binary, soname, pkg, depends)
    # The programs the unit runs: its own binary, and fusermount3 for ExecStopPost.
    for key, value in unit_settings(root / "lib/systemd/system/cmkcertfs.service"):
        if key.startswith("Exec"):
            prog = value.lstrip("-@:+!").split()[0]
            if (root / prog.lstrip("/")).exists():
                continue
            assert owner_of(prog) in depends, (key, prog, depends)


def test_dependencies_resolve_on_a_machine_with_nothing_installed(tmp_path):
    """apt, told that nothing is installed, plans the install of the package from the
    archive: every dependency is satisfiable from Debian (needs the package lists)."""
    if not any(pathlib.Path("/var/lib/apt/lists").glob("*_Packages*")):
        pytest.skip("no apt package lists on this machine (apt-get update)")
    deb = debs()["cmkcert"]
    status = tmp_path / "status"
    status.write_text("")
    r = run(["apt-get", "-s", "-o", "Dir::State::status=%s" % status, "-o", "Debug::NoLocking=1",
             "install", "--no-install-recommends", deb], env=APT_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    planned = set(re.findall(r"^Inst (\S+) ", r.stdout, re.M))
    for pkg in depends_of(deb):
        assert pkg in planned, (pkg, sorted(planned))
    assert "cmkcert" in planned


def exposure(path):
    r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", path])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    return m.group(1), r.stdout


def test_unit_keeps_the_host_mount_namespace_and_its_score_is_documented():
    settings = dict(unit_settings(UNIT))
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert " -f " in settings["ExecStart"] and settings["ExecStart"].endswith(" /run/cmkcert/files")
    assert "WatchdogSec" in settings
    assert "cmkcert/files" in settings["RuntimeDirectory"].split()
    present = [k for k in NAMESPACE_SETTINGS if k in settings]
    assert present == [], "these give the service its own mount namespace: %s" % present
    caps = settings["CapabilityBoundingSet"].split()
    assert sorted(caps) == ["CAP_DAC_OVERRIDE", "CAP_IPC_LOCK", "CAP_SYS_ADMIN"]
    score, table = exposure(UNIT)
    readme = (ROOT / "packaging" / "README.md").read_text().replace("\\|", "|")
    assert "exposure level %s" % score in readme, "packaging/README.md does not give the score %s" % score
    # Every item the analysis marks unmitigated has its row (and reason) in the README.
    for line in table.splitlines():
        m = re.match(r"✗ (\S+)", line)
        if m:
            assert "`%s`" % m.group(1) in readme, "packaging/README.md has no row for %s" % m.group(1)


# ---- installing on this machine ---------------------------------------------------------------

def dpkg_status(pkg):
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg])
    return r.stdout.strip() if r.returncode == 0 else ""


@pytest.fixture
def machine():
    """This machine, if the test may install packages on it and leave it as it was."""
    if os.geteuid() != 0:
        pytest.skip("installing packages needs root")
    if shutil.which("apt-get") is None:
        pytest.skip("no apt-get")
    if dpkg_status("cmkcert") or dpkg_status("libcmkcert-dev"):
        pytest.skip("cmkcert is installed on this machine already (%s); not touching it"
                    % dpkg_status("cmkcert"))
    for path in ("/etc/cmkcert", "/var/lib/cmkcert", "/var/log/cmkcert", "/run/cmkcert"):
        if os.path.lexists(path):
            pytest.skip("%s exists; not touching it" % path)
    yield
    if mounted("/run/cmkcert/files"):
        run(["fusermount3", "-u", "-z", "/run/cmkcert/files"])
    if dpkg_status("cmkcert") or dpkg_status("libcmkcert-dev"):
        run(APT + ["purge", "cmkcert", "libcmkcert-dev"], env=APT_ENV)
    for path in ("/etc/cmkcert", "/var/lib/cmkcert", "/var/log/cmkcert", "/run/cmkcert"):
        shutil.rmtree(path, ignore_errors=True)


def mode_owner(path):
    st = os.stat(path)
    import grp
    import pwd
    return "%o %s %s" % (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
                         grp.getgrgid(st.st_gid).gr_name)


def configure_for(bao):
    """Point the packaged configuration at the test server, keeping its paths: the CA at the
    packaged ca_cert path, the store and the audit trail where the package put them."""
    from conftest import edit_conf
    conf = "/etc/cmkcert/cmkcert.conf"
    edit_conf(conf, "openbao", "address", bao.url)
    edit_conf(conf, "auth", "jwt_path", str(bao.dir / "sa.jwt"))
    shutil.copy(bao.dir / "ca.pem", "/etc/cmkcert/openbao-ca.pem")
    # The master key the administrator makes (README.Debian).
    fd = os.open("/etc/cmkcert/master.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    os.write(fd, os.urandom(32))
    os.close(fd)


def cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "CMKCERT_CONF"}
    return run(["/usr/bin/cmkcert"] + list(args), env=env)


def test_install_use_remove_purge(machine, bao, tmp_path):
    pkgs = debs()
    r = run(APT + ["install", "--no-install-recommends", pkgs["cmkcert"], pkgs["libcmkcert-dev"]], env=APT_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dpkg_status("cmkcert") == "install ok installed"

    # What the package put in place.
    v = version()
    assert run(["/usr/bin/cmkcert", "--version"]).stdout.strip() == "cmkcert %s" % v
    assert run(["/usr/bin/cmkcertfs", "-V"]).stdout.strip() == "cmkcertfs %s" % v
    assert mode_owner("/etc/cmkcert/cmkcert.conf") == "640 root root"
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "cmkcert"]).stdout
    assert "/etc/cmkcert/cmkcert.conf" in conffiles
    assert mode_owner("/var/lib/cmkcert") == "700 root root"
    assert mode_owner("/var/log/cmkcert") == "750 root adm"
    assert run(["systemctl", "is-enabled", "cmkcertfs.service"]).stdout.strip() == "disabled"
    for page in ("cmkcert", "cmkcertfs", "cmkcert.conf"):
        assert run(["man", "-w", page]).returncode == 0, page
    r = run(["systemd-analyze", "verify", "/lib/systemd/system/cmkcertfs.service"])
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr

    # The packaged configuration, pointed at the test server; its paths stay as shipped.
    configure_for(bao)
    r = cli("check")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("--json", "keystore", "add", "--tenant", "pkgtest", "--type", "aws_kms", "--verify", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(p.name.startswith("log.") for p in pathlib.Path("/var/lib/cmkcert/store").iterdir())
    assert pathlib.Path("/var/log/cmkcert/audit.log").stat().st_size > 0
    assert cli("audit", "verify").returncode == 0

    # The unit's own command line, as systemd runs it: RuntimeDirectory first, READY=1 once serving.
    settings = dict(unit_settings("/lib/systemd/system/cmkcertfs.service"))
    os.makedirs("/run/cmkcert/files", mode=0o755)
    manager = Manager(tmp_path / "notify.sock")
    err = open(tmp_path / "cmkcertfs.stderr", "w")
    env = {k: v for k, v in os.environ.items() if k != "CMKCERT_CONF"}
    env["NOTIFY_SOCKET"] = manager.path
    proc = subprocess.Popen(settings["ExecStart"].split(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err, env=env)
    try:
        ready = manager.wait_for("READY", 20)
        assert ready is not None, (tmp_path / "cmkcertfs.stderr").read_text()
        assert ready["STATUS"].startswith("serving 1 certificate at /run/cmkcert/files; next renewal ")
        cert = pathlib.Path("/run/cmkcert/files/certs/pkgtest-aws_kms.crt").read_text()
        assert cert.startswith("-----BEGIN CERTIFICATE-----")
        # The CLI knows the mount through the store's registry of mounts.
        r = cli("keystore", "add", "--tenant", "pkgtest2", "--type", "aws_kms", "--verify", "none", "--wait")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "mount: /run/cmkcert/files" in r.stdout + r.stderr
        assert pathlib.Path("/run/cmkcert/files/private/pkgtest2-aws_kms.key").read_text().startswith("-----BEGIN")
        proc.send_signal(signal.SIGTERM)
        assert manager.wait_for("STOPPING", 10) is not None
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
        manager.close()
    assert not mounted("/run/cmkcert/files")

    # The image's entry point as a pod runs it, on the packaged programs: once after a daemon was
    # killed and left a dead mount on the (node's) volume, which it clears before mounting again.
    env.update(CMKCERT_CONF="/etc/cmkcert/cmkcert.conf", CMKCERT_MOUNT="/run/cmkcert/files")
    for round in ("first", "after kill -9"):
        manager = Manager(tmp_path / ("notify-%d.sock" % len(round)))
        proc = subprocess.Popen([ROOT / "packaging/container/cmkcertfs-pod"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(env, NOTIFY_SOCKET=manager.path))
        try:
            assert manager.wait_for("READY", 20) is not None, round
            assert pathlib.Path("/run/cmkcert/files/certs/pkgtest-aws_kms.crt").read_text() == cert
            if round == "first":
                proc.kill()
                proc.wait(10)
                # The kernel keeps the mount, with nobody behind it (cached names still resolve).
                assert mounted("/run/cmkcert/files")
                with pytest.raises(OSError) as dead:
                    os.listdir("/run/cmkcert/files/certs")
                assert dead.value.errno == errno.ENOTCONN
            else:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            manager.close()
    assert not mounted("/run/cmkcert/files")
    shutil.rmtree("/run/cmkcert")

    # Building against the -dev package with pkg-config.
    src = tmp_path / "embed.c"
    src.write_text('#include <stdio.h>\n#include <stdint.h>\n#include "cmkcert/error.h"\n#include "cmkcert/util.h"\n'
                   "int main(void) { int64_t s = 0; if (cmk_parse_duration(\"30d\", &s) != 0) return 1;\n"
                   '  printf("%lld %s\\n", (long long)s, cmk_strerror(CMK_ERR_SEALED)); return 0; }\n')
    flags = run(["pkg-config", "--cflags", "--libs", "cmkcert"])
    assert flags.returncode == 0, flags.stderr
    r = run(["cc", "-o", tmp_path / "embed", src] + flags.stdout.split())
    assert r.returncode == 0, r.stderr
    out = run([tmp_path / "embed"]).stdout
    assert out.startswith("2592000 "), out

    # Remove: programs gone; configuration, store and audit trail kept.
    r = run(APT + ["remove", "cmkcert", "libcmkcert-dev"], env=APT_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists("/usr/bin/cmkcert") and not os.path.exists("/usr/bin/cmkcertfs")
    assert dpkg_status("cmkcert") == "deinstall ok config-files"
    assert os.path.exists("/etc/cmkcert/cmkcert.conf")
    assert os.path.isdir("/var/lib/cmkcert/store") and os.listdir("/var/lib/cmkcert/store")
    assert pathlib.Path("/var/log/cmkcert/audit.log").stat().st_size > 0

    # Purge: configuration, store and audit trail gone; what the administrator added stays.
    r = run(APT + ["purge", "cmkcert"], env=APT_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dpkg_status("cmkcert") in ("", "unknown ok not-installed")
    for gone in ("/etc/cmkcert/cmkcert.conf", "/var/lib/cmkcert", "/var/log/cmkcert"):
        assert not os.path.exists(gone), gone
    assert sorted(os.listdir("/etc/cmkcert")) == ["master.key", "openbao-ca.pem"]
    shutil.rmtree("/etc/cmkcert")


@pytest.mark.systemd
def test_service_under_systemd(machine, bao):
    """With systemd as the service manager (a CI machine that boots it): enable and start the
    unit, which must become active (READY=1 through systemd) with its STATUS= shown by systemctl,
    serve the files, log at the right priorities, and stop cleanly."""
    assert os.path.isdir("/run/systemd/system"), "this test needs systemd as the service manager"
    pkgs = debs()
    r = run(APT + ["install", "--no-install-recommends", pkgs["cmkcert"]], env=APT_ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    # Installed, not started: it is not configured yet.
    assert run(["systemctl", "is-active", "cmkcertfs.service"]).stdout.strip() == "inactive"
    configure_for(bao)
    assert cli("keystore", "add", "--tenant", "unit", "--type", "aws_kms", "--verify", "none").returncode == 0
    try:
        r = run(["systemctl", "start", "cmkcertfs.service"], timeout=120)
        assert r.returncode == 0, r.stderr + run(["journalctl", "-u", "cmkcertfs", "-n", "50"]).stdout
        show = run(["systemctl", "show", "-p", "ActiveState,StatusText,WatchdogUSec", "cmkcertfs.service"]).stdout
        assert "ActiveState=active" in show, show
        assert re.search(r"StatusText=serving 1 certificate at /run/cmkcert/files; next renewal ", show), show
        assert "WatchdogUSec=30s" in show, show
        assert pathlib.Path("/run/cmkcert/files/certs/unit-aws_kms.crt").read_text().startswith("-----BEGIN")
        # journald kept the levels: the start-up line is at info, not at the default of unprefixed lines.
        time.sleep(1)
        j = run(["journalctl", "-u", "cmkcertfs", "-o", "json", "--no-pager", "-n", "200"]).stdout
        lines = [json.loads(l) for l in j.splitlines() if l.strip()]
        serving = [e for e in lines if str(e.get("MESSAGE", "")).startswith("info: serving ")]
        assert serving and serving[-1]["PRIORITY"] == "6", lines[-5:]
    finally:
        r = run(["systemctl", "stop", "cmkcertfs.service"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert not mounted("/run/cmkcert/files")
