// vptt creator studio: plain JavaScript, no build step, no third-party code. Talks to the vptt serve API.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const CATEGORIES = ["foreground", "background", "objects", "materials", "lighting", "actions", "environment",
  "appearance"];
const METHOD_NAMES = { baseline: "Baseline", persona_only: "Persona only", brag: "BRAG", vprag: "VPRAG",
  comb: "Comb." };
const state = { token: localStorage.getItem("vptt-token") || "", persona: null, threads: {}, busy: false,
  candidates: {}, streamed: {}, turns: {} };

// ------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") node.setAttribute("style", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}
function color(category) {
  return `var(--c-${CATEGORIES.includes(category) ? category : "other"})`;
}
function fmt(x, digits = 3) { return (x === null || x === undefined) ? "–" : Number(x).toFixed(digits); }
function uid() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + Date.now()).slice(0, 36);
}
function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}
async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...headers(!!options.body), ...(options.headers || {}) } });
  if (!res.ok) throw await httpError(res);
  return res.json();
}
async function httpError(res) {
  let body = {};
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  const err = new Error(body.detail || `${res.status} ${res.statusText}`);
  err.status = res.status;
  return err;
}
function showError(err) {
  if (err && err.status === 401) { $("token-form").hidden = false; }
  const box = $("error");
  box.textContent = err ? (err.message || String(err)) : "";
  box.hidden = !err;
}
function setBusy(busy) {
  state.busy = busy;
  for (const id of ["go", "compare"]) $(id).disabled = busy;
}
function setStatus(text, cls) {
  const b = $("status");
  b.textContent = text;
  b.className = `badge ${cls || text}`;
}

// ------------------------------------------------------------------ personas
async function loadHealth() {
  try {
    const h = await api("/api/health");
    $("health").textContent = `vptt ${h.version} · store ${h.store} · composer ${h.composer}` +
      (h.generator ? ` · images ${h.generator}` : "") + (h.text_gate ? " · text gate on" : "");
    if (h.auth && !state.token) $("token-form").hidden = false;
  } catch (err) { $("health").textContent = "server unreachable"; }
}

async function loadPersonas() {
  const list = await api("/api/personas");
  const select = $("persona");
  select.replaceChildren(...list.map((p) => el("option", { value: p.persona_id,
    text: `${p.persona_id} (${p.posts} posts)` })));
  if (!list.length) {
    $("profile").replaceChildren(el("p", { class: "muted", text: "No personas yet: upload a JSONL file through the API (POST /api/personas) or `vptt ingest`." }));
    return;
  }
  await selectPersona(list[0].persona_id);
}

async function selectPersona(pid) {
  $("persona").value = pid;
  const persona = await api(`/api/personas/${encodeURIComponent(pid)}`);
  state.persona = persona;
  renderProfile(persona);
  renderPosts(persona, null);
  renderTurns();
}

function renderProfile(p) {
  const d = p.demographics || {};
  const who = [d.age ? `${d.age}` : "", d.gender, d.occupation].filter(Boolean).join(" · ");
  const where = [d.city, d.country].filter(Boolean).join(", ");
  const prefs = (p.preferences || []).slice(0, 8).map((t) => el("span", { class: "chip", text: t }));
  $("profile").replaceChildren(
    el("h3", { text: p.persona_id }),
    el("div", { class: "muted small", text: [who, where].filter(Boolean).join(" — ") }),
    p.summary ? el("p", { text: p.summary }) : null,
    prefs.length ? el("div", { class: "chips" }, ...prefs) : null);
}

function renderPosts(persona, trace) {
  const weights = {}, chosen = new Set();
  if (trace) {
    (trace.post_ids || []).forEach((id, i) => { weights[id] = (trace.weights || [])[i]; });
    (trace.chosen_posts || []).forEach((c) => chosen.add(c.post_id));
  }
  const cards = persona.posts.map((post) => {
    const chips = [];
    for (const [cat, items] of Object.entries(post.elements || {})) {
      for (const t of items.slice(0, 4)) {
        chips.push(el("span", { class: "chip", title: cat }, el("span", { class: "dot", style: `background:${color(cat)}` }),
          el("span", { text: t })));
      }
    }
    const w = weights[post.post_id];
    return el("article", { class: `post${chosen.has(post.post_id) ? " hit" : ""}`, "data-post": post.post_id },
      el("div", { class: "post-head" }, el("span", { class: "post-type", text: `${post.type} · ${post.post_id}` }),
        w !== undefined ? el("span", { class: "weight", text: `w ${fmt(w)}` }) : null),
      el("p", { class: "post-caption", text: post.caption }),
      el("div", { class: "chips" }, ...chips.slice(0, 10)));
  });
  $("posts").replaceChildren(...cards);
  $("post-count").textContent = String(persona.posts.length);
}

// ------------------------------------------------------------------ personalize (server-sent events)
function threadId() {
  if (!$("converse").checked || !state.persona) return null;
  const pid = state.persona.persona_id;
  if (!state.threads[pid]) state.threads[pid] = uid();
  return state.threads[pid];
}

function resetRun() {
  state.candidates = {};
  state.streamed = {};
  $("prompt").replaceChildren();
  $("prompt").classList.add("streaming");
  $("candidates").replaceChildren();
  $("gates").replaceChildren();
  $("timeline").replaceChildren();
  $("image-box").hidden = true;
  $("refines").textContent = "";
  showError(null);
}

async function personalize(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query || !state.persona || state.busy) return;
  setBusy(true);
  resetRun();
  setStatus("running");
  const body = { persona_id: state.persona.persona_id, query, method: $("method").value };
  const tid = threadId();
  if (tid) body.thread_id = tid;
  try {
    const res = await fetch("/api/personalize/stream", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!res.ok) throw await httpError(res);
    await readEvents(res.body, onEvent);
  } catch (err) {
    setStatus("error");
    showError(err);
  } finally {
    $("prompt").classList.remove("streaming");
    setBusy(false);
  }
}

async function readEvents(stream, handler) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) handler(kind, JSON.parse(data));
    }
  }
}

function onEvent(kind, data) {
  const handlers = { node: onNode, token: onToken, retrieval: onRetrieval, candidate: onCandidate, gate: onGate,
    image: onImage, progress: onProgress, result: onResult, error: (d) => { setStatus("error"); showError(d); } };
  (handlers[kind] || (() => {}))(data);
}

function onNode(data) {
  $("timeline").append(el("span", { class: "step done", text: data.node }));
}

function promptLine(index) {
  let line = $("prompt").querySelector(`[data-candidate="${index}"]`);
  if (!line) {
    for (const other of $("prompt").children) other.hidden = true;  // the newest candidate is the one shown
    line = el("div", { "data-candidate": String(index) });
    $("prompt").append(line);
  }
  line.hidden = false;
  return line;
}

function onToken(data) {
  state.streamed[data.candidate] = true;
  promptLine(data.candidate).append(document.createTextNode(data.text));
}

function onCandidate(data) {
  const c = data.candidate;
  state.candidates[c.index] = c;
  if (!state.streamed[c.index]) promptLine(c.index).textContent = c.prompt;
  const row = el("div", { class: "candidate", "data-index": String(c.index) },
    el("span", { class: "label", text: `#${c.index} ${c.label}` }),
    el("span", { class: "score", text: c.score === null ? "–" : fmt(c.score) }),
    el("span", { class: "text", text: c.prompt, title: c.prompt }));
  $("candidates").append(row);
}

function onGate(data) {
  const d = data.decision;
  if (!d) {
    $("gates").append(el("span", { class: "gate fail", text: `image attempt ${data.attempt}: below threshold, retrying` }));
    return;
  }
  const pass = d.action === "accept" || d.action === "skipped" || d.action === "accept_best";
  $("gates").append(el("span", { class: `gate ${d.passed ? "pass" : pass ? "" : "fail"}`,
    text: `${d.gate} gate: ${d.action.replace("_", " ")} — ${d.reason}` }));
  if (d.gate === "text" && d.chosen !== null && d.chosen !== undefined) {
    for (const row of $("candidates").children) {
      row.classList.toggle("chosen", row.dataset.index === String(d.chosen));
    }
  }
}

function onProgress(data) {
  $("image-cap").textContent = `generating: step ${data.step}/${data.total}`;
}

async function onImage(data) {
  const rec = data.image;
  try {
    const res = await fetch(rec.url, { headers: headers(false) });
    if (!res.ok) throw await httpError(res);
    $("image").src = URL.createObjectURL(await res.blob());
    const seed = rec.seed === null || rec.seed === undefined ? "" : ` · seed ${rec.seed}`;
    $("image-cap").textContent = `attempt ${rec.attempt}${seed} · ${rec.generator}`;
    $("image-box").hidden = false;
  } catch (err) { showError(err); }
}

function onResult(res) {
  setStatus(res.status);
  const final = el("div", { class: "final" });
  if (res.refines && res.previous_prompt && res.prompt.startsWith(res.previous_prompt)) {
    final.append(el("span", { class: "prev", text: res.previous_prompt }), res.prompt.slice(res.previous_prompt.length));
  } else {
    final.textContent = res.prompt;
  }
  $("prompt").replaceChildren(final);
  $("refines").textContent = res.refines ? "refines the previous turn of this conversation" : "";
  const pid = res.persona_id;
  if (res.thread_id) {
    (state.turns[pid] = state.turns[pid] || []).push(res.query);
    renderTurns();
  }
  const t = res.timings_ms || {};
  $("timeline").append(el("span", { class: "step", text: `${fmt(t.total, 0)} ms` }));
  onRetrieval({ trace: res.trace });
}

function renderTurns() {
  const pid = state.persona && state.persona.persona_id;
  const turns = (pid && state.turns[pid]) || [];
  $("turns").replaceChildren(...turns.map((q) => el("li", { text: q })));
}

// ------------------------------------------------------------------ charts
function onRetrieval(data) {
  const t = data.trace;
  if (!t) return;
  const stats = [];
  if (t.entropy !== null && t.entropy !== undefined) stats.push(`H ${fmt(t.entropy)}`);
  if (t.n_eff !== null && t.n_eff !== undefined) stats.push(`n_eff ${fmt(t.n_eff, 2)}`);
  if (t.k !== null && t.k !== undefined) stats.push(`K ${t.k}`);
  if (t.tau !== null && t.tau !== undefined) stats.push(`τ ${t.tau}`);
  $("trace-stats").textContent = `${t.method} · ${stats.join(" · ")}`;
  drawWeights(t);
  drawQuotas(t);
  drawElements(t);
  if (state.persona) renderPosts(state.persona, t);
}

function drawWeights(t) {
  const box = $("chart-weights");
  const n = (t.post_ids || []).length;
  if (!n || !(t.weights || []).length) {
    box.replaceChildren(el("div", { class: "empty", text: `${t.method} has no post weights` }));
    return;
  }
  const chosen = new Set((t.chosen_posts || []).map((c) => c.post_id));
  const rows = t.post_ids.map((id, i) => ({ id, w: t.weights[i], s: (t.similarities || [])[i] }))
    .sort((a, b) => b.w - a.w).slice(0, 14);
  const max = Math.max(...rows.map((r) => r.w), 1e-9);
  const W = 460, left = 96, right = 48, rowH = 20, H = rows.length * rowH + 6;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "post weights" });
  rows.forEach((r, i) => {
    const y = i * rowH + 3, width = Math.max(1, (W - left - right) * r.w / max);
    const label = r.id.length > 14 ? `…${r.id.slice(-13)}` : r.id;
    chart.append(svg("text", { x: left - 6, y: y + 13, "text-anchor": "end", text: label }),
      svg("rect", { class: "bar-weight", x: left, y, width, height: rowH - 6, rx: 3,
        fill: chosen.has(r.id) ? "var(--accent)" : "#d6d1c7", "data-post": r.id },
      svg("title", { text: `${r.id}: w=${fmt(r.w, 4)}, cos=${fmt(r.s)}` })),
      svg("text", { x: left + width + 4, y: y + 13, fill: "var(--muted)", text: fmt(r.w) }));
  });
  box.replaceChildren(chart);
}

function drawQuotas(t) {
  const box = $("chart-quotas");
  const cats = t.categories || [];
  if (!cats.length) {
    box.replaceChildren(el("div", { class: "empty", text: `${t.method} allocates no category quotas` }));
    return;
  }
  const maxBudget = Math.max(...cats.map((c) => Math.max(c.budget, c.supply ? Math.min(c.supply, c.budget) : 0)), 1);
  const W = 460, left = 96, right = 70, rowH = 22, H = cats.length * rowH + 6, unit = (W - left - right) / maxBudget;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "category quotas" });
  cats.forEach((c, i) => {
    const y = i * rowH + 3;
    chart.append(svg("text", { x: left - 6, y: y + 14, "text-anchor": "end", text: c.category }),
      svg("rect", { x: left, y, width: c.budget * unit, height: rowH - 8, rx: 3, fill: "none",
        stroke: "#d6d1c7", "stroke-dasharray": "3 2" }));
    let x = left;
    const posts = Object.entries(c.quotas || {}).filter(([, q]) => q > 0);
    posts.forEach(([pid, q], j) => {
      chart.append(svg("rect", { class: "bar-quota", x, y, width: Math.max(1, q * unit - 1), height: rowH - 8, rx: 3,
        fill: color(c.category), opacity: String(1 - 0.5 * j / Math.max(posts.length, 1)) },
      svg("title", { text: `${c.category}: ${q} from ${pid}` })));
      x += q * unit;
    });
    const used = posts.reduce((a, [, q]) => a + q, 0);
    chart.append(svg("text", { x: left + c.budget * unit + 6, y: y + 14, fill: "var(--muted)",
      text: `${used}/${c.budget} · p ${fmt(c.priority, 2)}` }));
  });
  box.replaceChildren(chart);
}

function drawElements(t) {
  const items = t.elements || [];
  if (!items.length) {
    $("elements").replaceChildren(el("div", { class: "empty", text: `${t.method} chose no elements` +
      ((t.captions_used || []).length ? " (it hands the composer captions)" : "") }));
    return;
  }
  const max = Math.max(...items.map((e) => Math.abs(e.score)), 1e-9);
  $("elements").replaceChildren(...items.map((e) => el("div", { class: `element ${e.status}`, title:
      `${e.category} · post ${e.post_id || "–"} · cos ${fmt(e.score)} · ${e.status}` },
    el("span", { class: "name" }, el("span", { class: "dot", style: `background:${color(e.category)};width:8px;height:8px;border-radius:50%;flex:none` }),
      el("span", { text: e.text })),
    el("div", { class: "bar" }, el("i", { style: `width:${Math.max(2, 100 * Math.abs(e.score) / max)}%;background:${color(e.category)}` })))));
}

// ------------------------------------------------------------------ compare
async function compare() {
  const query = $("query").value.trim();
  if (!query || !state.persona || state.busy) return;
  setBusy(true);
  showError(null);
  try {
    const rows = await api("/api/compare", { method: "POST", body: JSON.stringify({
      persona_id: state.persona.persona_id, query }) });
    const best = Math.max(...rows.map((r) => r.score.score));
    $("compare-grid").replaceChildren(...rows.map((r) => methodCard(r, r.score.score === best)));
    $("compare-card").hidden = false;
  } catch (err) { showError(err); } finally { setBusy(false); }
}

function methodCard(r, best) {
  const s = r.score;
  const terms = el("div", { class: "terms" });
  for (const [name, v] of [["PA", s.pa], ["GS", s.gs], ["CP", s.cp], ["NV", s.nv]]) {
    terms.append(el("span", { text: name }),
      el("div", { class: "bar" }, el("i", { style: `width:${Math.max(0, Math.min(100, 100 * v))}%;background:var(--accent)` })),
      el("span", { text: fmt(v, 2) }));
  }
  return el("div", { class: `method${best ? " best" : ""}`, "data-method": r.method },
    el("h4", {}, el("span", { text: METHOD_NAMES[r.method] || r.method }), best ? el("span", { class: "badge deferred", text: "best" }) : null),
    el("div", { class: "big", text: fmt(s.score) }),
    terms,
    el("div", { class: "ptext", text: r.prompt }));
}

// ------------------------------------------------------------------ start
function start() {
  $("request-form").addEventListener("submit", personalize);
  $("compare").addEventListener("click", compare);
  $("persona").addEventListener("change", (e) => selectPersona(e.target.value).catch(showError));
  $("new-thread").addEventListener("click", () => {
    if (!state.persona) return;
    delete state.threads[state.persona.persona_id];
    delete state.turns[state.persona.persona_id];
    renderTurns();
  });
  $("query").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("request-form").requestSubmit(); }
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    localStorage.setItem("vptt-token", state.token);
    $("token-form").hidden = true;
    loadPersonas().catch(showError);
  });
  loadHealth();
  loadPersonas().catch(showError);
}

start();
