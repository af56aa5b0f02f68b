"""Informers on raw watch streams: the operator's shared, always-current cache.

`reflector` keeps a sink equal to the server through restarts, 410s and stalls; `store` holds
the objects with indexes; `informer` adds handler fan-out and resync; `factory` shares one
informer per resource and selector across controllers.
"""

from devserver.informers.factory import InformerFactory
from devserver.informers.informer import Change, Informer, Notification
from devserver.informers.reflector import Reflector, ReflectorOptions
from devserver.informers.store import NAMESPACE_INDEX, NAMESPACED, OWNED, OWNER_UID_INDEX, Store

__all__ = [
    "NAMESPACED",
    "NAMESPACE_INDEX",
    "OWNED",
    "OWNER_UID_INDEX",
    "Change",
    "Informer",
    "InformerFactory",
    "Notification",
    "Reflector",
    "ReflectorOptions",
    "Store",
]
