"""Failure that stays contained: a runaway kernel cannot hang interpreter exit (bounded shutdown,
with a warning), a call that times out raises DeadlineExceeded and the device stays usable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fibergrid as fg

REPO = Path(__file__).resolve().parents[2]

RUNAWAY = textwrap.dedent("""
    import numpy as np
    import fibergrid as fg

    @fg.kernel(workgroup_size=1, bindings=(np.int64,), constants=(np.uint32,))
    def busy(wg, flag, iters):
        flag[1] = 1  # inside the kernel
        x = flag[0] + 1
        for _ in range(iters):  # 2**62 steps: a kernel that never returns
            for _ in range(iters):
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        flag[0] = x

    dev = fg.create_device("local-task", workers=1)
    flag = dev.allocator.import_array(np.zeros(2, np.int64))
    host = flag.buffer.view(np.int64, (2,))
    cb = dev.create_command_buffer()
    cb.dispatch(busy, "busy", 1, [np.uint32(1 << 31)], [flag])
    cb.end()
    dev.queue_execute([cb])
    while host[1] == 0:
        pass
    print("RUNNING", flush=True)
""")


def test_runaway_kernel_does_not_hang_interpreter_exit(tmp_path):
    script = tmp_path / "runaway.py"
    script.write_text(RUNAWAY)
    env = dict(os.environ, PYTHONPATH=str(REPO), FIBERGRID_SHUTDOWN_TIMEOUT="0.5")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert "RUNNING" in proc.stdout, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "fibergrid-worker-0 still running a kernel 0.5 s after shutdown began" in proc.stderr, proc.stderr


@fg.kernel(workgroup_size=1, bindings=(np.int64,), constants=(np.uint32,))
def occupy(wg, flag, iters):
    flag[1] = 1
    x = flag[0] + 1
    for _ in range(iters):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    flag[0] = x


def start_occupying(dev) -> None:
    """Queues `occupy` for a few seconds of work and returns once a worker is inside it."""
    flag = dev.allocator.import_array(np.zeros(2, np.int64))
    host = flag.buffer.view(np.int64, (2,))
    cb = dev.create_command_buffer()
    cb.dispatch(occupy, "occupy", 1, [np.uint32(2_000_000_000)], [flag])
    cb.end()
    dev.queue_execute([cb])
    while host[1] == 0:
        pass


def test_close_with_a_long_kernel_returns_and_warns():
    """shutdown() is bounded the same way; the device's memory stays valid for the kernel, which
    then finishes and its worker exits."""
    dev = fg.create_device("local-task", workers=1)
    start_occupying(dev)
    with pytest.warns(RuntimeWarning, match="still running a kernel"):
        assert dev.scheduler.shutdown(timeout=0.1) is False
    dev.scheduler.threads[0].join(120)
    assert not dev.scheduler.threads[0].is_alive()


def test_call_timeout_raises_and_leaves_the_device_usable():
    """A call that cannot finish in time (here: the device's one participant slot is taken by a
    long kernel) raises DeadlineExceeded; once the device is free the same module calls work.
    The timeout bounds waiting: a call whose own thread is running its kernels finishes them."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [64]) for x in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    a, b = np.arange(64, dtype=np.float32), np.ones(64, np.float32)
    with fg.create_device("local-task", workers=1) as dev:
        module = fg.load(model, device=dev, timeout=0.05)
        np.testing.assert_array_equal(module(a, b), a + b)
        start_occupying(dev)
        with pytest.raises(fg.DeadlineExceeded):
            module(a, b)
        dev.wait_idle(timeout=120)
        np.testing.assert_array_equal(module(a, b), a + b)
        np.testing.assert_array_equal(module(b, a), a + b)
