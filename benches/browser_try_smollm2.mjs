// Benchmark (not a test): the browser lab's "Try the model" on SmolLM2-135M-Instruct (the Q4_1 GGUF) in headless
// Chromium on the CPU backend (wasm, one thread), against `prunelab generate` on the native CPU backend, measured
// now: the chat answer to one question, greedy, 32 tokens at most, twice in the page (the model is loaded from
// the upload each time). Prints load, prompt and decoding figures and the ratios browser / native, and whether
// both gave the same tokens.
// Usage (after `trunk build --release --offline=true` and `cargo build --release`, from the repository root):
//   node benches/browser_try_smollm2.mjs dist target/release/prunelab models/smollm2-135m.gguf
import { createRequire } from "node:module";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { join, extname, resolve } from "node:path";

// playwright-core is installed for the browser test, under tests/web.
const { chromium } = createRequire(resolve("tests/web/package.json"))("playwright-core");
const [dist, bin, gguf] = process.argv.slice(2).map((p) => resolve(p));
const QUESTION = "What is the capital of France?";
const TOKENS = 32;

const server = createServer(async (req, res) => {
  const path = join(dist, decodeURIComponent(new URL(req.url, "http://x").pathname).replace(/\/$/, "/index.html"));
  const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".css": "text/css" };
  try { const body = await readFile(path); res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" }); res.end(body); }
  catch { res.writeHead(404); res.end(); }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true,
  args: ["--headless=new", "--no-sandbox", "--disable-background-networking", "--no-first-run"] });
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/index.html`);
  await page.waitForSelector("body[data-ready='1']", { timeout: 120000 });
  await page.setInputFiles("#files", [gguf]);
  await page.waitForFunction(() => document.getElementById("model-summary").textContent.includes("parameters"), null, { timeout: 300000 });
  await page.check("#try-chat");
  await page.fill("#try-text", QUESTION);
  await page.fill("#try-tokens", String(TOKENS));
  const runs = [];
  for (let i = 0; i < 2; i++) {
    await page.evaluate(() => { window.labState.lastGenerated = null; });
    await page.click("#try-go");
    await page.waitForFunction(() => window.labState.lastGenerated || document.getElementById("error").textContent, null, { timeout: 600000 });
    const out = await page.evaluate(() => window.labState.lastGenerated);
    if (!out) throw new Error(await page.textContent("#error"));
    runs.push(out);
  }
  const native = JSON.parse(execFileSync(bin, ["generate", gguf, "--chat", QUESTION, "--tokens", String(TOKENS), "--json"], { encoding: "utf8" }));
  const page2 = runs[1];
  console.log(`answer (page): ${JSON.stringify(page2.text)}; the CLI's: ${JSON.stringify(native.text)}; ` +
    `same tokens: ${page2.ids.join() === native.ids.join()} (${page2.ids.length} tokens, ${page2.finish_reason})`);
  for (const [i, r] of runs.entries())
    console.log(`page run ${i + 1}: load ${r.load_seconds.toFixed(2)} s, prompt (${r.prompt_tokens} tokens) ` +
      `${r.prefill_seconds.toFixed(3)} s, decode ${(r.decode_tokens_per_second ?? 0).toFixed(1)} tokens/s`);
  console.log(`native CPU: prompt ${native.prefill_seconds.toFixed(3)} s, decode ${native.decode_tokens_per_second.toFixed(1)} tokens/s`);
  console.log(`browser / native: prompt ${(page2.prefill_seconds / native.prefill_seconds).toFixed(1)}x, ` +
    `decode time per token ${(native.decode_tokens_per_second / page2.decode_tokens_per_second).toFixed(1)}x`);
} finally {
  await browser.close();
  server.close();
}
