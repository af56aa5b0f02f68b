"""Home volumes outlive their claims: the volume under a kept home is set to `Retain`.

Dynamic provisioning gives a volume its class's reclaim policy, usually `Delete`: when the claim
goes — an admin deletes the namespace, a script deletes the claim — the disk goes with it within
seconds. For a server that keeps its home (`retainHomeOnDelete`, the default), the operator sets
the bound volume's policy to `Retain` as soon as the claim is bound, so a deleted claim leaves a
Released volume with the data on it. It records what it did on the claim (an annotation users
cannot write: they only read claims), so a converged server costs no request.

A server that does not keep its home leaves its volume as the class made it. Deleting a user's
data on purpose (`devctl admin user remove --delete-homes`) sets the policy back to `Delete`
first.
"""

from __future__ import annotations

from devserver.api.devserver import DevServer
from devserver.api.meta import KubeObject
from devserver.api.names import RETAINED_VOLUME
from devserver.api.resources import PERSISTENT_VOLUME_CLAIMS, PERSISTENT_VOLUMES
from devserver.client import ApiError, KubeClient


def volume_of(claim: KubeObject) -> str | None:
    name = (claim.extra.get("spec") or {}).get("volumeName")
    return str(name) if name else None


async def retain_homes(client: KubeClient, ds: DevServer, claims: list[KubeObject]) -> None:
    """Set the volume of each bound home claim of `ds` to Retain, once."""
    if not ds.spec.retain_home_on_delete:
        return
    await _retain(client, claims)


async def retain_unowned_homes(client: KubeClient, claims: list[KubeObject]) -> None:
    """Homes kept after their server was deleted (made before the operator set Retain)."""
    await _retain(client, [c for c in claims if not c.metadata.owner_references])


async def _retain(client: KubeClient, claims: list[KubeObject]) -> None:
    for claim in claims:
        volume = volume_of(claim)
        if volume is None or claim.metadata.deletion_timestamp:
            continue
        if claim.metadata.annotations.get(RETAINED_VOLUME) == volume:
            continue
        patch = {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
        try:
            await client.patch(PERSISTENT_VOLUMES, volume, patch)
        except ApiError as error:
            if error.status != 404:
                raise
            continue
        mark = {"metadata": {"annotations": {RETAINED_VOLUME: volume}}}
        await client.patch(
            PERSISTENT_VOLUME_CLAIMS, claim.metadata.name, mark, claim.metadata.namespace
        )
