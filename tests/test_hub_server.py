"""Tests of the local Hub server (tests/support/hub_server/), through the real huggingface_hub and transformers clients."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    constants,
    create_repo,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    is_offline_mode,
    snapshot_download,
    upload_folder,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from support.hub_server import HubServer, hub_offline, hub_server  # noqa: F401  (pytest fixtures)

REPO = "hub-tester/demo"


def _write_folder(root: Path) -> dict[str, bytes]:
    """A small folder to upload: text files (committed inline) and binary files (sent through LFS)."""
    files = {
        "notes.txt": b"hello from the local hub\n",
        "nested/config.json": json.dumps({"hidden_size": 16}).encode(),
        "weights.safetensors": os.urandom(300_000),  # LFS by extension
        "blob.dat": b"\0binary" + os.urandom(1000),  # LFS because binary (NUL byte in the sample)
    }
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return files


@pytest.fixture
def uploaded(hub_server: HubServer, tmp_path: Path) -> dict[str, bytes]:
    """REPO on the local Hub, with the folder of `_write_folder` on main."""
    HfApi().create_repo(REPO)
    files = _write_folder(tmp_path / "upload")
    upload_folder(repo_id=REPO, folder_path=tmp_path / "upload", commit_message="first upload")
    return files


# ------------------------------------------------------------------------------------------------ environment


def test_fixture_points_every_client_at_the_local_server(hub_server: HubServer, tmp_path: Path) -> None:
    assert hub_server.endpoint.startswith("http://127.0.0.1:")
    assert os.environ["HF_ENDPOINT"] == constants.ENDPOINT == hub_server.endpoint
    assert HfApi().endpoint == hub_server.endpoint
    # The module-level HfApi behind `huggingface_hub.create_repo` & co. copied the endpoint at import.
    import huggingface_hub.hf_api

    assert huggingface_hub.hf_api.api.endpoint == hub_server.endpoint
    assert hf_hub_url(REPO, "a.txt").startswith(hub_server.endpoint + "/")
    assert Path(constants.HF_HUB_CACHE).is_relative_to(tmp_path)
    assert HfApi().whoami()["name"] == hub_server.user  # HF_TOKEN is the server's token
    assert not is_offline_mode()


def test_requests_only_reach_the_local_server(hub_server: HubServer, tmp_path: Path) -> None:
    create_repo(REPO)  # module-level function: bound to the import-time HfApi
    HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
    hf_hub_download(REPO, "x.txt")
    seen = {(record.method, record.path) for record in hub_server.requests}
    assert ("POST", "/api/repos/create") in seen
    assert ("POST", f"/api/models/{REPO}/commit/main") in seen
    assert ("HEAD", f"/{REPO}/resolve/main/x.txt") in seen
    assert hub_server.foreign_requests == []

    # Anything addressed elsewhere is refused by the guard on huggingface_hub's HTTP client (and recorded).
    with pytest.raises(RuntimeError, match="refused a request outside the local Hub"):
        get_session().get("https://huggingface.co/api/whoami-v2")
    assert hub_server.foreign_requests == ["GET https://huggingface.co/api/whoami-v2"]
    hub_server.foreign_requests.clear()  # expected here: keep the fixture's teardown check green


# ------------------------------------------------------------------------------------------------ repos and auth


def test_create_repo(hub_server: HubServer) -> None:
    api = HfApi()
    url = api.create_repo(REPO, private=True)
    assert url.repo_id == REPO and url.endpoint == hub_server.endpoint
    assert api.repo_exists(REPO)
    assert api.model_info(REPO).private is True
    assert [sibling.rfilename for sibling in api.model_info(REPO).siblings] == [".gitattributes"]

    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO)
    assert conflict.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO

    # Without a namespace, the repo goes to the token's user.
    assert api.create_repo("short-name").repo_id == f"{hub_server.user}/short-name"
    # A private repo looks missing to anonymous callers.
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(REPO)
    assert not api.repo_exists("hub-tester/does-not-exist")


@pytest.mark.parametrize("without_token", ["token=False", "no HF_TOKEN"])
def test_writes_without_a_token_fail_clearly(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, without_token: str
) -> None:
    HfApi().create_repo(REPO)
    if without_token == "no HF_TOKEN":
        monkeypatch.delenv("HF_TOKEN")
        api = HfApi()
    else:
        api = HfApi(token=False)

    with pytest.raises(HfHubHTTPError) as create_error:
        api.create_repo("hub-tester/other")
    assert create_error.value.response.status_code == 401
    assert "needs a token" in str(create_error.value)

    with pytest.raises(HfHubHTTPError) as upload_error:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)
    assert upload_error.value.response.status_code == 401
    assert "needs a token" in str(upload_error.value)
    assert HfApi().list_repo_files(REPO) == [".gitattributes"]  # nothing was committed


def test_a_wrong_token_is_refused(hub_server: HubServer) -> None:
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        HfApi(token="hf_wrong").whoami()


# ------------------------------------------------------------------------------------------------ upload / download


def test_upload_folder_sends_binary_files_through_lfs(hub_server: HubServer, uploaded: dict[str, bytes]) -> None:
    assert hub_server.files(REPO) == {".gitattributes": hub_server.files(REPO)[".gitattributes"], **uploaded}
    assert hub_server.lfs_paths(REPO) == {"weights.safetensors", "blob.dat"}
    calls = [(record.method, record.path, record.status) for record in hub_server.requests]
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch", 200) in calls
    assert sum(method == "PUT" and path.startswith("/lfs-objects/") for method, path, _ in calls) == 2
    assert sum(path.endswith("/info/lfs/objects/verify") for _, path, _ in calls) == 2

    info = HfApi().model_info(REPO, files_metadata=True)
    lfs = {sibling.rfilename: sibling.lfs for sibling in info.siblings}
    assert lfs["notes.txt"] is None
    assert lfs["weights.safetensors"].size == len(uploaded["weights.safetensors"])
    assert sorted(HfApi().list_repo_files(REPO)) == sorted([".gitattributes", *uploaded])


def test_hf_hub_download_into_an_empty_cache(hub_server: HubServer, uploaded: dict[str, bytes], tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    for filename, content in uploaded.items():
        path = hf_hub_download(REPO, filename, cache_dir=cache)
        assert Path(path).read_bytes() == content
        assert Path(path).is_relative_to(cache)

    metadata = get_hf_file_metadata(hf_hub_url(REPO, "weights.safetensors"))
    assert metadata.size == len(uploaded["weights.safetensors"])
    assert metadata.commit_hash == HfApi().model_info(REPO).sha


def test_snapshot_download(hub_server: HubServer, uploaded: dict[str, bytes]) -> None:
    folder = Path(snapshot_download(REPO))
    downloaded = {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }
    assert downloaded == {".gitattributes": downloaded[".gitattributes"], **uploaded}
    assert folder.parent.name == "snapshots" and folder.name == HfApi().model_info(REPO).sha


def test_missing_files_repos_and_revisions(hub_server: HubServer, uploaded: dict[str, bytes]) -> None:
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.txt")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("hub-tester/no-such-repo", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "notes.txt", revision="no-such-branch")
    assert not HfApi().file_exists(REPO, "missing.txt")
    assert HfApi().file_exists(REPO, "nested/config.json")

    # What transformers' `has_file` and the download code look at in a HEAD answer for a missing file.
    response = get_session().head(hf_hub_url(REPO, "adapter_config.json"))
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "EntryNotFound"
    assert response.headers["X-Repo-Commit"] == HfApi().model_info(REPO).sha


# ------------------------------------------------------------------------------------------------ branches


def test_branches_and_commits_resolve_to_their_own_files(hub_server: HubServer, uploaded: dict[str, bytes]) -> None:
    api = HfApi()
    main_sha = api.model_info(REPO).sha

    # Committing to a branch that does not exist fails, as on the Hub: create it first.
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"v2", path_in_repo="notes.txt", repo_id=REPO, revision="v2")
    api.create_branch(REPO, branch="v2")
    commit = api.upload_file(path_or_fileobj=b"notes v2\n", path_in_repo="notes.txt", repo_id=REPO, revision="v2")
    api.delete_file("blob.dat", repo_id=REPO, revision="v2")
    v2_sha = api.model_info(REPO, revision="v2").sha
    assert commit.oid != main_sha and api.list_repo_commits(REPO, revision="v2")[1].commit_id == commit.oid

    for revision, expected in [("main", uploaded["notes.txt"]), (main_sha, uploaded["notes.txt"]),
                               ("v2", b"notes v2\n"), (v2_sha, b"notes v2\n"), (v2_sha[:10], b"notes v2\n")]:
        assert Path(hf_hub_download(REPO, "notes.txt", revision=revision)).read_bytes() == expected, revision

    assert "blob.dat" in api.list_repo_files(REPO, revision="main")
    assert "blob.dat" not in api.list_repo_files(REPO, revision="v2")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "blob.dat", revision="v2")
    refs = api.list_repo_refs(REPO)
    assert {branch.name: branch.target_commit for branch in refs.branches} == {"main": main_sha, "v2": v2_sha}

    api.create_tag(REPO, tag="v1.0", revision=main_sha)
    assert Path(hf_hub_download(REPO, "notes.txt", revision="v1.0")).read_bytes() == uploaded["notes.txt"]


def test_listings_pull_requests_and_unchanged_uploads(hub_server: HubServer, uploaded: dict[str, bytes]) -> None:
    api = HfApi()
    nested = list(api.list_repo_tree(REPO, "nested"))
    assert [(entry.path, type(entry).__name__) for entry in nested] == [("nested/config.json", "RepoFile")]
    infos = {info.path: info for info in api.get_paths_info(REPO, ["weights.safetensors", "nested", "missing"])}
    assert infos.keys() == {"weights.safetensors", "nested"}
    assert infos["weights.safetensors"].lfs.size == len(uploaded["weights.safetensors"])

    # Re-uploading identical content is a no-op: the client compares the preupload `oid`s and skips the commit.
    head = api.model_info(REPO).sha
    again = api.upload_file(path_or_fileobj=uploaded["notes.txt"], path_in_repo="notes.txt", repo_id=REPO)
    assert again.oid == head

    # A pull request is a "refs/pr/N" ref (its name is quoted in urls); a branch name may contain "/".
    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="notes.txt", repo_id=REPO, create_pr=True)
    assert pr.pr_revision == "refs/pr/1"
    assert Path(hf_hub_download(REPO, "notes.txt", revision=pr.pr_revision)).read_bytes() == b"proposal"
    assert api.model_info(REPO).sha == head  # main is untouched
    api.create_branch(REPO, branch="feature/x")
    api.upload_file(path_or_fileobj=b"feature", path_in_repo="nested/f.txt", repo_id=REPO, revision="feature/x")
    assert Path(hf_hub_download(REPO, "nested/f.txt", revision="feature/x")).read_bytes() == b"feature"
    assert {entry.path for entry in api.list_repo_tree(REPO, "nested", revision="feature/x")} == {
        "nested/config.json", "nested/f.txt"}


def test_dataset_repos(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    repo = api.create_repo("hub-tester/data", repo_type="dataset")
    assert repo.repo_type == "dataset"
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id=repo.repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"\0parquet-ish", path_in_repo="train.parquet", repo_id=repo.repo_id,
                    repo_type="dataset")
    assert hub_server.lfs_paths(repo.repo_id, repo_type="dataset") == {"train.parquet"}
    path = hf_hub_download(repo.repo_id, "train.csv", repo_type="dataset")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    folder = Path(snapshot_download(repo.repo_id, repo_type="dataset"))
    assert (folder / "train.parquet").read_bytes() == b"\0parquet-ish"
    assert api.dataset_info(repo.repo_id).sha == folder.name
    with pytest.raises(RepositoryNotFoundError):  # same id, other repo type
        hf_hub_download(repo.repo_id, "train.csv")


def test_snapshot_download_per_revision(hub_server: HubServer, uploaded: dict[str, bytes]) -> None:
    api = HfApi()
    api.create_branch(REPO, branch="dev")
    api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id=REPO, revision="dev")
    main_folder, dev_folder = Path(snapshot_download(REPO)), Path(snapshot_download(REPO, revision="dev"))
    assert not (main_folder / "dev.txt").exists()
    assert (dev_folder / "dev.txt").read_bytes() == b"dev only"
    assert (dev_folder / "weights.safetensors").read_bytes() == uploaded["weights.safetensors"]


# ------------------------------------------------------------------------------------------------ offline mode


def test_offline_mode_serves_the_cache(hub_server: HubServer, hub_offline, uploaded: dict[str, bytes]) -> None:
    path = hf_hub_download(REPO, "weights.safetensors")
    folder = snapshot_download(REPO)
    requests_before = len(hub_server.requests)

    with hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE and is_offline_mode()
        assert hf_hub_download(REPO, "weights.safetensors") == path
        assert snapshot_download(REPO) == folder
        with pytest.raises(LocalEntryNotFoundError):
            hf_hub_download(REPO, "never-downloaded.txt")

    assert len(hub_server.requests) == requests_before  # offline: nothing was sent
    assert not is_offline_mode()


# ------------------------------------------------------------------------------------------------ transformers


def _tiny_marian(seed: int):
    """A tiny stock Marian model, built from a config (nothing downloaded)."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=99, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return MarianMTModel(config).eval()


def _assert_same_weights(loaded, expected) -> None:
    import torch

    expected_state = expected.state_dict()
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == expected_state.keys()
    for name, tensor in expected_state.items():
        assert torch.equal(loaded_state[name], tensor), name


def test_transformers_push_to_hub_and_from_pretrained_by_revision(
    hub_server: HubServer, hub_offline, tmp_path: Path
) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoModelForSeq2SeqLM, MarianMTModel

    repo_id = f"{hub_server.user}/tiny-marian"
    first, second = _tiny_marian(0), _tiny_marian(1)
    first_commit = first.push_to_hub("tiny-marian")  # namespace-less: goes to the token's user
    second_commit = second.push_to_hub(repo_id, revision="v2")  # transformers creates the branch
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub_server.files(repo_id))
    assert "model.safetensors" in hub_server.lfs_paths(repo_id)

    fresh_cache = tmp_path / "fresh-cache"
    for revision, expected in [(None, first), ("v2", second), (first_commit.oid, first), (second_commit.oid, second)]:
        loaded = MarianMTModel.from_pretrained(repo_id, revision=revision, cache_dir=fresh_cache)
        _assert_same_weights(loaded, expected)
    auto = AutoModelForSeq2SeqLM.from_pretrained(repo_id, revision="v2", trust_remote_code=True)
    _assert_same_weights(auto, second)

    with hub_offline():  # what was downloaded loads from the cache alone
        _assert_same_weights(MarianMTModel.from_pretrained(repo_id, revision="v2", cache_dir=fresh_cache), second)


def test_transformers_tokenizer_push_and_pull(hub_server: HubServer) -> None:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "hello": 3, "local": 4, "hub": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="</s>")
    tokenizer.push_to_hub(f"{hub_server.user}/tiny-tokenizer")

    pulled = AutoTokenizer.from_pretrained(f"{hub_server.user}/tiny-tokenizer")
    assert pulled("hello local hub nope")["input_ids"] == tokenizer("hello local hub nope")["input_ids"]
    assert pulled.pad_token == "<pad>"


_REMOTE_CONFIG = '''
from transformers import MarianConfig


class TinyRemoteConfig(MarianConfig):
    model_type = "tiny-remote-marian"
'''

_REMOTE_MODEL = '''
from transformers import MarianMTModel

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteMarian(MarianMTModel):
    config_class = TinyRemoteConfig
'''


def test_transformers_remote_code_by_revision(hub_server: HubServer, tmp_path: Path) -> None:
    """trust_remote_code=True: the code files are fetched from the local Hub into a private modules cache."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForSeq2SeqLM

    model = _tiny_marian(2)
    folder = tmp_path / "remote"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tiny-remote-marian", architectures=["TinyRemoteMarian"], auto_map={
        "AutoConfig": "configuration_tiny.TinyRemoteConfig",
        "AutoModelForSeq2SeqLM": "modeling_tiny.TinyRemoteMarian",
    })
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_tiny.py").write_text(_REMOTE_CONFIG)
    (folder / "modeling_tiny.py").write_text(_REMOTE_MODEL)

    repo_id = f"{hub_server.user}/tiny-remote"
    HfApi().create_repo(repo_id)
    HfApi().create_branch(repo_id, branch="code")
    commit = upload_folder(repo_id=repo_id, folder_path=folder, revision="code")

    for revision in ("code", commit.oid):
        loaded = AutoModelForSeq2SeqLM.from_pretrained(repo_id, revision=revision, trust_remote_code=True)
        assert type(loaded).__name__ == "TinyRemoteMarian"
        # The code was fetched into the fixture's modules cache, not ~/.cache/huggingface/modules.
        assert Path(inspect.getfile(type(loaded))).is_relative_to(os.environ["HF_MODULES_CACHE"])
        _assert_same_weights(loaded, model)
