"""Kubeconfig files for the local control plane (written as JSON, which every loader accepts)."""

from __future__ import annotations

import base64
import json
from pathlib import Path


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
    embed_ca: bool = False,
) -> Path:
    """Write a single-context kubeconfig authenticating with a client certificate or a token."""
    if (client_cert is None) == (token is None):
        raise ValueError("give either a client certificate or a token")
    credentials: dict[str, str] = (
        {"token": token}
        if token is not None
        else {"client-certificate": str(client_cert), "client-key": str(client_key)}
    )
    context: dict[str, str] = {"cluster": "devserver-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    cluster: dict[str, str] = {"server": server}
    if embed_ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    else:
        cluster["certificate-authority"] = str(ca_file)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devserver-local",
                "cluster": cluster,
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "devserver-local", "context": context}],
        "current-context": "devserver-local",
        "preferences": {},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.chmod(0o600)
    return path
