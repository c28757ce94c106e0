"""How many instances a running version should have now, from its load.

Load is the requests in flight on the version's replicas plus those waiting for one; a replica
takes `max_batch_size` at once. The wanted count moves between `min_instances` and
`max_instances`; it must stay above (below) the current count for the scale-up (scale-down)
window before anything changes, so a burst of one second does not start a model and a pause
does not stop one. With `min_instances = 0` a version idle (nothing in flight, no request) for
`scale_to_zero_s` goes to zero; the next request starts an instance at once (runtime).
A pool holds only so many GPUs: what does not fit is not started, and the caller says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from inferd.control.registry import ScaleSettings


@dataclass
class ScaleState:
    """Per version, between ticks: since when the wanted count differed from the current."""

    above_since: float | None = None
    below_since: float | None = None


def wanted_instances(load: int, max_batch_size: int, settings: ScaleSettings, idle_s: float) -> int:
    """Instances the load asks for, within the settings (no windows, no capacity)."""
    if load == 0 and settings.min_instances == 0 and idle_s >= settings.scale_to_zero_s:
        return 0
    by_load = math.ceil(load / max(1, max_batch_size))
    return max(settings.min_instances, min(settings.max_instances, max(by_load, 1)))


def decide(
    current: int,
    wanted: int,
    settings: ScaleSettings,
    state: ScaleState,
    now: float,
) -> int:
    """The count to scale to now: `wanted` once it has held for its window, else `current`.
    Going below `min_instances` (settings changed) or from zero happens at once."""
    if wanted > current:
        state.below_since = None
        if current < settings.min_instances or current == 0:
            state.above_since = None
            return wanted
        if state.above_since is None:
            state.above_since = now
        if now - state.above_since >= settings.scale_up_window_s:
            state.above_since = None
            return wanted
        return current
    if wanted < current:
        state.above_since = None
        if current > settings.max_instances:
            state.below_since = None
            return wanted
        if wanted == 0:  # the idle time was already waited for (scale_to_zero_s)
            state.below_since = None
            return 0
        if state.below_since is None:
            state.below_since = now
        if now - state.below_since >= settings.scale_down_window_s:
            state.below_since = None
            return wanted
        return current
    state.above_since = state.below_since = None
    return current
