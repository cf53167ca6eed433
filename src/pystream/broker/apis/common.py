"""Small helpers the admin API handlers share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def distinct(keys: Iterable[K]) -> Iterator[tuple[K, bool]]:
    """Each key once, in request order, with whether the request repeated it.

    Admin requests answer a repeated topic or resource once, with INVALID_REQUEST, and
    leave it alone (Kafka's rule); every other entry gets its own result.
    """
    keys = list(keys)
    counts = Counter(keys)
    seen: set[K] = set()
    for key in keys:
        if key not in seen:
            seen.add(key)
            yield key, counts[key] > 1
