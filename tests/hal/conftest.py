"""The HAL conformance suite runs once per driver in `fg.available_drivers()`.

Tests use only the public model (fibergrid / hal): a `device` fixture, fresh per test and closed
after, and the helpers in tests/hal/helpers.py. A new driver is done when this suite passes on it
unchanged.
"""

from __future__ import annotations

import pytest

import fibergrid as fg

# Per-driver creation options: the CPU task driver gets two workers so that work really runs
# concurrently on the 2-core CI machines; every other driver takes its defaults.
DRIVER_OPTIONS = {"local-task": {"workers": 2}}
DRIVERS = fg.available_drivers()


def make_device(driver: str):
    return fg.create_device(driver, **DRIVER_OPTIONS.get(driver, {}))


@pytest.fixture(params=DRIVERS)
def driver(request) -> str:
    return request.param


@pytest.fixture
def device(driver):
    dev = make_device(driver)
    try:
        yield dev
    finally:
        dev.close()
