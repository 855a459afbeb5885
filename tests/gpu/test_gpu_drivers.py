"""What every GPU driver does the same way, run once per driver present: choosing a device by
index or name (hal_gpu/registry.py), refusing a bad executable blob and an impossible
allocation by name, and `fibergrid compile --target D` then `run --device D` on a JAX model."""

from __future__ import annotations

import numpy as np
import pytest

import fibergrid as fg
from compiler import executable
from hal import ptx_abi, spirv_abi

jax = pytest.importorskip("jax")
jnp = jax.numpy

# driver -> (what it calls a device, its executable format, a blob it must refuse and why, a size it cannot allocate)
GPU_DRIVERS = {
    "vulkan": ("device", spirv_abi.FORMAT, None, 1 << 60),
    "cuda": ("device", ptx_abi.FORMAT, (b"\x03\x02\x23\x07", "not PTX"), 1 << 50),
    "webgpu": ("adapter", spirv_abi.FORMAT, (b"\x00\x01\x02\x03", "not a SPIR-V module"), 1 << 60),
}


@pytest.fixture(params=sorted(GPU_DRIVERS))
def driver(request) -> str:
    if request.param not in fg.available_drivers():
        pytest.skip(f"no {request.param} device here")
    return request.param


def test_device_choice_errors_name_the_devices(driver) -> None:
    noun, fmt, bad_blob, too_big = GPU_DRIVERS[driver]
    with pytest.raises(fg.InvalidArgument, match=f"{noun} index 99 out of range"):
        fg.create_device(driver, device=99)
    with pytest.raises(fg.InvalidArgument, match=f"no {noun} named like 'no-such-gpu'"):
        fg.create_device(driver, device="no-such-gpu")
    with fg.create_device(driver, device=0) as dev:
        with pytest.raises(fg.ResourceExhausted):
            dev.allocator.allocate_buffer(too_big)
        if bad_blob is not None:
            with pytest.raises(fg.InvalidArgument, match=bad_blob[1]):
                dev.create_executable(fmt, bad_blob[0], ())
    with pytest.raises(fg.FailedPrecondition, match="closed"):
        dev.create_semaphore(0)


def test_cli_compile_for_the_driver_and_run(driver, tmp_path, capsys) -> None:
    from fibergrid import cli

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    source = tmp_path / "m.mlir"
    source.write_text(jax.jit(lambda x, w: jax.nn.softmax(jnp.tanh(x @ w))).lower(np.ones((2, 3), np.float32), w).as_text())
    np.save(tmp_path / "w.npy", w)
    assert cli.main(["drivers"]) == 0
    assert f"{driver} (" in capsys.readouterr().out
    out = tmp_path / "m.fgx"
    assert cli.main(["compile", str(source), "-o", str(out), "--target", driver]) == 0
    program = executable.load(out)
    assert [v.format for v in next(iter(program.functions["main"].specializations.values())).variants] == [GPU_DRIVERS[driver][1]]
    assert cli.main(["run", str(out), "--device", driver, "--input", "2x3xf32=1", "--input", f"@{tmp_path / 'w.npy'}"]) == 0
    want = np.asarray(jax.nn.softmax(jnp.tanh(np.ones((2, 3), np.float32) @ w)))
    printed = capsys.readouterr().out
    assert printed.startswith("result[0]: 2x4xf32=") and f"{want[0, 0]:.6f}" in printed
