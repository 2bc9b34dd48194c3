// End-to-end test of the browser lab in Debian's chromium (headless, WebGPU through SwiftShader), driven by
// playwright-core. Usage: node lab.mjs DIST PRUNELAB_BIN SHOTS_DIR
// 1. WebGPU on SwiftShader: the page flags the software adapter and device `auto` runs the demo's obs + ls at
//    20% on the CPU backend; then device WebGPU runs it again; both perplexities match the CLI's for the same
//    recipe; the zip download evaluates (CLI) to the same perplexity; a tensor over the adapter's binding limit
//    blocks WebGPU runs and not CPU ones.
// 2. WebGPU disabled: the CPU fallback gives the same numbers, and with the multiple-choice task on, the CLI's
//    accuracy before and after; its GGUF download evaluates (CLI) to the same perplexity; a garbled task file and
//    a bad item count are named; calibration windows the tab cannot hold are refused by size; a garbled safetensors upload, a config that does not match the weights and a garbled
//    tokenizer_config.json show errors; the demo uploaded as one .gguf loads; Cancel stops a run between layers
//    without restarting the core; a following run on the GGUF model gives the same numbers; whole layers (block influence + ls) give the CLI's perplexity and
//    the chart marks the layers the CLI removes; a depth ratio (one layer whole, then KV groups + MLP by numerical + ls)
//    gives the CLI's perplexity, marks its removed layer and shows both score maps; query heads (obs + ls) give the CLI's perplexity and shapes;
//    the search allocation (obs + ls) and AdaPruner start as the CLI's searches do (uniform's and the first
//    generation's losses; trial 0 and the random trials), give the CLI's whole record and plan where they agree,
//    plans the CLI replays to the page's perplexity within the target, and show what was found as the CLI's
//    summary says it; the
//    zips of a GGUF upload and of an HF upload hold the chat template and the uploaded tokenizer/generation files;
//    "Try the model" gives the CLI's tokens for a greedy continuation of the loaded model, a sampled chat answer
//    of the pruned one and the loaded model's answer to a follow-up of that conversation, and Stop ends a long
//    continuation between tokens, keeping the CLI's first tokens. WebGPU
//    (stage 1) gives the CLI's greedy continuation too.
// Every request must go to the page's own origin. Screenshots of each step go to SHOTS_DIR.
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFile, mkdir, writeFile, mkdtemp, rm } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { join, extname, resolve } from "node:path";
import { tmpdir } from "node:os";

const [dist, bin, shots] = process.argv.slice(2).map((p) => resolve(p));
const repo = resolve(new URL("../..", import.meta.url).pathname);
await mkdir(shots, { recursive: true });
const tmp = await mkdtemp(join(tmpdir(), "prunelab-web-"));
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
  ".css": "text/css", ".txt": "text/plain", ".md": "text/plain", ".safetensors": "application/octet-stream" };
const server = createServer(async (req, res) => {
  const path = join(dist, decodeURIComponent(new URL(req.url, "http://x").pathname).replace(/\/$/, "/index.html"));
  try { const body = await readFile(path); res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" }); res.end(body); }
  catch { res.writeHead(404); res.end(); }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const origin = `http://127.0.0.1:${server.address().port}`;

const BASE = ["--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run"];
const WEBGPU = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
  "--use-webgpu-adapter=swiftshader", "--disable-vulkan-surface"];
const close = (a, b, what) => { const rel = Math.abs(a - b) / Math.abs(b);
  if (!(rel < 1e-3)) throw new Error(`${what}: ${a} vs ${b} (relative ${rel.toExponential(2)})`);
  console.log(`ok  ${what}: ${a.toFixed(4)} vs ${b.toFixed(4)}`); };
const cli = (...args) => JSON.parse(execFileSync(bin, args, { encoding: "utf8", maxBuffer: 1 << 26 }));

async function session(name, args) {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args, headless: true });
  const page = await browser.newPage({ acceptDownloads: true, viewport: { width: 1200, height: 1600 } });
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) foreign.push(r.url()); });
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  const shot = (step) => page.screenshot({ path: join(shots, `${name}-${step}.png`), fullPage: true });
  await page.goto(origin + "/index.html");
  await page.waitForSelector("body[data-ready='1']", { timeout: 120000 });
  await shot("1-start");
  const backend = await page.textContent("#backend");
  console.log(`[${name}] ${backend}`);
  return { name, browser, page, shot, foreign, backend };
}

// "Try the model" with options {model, text, tokens, chat, temperature, topK, seed, stopAfter}: the result the
// worker returned (ids, text, finish_reason, chat_prompt, …) and the text the page shows.
async function tryModel(page, o) {
  await page.selectOption("#try-model", o.model);
  await page.setChecked("#try-chat", !!o.chat);
  await page.fill("#try-text", o.text);
  for (const [id, v] of [["tokens", o.tokens], ["temperature", o.temperature ?? 0], ["top-k", o.topK ?? 0], ["seed", o.seed ?? 42]])
    await page.fill("#try-" + id, String(v));
  await page.evaluate(() => { window.labState.lastGenerated = null; document.activeElement?.blur(); });
  await page.click("#try-go");
  if (o.stopAfter) {
    await page.waitForFunction((n) => parseInt(document.getElementById("try-stats").textContent) >= n, o.stopAfter, { timeout: 300000 });
    await page.click("#try-stop");
  }
  await page.waitForFunction(() => window.labState.lastGenerated || document.getElementById("error").textContent, null, { timeout: 300000 });
  const out = await page.evaluate(() => window.labState.lastGenerated);
  if (!out) throw new Error("generate: " + (await page.textContent("#error")));
  return { ...out, shown: await page.textContent("#try-out") };
}
const sameIds = (page, cliIds, what) => {
  if (page.join() !== cliIds.join()) throw new Error(`${what}: page ${page} vs CLI ${cliIds}`);
  console.log(`ok  ${what}: ${page.length} tokens as the CLI's`);
};

// SwiftShader runs WebGPU on the CPU at a fraction of a GFLOP/s: the end-to-end recipe keeps the work small
// (8 calibration windows, 8 evaluation windows); the CLI gets exactly the same recipe.
const WINDOWS = "8";
// Items of the built-in multiple-choice task (the page's default, the sentence completions) the CPU fallback's run
// scores; the CLI's run scores the same.
const TASK_ITEMS = "40";
async function loadDemo(page) {
  await page.click("#demo");
  await page.waitForFunction(() => document.getElementById("model-summary").textContent.startsWith("demo:"), null, { timeout: 120000 });
}
async function setRecipe(page) {
  await page.selectOption("#importance", "obs");
  await page.selectOption("#compensation", "ls");
  await page.fill("#calib-samples", WINDOWS);
  await page.fill("#eval-windows", WINDOWS);
  await page.$eval("#target", (el) => { el.value = "0.2"; el.dispatchEvent(new Event("input")); });
  await page.waitForFunction(() => document.getElementById("planned").textContent.includes("parameters left"));
}
// Downloads the last run's zip and returns the folder it holds (extracted under tmp/NAME).
async function downloadZip(page, name) {
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-zip")]);
  const zipPath = join(tmp, name + ".zip");
  await download.saveAs(zipPath);
  execFileSync("python3", ["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])", zipPath, join(tmp, name)]);
  return join(tmp, name, "pruned");
}
// `tasksItems`: also score that many items of the built-in multiple-choice task before and after.
async function demoRun(s, step, load = loadDemo, tasksItems = null) {
  const { page, shot } = s;
  await load(page);
  await setRecipe(page);
  await page.setChecked("#tasks-on", tasksItems != null);
  await page.fill("#tasks-items", tasksItems == null ? "" : String(tasksItems));
  await shot(`${step}-recipe`);
  const recipe = await page.inputValue("#recipe");
  const runsBefore = await page.$$eval("#runs tbody tr", (r) => r.length);
  const t0 = Date.now();
  // Blur the last edited field first: its focus change can scroll the page between mouse down and up.
  await page.evaluate(() => document.activeElement?.blur());
  await page.click("#run");
  await page.waitForFunction((n) => document.querySelectorAll("#runs tbody tr").length > n, runsBefore, { timeout: 900000 });
  // The run's own stages (load, eval before, prune, eval after): what the CLI's --eval run does too (the
  // multiple-choice stages are left out).
  const seconds = await page.evaluate(() => window.labState.lastReport.timings
    .filter((t) => ["load", "eval before", "prune", "eval after"].includes(t.stage)).reduce((a, t) => a + t.seconds, 0));
  console.log(`[${s.name}] run ${(Date.now() - t0) / 1000} s in the page, ${seconds.toFixed(1)} s in its stages`);
  await shot(`${step}-result`);
  const ppl = Number(await page.textContent("#ppl-after"));
  const sample = await page.textContent("#sample-after");
  if (!(sample.length > "after:  ".length)) throw new Error("no generation sample after pruning");
  const backend = await page.$eval("#runs tbody tr:last-child td:nth-child(7)", (td) => td.textContent);
  return { recipe, ppl, seconds, backend };
}

let failed = false;
try {
  // ---- WebGPU ------------------------------------------------------------------------------------------
  const gpu = await session("webgpu", [...BASE, ...WEBGPU]);
  if (!gpu.backend.startsWith("WebGPU:")) throw new Error("WebGPU was not available with SwiftShader: " + gpu.backend);
  // SwiftShader is a software adapter: the device `auto` computes on the CPU backend; WebGPU is chosen by hand.
  if (!gpu.backend.includes("software adapter")) throw new Error("SwiftShader not flagged as software: " + gpu.backend);
  const auto = await demoRun(gpu, 2);
  if (auto.backend !== "CPU") throw new Error(`device auto on SwiftShader ran on ${auto.backend}, expected CPU`);
  await gpu.page.selectOption("#device", "webgpu");
  const first = await demoRun(gpu, 3, async () => {});
  if (first.backend !== "WebGPU") throw new Error(`device WebGPU ran on ${first.backend}`);
  await writeFile(join(tmp, "recipe.json"), first.recipe);
  const out = join(tmp, "cli-pruned");
  const report = cli("prune", join(repo, "models/demo"), "--out", out, "--recipe", join(tmp, "recipe.json"),
    "--calib", join(repo, "web/data/calib-python-tutorial.txt"), "--eval", join(repo, "web/data/eval-python-faq.txt"),
    "--eval-windows", WINDOWS, "--tasks", join(repo, "web/data/tasks-python-faq-completions.jsonl"), "--tasks-items", TASK_ITEMS, "--json");
  close(first.ppl, report.eval.after.ppl, "WebGPU page vs CLI perplexity after obs + ls at 20%");
  close(auto.ppl, report.eval.after.ppl, "device auto (CPU backend) on SwiftShader vs CLI perplexity");

  const evalOut = cli("eval", await downloadZip(gpu.page, "zip"), "--text", join(repo, "web/data/eval-python-faq.txt"), "--max-windows", WINDOWS, "--json");
  close(evalOut.ppl, first.ppl, "downloaded zip evaluated by the CLI vs the page");
  const TEXT = "To sort a list in Python";
  const onGpu = await tryModel(gpu.page, { model: "loaded", text: TEXT, tokens: 8 });
  if (!onGpu.gpu) throw new Error("Try the model with device WebGPU ran on the CPU");
  sameIds(onGpu.ids, cli("generate", join(repo, "models/demo"), "--prompt", TEXT, "--tokens", "8", "--json").ids,
    "greedy continuation on WebGPU");

  // A tensor over the adapter's storage-binding limit blocks runs on WebGPU only (the limit is lowered here:
  // the demo's tensors are far below SwiftShader's).
  await gpu.page.evaluate(() => { window.labState.webgpu.max_storage_buffer_binding_size = 1024; });
  const device = async (d) => { await gpu.page.selectOption("#device", d);
    return { error: await gpu.page.textContent("#error"), disabled: await gpu.page.isDisabled("#run") }; };
  const blocked = await device("webgpu");
  if (!blocked.disabled || !blocked.error.includes("storage binding limit of 0.0 MiB: choose CPU under Device"))
    throw new Error("a tensor over the binding limit did not block WebGPU: " + JSON.stringify(blocked));
  const freed = await device("cpu");
  if (freed.disabled || freed.error) throw new Error("the CPU backend stayed blocked: " + JSON.stringify(freed));
  console.log("ok  binding limit: " + blocked.error);
  if (gpu.foreign.length) throw new Error("requests outside the page's origin: " + gpu.foreign.join(", "));
  console.log(`ok  no request left ${origin}`);
  await gpu.browser.close();

  // ---- CPU fallback ------------------------------------------------------------------------------------
  const cpu = await session("cpu", BASE);
  if (!cpu.backend.includes("CPU")) throw new Error("expected the CPU notice, got: " + cpu.backend);
  const fallback = await demoRun(cpu, 2, loadDemo, TASK_ITEMS);
  if (fallback.backend !== "CPU") throw new Error(`without WebGPU the run went to ${fallback.backend}`);
  close(fallback.ppl, report.eval.after.ppl, "CPU fallback vs CLI perplexity");
  // The multiple-choice task before and after: the CLI's accuracies and standard errors for the same items.
  const tasks = await cpu.page.evaluate(() => window.labState.lastReport.tasks);
  for (const when of ["before", "after"])
    for (const k of ["acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "items", "choices", "tokens"])
      if (!(Math.abs(tasks[when][k] - report.tasks[when][k]) < 1e-12))
        throw new Error(`multiple choice ${when} ${k}: page ${tasks[when][k]}, CLI ${report.tasks[when][k]}`);
  const shown = await cpu.page.textContent("#acc-norm-after");
  if (!shown.startsWith(report.tasks.after.acc_norm.toFixed(3) + " ± ")) throw new Error("acc_norm after shown as " + shown);
  console.log(`ok  multiple choice (${tasks.before.items} items): acc ${tasks.before.acc} → ${tasks.after.acc}, ` +
    `acc_norm ${tasks.before.acc_norm} → ${tasks.after.acc_norm}, as the CLI's`);
  // A garbled task file and an item count that is not a whole number are named; nothing runs.
  const badTasks = join(tmp, "bad-tasks.jsonl");
  await writeFile(badTasks, '{"context": "Q:", "choices": [" a", " b"], "gold": 0}\n{"context": "Q:", "choices": [" a"], "gold": 0}\n');
  await cpu.page.setInputFiles("#tasks-file", [badTasks]);
  await cpu.page.click("#run");
  await cpu.page.waitForFunction(() => document.getElementById("error").textContent.includes("bad-tasks.jsonl line 2"), null, { timeout: 60000 });
  console.log("ok  garbled task file: " + (await cpu.page.textContent("#error")));
  await cpu.page.setInputFiles("#tasks-file", []);
  await cpu.page.fill("#tasks-items", "2.5");
  await cpu.page.click("#run");
  await cpu.page.waitForFunction(() => document.getElementById("error").textContent.includes("give a whole number"), null, { timeout: 60000 });
  console.log("ok  bad item count: " + (await cpu.page.textContent("#error")));
  await cpu.page.setChecked("#tasks-on", false);
  // Calibration windows the tab cannot hold are refused before the run, naming the tensor; nothing runs.
  // Scores run in blocks of at most 128 MiB, but one head of one 40000-token window is 5.96 GiB.
  await cpu.page.fill("#calib-len", "40000");
  await cpu.page.click("#run");
  const tooLarge = "calibration of 8 × 40000 tokens needs attention scores [1, 1, 40000, 40000] of 5.96 GiB in f32";
  await cpu.page.waitForFunction((m) => document.getElementById("error").textContent.includes(m), tooLarge, { timeout: 60000 });
  if (!(await cpu.page.textContent("#error")).includes("what is left of the tab's 4 GiB of wasm memory"))
    throw new Error("calibration too large: " + (await cpu.page.textContent("#error")));
  console.log("ok  calibration too large: " + (await cpu.page.textContent("#error")));
  await cpu.page.fill("#calib-len", "128");
  // The GGUF download, written by the core from the run's parts, evaluates to the same perplexity.
  const [ggufDownload] = await Promise.all([cpu.page.waitForEvent("download", { timeout: 120000 }), cpu.page.click("#download-gguf")]);
  const ggufPath = join(tmp, "pruned.gguf");
  await ggufDownload.saveAs(ggufPath);
  const ggufEval = cli("eval", ggufPath, "--text", join(repo, "web/data/eval-python-faq.txt"), "--max-windows", WINDOWS, "--json");
  close(ggufEval.ppl, fallback.ppl, "downloaded GGUF evaluated by the CLI vs the page");
  // A garbled upload: the error is shown, the page keeps working.
  const bad = join(tmp, "bad");
  await mkdir(bad);
  await writeFile(join(bad, "config.json"), await readFile(join(repo, "models/demo/config.json")));
  await writeFile(join(bad, "tokenizer.json"), await readFile(join(repo, "models/demo/tokenizer.json")));
  const garbage = Buffer.from(await readFile(join(repo, "models/demo/model.safetensors"))).subarray(0, 4096);
  garbage.writeBigUInt64LE(123456789n, 0);
  await writeFile(join(bad, "model.safetensors"), garbage);
  await cpu.page.setInputFiles("#files", ["config.json", "tokenizer.json", "model.safetensors"].map((f) => join(bad, f)));
  await cpu.page.waitForFunction(() => document.getElementById("error").textContent.includes("safetensors"), null, { timeout: 60000 });
  console.log("ok  garbled upload: " + (await cpu.page.textContent("#error")));
  await cpu.shot("4-garbled");
  // Files that do not belong together: a config with one layer more than the weights.
  const mismatched = join(tmp, "mismatched");
  await mkdir(mismatched);
  const config = JSON.parse(await readFile(join(repo, "models/demo/config.json"), "utf8"));
  config.num_hidden_layers += 1;
  await writeFile(join(mismatched, "config.json"), JSON.stringify(config));
  await writeFile(join(mismatched, "model.safetensors"), await readFile(join(repo, "models/demo/model.safetensors")));
  await cpu.page.setInputFiles("#files", ["config.json", "model.safetensors"].map((f) => join(mismatched, f)));
  const layer = `model.layers.${config.num_hidden_layers - 1}.`;
  await cpu.page.waitForFunction((l) => document.getElementById("error").textContent.includes(l), layer, { timeout: 60000 });
  console.log("ok  mismatched files: " + (await cpu.page.textContent("#error")));
  // A garbled tokenizer_config.json beside good weights is named at the upload.
  const garbledSide = join(tmp, "garbled-side");
  await mkdir(garbledSide);
  for (const f of ["config.json", "tokenizer.json", "model.safetensors"]) await writeFile(join(garbledSide, f), await readFile(join(repo, "models/demo", f)));
  await writeFile(join(garbledSide, "tokenizer_config.json"), '{"chat_template": ');
  await cpu.page.setInputFiles("#files", ["config.json", "tokenizer.json", "model.safetensors", "tokenizer_config.json"].map((f) => join(garbledSide, f)));
  await cpu.page.waitForFunction(() => document.getElementById("error").textContent.includes("tokenizer_config.json: invalid JSON"), null, { timeout: 60000 });
  console.log("ok  garbled tokenizer_config.json: " + (await cpu.page.textContent("#error")));
  // The demo with a chat template and generation defaults, as an HF folder and as one .gguf (converted by the CLI).
  const demoSide = join(tmp, "demo-side");
  await mkdir(demoSide);
  for (const f of ["config.json", "tokenizer.json", "model.safetensors"]) await writeFile(join(demoSide, f), await readFile(join(repo, "models/demo", f)));
  const template = "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}";
  const side = { "tokenizer_config.json": JSON.stringify({ chat_template: template }), "generation_config.json": JSON.stringify({ eos_token_id: 0 }) };
  for (const [f, text] of Object.entries(side)) await writeFile(join(demoSide, f), text);
  const demoGguf = join(tmp, "demo.gguf");
  execFileSync(bin, ["convert", demoSide, "--out", demoGguf]);
  const loadGguf = async (page) => {
    await page.setInputFiles("#files", [demoGguf]);
    await page.waitForFunction(() => document.getElementById("model-summary").textContent.startsWith("demo.gguf:"), null, { timeout: 120000 });
  };
  await loadGguf(cpu.page);
  const summary = await cpu.page.textContent("#model-summary");
  if (!summary.includes("5,475,584 parameters")) throw new Error("GGUF upload summary: " + summary);
  console.log("ok  GGUF upload: " + summary);
  // Cancel: the core stops at its next checkpoint; the worker (and the loaded model) stay.
  await setRecipe(cpu.page);
  await cpu.page.fill("#calib-samples", "128"); // long enough to be caught mid-way
  await cpu.page.$eval("#calib-samples", (el) => el.dispatchEvent(new Event("input")));
  await cpu.page.click("#run");
  // The worker passes the core's progress messages through: the stage, its count and the layer at work.
  await cpu.page.waitForFunction(() => /^layers [1-9]\d*\/\d+ layer \d+$/.test(document.getElementById("stage").textContent), null, { timeout: 300000 });
  console.log("ok  progress mid-run: " + await cpu.page.textContent("#stage"));
  const cancelAt = Date.now();
  await cpu.page.click("#cancel");
  await cpu.page.waitForFunction(() => document.getElementById("error").textContent.includes("run cancelled"), null, { timeout: 60000 });
  const starts = await cpu.page.evaluate(() => window.labState.workerStarts);
  if (starts !== 1) throw new Error(`cancel restarted the core (${starts} workers started)`);
  console.log(`ok  cancel stopped the run in ${(Date.now() - cancelAt) / 1000} s without restarting the core`);
  await cpu.shot("5-cancelled");
  const again = await demoRun(cpu, 6, async () => {});
  close(again.ppl, fallback.ppl, "a run on the uploaded GGUF after the errors and the cancel");
  // Its zip gives transformers the GGUF's chat template in tokenizer_config.json.
  const fromGguf = JSON.parse(await readFile(join(await downloadZip(cpu.page, "zip-gguf"), "tokenizer_config.json"), "utf8"));
  if (fromGguf.chat_template !== template) throw new Error("zip of a GGUF upload: tokenizer_config.json " + JSON.stringify(fromGguf));
  console.log("ok  the zip of a GGUF upload holds its chat template in tokenizer_config.json");
  const rows = await cpu.page.$$eval("#runs tbody tr", (r) => r.length);
  if (rows !== 2) throw new Error(`the run table has ${rows} rows, expected 2`);
  // Whole layers from the same page: block influence, each run of removed layers repaired into the layer before.
  await cpu.page.check("#whole");
  await cpu.page.selectOption("#importance", "block-influence");
  await cpu.page.fill("#layer-start", "1");
  await cpu.page.fill("#calib-samples", WINDOWS);
  await cpu.page.waitForFunction(() => JSON.parse(document.getElementById("recipe").value).structures[0] === "layers");
  await cpu.page.waitForFunction(() => document.getElementById("planned").textContent.includes("parameters left"));
  const depthRecipe = await cpu.page.inputValue("#recipe");
  await cpu.page.evaluate(() => document.activeElement?.blur());
  await cpu.page.click("#run");
  await cpu.page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length > 2, null, { timeout: 900000 });
  await cpu.shot("7-whole-layers");
  const depthPpl = Number(await cpu.page.textContent("#ppl-after"));
  const removedBars = await cpu.page.$$eval("#chart rect.removed title", (t) => t.map((x) => Number(x.textContent.match(/^layer (\d+)/)[1])));
  const strip = await cpu.page.textContent("#heatmap h3");
  await writeFile(join(tmp, "depth.json"), depthRecipe);
  const depthReport = cli("prune", demoGguf, "--out", join(tmp, "depth-pruned"), "--recipe", join(tmp, "depth.json"),
    "--calib", join(repo, "web/data/calib-python-tutorial.txt"), "--eval", join(repo, "web/data/eval-python-faq.txt"),
    "--eval-windows", WINDOWS, "--json");
  const removed = depthReport.plan.removed_layers ?? [];
  if (!(removed.length > 0) || removedBars.join() !== removed.join() || !strip.startsWith("Whole-layer scores"))
    throw new Error(`whole layers: ${removedBars} bars for layers ${removed} removed by the CLI; heading ${strip}`);
  close(depthPpl, depthReport.eval.after.ppl, `whole layers ${removed} (block influence + ls) vs CLI perplexity`);
  // Whole layers first, then KV groups and MLP channels of the layers that stay (a depth ratio), as the CLI runs it.
  await cpu.page.uncheck("#whole");
  await cpu.page.selectOption("#importance", "numerical");
  await cpu.page.fill("#depth-ratio", "0.2");
  await cpu.page.$eval("#depth-ratio", (el) => el.dispatchEvent(new Event("input")));
  await cpu.page.waitForFunction(() => JSON.parse(document.getElementById("recipe").value).depth?.ratio === 0.2);
  await cpu.page.waitForFunction(() => document.getElementById("planned").textContent.includes("parameters left"));
  const bothRecipe = await cpu.page.inputValue("#recipe");
  await cpu.page.evaluate(() => document.activeElement?.blur());
  await cpu.page.click("#run");
  await cpu.page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length > 3, null, { timeout: 900000 });
  await cpu.shot("8-depth-then-width");
  const bothPpl = Number(await cpu.page.textContent("#ppl-after"));
  const headings = await cpu.page.$$eval("#heatmap h3", (h) => h.map((x) => x.textContent));
  const bothBars = await cpu.page.$$eval("#chart rect title", (t) => t.map((x) => x.textContent));
  await writeFile(join(tmp, "both.json"), bothRecipe);
  const bothReport = cli("prune", demoGguf, "--out", join(tmp, "both-pruned"), "--recipe", join(tmp, "both.json"),
    "--calib", join(repo, "web/data/calib-python-tutorial.txt"), "--eval", join(repo, "web/data/eval-python-faq.txt"),
    "--eval-windows", WINDOWS, "--json");
  const gone = bothReport.plan.removed_layers ?? [];
  const narrowed = bothReport.plan.layers.filter((l) => l.kv_groups.length + l.mlp_channels.length > 0).map((l) => l.layer);
  if (gone.length !== 1 || !narrowed.length || narrowed.some((l) => gone.includes(l)) || !bothBars.includes(`layer ${gone[0]}: removed`) ||
      headings.length !== 2 || !headings[0].startsWith("Whole-layer scores") || !headings[1].startsWith("KV group scores"))
    throw new Error(`depth then width: layers ${gone} removed and ${narrowed} narrowed by the CLI; bars ${bothBars}; headings ${headings}`);
  close(bothPpl, bothReport.eval.after.ppl, `layer ${gone} whole, then KV groups + MLP of layers ${narrowed} (numerical + ls) vs CLI perplexity`);
  await cpu.page.fill("#depth-ratio", "0");
  await cpu.page.$eval("#depth-ratio", (el) => el.dispatchEvent(new Event("input")));
  // Query heads from the same page: checking them unchecks KV groups; the same number goes from every group.
  await cpu.page.uncheck("#whole");
  await cpu.page.check("#qheads");
  await cpu.page.selectOption("#importance", "obs");
  // The demo has 2 heads per group: at 30% of the parameters each group of layers 1..6 loses one.
  await cpu.page.$eval("#target", (el) => { el.value = "0.3"; el.dispatchEvent(new Event("input")); });
  await cpu.page.waitForFunction(() => JSON.parse(document.getElementById("recipe").value).structures.join() === "query-heads,mlp");
  if (await cpu.page.isChecked("#kv")) throw new Error("checking query heads left KV groups checked");
  await cpu.page.waitForFunction(() => document.getElementById("planned").textContent.includes("parameters left"));
  const headsRecipe = await cpu.page.inputValue("#recipe");
  await cpu.page.evaluate(() => document.activeElement?.blur());
  await cpu.page.click("#run");
  await cpu.page.waitForFunction(() => document.querySelectorAll("#runs tbody tr").length > 4, null, { timeout: 900000 });
  await cpu.shot("9-query-heads");
  const headsPpl = Number(await cpu.page.textContent("#ppl-after"));
  const heatmap = await cpu.page.textContent("#heatmap h3");
  const bars = await cpu.page.$$eval("#chart rect.kv title", (t) => t.map((x) => x.textContent));
  await writeFile(join(tmp, "heads.json"), headsRecipe);
  const headsReport = cli("prune", demoGguf, "--out", join(tmp, "heads-pruned"), "--recipe", join(tmp, "heads.json"),
    "--calib", join(repo, "web/data/calib-python-tutorial.txt"), "--eval", join(repo, "web/data/eval-python-faq.txt"),
    "--eval-windows", WINDOWS, "--json");
  const want = headsReport.layers_after.map((l, i) => `layer ${i}: ${l.num_heads}/${headsReport.layers_before[i].num_heads} query heads, ${l.num_kv_heads}/${headsReport.layers_before[i].num_kv_heads} KV groups`);
  if (bars.join() !== want.join() || !headsReport.plan.layers.some((l) => (l.query_heads ?? []).length) || !heatmap.startsWith("Query head scores"))
    throw new Error(`query heads: bars ${bars} vs ${want}; heatmap heading ${heatmap}`);
  close(headsPpl, headsReport.eval.after.ppl, "query heads (obs + ls) vs CLI perplexity");
  // The search allocation and AdaPruner from the same page. Both rank candidates by a held-out loss, and
  // neighbouring candidates (a few MLP channels apart) differ there by less than the f32 noise between this wasm
  // build and the native CLI, so past the loss-independent start (uniform and its mutations; trial 0 and the
  // random trials) the page's search may rank two differently and part from the CLI's. Checked: that start
  // against the CLI's own search (1e-5); the whole record and the plan where the plans agree; the page's record
  // as a search's (best never rising, the winner its lowest loss); the page's plan replayed by the CLI
  // (`--plan`, the recipe's repair) for the page's perplexity and the target; the page shows its record as the
  // CLI's summary says it.
  await cpu.page.uncheck("#qheads");
  await cpu.page.check("#kv");
  await cpu.page.$eval("#target", (el) => { el.value = "0.2"; el.dispatchEvent(new Event("input")); });
  const counts = (plan) => plan.layers.map((l) => `${l.layer}: ${l.kv_groups.length}/${(l.query_heads ?? []).length}/${l.mlp_channels.length}`).join(" ");
  // Structures one plan removes and the other keeps.
  const parted = (a, b) => {
    const of = (plan) => new Set(plan.layers.flatMap((l) => ["kv_groups", "query_heads", "mlp_channels"].flatMap((k) => (l[k] ?? []).map((v) => `${l.layer} ${k} ${v}`))));
    const [x, y] = [of(a), of(b)];
    return [...x].filter((v) => !y.has(v)).length + [...y].filter((v) => !x.has(v)).length;
  };
  const losses = (a, b, what) => a.forEach((x, i) => { if (!(Math.abs(x - b[i]) <= 1e-5 * Math.abs(b[i]))) throw new Error(`${what} ${i}: ${x} vs ${b[i]}`); });
  const searched = async (step, importance, allocation, field, shownId, shown) => {
    await cpu.page.selectOption("#importance", importance);
    await cpu.page.selectOption("#allocation", allocation);
    await cpu.page.waitForFunction(([i, a]) => { const r = JSON.parse(document.getElementById("recipe").value);
      return r.importance === i && r.allocation.kind === a && r.structures.join() === "kv-groups,mlp"; }, [importance, allocation]);
    await cpu.page.waitForFunction(() => document.getElementById("planned").textContent.includes("parameters left"));
    const recipe = await cpu.page.inputValue("#recipe");
    const rows = await cpu.page.$$eval("#runs tbody tr", (r) => r.length);
    await cpu.page.evaluate(() => document.activeElement?.blur());
    await cpu.page.click("#run");
    await cpu.page.waitForFunction((n) => document.querySelectorAll("#runs tbody tr").length > n, rows, { timeout: 900000 });
    await cpu.shot(step);
    const page = await cpu.page.evaluate(() => window.labState.lastReport);
    const name = join(tmp, `${importance}-${allocation}`);
    await writeFile(`${name}.json`, recipe);
    await writeFile(`${name}-plan.json`, JSON.stringify(page.plan));
    const args = ["--recipe", `${name}.json`, "--calib", join(repo, "web/data/calib-python-tutorial.txt"),
      "--eval", join(repo, "web/data/eval-python-faq.txt"), "--eval-windows", WINDOWS, "--json"];
    const report = cli("prune", demoGguf, "--out", name, ...args);
    const replay = cli("prune", demoGguf, "--out", `${name}-replay`, "--plan", `${name}-plan.json`, ...args);
    const [found, want] = [page[field], report[field]];
    if (!found || !want) throw new Error(`${importance} with ${allocation}: no ${field} in the page's or the CLI's report`);
    const same = JSON.stringify(page.plan) === JSON.stringify(report.plan);
    console.log(`${same ? "ok  " : "note"} ${importance} with ${allocation}: the page's plan ${same ? "is" : "is not"} the CLI's` +
      (same ? "" : `: ${parted(page.plan, report.plan)} structures differ (per layer KV groups/query heads/MLP channels ` +
        `${counts(page.plan)} vs ${counts(report.plan)})`));
    const text = await cpu.page.textContent(shownId);
    if (text !== shown(found)) throw new Error(`${field} shown as ${JSON.stringify(text)}, its summary line: ${JSON.stringify(shown(found))}`);
    close(Number(await cpu.page.textContent("#ppl-after")), replay.eval.after.ppl, `${importance} with ${allocation}: the page's plan replayed by the CLI, perplexity`);
    const left = replay.params_after.total, most = Math.floor(0.8 * replay.params_before.total);
    if (left > most) throw new Error(`${importance} with ${allocation}: the page's plan leaves ${left} parameters, over the target's ${most}`);
    console.log("ok  " + text);
    return [found, want, same];
  };
  const [search, cliSearch, sameSearch] = await searched("9a-search", "obs", "search", "search", "#search-found", (s) =>
    `search: ${s.candidates} candidates: loss ${s.best_loss.at(-1).toFixed(4)} (uniform: ${s.uniform_loss.toFixed(4)})`);
  const gens = search.best_loss;
  if (gens.length !== cliSearch.best_loss.length || gens[0] > search.uniform_loss || gens.some((x, i) => i > 0 && x > gens[i - 1]))
    throw new Error(`search: the page's record is not a search's: ${JSON.stringify(search)}`);
  losses([search.uniform_loss, gens[0]], [cliSearch.uniform_loss, cliSearch.best_loss[0]], "search: uniform and first generation loss");
  if (sameSearch) {
    if (search.candidates !== cliSearch.candidates) throw new Error(`search: ${search.candidates} candidates, the CLI ${cliSearch.candidates}`);
    losses(gens, cliSearch.best_loss, "search: best loss of generation");
  }
  console.log(`ok  search record: uniform ${search.uniform_loss.toFixed(6)} vs ${cliSearch.uniform_loss.toFixed(6)}, ` +
    `generation 0 ${gens[0].toFixed(6)} vs ${cliSearch.best_loss[0].toFixed(6)}, last ${gens.at(-1).toFixed(6)} vs ${cliSearch.best_loss.at(-1).toFixed(6)}`);
  const [tuned, cliTuned, sameTuned] = await searched("9b-adapruner", "adapruner", "uniform", "adapruner", "#adapruner-found", (a) =>
    `adapruner: trial ${a.best} of ${a.losses.length}: loss ${a.losses[a.best].toFixed(4)} (trial 0: ${a.losses[0].toFixed(4)}); ` +
    `mix ${a.metrics.map((m, i) => `${a.weights[i].toFixed(2)} ${m}`).join(" + ")}; blocks [${a.blocks.join(", ")}]`);
  // Trial 0 and the random trials (the first max(2, (trials − 1) / 4) after it) do not depend on any loss.
  const startup = Math.min(8, Math.max(2, Math.floor((tuned.losses.length - 1) / 4)));
  const lowest = tuned.losses.indexOf(Math.min(...tuned.losses));
  if (tuned.losses.length !== cliTuned.losses.length || tuned.best !== lowest || Math.abs(tuned.weights.reduce((a, b) => a + b) - 1) > 1e-9)
    throw new Error(`adapruner: the page's record is not a search's: ${JSON.stringify(tuned)}`);
  losses(tuned.losses.slice(0, startup + 1), cliTuned.losses, "adapruner: trial");
  if (sameTuned) {
    if (tuned.best !== cliTuned.best || tuned.blocks.join() !== cliTuned.blocks.join()) throw new Error(`adapruner: ${JSON.stringify(tuned)} vs ${JSON.stringify(cliTuned)}`);
    losses(tuned.losses, cliTuned.losses, "adapruner: trial");
    losses(tuned.weights, cliTuned.weights, "adapruner: weight");
  }
  console.log(`ok  adapruner record: trials 0..=${startup} as the CLI's, winner ${tuned.best} (the CLI's ${cliTuned.best})`);
  await cpu.page.selectOption("#allocation", "uniform");
  // An HF upload's tokenizer and generation files go into the zip byte for byte.
  await demoRun(cpu, 10, async (page) => {
    await page.setInputFiles("#files", ["config.json", "tokenizer.json", "model.safetensors", ...Object.keys(side)].map((f) => join(demoSide, f)));
    await page.waitForFunction(() => document.getElementById("model-summary").textContent.startsWith("model.safetensors:"), null, { timeout: 120000 });
  });
  const fromHf = await downloadZip(cpu.page, "zip-hf");
  for (const [f, text] of Object.entries(side))
    if ((await readFile(join(fromHf, f), "utf8")) !== text) throw new Error(`zip of an HF upload: ${f} differs from the upload`);
  console.log("ok  the zip of an HF upload holds its " + Object.keys(side).join(" and "));
  // Try the model: the loaded model's greedy continuation and the pruned model's sampled chat answer.
  const greedy = await tryModel(cpu.page, { model: "loaded", text: TEXT, tokens: 24 });
  const cliGreedy = cli("generate", demoSide, "--prompt", TEXT, "--tokens", "24", "--json");
  sameIds(greedy.ids, cliGreedy.ids, "greedy continuation of the loaded model");
  if (greedy.shown !== TEXT + cliGreedy.text || greedy.finish_reason !== "length")
    throw new Error(`the page shows ${JSON.stringify(greedy.shown)} (${greedy.finish_reason})`);
  const QUESTION = "How do I sort a list?";
  const answer = await tryModel(cpu.page, { model: "pruned", chat: true, text: QUESTION, tokens: 24, temperature: 0.8, topK: 20, seed: 7 });
  const cliAnswer = cli("generate", fromHf, "--chat", QUESTION, "--temperature", "0.8", "--top-k", "20", "--seed", "7", "--tokens", "24", "--json");
  sameIds(answer.ids, cliAnswer.ids, "sampled chat answer of the pruned model");
  if (answer.chat_prompt !== cliAnswer.chat_prompt || answer.shown !== `you: ${QUESTION}\nmodel: ${cliAnswer.text}`)
    throw new Error(`chat prompt ${JSON.stringify(answer.chat_prompt)} vs ${JSON.stringify(cliAnswer.chat_prompt)}; shown ${JSON.stringify(answer.shown)}`);
  // The conversation goes on with the loaded model: the CLI answers the same messages (--messages) alike.
  const FOLLOW_UP = "And a tuple?";
  const followUp = await tryModel(cpu.page, { model: "loaded", chat: true, text: FOLLOW_UP, tokens: 16 });
  const conversation = [{ role: "user", content: QUESTION }, { role: "assistant", content: answer.text }, { role: "user", content: FOLLOW_UP }];
  await writeFile(join(tmp, "conversation.json"), JSON.stringify(conversation));
  const cliFollowUp = cli("generate", demoSide, "--messages", join(tmp, "conversation.json"), "--tokens", "16", "--json");
  sameIds(followUp.ids, cliFollowUp.ids, "the loaded model's answer to the pruned model's conversation");
  const transcript = `you: ${QUESTION}\nmodel: ${answer.text}\nyou: ${FOLLOW_UP}\nmodel: ${cliFollowUp.text}`;
  if (followUp.chat_prompt !== cliFollowUp.chat_prompt || followUp.shown !== transcript)
    throw new Error(`follow-up: ${JSON.stringify(followUp.chat_prompt)} vs ${JSON.stringify(cliFollowUp.chat_prompt)}; shown ${JSON.stringify(followUp.shown)}`);
  await cpu.shot("11-try");
  await cpu.page.click("#try-new");
  if ((await cpu.page.textContent("#try-out")) || (await cpu.page.evaluate(() => window.labState.conversation.length)))
    throw new Error("New conversation kept the conversation");
  // Stop: a long continuation ends between tokens and keeps what came (the CLI's first tokens).
  const stopped = await tryModel(cpu.page, { model: "loaded", text: TEXT, tokens: 3000, stopAfter: 5 });
  const cliLong = cli("generate", demoSide, "--prompt", TEXT, "--tokens", "400", "--json");
  if (stopped.finish_reason !== "stopped" || !(stopped.ids.length >= 5 && stopped.ids.length < 400))
    throw new Error(`Stop: ${stopped.ids.length} tokens, ${stopped.finish_reason}`);
  sameIds(stopped.ids, cliLong.ids.slice(0, stopped.ids.length), "a continuation stopped by the page");
  await cpu.page.fill("#try-text", "");
  await cpu.page.click("#try-go");
  await cpu.page.waitForFunction(() => document.getElementById("error").textContent.includes("the text is empty"), null, { timeout: 60000 });
  console.log("ok  empty text: " + (await cpu.page.textContent("#error")));
  if (cpu.foreign.length) throw new Error("requests outside the page's origin: " + cpu.foreign.join(", "));
  await cpu.browser.close();
  console.log(`browser lab: obs + ls on the demo in ${first.seconds.toFixed(1)} s (WebGPU/SwiftShader), ` +
    `${fallback.seconds.toFixed(1)} s (CPU fallback)`);
  await writeFile(join(shots, "timings.json"), JSON.stringify({ webgpu_seconds: first.seconds, auto_seconds: auto.seconds, cpu_seconds: fallback.seconds, recipe: JSON.parse(first.recipe) }, null, 2));
} catch (e) {
  failed = true;
  console.error("FAILED: " + e.message);
} finally {
  server.close();
  await rm(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
