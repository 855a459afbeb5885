"""Executables from PTX: a CUmodule (the driver compiles the PTX for the GPU when it loads it)
and one CUfunction per entry point, looked up at load time so recording a dispatch looks up
nothing."""

from __future__ import annotations

import re
import weakref
from dataclasses import replace

from common.errors import InvalidArgument
from hal.executable import EntryPoint, Executable
from hal_gpu.cuda.driver import check, cu, make_current


def _release(device, module) -> None:
    try:
        make_current(device.context)
        cu().cuModuleUnload(module)
    except Exception:  # noqa: BLE001 - a finalizer never raises
        pass


def load(device, format: str, data: bytes, entry_points: tuple[EntryPoint, ...]) -> Executable:
    if not isinstance(data, (bytes, bytearray)) or b".entry" not in bytes(data[:1 << 20]):
        raise InvalidArgument(f"cuda: executable data for '{format}' is not PTX text with kernels")
    image = bytes(data) if bytes(data).endswith(b"\0") else bytes(data) + b"\0"
    device.enter()
    d = cu()
    module = check(d.cuModuleLoadData(image), "cuModuleLoadData (the PTX did not load)")
    functions = []
    try:
        for ep in entry_points:
            functions.append(check(d.cuModuleGetFunction(module, ep.name.encode()), f"no kernel named '{ep.name}' in the PTX"))
    except BaseException:
        _release(device, module)
        raise
    entries = tuple(replace(ep, function=i) for i, ep in enumerate(entry_points))
    exe = Executable(entries, format, keepalive=module)
    exe.functions = functions  # type: ignore[attr-defined]
    exe.written = written(image.decode(errors="replace"), entry_points)  # type: ignore[attr-defined]
    weakref.finalize(exe, _release, device, module).atexit = False
    return exe


_ENTRY = re.compile(r"\.entry\s+([\w$]+)\s*\(([^)]*)\)\s*\{(.*?)\n\}", re.S)
_REG = re.compile(r"%\w+")
_WRITES = ("st.", "atom.", "red.")


def written(ptx: str, entry_points) -> tuple[tuple[bool, ...], ...]:
    """Per entry point, per parameter (its bindings, then its dispatch state): whether the kernel
    may store through it. The dispatch state's flag says whether the kernel can fail (it reports
    a failure only by storing its status there, hal/ptx_abi.py): a step ends only after a region
    with such a dispatch (command_buffer.py), so kernels that never fail cost no host round
    trip. A binding's flag says whether a submission must copy that range of a host-visible
    buffer back to its mirror. Registers derived from a parameter are followed through
    arithmetic (not through loads: no buffer holds pointers); anything this scan does not
    follow (a call, an unknown kernel) counts as written."""
    bodies = {m.group(1): m.group(3) for m in _ENTRY.finditer(ptx)}
    out = []
    for ep in entry_points:
        count = ep.binding_count + 1
        if ep.name not in bodies:
            out.append((True,) * count)
            continue
        lines = [line.strip().rstrip(";") for line in bodies[ep.name].splitlines()]
        calls = any(line.startswith("call") for line in lines)
        out.append(tuple(calls or _stores_through(lines, f"[{ep.name}_param_{i}]") for i in range(count)))
    return tuple(out)


def _stores_through(lines: list[str], param: str) -> bool:
    tainted: set[str] = set()
    changed = True
    while changed:  # to a fixed point: loops carry registers backwards
        changed = False
        for line in lines:
            regs = _REG.findall(line)
            if not regs or line.startswith(_WRITES):
                continue
            source = param in line if line.startswith("ld.param") else not line.startswith("ld.") and any(r in tainted for r in regs[1:])
            if source and regs[0] not in tainted:
                tainted.add(regs[0])
                changed = True
    for line in lines:
        if line.startswith(_WRITES):
            address = re.search(r"\[([^\]]*)\]", line)
            if address is None or any(r in tainted for r in _REG.findall(address.group(1))):
                return True
    return False
