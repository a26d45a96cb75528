// d2c-fast web editor: plain JS, no build step. It only calls the public API (/v1/...).
// Live edits: at most one edit request in flight; moves of a slider meanwhile only update
// the wanted settings, and the latest settings are sent when the answer arrives (no pile-up).
// A new source image aborts the request in flight; an answer for older settings is shown
// only until the latest one arrives (its sequence number is older than the wanted one).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,
  source: null,        // Blob of the face being edited
  wanted: 0,           // sequence number of the latest settings
  shown: 0,            // sequence number of the image shown
  inflight: null,      // {seq, controller}
  afterUrl: null,
};
// What the page has done (read by the browser test): edit requests sent, most in flight at once.
window.d2cEditor = { sent: 0, inFlight: 0, maxInFlight: 0 };

// The token (d2c-fast serve --token T): open the page as http://host:port/#token=T.
(function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("d2c-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
})();

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = sessionStorage.getItem("d2c-token");
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

function status(msg, isError) {
  const s = $("status");
  s.textContent = msg || "";
  s.className = isError ? "error" : "";
}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({}, opts, { headers: headers((opts || {}).headers) }));
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function b64ToBlob(b64) {
  const bin = atob(b64);
  const a = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
  return new Blob([a], { type: "image/png" });
}

function sliderRange(info) {
  const r = info && info.recommended_strength;
  const m = r ? Math.max(Math.abs(r[0]), Math.abs(r[1])) : 5;
  return Math.max(2, Math.ceil(m * 1.5));
}

// ------------------------------------------------------------------ set-up
async function init() {
  try {
    state.model = await (await api("/v1/model")).json();
  } catch (e) {
    status("cannot reach the server: " + e.message, true);
    return;
  }
  const m = state.model;
  $("model").textContent = `${m.resolution}x${m.resolution}, ${m.attributes.length} attributes`;
  for (const meth of m.methods) {
    const o = document.createElement("option");
    o.value = o.textContent = meth;
    $("method").appendChild(o);
  }
  for (const name of m.attributes) {
    const info = m.attribute_info[name];
    if (!info.fitted) continue;
    const r = sliderRange(info);
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span></span><input type="range" min="${-r}" max="${r}" step="0.1"` +
                    ` value="0"><output>0</output>`;
    row.querySelector("span").textContent = name;
    const input = row.querySelector("input");
    input.dataset.attr = name;
    input.id = "slider-" + name;
    input.addEventListener("input", () => {
      row.querySelector("output").textContent = Number(input.value).toFixed(1);
      requestEdit();
    });
    $("sliders").appendChild(row);
  }
  $("seed").addEventListener("change", requestEdit);
  $("method").addEventListener("change", requestEdit);
  $("reset").addEventListener("click", () => {
    for (const s of document.querySelectorAll("#sliders input")) {
      s.value = 0;
      s.parentElement.querySelector("output").textContent = "0";
    }
    requestEdit();
  });
  $("upload").addEventListener("change", () => {
    const f = $("upload").files[0];
    if (f) setSource(f, null);
  });
  $("sample").addEventListener("click", sample);
  try {
    const faces = (await (await api("/v1/faces")).json()).images;
    faces.forEach((b64, i) => {
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + b64;
      img.alt = "face " + i;
      img.dataset.index = i;
      img.addEventListener("click", () => setSource(b64ToBlob(b64), img));
      $("faces").appendChild(img);
    });
    if (faces.length) setSource(b64ToBlob(faces[0]), $("faces").firstChild);
  } catch (e) {
    status("faces: " + e.message, true);
  }
}

function setSource(blob, picked) {
  for (const el of document.querySelectorAll("#faces img")) {
    el.classList.toggle("picked", el === picked);
  }
  state.source = blob;
  const old = $("before").src;
  $("before").src = URL.createObjectURL(blob);
  if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
  if (state.inflight) state.inflight.controller.abort();   // stale source: drop its answer
  requestEdit();
}

// ------------------------------------------------------------------ live edits
function settings() {
  const attrs = [], strengths = [];
  for (const s of document.querySelectorAll("#sliders input")) {
    if (Number(s.value) !== 0) { attrs.push(s.dataset.attr); strengths.push(Number(s.value)); }
  }
  if (!attrs.length) {   // every slider at 0: the method's reconstruction
    const first = document.querySelector("#sliders input");
    if (first) { attrs.push(first.dataset.attr); strengths.push(0); }
  }
  return { attr: attrs, strength: strengths, seed: Math.max(0, parseInt($("seed").value, 10) || 0),
           method: $("method").value || "local", mode: "mode" };
}

function requestEdit() {
  if (!state.source) return;
  state.wanted += 1;
  if (!state.inflight) send();
}

async function send() {
  const seq = state.wanted;
  const p = settings();
  if (!p.attr.length) return;
  const form = new FormData();
  form.append("image", state.source, "face.png");
  p.attr.forEach((a) => form.append("attr", a));
  p.strength.forEach((s) => form.append("strength", String(s)));
  form.append("seed", String(p.seed));
  form.append("method", p.method);
  form.append("mode", p.mode);   // the mixture's mode: deterministic, crisper (as the CLI)
  form.append("resize", "true");
  const controller = new AbortController();
  state.inflight = { seq, controller };
  const stats = window.d2cEditor;
  stats.sent += 1;
  stats.inFlight += 1;
  stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
  status("editing\u2026");
  try {
    const r = await api("/v1/edit", { method: "POST", body: form, signal: controller.signal });
    const blob = await r.blob();
    if (seq > state.shown) {
      state.shown = seq;
      show(blob, p, seq);
    }
    status(seq === state.wanted ? "" : "editing\u2026");
  } catch (e) {
    if (e.name !== "AbortError") status(e.message, true);
  } finally {
    stats.inFlight -= 1;
    if (state.inflight && state.inflight.seq === seq) state.inflight = null;
    if (state.wanted > seq && !state.inflight) send();   // the latest settings, once
  }
}

function show(blob, p, seq) {
  const url = URL.createObjectURL(blob);
  const img = $("after");
  img.src = url;
  img.dataset.seq = String(seq);
  img.dataset.params = JSON.stringify(p);
  if (state.afterUrl) URL.revokeObjectURL(state.afterUrl);
  state.afterUrl = url;
  const a = $("download");
  a.href = url;
  a.classList.remove("disabled");
}

// ------------------------------------------------------------------ samples
async function sample() {
  const btn = $("sample");
  btn.disabled = true;
  status("sampling\u2026");
  try {
    const seed = Math.max(0, parseInt($("sample-seed").value, 10) || 0);
    const r = await api("/v1/sample", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ n: 8, seed, mode: "mode" }) });
    const images = (await r.json()).images;
    $("samples").replaceChildren(...images.map((b64, i) => {
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + b64;
      img.alt = "sample " + i;
      img.title = "edit this sample";
      img.addEventListener("click", () => setSource(b64ToBlob(b64), null));
      return img;
    }));
    $("sample-seed").value = seed + 8;
    status("");
  } catch (e) {
    status(e.message, true);
  } finally {
    btn.disabled = false;
  }
}

init();
