"""One distribution, one import name, one-way dependencies between the subpackages."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# folder in the repository -> import name it installs as (pyproject's package-dir)
FOLDERS = {"vptt": "vptt", "core": "vptt.core", "stores": "vptt.stores", "evaluators": "vptt.evaluators",
           "agents": "vptt.agents", "sdk": "vptt.sdk",
           "examples/data": "vptt.data"}
# the layers, lowest first: a module may import its own layer and the ones below, never above
LAYERS = ["vptt.data", "vptt.core", "vptt.stores", "vptt.evaluators", "vptt.agents", "vptt.sdk"]


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, name in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = [name, *rel]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every vptt module this module imports, anywhere (functions too), except under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("vptt"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_pkg else module.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("vptt"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    out.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard(module)
    return out


def _layer(module: str) -> int | None:
    for i, name in enumerate(LAYERS):
        if module == name or module.startswith(name + "."):
            return i
    return None


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: {d for d in _imports(m, p, known) if d in known} for m, p in mods.items()}


def test_dependencies_point_down() -> None:
    """core <- stores <- evaluators <- agents <- sdk: nothing imports a higher layer, lazily or not."""
    bad = []
    for mod, deps in _graph().items():
        mine = _layer(mod)
        if mine is None:  # the front door `vptt` re-exports from every layer
            continue
        for dep in deps:
            theirs = _layer(dep)
            if theirs is None or theirs > mine:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "imports that point up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_old_top_level_names_in_code() -> None:
    """Every module, test, example and benchmark imports through `vptt`, never `sdk`, `agents`, ..."""
    old = ("sdk", "agents", "stores", "evaluators", "core")
    bad = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in old]
    assert not bad, bad


def test_wheel_installs_only_vptt(tmp_path: Path) -> None:
    """`pip install vptt` adds exactly one top-level import name."""
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ beside the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.egg-info",
                                                             ".vptt", "node_modules"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("vptt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"vptt", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for sub in ("core", "stores", "evaluators", "agents", "sdk", "sdk/cli", "agents/generators"):
        assert f"vptt/{sub}/__init__.py" in names
    assert "vptt/py.typed" in names and "vptt/data/personas.jsonl" in names
    for asset in ("index.html", "app.js", "app.css"):  # the creator page of `vptt serve`
        assert f"vptt/sdk/server/static/{asset}" in names
    assert "vptt/sdk/server/routers/personas.py" in names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "vptt = vptt.sdk.cli:app" in entry
