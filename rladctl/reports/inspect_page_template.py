"""The HTML, CSS and JS of the ``rladctl inspect --html`` page (data format: inspect_page.py).

Everything is inline: the page makes no request. The script parses the embedded JSON once, draws the
summary and the two plots (SVG), and renders one page of rows at a time, inflating only the token
blocks those rows live in. Hover a token for its numbers. When the first page is on screen it sets
``data-ready-ms`` on <body> (ms since navigation started); an uncaught error sets ``data-error``.
"""

from __future__ import annotations

import html

DATA_ID = "rladctl-inspect"  # the <script> element holding the JSON

CSS = r"""
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f7f8fa; --card: #fff;
        --ok: #1a7f64; --bad: #c2410c; --accent: #3056d3; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
.wrap { max-width: 1280px; margin: 0 auto; padding: 18px 24px 40px; }
h1 { font-size: 20px; margin: 0 0 2px; }
h1 small { font-weight: 400; color: var(--muted); font-size: 14px; margin-left: 8px; }
.sub { color: var(--muted); margin-bottom: 14px; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 8px; margin-bottom: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px; }
.card b { display: block; font-size: 17px; font-variant-numeric: tabular-nums; }
.card span { color: var(--muted); font-size: 12px; }
.plots { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; margin-bottom: 12px; }
.plot { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px 4px;
        margin: 0; }
.plot figcaption { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
.plot svg { width: 100%; height: auto; display: block; }
.plot text { font-size: 11px; fill: var(--muted); }
.controls { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center;
            background: var(--bg); padding: 8px 0; border-bottom: 1px solid var(--line); margin-bottom: 10px; }
.controls label { color: var(--muted); font-size: 12px; }
.controls select, .controls input, .controls button { font: inherit; padding: 3px 6px; border: 1px solid #cfd4dc;
            border-radius: 6px; background: #fff; color: var(--fg); }
.controls input { width: 150px; }
.controls button { cursor: pointer; min-width: 30px; }
.pager { margin-left: auto; display: flex; gap: 6px; align-items: center; }
.legend { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; font-size: 12px; color: var(--muted);
          margin-bottom: 10px; }
.legend .chip { padding: 1px 6px; border-radius: 4px; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
                color: var(--fg); }
.row { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
       margin-bottom: 10px; }
.row > header { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: baseline; margin-bottom: 6px; }
.row .rid { font-weight: 700; }
.row .pid { color: var(--muted); }
.row .num { font-variant-numeric: tabular-nums; }
.row .num i { font-style: normal; color: var(--muted); }
.pill { border-radius: 999px; padding: 0 8px; font-size: 12px; font-weight: 600; color: #fff; }
.pill.ok { background: var(--ok); } .pill.bad { background: var(--bad); }
details.prompt { margin-bottom: 6px; color: var(--muted); }
details.prompt summary { cursor: pointer; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
details.prompt code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; color: var(--fg); }
details.prompt pre { white-space: pre-wrap; margin: 4px 0 0; padding: 6px 8px; background: var(--bg);
                      border-radius: 6px; color: var(--fg); }
.toks { font: 13px/1.7 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; white-space: pre-wrap;
        word-break: break-word; }
.toks span { border-radius: 2px; cursor: default; }
.toks span:hover, .toks span.pinned { outline: 2px solid var(--accent); }
.s0 { background: #2166ac; color: #fff; } .s1 { background: #6aa6d2; } .s2 { background: #abd0e8; }
.s3 { background: #dcebf5; }
.s4 { background: transparent; }
.s5 { background: #fbe2d5; } .s6 { background: #f5b69c; } .s7 { background: #e3795c; }
.s8 { background: #b2182b; color: #fff; }
.toks .s0, .toks .s8 { box-shadow: inset 0 -3px 0 #ffc400; font-weight: 600; }
body.surprise .s5 { background: #fff2c6; } body.surprise .s6 { background: #ffd67a; }
body.surprise .s7 { background: #fba15a; } body.surprise .s8 { background: #d95f02; color: #fff; }
body.surprise .toks .s8 { box-shadow: none; font-weight: 400; }
.empty { color: var(--muted); padding: 20px; text-align: center; }
#tip { position: fixed; z-index: 5; pointer-events: none; background: #111827; color: #f9fafb; border-radius: 8px;
       padding: 8px 10px; font-size: 12px; line-height: 1.5; box-shadow: 0 6px 20px rgba(0,0,0,.25);
       max-width: 360px; }
#tip table { border-collapse: collapse; } #tip td { padding: 0 6px 0 0; font-variant-numeric: tabular-nums; }
#tip td:first-child { color: #9ca3af; } #tip .tt { font-family: ui-monospace, monospace; font-size: 13px; }
#tip .cl { color: #ffc400; font-weight: 600; } #tip .id { color: #9ca3af; }
#status { color: var(--bad); font-weight: 600; }
@media (max-width: 820px) { .plots { grid-template-columns: 1fr; } }
"""

BODY = r"""
<div class="wrap">
  <h1>rladctl inspect<small id="kind"></small></h1>
  <div class="sub" id="where"></div>
  <div id="status" hidden></div>
  <div class="cards" id="cards"></div>
  <div class="plots">
    <figure class="plot"><figcaption id="hist-title"></figcaption><svg id="hist" viewBox="0 0 560 230"></svg></figure>
    <figure class="plot"><figcaption id="pos-title"></figcaption><svg id="pos" viewBox="0 0 560 230"></svg></figure>
  </div>
  <div class="controls">
    <label>show <select id="f-where">
      <option value="">all rows</option><option value="correct">correct</option><option value="wrong">wrong</option>
      <option value="clamped">with clamped tokens</option><option value="signal">advantage &ne; 0</option>
    </select></label>
    <label>find <input id="f-find" placeholder="prompt id or row"></label>
    <label>sort by <select id="f-sort"></select></label>
    <button id="f-order" title="reverse the order">ascending</button>
    <label>per page <select id="f-size">
      <option>5</option><option selected>10</option><option>25</option><option>50</option>
    </select></label>
    <span class="pager"><button id="p-prev" title="previous page (&larr;)">&lsaquo;</button><span id="p-info"></span>
      <button id="p-next" title="next page (&rarr;)">&rsaquo;</button></span>
  </div>
  <div class="legend" id="legend"></div>
  <main id="list"></main>
</div>
<div id="tip" hidden></div>
"""

JS = r"""
(() => {
"use strict";
const $ = (id) => document.getElementById(id);
const fail = (msg) => {
  document.body.dataset.error = msg;
  $("status").hidden = false;
  $("status").textContent = "error: " + msg;
};
window.addEventListener("error", (e) => fail(e.message));
window.addEventListener("unhandledrejection", (e) => fail(String(e.reason)));

const D = JSON.parse($("__DATA_ID__").textContent);
document.body.dataset.parsedMs = performance.now().toFixed(1);
const M = D.meta, R = D.rows, S = M.summary, NR = R.row.length, Q = M.quantum, SAT = -32768;
const vocab = D.vocab ? new Map(D.vocab.ids.map((id, k) => [id, D.vocab.texts[k]])) : null;
const NS = "http://www.w3.org/2000/svg";
const fmt = (x, d = 3) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);
const sgn = (x, d = 3) => (x > 0 ? "+" : "") + fmt(x, d);
const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(x < 0.1 ? 2 : 1) + "%";
const esc = (s) => s.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
if (!M.scored) document.body.classList.add("surprise");

// ---- header, summary cards, legend ---------------------------------------------------------
$("kind").textContent = M.kind + " artifact" +
  (M.scored ? ", α = " + M.alpha + ", c = " + M.clamp : ", not teacher-scored");
$("where").textContent = M.artifact +
  (M.tokenizer ? "  ·  tokens decoded with " + M.tokenizer : "  ·  no tokenizer found: token ids shown");
const cards = [[S.selected.toLocaleString(), `rows (of ${S.rows.toLocaleString()})`],
  [S.tokens.toLocaleString(), "completion tokens"], [fmt(S.reward_mean), "mean reward"],
  [pct(S.correct_frac), "correct"], [fmt(S.sampler_logprob_mean), "mean lp (sampler)"]];
if (M.scored) {
  cards.push([sgn(S.teacher_gap_mean), "mean lp − lp_T"], [fmt(S.disagreement_mean), "mean |lp − lp_T|"],
             [pct(S.clamp_frac), "tokens clamped"], [fmt(S.ratio_mean), "mean ratio r"]);
}
$("cards").innerHTML = cards.map(([v, k]) =>
  `<div class="card"><b>${esc(String(v))}</b><span>${esc(k)}</span></div>`).join("");

function legend() {
  const c = M.clamp, g = M.gap_shades, u = M.surprise_shades;
  const chips = M.scored ? [
    [0, "lp − lp_T < −" + c + " (clamped)"], [1, "< −" + g[2] * c], [2, "< −" + g[1] * c], [3, "< −" + g[0] * c],
    [4, "|d| < " + g[0] * c],
    [5, "> " + g[0] * c], [6, "> " + g[1] * c], [7, "> " + g[2] * c], [8, "> " + c + " (clamped)"]]
    : [[4, "lp > −" + u[0]], [5, "≤ −" + u[0]], [6, "≤ −" + u[1]], [7, "≤ −" + u[2]],
       [8, "≤ −" + u[3] + " nats"]];
  const what = M.scored ? "token colour: d = lp − lp_T (blue: the teacher likes the token more; red: less)"
                        : "token colour: sampler log-prob lp (no teacher scores in this artifact)";
  $("legend").innerHTML = `<span>${what}</span>` +
    chips.map(([s, t]) => `<span class="chip s${s}">${esc(t)}</span>`).join("");
}
legend();

// ---- plots (inline SVG) -----------------------------------------------------------------------
const W = 560, H = 230, PAD = {l: 44, r: 10, t: 22, b: 34};
function el(name, attrs, parent, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}
function ticks(lo, hi, n) {
  const step0 = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(step0 || 1)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}
function axes(svg, x, y, xs, ys, yfmt, xlabel) {
  el("line", {x1: PAD.l, x2: W - PAD.r, y1: y(ys[0]), y2: y(ys[0]), stroke: "#98a2b3"}, svg);
  for (const v of ys) {
    el("line", {x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), stroke: "#eef0f3"}, svg);
    el("text", {x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end"}, svg, yfmt(v));
  }
  for (const v of xs) el("text", {x: x(v), y: H - PAD.b + 15, "text-anchor": "middle"}, svg, String(v));
  el("text", {x: (PAD.l + W - PAD.r) / 2, y: H - 4, "text-anchor": "middle"}, svg, xlabel);
}
function histogram() {
  const h = D.plots.histogram, svg = $("hist"), e = h.edges, B = e.length - 1;
  $("hist-title").textContent = h.title + ": correct vs wrong completions";
  const series = [["correct", "#1a7f64", h.correct_tokens], ["wrong", "#e4572e", h.wrong_tokens]]
    .filter((s) => s[2] > 0);
  const top = Math.max(1e-9, ...series.flatMap(([k]) => h[k]));
  const x = (v) => PAD.l + (v - e[0]) / (e[B] - e[0]) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - v / top * (H - PAD.t - PAD.b);
  axes(svg, x, y, ticks(e[0], e[B], 8), ticks(0, top, 4), (v) => (100 * v).toFixed(v * 100 < 1 ? 1 : 0) + "%",
       (M.scored ? "lp − lp_T" : "lp") + " (end bins hold everything beyond)");
  for (const [k, colour] of series) {
    let d = `M${x(e[0])},${y(0)}`;
    for (let b = 0; b < B; b++) d += `L${x(e[b])},${y(h[k][b])}L${x(e[b + 1])},${y(h[k][b])}`;
    d += `L${x(e[B])},${y(0)}Z`;
    el("path", {d, fill: colour, "fill-opacity": 0.28, stroke: colour, "stroke-width": 1.5}, svg);
  }
  for (const m of h.marks) {
    el("line", {x1: x(m), x2: x(m), y1: PAD.t - 4, y2: H - PAD.b, stroke: "#344054", "stroke-dasharray": "4 3"}, svg);
    el("text", {x: x(m), y: PAD.t - 8, "text-anchor": "middle"}, svg, m < 0 ? "−c" : "+c");
  }
  series.forEach(([k, colour, n], j) => {
    el("rect", {x: W - PAD.r - 150, y: PAD.t + 2 + 16 * j, width: 10, height: 10, fill: colour,
                "fill-opacity": 0.6}, svg);
    el("text", {x: W - PAD.r - 135, y: PAD.t + 11 + 16 * j}, svg, `${k} (${n.toLocaleString()} tokens)`);
  });
}
function byPosition() {
  const p = D.plots.by_position, svg = $("pos"), v = p.values, n = v.length, w = p.bin_width;
  $("pos-title").textContent = p.title + " by token position";
  const lo = Math.min(0, ...v), hi = Math.max(p.fraction ? 1e-9 : 0, ...v);
  const x = (t) => PAD.l + t / Math.max(1, n * w) * (W - PAD.l - PAD.r);
  const y = (u) => H - PAD.b - (u - lo) / ((hi - lo) || 1) * (H - PAD.t - PAD.b);
  const yfmt = (u) => p.fraction ? (100 * u).toFixed(u * 100 < 1 ? 1 : 0) + "%" : u.toFixed(1);
  axes(svg, x, y, ticks(0, n * w, 8), ticks(lo, hi, 4), yfmt, `token position (bins of ${w})`);
  for (let b = 0; b < n; b++) {
    const y0 = y(Math.max(0, v[b])), y1 = y(Math.min(0, v[b]));
    const r = el("rect", {x: x(b * w) + 0.5, y: y0, width: Math.max(1, x(w) - x(0) - 1), height: Math.max(0, y1 - y0),
                          fill: p.fraction ? "#b2182b" : "#d95f02", "fill-opacity": 0.75}, svg);
    const value = p.fraction ? pct(v[b]) : fmt(v[b]);
    el("title", {}, r, `positions ${b * w}–${(b + 1) * w - 1}: ${value} over ${p.tokens[b]} tokens`);
  }
}
histogram();
byPosition();

// ---- token blocks, inflated on demand --------------------------------------------------------
const cache = new Map(), CACHE_MAX = 64;
function block(b) {
  let p = cache.get(b);
  if (p) { cache.delete(b); cache.set(b, p); return p; }
  p = inflate(D.blocks[b]);
  cache.set(b, p);
  if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value);
  return p;
}
async function inflate(blk) {
  const bin = atob(blk.data), packed = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) packed[i] = bin.charCodeAt(i);
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const n = blk.tokens, ids = new Uint32Array(n);
  let at = 0;
  for (let k = 0; k < M.id_bytes; k++, at += n) for (let i = 0; i < n; i++) ids[i] |= raw[at + i] << (8 * k);
  const i16 = () => {  // two byte planes -> int16 (the assignment wraps 0..65535 to the signed range)
    const a = new Int16Array(n);
    for (let i = 0; i < n; i++) a[i] = raw[at + i] | (raw[at + n + i] << 8);
    at += 2 * n;
    return a;
  };
  const out = {ids, lp: i16()};
  if (M.scored) { out.lpT = i16(); out.logr = i16(); }
  out.shade = raw.subarray(at, at + n);
  return out;
}

// ---- rows: filter, sort, page -----------------------------------------------------------------
R.order = R.row.map((_, k) => k);  // the order inspect selected them in (--worst: largest first)
const SORTS = [["order", "selection order"], ["row", "row"], ["reward", "reward"], ["advantage", "advantage"],
  ["disagreement", "mean |lp − lp_T|"], ["clamp_frac", "clamped fraction"], ["ratio_mean", "mean ratio"],
  ["tokens", "length"], ["lp_mean", "mean lp"]].filter(([k]) => k in R);
$("f-sort").innerHTML = SORTS.map(([k, t]) => `<option value="${k}">${esc(t)}</option>`).join("");
if (!M.scored) $("f-where").querySelector('[value="clamped"]').disabled = true;
let view = [], page = 0, descending = false, shown = [], shownBlocks = [], seq = 0, pin = null;

function refilter() {
  const where = $("f-where").value, find = $("f-find").value.trim().toLowerCase(), key = $("f-sort").value;
  view = [];
  for (let k = 0; k < NR; k++) {
    if (where === "correct" && !R.correct[k]) continue;
    if (where === "wrong" && R.correct[k]) continue;
    if (where === "clamped" && !(R.clamp_frac[k] > 0)) continue;
    if (where === "signal" && R.advantage[k] === 0) continue;
    if (find && !(String(R.row[k]) === find || R.prompt_id[k].toLowerCase().includes(find))) continue;
    view.push(k);
  }
  const sign = descending ? -1 : 1;
  view.sort((a, b) => sign * (R[key][a] - R[key][b]) || a - b);
  page = 0;
  return render();
}

async function render() {
  const mine = ++seq, size = +$("f-size").value, pages = Math.max(1, Math.ceil(view.length / size));
  page = Math.max(0, Math.min(page, pages - 1));
  const rows = view.slice(page * size, page * size + size);
  $("p-info").textContent = `page ${page + 1} of ${pages} · ${view.length.toLocaleString()} rows`;
  const blocks = await Promise.all(rows.map((k) => block(R.block[k])));
  if (mine !== seq) return;  // a newer render started meanwhile
  shown = rows;
  shownBlocks = blocks;
  unpin();
  $("list").innerHTML = rows.map((k, j) => card(k, j, blocks[j])).join("") ||
    '<p class="empty">No completion matches.</p>';
  document.body.dataset.rows = String(rows.length);
  if (!document.body.dataset.readyMs) document.body.dataset.readyMs = performance.now().toFixed(1);
}

function tokenText(id) {
  const t = vocab ? vocab.get(id) : undefined;
  return t === undefined ? "[" + id + "]" : t;
}
function card(k, j, blk) {
  const off = R.offset[k], n = R.tokens[k];
  const parts = new Array(n);
  for (let t = 0; t < n; t++) {
    let text = esc(tokenText(blk.ids[off + t])).replace(/\n/g, "↵\n");
    if (text === "") text = "∅";
    parts[t] = `<span class="s${blk.shade[off + t]}" data-t="${t}">${text}</span>`;
  }
  const ok = R.correct[k], prompt = D.prompts[R.prompt[k]];
  const num = (label, value) => `<span class="num"><i>${label}</i> ${value}</span>`;
  const stats = [num("reward", fmt(R.reward[k])), num("A", sgn(R.advantage[k])), num("tokens", n.toLocaleString()),
                 num(esc(R.finish_reason[k]), "")];
  if (M.scored) {
    stats.push(num("mean |d|", fmt(R.disagreement[k])), num("clamped", pct(R.clamp_frac[k])),
               num("mean r", fmt(R.ratio_mean[k])));
  } else {
    stats.push(num("mean lp", fmt(R.lp_mean[k])));
  }
  const lastLine = prompt.trimEnd().split("\n").pop();
  const gist = lastLine.length > 140 ? "…" + lastLine.slice(-140) : lastLine;
  return `<article class="row" data-j="${j}"><header><span class="rid">row ${R.row[k]}</span>` +
    `<span class="pid">prompt ${esc(R.prompt_id[k])} · sample ${R.sample_idx[k]}</span>` +
    `<span class="pill ${ok ? "ok" : "bad"}">${ok ? "correct" : "wrong"}</span>${stats.join("")}</header>` +
    `<details class="prompt"><summary>prompt <code>${esc(gist)}</code></summary><pre>${esc(prompt)}</pre></details>` +
    `<div class="toks">${parts.join("")}</div></article>`;
}

// ---- token details: hover, or click to pin ----------------------------------------------------
const tip = $("tip");
const lpText = (q) => q === SAT ? "≤ −64" : sgn(q / Q);
function describe(span) {
  const j = +span.closest("article").dataset.j, k = shown[j], blk = shownBlocks[j];
  const t = +span.dataset.t, i = R.offset[k] + t, id = blk.ids[i];
  const lines = [["position", `${t} of ${R.tokens[k]}`], ["lp (sampler)", lpText(blk.lp[i])]];
  if (M.scored) {
    const d = (blk.lp[i] - blk.lpT[i]) / Q, clamped = Math.abs(blk.shade[i] - M.max_shade) === M.max_shade;
    lines.push(["lp_T (teacher)", lpText(blk.lpT[i])], ["d = lp − lp_T", sgn(d)],
      ["clamp", clamped ? `<span class="cl">clamped: |d| > c = ${M.clamp}</span>` : `|d| ≤ c = ${M.clamp}`],
      [`ratio r (α ${M.alpha})`, fmt(Math.exp(blk.logr[i] / Q), 4)]);
  }
  tip.innerHTML = `<div class="tt">${esc(JSON.stringify(tokenText(id)))} <span class="id">id ${id}</span></div>` +
    "<table>" + lines.map(([a, b]) => `<tr><td>${a}</td><td>${b}</td></tr>`).join("") + "</table>";
  tip.hidden = false;
}
function place(x, y) {
  const w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = Math.max(8, Math.min(x + 14, window.innerWidth - w - 8)) + "px";
  tip.style.top = (y + 18 + h > window.innerHeight ? y - h - 10 : y + 18) + "px";
}
function pinTo(span) {
  unpin();
  pin = span;
  span.classList.add("pinned");
  describe(span);
  const box = span.getBoundingClientRect();
  place(box.left, box.bottom - 12);
}
function unpin() {
  if (pin) pin.classList.remove("pinned");
  pin = null;
  tip.hidden = true;
}
const tokenAt = (ev) => ev.target.closest ? ev.target.closest("span[data-t]") : null;
$("list").addEventListener("mouseover", (ev) => {
  if (pin) return;
  const span = tokenAt(ev);
  if (!span) { tip.hidden = true; return; }
  describe(span);
  place(ev.clientX, ev.clientY);
});
$("list").addEventListener("mousemove", (ev) => { if (!pin && !tip.hidden) place(ev.clientX, ev.clientY); });
$("list").addEventListener("mouseleave", () => { if (!pin) tip.hidden = true; });
document.addEventListener("click", (ev) => {
  const span = tokenAt(ev);
  if (span && span !== pin) pinTo(span); else unpin();
});
window.addEventListener("scroll", () => { if (pin) pinTo(pin); }, {passive: true});

// ---- controls, and the state in the address (#sort=disagreement&desc=1&where=wrong&pin=ROW:TOKEN) --
function setOrder(desc) {
  descending = desc;
  $("f-order").textContent = descending ? "descending" : "ascending";
}
for (const id of ["f-where", "f-sort"]) $(id).addEventListener("change", () => refilter());
$("f-find").addEventListener("input", () => refilter());
$("f-size").addEventListener("change", render);
$("f-order").addEventListener("click", () => { setOrder(!descending); refilter(); });
$("p-prev").addEventListener("click", (ev) => { ev.stopPropagation(); page--; render(); });
$("p-next").addEventListener("click", (ev) => { ev.stopPropagation(); page++; render(); });
document.addEventListener("keydown", (ev) => {
  if (ev.target.matches("input, select")) return;
  if (ev.key === "ArrowLeft") { page--; render(); }
  if (ev.key === "ArrowRight") { page++; render(); }
  if (ev.key === "Escape") unpin();
});
async function start() {
  const state = new URLSearchParams(location.hash.slice(1));
  if (SORTS.some(([k]) => k === state.get("sort"))) $("f-sort").value = state.get("sort");
  if ([...$("f-where").options].some((o) => o.value === state.get("where") && !o.disabled)) {
    $("f-where").value = state.get("where");
  }
  if (state.has("find")) $("f-find").value = state.get("find");
  setOrder(state.get("desc") === "1");
  await refilter();
  const [row, token] = (state.get("pin") || "").split(":").map(Number);
  const at = view.indexOf(R.row.indexOf(row)), size = +$("f-size").value;
  if (!state.has("pin") || at < 0) return;
  page = Math.floor(at / size);
  await render();
  const span = document.querySelector(`article[data-j="${at % size}"] span[data-t="${token}"]`);
  if (span) { span.scrollIntoView({block: "nearest"}); pinTo(span); }
}
start();
})();
"""


def render(data_json: str, title: str) -> str:
    """The page around ``data_json`` (already safe inside <script>: no '<' in it)."""
    return "".join(
        [
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>{BODY}",
            f'<script type="application/json" id="{DATA_ID}">{data_json}</script>\n',
            f"<script>{JS.replace('__DATA_ID__', DATA_ID)}</script>\n</body></html>\n",
        ]
    )
