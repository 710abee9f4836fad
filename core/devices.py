"""Compute devices and CPU budgets for local models: validated up front, with messages that say what to do.

Example:
    >>> check_device("CPU")
    'cpu'
    >>> threads_per_worker(4, cores=16)
    4
"""

from __future__ import annotations

import os
import re
from typing import Any

from vptt.core.errors import ConfigError

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads each of ``workers`` processes may use so that together they fill the cores, never more."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    return max(1, (cores or available_cores()) // workers)


def check_device(device: str, *, probe: bool = True) -> str:
    """The normalised device name, or a :class:`ConfigError` saying why it cannot be used here.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (case and surrounding spaces ignored).
        probe: also check that the accelerator exists (imports torch for anything but ``cpu``).
    """
    name = str(device).strip().lower()
    if not _DEVICE.match(name):
        raise ConfigError(f"unknown device {device!r}: must be cpu, cuda, cuda:N or mps")
    if name == "cpu" or not probe:
        return name
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ConfigError(f"device {name!r} was requested but CUDA is not available here (torch "
                              f"{torch.__version__} is {build}, or no GPU is visible); use --device cpu "
                              "(VPTT_DEVICE=cpu), or install a CUDA build of torch on a machine with a GPU")
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device {name!r} was requested but only {count} CUDA device(s) are visible "
                              f"(cuda:0..cuda:{count - 1}); check CUDA_VISIBLE_DEVICES")
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was requested but Apple's Metal backend is not available here; "
                          "use --device cpu (VPTT_DEVICE=cpu)")
    return name


def init_ray(workers: int, address: str | None = None, runtime_env: dict[str, Any] | None = None) -> bool:
    """Connect to ``address`` or start a local Ray with ``workers`` CPUs; False if Ray was already up."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the Ray backend needs ray: pip install 'vptt[ray]'") from exc
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                 _node_ip_address="127.0.0.1")
    return True
