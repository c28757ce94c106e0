"""Accelerator pools, named `TYPE-MEMGB` (`A100-80GB`): GPUs found on this machine (NVML),
pools the operator declares, and by default one pool for the machine's CPU (`CPU-24GB`), so a
laptop can deploy. A pool's `count` is how many GPUs (CPU slots) it hands out; instances of a
version take `num_gpus` each."""

from __future__ import annotations

import os
from dataclasses import dataclass

from inferd.config import Settings


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    count: int
    usd_per_hour: float  # per GPU (per slot) and hour of instance uptime
    runs_on_cpu: bool  # the CPU pool, or an emulated pool (control-plane tests)
    emulated: bool = False
    ray_num_cpus: float | None = None  # CPUs a Ray replica reserves (None: ray_cpus_per_replica)


class UnknownPool(LookupError):
    pass


def machine_memory_gb() -> int:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


# Brand words NVML puts before the model in a device name.
_BRANDS = {"nvidia", "tesla", "geforce", "quadro"}


def gpu_type(device_name: str) -> str:
    """The TYPE of a pool name from an NVML device name: `NVIDIA A100-SXM4-80GB` → A100,
    `NVIDIA H100 80GB HBM3` → H100, `NVIDIA GeForce RTX 4090` → RTX4090."""
    words = [w for w in device_name.split() if w.lower() not in _BRANDS]
    if not words:
        return "GPU"
    first = words[0].split("-")[0]
    if first.upper() in ("RTX", "GTX") and len(words) > 1:
        first += words[1].split("-")[0]
    return "".join(c for c in first if c.isalnum()) or "GPU"


def detect_gpus() -> list[Pool]:
    """NVIDIA GPUs through NVML, grouped by model and memory; none when NVML is absent."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVML raises its own error types
        return []
    counts: dict[str, int] = {}
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            memory = round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30)
            kind = gpu_type(name)
            counts[f"{kind}-{memory}GB"] = counts.get(f"{kind}-{memory}GB", 0) + 1
    finally:
        pynvml.nvmlShutdown()
    return [Pool(name, count, 0.0, runs_on_cpu=False) for name, count in counts.items()]


class Pools:
    def __init__(self, settings: Settings, detected: list[Pool] | None = None) -> None:
        pools: dict[str, Pool] = {}
        for pool in detect_gpus() if detected is None else detected:
            pools[pool.name] = pool
        for declared in settings.pools:  # the operator's word wins (count, price)
            pools[declared.name] = Pool(
                declared.name,
                declared.count,
                declared.usd_per_hour,
                runs_on_cpu=declared.emulated,
                emulated=declared.emulated,
                ray_num_cpus=declared.ray_num_cpus,
            )
        if settings.cpu_pool:
            name = f"CPU-{machine_memory_gb()}GB"
            pools.setdefault(
                name,
                Pool(
                    name,
                    settings.cpu_pool_slots,
                    settings.cpu_pool_usd_per_hour,
                    True,
                    ray_num_cpus=settings.cpu_pool_ray_num_cpus,
                ),
            )
        self._pools = pools

    def get(self, name: str) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            offered = ", ".join(sorted(self._pools)) or "none"
            raise UnknownPool(f"No pool `{name}` on this server; it offers: {offered}.")
        return pool

    def __iter__(self):
        return iter(self._pools.values())
