"""The bastion's pure parts: sshd policy, key checks, the wrapper's wire format, kubeconfigs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devserver.bastion import session
from devserver.bastion.accounts import gecos
from devserver.bastion.keys import check_keys
from devserver.bastion.settings import BastionSettings
from devserver.bastion.sshd_config import render_sshd_config
from devserver.bastion.tokens import render_kubeconfig
from devserver.reconcilers.user import quota_counted

ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def config_lines() -> dict[str, str]:
    text = render_sshd_config(BastionSettings(port=2222), session_command="/x/wrapper")
    pairs = (line.split(None, 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("PermitRootLogin", "no"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("AuthenticationMethods", "publickey"),
        ("AllowAgentForwarding", "no"),
        ("X11Forwarding", "no"),
        ("AllowStreamLocalForwarding", "no"),
        ("PermitTunnel", "no"),
        ("AllowTcpForwarding", "local"),
        ("PermitOpen", "*:22"),
        ("PermitListen", "none"),
        ("AuthorizedKeysFile", "none"),
        ("AllowGroups", "devserver-users"),
        ("PermitUserEnvironment", "no"),
        ("ForceCommand", "/x/wrapper"),
        ("MaxAuthTries", "3"),
        ("LoginGraceTime", "20"),
    ],
)
def test_the_sshd_policy_is_hardened(option: str, value: str) -> None:
    assert config_lines()[option] == value


def test_only_modern_algorithms_are_offered() -> None:
    config = config_lines()
    for weak in ("diffie-hellman-group1", "diffie-hellman-group14-sha1", "ssh-rsa,", "cbc"):
        assert weak not in ",".join(config[k] for k in ("KexAlgorithms", "Ciphers", "MACs"))
    assert "ssh-rsa" not in config["HostKeyAlgorithms"].split(",")
    assert all("etm" in mac for mac in config["MACs"].split(","))


def test_keys_with_options_or_garbage_are_refused_with_a_reason() -> None:
    check = check_keys(
        [
            f"ssh-ed25519 {ED25519} ana@laptop",
            f'command="/bin/sh" ssh-ed25519 {ED25519}',
            "ssh-ed25519 not-base64!",
            f"ssh-rsa {ED25519}",  # an ed25519 blob declared as rsa
            "just words",
        ]
    )
    assert check.accepted == [f"ssh-ed25519 {ED25519} ana@laptop"]
    assert len(check.refused) == 4
    assert "options" in check.refused[0]
    assert "base64" in check.refused[1]
    assert "does not match" in check.refused[2]


def test_gecos_keeps_only_safe_characters() -> None:
    assert gecos("ana@example.com:0:0:/root") == "devserver ana@example.com00root"


@pytest.mark.parametrize("text", ['say "hi"', "tab\there", "new\nline", "back\\slash", "ümlaut ✓"])
def test_the_wrappers_hand_made_json_is_json(text: str) -> None:
    encoded = "{" + f"{session._json('command')}:{session._json(text)}" + "}"
    assert json.loads(encoded) == {"command": text}
    assert session._json(None) == "null"
    assert session._json(True) == "true"
    assert session._json(7) == "7"


def test_the_session_wrapper_imports_only_built_in_modules() -> None:
    """It is on every login's path: an import of `typing` alone would add 10 ms."""
    script = Path(session.__file__)
    probe = (
        "import sys; before = set(sys.modules); "
        f"exec(compile(open({str(script)!r}).read().replace('if __name__ == \"__main__\":', "
        "'if False:'), 'session', 'exec'), {'__name__': 'probe'}); "
        "print(sorted(set(sys.modules) - before))"
    )
    loaded = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    cheap = {"__future__", "_collections_abc", "_signal", "_socket", "_stat", "genericpath",
             "marshal", "os", "os.path", "posixpath", "pwd", "stat"}  # fmt: skip
    assert set(json.loads(loaded.replace("'", '"'))) <= cheap


def test_kubeconfig_is_scoped_to_the_users_namespace() -> None:
    config = json.loads(
        render_kubeconfig(user="ana", server="https://api", ca_pem=b"PEM", token="t0k")
    )
    assert config["current-context"] == "devserver"
    assert config["contexts"][0]["context"]["namespace"] == "dev-ana"
    assert config["users"][0] == {"name": "user-ana", "user": {"token": "t0k"}}
    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"PEM"


def test_a_user_is_ready_only_once_the_quota_counts_everything() -> None:
    hard = {"pods": "4", "count/devservers.devservers.io": "2"}
    assert not quota_counted(None)
    assert not quota_counted({"hard": hard, "used": {"pods": "0"}})
    assert quota_counted(
        {"hard": hard, "used": {"pods": "0", "count/devservers.devservers.io": "0"}}
    )
