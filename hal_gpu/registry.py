"""What every GPU driver's registration shares: choosing a physical device from the `device`
option, the availability probe, and closing live devices at interpreter exit.

A driver module gives `GpuDriver` its name, a function listing its physical devices best first,
one naming a device, and its device class; `register()` puts it in hal's driver registry.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any, Callable, Sequence

from common.errors import InvalidArgument, Unavailable
from hal.driver import register_driver


class GpuDriver:
    def __init__(self, name: str, found: Callable[[], Sequence[Any]], name_of: Callable[[Any], str],
                 device_class: Callable[[], type], none_found: str, noun: str = "device") -> None:
        self.name, self._found, self._name_of, self._device_class = name, found, name_of, device_class
        self._none_found, self._noun = none_found, noun
        self._lock = threading.Lock()
        self._live: "weakref.WeakSet" = weakref.WeakSet()
        self._available: bool | None = None
        atexit.register(self._close_live_devices)

    def choose(self, device: int | str | None = None) -> Any:
        """The physical device for option `device`: an index into the best-first list, a
        substring of its name, or None for the best."""
        found = list(self._found())
        if not found:
            raise Unavailable(f"{self.name}: {self._none_found}")
        if device is None:
            return found[0]
        names = [self._name_of(p) for p in found]
        if isinstance(device, int):
            if not 0 <= device < len(found):
                raise InvalidArgument(f"{self.name}: {self._noun} index {device} out of range ({len(found)} {self._noun}s: {names})")
            return found[device]
        for p, name in zip(found, names):
            if str(device).lower() in name.lower():
                return p
        raise InvalidArgument(f"{self.name}: no {self._noun} named like {device!r} (have {names})")

    def available(self) -> bool:
        """Probed once per process; never raises: anything wrong means unavailable."""
        if self._available is None:
            try:
                self._available = bool(self._found())
            except Exception:  # noqa: BLE001 - a probe never raises
                self._available = False
        return self._available

    def create(self, device: int | str | None = None, **options: Any) -> Any:
        with self._lock:
            dev = self._device_class()(self.choose(device), **options)
            self._live.add(dev)
            return dev

    def _close_live_devices(self) -> None:
        """An interpreter that exits with GPU work in flight closes its devices first: parked
        work fails, running work finishes, then the device goes; freeing buffers or the device
        under running work (as finalizers at exit would) crashes drivers."""
        for dev in list(self._live):
            try:
                dev.close()
            except Exception:  # noqa: BLE001 - exit carries on whatever one device does
                pass

    def register(self) -> None:
        register_driver(self.name, self.create, self.available)
