"""City.department_of: the department an approver belongs to (config/ names a person once)."""

from __future__ import annotations

from coordinator.city import load_city
from coordinator.settings import Settings
from tests.conftest import FIXTURE_MAP


def test_an_approver_has_one_department_and_a_duty_officer_none() -> None:
    """An approver maps to their one department; a duty officer or unknown person to None."""
    city = load_city(Settings().config_dir, FIXTURE_MAP)
    found = city.department_of("nguyen-van-an")
    assert found is not None and found.id == "construction"
    health = city.department_of("vu-thi-lan")
    assert health is not None and health.id == "health"
    assert city.department_of("tran-thi-mai") is None  # a duty officer approves nothing
    assert city.department_of("nobody") is None
