"""Where the API server is and how to authenticate: kubeconfig files and in-cluster config.

Ours rather than kubernetes_asyncio's loader because of what importing that package costs: it
loads every generated API model (~190 ms), more than devctl's whole budget for `devctl list`.
What is supported: the `KUBECONFIG` list (merged, first definition wins) or ~/.kube/config, a
chosen context, JSON or YAML files; TLS by CA file or data, `tls-server-name`,
`insecure-skip-tls-verify`; client certificates by file or data; bearer tokens inline or from a
file (re-read when it changes, as projected ServiceAccount tokens rotate); exec credential
plugins (`client.authentication.k8s.io/v1` and `v1beta1`, e.g. `aws eks get-token`), cached until
shortly before they expire; and the in-cluster ServiceAccount. Not supported, with an error that
says so: auth-provider plugins (removed from kubectl in 1.26) and proxies.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_REFRESH_MARGIN = 60.0


class ConfigError(Exception):
    """The kubeconfig cannot be used; the message says what to fix."""


class Auth:
    """Bearer credentials for each request (none: the TLS client certificate authenticates).

    `token` for the asyncio client, `token_sync` for devctl's blocking one."""

    def token_sync(self) -> str | None:
        return None

    async def token(self) -> str | None:
        return self.token_sync()


@dataclass
class StaticToken(Auth):
    value: str

    def token_sync(self) -> str | None:
        return self.value


@dataclass
class TokenFile(Auth):
    path: Path
    _cached: str = ""
    _mtime: float = -1.0

    def token_sync(self) -> str | None:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self._cached, self._mtime = self.path.read_text().strip(), mtime
        return self._cached


@dataclass
class ExecPlugin(Auth):
    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    _token: str = ""
    _expires: float = 0.0

    def token_sync(self) -> str | None:
        if self._token and time.time() < self._expires - EXEC_REFRESH_MARGIN:
            return self._token
        request = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {}}
        try:
            done = subprocess.run(
                [self.command, *self.args],
                capture_output=True,
                check=False,
                env={**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(request)},
                timeout=60,
            )
        except FileNotFoundError:
            raise ConfigError(f"the credential plugin {self.command!r} is not installed") from None
        if done.returncode != 0:
            raise ConfigError(
                f"the credential plugin {self.command!r} failed: {done.stderr.decode()[:300]}"
            )
        status = json.loads(done.stdout).get("status", {})
        if "token" not in status:
            raise ConfigError(
                f"the credential plugin {self.command!r} returned no token "
                "(client certificates from plugins are not supported)"
            )
        self._token = status["token"]
        expiry = status.get("expirationTimestamp")
        self._expires = (
            datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp()
            if expiry
            else float("inf")
        )
        return self._token

    async def token(self) -> str | None:
        if self._token and time.time() < self._expires - EXEC_REFRESH_MARGIN:
            return self._token
        import asyncio  # the operator's path; devctl's blocking client never gets here

        return await asyncio.to_thread(self.token_sync)


@dataclass
class ClusterConfig:
    server: str
    ssl_context: ssl.SSLContext
    auth: Auth
    namespace: str = "default"
    context: str = ""
    ca_pem: bytes | None = None
    server_hostname: str | None = None


def _b64(data: str) -> bytes:
    return base64.b64decode(data)


def _read_documents(paths: list[Path]) -> list[dict[str, Any]]:
    documents = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        try:
            document = json.loads(text)
        except ValueError:
            import yaml  # only for YAML kubeconfigs; JSON ones (the bastion's) skip the import

            try:
                document = yaml.safe_load(text)
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                raise ConfigError(f"{path} is neither YAML nor JSON{where}") from None
        if isinstance(document, dict):
            document["_dir"] = str(path.parent)
            documents.append(document)
    return documents


def _named(documents: list[dict[str, Any]], section: str, name: str) -> tuple[dict[str, Any], str]:
    for document in documents:
        for entry in document.get(section) or []:
            if entry.get("name") == name:
                key = section[:-1]  # clusters -> cluster
                return entry.get(key) or {}, document["_dir"]
    raise ConfigError(f"the kubeconfig has no {section[:-1]} named {name!r}")


def _path(value: str, base: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(base) / path


def _ssl_context(
    cluster: dict[str, Any], user: dict[str, Any], base: str, user_base: str
) -> tuple[ssl.SSLContext, bytes | None]:
    ca_pem: bytes | None = None
    if cluster.get("certificate-authority-data"):
        ca_pem = _b64(cluster["certificate-authority-data"])
    elif cluster.get("certificate-authority"):
        ca_pem = _path(cluster["certificate-authority"], base).read_bytes()
    context = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert = user.get("client-certificate-data") or user.get("client-certificate")
    key = user.get("client-key-data") or user.get("client-key")
    if cert and key:
        if "client-certificate-data" in user or "client-key-data" in user:
            with tempfile.TemporaryDirectory() as scratch:
                cert_path, key_path = Path(scratch) / "cert", Path(scratch) / "key"
                cert_path.write_bytes(
                    _b64(user["client-certificate-data"])
                    if "client-certificate-data" in user
                    else _path(cert, user_base).read_bytes()
                )
                key_path.write_bytes(
                    _b64(user["client-key-data"])
                    if "client-key-data" in user
                    else _path(key, user_base).read_bytes()
                )
                key_path.chmod(0o600)
                context.load_cert_chain(cert_path, key_path)
        else:
            context.load_cert_chain(_path(cert, user_base), _path(key, user_base))
    return context, ca_pem


def _auth(user: dict[str, Any], base: str) -> Auth:
    if user.get("auth-provider"):
        raise ConfigError(
            "auth-provider kubeconfigs are not supported (kubectl dropped them in 1.26); "
            "use an exec credential plugin"
        )
    if user.get("token"):
        return StaticToken(user["token"])
    if user.get("tokenFile"):
        return TokenFile(_path(user["tokenFile"], base))
    if user.get("exec"):
        plugin = user["exec"]
        return ExecPlugin(
            command=plugin["command"],
            args=list(plugin.get("args") or []),
            env={e["name"]: e["value"] for e in plugin.get("env") or []},
            api_version=plugin.get("apiVersion", "client.authentication.k8s.io/v1"),
        )
    return Auth()


def load_kubeconfig(path: str | None = None, context: str | None = None) -> ClusterConfig:
    """From `path`, else $KUBECONFIG (a list), else ~/.kube/config."""
    if path:
        paths = [Path(path)]
    elif os.environ.get("KUBECONFIG"):
        paths = [Path(p) for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        paths = [Path.home() / ".kube" / "config"]
    documents = _read_documents(paths)
    if not documents:
        raise ConfigError(f"no kubeconfig found at {os.pathsep.join(map(str, paths))}")
    name = context or next(
        (d["current-context"] for d in documents if d.get("current-context")), ""
    )
    if not name:
        raise ConfigError("the kubeconfig has no current context; pass --context")
    ctx, _ = _named(documents, "contexts", name)
    cluster, cluster_base = _named(documents, "clusters", ctx.get("cluster", ""))
    user, user_base = (
        _named(documents, "users", ctx["user"]) if ctx.get("user") else ({}, cluster_base)
    )
    if cluster.get("proxy-url"):
        raise ConfigError("kubeconfigs with proxy-url are not supported")
    context_ssl, ca_pem = _ssl_context(cluster, user, cluster_base, user_base)
    return ClusterConfig(
        server=str(cluster.get("server", "")).rstrip("/"),
        ssl_context=context_ssl,
        auth=_auth(user, user_base),
        namespace=ctx.get("namespace") or "default",
        context=name,
        ca_pem=ca_pem,
        server_hostname=cluster.get("tls-server-name"),
    )


def load_incluster() -> ClusterConfig:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    ca_pem = (SERVICE_ACCOUNT_DIR / "ca.crt").read_bytes()
    host = f"[{host}]" if ":" in host else host
    return ClusterConfig(
        server=f"https://{host}:{port}",
        ssl_context=ssl.create_default_context(cadata=ca_pem.decode()),
        auth=TokenFile(SERVICE_ACCOUNT_DIR / "token"),
        namespace=(SERVICE_ACCOUNT_DIR / "namespace").read_text().strip(),
        context="in-cluster",
        ca_pem=ca_pem,
    )


def load_config(kubeconfig: str | None = None, context: str | None = None) -> ClusterConfig:
    """A kubeconfig if given or found; inside a pod with none, the ServiceAccount."""
    if (
        kubeconfig is None
        and not os.environ.get("KUBECONFIG")
        and "KUBERNETES_SERVICE_HOST" in os.environ
        and not (Path.home() / ".kube" / "config").exists()
    ):
        return load_incluster()
    return load_kubeconfig(kubeconfig, context)
