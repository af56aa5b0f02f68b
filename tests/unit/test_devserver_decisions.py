"""What the DevServer, distributed and expiry reconcilers decide, without a cluster.

The real controllers run on real caches (`Store`s filled by hand) and an in-memory client that
records every write (`reconcile_world`). Each test asserts what a user would notice: what is
written, in which order, what the status says, and whether the reconcile fails.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.api.meta import KubeObject, ObjectKey
from devserver.api.resources import DEPLOYMENTS, LEASES, PODS, STATEFULSETS
from devserver.client import ApiError
from devserver.reconcilers.children import Attempts, ChildrenRefusedError
from devserver.reconcilers.lifecycle_config import LifecycleConfig
from tests.unit.reconcile_world import NAMESPACE, Call, World

LONG_AGO = "2026-01-05T09:00:00Z"  # when `World.server`s are created
KEY = ObjectKey(NAMESPACE, "box")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def running_deployment(world: World, flavor: str = "gpu-small") -> None:
    """Server `box`'s Deployment and its pod, up and on a node."""
    template = {"metadata": {"annotations": {"devserver.io/flavor": flavor}}}
    world.child(
        DEPLOYMENTS,
        "box",
        spec={"replicas": 1, "template": template},
        status={"readyReplicas": 1},
    )
    world.child(
        PODS,
        "box-7d9f",
        metadata={"annotations": {"devserver.io/flavor": flavor}},
        spec={"nodeName": "gpu-node-1"},
        status={"conditions": [{"type": "Ready", "status": "True"}]},
    )


def just_stopped() -> World:
    """Server `box` running until its user's `devctl stop`: the Deployment is still up."""
    world = World()
    world.flavor()
    world.server(stopped=True, status={"phase": "Running", "lastStart": LONG_AGO})
    running_deployment(world)
    return world


async def test_a_stopped_server_is_scaled_to_zero_before_anything_else() -> None:
    world = just_stopped()
    world.kube.refuse("apply", "PersistentVolumeClaim", 422, "storage class is gone")

    with pytest.raises(ChildrenRefusedError):
        await world.reconcile("devserver", "box")

    first = world.kube.writes()[0]
    assert first == Call(
        "patch", "Deployment", "box", NAMESPACE, {"spec": {"replicas": 0}}, "scale"
    )
    status = world.kube.status_patches()[-1]
    assert status["phase"] == "Stopped"
    assert ("Normal", "Stopped", "stopped; home volume kept") in world.kube.events()


async def test_a_stop_needs_no_flavor() -> None:
    world = World()  # no flavor at all
    world.server(stopped=True)
    running_deployment(world)

    await world.reconcile("devserver", "box")

    deployment_writes = world.kube.writes("Deployment")
    assert deployment_writes == [
        Call("patch", "Deployment", "box", NAMESPACE, {"spec": {"replicas": 0}}, "scale")
    ]
    assert world.kube.writes()[0] == deployment_writes[0]


async def test_a_missing_flavor_leaves_the_running_workload_alone() -> None:
    world = World()  # the server's flavor `gpu-small` does not exist (any more)
    world.server(status={"phase": "Running", "appliedFlavor": "gpu-small", "lastStart": LONG_AGO})
    running_deployment(world)

    await world.reconcile("devserver", "box")

    assert world.kube.writes("Deployment") == []  # neither re-rendered nor scaled
    status = world.kube.status_patches()[-1]
    flavor_valid = condition(status, "FlavorValid")
    assert flavor_valid["status"] == "False"
    assert flavor_valid["reason"] == "FlavorUnavailable"
    assert "'gpu-small' does not exist" in flavor_valid["message"]
    assert "phase" not in status  # still Running: the pod is up with its last good flavor
    assert ("Warning", "FlavorUnavailable", flavor_valid["message"]) in world.kube.events()


async def test_a_refused_child_is_told_in_the_status_then_the_reconcile_fails() -> None:
    world = World()
    world.flavor()
    world.server()
    world.kube.refuse("apply", "PersistentVolumeClaim", 422, "spec.resources: 0 is too small")

    with pytest.raises(ChildrenRefusedError, match="0 is too small"):
        await world.reconcile("devserver", "box")

    # the refusal hid nothing: the children after it were applied, the status was written
    assert [c.kind for c in world.kube.writes("Deployment")] == ["Deployment"]
    assert [c.kind for c in world.kube.writes("Service")] == ["Service"]
    assert world.kube.calls[-1].subresource == "status"  # the last thing done before raising
    applied = condition(world.kube.status_patches()[-1], "Applied")
    assert applied["status"] == "False"
    assert applied["reason"] == "Refused"
    assert "PersistentVolumeClaim box-home: spec.resources: 0 is too small" in applied["message"]


def _rbac_denial(verb: str, plural: str, name: str) -> str:
    """The API server's words when RBAC denies the operator (its format since Kubernetes 1.x)."""
    return (
        f'{plural} "{name}" is forbidden: User "system:serviceaccount:devserver-system:'
        f'devserver-operator" cannot {verb} resource "{plural}" in API group "" in the '
        f'namespace "{NAMESPACE}"'
    )


async def test_a_permission_the_operator_lacks_is_told_as_the_admins_to_fix_not_the_users() -> None:
    world = World()
    world.flavor()
    world.server()
    world.kube.refuse("apply", "Service", 403, _rbac_denial("patch", "services", "box"))

    with pytest.raises(ChildrenRefusedError, match="cannot patch"):
        await world.reconcile("devserver", "box")

    applied = condition(world.kube.status_patches()[-1], "Applied")
    assert (applied["status"], applied["reason"]) == ("False", "NotPermitted")
    assert "upgrade the devserver chart" in applied["message"]
    assert "change the DevServer's spec" not in applied["message"]  # nothing the user can do
    assert [c.kind for c in world.kube.writes("Deployment")] == ["Deployment"]  # hid nothing


@given(
    st.lists(st.sampled_from(["rbac", "quota", "policy", "invalid"]), min_size=1, max_size=4),
    st.sampled_from(["get", "patch", "delete", "create", "update"]),
)
def test_only_rbac_denials_of_the_operator_are_the_admins_and_the_rest_stay_the_users(
    refusals: list[str], verb: str
) -> None:
    said = {
        "rbac": (403, _rbac_denial(verb, "workloads", "box-0")),
        "quota": (403, 'pods "box-0" is forbidden: exceeded quota: user, requested: cpu=8'),
        "policy": (
            403,
            "services \"box\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' "
            'denied request: User "x" cannot use a NodePort',
        ),
        "invalid": (422, "spec.resources: 0 is too small"),
    }

    async def refused(status: int, message: str) -> None:
        raise ApiError(status, "Forbidden", message)

    async def attempts() -> Attempts:
        tried = Attempts()
        for i, kind in enumerate(refusals):
            await tried.attempt(f"child{i}", refused(*said[kind]))
        return tried

    tried = asyncio.run(attempts())
    applied = tried.condition(1)
    users = [kind for kind in refusals if kind != "rbac"]
    assert applied.reason == ("Refused" if users else "NotPermitted")
    assert ("change the DevServer's spec" in applied.message) == bool(users)
    assert ("upgrade the devserver chart" in applied.message) == ("rbac" in refusals)
    with pytest.raises(ChildrenRefusedError):
        tried.raise_if_any()


async def test_a_refused_stop_hides_nothing_after_it() -> None:
    world = just_stopped()
    world.kube.refuse("patch", "Deployment", 403, "denied by the admission webhook")

    with pytest.raises(ChildrenRefusedError, match="denied by the admission webhook"):
        await world.reconcile("devserver", "box")

    assert world.kube.writes()[0].kind == "Deployment"  # the stop was tried first
    assert [c.kind for c in world.kube.writes("PersistentVolumeClaim")] == ["PersistentVolumeClaim"]
    applied = condition(world.kube.status_patches()[-1], "Applied")
    assert applied["status"] == "False"
    assert "Deployment: denied by the admission webhook" in applied["message"]


async def test_a_failing_api_server_still_gets_the_status_written_first() -> None:
    world = World()
    world.flavor()
    world.server()
    world.kube.refuse("apply", "Service", 503, "etcd is slow")

    with pytest.raises(ApiError) as raised:
        await world.reconcile("devserver", "box")

    assert raised.value.status == 503
    assert world.kube.calls[-1].subresource == "status"
    assert (
        condition(world.kube.status_patches()[-1], "Applied")["status"] == "True"
    )  # not a refusal


async def test_a_deleted_server_holds_no_gpu() -> None:
    world = World()
    running_deployment(world)  # its Deployment, orphaned (`--cascade=orphan`) or not yet gone
    world.child(STATEFULSETS, "box", spec={"replicas": 3})

    assert await world.reconcile("devserver", "box") is None
    assert await world.reconcile("distributed", "box") is None

    assert world.kube.writes() == [
        Call("patch", "Deployment", "box", NAMESPACE, {"spec": {"replicas": 0}}, "scale"),
        Call("patch", "StatefulSet", "box", NAMESPACE, {"spec": {"replicas": 0}}, "scale"),
    ]


async def test_an_agents_role_exists_before_its_binding_is_sent() -> None:
    """Under least-privilege RBAC the API server checks a new binding's Role against the
    operator's own rights: a Role still in flight is "not found" and the reconcile fails."""
    world = World()
    world.flavor()
    world.server()
    moments: list[tuple[str, str]] = []
    send = world.kube.apply

    async def apply(resource: Any, body: dict[str, Any], **options: Any) -> None:
        moments.append(("sent", resource.kind))
        await asyncio.sleep(0)  # the round trip: others may be sent meanwhile
        await send(resource, body, **options)
        moments.append(("done", resource.kind))

    world.kube.apply = apply  # type: ignore[method-assign]
    await world.reconcile("devserver", "box")
    assert moments.index(("done", "Role")) < moments.index(("sent", "RoleBinding"))


async def test_a_converged_server_costs_no_request() -> None:
    world = World(echo=True)  # what is applied comes back through the caches
    world.flavor()
    world.server()
    await world.reconcile("devserver", "box")
    assert world.kube.writes("Deployment") and world.kube.status_patches()

    world.kube.calls.clear()
    await world.reconcile("devserver", "box")

    assert world.kube.calls == []


async def test_a_server_capped_by_the_maximum_lifetime_converges_too() -> None:
    """Its LifetimeCapped condition keeps its transition time: before, every reconcile wrote
    a new one, and the status write's echo woke the next reconcile (a write loop)."""
    world = World(echo=True, lifecycle=LifecycleConfig(max_lifetime=timedelta(hours=8)))
    world.flavor()
    world.server(lifecycle={"timeToLive": "24h"})
    await world.reconcile("devserver", "box")
    written = world.kube.status_patches()[-1]["conditions"]
    assert any(c["type"] == "LifetimeCapped" for c in written)

    world.kube.calls.clear()
    await asyncio.sleep(0.01)  # a later moment: a transition time stamped now would differ
    await world.reconcile("devserver", "box")

    assert world.kube.calls == []


async def test_each_mode_leaves_the_other_modes_servers_alone() -> None:
    world = World()
    world.flavor()
    world.server("solo")
    world.server("gang", mode="distributed", distributed={"worldSize": 2})

    await world.reconcile("distributed", "solo")
    await world.reconcile("devserver", "gang")

    assert world.kube.calls == []


async def test_distributed_world_of_three_renders_three_ranks() -> None:
    world = World()
    world.flavor(gpus=8)
    world.server(mode="distributed", distributed={"worldSize": 3, "nprocsPerNode": 8})

    await world.reconcile("distributed", "box")

    [statefulset] = world.kube.writes("StatefulSet")
    assert statefulset.body["spec"]["replicas"] == 3
    container = statefulset.body["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORLD_SIZE"] == "24"
    assert env["PET_NNODES"] == "3"
    leases = [c.name for c in world.kube.writes("Lease")]
    assert leases == ["box-activity-0", "box-activity-1", "box-activity-2"]
    [role] = world.kube.writes("Role")
    assert role.body["rules"][0]["resourceNames"] == leases
    assert world.kube.writes("Deployment") == []
    status = world.kube.status_patches()[-1]
    assert [(r["rank"], r["pod"], r["homeClaim"]) for r in status["ranks"]] == [
        (0, "box-0", "home-box-0"),
        (1, "box-1", "home-box-1"),
        (2, "box-2", "home-box-2"),
    ]
    assert status["readyRanks"] == 0
    assert condition(status, "Ready")["message"] == "0/3 ranks ready; rank 0: NoPod"


async def test_distributed_stopped_scales_the_ranks_to_zero_first() -> None:
    world = World()
    world.flavor()
    world.server(mode="distributed", distributed={"worldSize": 3}, stopped=True)
    world.child(STATEFULSETS, "box", spec={"replicas": 3})

    await world.reconcile("distributed", "box")

    writes = world.kube.writes()
    assert writes[0] == Call(
        "patch", "StatefulSet", "box", NAMESPACE, {"spec": {"replicas": 0}}, "scale"
    )
    [applied] = [c for c in writes if c.verb == "apply" and c.kind == "StatefulSet"]
    assert applied.body["spec"]["replicas"] == 0
    assert world.kube.status_patches()[-1]["phase"] == "Stopped"


def expiry_at(world: World, when: datetime) -> None:
    world.controllers["expiry"].reconciler.now = lambda: when


async def test_expiry_stops_a_server_at_the_operators_cap() -> None:
    world = World()  # the default cap: seven days from the last start
    world.server(status={"phase": "Running", "lastStart": LONG_AGO})  # no deadline of its own

    expiry_at(world, datetime(2026, 1, 12, 8, 0, tzinfo=UTC))  # an hour before the cap
    result = await world.reconcile("expiry", "box")
    assert world.kube.calls == []
    assert result is not None and result.requeue_after == 45 * 60  # the 15-minute warning

    expiry_at(world, datetime(2026, 1, 12, 9, 0, 1, tzinfo=UTC))  # past it
    await world.reconcile("expiry", "box")

    [stop] = world.kube.writes()
    assert (stop.verb, stop.kind, stop.name) == ("patch", "DevServer", "box")
    assert stop.body["spec"] == {"stopped": True}
    assert stop.body["metadata"]["annotations"]["devservers.io/stop-reason"] == "Expired"
    [(kind, reason, message)] = world.kube.events()
    assert (kind, reason) == ("Normal", "Expired")
    assert "reached its deadline 2026-01-12 09:00:00 UTC" in message


async def test_retention_deletes_a_long_stopped_server_and_names_every_home_it_keeps() -> None:
    world = World(lifecycle=LifecycleConfig(stopped_retention=timedelta(days=30)))
    stopped = {"phase": "Stopped", "lastStart": LONG_AGO, "stoppedAt": LONG_AGO}
    world.server(mode="distributed", distributed={"worldSize": 3}, stopped=True, status=stopped)
    expiry_at(world, datetime(2026, 3, 1, tzinfo=UTC))

    await world.reconcile("expiry", "box")

    [(_, reason, message)] = world.kube.events()
    assert reason == "RetentionExpired"
    assert "its home volume (home-box-0..2) is kept" in message
    assert [(c.verb, c.kind, c.name) for c in world.kube.writes()] == [
        ("delete", "DevServer", "box")
    ]


def made_before_the_label_move(world: World, kind: str, resource: Any) -> dict[str, Any]:
    """Server `box`'s workload as the release before 0.2 made it: selecting `devserver.io/name`.
    An admin has removed that label from the object, so the caches do not hold it."""
    old_selector = {"matchLabels": {"devserver.io/name": "box"}}
    template = {"metadata": {"labels": {"devserver.io/name": "box"}}}
    world.kube.stored[(kind, "box")] = KubeObject.model_validate(
        {
            "apiVersion": resource.api_version,
            "kind": kind,
            "metadata": {"name": "box", "namespace": NAMESPACE},
            "spec": {"replicas": 1, "selector": old_selector, "template": template},
            "status": {"readyReplicas": 1},
        }
    )
    return old_selector


@pytest.mark.parametrize("mode", ["standalone", "distributed"])
async def test_a_stop_reaches_a_workload_the_caches_lost_on_the_selector_it_has(mode: str) -> None:
    world = World()
    world.flavor()
    if mode == "standalone":
        controller, kind, resource = "devserver", "Deployment", DEPLOYMENTS
        world.server(stopped=True)
    else:
        controller, kind, resource = "distributed", "StatefulSet", STATEFULSETS
        world.server(stopped=True, mode="distributed", distributed={"worldSize": 2})
    old_selector = made_before_the_label_move(world, kind, resource)

    await world.reconcile(controller, "box")  # no refusal left: it does not raise

    applies = [c for c in world.kube.writes(kind) if c.verb == "apply"]
    assert applies[0].body["spec"]["selector"] != old_selector  # the cache knew no better…
    last = applies[-1].body["spec"]  # …the API server's copy was read, and that went through
    assert last["selector"] == old_selector and last["replicas"] == 0
    status = world.kube.status_patches()[-1]
    applied = [c for c in status["conditions"] if c["type"] == "Applied"]
    assert not applied or applied[0]["status"] == "True"


async def test_a_service_selects_the_pods_by_the_key_their_workload_selects_them_by() -> None:
    world = World()
    world.flavor()
    world.server(enableSSH=True)
    world.child(
        DEPLOYMENTS,
        "box",
        spec={"replicas": 1, "selector": {"matchLabels": {"devserver.io/name": "box"}}},
        status={"readyReplicas": 1},
    )
    # the Service was deleted (or its selector edited) by an admin: made again, it must still
    # find the pods of the workload made before, which carry only the old key
    await world.reconcile("devserver", "box")
    [service] = [c for c in world.kube.writes("Service") if c.verb == "apply"]
    assert service.body["spec"]["selector"] == {"devserver.io/name": "box"}

    fresh = World()
    fresh.flavor()
    fresh.server(enableSSH=True)
    await fresh.reconcile("devserver", "box")
    [service] = [c for c in fresh.kube.writes("Service") if c.verb == "apply"]
    assert service.body["spec"]["selector"] == {"devservers.io/name": "box"}


# ------------------------------------------------------------------ accounting


def _fleet(world: World) -> Any:
    return world.controllers["devserver"].reconciler.fleet


async def test_a_flavor_renamed_to_one_that_does_not_exist_keeps_billing_the_running_one() -> None:
    """The pod keeps its GPUs on the flavor it runs with: its bill and the fleet's figures
    must too, whatever name the user writes into spec.flavor."""
    world = World()
    world.flavor(pricePerHour=2.0)
    billing = {"since": LONG_AGO, "pricePerHour": 2.0, "gpus": 1}
    status = {"phase": "Running", "appliedFlavor": "gpu-small", "lastStart": LONG_AGO}
    world.server(flavor="no-such-flavor", status={**status, "billing": billing})
    running_deployment(world)

    await world.reconcile("devserver", "box")

    [patch] = world.kube.status_patches()  # FlavorValid False, and nothing about the bill
    assert "billing" not in patch
    report = _fleet(world).report_of(KEY)
    assert (report.flavor, report.gpus, report.held, report.price_per_hour) == (
        "gpu-small", 1, True, 2.0
    )  # fmt: skip


async def test_only_a_pod_no_node_has_taken_counts_as_waiting_for_capacity() -> None:
    world = World()
    world.flavor()
    world.server(status={"phase": "Running", "appliedFlavor": "gpu-small", "lastStart": LONG_AGO})
    running_deployment(world)  # on a node: a restart or a failing probe is not a wait
    await world.reconcile("devserver", "box")
    assert _fleet(world).report_of(KEY).pending_since is None

    made = datetime.now(UTC) - timedelta(minutes=10)
    world.child(
        PODS,
        "box-new",
        metadata={"creationTimestamp": made.strftime("%Y-%m-%dT%H:%M:%SZ")},
        spec={},  # no nodeName: the scheduler found no node
    )
    await world.reconcile("devserver", "box")
    fleet = _fleet(world)
    waited = fleet.clock() - fleet.report_of(KEY).pending_since
    assert 595 <= waited <= 605


async def test_a_fresh_agent_report_is_looked_at_again_when_it_lapses() -> None:
    """Nothing wakes the reconciler when an agent falls silent; GPU time must stop counting as
    active once its report is stale, so the reconcile asks to run again then."""
    world = World()
    world.flavor()
    world.server(status={"phase": "Running", "appliedFlavor": "gpu-small", "lastStart": LONG_AGO})
    running_deployment(world)
    renewed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    world.child(LEASES, "box-activity", spec={"renewTime": renewed, "leaseDurationSeconds": 60})

    result = await world.reconcile("devserver", "box")

    assert result is not None and 55 <= result.requeue_after <= 62
    assert _fleet(world).report_of(KEY).active


def test_a_flavors_status_write_wakes_none_of_its_servers_and_a_spec_edit_wakes_them_all() -> None:
    """The flavor's count of servers changes with every create; at 10,000 servers each such
    status write woke all 10,000 again."""
    from devserver.api.flavor import DevServerFlavorStatus
    from devserver.api.resources import FLAVORS
    from devserver.informers import Change, Notification

    world = World()
    flavor = world.flavor()
    for name in ("a", "b", "c"):
        world.server(name)
    informer = next(i for i in world.factory if i.resource == FLAVORS)
    wake = next(r.handler for r in informer._handlers if r.name == "devserver")
    queue = world.controllers["devserver"].queue
    counted = flavor.model_copy(  # a status write: a new count and resourceVersion, same spec
        update={
            "status": DevServerFlavorStatus.model_validate({"devServers": 3}),
            "metadata": flavor.metadata.model_copy(update={"resource_version": "2"}),
        }
    )
    wake(Notification(Change.UPDATED, counted, flavor))
    assert len(queue) == 0
    edited = flavor.model_copy(
        update={"metadata": flavor.metadata.model_copy(update={"generation": 2})}
    )
    wake(Notification(Change.UPDATED, edited, flavor))
    assert len(queue) == 3
    made_again = flavor.model_copy(  # deleted and made again while the watch was down
        update={"metadata": flavor.metadata.model_copy(update={"uid": "uid-new"})}
    )
    fresh = World()
    fresh.flavor()
    for name in ("a", "b"):
        fresh.server(name)
    informer = next(i for i in fresh.factory if i.resource == FLAVORS)
    wake = next(r.handler for r in informer._handlers if r.name == "devserver")
    wake(Notification(Change.UPDATED, made_again, flavor))
    assert len(fresh.controllers["devserver"].queue) == 2
