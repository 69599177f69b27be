"""Every test runs in a fresh temporary working folder, so that nothing the README's commands leave
in the checkout (the demo's ``spex-ray-output/``) is read, and nothing a test writes by a relative
path lands in the checkout. Tests name repository files by absolute paths built from ``ROOT``."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_working_folder(tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def needs_shared(name: str) -> Path:
    """The path of ``../shared/data/NAME``; skips the calling test when it is absent (a clone
    without ``../shared`` beside it)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data, beside the checkout); absent here")
    return path
