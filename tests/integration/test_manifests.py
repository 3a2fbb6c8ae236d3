"""The Kubernetes manifests (packaging/k8s/) and the image definition
(packaging/container/), checked for structure since no cluster is reachable
here: every document parses and has what its kind requires; the container
that mounts cmkcertfs is privileged and propagates its mount Bidirectionally,
every other container that sees the files gets them HostToContainer,
read-only and unprivileged; the probes ask the control socket that the
configuration names, inside the shared volume; the OpenBao token is a
projected service-account token at the configuration's jwt_path; the master
key, the store and the token reach the daemon only.  The checks follow what
the API server would refuse (Bidirectional without privileged, a mount of a
missing volume) and what the design needs."""

import configparser
import pathlib
import re

import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "packaging" / "k8s"
CONTAINER = ROOT / "packaging" / "container"
API = {"ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Pod": "v1", "Deployment": "apps/v1",
       "DaemonSet": "apps/v1"}
DAEMON_IMAGE = re.compile(r"/openkcm/cmkcert:")


def docs(name):
    with open(K8S / name) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(ds, kind):
    return [d for d in ds if d["kind"] == kind]


def pod_spec(doc):
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def all_containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def within(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def mount_for(container, path):
    """The volumeMount of `container` that `path` lies in (the deepest one)."""
    best = None
    for m in container.get("volumeMounts", []):
        if within(path, m["mountPath"]) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
            best = m
    return best


def volume(spec, name):
    vols = [v for v in spec["volumes"] if v["name"] == name]
    assert len(vols) == 1, name
    return vols[0]


def daemon_of(spec):
    ds = [c for c in all_containers(spec) if DAEMON_IMAGE.search(c["image"])]
    assert len(ds) == 1, [c["name"] for c in all_containers(spec)]
    return ds[0]


def cmkcert_conf():
    cms = [d for d in docs("cmkcertfs-sidecar.yaml") if d["kind"] == "ConfigMap" and d["metadata"]["name"]
           == "cmkcert-config"]
    assert len(cms) == 1
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.read_string(cms[0]["data"]["cmkcert.conf"])
    return cp


def probe_socket_and_path(probe):
    """(socket, URL path) of an exec probe that runs curl --unix-socket SOCKET http://localhost/PATH."""
    cmd = probe["exec"]["command"]
    assert cmd[0] == "curl" and "-f" in "".join(a for a in cmd if a.startswith("-") and not a.startswith("--")), cmd
    sock = cmd[cmd.index("--unix-socket") + 1]
    url = [a for a in cmd if a.startswith("http://")]
    assert len(url) == 1, cmd
    return sock, re.sub(r"^http://[^/]+", "", url[0])


@pytest.mark.parametrize("name", ["cmkcertfs-sidecar.yaml", "cmkcertfs-daemonset.yaml"])
def test_documents_parse_and_have_what_their_kind_requires(name):
    ds = docs(name)
    assert ds
    for d in ds:
        assert d["kind"] in API, d["kind"]
        assert d["apiVersion"] == API[d["kind"]], (d["kind"], d["apiVersion"])
        assert d["metadata"]["name"] and d["metadata"]["namespace"] == "openkcm-system"
        if d["kind"] in ("Deployment", "DaemonSet"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        if d["kind"] in ("Deployment", "DaemonSet", "Pod"):
            spec = pod_spec(d)
            names = [c["name"] for c in all_containers(spec)]
            assert len(names) == len(set(names))
            vols = {v["name"] for v in spec.get("volumes", [])}
            for c in all_containers(spec):
                assert c["image"]
                for m in c.get("volumeMounts", []):
                    assert m["name"] in vols, (c["name"], m["name"])
                    assert m.get("mountPropagation", "None") in ("None", "HostToContainer", "Bidirectional")
                    # The API server refuses Bidirectional propagation for unprivileged containers.
                    if m.get("mountPropagation") == "Bidirectional":
                        assert c.get("securityContext", {}).get("privileged") is True, c["name"]


def check_pod(spec, conf, shared_volume_kind):
    """What every pod with cmkcertfs needs; returns the daemon container."""
    d = daemon_of(spec)
    e = env(d)
    mnt = e["CMKCERT_MOUNT"]
    # The daemon: privileged, its mount point in the shared volume, propagated Bidirectionally.
    assert d["securityContext"]["privileged"] is True
    shared = mount_for(d, mnt)
    assert shared is not None and shared.get("mountPropagation") == "Bidirectional", shared
    assert not shared.get("readOnly", False)
    assert shared_volume_kind in volume(spec, shared["name"]), volume(spec, shared["name"])
    # Its configuration is the ConfigMap's, where the image looks for it.
    assert e["CMKCERT_CONF"] == mount_for(d, e["CMKCERT_CONF"])["mountPath"] + "/cmkcert.conf"
    # The control socket: in the shared volume, beside (not inside) the FUSE mount.
    sock = conf.get("control", "socket")
    assert mount_for(d, sock) is shared and not within(sock, mnt)
    # Probes: ready once /readyz answers, alive while /healthz does, both over that socket.
    assert probe_socket_and_path(d["readinessProbe"]) == (sock, "/readyz")
    assert probe_socket_and_path(d["startupProbe"]) == (sock, "/readyz")
    assert probe_socket_and_path(d["livenessProbe"]) == (sock, "/healthz")
    # Never leave a dead mount on the node.
    assert d["lifecycle"]["preStop"]["exec"]["command"][:2] == ["fusermount3", "-u"]
    assert d["lifecycle"]["preStop"]["exec"]["command"][-1] == mnt
    # OpenBao login: a projected service-account token at jwt_path; no automounted API token.
    assert conf.get("auth", "method") == "kubernetes"
    jwt = conf.get("auth", "jwt_path")
    tm = mount_for(d, jwt)
    tv = volume(spec, tm["name"])
    sources = [s["serviceAccountToken"] for s in tv["projected"]["sources"] if "serviceAccountToken" in s]
    assert len(sources) == 1 and tm["mountPath"] + "/" + sources[0]["path"] == jwt, (tm, sources)
    assert sources[0].get("audience") and sources[0].get("expirationSeconds", 3600) <= 3600 * 24
    assert spec["automountServiceAccountToken"] is False
    # The master key: a Secret, 0400, read-only (cmkcert refuses a key others may read).
    km = mount_for(d, conf.get("keys", "master_key"))
    kv = volume(spec, km["name"])
    assert "secret" in kv and kv["secret"]["defaultMode"] == 0o400 and km.get("readOnly") is True
    # The OpenBao CA, the store and the audit trail.
    assert mount_for(d, conf.get("openbao", "ca_cert")).get("readOnly") is True
    state = mount_for(d, conf.get("store", "path"))
    assert state is mount_for(d, conf.get("audit", "path")) and not state.get("readOnly", False)
    # Everyone else who sees the files: HostToContainer (to see a mount made after they
    # started), read-only, unprivileged, and without the daemon's secrets.
    secret_volumes = {tm["name"], km["name"], state["name"]}
    for c in all_containers(spec):
        if c is d:
            continue
        sc = c.get("securityContext", {})
        assert not sc.get("privileged", False) and sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add")
        for m in c.get("volumeMounts", []):
            assert m["name"] not in secret_volumes, (c["name"], m["name"])
    return d


def consumers_of(spec, daemon, volume_name):
    return [(c, m) for c in all_containers(spec) if c is not daemon
            for m in c.get("volumeMounts", []) if m["name"] == volume_name]


def test_sidecar_pod():
    ds = docs("cmkcertfs-sidecar.yaml")
    conf = cmkcert_conf()
    (dep,) = by_kind(ds, "Deployment")
    spec = pod_spec(dep)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    d = check_pod(spec, conf, "emptyDir")
    # A native sidecar: an init container that keeps running, so the server starts after it is ready.
    assert d in spec["initContainers"] and d["restartPolicy"] == "Always"
    shared = mount_for(d, env(d)["CMKCERT_MOUNT"])
    users = consumers_of(spec, d, shared["name"])
    assert users, "nobody reads the files"
    for c, m in users:
        assert m.get("mountPropagation") == "HostToContainer" and m.get("readOnly") is True, m
        # The server finds the files and the socket where the daemon put them (same place in the volume).
        e = env(c)
        for key, daemon_path in (("CMK_CERT_DIR", env(d)["CMKCERT_MOUNT"]),
                                 ("CMKCERT_CONTROL_SOCKET", conf.get("control", "socket"))):
            assert within(e[key], m["mountPath"])
            assert e[key][len(m["mountPath"]):] == daemon_path[len(shared["mountPath"]):], key
    # The store outlives the pod.
    state = mount_for(d, conf.get("store", "path"))
    claim = volume(spec, state["name"])["persistentVolumeClaim"]["claimName"]
    assert [p for p in by_kind(ds, "PersistentVolumeClaim") if p["metadata"]["name"] == claim]
    # The server may call the socket: its uid is allowed and can connect (socket group and mode).
    server_uid = str(users[0][0]["securityContext"]["runAsUser"])
    assert server_uid in conf.get("control", "allow").split()
    assert conf.get("control", "group") == str(users[0][0]["securityContext"]["runAsGroup"])
    assert int(conf.get("control", "mode"), 8) & 0o060 == 0o060
    # ... and read the keys the mount serves.
    assert conf.get("fuse", "owner") == server_uid


def test_daemonset_and_its_consumer():
    ds = docs("cmkcertfs-daemonset.yaml")
    conf = cmkcert_conf()
    (dset,) = by_kind(ds, "DaemonSet")
    spec = pod_spec(dset)
    d = check_pod(spec, conf, "hostPath")
    shared = mount_for(d, env(d)["CMKCERT_MOUNT"])
    host_path = volume(spec, shared["name"])["hostPath"]["path"]
    # A consumer pod on the node sees the same host path, HostToContainer, read-only.
    (pod,) = by_kind(ds, "Pod")
    pspec = pod_spec(pod)
    for c in pspec["containers"]:
        for m in c["volumeMounts"]:
            v = volume(pspec, m["name"])
            assert v["hostPath"]["path"] == host_path and v["hostPath"]["type"] == "Directory"
            assert m["mountPropagation"] == "HostToContainer" and m["readOnly"] is True
        assert not c.get("securityContext", {}).get("privileged", False)
    assert pspec["securityContext"]["runAsNonRoot"] is True
    # The store stays on the node across daemon restarts.
    state = mount_for(d, conf.get("store", "path"))
    assert volume(spec, state["name"])["hostPath"]["path"] == "/var/lib/cmkcert"


def test_image_definition():
    text = (CONTAINER / "Containerfile").read_text()
    lines = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert lines[0] == "FROM debian:bookworm-slim"
    # The package from `make deb`, installed with apt (which brings its dependencies), and curl for the probes.
    assert re.search(r"^COPY build/deb/cmkcert_\$\{VERSION\}_\*\.deb ", text, re.M)
    run = text[text.index("RUN "):]
    assert "apt-get install" in run and "/tmp/cmkcert_${VERSION}_*.deb" in run and " curl" in run
    version = re.search(r"^ARG VERSION=(\S+)", text, re.M).group(1)
    changelog = (ROOT / "packaging" / "debian" / "changelog").read_text()
    assert changelog.startswith("cmkcert (%s)" % version)
    # The entry point: the script the manifests' environment speaks to, with their defaults.
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M).group(1)
    script = CONTAINER / pathlib.Path(entry).name
    assert script.exists() and script.stat().st_mode & 0o111
    body = script.read_text()
    assert "${CMKCERT_MOUNT:-/run/cmkcert/files}" in body
    assert re.search(r'^exec cmkcertfs -f -c "\$conf" "\$@" "\$mnt"$', body, re.M)
    assert re.search(r"^ENV CMKCERT_CONF=/etc/cmkcert/config/cmkcert.conf$", text, re.M)
    for name in ("cmkcertfs-sidecar.yaml", "cmkcertfs-daemonset.yaml"):
        for doc in docs(name):
            if doc["kind"] in ("Deployment", "DaemonSet"):
                d = daemon_of(pod_spec(doc))
                assert env(d)["CMKCERT_CONF"] == "/etc/cmkcert/config/cmkcert.conf"
                assert "command" not in d and "args" not in d, "the image's entry point is what runs"
                # Every program the probes and hooks run is in the image: curl (installed) and fusermount3 (fuse3).
                for key in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert d[key]["exec"]["command"][0] == "curl"
