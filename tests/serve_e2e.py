"""End to end: a real ``vptt serve`` on 127.0.0.1 and the creator web page in a real headless Chromium.

Run by tests/test_serve_browser.py as ``python -m tests.serve_e2e OUTDIR`` (inside a private network
namespace when the machine allows it). It starts the fake OpenAI-compatible server (streamed chat, images),
starts ``vptt serve`` with the LLM composer, the text gate and the openai image generator pointed at it,
uploads two sample personas through the API, then drives the page as a person would: pick a persona, read its
posts, personalize (watching the prompt stream in), follow up in the same conversation, compare the five
methods. It writes ``summary.json`` (what the page showed) and ``screenshot.png`` into OUTDIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fake_openai import serve as fake_openai
from tests.procs import free_port, start_http, stop

ROOT = Path(__file__).resolve().parent.parent
PERSONAS = ("p01_kyoto_ceramicist", "p07_oaxaca_chef")
N_POSTS = 8
CHROMIUM = os.environ.get("VPTT_CHROMIUM", "/usr/bin/chromium")


def start_server(out: Path, llm_port: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "VPTT_DATA_DIR": str(out / "data"), "VPTT_LLM_API_KEY": "EMPTY",
           "VPTT_IMAGES_API_KEY": "EMPTY", "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    base = f"http://127.0.0.1:{llm_port}/v1"
    cmd = [sys.executable, "-m", "vptt", "serve", "--host", "127.0.0.1", "--port", str(port), "--composer", "llm",
           "--llm-model", "fake-chat", "--llm-base-url", base, "--gate-threshold", "0.2", "--max-candidates", "2",
           "--generator", "openai", "--model", "fake-image", "--images-base-url", base]
    url = f"http://127.0.0.1:{port}"
    return start_http(cmd, log=out / "serve.log", health_url=url + "/api/health", what="vptt serve", cwd=ROOT,
                      env=env), url


def upload_personas(url: str) -> dict:
    lines = []
    for line in (ROOT / "examples/data/personas.jsonl").read_text().splitlines():
        data = json.loads(line)
        if data["persona_id"] in PERSONAS:  # the first posts only: the test stays quick
            lines.append(json.dumps({**data, "posts": data["posts"][:N_POSTS]}))
    r = httpx.post(url + "/api/personas", params={"name": "two.jsonl"}, content="\n".join(lines).encode(),
                   headers={"content-type": "application/x-ndjson"}, timeout=300)
    r.raise_for_status()
    return r.json()


RECORDER = """() => {
  window.__promptLengths = [];
  const box = document.getElementById('prompt');
  new MutationObserver(() => window.__promptLengths.push(box.textContent.length))
    .observe(box, {childList: true, subtree: true, characterData: true});
}"""


def drive(url: str, out: Path) -> dict:
    from playwright.sync_api import expect, sync_playwright

    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                     "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        failed = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("request", lambda r: seen.setdefault("hosts", set()).add(r.url.split("/")[2]))
        page.goto(url)
        expect(page.locator("#persona option")).to_have_count(len(PERSONAS))
        page.select_option("#persona", PERSONAS[0])
        expect(page.locator("#profile h3")).to_have_text(PERSONAS[0])
        expect(page.locator("#posts .post")).to_have_count(N_POSTS)
        seen["first_caption"] = page.locator("#posts .post .post-caption").first.inner_text()
        seen["post_chips"] = page.locator("#posts .post").first.locator(".chip").count()

        page.evaluate(RECORDER)
        page.fill("#query", "A preferred outdoor spot")
        page.click("#go")
        expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
        seen["prompt_lengths"] = page.evaluate("window.__promptLengths")
        seen["prompt"] = page.locator("#prompt").inner_text()
        seen["weight_bars"] = page.locator("#chart-weights rect.bar-weight").count()
        seen["chosen_bars"] = page.locator("#chart-weights rect.bar-weight[fill='var(--accent)']").count()
        seen["quota_bars"] = page.locator("#chart-quotas rect.bar-quota").count()
        seen["elements"] = page.locator("#elements .element").count()
        seen["gates"] = page.locator("#gates .gate").all_inner_texts()
        seen["candidates"] = page.locator("#candidates .candidate").count()
        seen["highlighted_posts"] = page.locator("#posts .post.hit").count()
        seen["trace_stats"] = page.locator("#trace-stats").inner_text()
        expect(page.locator("#image")).to_be_visible()
        seen["image_width"] = page.evaluate("document.getElementById('image').naturalWidth")

        page.fill("#query", "now make it autumn")
        page.click("#go")
        expect(page.locator("#refines")).to_contain_text("refines", timeout=60_000)
        expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
        seen["followup_prompt"] = page.locator("#prompt").inner_text()
        seen["followup_prev"] = page.locator("#prompt .prev").inner_text()
        seen["turns"] = page.locator("#turns li").all_inner_texts()

        page.fill("#query", "A preferred outdoor spot")
        page.click("#compare")
        expect(page.locator("#compare-grid .method")).to_have_count(5, timeout=60_000)
        seen["methods"] = page.locator("#compare-grid .method h4 span:first-child").all_inner_texts()
        seen["scores"] = page.locator("#compare-grid .method .big").all_inner_texts()
        seen["best"] = page.locator("#compare-grid .method.best").count()
        seen["error_hidden"] = page.locator("#error").is_hidden()
        page.screenshot(path=str(out / "screenshot.png"), full_page=True)
        seen["failed_requests"] = failed
        seen["hosts"] = sorted(seen.get("hosts", set()))
        browser.close()
    return seen


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    llm = fake_openai(delay=0.03)
    t0 = time.perf_counter()
    proc, url = start_server(out, llm.server_address[1])
    timings = {"server_start_s": round(time.perf_counter() - t0, 1)}
    try:
        report = upload_personas(url)
        timings["upload_s"] = round(time.perf_counter() - t0 - timings["server_start_s"], 1)
        seen = drive(url, out)
        timings["total_s"] = round(time.perf_counter() - t0, 1)
        seen["timings"] = timings
        seen["upload"] = report
        seen["fake_openai"] = dict(llm.stats)
    finally:
        stop(proc)
        llm.shutdown()
    (out / "summary.json").write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
