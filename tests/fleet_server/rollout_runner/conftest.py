"""Rollout-runner fixtures (the fleet-server conftest above gives db_url, app, client, tokens)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fleet_server.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # runner_support


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """As the fleet-server fixture, without the embedded runner thread: tests drive ticks themselves."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        page_size_max=100,
        max_tags_per_device=8,
        device_credential_iterations=1000,
        rollout_runner_enabled=False,
    )
