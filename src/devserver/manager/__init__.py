"""The Manager: what a process built on the controller core runs (controller-runtime's manager).

`app` holds the Manager (informers, runnables, leader election, health, shutdown); `runnable`
what it runs and whether that needs the leader; `leader` the Lease-based election. It knows no
reconciler: the operator (devserver.operator) and the bastion each add their own runnables.
`python -m devserver.manager` still starts the operator (__main__).
"""

from devserver.manager.app import Manager, Settings
from devserver.manager.leader import LeadershipLostError
from devserver.manager.runnable import ControllerRunnable, Runnable, RunnableFunc

__all__ = [
    "ControllerRunnable",
    "LeadershipLostError",
    "Manager",
    "Runnable",
    "RunnableFunc",
    "Settings",
]
