"""devserver activity agent: runs inside every dev pod and tells the operator whether it is used.

Shipped by the operator in the pod's `<name>-scripts` ConfigMap and started by its entrypoint
next to the main process. Standard library only (Python >= 3.8): it runs in the user's image.

Every few seconds it looks at the pod's processes (/proc) and, where `nvidia-smi` exists, the
GPUs. The pod is **active** when any of these holds:

- a session is open: a `kubectl exec`/`devctl ssh` session (a process whose parent is outside
  the container) or an SSH connection (an `sshd: user@...` process);
- user processes use CPU (above a threshold, in cores, over the last sample);
- a GPU is busy (utilisation above a threshold);
- a user process is still running: anything but shells, terminal multiplexers, `sleep`, sshd
  and this agent — so a `nohup`/`tmux` training run with nobody connected counts, while a
  forgotten idle tmux with a shell in it does not.

It writes what it saw to the DevServer's Lease (the only object its ServiceAccount may touch):
`spec.renewTime` proves it is alive, the annotation `devservers.io/idle-since` says since when
nothing happened (absent while active), `devservers.io/activity` says what it saw. It writes at
once when the pod turns active or idle, else once per renew period. The operator stops a server
only on a fresh Lease that says idle: a dead agent never gets a server stopped for idleness.

It also reads the pod's annotations through a downward-API volume: when the operator sets the
`devservers.io/notice` annotation (a stop is coming), the agent writes the notice into every
open terminal of the pod, once per distinct notice.

With SSH on, it keeps the file sshd reads the user's keys from (`DEVSERVER_SSH_KEYS_FILE`) in
step with the `devserver-ssh-keys` ConfigMap the operator writes from the DevUser: a key
removed there stops working within a sample; a user removed (the ConfigMap gone) leaves none.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

IDLE_SINCE = "devservers.io/idle-since"
ACTIVITY = "devservers.io/activity"
NOTICE = "devservers.io/notice"
STOP_AT = "devservers.io/stop-at"  # with a notice: when the stop is due (RFC 3339)
SSH_KEYS = "devserver-ssh-keys"  # the user's public keys, a ConfigMap in their namespace
KEYS_SECONDS = 10.0  # how often they are read (not every second before a stop)
KEYS_TRUSTED_SECONDS = 300.0  # unreadable this long: no key is admitted any more
FINAL_SECONDS = 90  # before a due stop, sample every second: a late session must be seen

# Programs whose mere presence is not work: shells, multiplexers, pagers, the main `sleep`.
IDLE_COMMANDS = frozenset(
    {
        "bash",
        "sh",
        "dash",
        "zsh",
        "fish",
        "ksh",
        "tcsh",
        "csh",
        "tmux",
        "tmux: server",
        "tmux: client",
        "screen",
        "SCREEN",
        "sleep",
        "sshd",
        "sshd-session",
        "ssh-agent",
        "tini",
        "dumb-init",
        "less",
        "more",
        "cat",
        "tail",
        "login",
        "su",
        "sudo",
    }
)
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class Proc:
    __slots__ = ("cmdline", "comm", "pid", "ppid", "ticks")

    def __init__(self, pid: int, ppid: int, comm: str, ticks: int, cmdline: str) -> None:
        self.pid, self.ppid, self.comm, self.ticks, self.cmdline = pid, ppid, comm, ticks, cmdline

    def __repr__(self) -> str:
        return f"Proc({self.pid}, ppid={self.ppid}, {self.comm!r})"


def read_processes(proc: str = "/proc") -> list[Proc]:
    """Every process under `proc`; ticks = user + system CPU including reaped children."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(os.path.join(proc, entry, "cmdline"), "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # it exited meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue  # finished, waiting to be reaped (sleep as PID 1 never reaps): not work
        # fields[0] is state (field 3); utime..cstime are fields 14..17
        ticks = sum(int(x) for x in fields[11:15])
        found.append(Proc(int(entry), int(fields[1]), comm, ticks, cmdline))
    return found


def scope(processes: list[Proc], root: int | None) -> tuple[list[Proc], int]:
    """The pod's processes and the pid their top-level processes have as parent.

    In the pod (root None) that is every process, with parent 0. Run locally against a real
    API server (tests), `root` plays the container runtime: only its descendants count."""
    if root is None:
        return processes, 0
    children: dict[int, list[Proc]] = {}
    for p in processes:
        children.setdefault(p.ppid, []).append(p)
    inside, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            inside.append(child)
            todo.append(child.pid)
    return inside, root


def own_pids(processes: list[Proc], me: int) -> set[int]:
    """This agent and whatever it started (nvidia-smi)."""
    mine, grew = {me}, True
    while grew:
        grew = False
        for p in processes:
            if p.ppid in mine and p.pid not in mine:
                mine.add(p.pid)
                grew = True
    return mine


def sessions(processes: list[Proc], top_parent: int, main: int, me: set[int]) -> list[str]:
    found = []
    for p in processes:
        if p.pid in me or p.pid == main:
            continue
        if p.ppid == top_parent:
            found.append(f"exec:{p.comm}")
        elif p.comm in ("sshd", "sshd-session") and "@" in p.cmdline:
            found.append(p.cmdline.split(":", 1)[-1].strip())
    return found


def user_processes(processes: list[Proc], main: int, me: set[int]) -> list[str]:
    return sorted(
        {
            p.comm
            for p in processes
            if p.pid not in me and p.pid != main and p.comm not in IDLE_COMMANDS
        }
    )


def cpu_cores(before: dict[int, int], now: dict[int, int], seconds: float, hz: int) -> float:
    """CPU used between two samples, in cores; a new process counts all its ticks."""
    used = sum(max(0, ticks - before.get(pid, 0)) for pid, ticks in now.items())
    return used / hz / seconds if seconds > 0 else 0.0


def gpu_utilisation() -> float | None:
    """The busiest GPU's utilisation in percent; None without nvidia-smi or on error."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return max(values) if values else None


class Sample:
    def __init__(
        self,
        sessions: list[str],
        processes: list[str],
        cpu: float,
        gpu: float | None,
        cpu_threshold: float,
        gpu_threshold: float,
    ) -> None:
        self.sessions, self.processes, self.cpu, self.gpu = sessions, processes, cpu, gpu
        self.reasons = []
        if sessions:
            self.reasons.append("sessions")
        if processes:
            self.reasons.append("processes")
        if cpu >= cpu_threshold:
            self.reasons.append("cpu")
        if gpu is not None and gpu >= gpu_threshold:
            self.reasons.append("gpu")

    @property
    def active(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        gpu = "-" if self.gpu is None else f"{self.gpu:.0f}%"
        text = (
            f"{'active (' + ','.join(self.reasons) + ')' if self.active else 'idle'}; "
            f"sessions={len(self.sessions)} cpu={self.cpu:.2f} gpu={gpu} "
            f"processes={','.join(self.processes[:5]) or '-'}"
        )
        return text[:250]


def parse_downward(text: str) -> dict[str, str]:
    """The kubelet's downward-API annotations file: `key="value"` lines, Go-quoted values."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value.strip('"')
    return found


def write_terminals(pattern: str, message: str) -> int:
    """Write `message` into every terminal matching `pattern`, as `wall` would; count them."""
    reached = 0
    text = "\r\n" + message.replace("\n", "\r\n") + "\r\n"
    for path in sorted(glob.glob(pattern)):
        if path.endswith("ptmx"):
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, text.encode())
            reached += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return reached


# `timezone.utc`, not `datetime.UTC`: that name is Python 3.11+, and images carry older ones
_UTC = timezone.utc  # noqa: UP017


def parse_time(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 UTC time such as 2026-11-26T12:00:00Z, else None."""
    try:
        when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return when.replace(tzinfo=_UTC).timestamp()


def sleep_for(interval: float, stop_at: float | None, now: float) -> float:
    """The usual interval, but every second in the last moments before an announced stop, so
    a session opened then is reported before the operator decides."""
    if stop_at is not None and -30 <= stop_at - now <= FINAL_SECONDS:
        return min(interval, 1.0)
    return interval


def utc_now() -> str:
    return datetime.now(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.now(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseWriter:
    """Merge-patches one Lease with the pod's ServiceAccount token (re-read: it rotates), and
    reads the user's SSH keys: the only two objects that token may touch."""

    def __init__(self, api: str, namespace: str, name: str, token_file: str, ca_file: str) -> None:
        url = urlsplit(api)
        self.host, self.port = url.hostname or "", url.port or 443
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        # resourceVersion=0: served from the API server's cache, not a quorum read of etcd
        self.keys_path = f"/api/v1/namespaces/{namespace}/configmaps/{SSH_KEYS}?resourceVersion=0"
        self.token_file = token_file
        self.context = ssl.create_default_context(cafile=ca_file if ca_file else None)

    def patch(self, body: dict[str, object]) -> int:
        return self.request("PATCH", self.path, json.dumps(body))[0]

    def ssh_keys(self) -> str | None:
        """The user's authorized_keys; "" when the object is gone (the user was removed), None
        when the API server could not say (the keys in place stay until it can)."""
        status, data = self.request("GET", self.keys_path)
        if status == 404:
            return ""
        if status != 200:
            return None
        return str((json.loads(data).get("data") or {}).get("authorized_keys", ""))

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        with open(self.token_file) as f:
            token = f.read().strip()
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=15)
        try:
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/merge-patch+json"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def write_keys(path: str, keys: str) -> bool:
    """Replace the authorized_keys file sshd reads (at once: a rename); True if it changed."""
    try:
        with open(path) as f:
            if f.read() == keys:
                return False
    except OSError:
        pass
    temporary = f"{path}.new"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys)
    os.replace(temporary, path)
    return True


def log(**fields: object) -> None:
    sys.stdout.write(
        json.dumps({"agent": "devserver-activity", "time": utc_now(), **fields}) + "\n"
    )
    sys.stdout.flush()


class Agent:
    def __init__(self, env: dict[str, str]) -> None:
        host = env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"  # an IPv6 cluster
        self.writer = LeaseWriter(
            env.get("DEVSERVER_API", f"https://{host}:{port}"),
            env.get("DEVSERVER_NAMESPACE", ""),
            env["DEVSERVER_LEASE"],
            env.get("DEVSERVER_TOKEN_FILE", f"{SERVICE_ACCOUNT}/token"),
            env.get("DEVSERVER_CA_FILE", f"{SERVICE_ACCOUNT}/ca.crt"),
        )
        self.identity = env.get("DEVSERVER_POD") or os.uname().nodename
        self.proc = env.get("DEVSERVER_PROC", "/proc")
        root = env.get("DEVSERVER_SCOPE_ROOT")
        self.root = int(root) if root else None
        self.podinfo = env.get("DEVSERVER_PODINFO", "/etc/devserver/podinfo/annotations")
        self.terminals = env.get("DEVSERVER_TERMINALS", "/dev/pts/[0-9]*")
        self.interval = float(env.get("DEVSERVER_SAMPLE_SECONDS", "10"))
        self.renew = float(env.get("DEVSERVER_RENEW_SECONDS", "60"))
        self.cpu_threshold = float(env.get("DEVSERVER_CPU_THRESHOLD", "0.05"))
        self.gpu_threshold = float(env.get("DEVSERVER_GPU_THRESHOLD", "5"))
        self.hz = os.sysconf("SC_CLK_TCK")
        self.me = os.getpid()
        self.main = os.getppid()  # the entrypoint exec'd the main process: our parent
        self.idle_since: str | None = utc_now()  # nothing has happened yet
        self.written: tuple[str | None, float] | None = None  # (idle-since, when) last written
        self.ticks: dict[int, int] = {}
        self.sampled = time.monotonic()
        self.noticed = ""
        self.last_status = 0
        self.stop_at: float | None = None  # epoch seconds of a stop the operator announced
        # where sshd reads the user's keys (set when the server has SSH): kept in step with
        # the user's DevUser every sample, so a removed key stops working within seconds
        self.keys_file = env.get("DEVSERVER_SSH_KEYS_FILE", "")
        self.keys_every = float(env.get("DEVSERVER_SSH_KEYS_SECONDS", KEYS_SECONDS))
        self.keys_read = 0.0  # monotonic time of the last attempt
        self.keys_known = time.monotonic()  # ... and of the last answer (200 or 404)

    def sample(self) -> Sample:
        everything = read_processes(self.proc)
        pod, top = scope(everything, self.root)
        me = own_pids(everything, self.me)
        ticks = {p.pid: p.ticks for p in pod if p.pid not in me}
        now = time.monotonic()
        cpu = cpu_cores(self.ticks, ticks, now - self.sampled, self.hz) if self.ticks else 0.0
        self.ticks, self.sampled = ticks, now
        return Sample(
            sessions(pod, top, self.main, me),
            user_processes(pod, self.main, me),
            cpu,
            gpu_utilisation(),
            self.cpu_threshold,
            self.gpu_threshold,
        )

    def step(self) -> None:
        sample = self.sample()
        if sample.active:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = utc_now()
        changed = self.written is None or self.written[0] != self.idle_since
        due = self.written is None or time.monotonic() - self.written[1] >= self.renew
        if changed or due:
            body = {
                "metadata": {
                    "annotations": {IDLE_SINCE: self.idle_since, ACTIVITY: sample.summary()}
                },
                "spec": {
                    "holderIdentity": self.identity,
                    "renewTime": micro_now(),
                    "leaseDurationSeconds": int(self.renew * 3),
                },
            }
            status = self.writer.patch(body)
            if status < 300:
                self.written = (self.idle_since, time.monotonic())
            if changed or status != self.last_status:
                log(event="lease written", status=status, activity=sample.summary())
            self.last_status = status

    def notify(self) -> None:
        try:
            with open(self.podinfo) as f:
                annotations = parse_downward(f.read())
        except OSError:
            return
        notice = annotations.get(NOTICE, "")
        self.stop_at = parse_time(annotations.get(STOP_AT, ""))
        if notice and notice != self.noticed:
            reached = write_terminals(self.terminals, f"*** devserver: {notice} ***")
            log(event="notice shown", terminals=reached, notice=notice)
        self.noticed = notice

    def sync_keys(self) -> None:
        now = time.monotonic()
        if not self.keys_file or now - self.keys_read < self.keys_every:
            return
        self.keys_read = now
        keys: str | None = None
        try:
            keys = self.writer.ssh_keys()
        finally:
            if keys is not None:
                self.keys_known = now
            elif now - self.keys_known > KEYS_TRUSTED_SECONDS and write_keys(self.keys_file, ""):
                # fail closed: keys that cannot be confirmed for a while are no longer
                # admitted (the Role gone, SSH turned off, the API server unreachable)
                log(event="ssh keys withdrawn", reason="unconfirmed for 5 minutes")
        if keys is not None and write_keys(self.keys_file, keys):
            log(event="ssh keys written", keys=len(keys.splitlines()))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        log(event="started", lease=self.writer.path, interval=self.interval)
        failed = ""
        while True:
            # a failed report must not hide a notice, nor keep a removed key
            for part in (self.sync_keys, self.step, self.notify):
                try:
                    part()
                except Exception as error:  # noqa: BLE001 - the agent must outlive any failure
                    text = f"{type(error).__name__}: {error}"
                    if text != failed:  # once per distinct failure, not every 10 s
                        log(event="step failed", error=text)
                    failed = text
            time.sleep(sleep_for(self.interval, self.stop_at, time.time()))


if __name__ == "__main__":
    Agent(dict(os.environ)).run()
