"""Worker process entry: `python -m inferd.worker.main --fd N --spec JSON`.

The runtime passes one end of a socketpair as fd N. The main thread takes requests off the
socket and hands them to the engine; events go back through `Channel`. When the socket closes
(the gateway went away) the worker exits.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import threading
from collections.abc import Iterator

from inferd.catalog.spec import ModelSpec
from inferd.engines.factory import build_engine
from inferd.requests import Event, Failed, Fatal, LoadAdapter, Ready
from inferd.worker.protocol import (
    Adapter,
    BadRequest,
    Cancel,
    Control,
    FrameBuffer,
    FrameTooLarge,
    Replies,
    Reply,
    Submit,
    ToGateway,
    ToWorker,
    decode_to_worker,
    encode,
)

RECV_BYTES = 1 << 20
BAD_REQUEST = Failed(status=500, code="bad_request_frame", message="The request was malformed.")


def _encode(message: ToGateway) -> bytes:
    """A frame; an event that cannot be encoded (an engine bug) fails its call instead of
    killing the writer thread, which would silence every call of this worker."""
    try:
        return encode(message)
    except (TypeError, NotImplementedError, OverflowError) as exc:
        if isinstance(message, Replies):  # keep the events before the bad one
            return b"".join(_encode(Reply(message.id, event)) for event in message.events)
        if not isinstance(message, Reply):
            raise
        failed = Failed(
            status=500,
            code="engine_error",
            message=f"The model's output could not be sent ({type(exc).__name__}).",
        )
        return encode(Reply(message.id, failed))


def _frames(messages: list[ToGateway]) -> bytes:
    """The messages as frames, consecutive replies to one call merged into one frame."""
    merged: list[ToGateway] = []
    for message in messages:
        last = merged[-1] if merged else None
        if (
            isinstance(message, Reply)
            and isinstance(last, Reply | Replies)
            and last.id == message.id
        ):
            if isinstance(last, Reply):
                merged[-1] = Replies(last.id, [last.event, message.event])
            else:
                last.events.append(message.event)
            continue
        merged.append(message)
    return b"".join(_encode(m) for m in merged)


class Channel:
    """Reads requests on the serving thread; events go back in as few writes as possible.

    Events an engine emits while the serving thread handles a read (synchronous engines:
    the null model, VADER, a refusal) are written by that thread at the end of the read, with
    no thread switch: on a VM a wake-up of the writer thread costs more than the work. Events
    from engine threads go through a writer thread, which coalesces every frame queued since
    its last write into one sendall, so engine threads never block on I/O. The writer waits
    for the serving thread's batch to leave first; a call's inline events are always its first
    (emitted in `submit`), so every call's events stay in order.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: queue.SimpleQueue[ToGateway | None] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._serving_thread = threading.get_ident()
        self._inline: list[ToGateway] | None = None  # the serving thread's batch, while it runs
        self._writer = threading.Thread(target=self._write_loop, name="channel-writer", daemon=True)
        self._writer.start()

    def send(self, message: ToGateway) -> None:
        inline = self._inline
        if inline is not None and threading.get_ident() == self._serving_thread:
            inline.append(message)
        else:
            self._out.put(message)

    def _write_loop(self) -> None:
        while True:
            frame = self._out.get()
            if frame is None:
                return
            messages = [frame]
            while True:
                try:
                    more = self._out.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._out.put(None)
                    break
                messages.append(more)
            data = _frames(messages)
            with self._send_lock:
                self._sendall(data)

    def _sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            os._exit(0)  # the gateway is gone; nobody is left to answer

    def close(self) -> None:
        """Send what is queued, then stop the writer."""
        self._out.put(None)
        self._writer.join(timeout=5)

    def batches(self) -> Iterator[list[ToWorker]]:
        """The requests of each read, until the gateway closes the socket (or sends
        garbage). While the caller handles a batch, its inline events are held; they leave
        in one write when it asks for the next batch."""
        frames = FrameBuffer()
        # One reused buffer: `recv(1 MiB)` would map, shrink and unmap a fresh 1 MiB object
        # on every read (three syscalls and page faults per request on a quiet server).
        buffer = bytearray(RECV_BYTES)
        view = memoryview(buffer)
        while True:
            n = self.sock.recv_into(buffer)
            if not n:
                return
            try:
                bodies = frames.feed(view[:n])
            except FrameTooLarge:
                return
            batch: list[ToWorker] = []
            for body in bodies:
                try:
                    batch.append(decode_to_worker(body))
                except BadRequest as exc:
                    # A gateway bug, never user input verbatim: fail this call only.
                    self.send(Reply(exc.call_id, BAD_REQUEST))
            with self._send_lock:
                self._inline = []
                try:
                    yield batch
                finally:
                    inline, self._inline = self._inline, None
                    if inline:
                        self._sendall(_frames(inline))


def serve(fd: int, spec: ModelSpec) -> None:
    channel = Channel(socket.socket(fileno=fd))

    def emit(request_id: str, event: Event) -> None:
        channel.send(Reply(request_id, event))

    try:
        engine = build_engine(spec, emit)
    except Exception as exc:
        channel.send(Control(Fatal(f"{type(exc).__name__}: {exc}")))
        channel.close()
        raise
    channel.send(Control(Ready(info=engine.info(), pid=os.getpid())))
    for batch in channel.batches():
        for message in batch:
            if isinstance(message, Submit):
                engine.submit(message.id, message.request)
            elif isinstance(message, Cancel):
                engine.cancel(message.id)
            elif isinstance(message, Adapter):
                command = message.command
                if isinstance(command, LoadAdapter):
                    engine.load_adapter(message.id, command.name, command.path)
                else:
                    engine.unload_adapter(message.id, command.name)
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
