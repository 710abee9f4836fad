"""Opening Chroma, and turning its failures into :class:`StoreError` messages that name the store.

* Embedded (``PersistentClient``): a data directory that is a file, a damaged database, and a directory this
  process cannot write (opened through a private read-only copy: listing and reading work, writes are refused).
* Server (``HttpClient``): every request has a timeout; a paused, unreachable or dying server gives a
  ``StoreError`` naming ``host:port`` instead of a hang or an ``httpx`` traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vptt.core.errors import ConfigError, StoreError

log = logging.getLogger("vptt.stores")

_CORRUPT = ("not a database", "malformed", "no such table", "file is encrypted", "database disk image")
_READONLY = ("readonly database", "read-only file system", "permission denied", "unable to open database")


def _settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False, allow_reset=False)


def _writable(path: Path) -> bool:
    db = path / "chroma.sqlite3"
    if not os.access(path, os.W_OK | os.X_OK) or db.exists() and not os.access(db, os.W_OK):
        return False
    try:  # access() can say yes on a read-only mount for root: try for real
        fd, probe = tempfile.mkstemp(prefix=".vptt-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        return False
    return True


def _prepare_dir(path: Path) -> bool:
    """Create ``path`` if needed; True if it can be written. Clear errors for files in the way."""
    for part in [path, *path.parents]:
        if part.exists() and not part.is_dir():
            what = "the Chroma data directory" if part == path else "a parent of the Chroma data directory"
            raise StoreError(f"{what} {part} is a file, not a directory; point VPTT_DATA_DIR (--data-dir) at a "
                             "directory")
        if part.exists():
            break
    if not path.exists():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
                return False
            raise StoreError(f"cannot create the Chroma data directory {path}: {exc.strerror or exc}") from None
    return _writable(path)


def _read_only_copy(path: Path) -> Path:
    """A private copy of ``path`` that Chroma can open (it writes even to read a database)."""
    tmp = Path(tempfile.mkdtemp(prefix="vptt-readonly-"))
    copy = tmp / "chroma"
    if path.exists():
        shutil.copytree(path, copy)
    else:
        copy.mkdir()
    log.warning("%s is read-only: reading a private copy in %s (writes are refused)", path, copy)
    return copy


def open_embedded(path: str | os.PathLike[str]) -> tuple[Any, bool, Path]:
    """``(client, read_only, opened path)`` for the embedded Chroma database at ``path``."""
    import chromadb

    target = Path(path).expanduser()
    writable = _prepare_dir(target)
    opened = target if writable else _read_only_copy(target)
    try:
        client = chromadb.PersistentClient(path=str(opened), settings=_settings())
    except Exception as exc:  # noqa: BLE001 - chromadb raises InternalError/ValueError variants
        msg = str(exc).lower()
        if writable and any(s in msg for s in _READONLY):
            opened, writable = _read_only_copy(target), False
            client = chromadb.PersistentClient(path=str(opened), settings=_settings())
        else:
            raise embedded_error(exc, target, "opening the database") from None
    if opened != target:
        weakref.finalize(client, shutil.rmtree, str(opened.parent), True)
    return client, not writable, opened


def embedded_error(exc: BaseException, path: Path, doing: str) -> StoreError:
    """A ``StoreError`` naming the database at ``path``."""
    msg = str(exc)
    if any(s in msg.lower() for s in _CORRUPT):
        return StoreError(f"the Chroma database at {path} is damaged or is not a Chroma database ({msg.strip()}) "
                          f"while {doing}; restore it from a backup, or move it aside and re-ingest the personas")
    if any(s in msg.lower() for s in _READONLY):
        return StoreError(f"cannot write the Chroma database at {path} ({msg.strip()}); the directory is read-only "
                          "for this process: fix its permissions or use another --data-dir")
    return StoreError(f"the Chroma database at {path} failed while {doing}: {type(exc).__name__}: {msg.strip()}")


def open_server(host: str, port: int, ssl: bool, timeout: float) -> Any:
    """A Chroma ``HttpClient`` whose every request times out after ``timeout`` seconds."""
    if timeout <= 0:
        raise ConfigError(f"the Chroma timeout must be positive, got {timeout}")
    import chromadb
    import httpx

    box: dict[str, Any] = {}

    def connect() -> None:
        try:
            box["client"] = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=_settings())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=connect, name="vptt-chroma-connect", daemon=True)
    thread.start()
    thread.join(timeout)  # the client's own connect has no timeout: never wait on it forever
    where = f"{host}:{port}"
    if thread.is_alive():
        raise StoreError(f"the Chroma server at {where} did not answer within {timeout:g} s (paused or "
                         "overloaded?); check it, or raise VPTT_CHROMA_TIMEOUT_S")
    if "error" in box:
        raise StoreError(f"cannot reach the Chroma server at {where}: {box['error']}; start it with "
                         f"`chroma run --host {host} --port {port} --path DIR`") from None
    client = box["client"]
    session = getattr(getattr(client, "_server", None), "_session", None)
    if not isinstance(session, httpx.Client):  # pragma: no cover - guards against a chromadb internals change
        raise StoreError("this chromadb version's HTTP client cannot be given a timeout; install the chromadb "
                         "version vptt declares")
    session.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
    return client


def server_error(exc: BaseException, where: str, doing: str, timeout: float) -> StoreError:
    """A ``StoreError`` naming the server ``where``."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return StoreError(f"the Chroma server at {where} did not answer within {timeout:g} s while {doing} "
                          "(paused or overloaded?); check it, or raise VPTT_CHROMA_TIMEOUT_S")
    if isinstance(exc, httpx.HTTPError):
        return StoreError(f"lost the Chroma server at {where} while {doing} ({type(exc).__name__}: {exc}); is it "
                          f"still running? Restart it (`chroma run ...`) and retry: committed personas are intact")
    return StoreError(f"the Chroma server at {where} failed while {doing}: {type(exc).__name__}: {exc}")


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from Chroma or its transport (not a bug in the caller)."""
    import httpx
    from chromadb.errors import ChromaError

    return isinstance(exc, (ChromaError, httpx.HTTPError, OSError)) or type(exc).__name__ == "PanicException" or (
        isinstance(exc, ValueError) and "chroma" in str(exc).lower())


@contextmanager
def translated(where: str, doing: str, *, server: bool, path: Path | None, timeout: float) -> Iterator[None]:
    """Re-raise Chroma and transport failures inside the block as a ``StoreError`` naming the store."""
    try:
        yield
    except StoreError:
        raise
    except BaseException as exc:
        if not is_store_failure(exc):
            raise
        err = server_error(exc, where, doing, timeout) if server else embedded_error(exc, path or Path(where), doing)
        raise err from exc
