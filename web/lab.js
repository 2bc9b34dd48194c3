// The lab's main thread: UI, files, downloads. The core runs in worker.js; messages carry request ids.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { worker: null, next: 1, pending: new Map(), methods: null, sideFiles: [], webgpu: null, model: null,
  modelName: "", parts: null, partsOf: null, lastReport: null, runs: [], running: null, generating: null,
  conversation: [] };

// ---- worker -------------------------------------------------------------------------------------------
function startWorker() {
  state.worker = new Worker("worker.js");
  state.workerStarts = (state.workerStarts || 0) + 1;
  state.worker.onmessage = (e) => {
    const m = e.data, p = state.pending.get(m.id);
    if (!p) return;
    if (m.type === "progress") return p.onProgress?.(m);
    if (m.type === "part") return p.onPart?.(m);
    if (m.type === "text") return p.onText?.(m);
    if (m.fatal) return restartWorker(m.message);
    state.pending.delete(m.id);
    m.type === "result" ? p.resolve(m.value) : p.reject(new Error(m.message));
  };
  state.worker.onerror = (e) => restartWorker(e.message || "worker error");
}
// A fresh worker after the core stopped (a trap, or a Cancel it did not answer): pending calls fail, the model
// is loaded again, results and the run table stay.
function restartWorker(why) {
  const msg = why + " — the core was restarted; earlier results are kept";
  state.worker.terminate();
  const pending = [...state.pending.values()];
  state.pending.clear();
  startWorker();
  state.model = null; syncButtons(); // until the reload below is back
  state.reload?.();
  showError(msg);
  for (const p of pending) p.reject(new Error(msg));
}
function call(type, args = {}, hooks = {}) {
  const id = state.next++;
  const promise = new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject, ...hooks });
    state.worker.postMessage({ id, type, ...args }, hooks.transfer || []);
  });
  promise.id = id;
  return promise;
}
function showError(msg) { $("error").textContent = msg ? "Error: " + msg : ""; }

// ---- device ----------------------------------------------------------------------------------------------
// `auto` computes on WebGPU when the browser gives a hardware adapter, on the CPU backend otherwise: a
// software adapter (SwiftShader) runs the same prune about 60× slower than the CPU backend.
function gpuChosen() {
  const d = $("device").value;
  if (d === "cpu" || !state.webgpu) return false;
  return d === "webgpu" || !state.webgpu.software;
}
function showBackend() {
  const g = state.webgpu;
  const limits = g && `${g.backend}; max buffer ${mb(g.max_buffer_size)}, storage binding ${mb(g.max_storage_buffer_binding_size)}`;
  $("backend").textContent = !g
    ? "WebGPU is not available in this browser: running on the CPU backend (slower, same results)."
    : g.software
      ? `WebGPU: ${g.adapter || g.name || "adapter"} (${limits}) is a software adapter, far slower than the CPU backend: ` +
        "auto runs on the CPU backend; choose WebGPU under Device to use it anyway."
      : `WebGPU: ${g.adapter || g.name || "adapter"} (${limits})`;
  $("backend").className = g && !g.software ? "ok" : "notice";
  $("device").querySelector("option[value=webgpu]").disabled = !g;
}
// A tensor over the adapter's storage-binding limit cannot run on WebGPU; the CPU backend has no such limit.
function deviceChanged() {
  const m = state.model, limit = gpuChosen() ? state.webgpu.max_storage_buffer_binding_size : Infinity;
  const blocked = !!m && m.largest_tensor_bytes > limit;
  if (blocked) showError(`this model's largest tensor is ${mb(m.largest_tensor_bytes)}, over this GPU's storage ` +
    `binding limit of ${mb(limit)}: choose CPU under Device, or a model whose tensors fit`);
  else if (state.blocked) showError("");
  state.blocked = blocked;
  syncButtons();
}
// One job at a time in the worker: a run or a generation.
function syncButtons() {
  const m = state.model, busy = !!state.running || !!state.generating;
  $("run").disabled = !m || state.blocked || busy;
  $("try-go").disabled = !m || !m.has_tokenizer || state.blocked || busy;
  // The pruned model is the last run's on the model loaded now (it shares its tokenizer).
  const pruned = !!state.parts && state.partsOf === modelKey();
  $("try-model").querySelector("option[value=pruned]").disabled = !pruned;
  if (!pruned) $("try-model").value = "loaded";
  $("download-gguf").disabled = !pruned || busy;
  $("try-chat").disabled = !m?.has_chat_template;
  if ($("try-chat").disabled) $("try-chat").checked = false;
}
const modelKey = () => state.model && `${state.modelName} ${state.model.params.total}`;

// ---- model ---------------------------------------------------------------------------------------------
const FITS = 1.5 * 2 ** 30; // bytes of f32 weights a tab can hold twice (model + pruned copy) in 4 GiB wasm
function checkMemory(summary) {
  if (summary.total_f32_bytes > FITS)
    throw new Error(`it needs ${mb(summary.total_f32_bytes)} of f32 weights; this tab can hold about ${mb(FITS)} ` +
      `(≈ ${Math.floor(FITS / 4 / 1e6)}M parameters): use the CLI for larger models`);
}
const mb = (b) => (b / 2 ** 20).toFixed(1) + " MiB";

function modelLoaded(summary, name) {
  try { checkMemory(summary); } catch (e) { state.model = null; state.blocked = false; syncButtons(); throw e; }
  state.model = summary; state.modelName = name;
  newConversation(); // another model, another tokenizer and template
  const c = summary.config;
  $("model-summary").textContent = `${name}: ${summary.params.total.toLocaleString()} parameters, ` +
    `${c.layers.length} layers, hidden ${c.hidden_size}, vocab ${c.vocab_size}` +
    (summary.has_tokenizer ? "" : " — no tokenizer.json: texts cannot be used");
  $("layer-end").value = c.layers.length; $("layer-end").max = c.layers.length;
  $("layer-start").max = c.layers.length - 1;
  deviceChanged();
  syncRecipe();
}

async function loadDemo() {
  showError("");
  try {
    const get = async (f) => { const r = await fetch("demo/" + f); if (!r.ok) throw new Error(`demo/${f}: ${r.status}`);
      return new Uint8Array(await r.arrayBuffer()); };
    const [config, tokenizer, weights] = await Promise.all(["config.json", "tokenizer.json", "model.safetensors"].map(get));
    modelLoaded(await call("loadBytes", { config, tokenizer, names: ["model.safetensors"], shards: [weights] }), "demo");
    state.reload = loadDemo;
  } catch (e) { showError("demo model: " + e.message); }
}

async function loadFiles(list) {
  showError("");
  const files = [...list];
  try {
    await loadModelFiles(files);
    state.reload = () => loadFiles(files); // dropped files are not in the picker: keep them for a restart
  } catch (e) { showError("model files: " + e.message); }
}
async function loadModelFiles(files) {
  const gguf = files.filter((f) => f.name.endsWith(".gguf"));
  if (gguf.length > 1) throw new Error("more than one .gguf file: choose one");
  if (gguf.length) return modelLoaded(await call("loadGguf", { file: gguf[0] }), gguf[0].name);
  const byName = (n) => files.find((f) => f.name === n);
  const config = byName("config.json");
  if (!config) throw new Error("no config.json among the files (or give one .gguf)");
  const shards = files.filter((f) => f.name.endsWith(".safetensors")).sort((a, b) => a.name.localeCompare(b.name));
  if (!shards.length) throw new Error("no *.safetensors file among the files");
  const tok = byName("tokenizer.json");
  const side = state.sideFiles.map(byName).filter((f) => f); // tokenizer_config.json, …: carried into the downloads
  const summary = await call("loadFiles", {
    config: new Uint8Array(await config.arrayBuffer()),
    tokenizer: tok ? new Uint8Array(await tok.arrayBuffer()) : null,
    sideNames: side.map((f) => f.name),
    sideBytes: await Promise.all(side.map(async (f) => new Uint8Array(await f.arrayBuffer()))),
    names: shards.map((f) => f.name), files: shards,
  });
  modelLoaded(summary, shards.length > 1 ? `${shards.length} shards` : shards[0].name);
}

// ---- texts ---------------------------------------------------------------------------------------------
const builtin = {};
async function text(kind) {
  const paste = $(kind + "-paste").value, file = $(kind + "-file").files[0];
  if (paste.trim()) return paste;
  if (file) return await file.text();
  const name = kind === "calib" ? "calib-python-tutorial.txt" : "eval-python-faq.txt";
  if (!builtin[name]) builtin[name] = await (await fetch("data/" + name)).text();
  return builtin[name];
}

// A multiple-choice task to score before and after (none unless asked): the built-in one or an upload.
async function tasks() {
  if (!$("tasks-on").checked) return {};
  const file = $("tasks-file").files[0], name = file ? file.name : $("tasks-builtin").value;
  const items = $("tasks-items").value.trim();
  if (items && !/^[1-9][0-9]{0,8}$/.test(items)) throw new Error(`multiple choice: "${items}" items — give a whole number from 1 to 999999999, or nothing for all`);
  if (!file && !builtin[name]) builtin[name] = await (await fetch("data/" + name)).text();
  return { tasks: file ? await file.text() : builtin[name], tasksName: name, tasksItems: items ? Number(items) : null };
}

// ---- recipe --------------------------------------------------------------------------------------------
function recipeFromControls() {
  const alloc = $("allocation").value;
  const r = JSON.parse(JSON.stringify(state.methods.default_recipe));
  r.importance = $("importance").value;
  r.compensation = $("compensation").value;
  r.allocation = alloc === "attn-mlp-ratio" ? { kind: alloc, gamma: Number($("gamma").value) } : { kind: alloc };
  r.structures = $("whole").checked ? ["layers"] : [$("kv").checked && "kv-groups", $("qheads").checked && "query-heads", $("mlp").checked && "mlp"].filter(Boolean);
  const depth = Number($("depth-ratio").value);
  if (!$("whole").checked && depth > 0) r.depth = { ratio: depth, importance: "block-influence" };
  r.ratio = null; r.target_params = Number($("target").value);
  r.layers = { start: Number($("layer-start").value), end: Number($("layer-end").value) };
  r.calibration = { kind: "sampled", samples: Number($("calib-samples").value), length: Number($("calib-len").value) };
  r.eval = { seq_len: 128, max_windows: Number($("eval-windows").value) };
  return r;
}
async function syncRecipe() {
  if (!state.methods) return;
  const r = recipeFromControls();
  // Whole layers alone, or first (a depth ratio) before the structures narrow the rest.
  $("kv").disabled = $("qheads").disabled = $("mlp").disabled = $("depth-ratio").disabled = $("whole").checked;
  $("recipe").value = JSON.stringify(r, null, 2);
  $("target-value").textContent = (Number($("target").value) * 100).toFixed(0) + "%";
  explain();
  await showPlanned();
}
async function showPlanned() {
  if (!state.model) return ($("planned").textContent = "load a model to see the parameter count");
  try {
    const p = await call("planned", { recipe: $("recipe").value });
    $("planned").textContent = `${Math.round(p.params).toLocaleString()} parameters left (of ` +
      `${state.model.params.total.toLocaleString()})` + (p.ratio == null ? " — the target: exact count after scoring" :
      JSON.parse($("recipe").value).structures.includes("layers") ? `, ${(p.ratio * 100).toFixed(0)}% of the range's layers` :
      `, per-layer ratio ${p.ratio.toFixed(3)}`);
  } catch (e) { $("planned").textContent = e.message; }
}
const PAPERS = {
  "taylor-first": "https://arxiv.org/abs/2305.11627", "taylor-vector": "https://arxiv.org/abs/2305.11627",
  "taylor-second": "https://arxiv.org/abs/2305.11627", "taylor-mix": "https://arxiv.org/abs/2305.11627",
  "wanda-sp": "https://arxiv.org/abs/2306.11695", flap: "https://arxiv.org/abs/2312.11983",
  obs: "https://arxiv.org/abs/2410.07807", numerical: "https://arxiv.org/abs/2410.07807",
  "block-influence": "https://arxiv.org/abs/2403.03853", perplexity: "https://arxiv.org/abs/2402.02834",
  ls: "https://arxiv.org/abs/2410.07807", "ls-bias": "https://arxiv.org/abs/2410.07807", bias: "https://arxiv.org/abs/2312.11983",
  search: "https://arxiv.org/abs/2409.17372", ntk: "https://arxiv.org/abs/2509.14230",
  adapruner: "https://arxiv.org/abs/2503.06184",
};
function explain() {
  const s = state.methods.scores.find((x) => x.name === $("importance").value);
  const c = state.methods.compensations.find((x) => x.name === $("compensation").value);
  const a = state.methods.allocations.find((x) => x.value.kind === $("allocation").value);
  const link = (n) => PAPERS[n] ? ` <a href="${PAPERS[n]}" rel="noreferrer">paper</a>` : "";
  $("explain").innerHTML = `<b>${s.name}</b>: ${s.describe}${link(s.name)}<br><b>${c.name}</b>: ${c.describe}` +
    `${link(c.name)}<br><b>${a.value.kind}</b>: ${a.describe}${link(a.value.kind)}`;
}
function fillMenus() {
  const opt = (sel, items, label) => { $(sel).innerHTML = items.map((x) => `<option>${label(x)}</option>`).join(""); };
  opt("importance", state.methods.scores, (s) => s.name);
  opt("compensation", state.methods.compensations, (c) => c.name);
  opt("allocation", state.methods.allocations, (a) => a.value.kind);
  $("importance").value = "obs"; $("compensation").value = "ls";
}

// ---- run -----------------------------------------------------------------------------------------------
async function run() {
  showError("");
  let recipe;
  try { recipe = JSON.parse($("recipe").value); } catch (e) { return showError("recipe JSON: " + e.message); }
  const useGpu = gpuChosen();
  const parts = new Map();
  const started = performance.now();
  state.running = true; syncButtons();
  try {
    const texts = { calib: await text("calib"), evalText: await text("eval"), ...(await tasks()) };
    state.running = call("run", { recipe: JSON.stringify(recipe), ...texts, useGpu }, {
      onProgress: (m) => { $("progress").max = m.total || 1; $("progress").value = m.done; $("stage").textContent = `${m.stage} ${m.done}/${m.total} ${m.message}`.trim(); },
      onPart: (m) => { if (!parts.has(m.file)) parts.set(m.file, []); parts.get(m.file).push(m.bytes); },
    });
    $("cancel").disabled = false;
    const out = await state.running;
    state.parts = parts; state.partsOf = modelKey(); state.lastReport = out.report;
    const seconds = (performance.now() - started) / 1000;
    showResult(out, out.gpu, seconds);
    for (const b of ["download-zip", "download-report"]) $(b).disabled = false;
  } catch (e) {
    showError(e.message === "cancelled" ? "run cancelled" : e.message);
  } finally {
    clearTimeout(state.cancelTimer);
    $("cancel").disabled = true; $("stage").textContent = ""; state.running = null; syncButtons();
  }
}
// Cancel asks the worker; the core stops at its next checkpoint (between layers and evaluation windows) and
// the model stays loaded. A worker that does not answer within CANCEL_GRACE_MS is replaced.
const CANCEL_GRACE_MS = 30000;
function cancel() {
  if (!state.running?.id) return;
  const run = state.running;
  $("cancel").disabled = true; $("stage").textContent = "cancelling at the next layer…";
  call("cancel", { target: run.id });
  state.cancelTimer = setTimeout(() => { if (state.running === run) restartWorker("the run did not stop in time"); }, CANCEL_GRACE_MS);
}

function showResult(out, useGpu, seconds) {
  const r = out.report, e = r.eval;
  $("result").innerHTML = `<table class="result"><tr><th></th><th>before</th><th>after</th></tr>` +
    `<tr><td>perplexity</td><td id="ppl-before">${e.before.ppl.toFixed(3)}</td><td id="ppl-after">${e.after.ppl.toFixed(3)}</td></tr>` +
    `<tr><td>parameters</td><td>${r.params_before.total.toLocaleString()}</td><td id="params-after">${r.params_after.total.toLocaleString()}</td></tr>` +
    (r.tasks ? accuracyRows(r.tasks) : "") + `</table>` + searchLines(r) +
    `<p>Time: ${r.timings.map((t) => `${t.stage} ${t.seconds.toFixed(2)} s`).join(", ")} — ${useGpu ? "WebGPU" : "CPU"}</p>` +
    `<p>Greedy continuation of <q>${esc(out.sample.prompt)}</q>:</p><pre id="sample-before">before: ${esc(out.sample.before)}</pre>` +
    `<pre id="sample-after">after:  ${esc(out.sample.after)}</pre>`;
  drawChart(r); drawHeatmap(out.scores, r);
  state.runs.push({ model: state.modelName, r, backend: useGpu ? "WebGPU" : "CPU", seconds });
  const row = (x, i) => `<tr><td>${i + 1}</td><td>${x.model}</td><td>${(x.r.recipe.depth ? [`layers (${x.r.recipe.depth.ratio})`] : []).concat(x.r.recipe.structures).join(", ")}</td><td>${x.r.recipe.importance}</td><td>${x.r.recipe.compensation}</td>` +
    `<td>${x.r.recipe.allocation.kind}</td><td>${x.backend}</td><td>${x.r.params_after.total.toLocaleString()}</td>` +
    `<td>${x.r.eval.before.ppl.toFixed(3)}</td><td>${x.r.eval.after.ppl.toFixed(3)}</td>` +
    `<td>${x.r.tasks ? `${x.r.tasks.before.acc.toFixed(3)} (${x.r.tasks.before.acc_norm.toFixed(3)}) → ${x.r.tasks.after.acc.toFixed(3)} (${x.r.tasks.after.acc_norm.toFixed(3)})` : "—"}</td>` +
    `<td>${x.seconds.toFixed(1)} s</td></tr>`;
  document.querySelector("#runs tbody").innerHTML = state.runs.map(row).join("");
}
// What the search allocation and AdaPruner found, as the CLI's summary says it: held-out losses (unrepaired).
function searchLines(r) {
  const s = r.search, a = r.adapruner;
  return (s ? `<p id="search-found">search: ${s.candidates} candidates: loss ${s.best_loss.at(-1).toFixed(4)} ` +
      `(uniform: ${s.uniform_loss.toFixed(4)})</p>` : "") +
    (a ? `<p id="adapruner-found">adapruner: trial ${a.best} of ${a.losses.length}: loss ${a.losses[a.best].toFixed(4)} ` +
      `(trial 0: ${a.losses[0].toFixed(4)}); mix ${a.metrics.map((m, i) => `${a.weights[i].toFixed(2)} ${m}`).join(" + ")}; ` +
      `blocks [${a.blocks.join(", ")}]</p>` : "");
}
// acc and acc_norm of a multiple-choice task, before and after, with their standard errors.
function accuracyRows(t) {
  const f = (a, k) => a[k].toFixed(3) + (a[k + "_stderr"] == null ? "" : " ± " + a[k + "_stderr"].toFixed(3));
  const row = (k) => `<tr><td>${k} (${esc(t.task)}, ${t.before.items} items)</td><td id="${k.replace("_", "-")}-before">${f(t.before, k)}</td>` +
    `<td id="${k.replace("_", "-")}-after">${f(t.after, k)}</td></tr>`;
  return row("acc") + row("acc_norm");
}
const esc = (t) => t.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
function drawChart(r) {
  const n = r.layers_before.length, w = 28, h = 120, removed = new Set(r.plan.removed_layers || []);
  let next = 0;
  const bars = r.layers_before.map((b, i) => {
    if (removed.has(i)) return `<rect x="${i * w + 2}" y="${h - 4}" width="${w - 5}" height="4" class="removed"><title>layer ${i}: removed</title></rect>`;
    const l = r.layers_after[next++], q = l.num_heads / b.num_heads, m = l.intermediate_size / b.intermediate_size;
    return `<rect x="${i * w + 2}" y="${h - q * h}" width="${w / 2 - 3}" height="${q * h}" class="kv"><title>layer ${i}: ${l.num_heads}/${b.num_heads} query heads, ${l.num_kv_heads}/${b.num_kv_heads} KV groups</title></rect>` +
      `<rect x="${i * w + w / 2}" y="${h - m * h}" width="${w / 2 - 3}" height="${m * h}" class="mlp"><title>layer ${i}: MLP ${l.intermediate_size}/${b.intermediate_size}</title></rect>`;
  }).join("");
  $("chart").innerHTML = `<h3>Kept per layer (query heads | MLP width, fraction of original; a flat bar = layer removed)</h3><svg width="${n * w + 4}" height="${h + 2}">${bars}</svg>`;
}
// Whole-layer scores, then the structures' (a run with a depth ratio has both).
function drawHeatmap(scores, r) {
  const whole = scores.filter((s) => s.whole != null), width = scores.filter((s) => s.whole == null);
  $("heatmap").innerHTML = (whole.length ? layerScores(whole, r) : "") + structureScores(width, r);
}
function structureScores(scores, r) {
  // Query heads when the run pruned them, else KV groups: one row per layer, one cell per structure.
  const key = r.recipe.structures.includes("query-heads") ? "query_heads" : "kv_groups", what = key === "query_heads" ? "query head" : "KV group";
  if (!scores.length || !(scores[0][key] || []).length) return "";
  const cell = 18, rows = scores.map((s) => {
    const v = s[key], lo = Math.min(...v), hi = Math.max(...v);
    const removed = new Set((r.plan.layers.find((p) => p.layer === s.layer) || {})[key] || []);
    return v.map((x, g) => {
      const t = hi > lo ? (x - lo) / (hi - lo) : 0.5;
      return `<rect x="${g * cell}" y="${s.layer * cell}" width="${cell - 1}" height="${cell - 1}" fill="hsl(${200 - 200 * t},70%,50%)" ${removed.has(g) ? 'stroke="black" stroke-width="2"' : ""}><title>layer ${s.layer}, ${what} ${g}: ${x.toPrecision(4)}${removed.has(g) ? " (removed)" : ""}</title></rect>`;
    }).join("");
  }).join("");
  const width = Math.max(...scores.map((s) => s[key].length)) * cell, height = (Math.max(...scores.map((s) => s.layer)) + 1) * cell;
  return `<h3>${what[0].toUpperCase() + what.slice(1)} scores (layers × ${what}s; outlined = removed; scaled per layer)</h3><svg width="${width}" height="${height}">${rows}</svg>`;
}
function layerScores(scores, r) {
  const cell = 18, removed = new Set(r.plan.removed_layers || []), v = scores.map((s) => s.whole);
  const lo = Math.min(...v), hi = Math.max(...v);
  const cells = scores.map((s) => {
    const t = hi > lo ? (s.whole - lo) / (hi - lo) : 0.5, out = removed.has(s.layer);
    return `<rect x="${s.layer * cell}" y="0" width="${cell - 1}" height="${cell - 1}" fill="hsl(${200 - 200 * t},70%,50%)" ${out ? 'stroke="black" stroke-width="2"' : ""}><title>layer ${s.layer}: ${s.whole.toPrecision(4)}${out ? " (removed)" : ""}</title></rect>`;
  }).join("");
  const width = (Math.max(...scores.map((s) => s.layer)) + 1) * cell;
  return `<h3>Whole-layer scores (outlined = removed)</h3><svg width="${width}" height="${cell}">${cells}</svg>`;
}

// ---- downloads (assembled from parts; a stored zip needs only CRC-32) ---------------------------------------
const CRC = new Uint32Array(256).map((_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
function crc32(parts) { let c = 0xffffffff; for (const p of parts) for (let i = 0; i < p.length; i++) c = CRC[(c ^ p[i]) & 255] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; }
function zip(files) {
  const enc = new TextEncoder(), out = [], central = []; let offset = 0;
  for (const [name, parts] of files) {
    const n = enc.encode(name), size = parts.reduce((s, p) => s + p.length, 0), crc = crc32(parts);
    const h = new DataView(new ArrayBuffer(30));
    h.setUint32(0, 0x04034b50, true); h.setUint16(4, 20, true); h.setUint32(14, crc, true);
    h.setUint32(18, size, true); h.setUint32(22, size, true); h.setUint16(26, n.length, true);
    out.push(h.buffer, n, ...parts);
    const c = new DataView(new ArrayBuffer(46));
    c.setUint32(0, 0x02014b50, true); c.setUint16(4, 20, true); c.setUint16(6, 20, true); c.setUint32(16, crc, true);
    c.setUint32(20, size, true); c.setUint32(24, size, true); c.setUint16(28, n.length, true); c.setUint32(42, offset, true);
    central.push(c.buffer, n);
    offset += 30 + n.length + size;
  }
  const cdSize = central.reduce((s, p) => s + (p.byteLength ?? p.length), 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true); end.setUint16(8, files.length, true); end.setUint16(10, files.length, true);
  end.setUint32(12, cdSize, true); end.setUint32(16, offset, true);
  return new Blob([...out, ...central, end.buffer], { type: "application/zip" });
}
function save(blob, name) {
  const a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = name; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// The GGUF is written by the core from the run's safetensors parts, one tensor at a time.
async function downloadGguf() {
  showError("");
  const gguf = [];
  $("download-gguf").disabled = true;
  try {
    await call("exportGguf", {
      config: new Uint8Array(await new Blob(state.parts.get("config.json")).arrayBuffer()),
      weights: new Blob(state.parts.get("model.safetensors")), dtype: $("gguf-dtype").value,
    }, { onPart: (m) => gguf.push(m.bytes), onProgress: (m) => ($("stage").textContent = `${m.stage} ${m.done}/${m.total}`) });
    save(new Blob(gguf, { type: "application/octet-stream" }), "pruned-model.gguf");
  } catch (e) { showError("GGUF: " + e.message); }
  finally { $("stage").textContent = ""; syncButtons(); }
}

// ---- try the model ---------------------------------------------------------------------------------------
// A continuation, or the next answer of a conversation (chat messages through the model's chat template), shown
// token by token; Stop ends it between tokens and keeps the text. The conversation goes on with either model
// (ask the pruned one what the loaded one was asked) until New conversation or another model is loaded.
const turn = (m) => `${m.role === "assistant" ? "model" : m.role === "user" ? "you" : m.role}: ${m.content}`;
async function generate() {
  showError("");
  const temperature = Number($("try-temperature").value), chat = $("try-chat").checked, text = $("try-text").value;
  const system = $("try-system").value.trim() ? [{ role: "system", content: $("try-system").value }] : [];
  const asked = { role: "user", content: text };
  const request = {
    ...(chat ? { messages: [...system, ...state.conversation, asked] } : { text }),
    max_tokens: Number($("try-tokens").value),
    // Temperature 0 is greedy decoding.
    sampling: temperature > 0 ? { temperature, top_k: Number($("try-top-k").value), top_p: Number($("try-top-p").value),
      seed: Number($("try-seed").value) } : null,
  };
  const pruned = $("try-model").value === "pruned";
  // A continuation is shown after its text; an answer after the conversation so far.
  const before = chat ? [...state.conversation, asked].map(turn).join("\n") + "\nmodel: " : text;
  $("try-out").textContent = before; $("try-stats").textContent = "loading the model…";
  state.generating = true; syncButtons();
  try {
    const args = { request: JSON.stringify(request), useGpu: gpuChosen(),
      config: pruned ? new Uint8Array(await new Blob(state.parts.get("config.json")).arrayBuffer()) : null,
      weights: pruned ? new Blob(state.parts.get("model.safetensors")) : null };
    state.generating = call("generate", args, {
      onText: (m) => { $("try-out").textContent = before + m.text; $("try-stats").textContent = `${m.tokens} tokens…`; },
      onProgress: (m) => { $("progress").max = m.total || 1; $("progress").value = m.done; },
    });
    $("try-stop").disabled = false;
    const out = await state.generating;
    state.lastGenerated = out;
    $("try-out").textContent = before + out.text;
    if (chat) { state.conversation.push(asked, { role: "assistant", content: out.text }); $("try-text").value = ""; }
    $("try-new").disabled = !state.conversation.length;
    const speed = out.decode_tokens_per_second ? `, ${out.decode_tokens_per_second.toFixed(1)} tokens/s` : "";
    $("try-stats").textContent = `${out.ids.length} tokens (${{ eos: "ended the text", length: "the most asked for",
      stopped: "stopped" }[out.finish_reason]}) after a ${out.prompt_tokens}-token prompt — load ${out.load_seconds.toFixed(2)} s, ` +
      `prompt ${out.prefill_seconds.toFixed(2)} s${speed} on ${out.gpu ? "WebGPU" : "the CPU"}` +
      (out.sampling ? `; sampled at temperature ${out.sampling.temperature}, seed ${out.sampling.seed}` : "; greedy");
  } catch (e) { $("try-stats").textContent = ""; showError("generate: " + e.message); }
  finally { state.generating = null; $("try-stop").disabled = true; syncButtons(); }
}
function newConversation() {
  state.conversation = []; $("try-out").textContent = ""; $("try-stats").textContent = ""; $("try-new").disabled = true;
}
function stopGenerating() {
  if (!state.generating?.id) return;
  $("try-stop").disabled = true;
  call("cancel", { target: state.generating.id });
}

// ---- wiring --------------------------------------------------------------------------------------------
async function main() {
  startWorker();
  const hello = await call("hello");
  state.methods = hello.methods; state.webgpu = hello.webgpu; state.sideFiles = hello.sideFiles;
  $("version").textContent = "prunelab " + hello.version;
  showBackend();
  $("device").onchange = deviceChanged;
  fillMenus();
  // KV groups and query heads are two ways to narrow the attention: one per run.
  $("kv").addEventListener("input", () => { if ($("kv").checked) $("qheads").checked = false; });
  $("qheads").addEventListener("input", () => { if ($("qheads").checked) $("kv").checked = false; });
  for (const id of ["importance", "compensation", "allocation", "gamma", "kv", "qheads", "mlp", "whole", "depth-ratio", "layer-start", "layer-end", "calib-samples", "calib-len", "eval-windows", "target"])
    $(id).addEventListener("input", syncRecipe);
  $("apply-recipe").onclick = showPlanned;
  $("copy-recipe").onclick = () => navigator.clipboard?.writeText($("recipe").value);
  $("demo").onclick = loadDemo;
  $("files").onchange = (e) => loadFiles(e.target.files);
  $("drop").ondragover = (e) => e.preventDefault();
  $("drop").ondrop = (e) => { e.preventDefault(); loadFiles(e.dataTransfer.files); };
  $("run").onclick = run; $("cancel").onclick = cancel;
  $("download-zip").onclick = () => save(zip([...state.parts].map(([n, p]) => ["pruned/" + n, p])), "pruned-model.zip");
  $("download-gguf").onclick = downloadGguf;
  $("try-go").onclick = generate; $("try-stop").onclick = stopGenerating; $("try-new").onclick = newConversation;
  $("download-report").onclick = () => save(new Blob([JSON.stringify(state.lastReport, null, 2)], { type: "application/json" }), "report.json");
  syncRecipe();
  window.labState = state; // for the console and the end-to-end test
  document.body.dataset.ready = "1";
}
main().catch((e) => showError("starting the core: " + e.message));
