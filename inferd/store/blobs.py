"""The encrypted blob store: batch input/output files (and other short-lived payloads) at rest.

Each file gets its own random 256-bit data key. The plaintext is cut into fixed-size chunks,
each sealed with AES-256-GCM under a fresh random 96-bit nonce; the associated data binds a
chunk to the file header, its file id, its index and whether it is the last chunk, so a flipped
byte, reordered or spliced chunks (even from another file) and a truncated or extended file all
fail authentication. The data key is wrapped with AES key wrap (RFC 3394) under a master key (the
KEK) and handed back to the caller, who keeps it in its database row: this module touches no
database. Destroying the wrapped key and the ciphertext (`purge`) is what retention means.

On disk, one file per blob, named by its id, under `root`:

    header  = MAGIC (8 bytes) | chunk size (u32, big-endian)
    chunk i = nonce (12) | AES-GCM(plaintext chunk i) with its 16-byte tag

Every chunk but the last holds exactly `chunk size` plaintext bytes; the last holds 0..chunk
size (a zero-byte file has one empty last chunk). Operations are synchronous and cheap per chunk,
so async callers can call `write` inline and move whole reads onto a thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024  # a damaged header must not make a reader allocate gigabytes
MAGIC = b"INFDBLB1"
_HEADER = struct.Struct(">8sI")
_CHUNK_AD = struct.Struct(">QB")  # chunk index, last-chunk flag
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
_WRAP_PREFIX = "kw1:"  # names the wrapping scheme, so another can be added without ambiguity
_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_PART_SUFFIX = ".part"
DEFAULT_KEY_FILE = Path(".config") / "inferd" / "blob-master.key"  # under the home directory


class BlobError(Exception):
    """A blob could not be read. Messages name the file id, never its contents."""


class BlobMissing(BlobError):
    """No ciphertext exists for the file id (never written, aborted or purged)."""


class BlobCorrupt(BlobError):
    """The ciphertext or the wrapped key failed authentication: tampered with, truncated,
    spliced, or read under a different master key."""


@dataclass(frozen=True, slots=True)
class SealedBlob:
    """What the caller stores in its row: the wrapped data key and the plaintext size."""

    wrapped_key: str
    size: int


class BlobStore:
    """Files encrypted at rest under `root`, each with its own data key wrapped by `master_key`."""

    def __init__(self, root: Path, master_key: bytes, *, chunk_size: int = CHUNK_SIZE) -> None:
        if len(master_key) != KEY_SIZE:
            raise ValueError(f"The blob master key must be {KEY_SIZE} bytes.")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}.")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._master_key = bytes(master_key)
        self.chunk_size = chunk_size

    def path(self, file_id: str) -> Path:
        # Ids become file names: a strict alphabet rules out traversal and hidden/partial names.
        if not _FILE_ID.fullmatch(file_id):
            raise ValueError("A blob file id must be 1-128 characters of [A-Za-z0-9_-].")
        return self.root / file_id

    def writer(self, file_id: str) -> BlobWriter:
        """A writer for a new blob; the id must not exist yet (ids are never reused)."""
        final = self.path(file_id)
        if final.exists():
            raise FileExistsError(f"A blob with id {file_id} already exists.")
        return BlobWriter(file_id, final, self._master_key, self.chunk_size)

    def read(self, file_id: str, wrapped_key: str) -> Iterator[bytes]:
        """The plaintext, chunk by chunk.

        A missing file or a key that does not unwrap raises here, before iteration. Each yielded
        chunk is authentic on its own; damage further on (including truncation, only detectable
        at the end) raises `BlobCorrupt` from the iterator, so a streaming caller may already
        have sent earlier chunks.
        """
        data_key = self._unwrap(file_id, wrapped_key)
        try:
            handle = self.path(file_id).open("rb")
        except FileNotFoundError:
            raise BlobMissing(f"Blob {file_id} does not exist.") from None
        return _read_chunks(handle, file_id, AESGCM(data_key))

    def sweep_partial(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files of writes that never finished (a crash mid-upload): their
        key was never handed out, so they are unreadable, but they are content all the same.
        Only old ones: another process sharing the folder may be writing a young one."""
        cutoff = time.time() - older_than_s
        swept = 0
        for path in self.root.glob(f".*{_PART_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    swept += 1
        return swept

    def purge(self, file_id: str) -> None:
        """Delete the ciphertext; a no-op when it is already gone. Without its wrapped key
        (which the caller deletes from its row) the data could not be read anyway."""
        self.path(file_id).unlink(missing_ok=True)

    def record_key(self) -> tuple[RecordSealer, str]:
        """A fresh key for small records (a batch's lines, kept in database rows rather than
        files), and its wrapped form to store beside them."""
        data_key = secrets.token_bytes(KEY_SIZE)
        wrapped = aes_key_wrap(self._master_key, data_key)
        return RecordSealer(data_key), _WRAP_PREFIX + base64.urlsafe_b64encode(wrapped).decode()

    def record_sealer(self, owner_id: str, wrapped_key: str) -> RecordSealer:
        """The sealer of a stored record key; BlobCorrupt when it does not unwrap."""
        return RecordSealer(self._unwrap(owner_id, wrapped_key))

    def _unwrap(self, file_id: str, wrapped_key: str) -> bytes:
        if not wrapped_key.startswith(_WRAP_PREFIX):
            raise BlobCorrupt(f"Blob {file_id}: the wrapped key has an unknown format.")
        try:
            wrapped = base64.urlsafe_b64decode(wrapped_key[len(_WRAP_PREFIX) :])
            return aes_key_unwrap(self._master_key, wrapped)
        except (binascii.Error, ValueError, InvalidUnwrap):
            raise BlobCorrupt(
                f"Blob {file_id}: the data key does not unwrap (wrong master key or a damaged "
                "wrapped key)."
            ) from None


class RecordSealer:
    """AES-256-GCM for small records under one key: each record bound (associated data) to the
    label naming it, so a record moved to another row does not open."""

    def __init__(self, data_key: bytes) -> None:
        self._aead = AESGCM(data_key)

    def seal(self, label: str, data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, data, label.encode())

    def open(self, label: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], label.encode())
        except (InvalidTag, ValueError):
            raise BlobCorrupt(f"Record {label} does not authenticate.") from None


class BlobWriter:
    """Streams plaintext into a new blob, holding at most about one chunk in memory.

    Ciphertext goes to a hidden temporary name in the same directory and is renamed into place
    by `finish`, so a crash never leaves a half-written file under the blob's id. Use as a
    context manager to abort on error.
    """

    def __init__(self, file_id: str, final: Path, master_key: bytes, chunk_size: int) -> None:
        self.file_id = file_id
        self._final = final
        self._master_key = master_key
        self._chunk_size = chunk_size
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(self._data_key)
        self._header = _HEADER.pack(MAGIC, chunk_size)
        self._id_bytes = file_id.encode("ascii")
        fd, temp = tempfile.mkstemp(
            dir=final.parent, prefix=f".{file_id}.", suffix=_PART_SUFFIX
        )  # mkstemp: mode 0600 and an unguessable name
        self._temp = Path(temp)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._buffer = bytearray()
        self._index = 0
        self.size = 0
        try:
            self._file.write(self._header)
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise ValueError(f"Blob writer for {self.file_id} is closed.")
        self._buffer += data
        self.size += len(data)
        # Seal only while more than a chunk is buffered: the last chunk must be sealed with the
        # last-chunk flag, and only `finish` knows which one that is.
        chunk = self._chunk_size
        if len(self._buffer) <= chunk:
            return
        sealed = 0
        with memoryview(self._buffer) as view:
            while len(self._buffer) - sealed > chunk:
                self._seal(view[sealed : sealed + chunk], last=False)
                sealed += chunk
        del self._buffer[:sealed]

    def finish(self) -> SealedBlob:
        """Seal the last chunk, make the file durable and visible under its id."""
        if self._file is None:
            raise ValueError(f"Blob writer for {self.file_id} is closed.")
        try:
            self._seal(self._buffer, last=True)
            self._buffer.clear()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._temp, self._final)
            _fsync_dir(self._final.parent)
        except BaseException:
            self.abort()
            raise
        wrapped = aes_key_wrap(self._master_key, self._data_key)
        return SealedBlob(
            _WRAP_PREFIX + base64.urlsafe_b64encode(wrapped).decode("ascii"), self.size
        )

    def abort(self) -> None:
        """Drop the partial ciphertext; safe to call more than once and after a failed finish."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._temp.unlink(missing_ok=True)
        self._buffer.clear()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None or self._file is not None:
            self.abort()  # an exception, or the block ended without `finish`

    def _seal(self, plaintext: bytes | bytearray | memoryview, *, last: bool) -> None:
        assert self._file is not None
        nonce = secrets.token_bytes(NONCE_SIZE)
        ad = _associated_data(self._header, self._id_bytes, self._index, last)
        self._file.write(nonce)
        self._file.write(self._aead.encrypt(nonce, plaintext, ad))
        self._index += 1


def _associated_data(header: bytes, file_id: bytes, index: int, last: bool) -> bytes:
    # Fixed-size fields first, so the variable-length id cannot make two ADs collide.
    return header + _CHUNK_AD.pack(index, 1 if last else 0) + file_id


def _read_chunks(handle: BinaryIO, file_id: str, aead: AESGCM) -> Iterator[bytes]:
    with handle:
        header = handle.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise BlobCorrupt(f"Blob {file_id} is truncated (no header).")
        magic, chunk_size = _HEADER.unpack(header)
        if magic != MAGIC or not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise BlobCorrupt(f"Blob {file_id} has an unknown format.")
        record = NONCE_SIZE + chunk_size + TAG_SIZE
        body = os.fstat(handle.fileno()).st_size - _HEADER.size
        # The file's length decides which chunk is last; a truncated or extended file makes the
        # wrong chunk carry the flag, and authentication fails.
        count = max(1, -(-body // record))
        id_bytes = file_id.encode("ascii")
        for index in range(count):
            sealed = handle.read(record)
            if len(sealed) < NONCE_SIZE + TAG_SIZE:
                raise BlobCorrupt(f"Blob {file_id} is truncated (chunk {index}).")
            ad = _associated_data(header, id_bytes, index, index == count - 1)
            try:
                plaintext = aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], ad)
            except InvalidTag:
                raise BlobCorrupt(
                    f"Blob {file_id} fails authentication at chunk {index} (tampered, "
                    "truncated or spliced)."
                ) from None
            if plaintext:
                yield plaintext


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; a no-op where directories cannot be opened (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_master_key(setting_value: str | None, key_file: Path | None, data_dir: Path) -> bytes:
    """The 32-byte blob master key (KEK), from the first of:

    1. `setting_value` (an environment setting): hex or base64 of 32 bytes;
    2. `key_file`: a file holding the same text;
    3. `~/.config/inferd/blob-master.key`, created (32 random bytes as hex, mode 0600) if missing.

    The key must live outside the data directory: that directory is what gets backed up, copied
    or attached to a bug report, and with the KEK elsewhere a copy of it is ciphertext only. A
    key file (configured or default) that resolves inside `data_dir` is refused.
    """
    if setting_value is not None and key_file is not None:
        raise ValueError("Configure the blob master key either as a value or as a file, not both.")
    if setting_value is not None:
        return _parse_key(setting_value, "the blob master key setting")
    if key_file is not None:
        path = _outside(Path(key_file), data_dir)
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise ValueError(f"The blob master key file {path} does not exist.") from None
        except UnicodeDecodeError:
            raise ValueError(
                f"The blob master key file {path} must hold hex or base64 text."
            ) from None
        return _parse_key(text, f"the blob master key file {path}")
    path = _outside(Path.home() / DEFAULT_KEY_FILE, data_dir)
    if not path.exists():
        _create_key_file(path)
    return _parse_key(path.read_text(encoding="ascii"), f"the blob master key file {path}")


def _outside(path: Path, data_dir: Path) -> Path:
    resolved = path.expanduser().resolve()
    if resolved.is_relative_to(Path(data_dir).expanduser().resolve()):
        raise ValueError(
            f"The blob master key file {resolved} is inside the data directory {data_dir}; keep "
            "it elsewhere, so that a copy of the data directory holds no key to its blobs."
        )
    return resolved


def _parse_key(text: str, source: str) -> bytes:
    # The error never quotes the value: it is a secret.
    value = text.strip()
    key: bytes | None = None
    if len(value) == 2 * KEY_SIZE:
        with contextlib.suppress(ValueError):
            key = bytes.fromhex(value)
    if key is None:
        try:
            key = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = None
    if key is None or len(key) != KEY_SIZE:
        raise ValueError(f"{source} must be {KEY_SIZE} bytes as hex (64 digits) or base64.")
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written whole under a temporary name, then linked into place: a concurrent starter either
    # wins the link or reads the winner's complete file, never a half-written one.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".blob-master.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_bytes(KEY_SIZE).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        os.unlink(temp)
