"""The review page: one self-contained HTML document (no external asset), served by review.py."""

PAGE_HTML = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>datakit review</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:10px 18px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
header b{font-size:16px}
.tab{padding:4px 10px;border-radius:4px;border:1px solid #ccc;cursor:pointer;background:#fff}
.tab.on{background:#222;color:#fff;border-color:#222}
#progress{font-weight:600}
main{padding:18px}
.item{display:flex;gap:16px;flex-wrap:wrap}
figure{margin:0;width:330px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:320px;height:320px;object-fit:contain;background:#eee;display:block}
figcaption{font-size:13px;line-height:1.5;margin-top:4px;word-break:break-word}
.sugg{color:#b00;font-weight:600}
.keys{font-size:12px;color:#444;margin-top:14px;line-height:1.8}
kbd{border:1px solid #bbb;border-bottom-width:2px;border-radius:3px;padding:0 4px;background:#fff;font:12px ui-monospace,monospace}
button{margin:2px;padding:4px 8px;cursor:pointer}
#status{color:#555;min-height:1.4em;margin:8px 0}
.done{font-size:18px;color:#2a2;margin:30px 0}
</style></head>
<body>
<header><b>datakit review</b><span id="tabs"></span><span id="progress" data-testid="progress"></span></header>
<main>
<div id="status"></div>
<div id="current"></div>
<div class="keys" id="keys"></div>
</main>
<script>
"use strict";
let S = null, queue = "suspects";
const skipped = new Set();
const QUEUES = [["suspects", "Suspects"], ["conflicts", "Label conflicts"], ["duplicates", "Near-duplicates"]];

function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); }
function isDecided(it) { return it.images.every(im => S.decisions[im.image_id]); }
function current() { return (S.queues[queue] || []).find(it => !isDecided(it) && !skipped.has(it.key)); }
function status(msg) { document.getElementById("status").textContent = msg; }

async function load() {
  const r = await fetch("/api/state", {cache: "no-store"});
  S = await r.json();
  if (!(S.queues[queue] || []).length) {
    const first = QUEUES.find(([q]) => (S.queues[q] || []).length);
    if (first) queue = first[0];
  }
  render();
}

function render() {
  const tabs = QUEUES.map(([q, name]) => {
    const items = S.queues[q] || [];
    const left = items.filter(it => !isDecided(it)).length;
    return `<span class="tab${q === queue ? " on" : ""}" data-queue="${q}">${name} (${left} left)</span>`;
  }).join(" ");
  document.getElementById("tabs").innerHTML = tabs;
  document.querySelectorAll(".tab").forEach(t => t.onclick = () => { queue = t.dataset.queue; skipped.clear(); render(); });
  const items = S.queues[queue] || [];
  const reviewed = items.filter(isDecided).length;
  const prog = document.getElementById("progress");
  prog.textContent = `reviewed ${reviewed} / left ${items.length - reviewed}`;
  prog.dataset.reviewed = reviewed; prog.dataset.left = items.length - reviewed;
  const it = current();
  const cur = document.getElementById("current");
  if (!it) {
    cur.innerHTML = `<div class="done">Nothing left in this queue${skipped.size ? " (skipped items come back after a reload)" : ""}.</div>`;
    cur.dataset.key = "";
  } else {
    cur.dataset.key = it.key;
    const figs = it.images.map(im => {
      const d = S.decisions[im.image_id];
      const link = im.page_url ? ` · <a href="${esc(im.page_url)}" target="_blank" rel="noopener noreferrer">source page</a>` : "";
      return `<figure data-image="${esc(im.image_id)}"><img src="/thumb/${esc(im.image_id)}" alt="">
        <figcaption><b>${esc(im.label)}</b>${im.suggested && im.suggested !== im.label ? ` → <span class="sugg">${esc(im.suggested)}?</span>` : ""}
        ${im.score != null ? `<br>score ${im.score}` : ""}${im.reason ? ` · ${esc(im.reason)}` : ""}
        ${im.query ? `<br>query: ${esc(im.query)}` : ""}${im.provider ? ` · ${esc(im.provider)}` : ""}${link}
        ${d ? `<br><i>decided: ${esc(d.action)} ${esc(d.label)}</i>` : ""}</figcaption></figure>`;
    }).join("");
    const batch = it.images.length > 1 ? `<p>${it.images.length} images: every action applies to the whole group.</p>` : "";
    cur.innerHTML = batch + `<div class="item">${figs}</div>`;
  }
  const classKeys = S.classes.map(c => S.keys[c] ? `<button data-label="${esc(c)}"><kbd>${esc(S.keys[c])}</kbd> ${esc(c)}</button>` : "").join("");
  document.getElementById("keys").innerHTML =
    `<button data-act="accept"><kbd>a</kbd> accept label</button><button data-act="remove"><kbd>x</kbd> remove</button>` +
    `<button data-act="skip"><kbd>s</kbd> skip</button><button data-act="undo"><kbd>u</kbd> undo</button>` +
    ` <kbd>Tab</kbd> next queue<br>relabel: ${classKeys}`;
  document.querySelectorAll("#keys button").forEach(b => b.onclick = () => {
    if (b.dataset.label) act("relabel", b.dataset.label); else if (b.dataset.act === "skip") skip();
    else if (b.dataset.act === "undo") undo(); else act(b.dataset.act);
  });
}

let busy = false;
async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
async function act(action, label) {
  const it = current();
  if (!it || busy) return;
  busy = true;
  try {
    const reason = it.kind === "suspect" ? "suspect:" + (it.images[0].reason || "score") : it.kind;
    await post("/api/decide", {image_ids: it.images.map(i => i.image_id), action, label, reason});
    status(`${action}${label ? " → " + label : ""}: saved`);
    await load();
  } catch (e) { status("not saved: " + e.message); } finally { busy = false; }
}
function skip() { const it = current(); if (it) { skipped.add(it.key); render(); status("skipped"); } }
async function undo() {
  if (busy) return;
  busy = true;
  try { const j = await post("/api/undo", {}); status(j.undone ? "undone" : "nothing to undo"); skipped.clear(); await load(); }
  catch (e) { status("undo failed: " + e.message); } finally { busy = false; }
}
function nextQueue() { const i = QUEUES.findIndex(([q]) => q === queue); queue = QUEUES[(i + 1) % QUEUES.length][0]; skipped.clear(); render(); }

document.addEventListener("keydown", e => {
  if (!S || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (k === "Tab") { e.preventDefault(); nextQueue(); return; }
  if (k === "a" || k === "Enter") act("accept");
  else if (k === "x" || k === "Delete") act("remove");
  else if (k === "s" || k === "ArrowRight") skip();
  else if (k === "u" || k === "z" || k === "Backspace") undo();
  else {
    const cls = S.classes.find(c => S.keys[c] === k);
    if (cls) act("relabel", cls);
  }
});
load();
</script>
</body></html>
"""
