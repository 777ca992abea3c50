"""The capacity estimator against an independent physics implementation: PyBaMM DFN cells (Chen2020,
LG M50) of known, fading capacity (tests/health_cases/pybamm, made by `make health-validate`;
docs/battery-health.md, "Validation"). With the cell's own OCV table the estimate is within 4 % and
within 2 stated σ; with the chemistry's typical table it is far off, which is why a pack model's own
table is worth configuring."""

from __future__ import annotations

import pytest

from health.validation.check import check_all


def test_capacity_within_4_percent_of_pybamm_with_the_cells_own_ocv_table() -> None:
    results = check_all(own_ocv=True)
    assert [r.case for r in results] == ["aged25", "fresh", "lam30", "lli10"]
    for r in results:
        assert r.estimate.capacity_estimates >= 2, r.case
        assert abs(r.error_pct) < 4.0, (r.case, r.error_pct)
        assert abs(r.estimate.capacity_ah - r.true_capacity_ah) < 2 * r.estimate.capacity_sigma_ah, r.case
    # The fade is seen: the aged cells measure below the fresh one, in the true order.
    measured = {r.case: r.estimate.capacity_ah for r in results}
    assert measured["aged25"] < measured["lli10"] < measured["fresh"]


def test_the_typical_table_is_the_largest_error_source() -> None:
    for r in check_all(own_ocv=False):
        assert r.error_pct == pytest.approx(-15, abs=7), (r.case, r.error_pct)
