"""Shared set-up for the plugin's own tests."""

from __future__ import annotations

import pytest

# In-process pytester runs drop the modules they imported; scipy.stats (which the gate imports on
# first use) would then be imported again, and numpy >= 2.3 refuses to load its fft extension twice
# in one process. Importing it here keeps it loaded across those runs.
import scipy.stats  # noqa: F401


@pytest.fixture(autouse=True)
def _quiet_unrelated_plugins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs these tests start load every installed pytest plugin.

    Hypothesis, when installed, imports itself afresh at each in-process run's summary (~1.5 s a
    run); these tests never use it, so the runs they start block it. Set after pytester's own
    set-up, which clears PYTEST_ADDOPTS.
    """
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
