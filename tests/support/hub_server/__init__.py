"""A local, in-memory Hugging Face Hub for tests.

`HubServer` speaks the subset of the Hub HTTP protocol that the installed `huggingface_hub` client (and, through it,
`transformers`) uses to create repos, push commits (regular files inline, large/binary files through the Git LFS
"basic" transfer), manage branches and tags, and download files. It runs on 127.0.0.1, on a free port, in a
background thread, with the standard library only.

Pytest usage (the fixtures live here; import them into a test module or list this module in `pytest_plugins`)::

    from support.hub_server import hub_offline, hub_server  # noqa: F401  (pytest fixtures)

    def test_roundtrip(hub_server, hub_offline, tmp_path):
        api = HfApi()                                  # already points at hub_server.endpoint, with its token
        api.create_repo("hub-tester/demo")
        api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="hub-tester/demo")
        path = hf_hub_download("hub-tester/demo", "a.txt")
        with hub_offline():                            # HF_HUB_OFFLINE=1 inside the block
            assert hf_hub_download("hub-tester/demo", "a.txt") == path

The package: `model.py` (repos, commits, files), `routes.py` (the endpoints), `http.py` (the server),
`environment.py` (pointing the clients at it), `fixtures.py` (pytest).

`hub_server` is function-scoped: every test gets an empty Hub and an empty cache. For a longer-lived server (e.g.
module-scoped), combine the building blocks yourself::

    @pytest.fixture(scope="module")
    def shared_hub(tmp_path_factory):
        with HubServer() as server, hub_environment(server, tmp_path_factory.mktemp("hf_home")):
            yield server

Endpoints implemented (model, dataset and space repos; `{type}` is `models`, `datasets` or `spaces`):

    GET    /api/whoami-v2
    POST   /api/repos/create                                 DELETE /api/repos/delete
    GET    /api/{type}/{repo_id}[/revision/{rev}]            repo info, `siblings` (+ sizes/LFS with ?blobs=true)
    GET    /api/{type}/{repo_id}/tree/{rev}[/{path}]         ?recursive=
    POST   /api/{type}/{repo_id}/paths-info/{rev}
    GET    /api/{type}/{repo_id}/refs                        GET /api/{type}/{repo_id}/commits/{rev}
    POST   /api/{type}/{repo_id}/branch/{branch}             DELETE same (create_branch / delete_branch)
    POST   /api/{type}/{repo_id}/tag/{rev}                   (create_tag)
    POST   /api/{type}/{repo_id}/preupload/{rev}             decides "regular" vs "lfs" per file
    POST   /api/{type}/{repo_id}/commit/{rev}                NDJSON commit (?create_pr=1 opens refs/pr/N)
    POST   /[{type}/]{repo_id}.git/info/lfs/objects/batch    LFS batch API, "basic" transfer
    PUT    /lfs-objects/{ticket}                             the LFS upload href (pre-signed: no token needed)
    POST   /[{type}/]{repo_id}.git/info/lfs/objects/verify   the LFS verify step
    HEAD   /[{type}/]{repo_id}/resolve/{rev}/{path}          GET same (with Range support)
    POST   /api/validate-yaml    GET /api/agent-harnesses    ANY /api/telemetry/...   (client housekeeping)

Writes need `Authorization: Bearer <server.token>`; reads may be anonymous except for private repos. Errors carry
the `X-Error-Code` / `X-Error-Message` headers and the `{"error": ...}` body that `hf_raise_for_status` turns into
`RepositoryNotFoundError`, `RevisionNotFoundError`, `RemoteEntryNotFoundError`, ...

Behaviour worth knowing, as on the real Hub: a new repo starts with one commit (`.gitattributes`); commits only go to
existing branches (`create_branch` first; transformers' `push_to_hub(revision=...)` does it); a file goes through LFS
when its name matches `LFS_PATTERNS` (`*.safetensors`, `*.bin`, `*.model`, ...), it is 10 MB or more, or it is binary.
Unlike the Hub, any namespace is accepted in `create_repo` (`create_repo("name")` uses `server.user`).
"""

from .environment import hub_environment, hub_offline_mode, set_hub_offline
from .fixtures import hub_offline, hub_server
from .http import HubServer
from .model import LFS_PATTERNS, LFS_SIZE_THRESHOLD, HubError, uses_lfs

__all__ = ["HubError", "HubServer", "LFS_PATTERNS", "LFS_SIZE_THRESHOLD", "hub_environment", "hub_offline",
           "hub_offline_mode", "hub_server", "set_hub_offline", "uses_lfs"]
