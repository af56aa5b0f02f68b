"""The garbage collector, set for a process that holds a cache: many objects, made at a rate.

CPython's cyclic collector runs its youngest generation every 700 new container objects and,
as the heap grows, walks everything in the oldest one. A start decodes every cached object
(~90,000 at 10,000 servers, each a few pydantic models and dicts), so with those defaults it
collected ~650 times to list 2,000 servers, and its full collections walked the whole cache:
~10 % of the start's CPU, growing with N. The objects made at import (modules, classes, the
models' schemas) live as long as the process: frozen, no collection walks them again. Cycles
are rare in what the cache holds (packed bytes, frozen models), so the young generation is
collected every 50,000 new objects instead: with 2,000 servers, 3 collections instead of 650
and the same RSS (measured with the restart bench, see tests/bench/README.md).
"""

from __future__ import annotations

import gc

YOUNG_COLLECTED_EVERY = 50_000  # new container objects; CPython's default is 700


def settle() -> None:
    """Freeze what exists now (call it once everything is imported) and collect the young
    generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTED_EVERY, middle, old)
