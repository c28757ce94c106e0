"""Accelerator pools: GPUs found through NVML (a stand-in module here: no GPU on CI), the
operator's declared and emulated pools, and the machine's CPU pool."""

from __future__ import annotations

import sys
from types import ModuleType, SimpleNamespace

import pytest

from inferd.config import PoolConfig, Settings
from inferd.control.pools import Pool, Pools, UnknownPool, detect_gpus, gpu_type, machine_memory_gb

# What NVML reports on real machines: device names and total memory in bytes.
DEVICES = [
    ("NVIDIA A100-SXM4-80GB", 85899345920),
    (b"NVIDIA A100-SXM4-80GB", 85899345920),  # older bindings return bytes
    ("NVIDIA H100 80GB HBM3", 81559 * 2**20),  # 79.6 GiB
]


def fake_nvml(devices: list[tuple[str | bytes, int]], fail_init: bool = False) -> ModuleType:
    nvml = ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
        calls.append("init")

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: devices[h][0]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=devices[h][1])  # type: ignore[attr-defined]
    nvml.calls = calls  # type: ignore[attr-defined]
    return nvml


def test_nvml_devices_become_pools_by_type_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml(DEVICES)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    found = {p.name: p for p in detect_gpus()}
    assert {n: p.count for n, p in found.items()} == {"A100-80GB": 2, "H100-80GB": 1}
    assert not found["A100-80GB"].runs_on_cpu and not found["A100-80GB"].emulated
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_no_driver_means_no_gpu_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(DEVICES, fail_init=True))
    assert detect_gpus() == []


@pytest.mark.parametrize(
    ("device", "kind"),
    [
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA RTX A6000", "RTXA6000"),
    ],
)
def test_gpu_type_names(device: str, kind: str) -> None:
    assert gpu_type(device) == kind


def test_declared_emulated_and_cpu_pools() -> None:
    settings = Settings(
        pools=[
            PoolConfig(name="A100-80GB", count=8, usd_per_hour=2.5, emulated=True),
            PoolConfig(name="H100-80GB", count=1, usd_per_hour=4.0),
        ],
        cpu_pool_slots=3,
        cpu_pool_usd_per_hour=0.1,
    )
    # The operator's declaration wins over what NVML found (count, price).
    pools = Pools(settings, detected=[Pool("H100-80GB", 4, 0.0, runs_on_cpu=False)])
    a100, h100 = pools.get("A100-80GB"), pools.get("H100-80GB")
    assert a100.emulated and a100.runs_on_cpu and a100.count == 8
    assert (h100.count, h100.usd_per_hour, h100.emulated) == (1, 4.0, False)
    cpu = pools.get(f"CPU-{machine_memory_gb()}GB")
    assert cpu.runs_on_cpu and cpu.count == 3 and cpu.usd_per_hour == 0.1
    with pytest.raises(UnknownPool, match="A100-80GB, CPU-"):
        pools.get("B200-192GB")
