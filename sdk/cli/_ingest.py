"""The body of ``vptt ingest``: choose the engine (this process, or Ray workers) and report."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from vptt.core.errors import ConfigError
from vptt.sdk.cli._common import personalizer, plain, quiet, set_settings, settings


def _with_device(device: str) -> Any:
    s = settings()
    explicit = {k: getattr(s, k) for k in s.model_fields_set}
    explicit["device"] = device
    return type(s)(**explicit)


def run_ingest(file: Path, *, on_error: str, backend: str, workers: int, ray_address: str | None,
               device: str | None, gpus_per_worker: float, threads: int | None, batch_texts: int | None,
               console: Any, err: Any) -> None:
    """Ingest ``file`` with the chosen backend and print what changed."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend must be local or ray, got {backend!r}")
    if device is not None:
        set_settings(_with_device(device))
    pz = personalizer()
    engine: Any = None
    with contextlib.ExitStack() as stack:
        if backend == "ray":
            from vptt.sdk.ray_ingest import RayEmbedEngine

            engine = stack.enter_context(RayEmbedEngine.from_settings(
                settings(), workers=workers, address=ray_address, threads_per_worker=threads,
                gpus_per_worker=gpus_per_worker))
        else:
            from vptt.core.devices import threads_per_worker
            from vptt.stores.engine import LocalEngine

            engine = LocalEngine(pz.store.embedder, threads=threads or threads_per_worker(1))
        report = pz.ingest(file, on_error=on_error, progress=not quiet(), engine=engine,  # type: ignore[arg-type]
                           batch_texts=batch_texts)
    console.print(f"created {len(report.created)}, updated {len(report.updated)}, "
                  f"unchanged {len(report.unchanged)}; embedded {report.texts_embedded} texts in "
                  f"{report.seconds:.1f} s; store: {pz.store.location}", highlight=False)
    for line in report.skipped:
        err.print(f"[yellow]skipped[/yellow] {plain(line)}", highlight=False, soft_wrap=True)
