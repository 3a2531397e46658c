"""Pointing huggingface_hub (and transformers / datasets) at a `HubServer`."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .http import HubServer

# --------------------------------------------------------------------------------------------------------------------
# Pointing huggingface_hub (and transformers / datasets) at a HubServer.
#
# Pitfall: `huggingface_hub.constants` reads HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE, ... once, at import, and other
# objects copied values at import too. Setting environment variables alone is therefore not enough once
# huggingface_hub is imported (pytest plugins or transformers may import it first): the copies are patched as well.
# --------------------------------------------------------------------------------------------------------------------

_MODULES_CACHE: str | None = None


def _process_modules_cache() -> str:
    """One HF_MODULES_CACHE (where transformers copies remote code to import it) per process, removed at exit.

    Not one per test: transformers appends the folder to sys.path for good and keeps `transformers_modules`
    imported from the first one, so per-test folders would pile up sys.path entries to deleted folders.
    """
    global _MODULES_CACHE
    if _MODULES_CACHE is None:
        _MODULES_CACHE = tempfile.mkdtemp(prefix="hub-server-modules-")
        atexit.register(shutil.rmtree, _MODULES_CACHE, True)
    return _MODULES_CACHE


def _set_env(mp: pytest.MonkeyPatch, server: HubServer, hf_home: Path) -> None:
    """Environment variables, for code that reads them at call time and for libraries imported later."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGING_FACE_HUB_TOKEN",
                 "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE",
                 "HUGGINGFACE_CO_STAGING", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        mp.delenv(name, raising=False)
    mp.setenv("HF_ENDPOINT", server.endpoint)
    mp.setenv("HF_TOKEN", server.token)
    mp.setenv("HF_HOME", str(hf_home))
    mp.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    mp.setenv("HF_ASSETS_CACHE", str(hf_home / "assets"))
    mp.setenv("HF_XET_CACHE", str(hf_home / "xet"))
    mp.setenv("HF_TOKEN_PATH", str(hf_home / "token"))
    mp.setenv("HF_MODULES_CACHE", _process_modules_cache())
    mp.setenv("HF_HUB_DISABLE_XET", "1")
    mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # A proxy from the environment must not swallow requests to the local server.
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), server.host, "localhost"]))
    mp.setenv("NO_PROXY", no_proxy)
    mp.setenv("no_proxy", no_proxy)


def _patch_hub_constants(mp: pytest.MonkeyPatch, server: HubServer, hf_home: Path) -> None:
    """`huggingface_hub.constants`, which was computed from the environment at import."""
    from huggingface_hub import constants

    values: dict[str, Any] = {
        "ENDPOINT": server.endpoint,
        # Built from ENDPOINT at import; hf_hub_url() formats it, so downloads would still go to huggingface.co.
        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        # Hosts whose urls parse as Hub urls (RepoUrl, CommitInfo, hf:// conversions).
        "HF_URL_HOSTS": frozenset(getattr(constants, "HF_URL_HOSTS", frozenset()) | {server.host}),
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(hf_home / ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
        # hf_xet is installed: with Xet enabled, uploads would go to a Xet CAS service this server does not have.
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
    }
    for name, value in values.items():
        if hasattr(constants, name):  # tolerate huggingface_hub versions without some of them
            mp.setattr(constants, name, value)


def _patch_import_time_copies(mp: pytest.MonkeyPatch, server: HubServer) -> None:
    """Objects that copied the endpoint (or cache paths) when their module was imported."""
    from huggingface_hub import hf_api
    from huggingface_hub.utils import _http

    # `huggingface_hub.create_repo`, `upload_folder`, ... are bound methods of this module-level HfApi(), whose
    # `endpoint` was fixed at import. (A new `HfApi()` reads constants.ENDPOINT, patched above.)
    mp.setattr(hf_api.api, "endpoint", server.endpoint)
    # Origins allowed to receive the token when following redirects.
    if hasattr(_http, "_HUB_ORIGINS"):
        mp.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(server.endpoint)})
    # The user-agent builder fetches an "agent harnesses" registry from the Hub once per process: pin it empty.
    detect_agent = sys.modules.get("huggingface_hub.utils._detect_agent")
    if detect_agent is not None and hasattr(detect_agent, "_registry"):
        mp.setattr(detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    # `from ..constants import X` copies, in modules loaded so far (cache scanning, git credentials, CLI login).
    for module_name, name, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", os.environ["HF_HUB_CACHE"]),
        ("huggingface_hub.utils._git_credential", "ENDPOINT", server.endpoint),
        ("huggingface_hub.cli.auth", "ENDPOINT", server.endpoint),
    ):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, name):
            mp.setattr(module, name, value)
    _patch_transformers(mp)
    _patch_datasets(mp, server)


def _patch_transformers(mp: pytest.MonkeyPatch) -> None:
    """transformers keeps a shared HfApi (built on first use, with the endpoint of that time) and HF_MODULES_CACHE."""
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        mp.setattr(transformers_hub, "_hf_api", None)  # rebuilt on next use, from the patched constants
    for module_name in ("transformers.utils.hub", "transformers.utils", "transformers.dynamic_module_utils",
                        "transformers.file_utils"):
        module = sys.modules.get(module_name)
        if module is not None and "HF_MODULES_CACHE" in vars(module):
            mp.setattr(module, "HF_MODULES_CACHE", _process_modules_cache())
    # (No offline flag to patch: transformers asks huggingface_hub.is_offline_mode(), i.e. constants.HF_HUB_OFFLINE.)


def _patch_datasets(mp: pytest.MonkeyPatch, server: HubServer) -> None:
    """`datasets.config` copies HF_ENDPOINT and the offline flag at import (only patched if already imported)."""
    config = sys.modules.get("datasets.config")
    if config is None:
        return
    mp.setattr(config, "HF_ENDPOINT", server.endpoint, raising=False)
    mp.setattr(config, "HUB_DATASETS_URL", server.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
               raising=False)
    mp.setattr(config, "HF_HUB_OFFLINE", False, raising=False)


def _install_local_only_guard(mp: pytest.MonkeyPatch, server: HubServer) -> None:
    """Make huggingface_hub's shared HTTP client refuse (and record) any request not addressed to `server`."""
    from huggingface_hub.utils import _http

    port = int(server.endpoint.rsplit(":", 1)[1])
    default_factory = _http._GLOBAL_CLIENT_FACTORY

    def refuse_foreign_hosts(request: Any) -> None:
        if (request.url.host, request.url.port) != (server.host, port):
            server.foreign_requests.append(f"{request.method} {request.url}")
            raise RuntimeError(f"HubServer guard: refused a request outside the local Hub: {request.method} "
                               f"{request.url}")

    def guarded_client_factory() -> Any:
        client = default_factory()
        client.event_hooks = {**client.event_hooks, "request": [refuse_foreign_hosts, *client.event_hooks["request"]]}
        return client

    mp.setattr(_http, "_GLOBAL_CLIENT_FACTORY", guarded_client_factory)
    _http.close_session()  # the next get_session() builds a guarded client (proxy settings re-read as well)


@contextmanager
def hub_environment(server: HubServer, hf_home: str | os.PathLike[str]) -> Iterator[HubServer]:
    """Within the block, huggingface_hub (and transformers) talk to `server` only, with a private cache.

    Sets HF_ENDPOINT / HF_TOKEN / HF_HOME / HF_HUB_CACHE (under `hf_home`), disables Xet and telemetry, patches every
    import-time copy of these settings, and guards the shared HTTP client against requests to any other host.
    Everything is restored on exit.
    """
    hf_home = Path(hf_home)
    hf_home.mkdir(parents=True, exist_ok=True)
    # Import before touching the environment: imported inside the block, huggingface_hub would compute its constants
    # from the patched variables, and "restoring" them on exit would keep pointing at this (then stopped) server.
    import huggingface_hub.constants
    import huggingface_hub.hf_api
    from huggingface_hub.utils import _http

    with pytest.MonkeyPatch.context() as mp:
        _set_env(mp, server, hf_home)
        _patch_hub_constants(mp, server, hf_home)
        _patch_import_time_copies(mp, server)
        _install_local_only_guard(mp, server)
        try:
            yield server
        finally:
            _http.close_session()  # drop the guarded client and its connections to this server
            _forget_transformers_hf_api()


def _forget_transformers_hf_api() -> None:
    """transformers may have built its shared HfApi inside the block (first use): don't let it outlive the server.

    (If it existed before, the monkeypatch undo that follows puts the original back.)
    """
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        transformers_hub._hf_api = None


def set_hub_offline(mp: pytest.MonkeyPatch, offline: bool = True) -> None:
    """Switch huggingface_hub's offline mode (HF_HUB_OFFLINE), including the copies read at import."""
    from huggingface_hub import constants

    mp.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    mp.setattr(constants, "HF_HUB_OFFLINE", offline)  # what is_offline_mode() (and so transformers) reads
    config = sys.modules.get("datasets.config")
    if config is not None:
        mp.setattr(config, "HF_HUB_OFFLINE", offline, raising=False)


@contextmanager
def hub_offline_mode() -> Iterator[None]:
    """`with hub_offline_mode(): ...` runs the block with HF_HUB_OFFLINE=1 (every Hub request then fails fast)."""
    with pytest.MonkeyPatch.context() as mp:
        set_hub_offline(mp, True)
        yield


