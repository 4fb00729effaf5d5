"""rain-gauge's own tests: what is particular to this device, beyond the shared contract.

Collected by pytest through `testpaths` (hardware/sensors); run alone with
`pytest hardware/sensors/rain-gauge`.
"""

from __future__ import annotations

import pytest

from drivers.modbus.codec import encode_point
from drivers.modbus.planner import plan_reads
from drivers.registry import get_driver
from drivers.sim.scenario import sample_rng, values_at


def test_block_reads_are_off_one_request_per_value() -> None:
    profile = get_driver("rain-gauge").profile()
    plan = plan_reads(profile)
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("discrete", 0, 1),
        ("discrete", 1, 1),
        ("input", 0, 2),
        ("input", 2, 1),
        ("input", 3, 2),
    ]
    assert all(len(r.points) == 1 for r in plan)


def test_accumulation_is_low_word_first_and_tips_high_word_first() -> None:
    profile = get_driver("rain-gauge").profile()
    assert encode_point(profile.point("rain_acc"), 6553.7) == [1, 1]  # 65537 counts: CDAB
    assert encode_point(profile.point("tips"), 65537) == [1, 1]
    assert encode_point(profile.point("rain_acc"), 0.1) == [1, 0]
    assert encode_point(profile.point("tips"), 1) == [0, 1]


@pytest.mark.parametrize("t", [0.0, 17.5, 35.0, 48.0, 70.0])
def test_tips_follow_the_accumulation_at_0_2_mm_per_tip(t: float) -> None:
    device = get_driver("rain-gauge").scenario().device("gauge-1")
    values = values_at(device, t, sample_rng(0, device.id, t))
    assert values["tips"] == pytest.approx(float(values["rain_acc"]) / 0.2 + 3100)
