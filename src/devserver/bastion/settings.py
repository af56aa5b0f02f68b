"""What a bastion replica is configured with (flags of `devserver-bastion`, defaults for a pod)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUNTIME_DIR = Path("/run/devserver-bastion")
USERS_GROUP = "devserver-users"


@dataclass(frozen=True)
class BastionSettings:
    kubeconfig: str | None = None
    # Where the bastion's own sshd listens; the NLB forwards port 22 here.
    listen: str = "0.0.0.0"  # noqa: S104 - the pod IP, behind the load balancer
    port: int = 22
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and Prometheus reach the pod IP
    http_port: int = 8080
    sshd: str = "/usr/sbin/sshd"
    privsep_dir: Path = Path("/run/sshd")  # Debian's sshd chroots its pre-auth child here
    # Root-owned and not writable by others: sshd refuses an AuthorizedKeysCommand otherwise.
    runtime_dir: Path = RUNTIME_DIR
    # Host keys are shared by all replicas (a Secret), or clients behind the NLB see them change.
    host_key_dir: Path | None = None
    users_group: str = USERS_GROUP
    # uids are derived from DevUser names into this range (uids.py); below 2^31, far above the
    # image's own accounts and useradd's automatic range
    uid_min: int = 200000
    uid_max: int = 1999999999
    home_root: Path = Path("/home")
    # who last held each uid (root-only; on the /home volume, so it outlives a container)
    owners_dir: Path = Path("/home/.devserver-owners")
    # world-writable places whose files of a removed user are purged (accounts.py)
    shared_dirs: tuple[Path, ...] = (
        Path("/tmp"),  # noqa: S108 - purged of a uid's files, not used for our own
        Path("/var/tmp"),  # noqa: S108
        Path("/dev/shm"),  # noqa: S108 - POSIX shared memory and semaphores
        Path("/dev/mqueue"),  # POSIX message queues (the IPC namespace's mqueue filesystem)
        Path("/run/lock"),
    )
    shell: str = "/bin/bash"
    # Tokens written into ~/.kube/config: lifetime, and how long before expiry they are renewed.
    token_lifetime: int = 3600
    token_refresh_margin: int = 600
    # What users' kubeconfigs point at; by default what this bastion itself talks to.
    api_server: str | None = None
    ca_file: str | None = None
    # sshd: unauthenticated connections in all (start:rate:full), and per source address block
    # (PerSourceMaxStartups / PerSourceNetBlockSize, OpenSSH >= 8.5): one address that floods
    # the bastion with half-open logins uses up its own share, not everyone's
    max_startups: str = "200:30:500"
    per_source_max_startups: int = 10
    per_source_net_block_size: str = "32:64"  # an IPv6 /64 is one client
    # the session agent mints at most `token_burst` tokens at once per uid, then one every
    # 60 / token_rate_per_minute seconds (a token bucket per uid)
    token_burst: int = 20
    token_rate_per_minute: float = 12.0
    # The address users reach the bastion at (the NLB's DNS name): `devctl ssh-config` uses it.
    public_address: str = ""
    log_json: bool = True
    motd: str = (
        "devserver bastion: your Kubernetes credentials are in ~/.kube/config "
        "(namespace dev-{user}, renewed while you are logged in).\n"
        "Start with `devctl list` or `devctl create mydev --flavor cpu-small --time 4h`.\n"
        "This host is a gateway: keep your work on your dev server, its home is persistent.\n"
    )

    @property
    def keys_dir(self) -> Path:
        return self.runtime_dir / "keys"

    @property
    def agent_socket(self) -> Path:
        return self.runtime_dir / "agent.sock"

    @property
    def synced_marker(self) -> Path:
        return self.runtime_dir / "synced"

    @property
    def sshd_config(self) -> Path:
        return self.runtime_dir / "sshd_config"

    @property
    def host_keys(self) -> Path:
        return self.host_key_dir or self.runtime_dir / "hostkeys"
