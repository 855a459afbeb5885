"""Profiling a whole program: `FIBERGRID_PROFILE=DIR python app.py` (what `fibergrid profile --
python app.py` sets up).

When the variable is set, `import fibergrid` calls `install()`, which:

- wraps every registered driver factory (and any registered later), so each device the program
  creates, however it creates it (`fg.create_device`, `fg.load(..., device="local-task")`,
  `hal.driver.create_device`), is traced from birth; a device closed early is captured as it
  closes;
- wraps `fibergrid.load`, so kernels of StableHLO models are named after their source ops;
- at interpreter exit, before the scheduler stops its workers (threading's exit hooks run newest
  first), captures every device still open and pickles the captures to DIR/PID.pkl for the
  `fibergrid profile` process to analyse.

Nothing here runs unless the variable is set: tracing stays off otherwise.
"""

from __future__ import annotations

import os
import pickle
import threading
import weakref
from typing import Any, Callable

from fibergrid.profile.collect import DEFAULT_CAPACITY, DeviceCapture, Recorder

ENV_VAR = "FIBERGRID_PROFILE"

_state: dict[str, Any] = {}


def _traced_factory(factory: Callable[..., Any], recorder: Recorder, captures: list[DeviceCapture]) -> Callable[..., Any]:
    def create(**options: Any) -> Any:
        device = factory(**options)
        recorder.attach(device, label=f"{device.driver}#{len(recorder.devices) + len(captures)} (pid {os.getpid()})")
        close = device.close

        def traced_close() -> None:
            if not device.closed:
                cap = recorder.take(device)
                if cap is not None:
                    captures.append(cap)
            close()

        device.close = traced_close
        return device

    return create


_loaded: "weakref.WeakKeyDictionary[Any, str | bytes]" = weakref.WeakKeyDictionary()  # module -> its source


def _traced_load(load: Callable[..., Any]) -> Callable[..., Any]:
    def traced(source: Any, device: Any = None, **kwargs: Any) -> Any:
        module = load(source, device, **kwargs)
        try:
            text = _source_text(module, source)
            if text is not None:
                _loaded[module] = text
                _name_kernels(module, text)
        except Exception:  # noqa: BLE001 — names are a nicety; the program must run regardless
            pass
        return module

    traced.__doc__, traced.__wrapped__ = load.__doc__, load  # type: ignore[attr-defined]
    return traced


def _source_text(module: Any, source: Any) -> str | bytes | None:
    text = module.program.source
    if text is None and isinstance(source, str) and "{" in source:
        text = source
    elif text is None and isinstance(source, (str, os.PathLike)) and not os.fspath(source).endswith(".fgx"):
        with open(source, "rb") as f:
            data = f.read()
        text = data if os.fspath(source).endswith(".onnx") else data.decode()
    return text


def _name_kernels(module: Any, text: str | bytes) -> None:
    """Registers names for every compiled signature of the module's functions: the static ones
    at load, those of functions with dynamic dims (compiled at their first call) at exit."""
    from fibergrid.profile.naming import register_sources, sources_of
    from fibergrid.profile.sources import kernel_sources

    for function in module.functions.values():
        compiled = []
        try:
            compiled.append(function.compiled)
        except Exception:  # noqa: BLE001 — dynamic dims: one compiled function per signature
            compiled += [p.compiled for p in list(getattr(function, "_prepared", {}).values())]
        for c in compiled:
            if c.kernels and not sources_of(c.executable):
                register_sources(c.executable, kernel_sources(text, c))


def _dump(out: str, recorder: Recorder, captures: list[DeviceCapture]) -> None:
    for module, text in list(_loaded.items()):
        try:
            _name_kernels(module, text)
        except Exception:  # noqa: BLE001
            pass
    for a in list(recorder.devices):
        if not a.device.closed:
            cap = recorder.take(a.device)
            if cap is not None:
                captures.append(cap)
    if not captures:
        return
    path = os.path.join(out, f"{os.getpid()}.pkl")
    try:
        with open(path + ".tmp", "wb") as f:
            pickle.dump(captures, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(path + ".tmp", path)
    except OSError as e:
        print(f"fibergrid: profile: cannot write {path}: {e.strerror or e}", flush=True)


def install() -> None:
    """Trace every device from now on and dump the captures at exit (idempotent)."""
    if _state:
        return
    out = os.environ.get(ENV_VAR, "")
    if not out or not os.path.isdir(out):
        return
    import fibergrid
    from hal import driver

    try:
        capacity = int(os.environ.get(f"{ENV_VAR}_CAPACITY", DEFAULT_CAPACITY))
    except ValueError:
        capacity = DEFAULT_CAPACITY
    recorder, captures = Recorder(capacity, host_timing=bool(os.environ.get(f"{ENV_VAR}_HOST_TIMING"))), []
    _state.update(recorder=recorder, captures=captures)
    for name, factory in list(driver._factories.items()):  # noqa: SLF001 — observe, never edit, the registry
        driver._factories[name] = _traced_factory(factory, recorder, captures)
    register = driver.register_driver

    def traced_register(name: str, factory: Callable[..., Any], available: Callable[[], bool] = lambda: True) -> None:
        register(name, _traced_factory(factory, recorder, captures), available)

    driver.register_driver = traced_register
    fibergrid.load = _traced_load(fibergrid.load)
    # threading's exit hooks run newest first: this one runs before the scheduler's, which
    # stops the workers (their CPU times are read while they still exist).
    threading._register_atexit(lambda: _dump(out, recorder, captures))  # type: ignore[attr-defined]
