"""The driver registry: drivers register a factory here; hal never imports a driver itself."""

from __future__ import annotations

from typing import Callable

from common.errors import Unavailable

_factories: dict[str, Callable[..., object]] = {}
_probes: dict[str, Callable[[], bool]] = {}


def register_driver(name: str, factory: Callable[..., object], available: Callable[[], bool] = lambda: True) -> None:
    _factories[name] = factory
    _probes[name] = available


def available_drivers() -> list[str]:
    """Registered drivers that can create a device on this machine."""
    return [name for name in _factories if _probes[name]()]


def create_device(name: str, **options):
    if name not in _factories:
        raise Unavailable(f"no driver named '{name}' (registered: {sorted(_factories)})")
    if not _probes[name]():
        raise Unavailable(f"driver '{name}' is registered but cannot run on this machine")
    return _factories[name](**options)
