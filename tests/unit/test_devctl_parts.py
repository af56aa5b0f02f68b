"""devctl's pure parts: durations, tables, kubeconfig loading, exec status, error sentences."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devserver.cli.durations import DurationError, canonical, parse_duration, short
from devserver.cli.errors import from_api
from devserver.cli.output import table, until
from devserver.client import ApiError
from devserver.client.config import ConfigError, ExecPlugin, StaticToken, load_kubeconfig
from devserver.client.remote import exit_code_from_status


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h", 3600), ("2h30m", 9000), ("1d", 86400), ("1d12h", 129600)],
)
def test_durations_users_type(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(canonical(parse_duration(text))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "2x", "1.5h", "90s", "30m1h", "1h1h", "-1h", "1 h"])
def test_anything_else_is_a_clear_error(text: str) -> None:
    with pytest.raises(DurationError, match=r"30m, 1h, 2h30m|too short|not a duration|repeats"):
        parse_duration(text)


def test_short_and_until_for_tables() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert short(timedelta(hours=2, minutes=30, seconds=5)) == "2h30m"
    assert short(timedelta(days=3, hours=4, minutes=5)) == "3d4h"
    assert until(now + timedelta(minutes=45), now) == "45m"
    assert until(now - timedelta(minutes=1), now) == "expired"
    assert until(None, now) == "-"


def test_tables_align_columns() -> None:
    assert table([["a", "long-value"], ["bbb", "x"]], ["NAME", "V"]).splitlines() == [
        "NAME   V",
        "a      long-value",
        "bbb    x",
    ]


def test_refusals_become_one_sentence_with_a_hint() -> None:
    forbidden = from_api(ApiError(403, "Forbidden", "no"), namespace="dev-x", what="list pods")
    assert "you may not list pods in namespace dev-x" in forbidden.message
    missing = from_api(ApiError(404, "NotFound", ""), namespace="dev-x", name="gone")
    assert "see `devctl list`" in missing.message
    offline = from_api(ApiError(0, "ConnectionFailed", "refused"), namespace="dev-x")
    assert "cannot reach the Kubernetes API server" in offline.message


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"status": "Success"}, 0),
        ({"status": "Failure", "reason": "NonZeroExitCode",
          "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}}, 7),
        ({"status": "Failure", "message": "command failed: exit status 3"}, 3),
        ({"status": "Failure", "message": "executable file not found"}, 1),
    ],
)  # fmt: skip
def test_exit_codes_from_the_exec_status(status: dict[str, object], code: int) -> None:
    assert exit_code_from_status(status)[0] == code


def write_config(path: Path, user: dict[str, object], **cluster: object) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://k:6443/", **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u",
                                                          "namespace": "dev-ana"}}],
                "current-context": "ctx",
            }
        )
    )  # fmt: skip
    return path


async def test_a_token_kubeconfig(tmp_path: Path) -> None:
    config = load_kubeconfig(str(write_config(tmp_path / "c", {"token": "t0k"})))
    assert (config.server, config.namespace, config.context) == ("https://k:6443", "dev-ana", "ctx")
    assert isinstance(config.auth, StaticToken)
    assert await config.auth.token() == "t0k"


async def test_an_exec_plugin_is_run_and_cached(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    counter = tmp_path / "count"
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    plugin.write_text(
        "#!/bin/sh\necho x >> " + str(counter) + "\n"
        'echo \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
        f'"status":{{"token":"from-plugin","expirationTimestamp":"{expiry}"}}}}\'\n'
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin)}}
    config = load_kubeconfig(str(write_config(tmp_path / "c", user)))
    assert isinstance(config.auth, ExecPlugin)
    assert config.auth.token_sync() == "from-plugin"
    assert await config.auth.token() == "from-plugin"
    assert counter.read_text().count("x") == 1  # cached until shortly before expiry


def test_unusable_kubeconfigs_say_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load_kubeconfig(str(tmp_path / "missing"))
    provider = write_config(tmp_path / "p", {"auth-provider": {"name": "oidc"}})
    with pytest.raises(ConfigError, match="auth-provider"):
        load_kubeconfig(str(provider))
    with pytest.raises(ConfigError, match="no context named 'other'"):
        load_kubeconfig(str(provider), "other")


def test_a_kubeconfig_list_is_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_config(tmp_path / "a", {"token": "a"})
    second = tmp_path / "b"
    second.write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n"
        "contexts:\n- name: other\n  context: {cluster: c, user: u, namespace: dev-ben}\n"
    )
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(second)]))
    assert load_kubeconfig(None, "other").namespace == "dev-ben"  # YAML file, merged names
