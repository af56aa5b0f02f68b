"""devctl's errors: one sentence saying what is wrong and what to do; exit status 1.

Usage mistakes (a bad option, a missing argument) are click's and exit 2.
"""

from __future__ import annotations

import click

from devserver.client import ApiError


class DevctlError(click.ClickException):
    exit_code = 1

    def format_message(self) -> str:
        return self.message

    def show(self, file: object = None) -> None:
        click.echo(f"devctl: {self.message}", err=True)


def from_api(error: ApiError, *, namespace: str, what: str = "", name: str = "") -> DevctlError:
    """Turn an API server refusal into one sentence with a hint."""
    if error.status == 0:
        return DevctlError(
            f"cannot reach the Kubernetes API server ({error.message or error.reason}); "
            "check your connection and kubeconfig (`devctl status`)."
        )
    if error.status == 401:
        return DevctlError(
            "your Kubernetes credentials were refused (expired?); log in to the bastion again "
            "to get fresh ones."
        )
    if error.status == 403:
        return DevctlError(
            f"you may not {what or 'do that'} in namespace {namespace}: devctl works in your own "
            "namespace (dev-<you>); check --namespace and `devctl test-k8s`."
        )
    if error.status == 404 and name:
        return DevctlError(
            f"there is no dev server named {name!r} in namespace {namespace}; see `devctl list`."
        )
    if error.status == 409:
        return DevctlError(
            f"a dev server named {name!r} already exists in {namespace}; pick another name or "
            f"see `devctl describe {name}`."
        )
    if error.status == 422:
        return DevctlError(f"the API server refused it: {error.message}")
    return DevctlError(error.message or f"the API server answered {error.status} {error.reason}")
