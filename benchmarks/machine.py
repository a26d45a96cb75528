"""Machine facts for benchmark extra_info, and the memory-bandwidth yardstick."""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu_name(), "cores": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


_CLONE_MEDIAN: dict = {}


def clone_median(x: torch.Tensor) -> float:
    """Median seconds of ``x.clone()`` (cached per shape and dtype): the bandwidth yardstick an
    op's time is compared with (an elementwise op cannot beat one read plus one write)."""
    key = (tuple(x.shape), x.dtype, x.device.type)
    if key not in _CLONE_MEDIAN:
        for _ in range(3):
            x.clone()
        times = []
        for _ in range(21):
            t0 = time.perf_counter()
            x.clone()
            times.append(time.perf_counter() - t0)
        _CLONE_MEDIAN[key] = statistics.median(times)
    return _CLONE_MEDIAN[key]


def onednn_bf16() -> bool:
    """Whether oneDNN takes bf16 on this CPU (AVX512-BW/VL/DQ or AVX-NE-CONVERT); candidates
    that call oneDNN directly in bf16 are left out where it does not."""
    fn = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    return bool(fn()) if fn is not None else False
