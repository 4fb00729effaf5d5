"""Fault injection with real processes (the short form of `python -m bench.chaos`).

Each scenario runs Mosquitto, central, the Modbus simulator and the gateway as processes,
injects its fault, lets everything settle and checks: stored == produced - evicted -
expired (- what a corrupt outbox file still held), evictions only where a bound forced
them, and no reading stored twice. Clock jumps use libfaketime on the gateway process only
(the machine's clock is never touched); tests/test_time.py covers the clock logic itself.
"""

from __future__ import annotations

import pytest

from bench import chaos

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", list(chaos.SCENARIOS))
def test_fault_scenario_loses_nothing(scenario):
    report = chaos.run(scenario, quick=True)
    assert report.ok, f"{report.scenario}: {report.problems} ({report})"
    assert report.produced > 0 and report.stored > 0
    assert report.stored_twice == 0
    if scenario == "disk_full":
        assert report.evicted > 0  # the bound was reached and forced eviction, counted
    else:
        assert report.evicted == 0
    if scenario == "corrupt":
        assert report.lost_to_corruption > 0  # what the ruined file held, and only that
    else:
        assert report.lost_to_corruption == 0
