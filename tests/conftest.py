"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

import pytest

from data.synthetic import GeneratorConfig
from data.writers import write_dataset

SMALL = GeneratorConfig(lots=4, wafers_per_lot=2, seed=7)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> str:
    """4 lots x 2 wafers (about 5,000 dies) in the columnar format."""
    out = str(tmp_path_factory.mktemp("dataset"))
    write_dataset(SMALL, out)
    return out
