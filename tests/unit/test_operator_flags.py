"""The operator's user flags: a platform's quota and bastion identity, or one clear sentence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserver.operator import user_defaults


def test_a_quota_given_overrides_only_what_it_names() -> None:
    d = user_defaults("gpus=4,devServers=2", "tools/bastion")
    assert (d.gpus, d.dev_servers, d.cpu, d.memory) == (4, 2, "64", "256Gi")
    assert (d.bastion_namespace, d.bastion_service_account) == ("tools", "bastion")


@pytest.mark.parametrize(
    ("quota", "bastion", "says"),
    [
        ("gpu=4", "a/b", "not 'gpu'"),  # a typo is refused, never ignored
        ("gpus=-1", "a/b", "gpus=-1 is not a valid amount"),
        ("memory=lots", "a/b", "memory=lots is not a valid amount"),
        ("gpus", "a/b", "name=value pairs"),
        ("gpus=1", "bastion", "namespace/name"),
        ("gpus=1", "ns/a/b", "namespace/name"),
    ],
)
def test_a_malformed_flag_is_one_sentence(quota: str, bastion: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as raised:
        user_defaults(quota, bastion)
    assert "\n" not in str(raised.value)


@given(st.text(max_size=60), st.text(max_size=30))
def test_any_text_is_taken_or_refused_in_one_sentence(quota: str, bastion: str) -> None:
    said = ""
    try:
        user_defaults(quota, bastion)
    except ValueError as error:
        said = str(error)
    assert "\n" not in said
