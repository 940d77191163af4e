"""deploy/kubernetes: the DaemonSet example is what a FUSE mount on every node of a fleet needs (issue 15).

The manifests are parsed (PyYAML) and the fields that matter are checked: a privileged container, the
host's /dev/fuse, the mount point with Bidirectional propagation, every secret from a Secret (none in the
ConfigMap), and a config that vidfs itself loads, whose `[cache.shared]` names the Redis Service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vidfs.config.loader import config_from_dict

yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_the_daemonset_mounts_fuse_privileged_with_bidirectional_propagation() -> None:
    daemonset = manifests()["DaemonSet/vidfs"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    fuse = volumes[mounts["/dev/fuse"]["name"]]
    assert fuse["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    mountpoint = container["command"][-1]
    assert mounts[mountpoint]["mountPropagation"] == "Bidirectional"
    assert "hostPath" in volumes[mounts[mountpoint]["name"]]
    assert container["command"][:2] == ["vidfs", "mount"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["fusermount3", "-u", mountpoint]


def test_secrets_come_from_a_secret_and_redis_from_a_service() -> None:
    found = manifests()
    pod = found["DaemonSet/vidfs"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert all("value" not in item for item in env.values())  # every variable comes from somewhere
    secret_names = {item["valueFrom"]["secretKeyRef"]["name"] for item in env.values()}
    secret_volumes = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secret_names | secret_volumes == {"vidfs-secrets"}
    assert "Secret/vidfs-secrets" in found  # its shape, with placeholders only
    assert all("CHANGE-ME" in value for value in found["Secret/vidfs-secrets"]["stringData"].values())

    text = found["ConfigMap/vidfs-config"]["data"]["vidfs.toml"]
    secrets_dir = Path("/etc/vidfs/secrets")
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert Path(config_mount["mountPath"]) == secrets_dir
    environ = {name: "value-from-the-secret" for name in env}
    import tomllib

    data = tomllib.loads(text.replace(str(secrets_dir), str(DEPLOY)))  # the file secret: any readable file
    data["cache"]["shared"]["password"] = {"file": str(DEPLOY / "README.md")}
    config = config_from_dict(data, path=Path("/etc/vidfs/vidfs.toml"), environ=environ)
    shared = config.cache.shared
    assert shared is not None and shared.secret.source == "env:VIDFS_FLEET_KEY"
    assert "VIDFS_FLEET_KEY" in env
    service = found["Service/redis"]
    host, port = shared.nodes[0]
    namespace = service["metadata"]["namespace"]
    assert host.startswith(f"{service['metadata']['name']}.{namespace}.svc")
    assert port in {p["port"] for p in service["spec"]["ports"]}
    assert config.providers[0].api_rate is not None
