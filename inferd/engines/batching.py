"""Dynamic batching by arrival gaps, shared by the engines that batch unary requests.

Block for one item, then keep taking items while they keep arriving (gaps under `gap_s`), up
to `max_size` (counted by `size`) or `max_wait_s` in all: a burst of concurrent clients lands
in one batch, and a lone request waits only one gap. Without the gap wait a closed loop of N
clients splits into batches of 1 and N-1: the runner comes back to an empty queue just before
the clients' next requests arrive.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def take_batch(
    source: queue.SimpleQueue[T | None],
    *,
    max_size: int,
    gap_s: float,
    max_wait_s: float,
    size: Callable[[T], int] = lambda _: 1,
    expect: int = 0,
) -> list[T] | None:
    """The next batch, or None once the queue yields the None that means "stop".

    `expect` (the previous batch's size) ends the gap wait early: once that many have come,
    only what is already queued joins, so a steady closed loop never idles for a last gap.
    """
    first = source.get()
    if first is None:
        return None
    batch = [first]
    total = size(first)
    deadline = time.monotonic() + max_wait_s
    while total < max_size:
        wait = 0.0 if 0 < expect <= total else min(gap_s, deadline - time.monotonic())
        try:
            item = source.get(timeout=wait) if wait > 0 else source.get_nowait()
        except queue.Empty:
            break
        if item is None:
            source.put(None)  # stop after this batch
            break
        batch.append(item)
        total += size(item)
    return batch
