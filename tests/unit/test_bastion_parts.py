"""The bastion's pure parts: sshd policy, key checks, the wrapper's wire format, kubeconfigs."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devserver.api.ssh_keys import check_keys
from devserver.bastion import session
from devserver.bastion.accounts import AccountError, gecos, ipc_objects, purge_files, purge_ipc
from devserver.bastion.settings import BastionSettings
from devserver.bastion.sshd_config import render_sshd_config
from devserver.bastion.tokens import render_kubeconfig
from devserver.bastion.uids import Claimant, assign_uids
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
        ("PerSourceMaxStartups", "10"),
        ("PerSourceNetBlockSize", "32:64"),
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


# ---------------------------------------------------------------------------- uids

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
# a few creation seconds for many users: ties (settled by name) are common
USERS = st.dictionaries(NAMES, st.integers(0, 5), min_size=1, max_size=25)


def claimants(users: dict[str, int]) -> list[Claimant]:
    return [Claimant(EPOCH + timedelta(seconds=s), name) for name, s in users.items()]


@settings(max_examples=200, deadline=None)
@given(users=USERS, data=st.data())
def test_every_user_gets_one_uid_of_its_own_whatever_the_order(
    users: dict[str, int], data: st.DataObject
) -> None:
    # a range barely larger than the users: collisions are the rule, not the exception
    low, high = 5000, 5000 + 2 * len(users)
    first = assign_uids(claimants(users), uid_min=low, uid_max=high)
    shuffled = data.draw(st.permutations(claimants(users)))
    assert assign_uids(shuffled, uid_min=low, uid_max=high) == first
    assert set(first) == set(users)
    assert len(set(first.values())) == len(users)
    assert all(low <= uid <= high for uid in first.values())


@settings(max_examples=200, deadline=None)
@given(users=USERS, newcomers=st.lists(NAMES, min_size=1, max_size=5, unique=True))
def test_a_new_user_never_moves_an_existing_one(
    users: dict[str, int], newcomers: list[str]
) -> None:
    """Users are added one by one on a running replica and all at once on a restarted one."""
    low, high = 5000, 5000 + 2 * (len(users) + len(newcomers))
    before = assign_uids(claimants(users), uid_min=low, uid_max=high)
    later = {name: 6 for name in newcomers if name not in users}  # created afterwards
    after = assign_uids(claimants(users | later), uid_min=low, uid_max=high)
    assert {name: after[name] for name in before} == before


def test_uids_are_the_same_in_every_process_and_skip_what_is_taken_here() -> None:
    """Another replica is another interpreter: the uid must not depend on Python's hash seed."""
    probe = (
        "from datetime import datetime, UTC; from devserver.bastion.uids import *; "
        "print(assign_uids([Claimant(datetime(2026,1,1,tzinfo=UTC), 'ana')], "
        "uid_min=200000, uid_max=1999999999)['ana'])"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", probe],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert len(seen) == 1
    ana = int(seen.pop())
    assert 200000 <= ana <= 1999999999
    one = [Claimant(EPOCH, "ana")]
    moved = assign_uids(one, uid_min=200000, uid_max=1999999999, taken=lambda name, uid: uid == ana)
    assert moved["ana"] != ana


# ---------------------------------------------------------------------------- files


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_purging_a_uid_removes_its_files_and_nothing_else(tmp_path: Path) -> None:
    gone, kept = 4242001, 4242002
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    (tmp / "shared").mkdir(parents=True)
    (home / "kept").mkdir(parents=True)
    os.chmod(tmp / "shared", 0o1777)  # noqa: S103 - a shared /tmp-like directory
    layout = {
        tmp / "mine.txt": gone,
        tmp / "shared" / "deep.txt": gone,  # in another user's directory
        tmp / "shared" / "theirs.txt": kept,
        home / "kept" / "file": kept,
    }
    for path, uid in layout.items():
        path.write_text("x")
        os.chown(path, uid, uid)
    (tmp / "mydir" / "sub").mkdir(parents=True)
    (tmp / "mydir" / "sub" / "theirs-inside").write_text("x")  # goes with the directory
    os.chown(tmp / "mydir", gone, gone)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp / "link").symlink_to(outside)
    os.chown(tmp / "link", gone, gone, follow_symlinks=False)

    assert purge_files(gone, [tmp, home, tmp_path / "missing"]) == 4
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == [
        "home",
        "home/kept",
        "home/kept/file",
        "outside.txt",
        "tmp",
        "tmp/shared",
        "tmp/shared/theirs.txt",
    ]
    assert outside.read_text() == "keep me"


_MAKE_SEGMENT = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
ident = libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
sys.exit(0 if ident >= 0 else 1)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="making segments as another uid needs root")
def test_a_removed_uids_shared_memory_is_removed_with_it() -> None:
    """System V segments outlive their processes: the next holder of the uid could attach."""
    gone, kept = 4242003, 4242004
    for uid in (gone, gone, kept):
        subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             sys.executable, "-c", _MAKE_SEGMENT],
            check=True,
        )  # fmt: skip
    try:
        assert len(ipc_objects(gone)) == 2
        assert asyncio.run(purge_ipc(gone)) == 2
        assert ipc_objects(gone) == []
        assert len(ipc_objects(kept)) == 1
    finally:
        for flag, ident in ipc_objects(gone) + ipc_objects(kept):
            subprocess.run(["ipcrm", flag, str(ident)], check=False)


def test_ipc_objects_are_read_by_owner_and_creator(tmp_path: Path) -> None:
    (tmp_path / "shm").write_text(
        "       key      shmid perms size  cpid  lpid nattch   uid   gid  cuid  cgid\n"
        "         0         7  1600 4096  10    0     0      77    77    77    77\n"
        "         0         8  1600 4096  10    0     0      0     0     77    0\n"
        "         0         9  1600 4096  10    0     0      78    78    78    78\n"
    )
    (tmp_path / "sem").write_text("       key      semid perms nsems   uid   gid  cuid  cgid\n")
    assert ipc_objects(77, tmp_path) == [("-m", 7), ("-m", 8)]


@pytest.mark.skipif(os.geteuid() != 0, reason="making segments as another uid needs root")
def test_a_segment_someone_still_attaches_keeps_its_uid_from_being_handed_on() -> None:
    """ipcrm only marks an attached segment for removal; it can still be attached by id."""
    gone = 4242005
    subprocess.run(
        ["setpriv", f"--reuid={gone}", f"--regid={gone}", "--clear-groups",
         sys.executable, "-c", _MAKE_SEGMENT],
        check=True,
    )  # fmt: skip
    [(_flag, ident)] = ipc_objects(gone)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    address = libc.shmat(ident, None, 0)  # another process (root) keeps it attached
    assert address not in (None, ctypes.c_void_p(-1).value)
    try:
        with pytest.raises(AccountError, match="survive"):
            asyncio.run(purge_ipc(gone))
    finally:
        libc.shmdt(ctypes.c_void_p(address))
    assert ipc_objects(gone) == []  # detached: the marked segment went
    assert asyncio.run(purge_ipc(gone)) == 0
