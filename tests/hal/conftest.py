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


# Where the vulkan driver does not yet meet the model (each an open item of issue 8), the case
# is an expected failure on vulkan only, so the rest of the suite guards it and a fix shows up
# as XPASS.
VULKAN_GAPS: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        if "vulkan" in (callspec.params.get("driver"), callspec.params.get("driver_name")):
            reason = VULKAN_GAPS.get(item.originalname)
            if reason:
                item.add_marker(pytest.mark.xfail(reason=f"vulkan: {reason}", strict=False))
