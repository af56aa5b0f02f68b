"""Every label, annotation and field manager devserver writes: the one place each is named.

Annotations use the API group's domain, `devservers.io/`. The labels below, and the flavor
annotation on pod templates, still use `devserver.io/`: they are in Deployment and StatefulSet
selectors and pod templates, which cannot change without replacing a running server's pod (a
selector is immutable; a template change restarts the pod). Their move to `devservers.io/` is
a migration of its own (new servers on the new keys, running ones kept on theirs until they
are next replaced) and is not done yet. The in-pod agent (`podagent`, standard library only)
keeps its own copies of its four annotations; a unit test holds them equal to these.
"""

from __future__ import annotations

DOMAIN = "devservers.io"
LEGACY_LABEL_DOMAIN = "devserver.io"  # see above: selectors and templates made with it

# ------------------------------------------------------------------ who writes

OPERATOR = "devserver-operator"  # field manager, Event source, Lease, managed-by
FIELD_MANAGER = OPERATOR
MANAGED_BY = {"app.kubernetes.io/managed-by": OPERATOR}

# ------------------------------------------------------------------ labels (selectors)

NAME_LABEL = f"{LEGACY_LABEL_DOMAIN}/name"  # the DevServer an object belongs to
USER_LABEL = f"{LEGACY_LABEL_DOMAIN}/user"  # the user (DevUser, or a server's owner)
COMPONENT_LABEL = f"{LEGACY_LABEL_DOMAIN}/component"  # e.g. the agent's scripts ConfigMap
CREATED_BY_LABEL = f"{LEGACY_LABEL_DOMAIN}/created-by"  # a user's namespace and its objects
FLAVOR_ANNOTATION = f"{LEGACY_LABEL_DOMAIN}/flavor"  # on pod templates: the flavor they run

# ------------------------------------------------------------------ annotations

# on a DevServer: its lifecycle, written by the operator (and devctl for extensions)
STOP_REASON = f"{DOMAIN}/stop-reason"
STARTED_AT = f"{DOMAIN}/started-at"  # written by devctl before 0.2; read once, clamped
WARNED = f"{DOMAIN}/warned"
LAST_EXTENSION = f"{DOMAIN}/last-extension"
RETENTION = f"{DOMAIN}/retention"  # "kept": past retention, but deleting would take the home
# on the activity agent's Lease: what it saw
IDLE_SINCE = f"{DOMAIN}/idle-since"
ACTIVITY = f"{DOMAIN}/activity"
# on the pod, written by the operator, read by the agent through the downward API
NOTICE = f"{DOMAIN}/notice"
STOP_AT = f"{DOMAIN}/stop-at"  # beside the notice: the agent samples faster as it nears
# on a pod template: a digest of what the pod is made from
POD_INPUTS = f"{DOMAIN}/pod-inputs"
# on a kept home's claim: its volume was set to Retain
RETAINED_VOLUME = f"{DOMAIN}/retained-volume"
# on a removed user's namespace: when they were removed
USER_REMOVED_ANNOTATION = f"{DOMAIN}/user-removed"
