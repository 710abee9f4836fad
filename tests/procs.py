"""Server subprocesses for end-to-end tests: a free port, start and wait until healthy, stop."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    from vptt.sdk._ray_backend import _free_port

    return _free_port("127.0.0.1")


def start_http(cmd: list[str], *, log: Path, health_url: str, what: str, timeout: float = 120.0,
               **popen: Any) -> subprocess.Popen:
    """Start ``cmd`` (output to ``log``) and wait until ``health_url`` answers 200; raise with the log's tail if
    the process exits or does not answer within ``timeout`` seconds."""
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, **popen)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n" + log.read_text()[-3000:])
        try:
            if httpx.get(health_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{what} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate ``proc``; kill it if it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
