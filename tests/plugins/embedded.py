"""Throwaway embedded PostgreSQL and Redis for a test run with DATABASE_URL/REDIS_URL unset.

Loaded with ``-p tests.plugins.embedded`` (pyproject's addopts); run pytest as ``python -m pytest`` from the
checkout (as ``./dev test`` does) so that ``tests`` is importable that early. Settings start nothing, so the servers
must run before pytest-django reads them: this hook wraps ``pytest_load_initial_conftests``, where pytest-django sets
Django up, starts the servers in a temporary folder and exports their URLs to this process (and so to the servers
and workers the tests start). The folder and the servers go away when pytest ends, also when the set-up fails.
Their Redis runs without persistence (``durable=False``; the folder is deleted anyway); the one ``./dev up`` starts
keeps an append-only file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from maas import embedded

_root_key = pytest.StashKey[Path]()


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        return (yield)
    root = Path(tempfile.mkdtemp(prefix="maas-test-"))
    early_config.stash[_root_key] = root
    try:
        embedded.start(root, durable=False).export()
        return (yield)
    except BaseException:
        embedded.stop(root, delete=True)
        raise


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_root_key, None)
    if root is not None:
        embedded.stop(root, delete=True)
