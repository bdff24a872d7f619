"""Shared fixtures: the shipped splits, loaded once per session (tests must not modify them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from valuedetect.data import Split, load_split, shipped_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return shipped_data_dir()


@pytest.fixture(scope="session")
def training() -> Split:
    return load_split("training")


@pytest.fixture(scope="session")
def validation() -> Split:
    return load_split("validation", level1=True)


@pytest.fixture(scope="session")
def test_split() -> Split:
    return load_split("test")
