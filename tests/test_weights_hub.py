"""Weights from a Hugging Face hub: `resolve_commit` and `fetch` through the real huggingface_hub
client against a Hub on loopback (tests/hub_double.py), with tiny repositories written here."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import HfApi, snapshot_download
from safetensors.numpy import save_file

from inferd.weights.hub import FetchError, fetch, gguf_files, repo_kind, resolve_commit
from tests.hub_double import HubDouble

REPO = "acme/tiny-llm"
PRIVATE = "acme/secret-llm"
TOKEN = "hf_reader_s3cr3t_0123456789"
WRONG = "hf_not_a_token_9876543210"


@pytest.fixture
def hub() -> Iterator[HubDouble]:
    with HubDouble() as double:
        yield double


def write_repo(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def safetensors_bytes(tmp_path: Path, value: float, floats: int = 64 * 64) -> bytes:
    path = tmp_path / f"w{value}-{floats}.safetensors"
    save_file({"weight": np.full((floats,), value, dtype=np.float32)}, str(path))
    return path.read_bytes()


def llm_repo(tmp_path: Path, name: str, value: float = 1.0, floats: int = 64 * 64) -> Path:
    return write_repo(
        tmp_path / name,
        {
            "config.json": json.dumps({"model_type": "llama", "hidden_size": 64}).encode(),
            "model.safetensors": safetensors_bytes(tmp_path, value, floats),
            "tokenizer.json": b'{"version": "1.0"}',
            "README.md": b"# tiny\n",
            "pytorch_model.bin": b"\x80\x04pickle, never fetched",
            "onnx/model.onnx": b"onnx, never fetched",
        },
    )


def reason_of(excinfo: pytest.ExceptionInfo[FetchError], *secrets: str) -> str:
    """The reason, after checking that no secret is anywhere in the whole chained traceback."""
    text = "".join(traceback.format_exception(excinfo.value))
    for secret in secrets:
        assert secret not in text
    return excinfo.value.reason


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def test_resolve_commit_of_main_a_tag_and_a_second_commit(hub: HubDouble, tmp_path: Path) -> None:
    first = hub.add_repo(REPO, llm_repo(tmp_path, "v1"))
    second = hub.add_commit(REPO, llm_repo(tmp_path, "v2", 2.0), branch="dev", tags=["v2.0"])
    assert first != second
    assert resolve_commit(REPO, None, None, hub.url) == first
    assert resolve_commit(REPO, "main", None, hub.url) == first
    assert resolve_commit(REPO, "v2.0", None, hub.url) == second
    assert resolve_commit(REPO, "dev", None, hub.url) == second
    assert resolve_commit(REPO, second, None, hub.url) == second
    hub.set_ref(REPO, "main", second)  # a branch moves; a resolved commit is what a version keeps
    assert resolve_commit(REPO, None, None, hub.url) == second


def test_fetch_public_repo_reports_progress_and_skips_unloadable_formats(
    hub: HubDouble, tmp_path: Path
) -> None:
    source = llm_repo(tmp_path, "src")
    commit = hub.add_repo(REPO, source)
    calls: list[tuple[int, int]] = []
    dest = tmp_path / "cache"

    folder = fetch(
        REPO, commit, None, endpoint=hub.url, dest_root=dest, progress=lambda *c: calls.append(c)
    )

    assert folder == dest / "acme--tiny-llm" / commit
    assert repo_kind(folder) == "safetensors"
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert fetched == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    for name in fetched:
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert leftovers(folder.parent) == sorted([commit, *fetched])  # no partial folder, no .cache

    total = sum((folder / name).stat().st_size for name in fetched)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(t == total and 0 <= d <= total for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    # The weights came from the CDN the hub redirected to, the small files from the hub.
    assert any(r.server == "cdn" for r in hub.requests)


def test_fetch_gguf_and_lora_repositories(hub: HubDouble, tmp_path: Path) -> None:
    gguf = hub.add_repo(
        "acme/tiny-gguf",
        write_repo(
            tmp_path / "gguf",
            {
                "tiny-Q8_0.gguf": b"GGUF" + bytes(300),
                "tiny-Q4_1.gguf": b"GGUF" + bytes(200),
                "README.md": b"quantizations",
            },
        ),
    )
    lora = hub.add_repo(
        "acme/tiny-lora",
        write_repo(
            tmp_path / "lora",
            {
                "adapter_config.json": json.dumps({"peft_type": "LORA", "r": 4}).encode(),
                "adapter_model.safetensors": safetensors_bytes(tmp_path, 0.5),
            },
        ),
    )
    dest = tmp_path / "cache"

    folder = fetch("acme/tiny-gguf", gguf, None, endpoint=hub.url, dest_root=dest)
    assert repo_kind(folder) == "gguf"
    assert [p.name for p in gguf_files(folder)] == ["tiny-Q4_1.gguf", "tiny-Q8_0.gguf"]

    folder = fetch("acme/tiny-lora", lora, None, endpoint=hub.url, dest_root=dest)
    assert repo_kind(folder) == "lora"


def test_private_repo_needs_its_token(
    hub: HubDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_repo(PRIVATE, llm_repo(tmp_path, "src"), private=True, token=TOKEN)
    dest = tmp_path / "cache"
    # A token saved on this machine is never borrowed for a deployment that brings none.
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    assert resolve_commit(PRIVATE, None, TOKEN, hub.url) == commit
    folder = fetch(PRIVATE, commit, TOKEN, endpoint=hub.url, dest_root=dest)
    assert repo_kind(folder) == "safetensors"
    # The token goes to the hub only, never to the CDN its signed redirects point at.
    assert {r.authorized for r in hub.requests if r.server == "hub"} == {True}
    assert {r.authorized for r in hub.requests if r.server == "cdn"} == {False}

    dest = tmp_path / "other-cache"
    with pytest.raises(FetchError) as no_token:
        fetch(PRIVATE, commit, None, endpoint=hub.url, dest_root=dest)
    assert reason_of(no_token) == (
        f"The repository `{PRIVATE}` does not exist or is private; check the name and the token."
    )
    with pytest.raises(FetchError) as wrong:
        fetch(PRIVATE, commit, WRONG, endpoint=hub.url, dest_root=dest)
    assert reason_of(wrong, WRONG, TOKEN) == f"The token was refused for `{PRIVATE}`."
    with pytest.raises(FetchError) as wrong:
        resolve_commit(PRIVATE, "main", WRONG, hub.url)
    assert reason_of(wrong, WRONG) == f"The token was refused for `{PRIVATE}`."
    assert leftovers(dest) == []


def test_gated_repo_without_access(hub: HubDouble, tmp_path: Path) -> None:
    commit = hub.add_repo("acme/gated", llm_repo(tmp_path, "src"), gated=True, token=TOKEN)
    dest = tmp_path / "cache"
    with pytest.raises(FetchError) as gated:
        fetch("acme/gated", commit, None, endpoint=hub.url, dest_root=dest)
    assert reason_of(gated).startswith("`acme/gated` is gated")
    assert leftovers(dest) == ["acme--gated"]  # the repo's folder, empty: no partial, no commit


def test_missing_repo_and_missing_revision(hub: HubDouble, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, llm_repo(tmp_path, "src"))
    with pytest.raises(FetchError) as missing:
        resolve_commit("acme/nope", None, None, hub.url)
    assert missing.value.reason == (
        "The repository `acme/nope` does not exist or is private; check the name and the token."
    )
    with pytest.raises(FetchError) as missing:
        resolve_commit(REPO, "v9", None, hub.url)
    assert missing.value.reason == f"Revision `v9` does not exist in `{REPO}`."
    with pytest.raises(FetchError) as missing:
        fetch(REPO, "f" * 40, None, endpoint=hub.url, dest_root=tmp_path / "cache")
    assert missing.value.reason == f"Revision `{'f' * 40}` does not exist in `{REPO}`."
    # A mistyped secret in the revision field stays out of the message too.
    with pytest.raises(FetchError) as missing:
        resolve_commit(REPO, TOKEN, TOKEN, hub.url)
    assert TOKEN not in reason_of(missing)

    with pytest.raises(FetchError) as bad_name:
        fetch("../../etc", commit, None, endpoint=hub.url, dest_root=tmp_path / "cache")
    assert "not a repository name" in bad_name.value.reason
    with pytest.raises(ValueError, match="full commit sha"):
        fetch(REPO, "main", None, endpoint=hub.url, dest_root=tmp_path / "cache")


def test_cut_download_leaves_nothing(hub: HubDouble, tmp_path: Path) -> None:
    source = llm_repo(tmp_path, "src")
    commit = hub.add_repo(REPO, source)
    size = (source / "model.safetensors").stat().st_size
    hub.cut_after_bytes(REPO, "model.safetensors", size // 2)
    dest = tmp_path / "cache"

    with pytest.raises(FetchError) as cut:
        fetch(REPO, commit, None, endpoint=hub.url, dest_root=dest)

    assert cut.value.reason == f"The download of `{REPO}` was interrupted; retry."
    assert not (dest / "acme--tiny-llm" / commit).exists()
    assert leftovers(dest) == ["acme--tiny-llm"]  # the temporary folder is gone
    # huggingface_hub retried before giving up (from zero: it keeps only whole 10 MiB chunks).
    assert len([r for r in hub.requests if r.server == "cdn" and r.method == "GET"]) > 1


def test_one_cut_is_resumed_and_counted_once(hub: HubDouble, tmp_path: Path) -> None:
    chunk = 10 * 1024 * 1024  # huggingface_hub writes (and resumes at) whole chunks of this size
    source = llm_repo(tmp_path, "src", floats=(chunk + 65536) // 4)
    commit = hub.add_repo(REPO, source)
    hub.cut_after_bytes(REPO, "model.safetensors", chunk + 1000, times=1)
    calls: list[tuple[int, int]] = []

    folder = fetch(
        REPO,
        commit,
        None,
        endpoint=hub.url,
        dest_root=tmp_path,
        progress=lambda *c: calls.append(c),
    )

    weights = (source / "model.safetensors").read_bytes()
    assert (folder / "model.safetensors").read_bytes() == weights
    ranges = [r.range for r in hub.requests if r.server == "cdn" and r.method == "GET"]
    assert ranges == [None, f"bytes={chunk}-"]
    total = calls[-1][1]
    assert calls[-1] == (total, total) and max(d for d, _ in calls) == total


def test_repo_without_loadable_weights(hub: HubDouble, tmp_path: Path) -> None:
    folder = write_repo(
        tmp_path / "src",
        {"config.json": b"{}", "pytorch_model.bin": b"pickle", "README.md": b"# old"},
    )
    commit = hub.add_repo("acme/pickles", folder)
    dest = tmp_path / "cache"
    with pytest.raises(FetchError) as empty:
        fetch("acme/pickles", commit, None, endpoint=hub.url, dest_root=dest)
    assert empty.value.reason == (
        "`acme/pickles` holds no weights inferd can load"
        " (expected *.safetensors, *.gguf, or a PEFT adapter)."
    )
    assert leftovers(dest) == []
    assert not any("/resolve/" in r.path for r in hub.requests)  # refused before downloading
    with pytest.raises(FetchError, match="holds no weights"):
        repo_kind(folder)


class Cancelled(Exception):
    pass


def test_progress_that_raises_aborts_and_cleans_up(hub: HubDouble, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, llm_repo(tmp_path, "src"))

    def cancel(done: int, total: int) -> None:
        if done:
            raise Cancelled  # e.g. the deployment was deleted while its weights were downloading

    with pytest.raises(Cancelled):
        fetch(REPO, commit, None, endpoint=hub.url, dest_root=tmp_path / "cache", progress=cancel)
    assert leftovers(tmp_path / "cache") == ["acme--tiny-llm"]


def test_fetched_commit_is_reused_without_network(hub: HubDouble, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, llm_repo(tmp_path, "src"))
    dest = tmp_path / "cache"
    folder = fetch(REPO, commit, None, endpoint=hub.url, dest_root=dest)
    asked = len(hub.requests)
    hub.stop()

    assert fetch(REPO, commit, None, endpoint=hub.url, dest_root=dest) == folder
    assert len(hub.requests) == asked
    with pytest.raises(FetchError) as down:
        resolve_commit(REPO, None, None, hub.url)
    assert down.value.reason == (
        f"The hub at {hub.url} cannot be reached; check the network and HF_ENDPOINT."
    )


def test_the_double_serves_snapshot_download_and_the_tree(hub: HubDouble, tmp_path: Path) -> None:
    source = llm_repo(tmp_path, "src")
    commit = hub.add_repo(REPO, source)
    hub.set_ref(REPO, "v1", commit, tag=True)
    tree = HfApi(endpoint=hub.url).list_repo_tree(REPO, recursive=True, token=False)
    names = {f.path for f in tree}
    assert "onnx/model.onnx" in names and "onnx" in names
    local = Path(
        snapshot_download(
            REPO,
            revision="v1",
            endpoint=hub.url,
            token=False,
            local_dir=tmp_path / "snap",
            cache_dir=tmp_path / "hf-cache",  # it records refs there; not in the user's cache
        )
    )
    for name in names - {"onnx"}:
        assert (local / name).read_bytes() == (source / name).read_bytes()
    assert resolve_commit(REPO, "v1", None, hub.url) == commit
