"""The sandbox of packaging/cmkcertfs.service, applied without a service
manager, so that tests can run the daemon under it where systemd is not
PID 1.  What systemd does in the service's process just before exec is done
here in the child of subprocess.Popen (preexec_fn), from the unit's own
settings:

  CapabilityBoundingSet=  prctl(PR_CAPBSET_DROP) for every other capability
  NoNewPrivileges=yes     prctl(PR_SET_NO_NEW_PRIVS)
  SystemCallFilter=       a seccomp allow list: the groups expanded with
  SystemCallErrorNumber=    `systemd-analyze syscall-filter`, `~` lists taken
                            out, anything else failing with that errno
  RestrictAddressFamilies= socket(2) allowed for those families only
  MemoryDenyWriteExecute= no mapping that is both writable and executable,
                            no mprotect(2) to executable
  ProtectHostname=yes     a UTS namespace of its own
  UMask=, LimitMEMLOCK=, LimitCORE=

Not reproduced: DevicePolicy=/DeviceAllow= (a cgroup device filter),
ProtectClock='s device rule, RestrictNamespaces=, RestrictRealtime=,
RestrictSUIDSGID=, LockPersonality= (seccomp argument filters on calls the
daemon does not make).
"""

import ctypes
import errno
import os
import re
import resource
import socket
import subprocess

import seccomp

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUTS = 0x04000000
CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
        "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
        "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
        "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17,
        "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21,
        "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23, "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25}
PROT_WRITE, PROT_EXEC = 0x2, 0x4


def service_settings(unit):
    """[(key, value)] of the unit's [Service] section, in order."""
    out, section = [], None
    with open(unit) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Service]":
                key, _, value = line.partition("=")
                out.append((key, value))
    return out


def syscall_groups():
    """{"@group": [entries]} as this machine's systemd defines them."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                         check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        s = line.split("#")[0].strip()
        if not s:
            continue
        if re.match(r"^@\S+$", s) and not line.startswith(" "):
            cur = groups.setdefault(s, [])
        elif cur is not None:
            cur.append(s)
    return groups


def expand(names, groups, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for n in names:
        if n.startswith("@"):
            if n in seen:
                continue
            seen.add(n)
            out |= expand(groups[n], groups, seen)
        else:
            out.add(n)
    return out


def plan(unit):
    """What to apply, from the unit: a dict read by apply()."""
    settings = service_settings(unit)
    groups = syscall_groups()
    allowed = None
    for key, value in settings:
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if allowed is None:
            assert not deny, "the unit's first SystemCallFilter= is an allow list"
            allowed = set(names)
        elif deny:
            allowed -= names
        else:
            allowed |= names
    s = dict(settings)
    families = [getattr(socket, f) for f in s.get("RestrictAddressFamilies", "").split()]
    return {
        "keep_caps": [CAPS[c] for c in s["CapabilityBoundingSet"].split()],
        "nnp": s.get("NoNewPrivileges") == "yes",
        "syscalls": allowed,
        "errno": getattr(errno, s.get("SystemCallErrorNumber", "EPERM")),
        "families": families,
        "mdwe": s.get("MemoryDenyWriteExecute") == "yes",
        "uts": s.get("ProtectHostname") == "yes",
        "umask": int(s.get("UMask", "0022"), 8),
        "memlock": s.get("LimitMEMLOCK"),
        "core": s.get("LimitCORE"),
    }


def _size(v):
    m = re.match(r"^(\d+)([KMG]?)$", v)
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def apply(p):
    """In the child, just before exec (what systemd does last)."""
    libc = ctypes.CDLL(None, use_errno=True)
    os.umask(p["umask"])
    if p["memlock"]:
        n = _size(p["memlock"])
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (n, n))
        except ValueError:     # raising the hard limit needs CAP_SYS_RESOURCE, which systemd has
            hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (min(n, hard), hard))
    if p["core"]:
        n = _size(p["core"])
        resource.setrlimit(resource.RLIMIT_CORE, (n, n))
    if p["uts"] and libc.unshare(CLONE_NEWUTS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUTS)")
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        if cap not in p["keep_caps"] and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP %d" % cap)
    if p["nnp"] and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(p["errno"]))
    special = {"socket"} if p["families"] else set()
    if p["mdwe"]:
        special |= {"mmap", "mprotect", "pkey_mprotect"}
    for name in sorted(p["syscalls"] | {"execve"}):
        if name in special:
            continue
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass                       # not a system call of this architecture
    if "socket" in special and "socket" in p["syscalls"]:
        for fam in p["families"]:
            f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, fam))
    if p["mdwe"]:
        both = PROT_WRITE | PROT_EXEC
        if "mmap" in p["syscalls"]:
            for ok in (0, PROT_WRITE, PROT_EXEC):
                f.add_rule(seccomp.ALLOW, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, both, ok))
        for name in ("mprotect", "pkey_mprotect"):
            if name in p["syscalls"]:
                f.add_rule(seccomp.ALLOW, name, seccomp.Arg(2, seccomp.MASKED_EQ, PROT_EXEC, 0))
    f.load()


def preexec(unit):
    """A preexec_fn for subprocess.Popen running the command inside the unit's sandbox."""
    p = plan(unit)
    return lambda: apply(p)
