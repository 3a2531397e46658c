"""The Hub's storage model: repos hold commits; a commit holds a full file tree; branches and tags point at
commits. Plus the helpers the routes share (dates, git object ids, which files go through LFS)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, NamedTuple


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


