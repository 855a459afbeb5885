"""Which CPUs an actor's device runs on.

Ray gives an actor a number of CPUs (`num_cpus=K`) but not which ones: every actor on a node
has the node's whole affinity. Pinning K workers round-robin over that affinity (what
`create_device(..., pin=True)` does) would put the first worker of every actor on the same
CPU. So actors on one node *claim* CPUs: one lock file per CPU under the temp directory, taken
with `flock`, which the kernel drops when the process dies, so a killed actor's CPUs are free
for its restart. An actor that gets K CPUs narrows its thread's affinity to them before
creating the device (the device's workers inherit it and pin within it); one that cannot (more
actors than CPUs, no flock) runs unpinned, and the OS places its threads.
"""

from __future__ import annotations

import os
import tempfile

_held: list[int] = []  # open lock-file descriptors: the claims live as long as the process


def claim(count: int, directory: str | None = None) -> list[int] | None:
    """Claims `count` CPUs of this thread's affinity for this process; None when not possible."""
    if count < 1 or not hasattr(os, "sched_getaffinity"):
        return None
    try:
        import fcntl
    except ImportError:
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if count > len(cpus):
        return None
    directory = directory or os.path.join(tempfile.gettempdir(), f"fibergrid-cpus-{os.getuid()}")
    got: list[tuple[int, int]] = []
    try:
        os.makedirs(directory, exist_ok=True)
        for cpu in cpus:
            fd = os.open(os.path.join(directory, f"cpu{cpu}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            got.append((cpu, fd))
            if len(got) == count:
                break
    except OSError:
        pass
    if len(got) < count:
        for _, fd in got:
            os.close(fd)
        return None
    _held.extend(fd for _, fd in got)
    return [cpu for cpu, _ in got]


def actor_device(workers: int, pin: bool = True):
    """A local-task device of `workers` workers, pinned to CPUs claimed for this process where
    it can claim them. Returns (device, the CPUs or None)."""
    import fibergrid as fg

    cpus = claim(workers) if pin else None
    if cpus is not None:
        os.sched_setaffinity(0, cpus)  # this thread; the device's worker threads inherit it
    return fg.create_device("local-task", workers=workers, pin=cpus is not None), cpus
