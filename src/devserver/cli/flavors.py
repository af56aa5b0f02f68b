"""`devctl flavors`: the hardware presets, with GPU and AWS filters."""

from __future__ import annotations

import click

from devserver.api.flavor import DevServerFlavor
from devserver.api.names import GPU_RESOURCE
from devserver.api.resources import FLAVORS
from devserver.cli.context import Devctl, pass_devctl
from devserver.cli.output import OUTPUT_OPTION, emit, items, table

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
GPU = GPU_RESOURCE


def gpus(flavor: DevServerFlavor) -> int:
    resources = flavor.spec.resources
    return int(resources.limits.get(GPU) or resources.requests.get(GPU) or 0)


@click.command()
@click.option("--gpu", "gpu_only", is_flag=True, help="Only flavors with GPUs.")
@click.option("--aws", "aws_only", is_flag=True, help="Only flavors pinned to an EC2 type.")
@OUTPUT_OPTION
@pass_devctl
def flavors(devctl: Devctl, gpu_only: bool, aws_only: bool, output: str) -> None:
    """List the flavors you can create dev servers with."""

    def go() -> None:
        client = devctl.client()
        found = (client.list_page(FLAVORS)).items
        if gpu_only:
            found = [f for f in found if gpus(f) > 0]
        if aws_only:
            found = [f for f in found if INSTANCE_TYPE in f.spec.node_selector]
        found.sort(key=lambda f: (gpus(f), f.spec.price_per_hour or 0, f.metadata.name))
        emit(output, lambda: items(found), lambda: render_flavors(found))

    devctl.run(go, what="list flavors")


def render_flavors(found: list[DevServerFlavor]) -> str:
    """`devctl flavors` for people: a row a flavor, as given; INVALID where the operator says so."""
    rows = []
    for f in found:
        res = f.spec.resources
        price = f.spec.price_per_hour
        rows.append(
            [
                f.metadata.name,
                res.requests.get("cpu", "-"),
                res.requests.get("memory", "-"),
                str(gpus(f)),
                f.spec.node_selector.get(INSTANCE_TYPE, "-"),
                f"{price:.2f}" if price is not None else "-",
                "" if not f.status or f.status.valid is not False else "INVALID",
                f.spec.description[:50],
            ]
        )
    headers = ["NAME", "CPU", "MEMORY", "GPU", "INSTANCE", "$/HOUR", "", "DESCRIPTION"]
    return table(rows, headers) if rows else "no flavors match"
