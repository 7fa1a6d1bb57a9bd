"""One KWS reference chain per test session for the demo tests (trained and converted for real)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo output directory whose reference/kws holds a freshly built chain."""
    from converters.reference.chain import build_reference_chain

    out = tmp_path_factory.mktemp("demo-out")
    build_reference_chain("kws", out / "reference" / "kws")
    return out


@pytest.fixture(scope="session")
def kws_chain(demo_out: Path) -> Path:
    return demo_out / "reference" / "kws"
