// fmgguf /models page. Plain JS, no dependencies, works offline.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const ui = { models: [], cards: new Map(), quant: new Map(), compare: new Set(), watching: new Set(), gen: null };

// --- API ------------------------------------------------------------------------------------------
function authHeaders() {
  const key = sessionStorage.getItem("fmgguf-key");
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path, opts = {}) {
  const headers = { ...authHeaders(), ...(opts.body ? { "Content-Type": "application/json" } : {}) };
  const res = await fetch(path, { ...opts, headers: { ...headers, ...(opts.headers || {}) } });
  if (res.status === 401) { $("#auth").hidden = false; $("#api-key").focus(); }
  if (!res.ok) throw new Error(await errorText(res));
  return opts.raw ? res : res.json();
}

async function errorText(res) {
  try {
    const body = await res.json();
    const e = body.error && typeof body.error === "object" ? body.error : body;
    return (e.message || res.statusText) + (e.fix ? " — " + e.fix : "");
  } catch (_) { return res.status + " " + res.statusText; }
}

// Server-Sent Events over fetch (EventSource cannot send the API key header).
async function readSSE(res, onEvent) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let event = "message"; const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, data.join("\n"));
    }
  }
}

function say(text, kind = "error") {
  const box = $("#message");
  box.textContent = text; box.className = "message " + kind; box.hidden = !text;
}

// --- formatting -----------------------------------------------------------------------------------
function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
function count(n) {
  if (n == null) return "?";
  if (n >= 1e9) return (n / 1e9).toFixed(n >= 1e10 ? 0 : 1) + "B";
  if (n >= 1e6) return (n / 1e6).toFixed(0) + "M";
  return String(n);
}
function ctx(n) { return n == null ? "?" : n >= 1024 ? Math.round(n / 1024) + "K" : String(n); }
const STATE_TEXT = { not_downloaded: "not downloaded", downloading: "downloading", ready: "ready",
                     loading: "loading", loaded: "loaded", broken: "broken" };

// --- the model list -------------------------------------------------------------------------------
async function loadModels() {
  try {
    const data = await api("/api/models/available");
    ui.models = data.models;
    const fam = $("#family"); const chosen = fam.value;
    fam.length = 1;
    for (const f of data.families) fam.add(new Option(f, f));
    fam.value = chosen;
    render();
    for (const m of ui.models) if (m.download && m.download.state === "running") watchJob(m.download.job_id, m.id);
  } catch (e) { say("Could not load the catalog: " + e.message); }
}

function quantOf(m) {
  const q = ui.quant.get(m.id);
  if (q && m.quants.some(x => x.quant === q)) return m.quants.find(x => x.quant === q);
  return m.quants.find(x => x.downloaded) || m.quants[0];
}

function matches(m) {
  const q = $("#q").value.trim().toLowerCase();
  if (q) {
    const hay = [m.id, m.display_name, m.family, m.specialization, ...(m.capabilities || [])].join(" ").toLowerCase();
    if (!q.split(/\s+/).every(w => hay.includes(w))) return false;
  }
  if ($("#family").value && m.family !== $("#family").value) return false;
  const size = Number($("#size").value);
  if (size && !(m.parameters && m.parameters <= size)) return false;
  const minCtx = Number($("#ctx").value);
  if (minCtx && !(m.context_length && m.context_length >= minCtx)) return false;
  if ($("#f-fim").checked && !m.fim) return false;
  if ($("#f-fits").checked && !m.quants.some(x => x.fit && x.fit.fits)) return false;
  if ($("#f-gpu").checked && !m.quants.some(x => x.fit && x.fit.label === "Full GPU")) return false;
  if ($("#f-local").checked && !m.quants.some(x => x.downloaded)) return false;
  return true;
}

function render() {
  const list = $("#models");
  let shown = 0;
  for (const m of ui.models) {
    let card = ui.cards.get(m.id);
    if (!card) { card = makeCard(m); ui.cards.set(m.id, card); list.appendChild(card); }
    fillCard(card, m);
    const visible = matches(m);
    card.hidden = !visible; if (visible) shown++;
  }
  $("#count").textContent = `${shown} of ${ui.models.length} models`;
}

function makeCard(m) {
  const card = $("#model-tpl").content.firstElementChild.cloneNode(true);
  card.dataset.modelId = m.id;
  const sel = $(".quant", card);
  sel.setAttribute("aria-label", `Quantization of ${m.display_name}`);
  sel.addEventListener("change", () => { ui.quant.set(m.id, sel.value); fillCard(card, current(m.id)); });
  $(".download", card).addEventListener("click", () => download(m.id));
  $(".select", card).addEventListener("click", () => selectModel(m.id));
  $(".verify", card).addEventListener("click", () => verify(m.id));
  $(".delete", card).addEventListener("click", () => remove(m.id));
  $(".compare", card).addEventListener("change", e => toggleCompare(m.id, e.target));
  for (const b of card.querySelectorAll(".actions button")) b.setAttribute("aria-label", `${b.textContent} ${m.display_name}`);
  return card;
}

function current(id) { return ui.models.find(m => m.id === id); }

function fillCard(card, m) {
  const v = quantOf(m);
  card.dataset.status = m.status;
  $(".name", card).textContent = m.display_name;
  $(".name", card).title = m.id;
  const st = $(".state", card);
  st.textContent = STATE_TEXT[m.status] + (m.status === "loaded" && m.loaded_quant ? " · " + m.loaded_quant : "");
  st.dataset.s = m.status;
  st.title = m.status === "broken" && m.broken ? m.broken.reason : "";
  const params = m.active_parameters && m.active_parameters !== m.parameters
    ? `${count(m.parameters)} (${count(m.active_parameters)} active)` : count(m.parameters);
  $(".spec", card).textContent = `${m.family} · ${params} params · ${ctx(m.context_length)} context · ${m.license}`;
  const tags = [m.fim ? "FIM" : null, m.chat ? "chat" : "completion", m.moe ? "MoE" : null, ...(m.capabilities || [])];
  $(".tags", card).textContent = [...new Set(tags.filter(Boolean))].join(" · ");
  const sel = $(".quant", card);
  const want = m.quants.map(q => q.quant + (q.downloaded ? " ✓" : "")).join("|");
  if (sel.dataset.sig !== want) {
    sel.length = 0;
    for (const q of m.quants) sel.add(new Option(q.quant + (q.downloaded ? " ✓" : ""), q.quant));
    sel.dataset.sig = want;
  }
  sel.value = v.quant;
  const fit = $(".fit", card);
  fit.textContent = v.fit ? v.fit.label : "fit unknown";
  fit.dataset.fits = v.fit ? String(v.fit.fits) : "";
  fit.title = v.fit && v.fit.ram_needed != null ? `needs ${bytes(v.fit.ram_needed + (v.fit.vram_needed || 0))}` : "";
  $(".size", card).textContent = bytes(v.size) + (v.exact_size ? "" : " (approx.)");
  const busy = m.status === "downloading" || m.status === "loading";
  $(".download", card).disabled = v.downloaded || busy;
  $(".download", card).textContent = v.downloaded ? "Downloaded" : "Download";
  $(".select", card).disabled = !v.downloaded || busy || (m.status === "loaded" && m.loaded_quant === v.quant);
  $(".verify", card).disabled = !v.downloaded || busy;
  $(".delete", card).disabled = !v.downloaded || busy;
  $(".compare", card).checked = ui.compare.has(m.id);
  const pbox = $(".progress-box", card);
  if (m.status === "downloading" && m.download) showProgress(card, m.download);
  else if (!ui.watching.has(m.id)) pbox.hidden = true;
}

function showProgress(card, job) {
  const box = $(".progress-box", card);
  box.hidden = false;
  const pct = job.percent == null ? 0 : job.percent;
  $("progress", box).value = pct;
  let text = `${pct.toFixed(pct >= 100 ? 0 : 1)}%`;
  if (job.total) text += ` of ${bytes(job.total)}`;
  if (job.speed && job.state === "running") text += ` · ${bytes(job.speed)}/s`;
  $(".progress-text", box).textContent = text;
}

// --- actions --------------------------------------------------------------------------------------
function note(id, text) { const c = ui.cards.get(id); if (c) $(".note", c).textContent = text; }

async function download(id) {
  const m = current(id); const q = quantOf(m).quant;
  try {
    const job = await api(`/api/models/download/${encodeURIComponent(id)}`, { method: "POST", body: JSON.stringify({ quant: q }) });
    m.status = "downloading"; m.download = job; fillCard(ui.cards.get(id), m);
    note(id, `Downloading ${q}…`);
    watchJob(job.job_id, id);
  } catch (e) { note(id, e.message); }
}

async function watchJob(jobId, id) {
  if (ui.watching.has(id)) return;
  ui.watching.add(id);
  let last = null;
  const update = job => { last = job; const c = ui.cards.get(id); if (c) showProgress(c, job); };
  try {
    const res = await api(`/api/models/downloads/${jobId}/events`, { raw: true });
    await readSSE(res, (event, data) => update(JSON.parse(data)));
  } catch (_) {
    // the stream broke: fall back to polling until the job ends
    for (;;) {
      try { last = await api(`/api/models/downloads/${jobId}`); update(last); } catch (_) { break; }
      if (!["queued", "running"].includes(last.state)) break;
      await new Promise(r => setTimeout(r, 1000));
    }
  }
  ui.watching.delete(id);
  if (last && last.state === "done") note(id, "Downloaded and verified.");
  else if (last && last.error) note(id, `Download ${last.state}: ` + (last.error.one_line || last.error.message + (last.error.fix ? " — " + last.error.fix : "")));
  await loadModels();
  const c = ui.cards.get(id);
  if (c && last && last.state === "done") { showProgress(c, last); }
}

async function selectModel(id) {
  const m = current(id); const q = quantOf(m).quant;
  m.status = "loading"; fillCard(ui.cards.get(id), m); note(id, `Loading ${q}…`);
  refreshStatus();
  try {
    const r = await api("/api/models/select", { method: "POST", body: JSON.stringify({ model_id: id, quant: q }) });
    note(id, `Loaded in ${r.load_s != null ? r.load_s.toFixed(1) + " s" : "?"}` + (r.plan && r.plan.label ? ` · ${r.plan.label}` : ""));
  } catch (e) { note(id, e.message); }
  await Promise.all([loadModels(), refreshStatus()]);
}

async function verify(id) {
  const q = quantOf(current(id)).quant;
  note(id, `Verifying ${q}…`);
  try {
    const r = await api(`/api/models/verify/${encodeURIComponent(id)}?quant=${q}`, { method: "POST" });
    note(id, r.ok ? `Verified: SHA256 matches (${r.seconds} s).` : "Verification FAILED: the files do not match their checksums.");
  } catch (e) { note(id, e.message); }
}

async function remove(id) {
  const q = quantOf(current(id)).quant;
  if (!confirm(`Delete ${id} ${q} from this machine?`)) return;
  try { await api(`/api/models/delete/${encodeURIComponent(id)}?quant=${q}`, { method: "DELETE" }); note(id, "Deleted."); }
  catch (e) { note(id, e.message); }
  await loadModels();
}

function toggleCompare(id, box) {
  if (box.checked) {
    if (ui.compare.size >= 3) { box.checked = false; say("Compare up to three models at a time.", "info"); return; }
    ui.compare.add(id);
  } else ui.compare.delete(id);
  renderCompare();
}

async function renderCompare() {
  const ids = [...ui.compare];
  const out = $("#compare-table");
  $("#compare-hint").hidden = ids.length >= 2;
  if (ids.length < 2) { out.textContent = ""; return; }
  try {
    const data = await api("/api/models/compare", { method: "POST", body: JSON.stringify({ model_ids: ids }) });
    const rows = [
      ["Family", m => m.family], ["Parameters", m => count(m.parameters)],
      ["Active parameters", m => count(m.active_parameters)], ["Context", m => ctx(m.context_length)],
      ["Architecture", m => `${m.architecture || "?"}${m.layers ? ", " + m.layers + " layers" : ""}`],
      ["FIM", m => m.fim ? `yes (${m.fim_order})` : "no"], ["Chat", m => m.chat ? m.chat_template : "no"],
      ["License", m => m.license], ["Status", m => STATE_TEXT[m.status]],
      ...data.models[0].quants.map((_, i) => [`Size / fit (${data.models[0].quants[i].quant})`, m => {
        const q = m.quants[i]; return q ? `${bytes(q.size)} · ${q.fit ? q.fit.label : "?"}` : "–"; }]),
      ["Memory at " + ctx(4096), m => bytes(m.quants[0] && m.quants[0].estimate.total)],
      ["Benchmark", m => benchText(m.benchmarks)],
    ];
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    head.appendChild(document.createElement("th")).textContent = "";
    for (const m of data.models) { const th = document.createElement("th"); th.scope = "col"; th.textContent = m.display_name; head.appendChild(th); }
    const body = table.createTBody();
    for (const [label, get] of rows) {
      const tr = body.insertRow();
      const th = document.createElement("th"); th.scope = "row"; th.textContent = label; tr.appendChild(th);
      for (const m of data.models) tr.insertCell().textContent = get(m);
    }
    out.replaceChildren(table);
  } catch (e) { out.textContent = e.message; }
}

function benchText(b) {
  if (!b) return "no runs yet";
  if (typeof b === "object" && b.pass_at_1 != null) return `pass@1 ${(100 * b.pass_at_1).toFixed(1)}%`;
  return typeof b === "string" ? b : JSON.stringify(b).slice(0, 120);
}

// --- status ---------------------------------------------------------------------------------------
async function refreshStatus() {
  try {
    const s = await api("/api/models/status");
    const bar = $("#status");
    const parts = [];
    if (s.current) parts.push(`Loaded: <strong>${esc(s.current.id)}</strong> ${esc(s.current.quant || "")}` +
      (s.current.memory ? ` · ${bytes(s.current.memory)}` : ""));
    else if (s.loading) parts.push(`Loading <strong>${esc(s.loading.model_id)}</strong>…`);
    else parts.push("No model loaded");
    if (s.generating) parts.push("generating");
    if (s.queue.queue_depth) parts.push(`${s.queue.queue_depth} waiting`);
    if (s.downloads.length) parts.push(`${s.downloads.length} download${s.downloads.length > 1 ? "s" : ""}`);
    if (s.process_memory) parts.push(`server RSS ${bytes(s.process_memory)}`);
    bar.innerHTML = parts.join(" · ");
    bar.dataset.loaded = s.current ? s.current.id : "";
  } catch (e) { $("#status").textContent = "Status unavailable: " + e.message; }
}
function esc(t) { return String(t).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`); }

// --- playground -----------------------------------------------------------------------------------
async function generate(ev) {
  ev.preventDefault();
  const out = $("#output"); out.textContent = ""; $("#gen-stats").textContent = "";
  const suffix = $("#suffix").value;
  const body = { prompt: $("#prompt").value, max_tokens: Number($("#max-tokens").value) || 128,
                 temperature: Number($("#temperature").value), stream: true };
  if (suffix) body.suffix = suffix;
  const ctl = new AbortController(); ui.gen = ctl;
  $("#generate").disabled = true; $("#stop").disabled = false;
  try {
    const res = await api("/api/models/generate", { method: "POST", body: JSON.stringify(body), raw: true, signal: ctl.signal });
    await readSSE(res, (event, data) => {
      const d = JSON.parse(data);
      if (event === "done") $("#gen-stats").textContent =
        `${d.completion_tokens} tokens · ${d.tokens_per_s ? d.tokens_per_s.toFixed(1) : "?"} tok/s · first token ${d.ttft_s != null ? (1000 * d.ttft_s).toFixed(0) : "?"} ms · ${d.finish_reason}`;
      else if (event === "error") $("#gen-stats").textContent = "Error: " + d.message + (d.fix ? " — " + d.fix : "");
      else out.textContent += d.text;
    });
  } catch (e) {
    $("#gen-stats").textContent = e.name === "AbortError" ? "Stopped." : "Error: " + e.message;
  } finally {
    ui.gen = null; $("#generate").disabled = false; $("#stop").disabled = true;
    refreshStatus();
  }
}

// --- wiring ---------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["q", "family", "size", "ctx", "f-fim", "f-fits", "f-gpu", "f-local"])
    $("#" + id).addEventListener("input", render);
  $("#play-form").addEventListener("submit", generate);
  $("#stop").addEventListener("click", () => ui.gen && ui.gen.abort());
  $("#auth-form").addEventListener("submit", e => {
    e.preventDefault(); sessionStorage.setItem("fmgguf-key", $("#api-key").value);
    $("#auth").hidden = true; loadModels(); refreshStatus();
  });
  document.addEventListener("keydown", e => {
    if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
      e.preventDefault(); $("#q").focus();
    }
  });
  loadModels(); refreshStatus();
  setInterval(refreshStatus, 2000);
});
