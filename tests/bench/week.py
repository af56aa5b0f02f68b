"""A simulated week of 100 ML users on GPU dev servers: GPU-hours held with lifecycle on vs off.

Time runs in one-minute steps from Monday 00:00 UTC for 7 days. Each user owns one dev server
on a GPU flavor (prices and GPU counts from manifests/flavors/defaults.yaml) and follows one of
four made-up patterns, drawn with a fixed seed:

- **day worker** (45%): weekdays, arrives 08:00-10:00, leaves 16:30-18:30; half the days they
  disconnect over lunch; on 25% of evenings they leave VS Code connected overnight (the session
  stays open until the next morning: an open session is activity, so this is held, honestly);
  20% of them also work 1-2 h on Saturday. CPU busy in about a quarter of connected minutes.
- **trainer** (25%): a day worker who, on three weekdays, starts a 6-16 h training run with
  `nohup` as they leave and disconnects. The run keeps CPU and GPU busy with nobody connected.
- **forgetful** (15%): uses the server Monday 10:00-13:00, then forgets it for the week.
- **occasional** (15%): one or two 20-60 min sessions per weekday at random times.

Servers are created at first use and never deleted. Policies compared:

- **off**: nothing stops a server.
- **devserver**: our lifecycle — the agent's activity (sessions, user processes, CPU, GPU;
  `podagent.agent.Sample`) and the operator's stop decision (`api.lifecycle.next_stop`, on a
  fresh Lease) with `idleTimeout`; the user runs `devctl start` when they come back to a stopped
  server.
- **cpu-only** and **sessions-only**: how simpler cullers decide (CPU load alone, like
  notebook cullers watching kernels; open SSH sessions alone, like SkyPilot's autostop), with
  the same timeout — to show what they interrupt.

An *interruption* is a stop while the user's work is live: a session open or a run running.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from devserver.api.devserver import DevServer, DevServerStatus
from devserver.api.lifecycle import Activity, next_stop
from devserver.podagent.agent import Sample

WEEK_START = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
MINUTES = 7 * 24 * 60
FLAVORS = {  # name: (GPUs, USD per hour), as in manifests/flavors/defaults.yaml
    "gpu-small": (1, 0.526),
    "gpu-medium": (1, 1.006),
    "gpu-v100": (1, 3.06),
    "gpu-large": (8, 32.77),
}
FLAVOR_MIX = [("gpu-small", 40), ("gpu-medium", 30), ("gpu-v100", 22), ("gpu-large", 8)]
PATTERNS = [("day worker", 45), ("trainer", 25), ("forgetful", 15), ("occasional", 15)]


@dataclass
class Timeline:
    """Ground truth for one user, minute by minute."""

    connected: bytearray = field(default_factory=lambda: bytearray(MINUTES))
    running: bytearray = field(default_factory=lambda: bytearray(MINUTES))  # a nohup'd run
    busy: bytearray = field(default_factory=lambda: bytearray(MINUTES))  # CPU load by the user

    def connect(self, start: int, end: int) -> None:
        for m in range(max(0, start), min(MINUTES, end)):
            self.connected[m] = 1

    def run(self, start: int, end: int) -> None:
        for m in range(max(0, start), min(MINUTES, end)):
            self.running[m] = 1


@dataclass
class User:
    name: str
    pattern: str
    flavor: str
    timeline: Timeline


def _day(d: int, hour: float) -> int:
    return int(d * 1440 + hour * 60)


def make_users(count: int = 100, seed: int = 7) -> list[User]:
    rnd = random.Random(seed)  # noqa: S311 - a reproducible simulation, not secrets
    users = []
    for i in range(count):
        pattern = rnd.choices([p for p, _ in PATTERNS], [w for _, w in PATTERNS])[0]
        flavor = rnd.choices([f for f, _ in FLAVOR_MIX], [w for _, w in FLAVOR_MIX])[0]
        t = Timeline()
        if pattern in ("day worker", "trainer"):
            run_days = set(rnd.sample(range(5), 3)) if pattern == "trainer" else set()
            for d in range(5):
                arrive, leave = rnd.uniform(8, 10), rnd.uniform(16.5, 18.5)
                if rnd.random() < 0.5:  # disconnects over lunch
                    t.connect(_day(d, arrive), _day(d, 12))
                    t.connect(_day(d, 13), _day(d, leave))
                else:
                    t.connect(_day(d, arrive), _day(d, leave))
                if rnd.random() < 0.25:  # VS Code left connected overnight
                    t.connect(_day(d, leave), _day(d + 1, 8))
                if d in run_days:
                    t.run(_day(d, leave), _day(d, leave + rnd.uniform(6, 16)))
            if rnd.random() < 0.2:
                start = rnd.uniform(10, 16)
                t.connect(_day(5, start), _day(5, start + rnd.uniform(1, 2)))
        elif pattern == "forgetful":
            t.connect(_day(0, 10), _day(0, 13))
        else:
            for d in range(5):
                for _ in range(rnd.choice((1, 2))):
                    start = rnd.uniform(9, 18)
                    t.connect(_day(d, start), _day(d, start + rnd.uniform(1 / 3, 1)))
        for m in range(MINUTES):
            if t.running[m] or (t.connected[m] and rnd.random() < 0.25):
                t.busy[m] = 1
        users.append(User(f"user{i:03d}", pattern, flavor, t))
    return users


def _devserver(user: User, idle_timeout: int, started: datetime) -> DevServer:
    return DevServer.model_validate(
        {
            "apiVersion": "devservers.io/v1",
            "kind": "DevServer",
            "metadata": {
                "name": user.name,
                "namespace": f"dev-{user.name}",
                "creationTimestamp": started.isoformat(),
            },
            "status": {"lastStart": started.isoformat()},
            "spec": {
                "owner": user.name,
                "flavor": user.flavor,
                "image": "pytorch/pytorch:2.5.1",
                "lifecycle": {"idleTimeout": idle_timeout},
            },
        }
    )


def measured_active(policy: str, t: Timeline, m: int) -> bool:
    """What each policy sees as activity at minute m (ours: the agent's own Sample)."""
    sessions = ["ssh"] if t.connected[m] else []
    processes = ["python"] if t.running[m] else []
    cpu = 1.0 if t.busy[m] else 0.0
    gpu = 90.0 if t.running[m] else 0.0
    if policy == "cpu-only":
        return cpu >= 0.05
    if policy == "sessions-only":
        return bool(sessions)
    return Sample(sessions, processes, cpu, gpu, cpu_threshold=0.05, gpu_threshold=5).active


@dataclass
class Outcome:
    policy: str
    gpu_hours_held: float = 0.0
    gpu_hours_live: float = 0.0  # held while the user's work was live
    cost: float = 0.0
    stops: int = 0
    starts: int = 0  # `devctl start` on coming back to a stopped server
    interruptions: int = 0  # stops while a session was open or a run was running
    interrupted_users: set[str] = field(default_factory=set)


def simulate(users: list[User], policy: str, idle_timeout: int = 3600) -> Outcome:
    out = Outcome(policy)
    max_lifetime = timedelta(days=7)
    for user in users:
        gpus, price = FLAVORS[user.flavor]
        t = user.timeline
        first = next((m for m in range(MINUTES) if t.connected[m]), None)
        if first is None:
            continue
        created = WEEK_START + timedelta(minutes=first)
        running = True
        idle_since: datetime | None = created
        ds = _devserver(user, idle_timeout, created)
        for m in range(first, MINUTES):
            now = WEEK_START + timedelta(minutes=m)
            live = bool(t.connected[m] or t.running[m])
            if not running and t.connected[m]:
                running, idle_since = True, now  # `devctl start`; the agent starts idle
                ds = ds.model_copy(update={"status": DevServerStatus(lastStart=now)})
                out.starts += 1
            if not running:
                continue
            out.gpu_hours_held += gpus / 60
            out.cost += price / 60
            if live:
                out.gpu_hours_live += gpus / 60
            if policy == "off":
                continue
            if measured_active(policy, t, m):
                idle_since = None
            elif idle_since is None:
                idle_since = now
            report = Activity(now, now + timedelta(minutes=3), idle_since, "")
            stop = next_stop(ds, report, max_lifetime, now)
            if stop is not None and now >= stop.when:
                running = False
                out.stops += 1
                if live:
                    out.interruptions += 1
                    out.interrupted_users.add(user.name)
    return out


def run_week(idle_timeout: int = 3600, seed: int = 7) -> tuple[list[User], list[Outcome]]:
    """The users, and each policy's week: off, ours, then the two simpler cullers."""
    users = make_users(seed=seed)
    policies = ("off", "devserver", "cpu-only", "sessions-only")
    return users, [simulate(users, p, idle_timeout) for p in policies]


def report(idle_timeout: int = 3600, seed: int = 7) -> list[str]:
    users, results = run_week(idle_timeout, seed)
    mix = {p: sum(1 for u in users if u.pattern == p) for p, _ in PATTERNS}
    off = results[0]
    lines = [
        f"a simulated week: {len(users)} users ("
        + ", ".join(f"{n} {p}" for p, n in mix.items())
        + f"), idle timeout {idle_timeout // 60} min",
        f"{'policy':<14}{'GPU-h held':>11}{'vs off':>8}{'GPU-h live':>11}{'cost USD':>10}"
        f"{'stops':>7}{'starts':>7}{'interrupted':>12}",
    ]
    for r in results:
        change = "-" if r is off else f"{100 * (r.gpu_hours_held / off.gpu_hours_held - 1):+.1f}%"
        lines.append(
            f"{r.policy:<14}{r.gpu_hours_held:>11.0f}{change:>8}{r.gpu_hours_live:>11.0f}"
            f"{r.cost:>10.0f}{r.stops:>7}{r.starts:>7}"
            f"{r.interruptions:>6} ({len(r.interrupted_users)} users)"
        )
    return lines


if __name__ == "__main__":
    import sys

    for line in report(int(sys.argv[1]) if len(sys.argv) > 1 else 3600):
        sys.stdout.write(line + "\n")
