"""The pytest fixtures: `hub_server` (an empty Hub and cache per test) and `hub_offline`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from .environment import hub_environment, hub_offline_mode
from .http import HubServer

# --------------------------------------------------------------------------------------------------------------------
# Pytest fixtures.
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def hub_server(tmp_path: Path) -> Iterator[HubServer]:
    """A fresh, empty local Hub for one test; huggingface_hub uses it (and its token) with a cache under tmp_path.

    At teardown, fails the test if the server crashed on a request or if anything tried to reach another host.
    """
    with HubServer() as server, hub_environment(server, tmp_path / "hf_home"):
        yield server
    assert not server.foreign_requests, f"requests left the local Hub: {server.foreign_requests}"
    assert not server.errors, "HubServer crashed on a request:\n" + "\n".join(server.errors)


@pytest.fixture
def hub_offline(hub_server: HubServer) -> Callable[[], AbstractContextManager[None]]:
    """The `hub_offline_mode` context manager, for tests that first fill the cache online, then go offline."""
    return hub_offline_mode
