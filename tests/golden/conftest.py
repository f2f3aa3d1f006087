"""Shared pytest fixtures for the golden reference tests.

The real scrape fixtures live in shared/ beside the checkout and are never
copied into the repo: set INFERSCALE_SHARED to that folder (default
<repo>/../shared).  Tests that need them skip, saying where they looked.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402


def _skip_reason() -> str:
    return (
        f"shared fixtures not found at {reference.fixtures_dir()} "
        "(set INFERSCALE_SHARED to the shared/ folder holding fixtures/vllm and fixtures/dcgm)"
    )


@pytest.fixture(scope="session")
def fixtures_root() -> Path:
    d = reference.fixtures_dir()
    if not (d / "vllm").is_dir() or not (d / "dcgm").is_dir():
        pytest.skip(_skip_reason())
    return d


@pytest.fixture(scope="session")
def fixture_text(fixtures_root):
    def read(rel: str) -> str:
        p = fixtures_root / rel
        if not p.is_file():
            pytest.skip(f"fixture {rel} missing under {fixtures_root}")
        return p.read_text()

    return read


def all_fixture_params():
    """Parametrize over fixtures; one skipped param when shared/ is absent."""
    files = reference.fixture_files()
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=_skip_reason()), id="no-fixtures")]
    return [pytest.param(f, id=f"{f.parent.name}/{f.name}") for f in files]
