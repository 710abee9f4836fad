"""Issue 12, store items: a paused, unreachable or dead Chroma server, a damaged database, a data directory
that is a file or read-only, and errors that say which store was opened."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT, make_persona
from tests.store_helpers import Hash384
from vptt import PersonaNotFoundError, StoreError, VPTTSettings
from vptt.sdk.cli.main import app
from vptt.stores.chroma import ChromaPersonaStore
from vptt.stores.factory import build_store

runner = CliRunner()


@pytest.fixture
def own_server(tmp_path):
    """A `chroma run` of this test only (it gets paused and killed)."""
    from vptt.sdk._ray_backend import ChromaServer

    srv = ChromaServer(tmp_path / "server").start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        os.kill(srv.proc.pid, signal.SIGCONT)
    srv.stop()


def test_paused_then_dead_server_gives_store_errors_naming_it(own_server) -> None:
    where = f"{own_server.host}:{own_server.port}"
    store = ChromaPersonaStore(Hash384(), host=own_server.host, port=own_server.port, timeout_s=1.0)
    persona = make_persona("alice", ["A wooden boat on a misty lake at dawn."])
    store.upsert(persona)
    os.kill(own_server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match=f"Chroma server at {where} did not answer within 1 s"):
            store.list_ids()
        with pytest.raises(StoreError, match=f"{where} did not answer"):
            ChromaPersonaStore(Hash384(), host=own_server.host, port=own_server.port, timeout_s=1.0)
        assert time.monotonic() - t0 < 15
    finally:
        os.kill(own_server.proc.pid, signal.SIGCONT)
    store.invalidate()
    assert store.embedded("alice").persona == persona  # the server is back: so is the store
    own_server.proc.kill()
    own_server.proc.wait()
    with pytest.raises(StoreError, match=f"lost the Chroma server at {where} while reading persona records"):
        store.get("alice")
    with pytest.raises(StoreError, match=f"lost the Chroma server at {where} while"):
        store.upsert(make_persona("bob", ["Surfers at sunset."]))


def test_unreachable_server_from_the_cli(tmp_path) -> None:
    from vptt.sdk._ray_backend import _free_port

    port = _free_port("127.0.0.1")
    r = runner.invoke(app, ["--chroma-host", "127.0.0.1", "--chroma-port", str(port), "personas", "list"],
                      env={"VPTT_DATA_DIR": str(tmp_path / "d"), "VPTT_CHROMA_TIMEOUT_S": "2"})
    assert r.exit_code == 1 and f"cannot reach the Chroma server at 127.0.0.1:{port}" in r.output
    assert "Traceback" not in r.output


def test_damaged_database_names_its_path(tmp_path) -> None:
    db = tmp_path / "db"
    db.mkdir()
    (db / "chroma.sqlite3").write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=f"Chroma database at {db} is damaged or is not a Chroma database"):
        ChromaPersonaStore(Hash384(), path=db)


def test_data_dir_that_is_a_file(tmp_path) -> None:
    f = tmp_path / "data"
    f.write_text("not a directory")
    with pytest.raises(StoreError, match=f"{f} is a file, not a directory"):
        build_store(VPTTSettings(data_dir=f), Hash384())
    r = runner.invoke(app, ["--data-dir", str(f), "personas", "list"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == 1 and "is a file, not a directory" in r.output and "Traceback" not in r.output


def test_not_found_and_personas_list_say_which_store(tmp_path) -> None:
    data = tmp_path / "elsewhere"
    store = build_store(VPTTSettings(data_dir=data), Hash384())
    store.upsert(make_persona("alice", ["A quiet harbour at dawn."]))
    with pytest.raises(PersonaNotFoundError, match=f"not found in the Chroma database at {data / 'chroma'}.*1 persona"):
        store.get("bob")
    r = runner.invoke(app, ["--data-dir", str(tmp_path / "empty"), "personas", "list"], env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == 0 and "0 persona(s) in the Chroma database at" in r.output.replace("\n", "")
    assert str(tmp_path / "empty" / "chroma") in r.output.replace("\n", "")


_READ_ONLY_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from tests.store_helpers import Hash384
from vptt import Personalizer, StoreError
from vptt.stores.chroma import ChromaPersonaStore
from tests.conftest import make_persona
store = ChromaPersonaStore(Hash384(), path={db!r})
out = {{"read_only": store.read_only, "ids": store.list_ids(), "location": store.location}}
out["prompt"] = Personalizer(store).personalize("alice", "A preferred outdoor spot").prompt
try:
    store.upsert(make_persona("bob", ["Surfers at sunset."]))
except StoreError as exc:
    out["write_error"] = str(exc)
print(json.dumps(out))
"""


def _ro_argv(directory: str, argv: list[str]) -> list[str]:
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, directory, *argv]


def test_read_only_data_dir_lists_and_personalizes_and_refuses_writes(tmp_path) -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("cannot make a read-only mount here (unshare -m)")
    data = tmp_path / "data"
    store = build_store(VPTTSettings(data_dir=data), Hash384())
    store.upsert(make_persona("alice", ["A wooden boat on a misty lake at dawn.", "Ramen under lanterns."]))
    del store
    child = textwrap.dedent(_READ_ONLY_CHILD.format(root=str(ROOT), db=str(data / "chroma")))
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.run(_ro_argv(str(data), [sys.executable, "-c", child]), capture_output=True, text=True,
                          env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["read_only"] and out["ids"] == ["alice"] and "read-only" in out["location"]
    assert "A preferred outdoor spot" in out["prompt"]
    assert "is read-only: it can be listed and read, not written" in out["write_error"]
    vptt = shutil.which("vptt") or str(Path(sys.executable).parent / "vptt")
    proc = subprocess.run(_ro_argv(str(data), [vptt, "--data-dir", str(data), "personas", "list"]),
                          capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alice" in proc.stdout and "read-only" in proc.stdout.replace("\n", "")
