"""Worker process entry: `python -m inferd.worker.main --fd N --spec JSON`.

The runtime passes one end of a socketpair as fd N. A reader thread takes requests off the
socket and hands them to the engine; engine threads write events back under a lock. When the
socket closes (the gateway went away) the worker exits.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import threading
from typing import Any

from inferd.catalog.spec import ModelSpec
from inferd.engines.factory import build_engine
from inferd.worker.protocol import HEADER, MAX_FRAME, decode, encode


class Channel:
    """Reads requests on the caller's thread; a writer thread sends events, coalescing every
    frame queued since its last write into one sendall, so engine threads never block on I/O."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="channel-writer", daemon=True)
        self._writer.start()

    def send(self, message: dict[str, Any]) -> None:
        self._out.put(encode(message))

    def _write_loop(self) -> None:
        while True:
            frame = self._out.get()
            if frame is None:
                return
            frames = [frame]
            while True:
                try:
                    more = self._out.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._out.put(None)
                    break
                frames.append(more)
            try:
                self.sock.sendall(b"".join(frames))
            except OSError:
                os._exit(0)  # the gateway is gone; nobody is left to answer

    def close(self) -> None:
        """Send what is queued, then stop the writer."""
        self._out.put(None)
        self._writer.join(timeout=5)

    def recv(self) -> dict[str, Any] | None:
        header = self._read_exact(HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME:
            return None
        body = self._read_exact(length)
        return None if body is None else decode(body)

    def _read_exact(self, n: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self.sock.recv(n - len(chunks))
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)


def serve(fd: int, spec: ModelSpec) -> None:
    channel = Channel(socket.socket(fileno=fd))

    def emit(request_id: str, event: dict[str, Any]) -> None:
        event["id"] = request_id
        channel.send(event)

    try:
        engine = build_engine(spec, emit)
    except Exception as exc:
        channel.send({"ev": "fatal", "message": f"{type(exc).__name__}: {exc}"})
        channel.close()
        raise
    channel.send({"ev": "ready", "info": engine.info(), "pid": os.getpid()})
    while True:
        message = channel.recv()
        if message is None:
            break
        op = message.get("op")
        if op == "submit":
            engine.submit(message["id"], message["payload"])
        elif op == "cancel":
            engine.cancel(message["id"])
    engine.close()
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    spec = ModelSpec.model_validate_json(args.spec)
    try:
        serve(args.fd, spec)
    finally:
        sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
