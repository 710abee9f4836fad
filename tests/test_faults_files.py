"""Damaged run files get a RunFileError naming the file and line; manifests are written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import HashEmbedderBase, make_persona
from vptt.agents.personalizer import Personalizer
from vptt.core.errors import RunFileError, VPTTError
from vptt.core.files import atomic_write_json, atomic_write_text, read_json_file, read_json_object
from vptt.core.resultlog import ResultLog, read_rows
from vptt.evaluators.bench_report import bench_report, load_persona_table, load_rows
from vptt.sdk.evaluate import evaluate, row_key, write_report
from vptt.stores.memory import InMemoryPersonaStore


class HashEmbedder(HashEmbedderBase):
    name, dim = "hash-files", 64


def _row(pid: str, method: str = "vprag", score: float = 0.5) -> dict:
    return {"persona_id": pid, "task": "t", "method": method, "score": score}


def _jsonl(rows: list) -> bytes:
    return b"".join((json.dumps(r).encode() if not isinstance(r, bytes) else r) + b"\n" for r in rows)


DAMAGE = {
    "corrupt_middle_line": (b'{"persona_id": "b", "task": "t", "meth', "invalid JSON"),
    "empty_object": (b"{}", "without"),
    "binary_garbage": (bytes(range(128, 256)), "not UTF-8"),
    "json_array": (b"[1, 2, 3]", "not an object"),
    "null_key": (b'{"persona_id": null, "task": "t", "method": "m", "score": 1}', "without persona_id"),
    "score_not_a_number": (b'{"persona_id": "b", "task": "t", "method": "m", "score": "high"}', "number"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_rows_name_file_and_line(tmp_path: Path, case: str) -> None:
    raw, words = DAMAGE[case]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_jsonl([_row("a"), raw, _row("c")]))
    with pytest.raises(RunFileError, match=f"rows.jsonl:2: .*{words}") as info:
        read_rows(path, required=("persona_id", "task", "method", "score"), numeric=("score",))
    assert "delete that line" in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(RunFileError, match="rows.jsonl:2"):
        load_rows(tmp_path)
    with pytest.raises(RunFileError, match="rows.jsonl:2"):
        write_report(tmp_path)
    if case in ("corrupt_middle_line", "empty_object", "binary_garbage", "json_array"):
        with pytest.raises(RunFileError, match="rows.jsonl:2"):  # resuming a run does not skip it either
            ResultLog(path, row_key)
    assert path.read_bytes() == _jsonl([_row("a"), raw, _row("c")])  # nothing was rewritten


def test_a_torn_last_line_is_still_repaired(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_jsonl([_row("a")]) + b'{"persona_id": "b", "ta')
    log = ResultLog(path, row_key)
    assert log.done == {("a", "t", "vprag")} and log.repaired_bytes > 0 and len(log.rows()) == 1


@pytest.mark.parametrize("body,state", [(b"", "empty"), (b"  \n", "empty"), (b'{"config": {"tasks": [', "truncated"),
                                        (b"\x00\xff\xfe", "damaged"), (b"[1]", "not an object")])
def test_damaged_manifest(tmp_path: Path, body: bytes, state: str) -> None:
    pz = Personalizer(InMemoryPersonaStore(HashEmbedder()))
    pz.ingest([make_persona("alice", ["A boat on a lake."])])
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_bytes(body)
    with pytest.raises(RunFileError, match=f"manifest .*manifest.json .*{state}") as info:
        evaluate(pz, out, tasks=["x=A lake"], methods=["baseline"], progress=False, report=False)
    assert "choose another output directory" in str(info.value)
    with pytest.raises(RunFileError, match="manifest"):
        read_json_object(out / "manifest.json", what="manifest")


def test_manifest_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"v": 1})

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"v": 2})
    assert read_json_file(target) == {"v": 1}  # the old file, whole; no temp file left behind
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_evaluate_writes_a_manifest_readers_can_trust(tmp_path: Path) -> None:
    pz = Personalizer(InMemoryPersonaStore(HashEmbedder()))
    pz.ingest([make_persona("alice", ["A boat on a lake."]), make_persona("bob", ["Surf at dusk."])])
    run = evaluate(pz, tmp_path / "run", tasks=["x=A lake"], methods=["baseline", "vprag"], progress=False,
                   report=False)
    assert read_json_object(Path(run.out_dir) / "manifest.json")["config"]["methods"] == ["baseline", "vprag"]
    assert not [p for p in Path(run.out_dir).iterdir() if p.name.endswith(".tmp")]


def test_damaged_persona_records_of_a_bench_run(tmp_path: Path) -> None:
    (tmp_path / "personas.jsonl").write_bytes(b'{"persona_id": "a"}\n{}\n')
    with pytest.raises(RunFileError, match="personas.jsonl:2"):
        load_persona_table(tmp_path)
    (tmp_path / "personas.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(RunFileError, match="personas.npz"):
        load_persona_table(tmp_path)


def test_bench_report_of_a_run_with_a_damaged_manifest(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_bytes(_jsonl([_row("a"), _row("a", "baseline", 0.3)]))
    (tmp_path / "manifest.json").write_bytes(b'{"config": ')
    with pytest.raises(RunFileError, match="truncated"):
        bench_report(tmp_path)


def test_atomic_text_is_utf8(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "x.md", "é").read_bytes() == "é".encode()
    assert issubclass(RunFileError, VPTTError)
