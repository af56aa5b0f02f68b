"""The bastion's own series, registered only in the processes that import this (the bastion):
the operator's /metrics does not show them at zero.

Logins are sshd's own account (`bastion.sshd_log`), tokens and sessions the session agent's.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LOGIN_OUTCOMES = ("accepted", "rejected", "unknown_user")
BASTION_LOGINS = Counter(
    "devserver_bastion_logins_total",
    "SSH connections, from sshd's log: accepted, rejected (no key accepted), unknown_user",
    ("outcome",),
)
TOKEN_OUTCOMES = ("issued", "rate_limited", "failed")
BASTION_TOKEN_REQUESTS = Counter(
    "devserver_bastion_token_requests_total",
    "Kubernetes credentials asked for by sessions, by outcome",
    ("outcome",),
)
BASTION_CONNECTIONS = Gauge("devserver_bastion_connections_open", "SSH connections logged in")
BASTION_SESSIONS = Gauge(
    "devserver_bastion_sessions_open", "Sessions (shells and commands) running through the bastion"
)
BASTION_LOGIN_SECONDS = Histogram(
    "devserver_bastion_login_duration_seconds",
    "From sshd accepting a key to the session holding its Kubernetes credentials",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
for _outcome in LOGIN_OUTCOMES:
    BASTION_LOGINS.labels(outcome=_outcome)
for _outcome in TOKEN_OUTCOMES:
    BASTION_TOKEN_REQUESTS.labels(outcome=_outcome)
