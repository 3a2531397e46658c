"""The Hub application: routing, auth and one method per endpoint. It never touches sockets (see `http.py`)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import traceback
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote


from .model import (_REPO_TYPES, _URL_PREFIXES, LFS_PATTERNS, Commit, HubError, Repo, RequestRecord, StoredFile, _error_response,
                    _iso, _json_response, _now, _Request, _Response, uses_lfs)

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


