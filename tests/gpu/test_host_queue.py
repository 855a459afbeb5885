"""hal_gpu/host_queue.py on its own (no GPU): what it holds, launches and fails, with host
semaphores standing in for a device's."""

from __future__ import annotations

import threading

import fibergrid as fg
from hal_gpu.host_queue import HostQueue, wait_failure


class Sem:
    def __init__(self, value: int = 0, internal: bool = False) -> None:
        self.value, self.failure, self.internal = value, None, internal


def _queue(launched: list, finish_at_once: bool = False) -> HostQueue:
    def launch(held) -> bool:
        launched.append(held.work)
        if finish_at_once:  # a launch that completes at once signals now and may release others
            for s, x in held.signals:
                s.value = max(s.value, x)
        return finish_at_once

    return HostQueue(lambda s, x: s.value >= x, launch, changed=threading.Condition())


def test_a_submission_waits_until_its_waits_are_known() -> None:
    a, b, out = Sem(), Sem(), Sem()
    launched: list = []
    q = _queue(launched)
    with q.changed:
        q.hold("second", [(a, 1), (b, 2)], [(out, 1)])
        q.pump()
        assert launched == [] and len(q) == 1
        a.value, b.value = 1, 1
        q.pump()
        assert launched == [] and len(q) == 1  # b is not there yet
        b.value = 5
        q.pump()
        assert launched == ["second"] and not q


def test_a_launch_that_finishes_releases_what_waits_on_it_in_the_same_pump() -> None:
    a, link, out = Sem(), Sem(internal=True), Sem()
    launched: list = []
    q = _queue(launched, finish_at_once=True)
    with q.changed:
        q.hold("step 2", [(link, 1)], [(out, 1)])  # held ahead of its producer
        q.hold("step 1", [(a, 0)], [(link, 1)])
        q.pump()
    assert launched == ["step 1", "step 2"] and out.value == 1


def test_a_failed_wait_fails_the_signals_without_running() -> None:
    producer, link, out, other = Sem(), Sem(internal=True), Sem(), Sem()
    launched: list = []
    q = _queue(launched)
    with q.changed:
        q.hold("user", [(producer, 1)], [(out, 1), (other, 3)])
        q.hold("step", [(link, 1)], [(other, 2)])
        producer.failure = fg.Aborted("kernel 'k' returned status 3")
        link.failure = fg.Aborted("the step before failed")
        q.pump()
    assert launched == [] and not q
    assert "waited on" in str(out.failure) and "status 3" in str(out.failure) and out.failure is other.failure
    assert wait_failure(link) is link.failure  # a step's own link passes its failure on as it is


def test_fail_all_fails_every_held_submission() -> None:
    a, out = Sem(), Sem()
    q = _queue([])
    with q.changed:
        q.hold("w", [(a, 1)], [(out, 1)])
        q.fail_all(fg.Aborted("closed"))
    assert not q and str(out.failure) == "closed"
