"""One handler per API key: the registry the broker dispatches on.

Handlers live in the package that owns their domain (Produce/Fetch in
``broker``, admin APIs in ``cluster``, groups in ``groups`` ...) and mark
themselves with :func:`api_handler`.  The broker collects them with
:func:`collect_handlers`, and ApiVersions advertises exactly what was
collected — never an API that has no handler (librdkafka calls every API it
sees listed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .messages import API_SPECS

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class HandlerSpec:
    """The handler of one API key and the versions it implements."""

    api_key: int
    min_version: int
    max_version: int
    func: Handler

    @property
    def name(self) -> str:
        return API_SPECS[self.api_key].name


def api_handler(api_key: int, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    """Mark ``func`` as the handler of ``api_key`` for versions min..max (inclusive)."""
    spec = API_SPECS[api_key]
    valid = spec.valid_versions
    if not (min_version <= max_version and min_version in valid and max_version in valid):
        raise ValueError(
            f"{spec.name} handler versions {min_version}..{max_version} are outside the "
            f"spec's {spec.valid_versions}"
        )

    def mark(func: Handler) -> Handler:
        func.api_handler_spec = HandlerSpec(api_key, min_version, max_version, func)  # type: ignore[attr-defined]
        return func

    return mark


def collect_handlers(modules: Iterable[ModuleType]) -> dict[int, HandlerSpec]:
    """Every marked handler in ``modules`` by api key; two handlers for one key is an error."""
    handlers: dict[int, HandlerSpec] = {}
    for module in modules:
        for value in vars(module).values():
            spec = getattr(value, "api_handler_spec", None)
            if not isinstance(spec, HandlerSpec) or spec.func is not value:
                continue
            existing = handlers.get(spec.api_key)
            if existing is not None and existing.func is not value:
                raise ValueError(f"two handlers for {spec.name}: {existing.func} and {value}")
            handlers[spec.api_key] = spec
    return handlers
