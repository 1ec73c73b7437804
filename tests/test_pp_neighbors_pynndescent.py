"""pynndescent candidate search; its own file because numba compiles pynndescent's search first (~30-60 s)."""

from __future__ import annotations

import pytest

from .test_pp_neighbors_approx import check_against_exact


@pytest.mark.slow
def test_pynndescent_search_matches_exact():
    check_against_exact("pynndescent")
