"""Which job owns which unit: disjoint, covering, and unit ranges as a person would write them."""

from __future__ import annotations

import pytest

from snactok.inputs.units import Unit, job_units, owner
from snactok.tools.merge import _ranges


@pytest.mark.parametrize("num_units", [1, 7, 8, 50])
@pytest.mark.parametrize("num_jobs", [1, 2, 3, 8])
def test_jobs_take_disjoint_units_that_cover_the_dataset(num_units, num_jobs):
    units = [Unit(i, 0, i, i, i + 1, f"u{i}") for i in range(num_units)]
    taken = [u.index for j in range(num_jobs) for u in job_units(units, num_jobs, j)]
    assert sorted(taken) == list(range(num_units))  # each exactly once
    for j in range(num_jobs):
        assert all(owner(u.index, num_jobs) == j for u in job_units(units, num_jobs, j))
    sizes = [len(job_units(units, num_jobs, j)) for j in range(num_jobs)]
    assert max(sizes) - min(sizes) <= 1


def test_unit_ranges_read_as_a_person_would_write_them():
    assert _ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert _ranges([4]) == "4"
