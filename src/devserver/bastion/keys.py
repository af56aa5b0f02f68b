"""The bastion's authorized keys: the root-owned files sshd reads through the
AuthorizedKeysCommand, one per account, holding what `api.ssh_keys.check_keys` admits.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_keys(keys_dir: Path, user: str, keys: list[str]) -> bool:
    """Atomically replace the user's key file (root-owned, 0644); False if already current."""
    content = "".join(f"{key}\n" for key in keys)
    target = keys_dir / user
    try:
        if target.read_text() == content:
            return False
    except FileNotFoundError:
        pass
    temporary = keys_dir / f".{user}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(temporary, 0o644)
    os.replace(temporary, target)
    return True


def remove_keys(keys_dir: Path, user: str) -> bool:
    try:
        (keys_dir / user).unlink()
    except FileNotFoundError:
        return False
    return True
