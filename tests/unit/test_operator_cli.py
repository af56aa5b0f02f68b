"""devserver-operator's command line: its flags reach the settings the Manager runs with."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from devserver import operator
from devserver.operator import OperatorSettings


def settings_of(args: list[str], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    ran: list[Any] = []
    monkeypatch.setattr(operator, "configure_logging", lambda json: None)
    monkeypatch.setattr(operator, "run_until_signalled", lambda run, *_: ran.append(run))
    operator.main.main(args, standalone_mode=False)
    (run,) = ran
    settings: OperatorSettings = run.args[0]
    return settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    settings = settings_of([], monkeypatch)
    assert settings.kubeconfig is None
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8080)  # noqa: S104
    assert settings.leader_election
    assert (settings.lease_namespace, settings.lease_name) == (
        "devserver-system",
        "devserver-operator",
    )
    assert settings.lifecycle.max_lifetime == timedelta(days=7)
    assert settings.lifecycle.stopped_retention is None


def test_every_flag_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(
        [
            "--kubeconfig=/k",
            "--http-host=127.0.0.1",
            "--http-port=9",
            "--no-leader-elect",
            "--lease-namespace=ns",
            "--lease-name=lease",
            "--max-lifetime=0",
            "--warn-before=1h",
            "--stopped-retention=2d",
            "--no-log-json",
        ],
        monkeypatch,
    )
    assert (settings.kubeconfig, settings.http_host, settings.http_port) == ("/k", "127.0.0.1", 9)
    assert not settings.leader_election
    assert (settings.lease_namespace, settings.lease_name) == ("ns", "lease")
    assert settings.lifecycle.max_lifetime is None
    assert settings.lifecycle.warn_before == (timedelta(hours=1),)
    assert settings.lifecycle.stopped_retention == timedelta(days=2)
