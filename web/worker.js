// The lab's worker: the only place the wasm core runs. Messages in: {id, type, ...}; out: {id, type: "result" |
// "error" | "progress" | "part"}. The main thread keeps the UI and assembles downloads from the parts.
importScripts("./prunelab-web.js");

const ready = wasm_bindgen("./prunelab-web_bg.wasm");
let lab = null;
let gpu = null; // adapter info once WebGPU is initialised
const cancels = new Set(); // ids of runs the page asked to stop

async function webgpu() {
  if (gpu) return gpu;
  if (!self.navigator.gpu) return null;
  const adapter = await self.navigator.gpu.requestAdapter();
  if (!adapter) return null;
  // A software adapter (SwiftShader, llvmpipe) runs WebGPU on the CPU, far slower than the CPU backend.
  const info = adapter.info ?? {};
  const named = `${info.vendor ?? ""} ${info.architecture ?? ""} ${info.device ?? ""} ${info.description ?? ""}`;
  const software = !!(info.isFallbackAdapter ?? adapter.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe/i.test(named);
  gpu = { ...JSON.parse(await wasm_bindgen.initWebGpu()), software, adapter: named.trim() };
  return gpu;
}

// A turn of the event loop without timer clamping: the core awaits it between layers and windows, so a
// "cancel" message that arrived meanwhile is handled before the run goes on.
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()?.();
const yieldTurn = () => new Promise((resolve) => { waiting.push(resolve); channel.port2.postMessage(0); });

const parts = (id) => (file, bytes) => postMessage({ id, type: "part", file, bytes }, [bytes.buffer]);
const progress = (id) => (stage, done, total, message) =>
  postMessage({ id, type: "progress", stage, done, total, message });

const handlers = {
  async hello() {
    const info = await webgpu().catch(() => null);
    return { version: wasm_bindgen.version(), methods: JSON.parse(wasm_bindgen.methods()),
      sideFiles: JSON.parse(wasm_bindgen.sideFiles()), webgpu: info };
  },
  async loadFiles({ config, tokenizer, sideNames, sideBytes, names, files }) {
    lab = wasm_bindgen.Lab.fromFiles(config, tokenizer ?? undefined, sideNames, sideBytes, names, files);
    return JSON.parse(lab.summary());
  },
  async loadGguf({ file }) {
    lab = wasm_bindgen.Lab.fromGguf(file);
    return JSON.parse(lab.summary());
  },
  async loadBytes({ config, tokenizer, names, shards }) {
    lab = wasm_bindgen.Lab.fromBytes(config, tokenizer ?? undefined, names, shards);
    return JSON.parse(lab.summary());
  },
  async planned({ recipe }) {
    if (!lab) throw new Error("load a model first");
    return JSON.parse(lab.plannedParams(recipe));
  },
  // `tasks`: a multiple-choice task's JSON lines (or null), scored before and after.
  async run({ id, recipe, calib, evalText, tasks, tasksName, tasksItems, useGpu }) {
    if (!lab) throw new Error("load a model first");
    const checkpoint = () => yieldTurn().then(() => cancels.has(id));
    try {
      const gpu = useGpu && !!(await webgpu()); // the backend that really runs, reported with the result
      const out = await lab.run(recipe, calib, evalText, tasks ?? undefined, tasksName ?? undefined,
        tasksItems ?? undefined, gpu, progress(id), checkpoint, parts(id));
      return { ...JSON.parse(out), gpu };
    } finally { cancels.delete(id); }
  },
  async generate({ id, request, config, weights, useGpu }) {
    if (!lab) throw new Error("load a model first");
    const checkpoint = () => yieldTurn().then(() => cancels.has(id));
    const text = (text, tokens) => postMessage({ id, type: "text", text, tokens });
    try {
      const gpu = useGpu && !!(await webgpu());
      const out = await lab.generate(request, config ?? undefined, weights ?? undefined, gpu, text, progress(id), checkpoint);
      return { ...JSON.parse(out), gpu };
    } finally { cancels.delete(id); }
  },
  async cancel({ target }) { cancels.add(target); return true; },
  async exportGguf({ id, config, weights, dtype }) {
    if (!lab) throw new Error("load a model first");
    lab.exportGguf(config, weights, dtype, progress(id), parts(id));
    return true;
  },
};

// A trap in the core (a Rust panic, memory exhausted, a lost GPU device) leaves its instance unusable: the page
// is told it is fatal and starts a fresh worker.
function fatal(err) {
  let detail = "";
  try { detail = wasm_bindgen.lastPanic() || ""; } catch { /* the instance may be gone entirely */ }
  let memory = 0;
  try { memory = wasm_bindgen.memoryBytes(); } catch { /* idem */ }
  const text = detail || String(err?.message ?? err);
  let kind = "the core stopped";
  if (/device (was )?lost|DeviceLost|lost device/i.test(text)) kind = "the GPU device was lost";
  else if (/out of memory|allocation|alloc|OutOfMemory|capacity overflow/i.test(text) || memory > 3.5 * 2 ** 30)
    kind = `out of memory (the core holds ${(memory / 2 ** 30).toFixed(2)} GiB of the 4 GiB a tab allows)`;
  return `${kind}: ${text}`;
}

onmessage = async (e) => {
  const msg = e.data;
  try {
    await ready;
    const value = await handlers[msg.type](msg);
    postMessage({ id: msg.id, type: "result", value });
  } catch (err) {
    if (err instanceof WebAssembly.RuntimeError) postMessage({ id: msg.id, type: "error", fatal: true, message: fatal(err) });
    else postMessage({ id: msg.id, type: "error", message: String(err?.message ?? err) });
  }
};
