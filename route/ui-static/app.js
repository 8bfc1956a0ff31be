// hearth's web page: models, activity, logs and a playground, from the router's /ui/events, /logs/stream and /v1.
// No framework, no build step. Text from the server only ever goes in through textContent.
"use strict";

const KEY = "hearth-admin-key"; // sessionStorage: this tab only
const $ = (id) => document.getElementById(id);
const state = { snap: null, events: null, refused: false, log: null, logBuffer: [], paused: false, chat: [], answer: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
}
const num = (v, digits) => (v === null || v === undefined ? "–" : digits === undefined ? String(v) : v.toFixed(digits));
const adminKey = () => sessionStorage.getItem(KEY) || "";
const adminHeaders = () => (adminKey() ? { Authorization: "Bearer " + adminKey() } : {});

async function errorText(res) {
  try { const body = await res.json(); return (body.error && body.error.message) || res.statusText; } catch { return res.statusText; }
}

// Server-sent events over fetch (EventSource cannot send the Authorization header): calls onData per `data:`.
async function readEvents(url, headers, signal, onData) {
  const res = await fetch(url, { headers, signal, cache: "no-store" });
  if (!res.ok) { const err = new Error(await errorText(res)); err.status = res.status; throw err; }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) onData(data);
    }
  }
}

// -- the admin key ------------------------------------------------------------------------------------------------

function askKey(message) {
  $("key-form").hidden = false;
  $("key-msg").textContent = message || "";
  $("key-input").focus();
}

function refused() {
  state.refused = true;
  setConn("admin key needed", "bad");
  askKey(adminKey() ? "The router refused this admin key." : "This router needs its admin key.");
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("key-input").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  $("key-input").value = "";
  $("key-form").hidden = true;
  state.refused = false;
  connect();
  if (!$("logs").hidden) openLog();
});
$("key-change").addEventListener("click", () => ($("key-form").hidden ? askKey("") : ($("key-form").hidden = true)));

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

function setConn(text, cls) {
  $("conn").textContent = text;
  $("conn").className = "conn " + (cls || "");
}

// -- live snapshots -----------------------------------------------------------------------------------------------

function connect() {
  if (state.events) state.events.abort();
  const ctl = (state.events = new AbortController());
  setConn("connecting");
  readEvents("/ui/events", adminHeaders(), ctl.signal, (data) => {
    setConn("live", "live");
    render(JSON.parse(data));
  }).then(
    () => retry(ctl),
    (err) => {
      if (ctl.signal.aborted) return;
      if (err.status === 401 || err.status === 403) return refused();
      retry(ctl);
    },
  );
}

function retry(ctl) {
  if (ctl.signal.aborted || state.refused) return;
  setConn("reconnecting", "bad");
  setTimeout(() => state.events === ctl && connect(), 2000);
}

function render(snap) {
  state.snap = snap;
  renderMemory(snap.memory);
  renderModels(snap.models);
  renderActivity(snap.activity);
  renderLogSources(snap.logs);
}

function meter(label, held, budget) {
  const pct = budget ? Math.min(100, (100 * held) / budget) : 0;
  const fill = h("div", { class: "fill" });
  fill.style.width = pct + "%"; // CSSOM, not an inline style attribute: allowed by style-src 'self'
  return h("div", { class: "meter" },
    h("div", { class: "label" }, h("span", {}, label), h("span", {}, bytes(held) + (budget ? " of " + bytes(budget) : " held, no budget"))),
    h("div", { class: "track" }, fill));
}

function renderMemory(memory) {
  const box = $("memory");
  if (!memory) return box.replaceChildren();
  const b = memory.budget, held = memory.held;
  box.replaceChildren(meter("VRAM", held.vram_bytes, b.vram_bytes), meter("RAM", held.ram_bytes, b.ram_bytes));
}

async function loadOrUnload(model, action, button) {
  button.disabled = true;
  notice("");
  try {
    const res = await fetch("/models/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...adminHeaders() },
      body: JSON.stringify({ model }),
    });
    if (res.status === 401 || res.status === 403) refused();
    else if (!res.ok) notice(action + " " + model + ": " + (await errorText(res)));
  } catch (err) {
    notice(action + " " + model + ": " + err.message);
  } finally {
    button.disabled = false;
  }
}

function renderModels(models) {
  const rows = models.map((m) => {
    const busy = m.status === "loading" || m.status === "unloading";
    const memory = m.vram_bytes || m.ram_bytes ? [m.vram_bytes ? "VRAM " + bytes(m.vram_bytes) : null, "RAM " + bytes(m.ram_bytes)].filter(Boolean).join(" · ") : "–";
    const action = m.status === "unloaded" ? "load" : "unload";
    const button = h("button", { type: "button", "data-model": m.name, "data-action": action, disabled: busy || m.pinned });
    button.textContent = action === "load" ? "Load" : "Unload";
    button.addEventListener("click", () => loadOrUnload(m.name, action, button));
    const queued = m.queued === null ? m.waiting : m.queued + m.waiting;
    return h("tr", { "data-model": m.name },
      h("td", {}, h("strong", {}, m.name), m.aliases.length ? h("span", { class: "alias" }, m.aliases.join(", ")) : null),
      h("td", {}, h("span", { class: "status " + m.status, "data-status": m.status }, m.status), m.room ? h("div", { class: "hint" }, m.room) : null),
      h("td", { class: "num" }, memory),
      h("td", { class: "num" }, m.ttl ? (m.ttl_left === null ? num(m.ttl) + " s" : num(m.ttl_left, 0) + " s") : "–"),
      h("td", { class: "num" }, num(m.running === null ? m.active : m.running)),
      h("td", { class: "num" }, num(queued)),
      h("td", { class: "num" }, m.ttft_ms === null ? "–" : num(m.ttft_ms, 0) + " ms"),
      h("td", { class: "num" }, num(m.tokens_per_s, 1)),
      h("td", {}, m.vram_bytes === null ? null : button));
  });
  $("models-table").tBodies[0].replaceChildren(...rows);
}

function renderActivity(items) {
  const rows = items.map((r) =>
    h("tr", {},
      h("td", {}, new Date(r.time * 1000).toLocaleTimeString()),
      h("td", {}, r.model || "–"),
      h("td", { class: "code" }, r.method + " " + r.path),
      h("td", { class: r.status >= 400 || !r.ended ? "error" : "" }, r.status === null ? "–" : r.status, r.ended ? "" : " (client gone)"),
      h("td", { class: "num" }, num(r.prompt_tokens)),
      h("td", { class: "num" }, num(r.completion_tokens)),
      h("td", { class: "num" }, num(r.cached_tokens)),
      h("td", { class: "num" }, num(r.ms, 0))));
  $("activity-table").tBodies[0].replaceChildren(...rows);
}

// -- logs ---------------------------------------------------------------------------------------------------------

function renderLogSources(names) {
  const select = $("log-source");
  const have = [...select.options].map((o) => o.value).join("\n");
  if (have === names.join("\n")) return;
  const current = select.value;
  select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
  if (names.includes(current)) select.value = current;
  if (!$("logs").hidden && (!state.log || select.value !== current)) openLog();
}

const MAX_LINES = 2000;

function showLines(lines) {
  const box = $("log-lines");
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
  box.append(...lines.map((l) => h("div", {}, l)));
  while (box.childElementCount > MAX_LINES) box.firstElementChild.remove();
  if (atEnd) box.scrollTop = box.scrollHeight;
}

function openLog() {
  if (state.log) state.log.abort();
  const source = $("log-source").value;
  state.log = null;
  if (!source) return;
  const ctl = (state.log = new AbortController());
  $("log-lines").replaceChildren();
  state.logBuffer = [];
  $("log-state").textContent = "following " + source;
  readEvents("/logs/stream?source=" + encodeURIComponent(source), adminHeaders(), ctl.signal, (data) => {
    const lines = JSON.parse(data).lines;
    if (state.paused) {
      state.logBuffer.push(...lines);
      state.logBuffer.splice(0, Math.max(0, state.logBuffer.length - MAX_LINES));
      $("log-state").textContent = "paused: " + state.logBuffer.length + " new lines held";
    } else showLines(lines);
  }).catch((err) => {
    if (ctl.signal.aborted) return;
    if (err.status === 401 || err.status === 403) return refused();
    $("log-state").textContent = "stream ended: " + err.message + "; retrying";
    setTimeout(() => state.log === ctl && openLog(), 2000);
  });
}

$("log-source").addEventListener("change", openLog);
$("log-pause").addEventListener("click", () => {
  state.paused = !state.paused;
  $("log-pause").textContent = state.paused ? "Resume" : "Pause";
  if (!state.paused) {
    showLines(state.logBuffer);
    state.logBuffer = [];
    $("log-state").textContent = "following " + $("log-source").value;
  } else $("log-state").textContent = "paused";
});

// -- playground ---------------------------------------------------------------------------------------------------

const apiHeaders = () => {
  const key = $("pg-key").value.trim();
  return { "Content-Type": "application/json", ...(key ? { Authorization: "Bearer " + key } : {}) };
};

async function loadModels() {
  try {
    const res = await fetch("/v1/models", { headers: apiHeaders() });
    if (!res.ok) return;
    const ids = (await res.json()).data.map((m) => m.id);
    const select = $("pg-model"), current = select.value;
    select.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
    if (ids.includes(current)) select.value = current;
  } catch { /* the router is away: the list stays as it was */ }
}

function bubble(role) {
  const el = h("div", { class: "msg " + role });
  $("chat").append(el);
  return el;
}

function answerView() {
  const el = bubble("assistant");
  const think = h("div", { class: "think" });
  const details = h("details", { open: true, hidden: true }, h("summary", {}, "Thinking"), think);
  const tools = h("div", { class: "tools" });
  const content = h("div", { class: "content" });
  const usage = h("div", { class: "usage" });
  el.append(details, tools, content, usage);
  return { el, details, think, tools, content, usage, calls: [], text: "", reasoning: "" };
}

function showCalls(view) {
  view.tools.replaceChildren(...view.calls.map((c) => h("div", { class: "tool code" }, "call " + c.function.name + "(" + c.function.arguments + ")")));
}

function onChunk(view, chunk) {
  if (chunk.error) throw new Error(chunk.error.message || "error");
  if (chunk.usage) {
    const u = chunk.usage, cached = (u.prompt_tokens_details || {}).cached_tokens;
    view.usage.textContent = "prompt " + u.prompt_tokens + " · completion " + u.completion_tokens + (cached !== undefined ? " · cached " + cached : "");
  }
  for (const choice of chunk.choices || []) {
    const d = choice.delta || {};
    const thinking = d.reasoning_content ?? d.reasoning;
    if (thinking) {
      view.reasoning += thinking;
      view.details.hidden = false;
      view.think.append(thinking);
    }
    if (d.content) {
      view.text += d.content;
      view.content.append(d.content);
    }
    for (const t of d.tool_calls || []) {
      const call = (view.calls[t.index ?? view.calls.length] ||= { id: t.id, type: "function", function: { name: "", arguments: "" } });
      if (t.id) call.id = t.id;
      if (t.function && t.function.name) call.function.name += t.function.name;
      if (t.function && t.function.arguments) call.function.arguments += t.function.arguments;
      showCalls(view);
    }
  }
}

// The calls of the last answer that have no result yet: the next message sent is the first one's result.
function pendingCall() {
  const last = state.chat[state.chat.length - 1];
  if (!last || last.role === "user") return null;
  const answer = [...state.chat].reverse().find((m) => m.role === "assistant");
  const done = new Set(state.chat.filter((m) => m.role === "tool").map((m) => m.tool_call_id));
  return (answer && (answer.tool_calls || []).find((c) => !done.has(c.id))) || null;
}

function tools() {
  const text = $("pg-tools").value.trim();
  if (!text) return undefined;
  const parsed = JSON.parse(text); // a mistake shows as this answer's error
  return Array.isArray(parsed) ? parsed : [parsed];
}

function placeholder() {
  const call = pendingCall();
  $("pg-input").placeholder = call ? "The result of " + call.function.name + " (it goes back as the tool's answer)" : "Ask something (Enter sends, Shift+Enter for a new line)";
}

async function send(text) {
  const model = $("pg-model").value;
  if (!model || state.answer) return;
  const call = pendingCall();
  state.chat.push(call ? { role: "tool", tool_call_id: call.id, content: text } : { role: "user", content: text });
  bubble(call ? "tool" : "user").textContent = call ? call.function.name + " → " + text : text;
  const view = answerView();
  const ctl = (state.answer = new AbortController());
  $("pg-stop").disabled = false;
  $("pg-send").disabled = true;
  const began = performance.now();
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: apiHeaders(),
      signal: ctl.signal,
      body: JSON.stringify({ model, messages: state.chat, tools: tools(), stream: true, stream_options: { include_usage: true } }),
    });
    if (!res.ok) throw new Error(res.status + ": " + (await errorText(res)));
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i).split("\n").find((l) => l.startsWith("data:"));
        buf = buf.slice(i + 2);
        const data = line ? line.slice(5).trim() : "";
        if (data && data !== "[DONE]") onChunk(view, JSON.parse(data));
      }
    }
    view.usage.append((view.usage.textContent ? " · " : "") + ((performance.now() - began) / 1000).toFixed(1) + " s");
  } catch (err) {
    view.el.append(h("div", { class: "error" }, ctl.signal.aborted ? "stopped" : err.message));
  } finally {
    const message = { role: "assistant", content: view.text };
    if (view.calls.length) message.tool_calls = view.calls;
    if (view.reasoning) message.reasoning_content = view.reasoning;
    if (view.text || view.calls.length) state.chat.push(message);
    else state.chat.pop(); // nothing came back: the question is asked again next time
    state.answer = null;
    placeholder();
    $("pg-stop").disabled = true;
    $("pg-send").disabled = false;
  }
}

$("pg-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("pg-input").value.trim();
  if (!text) return;
  $("pg-input").value = "";
  send(text);
});
$("pg-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("pg-form").requestSubmit(); }
});
$("pg-stop").addEventListener("click", () => state.answer && state.answer.abort());
$("pg-clear").addEventListener("click", () => { state.chat = []; $("chat").replaceChildren(); placeholder(); });
$("pg-key").addEventListener("change", loadModels);

// -- tabs ---------------------------------------------------------------------------------------------------------

const TABS = ["models", "activity", "logs", "playground"];

function showTab() {
  const tab = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "models";
  for (const t of TABS) {
    $(t).hidden = t !== tab;
    $("tab-" + t).className = t === tab ? "on" : "";
  }
  if (tab === "logs" && !state.log) openLog();
  if (tab !== "logs" && state.log) { state.log.abort(); state.log = null; }
  if (tab === "playground") loadModels();
}

window.addEventListener("hashchange", showTab);
showTab();
connect();
