// `npm run bench`: the same measurement as `tramontane bench`, through the npm
// package in headless Chromium (WebGPU), on the default model. Prints JSON.
//   node scripts/bench-browser.mjs [--model URL-PATH] [--prompt-tokens 128] [--gen-tokens 64] [--repetitions 3]
//     [--json-schema FILE]   also decode under that JSON Schema, alternating with
//                            unconstrained runs: both speeds, mask ms/token, compile time
//     [--image [URL-PATH]]   also time an image through the image side of a vision
//                            model (a generated 1024x768 picture without URL-PATH):
//                            the browser's decode, preprocessing, encoder + projector
//     [--mmproj NAME]        a GGUF model's mmproj file (in the model's folder)
//     [--cache-store auto|cacheApi]  where files over a cache part are cached
//                            (the `cacheStore` load option: OPFS by default)
//     [--kernels auto|gpu|cpu] the `kernels` load option (kernel shapes; weights in
//                            textures or buffers)
//     [--worker]             with --load-only: load through WorkerEngine (as the
//                            demo does), where OPFS files are read synchronously
//     [--load-only]          only the cold load (network, into the Cache API) and,
//                            in a relaunched browser on the same profile (a person
//                            coming back), the cached one, each by phase, then the
//                            first token of a --prompt-tokens prompt (give a short
//                            one: a 7B shape runs at a minute a token on SwiftShader;
//                            0: none).
//     [--first-question TEXT] with --load-only: then, after --pause seconds (default 3:
//                            a person typing), that question as the first chat
//                            request: its first token and the prompt tokens it ran
//     [--prefill]            with --first-question: the cached load with the `prefill`
//                            load option (the template's own opening run as it ends)
//                            Runs in a browser profile on disk (target/bench-profile,
//                            emptied first): an incognito context keeps its storage
//                            in memory and cannot cache a model of a few GB
import fs from 'node:fs';
import { execSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';
import { launch, launchProfile } from '../tests/browser/browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, d) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : d; };
const opts = {
  model: arg('model', '/models/SmolLM2-135M-Instruct.Q4_1.gguf'),
  promptTokens: Number(arg('prompt-tokens', 128)),
  genTokens: Number(arg('gen-tokens', 64)),
  repetitions: Number(arg('repetitions', 3)),
  schema: arg('json-schema', null) ? JSON.parse(fs.readFileSync(arg('json-schema'), 'utf8')) : null,
  loadOnly: process.argv.includes('--load-only'),
  // `--image` alone: the generated picture (''); `--image PATH`: that file.
  image: process.argv.includes('--image') ? (arg('image', '') ?? '').replace(/^--.*/, '') : null,
  mmproj: arg('mmproj', null),
  cacheStore: arg('cache-store', 'auto'),
  worker: process.argv.includes('--worker'),
  kernels: arg('kernels', null),
  question: arg('first-question', null),
  pause: Number(arg('pause', 3)),
  prefill: process.argv.includes('--prefill'),
};
// What every load in the pages below is given.
opts.loadOptions = { cacheStore: opts.cacheStore, ...(opts.mmproj ? { mmproj: opts.mmproj } : {}), ...(opts.kernels ? { kernels: opts.kernels } : {}) };

const server = await startServer({ root: ROOT });
const profileDir = path.join(ROOT, 'target/bench-profile');
if (opts.loadOnly) {
  try {
    await loadOnly();
  } finally {
    await server.close();
    fs.rmSync(profileDir, { recursive: true, force: true });
  }
  process.exit(0);
}

// The cold load into a fresh profile on disk; the browser closed and
// relaunched on it; the cached load and the first token there.
async function loadOnly() {
  fs.rmSync(profileDir, { recursive: true, force: true });
  const inPage = async (fn, arg) => {
    const ctx = await launchProfile(profileDir);
    try {
      const page = await ctx.newPage();
      await page.goto(server.url + 'tests/browser/blank.html');
      return { r: await page.evaluate(fn, arg), version: ctx.browser()?.version() ?? '' };
    } finally {
      await ctx.close();
    }
  };
  process.stderr.write(`bench: ${opts.model}, cold and cached loads, then ${opts.promptTokens} prompt tokens\n`);
  const { r: c } = await inPage(async (o) => {
    const T = await import('/pkg/index.js');
    const loadOptions = { ...o.loadOptions };
    await T.Engine.cache.delete(o.model, loadOptions);
    const t = performance.now();
    const e = await (o.worker ? T.WorkerEngine : T.Engine).load(o.model, loadOptions);
    const seconds = (performance.now() - t) / 1000;
    const out = { seconds, phases: e.info.loadPhases, network: e.info.network, wasmBytes: e.info.wasmMemoryBytes, weightBytes: e.info.weightBytes };
    await e.unload();
    e.terminate?.();
    return out;
  }, opts);
  // What the cache wrote reaches the disk, as it has by a person's next visit.
  execSync('sync');
  const { r: w, version } = await inPage(async (o) => {
    const T = await import('/pkg/index.js');
    const loadOptions = { ...o.loadOptions };
    if (o.prefill) loadOptions.prefill = {};
    const t = performance.now();
    const e = await (o.worker ? T.WorkerEngine : T.Engine).load(o.model, loadOptions);
    const seconds = (performance.now() - t) / 1000;
    let question = null;
    if (o.question != null) {
      await new Promise((r) => setTimeout(r, o.pause * 1000));
      const u = (await e.chat.completions.create({ messages: [{ role: 'user', content: o.question }], max_tokens: 1, temperature: 0 })).usage;
      question = { text: o.question, pause_s: o.pause, prefill: o.prefill, prefilled_at_load: e.info.prefilledTokens, prompt_tokens: u.prompt_tokens,
        cached_tokens: u.prompt_tokens_details.cached_tokens, time_to_first_token_s: u.extra.time_to_first_token_s };
      await e.resetChat();
    }
    const vocab = e.info.vocabSize;
    const prompt = Array.from({ length: o.promptTokens }, (_, i) => (i * 7919 + 13) % vocab);
    // --prompt-tokens 0: the loads only.
    const ttft = prompt.length ? (await e.completions.create({ prompt, max_tokens: 1, temperature: 0, ignore_eos: true })).usage.extra.time_to_first_token_s : null;
    const out = { seconds, phases: e.info.loadPhases, network: e.info.network, wasmBytes: e.info.wasmMemoryBytes, ttft, question, info: e.info };
    await e.unload();
    e.terminate?.();
    return out;
  }, opts);
  const rate = (s) => Math.round(c.weightBytes / s / 1e6);
  console.log(JSON.stringify({
    model: opts.model, weight_bytes: c.weightBytes, engine: opts.worker ? 'WorkerEngine' : 'Engine', cache_store: opts.cacheStore,
    load_seconds: c.seconds, load_mb_per_s: rate(c.seconds), load_phases: c.phases, network: c.network,
    load_seconds_cached: w.seconds, load_mb_per_s_cached: rate(w.seconds), load_phases_cached: w.phases, network_cached: w.network,
    prompt_tokens: opts.promptTokens, time_to_first_token_cold_s: w.ttft, cached_load_to_first_token_s: w.ttft == null ? null : w.seconds + w.ttft,
    first_question: w.question,
    peak_wasm_memory_bytes: Math.max(c.wasmBytes, w.wasmBytes),
    adapter: { name: w.info.adapter.name || 'WebGPU adapter', backend: w.info.adapter.backend },
    browser: `chromium ${version}`,
  }, null, 1));
}

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(server.url + 'tests/browser/blank.html');
  process.stderr.write(`bench: ${opts.model}, ${opts.promptTokens} prompt tokens, ${opts.genTokens} generated, ${opts.repetitions} repetitions\n`);
  const r = await page.evaluate(async (o) => {
    const T = await import('/pkg/index.js');
    const loadOptions = { ...o.loadOptions };
    await T.Engine.cache.delete(o.model, loadOptions);
    let t = performance.now();
    const e = await T.Engine.load(o.model, loadOptions);
    const cold = (performance.now() - t) / 1000;
    const wasmBytes = await T.Engine.wasmMemoryBytes();
    await e.unload();
    t = performance.now();
    await e.load(o.model, loadOptions);
    const cached = (performance.now() - t) / 1000;
    const vocab = e.info.vocabSize;
    let x = 0x9e3779b9;
    const prompt = Array.from({ length: o.promptTokens }, () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % vocab; });
    const req = { prompt, max_tokens: o.genTokens, temperature: 0, ignore_eos: true };
    // The first request after the load, as an app's first message meets it
    // (in Chromium pipelines compile at their first dispatch): the cold time
    // to first token. It is also the warm-up of the runs below.
    await e.resetChat();
    const ttftCold = (await e.completions.create({ ...req, max_tokens: 2 })).usage.extra.time_to_first_token_s;
    const pre = [], dec = [], ttft = [];
    for (let i = 0; i < o.repetitions; i++) {
      await e.resetChat();
      const u = (await e.completions.create(req)).usage.extra;
      pre.push(u.prefill_tokens_per_s); dec.push(u.decode_tokens_per_s); ttft.push(u.time_to_first_token_s);
    }
    let schema = null;
    if (o.schema) {
      // The same prompt asking for the JSON, free and constrained in turn.
      const messages = [{ role: 'user', content: 'Invent a realistic example record and write it as JSON: fill every field with plausible values.' }];
      const response_format = { type: 'json_schema', json_schema: { name: 'bench', schema: o.schema } };
      const free = [], under = [], masks = [], compile = [];
      for (let i = 0; i < o.repetitions; i++) {
        await e.resetChat();
        free.push((await e.chat.completions.create({ messages, max_tokens: o.genTokens, temperature: 0, ignore_eos: true })).usage.extra.decode_tokens_per_s);
        await e.resetChat();
        const u = (await e.chat.completions.create({ messages, max_tokens: o.genTokens, temperature: 0, response_format })).usage;
        under.push(u.extra.decode_tokens_per_s);
        masks.push(u.extra.constraint.mask_ms_per_token);
        compile.push(u.extra.constraint);
      }
      schema = { free, under, masks, compile: compile[0] };
    }
    let image = null;
    if (o.image !== null) {
      let picture;
      if (o.image) {
        picture = await (await fetch(o.image)).blob();
      } else {
        // The CLI's generated picture: gradients and noise, 1024x768.
        const [w, h] = [1024, 768];
        const d = new ImageData(w, h);
        let x = 0x2545f491;
        for (let y = 0; y < h; y++) {
          for (let i = 0; i < w; i++) {
            x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
            const n = x % 32, at = 4 * (y * w + i);
            d.data.set([Math.min(255, Math.floor(i * 255 / w) + n), Math.min(255, Math.floor(y * 255 / h) + n), Math.floor((i + y) * 127 / (w + h)) + n, 255], at);
          }
        }
        picture = d;
      }
      const first = await e.timeImage(picture); // warm-up: pipelines compile at first dispatch
      const runs = [];
      for (let i = 0; i < o.repetitions; i++) runs.push(await e.timeImage(picture));
      image = { first, runs };
    }
    return { pre, dec, ttft, ttftCold, cold, cached, wasmBytes, info: e.info, schema, image };
  }, opts);
  const med = (v) => { const s = [...v].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
  const out = {
    model: opts.model, prompt_tokens: opts.promptTokens, gen_tokens: opts.genTokens, repetitions: opts.repetitions,
    prefill_tokens_per_s: med(r.pre), prefill_tokens_per_s_min_max: [Math.min(...r.pre), Math.max(...r.pre)],
    decode_tokens_per_s: med(r.dec), decode_tokens_per_s_min_max: [Math.min(...r.dec), Math.max(...r.dec)],
    time_to_first_token_s: med(r.ttft), time_to_first_token_cold_s: r.ttftCold,
    load_seconds: r.cold, load_seconds_cached: r.cached, cached_load_to_first_token_s: r.cached + r.ttftCold,
    weight_bytes: r.info.weightBytes, gpu_bytes: r.info.gpuBytes, peak_wasm_memory_bytes: r.wasmBytes,
    wasm_bytes: fs.statSync(path.join(ROOT, 'pkg/wasm/tramontane_web_bg.wasm')).size,
    adapter: { name: r.info.adapter.name || 'WebGPU adapter', backend: r.info.adapter.backend, driver: r.info.adapter.driver },
    browser: `chromium ${browser.version()}`,
  };
  if (r.schema) {
    out.json_schema = {
      decode_tokens_per_s: med(r.schema.under), unconstrained_decode_tokens_per_s: med(r.schema.free),
      ratio: med(r.schema.under) / med(r.schema.free), mask_ms_per_token: med(r.schema.masks),
      compile_seconds: r.schema.compile.compile_seconds, cached_after_first: true, vocab: r.info.vocabSize,
    };
  }
  if (r.image) {
    const f = r.image.first;
    const enc = r.image.runs.map((x) => x.encodeSeconds);
    const v = r.info.vision;
    out.image = {
      image: opts.image || 'generated 1024x768', width: f.width, height: f.height, resized: f.resized,
      patches: f.patches, image_tokens: f.imageTokens,
      decode_seconds: med(r.image.runs.map((x) => x.decodeSeconds)), preprocess_seconds: med(r.image.runs.map((x) => x.preprocessSeconds)),
      encode_seconds: med(enc), encode_seconds_min_max: [Math.min(...enc), Math.max(...enc)], first_encode_seconds: f.encodeSeconds,
      patches_per_s: f.patches / med(enc), image_tokens_per_s: f.imageTokens / med(enc),
      encoder_weight_bytes: v?.weightBytes ?? null, encoder_buffer_bytes: v?.bufferBytes ?? null,
    };
  }
  console.log(JSON.stringify(out, null, 1));
} finally {
  await browser.close();
  await server.close();
}
