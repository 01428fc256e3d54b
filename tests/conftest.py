"""Session-wide test settings."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Disk caches (the Radon matrices) go to a temporary folder, not the user's cache."""
    old = os.environ.get("LIPINVERSE_CACHE_DIR")
    os.environ["LIPINVERSE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("LIPINVERSE_CACHE_DIR", None)
    else:
        os.environ["LIPINVERSE_CACHE_DIR"] = old
