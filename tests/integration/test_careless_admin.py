"""A careless admin on a cluster of its own: the release upgraded with other values and
uninstalled, the CRDs deleted and applied again, and a CRD whose schema is looser than the
operator's model (an older or hand-edited one).

- `helm upgrade` with changed values leaves running servers alone (same pods, same homes);
  `helm uninstall` leaves the CRDs, every DevServer and DevUser and every home, and installing
  again adopts them.

- Deleting the CRDs deletes every DevServer and DevUser with them. The homes that were kept
  stay (nothing owns them), the namespaces stay (no DevUser owns them); applying the CRDs again
  and re-creating a server by name gives it the same home, by UID.
- An object the API server stored that the operator's model refuses does not freeze the cache:
  the others are still served, and it gets a status saying what is wrong.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devserver_harness.controlplane import LocalControlPlane, repo_root
from devserver_harness.operator import OperatorProcess
from devserver_harness.process import poll
from devserver_harness.pytest_plugin import fresh_control_plane

pytestmark = pytest.mark.integration

NS = "dev-ivo"


@pytest.fixture(scope="module")
def control_plane() -> Iterator[LocalControlPlane]:
    """Deletes the CRDs and loosens one: a cluster of its own."""
    for cluster in fresh_control_plane():
        cluster.wait_quota_counts_devservers()
        yield cluster


@pytest.fixture
def operator(control_plane: LocalControlPlane) -> Iterator[OperatorProcess]:
    process = OperatorProcess(control_plane.operator_kubeconfig, ("--max-lifetime", "1d"))
    process.start()
    process.wait_leading()
    yield process
    assert process.alive(), process.output()[-3000:]
    assert process.stop() == 0


def _get(cp: LocalControlPlane, kind: str, name: str, ns: str = "") -> dict[str, Any]:
    out = cp.kubectl("get", kind, name, "-o", "json", *(["-n", ns] if ns else []), check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def _server(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devservers.io/v1",
        "kind": "DevServer",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"owner": "ivo", "flavor": "cpu-small", "image": "busybox", **spec},
    }


def _uid(cp: LocalControlPlane, kind: str, name: str, ns: str = NS) -> str:
    return str(_get(cp, kind, name, ns).get("metadata", {}).get("uid", ""))


def _pod_uids(cp: LocalControlPlane) -> set[str]:
    out = cp.kubectl("get", "pods", "-n", NS, "-o", "json").stdout
    return {p["metadata"]["uid"] for p in json.loads(out)["items"]}


def _ready(cp: LocalControlPlane, name: str) -> bool:
    conditions = _get(cp, "devserver.devservers.io", name, NS).get("status", {}).get("conditions")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions or [])


def test_helm_upgrade_and_uninstall_leave_servers_and_homes_alone(
    control_plane: LocalControlPlane, tmp_path: Any
) -> None:
    cp = control_plane
    operator = OperatorProcess(cp.operator_kubeconfig, ("--max-lifetime", "1d"))
    operator.start()
    operator.wait_leading()
    try:
        cp.add_user("ivo", tmp_path / "config")
        cp.apply(_server("run"))
        poll(lambda: _ready(cp, "run"), 90, "the server running")
        pods, home = _pod_uids(cp), _uid(cp, "pvc", "run-home")
        assert pods and home

        cp.install_devserver(  # helm upgrade: other settings, fewer flavors, one replica
            "operator.settings.maxLifetime=2d",
            "operator.replicas=1",
            "operator.settings.userQuota.gpus=4",
            "flavors.exclude={gpu-large}",
        )
        assert _get(cp, "devserverflavor", "gpu-large") == {}  # the chart's change happened
        args = _get(cp, "deployment", "devserver-operator", "devserver-system")["spec"]["template"][
            "spec"
        ]["containers"][0]["args"]
        assert "--max-lifetime=2d" in args and any("gpus=4" in a for a in args)
        time.sleep(5)  # whatever the upgrade would set off
        assert _pod_uids(cp) == pods and _uid(cp, "pvc", "run-home") == home
        assert _ready(cp, "run") and operator.alive()
    finally:
        assert operator.stop() == 0, operator.output()[-3000:]

    cp.helm("uninstall", "devserver", "--namespace", "devserver-system", "--wait")
    for plural in ("devservers", "devserverflavors", "devusers"):
        assert _get(cp, "crd", f"{plural}.devservers.io"), f"the {plural} CRD was deleted"
    assert _uid(cp, "devserver.devservers.io", "run")
    assert _get(cp, "devuser", "ivo", "")
    assert _uid(cp, "pvc", "run-home") == home and _pod_uids(cp) == pods
    assert _get(cp, "clusterrole", "devserver-operator", "") == {}  # the rest is gone

    cp.install_devserver()  # again: the kept CRDs are adopted, the rights come back
    cp.forget_operator_token()  # a new ServiceAccount: a token of the old one is invalid
    operator = OperatorProcess(cp.operator_kubeconfig, ("--max-lifetime", "1d"))
    operator.start()
    operator.wait_leading()
    try:
        time.sleep(5)
        assert _ready(cp, "run") and _pod_uids(cp) == pods
        assert _uid(cp, "pvc", "run-home") == home
    finally:
        assert operator.stop() == 0, operator.output()[-3000:]
    cp.kubectl("delete", "devserver.devservers.io", "run", "-n", NS)


def test_crds_deleted_and_applied_again_lose_no_home(
    control_plane: LocalControlPlane, operator: OperatorProcess, tmp_path: Any
) -> None:
    cp = control_plane
    cp.add_user("ivo", tmp_path / "config")
    cp.apply(_server("keep"), _server("drop", retainHomeOnDelete=False))
    for name in ("keep", "drop"):
        poll(lambda n=name: _get(cp, "pvc", f"{n}-home", NS), 30, f"{name}'s home")
    kept = _get(cp, "pvc", "keep-home", NS)["metadata"]["uid"]

    cp.kubectl("delete", "-f", str(repo_root() / "manifests" / "crd"), "--wait=true")
    # the garbage collector follows the owner references of the servers that are gone
    poll(lambda: not _get(cp, "deployment", "keep", NS), 90, "the workloads collected")
    poll(lambda: not _get(cp, "pvc", "drop-home", NS), 90, "the home it was told to drop")
    assert _get(cp, "pvc", "keep-home", NS)["metadata"]["uid"] == kept
    assert _get(cp, "namespace", NS)["metadata"].get("deletionTimestamp") is None

    # Helm cannot upgrade a release whose kinds are gone (it reads the last release's flavors
    # first): the CRDs go back with kubectl, as the chart's README says, then the release
    manifests = repo_root() / "manifests" / "crd"
    cp.kubectl("apply", "--server-side", "--field-manager=admin", "-f", str(manifests))
    cp.install_devserver()
    cp.add_user("ivo", tmp_path / "config")  # the user again: the namespace is adopted
    cp.apply(_server("keep", persistentHomeSize="1Gi"))  # smaller: the home is taken as it is
    poll(lambda: _get(cp, "deployment", "keep", NS), 30, "the server back")
    home = _get(cp, "pvc", "keep-home", NS)
    assert home["metadata"]["uid"] == kept
    assert home["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert operator.alive()


def test_an_object_the_model_cannot_read_gets_a_status_and_freezes_nothing(
    control_plane: LocalControlPlane, operator: OperatorProcess, tmp_path: Any
) -> None:
    cp = control_plane
    cp.add_user("ivo", tmp_path / "config")
    crd = _get(cp, "crd", "devservers.devservers.io")
    image = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/image/pattern"
    loosen = [{"op": "remove", "path": image}]
    cp.kubectl("patch", "crd", "devservers.devservers.io", "--type=json", "-p", json.dumps(loosen))
    try:
        time.sleep(2)  # the API server picks up the schema
        cp.apply(_server("odd", image="büsybox latest"))
        cp.apply(_server("fine"))

        def reported() -> str:
            status = _get(cp, "devserver.devservers.io", "odd", NS).get("status", {})
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            return str(ready[0]["message"]) if ready and ready[0]["reason"] == "Unreadable" else ""

        message = poll(reported, 30, "the unreadable server's status")
        assert "spec.image" in message and "fix that field" in message
        poll(
            lambda: _get(cp, "devserver.devservers.io", "fine", NS).get("status", {}).get("phase"),
            30,
            "the other server served",
        )
    finally:
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        restore = [{"op": "add", "path": image, "value": spec["properties"]["image"]["pattern"]}]
        cp.kubectl("delete", "devserver.devservers.io", "odd", "-n", NS, check=False)
        cp.kubectl(
            "patch", "crd", "devservers.devservers.io", "--type=json", "-p", json.dumps(restore)
        )


def test_a_deleted_namespace_leaves_the_kept_homes_data_on_its_volume(
    control_plane: LocalControlPlane, operator: OperatorProcess, tmp_path: Any
) -> None:
    """`kubectl delete namespace dev-jo` by mistake: the claims go with it, the volumes of kept
    homes stay (Released, reclaim policy Retain) — the data is there for an admin to bind."""
    cp = control_plane
    cp.add_user("jo", tmp_path / "config")
    home = {**_server("work"), "metadata": {"name": "work", "namespace": "dev-jo"}}
    cp.apply(home)
    volume = poll(
        lambda: _get(cp, "pvc", "work-home", "dev-jo").get("spec", {}).get("volumeName"),
        30,
        "the home bound",
    )
    poll(
        lambda: _get(cp, "pv", volume)["spec"]["persistentVolumeReclaimPolicy"] == "Retain",
        30,
        "the volume set to Retain",
    )
    cp.kubectl("delete", "namespace", "dev-jo", "--wait=true", "--timeout=90s")
    kept = poll(
        lambda: (pv := _get(cp, "pv", volume)).get("status", {}).get("phase") == "Released" and pv,
        30,
        "the volume released, not deleted",
    )
    assert kept["spec"]["claimRef"]["name"] == "work-home"
    time.sleep(5)  # the provisioner reclaims Delete volumes at once; this one stays
    assert _get(cp, "pv", volume)
