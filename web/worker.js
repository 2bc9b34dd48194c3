// The lab's worker: the only place the wasm core runs. Messages in: {id, type, ...}; out: {id, type: "result" |
// "error" | "progress" | "part"}. The main thread keeps the UI and assembles downloads from the parts.
importScripts("./prunelab-web.js");

const ready = wasm_bindgen("./prunelab-web_bg.wasm");
let lab = null;
let gpu = null; // adapter info once WebGPU is initialised

async function webgpu() {
  if (gpu) return gpu;
  if (!self.navigator.gpu) return null;
  const adapter = await self.navigator.gpu.requestAdapter();
  if (!adapter) return null;
  gpu = JSON.parse(await wasm_bindgen.initWebGpu());
  return gpu;
}

const handlers = {
  async hello() {
    const info = await webgpu().catch(() => null);
    return { version: wasm_bindgen.version(), methods: JSON.parse(wasm_bindgen.methods()), webgpu: info };
  },
  async loadFiles({ config, tokenizer, names, files }) {
    lab = wasm_bindgen.Lab.fromFiles(config, tokenizer ?? undefined, names, files);
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
  async run({ id, recipe, calib, evalText, useGpu }) {
    if (!lab) throw new Error("load a model first");
    const onProgress = (stage, done, total) => postMessage({ id, type: "progress", stage, done, total });
    const onPart = (file, bytes) => postMessage({ id, type: "part", file, bytes }, [bytes.buffer]);
    const out = await lab.run(recipe, calib, evalText, useGpu && !!(await webgpu()), onProgress, onPart);
    return JSON.parse(out);
  },
};

onmessage = async (e) => {
  const msg = e.data;
  try {
    await ready;
    const value = await handlers[msg.type](msg);
    postMessage({ id: msg.id, type: "result", value });
  } catch (err) {
    postMessage({ id: msg.id, type: "error", message: String(err?.message ?? err) });
  }
};
