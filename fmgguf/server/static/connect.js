// The "Connect your editor" panel: settings from GET /api/connect, one tab per editor, copy to clipboard.
"use strict";

const connectUI = { data: null, tool: "continue" };

function connectHeaders() {
  const key = sessionStorage.getItem("fmgguf-key");
  return key ? { Authorization: "Bearer " + key } : {};
}

async function loadConnect() {
  const roles = document.querySelector("#connect-roles");
  try {
    const res = await fetch("/api/connect", { headers: connectHeaders() });
    if (!res.ok) throw new Error(res.status === 401 ? "enter the API key above" : res.status + " " + res.statusText);
    connectUI.data = await res.json();
  } catch (e) {
    roles.textContent = "Could not load the editor settings: " + e.message;
    return;
  }
  const d = connectUI.data;
  roles.textContent = `Server ${d.base_url} · autocomplete (FIM): ${d.fim_model || "none downloaded"} · chat: ${d.chat_model || "none downloaded"}`;
  const tabs = document.querySelector("#connect-tabs");
  tabs.replaceChildren();
  for (const t of d.tools) {
    const b = document.createElement("button");
    b.type = "button"; b.role = "tab"; b.textContent = t.tool; b.dataset.tool = t.tool;
    b.addEventListener("click", () => { connectUI.tool = t.tool; showConnect(); });
    tabs.append(b);
  }
  showConnect();
}

function showConnect() {
  const d = connectUI.data;
  if (!d) return;
  const t = d.tools.find(x => x.tool === connectUI.tool) || d.tools[0];
  for (const b of document.querySelectorAll("#connect-tabs button")) {
    const on = b.dataset.tool === t.tool;
    b.setAttribute("aria-selected", on ? "true" : "false");
    b.classList.toggle("primary", on);
  }
  document.querySelector("#connect-path").textContent = t.path;
  document.querySelector("#connect-cmd").textContent = `fmgguf connect ${t.tool} --url ${d.base_url} --write`;
  document.querySelector("#connect-text").textContent = t.text;
  const notes = document.querySelector("#connect-notes");
  notes.replaceChildren(...t.notes.map(n => { const li = document.createElement("li"); li.textContent = n; return li; }));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelector("#connect-refresh").addEventListener("click", loadConnect);
  document.querySelector("#connect-copy").addEventListener("click", async () => {
    const text = document.querySelector("#connect-text").textContent;
    const btn = document.querySelector("#connect-copy");
    try { await navigator.clipboard.writeText(text); btn.textContent = "Copied"; }
    catch (_) {  // no clipboard permission (plain http off localhost): select the text instead
      const range = document.createRange(); range.selectNodeContents(document.querySelector("#connect-text"));
      const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range); btn.textContent = "Selected";
    }
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  });
  document.querySelector("#auth-form").addEventListener("submit", () => setTimeout(loadConnect, 0));
  loadConnect();
});
