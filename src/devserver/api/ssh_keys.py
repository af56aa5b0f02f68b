"""Which SSH public keys a DevUser's list admits: plain OpenSSH public keys, one per line, no
options (`command=`, `from=`, `permitopen=` …): sshd's policy, on the bastion and in dev pods,
is not something a key line can loosen. Pure.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "sk-ssh-ed25519@openssh.com",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-rsa",  # the key type; sshd still only accepts rsa-sha2-* signatures for it
    }
)
_COMMENT = re.compile(r"^[\x21-\x7e ]*$")


@dataclass(frozen=True)
class KeyCheck:
    accepted: list[str]
    refused: list[str]  # one sentence per refused key


def check_keys(lines: list[str]) -> KeyCheck:
    accepted: list[str] = []
    refused: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        parts = line.split(None, 2)
        if len(parts) < 2 or "\n" in line or "\r" in line:
            refused.append(f"key {number} is not an OpenSSH public key line ('type base64 …').")
            continue
        kind, blob = parts[0], parts[1]
        comment = parts[2] if len(parts) == 3 else ""
        if kind not in KEY_TYPES:
            refused.append(
                f"key {number} has type or options {kind[:40]!r}; use a plain "
                "ssh-ed25519, ecdsa or rsa public key without options."
            )
            continue
        try:
            decoded = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            refused.append(f"key {number} is not valid base64.")
            continue
        if not decoded.startswith(len(kind).to_bytes(4, "big") + kind.encode()):
            refused.append(f"key {number} does not match its declared type {kind}.")
            continue
        if not _COMMENT.match(comment):
            refused.append(f"key {number} has a comment with control characters.")
            continue
        accepted.append(f"{kind} {blob}" + (f" {comment}" if comment else ""))
    return KeyCheck(accepted, refused)
