"""A local, in-memory Hugging Face Hub for tests.

`HubServer` speaks the subset of the Hub HTTP protocol that the installed `huggingface_hub` client (and, through it,
`transformers`) uses to create repos, push commits (regular files inline, large/binary files through the Git LFS
"basic" transfer), manage branches and tags, and download files. It runs on 127.0.0.1, on a free port, in a
background thread, with the standard library only.

Pytest usage (the fixtures live here; import them into a test module or list this module in `pytest_plugins`)::

    from hub_server import hub_offline, hub_server  # noqa: F401  (pytest fixtures)

    def test_roundtrip(hub_server, hub_offline, tmp_path):
        api = HfApi()                                  # already points at hub_server.endpoint, with its token
        api.create_repo("hub-tester/demo")
        api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="hub-tester/demo")
        path = hf_hub_download("hub-tester/demo", "a.txt")
        with hub_offline():                            # HF_HUB_OFFLINE=1 inside the block
            assert hf_hub_download("hub-tester/demo", "a.txt") == path

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

from __future__ import annotations

import atexit
import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

import pytest

# Files matching these patterns go through LFS, like with the default `.gitattributes` of a new Hub repo.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tar.*", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst",
    "*tfevents*",
)
# The Hub also sends any file of 10 MB or more (and any binary file) through LFS, whatever its name.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
# Prefix of a repo in web/download urls: models have none.
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_SHORT_SHA = re.compile(r"[0-9a-f]{7,40}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    """The Hub's date format ('%Y-%m-%dT%H:%M:%S.%fZ', milliseconds), which `parse_datetime` expects."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _git_blob_oid(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as `oid` / `ETag` for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def uses_lfs(path: str, size: int, sample: bytes) -> bool:
    """Whether the Hub would store this file with LFS: by name, by size, or because it is binary."""
    name = path.rsplit("/", 1)[-1]
    by_name = any(fnmatch.fnmatch(name, pattern) for pattern in LFS_PATTERNS)
    return by_name or size >= LFS_SIZE_THRESHOLD or b"\0" in sample


# --------------------------------------------------------------------------------------------------------------------
# Storage model: repos hold commits; a commit holds a full file tree (path -> file); branches/tags point at commits.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit's tree. `lfs` says how it was committed (an LFS pointer or an inline git blob)."""

    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @cached_property
    def lfs_pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @cached_property
    def git_oid(self) -> str:
        """The blob id in git: of the content itself, or of the pointer file for an LFS file (as on the Hub)."""
        return _git_blob_oid(self.lfs_pointer if self.lfs else self.content)

    def tree_entry(self, path: str) -> dict[str, Any]:
        """The JSON the tree and paths-info endpoints return for this file."""
        entry: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.lfs_pointer)}
        return entry


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    files: Mapping[str, StoredFile]
    title: str
    message: str
    date: datetime


@dataclass
class Repo:
    repo_type: str  # "model", "dataset" or "space"
    repo_id: str
    private: bool
    created_at: datetime = field(default_factory=_now)
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid; PRs are "refs/pr/N" branches
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def url_path(self) -> str:
        """Path of the repo on the web side: `user/name`, `datasets/user/name`, ..."""
        return _URL_PREFIXES[self.repo_type] + self.repo_id

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, a tag, a full commit id or a unique commit-id prefix (7+ chars) points at."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and _FULL_SHA.fullmatch(revision):
            oid = revision if revision in self.commits else None
        elif oid is None and _SHORT_SHA.fullmatch(revision):
            matches = [commit_oid for commit_oid in self.commits if commit_oid.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return self.commits[oid]

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        commits, oid = [], self.resolve(revision).oid
        while oid is not None:  # bounded: parents always point at older commits
            commits.append(self.commits[oid])
            oid = self.commits[oid].parent
        return commits


class HubError(Exception):
    """An error answer, shaped like the Hub's: status, `X-Error-Code`, and a message in header and JSON body."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the JSON body


class RequestRecord(NamedTuple):
    """One request the server answered (path without the query string, as sent: percent-encoded)."""

    method: str
    path: str
    status: int


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as error:
            raise HubError(400, f"Request body is not valid JSON: {error}") from error

    def flag(self, name: str) -> bool:
        return self.query.get(name, [""])[0].lower() in ("1", "true")


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(data: Any, status: int = 200, headers: dict | None = None) -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


def _error_response(error: HubError) -> _Response:
    # Headers are latin-1 on the wire: keep the header copy of the message ASCII, the JSON body has it in full.
    headers = {"X-Error-Message": error.message.encode("ascii", "replace").decode(), **error.headers}
    if error.code is not None:
        headers["X-Error-Code"] = error.code
    return _json_response({"error": error.message, **error.extra}, error.status, headers)


# --------------------------------------------------------------------------------------------------------------------
# The Hub application: routing, auth and one method per endpoint. It never touches sockets (see `_Handler`).
# --------------------------------------------------------------------------------------------------------------------

_REPO = r"(?P<repo_id>[^/]+(?:/[^/]+)?)"  # "namespace/name", or a canonical "name" (which simply won't be found)
_TYPED = r"(?:(?P<plural>datasets|spaces)/)?"  # optional repo-type prefix of web/git urls
_ROUTES: list[tuple[str, str, str]] = [
    # (method, path regex, handler name)
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", r"/api/agent-harnesses", "agent_harnesses"),
    ("*", r"/api/telemetry/.*", "telemetry"),
    ("GET", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ("GET", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("GET", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/refs", "refs"),
    ("GET", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/commits/(?P<rev>[^/]+)", "commits"),
    ("POST", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/branch/(?P<branch>.+)", "create_branch"),
    ("DELETE", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/branch/(?P<branch>.+)", "delete_branch"),
    ("POST", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
    ("POST", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/api/(?P<plural>models|datasets|spaces)/{_REPO}/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", rf"/{_TYPED}(?P<repo_id>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
    ("POST", rf"/{_TYPED}(?P<repo_id>[^/]+/[^/]+)\.git/info/lfs/objects/verify", "lfs_verify"),
    ("PUT", r"/lfs-objects/(?P<ticket>[0-9a-f]+)", "lfs_upload"),
    ("GET", rf"/{_TYPED}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", rf"/{_TYPED}{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
_COMPILED_ROUTES = [(method, re.compile(pattern), name) for method, pattern, name in _ROUTES]


class _HubApp:
    """State and endpoint logic of the fake Hub. All calls are serialized by one lock: tests don't need more."""

    def __init__(self, *, user: str, token: str):
        self.user, self.token = user, token
        self.endpoint = ""  # set by HubServer.start, once the port is known
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, shared by all repos
        self.upload_tickets: dict[str, tuple[str, int]] = {}  # ticket -> (sha256, size) the PUT must match
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []  # tracebacks of unexpected server errors (answered with 500)
        self._lock = threading.RLock()
        self._commit_counter = 0

    # ---- dispatch ----

    def handle(self, request: _Request) -> _Response:
        with self._lock:
            try:
                response = self._route(request)
            except HubError as error:
                response = _error_response(error)
            except Exception:  # a bug in this server: answer 500, and keep the traceback for the fixture to report
                self.errors.append(traceback.format_exc())
                response = _error_response(HubError(500, "HubServer internal error (see HubServer.errors)"))
            self.requests.append(RequestRecord(request.method, request.path, response.status))
            return response

    def _route(self, request: _Request) -> _Response:
        for method, pattern, name in _COMPILED_ROUTES:
            match = pattern.fullmatch(request.path)
            if match and method in ("*", request.method):
                # Path segments arrive percent-encoded (revisions are quoted with safe=""): decode once, here.
                params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                return getattr(self, name)(request, **params)
        raise HubError(404, f"HubServer does not implement {request.method} {request.path}")

    # ---- auth and lookups ----

    def _caller(self, request: _Request, *, required: bool) -> str | None:
        """The authenticated user name; None for an anonymous read. A wrong token is refused even for reads."""
        header = request.headers.get("Authorization")
        if header is None:
            if required:
                raise HubError(
                    401,
                    "Authentication required: this Hub write operation needs a token. Pass `token=...` or set the "
                    "HF_TOKEN environment variable (header `Authorization: Bearer <token>`).",
                )
            return None
        if header.removeprefix("Bearer ").strip() != self.token:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def _repo(self, request: _Request, plural: str | None, repo_id: str, *, write: bool = False) -> Repo:
        """The repo, once the caller may read it (or write to it, with `write=True`)."""
        caller = self._caller(request, required=write)
        repo_type = _REPO_TYPES[plural] if plural in _REPO_TYPES else "model"
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and caller is None):
            # Like the Hub: a private repo looks missing to anonymous callers (401 + RepoNotFound).
            status = 401 if caller is None else 404
            raise HubError(status, "Repository not found", code="RepoNotFound")
        return repo

    def _writable_branch(self, repo: Repo, revision: str) -> str:
        """Commits only go to existing branches (create one with create_branch first), as on the Hub."""
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} (commits must target an existing branch)",
                           code="RevisionNotFound")
        return revision

    # ---- account and repos ----

    def whoami(self, request: _Request) -> _Response:
        user = self._caller(request, required=True)
        return _json_response({
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
            "email": f"{user}@example.invalid", "emailVerified": True, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "hub-server", "role": "write"}},
        })

    def create_repo(self, request: _Request) -> _Response:
        user = self._caller(request, required=True)
        payload = request.json()
        repo_type = payload.get("type") or "model"
        name, namespace = payload.get("name") or "", payload.get("organization") or user
        if repo_type not in _URL_PREFIXES or not re.fullmatch(r"[\w.-]+", name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo type or name: {repo_type!r} {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.endpoint}/{_URL_PREFIXES[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            # `create_repo(exist_ok=True)` reads the repo url from this 409 answer.
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
        # New Hub repos start with one commit holding the default `.gitattributes`.
        gitattributes = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
        self._add_commit(repo, "main", None, {".gitattributes": StoredFile(gitattributes.encode(), lfs=False)},
                         title="initial commit", message="")
        self.repos[(repo_type, repo_id)] = repo
        return _json_response({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, request: _Request) -> _Response:
        user = self._caller(request, required=True)
        payload = request.json()
        key = (payload.get("type") or "model", f"{payload.get('organization') or user}/{payload.get('name')}")
        if self.repos.pop(key, None) is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return _json_response({})

    def repo_info(self, request: _Request, plural: str, repo_id: str, rev: str = "main") -> _Response:
        repo = self._repo(request, plural, repo_id)
        commit = repo.resolve(rev)
        with_blobs = request.flag("blobs")
        siblings = []
        for path, stored in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256,
                                      "pointerSize": len(stored.lfs_pointer)}
            siblings.append(sibling)
        return _json_response({
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": _iso(commit.date), "createdAt": _iso(repo.created_at), "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "spaces": [], "usedStorage": sum(stored.size for stored in commit.files.values()),
        })

    # ---- listings ----

    def tree(self, request: _Request, plural: str, repo_id: str, rev: str, path: str = "") -> _Response:
        commit = self._repo(request, plural, repo_id).resolve(rev)
        folder = path.strip("/")
        folders = _folders_of(commit.files)
        if folder and folder not in folders:
            raise HubError(404, f"Entry not found: {folder}", code="EntryNotFound",
                           headers={"X-Repo-Commit": commit.oid})
        prefix = f"{folder}/" if folder else ""
        recursive = request.flag("recursive")

        def listed(candidate: str) -> bool:  # inside `folder`: directly, or at any depth when recursive
            return candidate.startswith(prefix) and (recursive or "/" not in candidate[len(prefix) :])

        entries = [_folder_entry(name, commit.files) for name in sorted(folders) if name and listed(name)]
        entries += [stored.tree_entry(name) for name, stored in sorted(commit.files.items()) if listed(name)]
        return _json_response(entries)

    def paths_info(self, request: _Request, plural: str, repo_id: str, rev: str) -> _Response:
        commit = self._repo(request, plural, repo_id).resolve(rev)
        form = parse_qs(request.body.decode(), keep_blank_values=True)  # form-encoded: paths=a&paths=b&expand=..
        folders = _folders_of(commit.files)
        entries = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                entries.append(commit.files[path].tree_entry(path))
            elif path in folders:
                entries.append(_folder_entry(path, commit.files))
        return _json_response(entries)

    def refs(self, request: _Request, plural: str, repo_id: str) -> _Response:
        repo = self._repo(request, plural, repo_id)

        def ref(name: str, kind: str, oid: str) -> dict[str, str]:
            full = name if name.startswith("refs/") else f"refs/{kind}/{name}"
            return {"name": name, "ref": full, "targetCommit": oid}

        branches = {name: oid for name, oid in repo.branches.items() if not name.startswith("refs/pr/")}
        prs = {name: oid for name, oid in repo.branches.items() if name.startswith("refs/pr/")}
        return _json_response({
            "branches": [ref(name, "heads", oid) for name, oid in branches.items()],
            "tags": [ref(name, "tags", oid) for name, oid in repo.tags.items()],
            "converts": [],
            "pullRequests": [ref(name, "pr", oid) for name, oid in prs.items()],
        })

    def commits(self, request: _Request, plural: str, repo_id: str, rev: str) -> _Response:
        history = self._repo(request, plural, repo_id).history(rev)
        return _json_response([
            {"id": commit.oid, "title": commit.title, "message": commit.message, "date": _iso(commit.date),
             "authors": [{"user": self.user}]}
            for commit in history
        ])

    # ---- branches and tags ----

    def create_branch(self, request: _Request, plural: str, repo_id: str, branch: str) -> _Response:
        repo = self._repo(request, plural, repo_id, write=True)
        starting_point = request.json().get("startingPoint") or "main"
        if branch in repo.branches or branch in repo.tags:
            raise HubError(409, f"Reference already exists: {branch}")
        repo.branches[branch] = repo.resolve(starting_point).oid
        return _json_response({})

    def delete_branch(self, request: _Request, plural: str, repo_id: str, branch: str) -> _Response:
        repo = self._repo(request, plural, repo_id, write=True)
        if branch == "main" or branch not in repo.branches:
            raise HubError(403 if branch == "main" else 404, f"Cannot delete branch {branch}")
        del repo.branches[branch]
        return _json_response({})

    def create_tag(self, request: _Request, plural: str, repo_id: str, rev: str) -> _Response:
        repo = self._repo(request, plural, repo_id, write=True)
        tag = request.json().get("tag") or ""
        if not tag or tag in repo.tags or tag in repo.branches:
            raise HubError(409, f"Reference already exists: {tag!r}")
        repo.tags[tag] = repo.resolve(rev).oid
        return _json_response({})

    # ---- uploads: preupload, LFS, commit ----

    def preupload(self, request: _Request, plural: str, repo_id: str, rev: str) -> _Response:
        repo = self._repo(request, plural, repo_id, write=True)
        head = repo.resolve(self._writable_branch(repo, rev))
        answers = []
        for item in request.json().get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample") or "")
            mode = "lfs" if uses_lfs(path, size, sample) else "regular"
            answer: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            existing = head.files.get(path)
            if existing is not None:
                # Lets the client skip unchanged files: sha256 for LFS files, git blob id for regular ones.
                answer["oid"] = existing.sha256 if existing.lfs else existing.git_oid
            answers.append(answer)
        return _json_response({"files": answers, "commitOid": head.oid})

    def lfs_batch(self, request: _Request, repo_id: str, plural: str | None = None) -> _Response:
        self._repo(request, plural, repo_id, write=True)
        payload = request.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "HubServer only implements the LFS 'upload' operation")
        if "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(400, "HubServer only implements the LFS 'basic' transfer")
        repo_path = _URL_PREFIXES[_REPO_TYPES.get(plural, "model")] + repo_id
        verify_href = f"{self.endpoint}/{repo_path}.git/info/lfs/objects/verify"
        objects = []
        for item in payload.get("objects", []):
            oid, size = item["oid"], int(item["size"])
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            stored = self.lfs_objects.get(oid)
            if stored is None or len(stored) != size:
                # Not stored yet: hand out a single-use upload url, like a pre-signed S3 url (no token needed).
                ticket = secrets.token_hex(16)
                self.upload_tickets[ticket] = (oid, size)
                answer["actions"] = {
                    "upload": {"href": f"{self.endpoint}/lfs-objects/{ticket}", "header": {}},
                    "verify": {"href": verify_href, "header": {}},
                }
            objects.append(answer)
        return _json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                              headers={"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, request: _Request, ticket: str) -> _Response:
        expected = self.upload_tickets.pop(ticket, None)
        if expected is None:
            raise HubError(403, "Unknown or already used LFS upload url")
        oid, size = expected
        if len(request.body) != size or hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match the announced LFS object {oid} ({size} bytes)")
        self.lfs_objects[oid] = request.body
        return _Response(200, headers={"ETag": f'"{hashlib.md5(request.body).hexdigest()}"'})

    def lfs_verify(self, request: _Request, repo_id: str, plural: str | None = None) -> _Response:
        self._repo(request, plural, repo_id, write=True)
        payload = request.json()
        stored = self.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded")
        return _json_response({"success": True})

    def commit(self, request: _Request, plural: str, repo_id: str, rev: str) -> _Response:
        repo = self._repo(request, plural, repo_id, write=True)
        base = self._writable_branch(repo, rev)
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as error:
            raise HubError(400, f"Commit payload is not valid NDJSON: {error}") from error
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit payload starts with a 'header' line")
        header = lines[0]["value"]
        parent = repo.resolve(base)
        expected_parent = header.get("parentCommit")
        if expected_parent and not parent.oid.startswith(expected_parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(parent.files)
        for line in lines[1:]:
            self._apply_operation(files, line["key"], line["value"], parent.oid)
        branch, pr_url = self._open_pull_request(repo, parent.oid) if request.flag("create_pr") else (base, None)
        commit = self._add_commit(repo, branch, parent.oid, files, header.get("summary") or "",
                                  header.get("description") or "")
        return _json_response({
            "success": True, "commitOid": commit.oid, "pullRequestUrl": pr_url,
            "commitUrl": f"{self.endpoint}/{repo.url_path}/commit/{commit.oid}",
        })

    def _open_pull_request(self, repo: Repo, parent_oid: str) -> tuple[str, str]:
        """A new "refs/pr/N" branch at `parent_oid`, and the discussion url the client parses N back from."""
        number = 1 + sum(name.startswith("refs/pr/") for name in repo.branches)
        repo.branches[f"refs/pr/{number}"] = parent_oid
        return f"refs/pr/{number}", f"{self.endpoint}/{repo.url_path}/discussions/{number}"

    def _apply_operation(self, files: dict[str, StoredFile], key: str, value: dict, parent_oid: str) -> None:
        """Apply one NDJSON commit operation to a copy of the parent's tree."""
        path = value["path"].strip("/")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')}")
            files[path] = StoredFile(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":
            content = self.lfs_objects.get(value["oid"])
            if content is None:
                raise HubError(422, f"LFS pointer for {path} refers to an object that was never uploaded")
            files[path] = StoredFile(content, lfs=True)
        elif key in ("deletedFile", "deletedFolder"):
            doomed = [p for p in files if p == path or (key == "deletedFolder" and p.startswith(path + "/"))]
            if not doomed:
                raise HubError(404, f"Entry not found: {path}", code="EntryNotFound",
                               headers={"X-Repo-Commit": parent_oid})
            for doomed_path in doomed:
                del files[doomed_path]
        else:
            raise HubError(400, f"Unknown commit operation {key!r}")

    def _add_commit(self, repo: Repo, branch: str, parent: str | None, files: dict[str, StoredFile],
                    title: str, message: str) -> Commit:
        """Record a commit on `branch`; its id is a fresh sha1-like 40-hex string."""
        self._commit_counter += 1
        seed = f"{repo.repo_id}\n{parent}\n{self._commit_counter}\n{title}\n{secrets.token_hex(8)}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, dict(files), title, message, _now())
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    # ---- downloads ----

    def resolve(self, request: _Request, repo_id: str, rev: str, path: str, plural: str | None = None) -> _Response:
        commit = self._repo(request, plural, repo_id).resolve(rev)
        stored = commit.files.get(path)
        if stored is None:
            # `X-Repo-Commit` lets the client cache the file's absence for this commit (`.no_exist`).
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if stored.lfs:
            # The client caches blobs by these: the LFS sha256 and the real (not pointer) size.
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(stored.size)})
        return _ranged(stored.content, request.headers.get("Range"), headers)

    # ---- client housekeeping ----

    def validate_yaml(self, request: _Request) -> _Response:
        return _json_response({"errors": [], "warnings": []})

    def agent_harnesses(self, request: _Request) -> _Response:
        return _json_response({"standardEnvVars": [], "harnesses": {}})

    def telemetry(self, request: _Request) -> _Response:
        return _json_response({})


def _folders_of(files: Mapping[str, StoredFile]) -> set[str]:
    """All folder paths of a tree ('' is the root)."""
    folders = {""}
    for path in files:
        parts = path.split("/")[:-1]
        folders.update("/".join(parts[: depth + 1]) for depth in range(len(parts)))
    return folders


def _folder_entry(folder: str, files: Mapping[str, StoredFile]) -> dict[str, Any]:
    inside = sorted(f"{path}:{stored.git_oid}" for path, stored in files.items() if path.startswith(folder + "/"))
    return {"type": "directory", "oid": hashlib.sha1("\n".join(inside).encode()).hexdigest(), "path": folder}


def _ranged(content: bytes, range_header: str | None, headers: dict[str, str]) -> _Response:
    """The whole content, or the single `bytes=start-[end]` range the client asked for (used to resume)."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
    if match is None or not content:
        return _Response(200, content, headers)
    start = int(match.group(1))
    end = min(int(match.group(2)) if match.group(2) else len(content) - 1, len(content) - 1)
    if start >= len(content):
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(content)}"})
    headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(content)}"}
    return _Response(206, content[start : end + 1], headers)


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing and the public server object.
# --------------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP/1.1 requests into `_Request`s for the app, and its `_Response`s back into bytes."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60  # an idle keep-alive connection frees its thread after this many seconds
    # Headers and body go out in two writes: with Nagle's algorithm on, the client's delayed ACK costs ~40 ms/request.
    disable_nagle_algorithm = True
    server: _ThreadingServer

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._read_body()  # always drain the body, or the next request on this connection is garbage
        request = _Request(self.command, path, parse_qs(query, keep_blank_values=True), self.headers, body)
        response = self.server.app.handle(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked_body(self) -> bytes:
        chunks = []
        while True:  # ends on the 0-size chunk, or at EOF (readline returns b"" -> size 0)
            size = int(self.rfile.readline(65537).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF closing each chunk
        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):  # optional trailers
            pass
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are in HubServer.requests; don't flood the test output


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True  # never block interpreter exit on a lingering keep-alive connection
    app: _HubApp

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (e.g. its session closed at teardown) is normal; anything else is a server bug.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            self.app.errors.append(traceback.format_exc())


class HubServer:
    """An in-memory Hugging Face Hub on http://127.0.0.1:<free port>, served from a background thread.

    Attributes (valid once started):
        endpoint: base url, e.g. "http://127.0.0.1:41234" (what HF_ENDPOINT must be).
        token: the one valid token (writes need it, as `Authorization: Bearer <token>`).
        user: the token's user name, the default namespace of `create_repo("name")`.
        requests: the `RequestRecord(method, path, status)` of every request answered so far.
        errors: tracebacks of requests that crashed the server (answered with 500); should stay empty.
        foreign_requests: requests to any other host, refused by `hub_environment`'s guard; should stay empty.
    """

    def __init__(self, *, user: str = "hub-tester", token: str | None = None, host: str = "127.0.0.1"):
        self.user = user
        self.token = token or f"hf_hubserver_{secrets.token_hex(12)}"
        self.host = host
        self.foreign_requests: list[str] = []
        self._app = _HubApp(user=self.user, token=self.token)
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("HubServer is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[RequestRecord]:
        return list(self._app.requests)

    @property
    def errors(self) -> list[str]:
        return list(self._app.errors)

    def start(self) -> HubServer:
        if self._server is not None:
            return self
        self._server = _ThreadingServer((self.host, 0), _Handler)  # port 0: the OS picks a free port
        self._server.app = self._app
        self._app.endpoint = self.endpoint
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="HubServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # returns within one poll_interval
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Server-side view of a repo at a revision (path -> content), for assertions that bypass the client."""
        with self._app._lock:
            commit = self._app.repos[(repo_type, repo_id)].resolve(revision)
            return {path: stored.content for path, stored in commit.files.items()}

    def lfs_paths(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> set[str]:
        """Paths stored through LFS at a revision."""
        with self._app._lock:
            commit = self._app.repos[(repo_type, repo_id)].resolve(revision)
            return {path for path, stored in commit.files.items() if stored.lfs}


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
