"""Short-lived credentials for `user-<user>`: the TokenRequest API, and the kubeconfig around it.

The bastion's ServiceAccount may create tokens only for each user's own ServiceAccount (a
per-user Role with `resourceNames`, made by the user reconciler). Tokens are never stored by the
bastion; each login gets a fresh one, renewed by the session while it lasts.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

from devserver.api.names import user_namespace
from devserver.api.resources import SERVICE_ACCOUNTS
from devserver.client import KubeClient

MIN_LIFETIME = 600  # the API server refuses shorter TokenRequests


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


def user_service_account(user: str) -> str:
    return f"user-{user}"


class TokenIssuer:
    def __init__(self, client: KubeClient, *, lifetime: int) -> None:
        if lifetime < MIN_LIFETIME:
            raise ValueError(f"token lifetime must be at least {MIN_LIFETIME} s, not {lifetime}")
        self.client, self.lifetime = client, lifetime

    async def issue(self, user: str) -> IssuedToken:
        path = SERVICE_ACCOUNTS.path(user_namespace(user), user_service_account(user), "token")
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": self.lifetime},
        }
        status = json.loads(await self.client.request("POST", path, body=body))["status"]
        return IssuedToken(status["token"], datetime.fromisoformat(status["expirationTimestamp"]))


def render_kubeconfig(*, user: str, server: str, ca_pem: bytes, token: str) -> str:
    """A kubeconfig (JSON, which kubectl and every client read) scoped to the user's namespace."""
    name = "devserver"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user_service_account(user), "user": {"token": token}}],
        "contexts": [
            {
                "name": name,
                "context": {
                    "cluster": name,
                    "user": user_service_account(user),
                    "namespace": user_namespace(user),
                },
            }
        ],
        "current-context": name,
    }
    return json.dumps(config, indent=2) + "\n"
