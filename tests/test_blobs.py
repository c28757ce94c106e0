"""The encrypted blob store: round trips, tamper detection, cleanup and master-key rules."""

from __future__ import annotations

import base64
import os
import secrets
import stat
import time
from pathlib import Path

import pytest

from inferd.store.blobs import (
    CHUNK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    BlobCorrupt,
    BlobMissing,
    BlobStore,
    SealedBlob,
    load_master_key,
)

HEADER_SIZE = 12
RECORD = NONCE_SIZE + CHUNK_SIZE + TAG_SIZE
CANARY = b"canary-4c1e-blob-plaintext"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", secrets.token_bytes(32))


def payload(size: int) -> bytes:
    # Canaries spread through the data, so a plaintext leak anywhere in the file is caught.
    pattern = CANARY + secrets.token_bytes(37)
    return (pattern * (size // len(pattern) + 1))[:size]


def put(store: BlobStore, file_id: str, data: bytes, piece: int = 7001) -> SealedBlob:
    with store.writer(file_id) as writer:
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
        return writer.finish()


def get(store: BlobStore, file_id: str, sealed: SealedBlob) -> bytes:
    return b"".join(store.read(file_id, sealed.wrapped_key))


def records(path: Path) -> tuple[bytes, list[bytes]]:
    raw = path.read_bytes()
    body = raw[HEADER_SIZE:]
    return raw[:HEADER_SIZE], [body[i : i + RECORD] for i in range(0, len(body), RECORD)]


def write_records(path: Path, header: bytes, chunks: list[bytes]) -> None:
    path.write_bytes(header + b"".join(chunks))


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 123]
)
def test_round_trip(store: BlobStore, size: int) -> None:
    data = payload(size)
    sealed = put(store, "file-abc", data)
    assert sealed.size == size
    assert isinstance(sealed.wrapped_key, str)
    chunks = list(store.read("file-abc", sealed.wrapped_key))
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    # One record per chunk (an empty file still has its one, empty, last chunk).
    expected_chunks = max(1, -(-size // CHUNK_SIZE))
    on_disk = (store.root / "file-abc").stat().st_size
    assert on_disk == HEADER_SIZE + expected_chunks * (NONCE_SIZE + TAG_SIZE) + size


def test_one_large_write_is_chunked(store: BlobStore) -> None:
    data = payload(3 * CHUNK_SIZE + 5)
    sealed = put(store, "big", data, piece=len(data))
    assert [len(c) for c in store.read("big", sealed.wrapped_key)] == [CHUNK_SIZE] * 3 + [5]


def test_ciphertext_holds_no_plaintext(store: BlobStore) -> None:
    data = payload(2 * CHUNK_SIZE + 999)
    put(store, "file-canary", data)
    raw = (store.root / "file-canary").read_bytes()
    assert CANARY not in raw
    assert data not in raw
    assert raw[HEADER_SIZE : HEADER_SIZE + 64] != data[:64]
    # The same plaintext under another id encrypts to different bytes (own key, own nonces).
    put(store, "file-canary-2", data)
    assert (store.root / "file-canary-2").read_bytes() != raw
    assert sorted(p.name for p in store.root.iterdir()) == ["file-canary", "file-canary-2"]


def test_flipped_byte_fails(store: BlobStore) -> None:
    sealed = put(store, "f", payload(3 * CHUNK_SIZE))
    path = store.root / "f"
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + RECORD + 100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt, match="chunk 1"):
        get(store, "f", sealed)


def test_flipped_header_fails(store: BlobStore) -> None:
    sealed = put(store, "f", payload(10))
    path = store.root / "f"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobCorrupt):
        get(store, "f", sealed)


def test_swapped_chunks_fail(store: BlobStore) -> None:
    sealed = put(store, "f", payload(3 * CHUNK_SIZE + 10))
    path = store.root / "f"
    header, chunks = records(path)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    write_records(path, header, chunks)
    with pytest.raises(BlobCorrupt, match="chunk 0"):
        get(store, "f", sealed)


@pytest.mark.parametrize("size", [2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 10])
def test_dropped_last_chunk_fails(store: BlobStore, size: int) -> None:
    sealed = put(store, "f", payload(size))
    path = store.root / "f"
    header, chunks = records(path)
    write_records(path, header, chunks[:-1])
    with pytest.raises(BlobCorrupt):
        get(store, "f", sealed)


def test_cut_last_chunk_fails(store: BlobStore) -> None:
    sealed = put(store, "f", payload(CHUNK_SIZE + 500))
    path = store.root / "f"
    raw = path.read_bytes()
    path.write_bytes(raw[:-200])
    with pytest.raises(BlobCorrupt):
        get(store, "f", sealed)
    path.write_bytes(raw[:HEADER_SIZE])  # header only
    with pytest.raises(BlobCorrupt):
        get(store, "f", sealed)


def test_appended_chunk_fails(store: BlobStore) -> None:
    sealed = put(store, "f", payload(CHUNK_SIZE + 10))
    path = store.root / "f"
    header, chunks = records(path)
    write_records(path, header, [*chunks, chunks[0]])
    with pytest.raises(BlobCorrupt):
        get(store, "f", sealed)


def test_chunk_from_another_file_fails(store: BlobStore) -> None:
    data = payload(2 * CHUNK_SIZE + 10)
    sealed_a = put(store, "file-a", data)
    put(store, "file-b", data)
    header_a, chunks_a = records(store.root / "file-a")
    _, chunks_b = records(store.root / "file-b")
    write_records(store.root / "file-a", header_a, [chunks_a[0], chunks_b[1], chunks_a[2]])
    with pytest.raises(BlobCorrupt, match="chunk 1"):
        get(store, "file-a", sealed_a)


def test_file_bound_to_its_id(store: BlobStore) -> None:
    # A whole file copied under another id, read with its own key, still fails: the id is in
    # every chunk's associated data.
    sealed = put(store, "file-a", payload(100))
    (store.root / "file-c").write_bytes((store.root / "file-a").read_bytes())
    with pytest.raises(BlobCorrupt):
        get(store, "file-c", sealed)


def test_wrong_master_key_fails(store: BlobStore) -> None:
    sealed = put(store, "f", payload(100))
    other = BlobStore(store.root, secrets.token_bytes(32))
    with pytest.raises(BlobCorrupt, match="does not unwrap"):
        other.read("f", sealed.wrapped_key)


def test_damaged_wrapped_key_fails(store: BlobStore) -> None:
    sealed = put(store, "f", payload(100))
    sealed_other = put(store, "g", payload(100))
    with pytest.raises(BlobCorrupt):
        get(store, "f", sealed_other)  # another file's (valid) key
    prefix, _, encoded = sealed.wrapped_key.partition(":")
    flipped = bytearray(base64.urlsafe_b64decode(encoded))
    flipped[5] ^= 0x01
    with pytest.raises(BlobCorrupt):
        store.read("f", f"{prefix}:{base64.urlsafe_b64encode(bytes(flipped)).decode()}")
    with pytest.raises(BlobCorrupt):
        store.read("f", "not-a-key")


def test_missing_and_purge(store: BlobStore) -> None:
    sealed = put(store, "f", payload(100))
    with pytest.raises(BlobMissing):
        store.read("never-written", sealed.wrapped_key)
    store.purge("f")
    assert not (store.root / "f").exists()
    with pytest.raises(BlobMissing):
        store.read("f", sealed.wrapped_key)
    store.purge("f")  # idempotent
    store.purge("never-written")


def test_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer("f")
    writer.write(payload(3 * CHUNK_SIZE))
    assert not (store.root / "f").exists()  # an unfinished blob never appears under its id
    writer.abort()
    writer.abort()
    assert list(store.root.iterdir()) == []
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_exception_in_block_aborts(store: BlobStore) -> None:
    with pytest.raises(RuntimeError), store.writer("f") as writer:
        writer.write(payload(CHUNK_SIZE + 1))
        raise RuntimeError("upload failed")
    with store.writer("g") as writer:  # left without finish
        writer.write(b"x")
    assert list(store.root.iterdir()) == []


def test_ids_are_checked_and_never_reused(store: BlobStore) -> None:
    for bad in ("../escape", ".hidden", "a/b", "", "x" * 129, "f\x00"):
        with pytest.raises(ValueError):
            store.writer(bad)
    put(store, "f", b"first")
    with pytest.raises(FileExistsError):
        store.writer("f")


def test_write_after_finish_refused(store: BlobStore) -> None:
    writer = store.writer("f")
    writer.finish()
    with pytest.raises(ValueError):
        writer.write(b"x")


def test_master_key_size_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BlobStore(tmp_path, b"short")


# Master key loading.


def test_key_from_value_hex_and_base64(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    data_dir = tmp_path / "data"
    assert load_master_key(key.hex(), None, data_dir) == key
    assert load_master_key(f"  {key.hex().upper()}\n", None, data_dir) == key
    assert load_master_key(base64.b64encode(key).decode(), None, data_dir) == key
    assert load_master_key(base64.urlsafe_b64encode(key).decode(), None, data_dir) == key


@pytest.mark.parametrize("value", ["", "abcd", "zz" * 32, base64.b64encode(b"k" * 31).decode()])
def test_bad_key_value_refused_without_echo(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="32 bytes") as info:
        load_master_key(value, None, tmp_path / "data")
    if value:
        assert value not in str(info.value)


def test_key_from_file_outside_data_dir(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    key_file = tmp_path / "secrets" / "kek"
    key_file.parent.mkdir()
    key_file.write_text(key.hex() + "\n")
    assert load_master_key(None, key_file, tmp_path / "data") == key


def test_key_file_inside_data_dir_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "keys").mkdir(parents=True)
    inside = data_dir / "keys" / "kek"
    inside.write_text(secrets.token_bytes(32).hex())
    with pytest.raises(ValueError, match="inside the data directory"):
        load_master_key(None, inside, data_dir)
    # A path that leads into the data directory by a symlink or `..` is refused all the same.
    link = tmp_path / "kek-link"
    link.symlink_to(inside)
    with pytest.raises(ValueError, match="inside the data directory"):
        load_master_key(None, link, data_dir)
    with pytest.raises(ValueError, match="inside the data directory"):
        load_master_key(None, tmp_path / "elsewhere" / ".." / "data" / "keys" / "kek", data_dir)


def test_key_file_missing_or_bad(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_master_key(None, tmp_path / "nope", tmp_path / "data")
    bad = tmp_path / "bad"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="32 bytes"):
        load_master_key(None, bad, tmp_path / "data")


def test_value_and_file_together_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "kek"
    key_file.write_text(secrets.token_bytes(32).hex())
    with pytest.raises(ValueError, match="not both"):
        load_master_key(secrets.token_bytes(32).hex(), key_file, tmp_path / "data")


def test_default_key_file_created_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    data_dir = tmp_path / "data"
    key = load_master_key(None, None, data_dir)
    path = home / ".config" / "inferd" / "blob-master.key"
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key.hex()
    assert load_master_key(None, None, data_dir) == key  # reused, not regenerated
    assert [p.name for p in path.parent.iterdir()] == ["blob-master.key"]  # no temp left


def test_default_key_file_inside_data_dir_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ValueError, match="inside the data directory"):
        load_master_key(None, None, tmp_path)
    assert not (tmp_path / ".config").exists()


def test_default_key_file_respects_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    old = os.umask(0)
    try:
        load_master_key(None, None, tmp_path / "data")
    finally:
        os.umask(old)
    path = tmp_path / "home" / ".config" / "inferd" / "blob-master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sweep_removes_only_old_partial_writes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", bytes(32))
    old = store.writer("old-upload")
    old.write(b"x" * 10)
    young = store.writer("young-upload")
    young.write(b"y" * 10)
    [old_part] = [p for p in store.root.iterdir() if p.name.startswith(".old-upload.")]
    os.utime(old_part, (time.time() - 7200, time.time() - 7200))
    with store.writer("finished") as done:
        done.write(b"z")
        done.finish()
    assert store.sweep_partial(older_than_s=3600) == 1
    assert not old_part.exists()
    assert sorted(
        p.name.split(".")[1] if p.name.startswith(".") else p.name for p in store.root.iterdir()
    ) == ["finished", "young-upload"]
    young.abort()
    old.abort()
