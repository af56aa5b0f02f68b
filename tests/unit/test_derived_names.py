"""G4, names: every DevServer and DevUser name the API server accepts (the CRDs' CEL rules)
yields valid names for everything derived from it, and labels that fit; generated."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from devserver.api.devserver import MAX_NAME_LENGTH, NAME_PATTERN, DevServer
from devserver.api.user import MAX_USERNAME, USERNAME_PATTERN, DevUser
from devserver.reconcilers.devserver.activity_agent import agent_name, lease_names
from devserver.reconcilers.naming import home_claim_name, labels
from devserver.reconcilers.user_objects import namespace_name, service_account_name

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

server_names = st.from_regex(NAME_PATTERN, fullmatch=True).filter(
    lambda n: len(n) <= MAX_NAME_LENGTH
)
user_names = st.from_regex(USERNAME_PATTERN, fullmatch=True).filter(
    lambda n: len(n) <= MAX_USERNAME
)


@given(server_names, st.integers(1, 64), st.text(max_size=300))
def test_every_derived_name_of_a_server_is_valid(name: str, world: int, owner: str) -> None:
    ds = DevServer.model_validate(
        {
            "metadata": {"name": name, "namespace": "dev-a"},
            "spec": {
                "owner": owner,
                "flavor": "f",
                "image": "x",
                "mode": "distributed",
                "distributed": {"worldSize": world},
            },
        }
    )
    assert DNS_1035.match(name)  # a Service, a Deployment, a StatefulSet, a host name
    derived = [home_claim_name(ds), agent_name(ds), *lease_names(ds)]
    derived += [home_claim_name(ds, i) for i in range(world)]
    derived += [f"{name}-{i}" for i in range(world)]  # StatefulSet pods
    derived.append(f"{name}-{'f' * 10}")  # the controller-revision-hash label
    for child in derived:
        assert len(child) <= 63 and DNS_1123.match(child), child
    for value in labels(ds).values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value


@given(user_names)
def test_every_derived_name_of_a_user_is_valid(name: str) -> None:
    user = DevUser.model_validate({"metadata": {"name": name}})
    for child in (namespace_name(user), service_account_name(user)):
        assert len(child) <= 63 and DNS_1123.match(child), child


def test_the_pod_agent_writes_and_reads_the_annotations_the_operator_names() -> None:
    """The in-pod agent runs on the standard library alone, so it keeps its own copies."""
    from devserver.api import names
    from devserver.podagent import agent

    for key in ("IDLE_SINCE", "ACTIVITY", "NOTICE", "STOP_AT"):
        assert getattr(agent, key) == getattr(names, key), key
