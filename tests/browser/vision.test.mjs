// Images through the npm package in headless Chromium (WebGPU on
// SwiftShader), issue 27: the tiny random Pixtral checkpoint of
// tests/fixtures/vision (scripts/fixtures/make_vision.py) with its images as
// data: URLs, relative URLs, Blobs, ImageBitmaps and ImageData (Engine),
// as an <img> element (WorkerEngine), and through the GGUF + mmproj files
// llama.cpp's converter wrote from it: the greedy tokens must be
// transformers'. The browser decodes; the engine gets the pixels. A corrupt
// image and an image for a text-only model are INVALID_REQUEST naming the
// part, and the engine keeps answering. (A half-transparent pixel goes
// through the browser's canvas, which may keep it premultiplied: it can come
// back a level off the file's; the fixture's alpha case still gives
// transformers' tokens, and natively its pixels are exact.)
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage, runInPage, testQueue } from './browser.mjs';

const { test, register } = testQueue(nodeTest);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VISION = path.join(ROOT, 'tests/fixtures/vision');
const REF = JSON.parse(fs.readFileSync(path.join(VISION, 'pixtral/reference.json'), 'utf8'));
const CASES = Object.fromEntries(REF.cases.map((c) => [c.name, c]));
let server, browser;

before(async () => {
  server = await startServer({ root: ROOT });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.close(); });

const page = () => openPage(browser, server.url + 'tests/browser/blank.html');

test('Pixtral: images as URLs, Blobs, ImageBitmaps and ImageData give transformers\' tokens', { timeout: 300000 }, async () => {
  const p = await page();
  const got = await runInPage(p, async (T, a) => {
    const IMAGES = '/tests/fixtures/vision/images/';
    const blobOf = async (f) => (await fetch(IMAGES + f)).blob();
    const dataUrl = async (f) => new Promise((res) => { const r = new FileReader(); r.onload = () => res(r.result); blobOf(f).then((b) => r.readAsDataURL(b)); });
    const forms = {
      dataUrl: async (f) => ({ type: 'image_url', image_url: { url: await dataUrl(f) } }),
      relativeUrl: async (f) => ({ type: 'image_url', image_url: IMAGES + f }),
      blob: async (f) => ({ type: 'image', image: await blobOf(f) }),
      bitmap: async (f) => ({ type: 'image', image: await createImageBitmap(await blobOf(f), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' }) }),
      imageData: async (f) => {
        const b = await createImageBitmap(await blobOf(f), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
        const c = new OffscreenCanvas(b.width, b.height).getContext('2d');
        c.drawImage(b, 0, 0);
        return { type: 'image', image: c.getImageData(0, 0, b.width, b.height) };
      },
    };
    const messages = async (msgs, form) => Promise.all(msgs.map(async (m) => (typeof m.content === 'string' ? m : {
      role: m.role,
      content: await Promise.all(m.content.map((c) => (c.type === 'image' ? forms[form](c.file) : c))),
    })));
    const e = await T.Engine.load('/tests/fixtures/vision/pixtral/', { useCache: false });
    const out = { vision: e.info.vision };
    for (const [name, form] of a.runs) {
      const c = a.cases[name];
      await e.resetChat();
      const r = await e.chat.completions.create({ messages: await messages(c.messages, form), max_tokens: c.greedy.new_ids.length, temperature: 0, ignore_eos: true });
      out[`${name} ${form}`] = { ids: r.token_ids, prompt: r.usage.prompt_tokens };
    }
    return out;
  }, { cases: CASES, runs: [['one_image', 'dataUrl'], ['one_image', 'blob'], ['one_image', 'bitmap'], ['one_image', 'imageData'], ['two_images', 'relativeUrl'], ['second_turn', 'blob'], ['alpha_square', 'blob'], ['text_only', 'blob']] });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  // 64-pixel images of 4-pixel patches: 16 rows of 16 tokens and a break.
  assert.equal(got.vision?.maxImageTokens, 16 * 17, JSON.stringify(got.vision));
  assert.equal(got.vision.longestEdge, 64);
  assert.equal(got.vision.processorLongestEdge, 64);
  delete got.vision;
  for (const [run, r] of Object.entries(got)) {
    const c = CASES[run.split(' ')[0]];
    assert.deepEqual(r.ids, c.greedy.new_ids, run);
    assert.equal(r.prompt, c.input_ids.length, `${run}: the processor's prompt length`);
  }
  await p.context().close();
});

test('GGUF + mmproj (llama.cpp\'s converter): transformers\' tokens; an mmproj outside the folder or missing is refused', { timeout: 300000 }, async () => {
  const p = await page();
  const got = await runInPage(p, async (T, a) => {
    const MODEL = '/tests/fixtures/vision/pixtral/gguf/model.gguf';
    const out = {};
    for (const mmproj of ['../../mistral3/gguf/mmproj-f32.gguf', 'absent.gguf']) {
      try { await T.Engine.load(MODEL, { useCache: false, mmproj }); out[mmproj] = 'loaded'; } catch (e) { out[mmproj] = [e.code, e.message]; }
    }
    const e = await T.Engine.load(MODEL, { useCache: false, mmproj: 'mmproj-f32.gguf' });
    out.vision = e.info.vision;
    const c = a.case;
    const img = await (await fetch('/tests/fixtures/vision/images/' + c.messages.find((m) => typeof m.content !== 'string').content.find((x) => x.type === 'image').file)).blob();
    const messages = c.messages.map((m) => (typeof m.content === 'string' ? m : { role: m.role, content: m.content.map((x) => (x.type === 'image' ? { type: 'image', image: img } : x)) }));
    const r = await e.chat.completions.create({ messages, max_tokens: c.greedy.new_ids.length, temperature: 0, ignore_eos: true });
    out.ids = r.token_ids;
    // The benchmark's timing of an image.
    out.timing = await e.timeImage(img);
    return out;
  }, { case: CASES.one_image });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(got['../../mistral3/gguf/mmproj-f32.gguf'][0], 'INVALID_REQUEST', JSON.stringify(got));
  assert.equal(got['absent.gguf'][0], 'NETWORK', JSON.stringify(got));
  assert.match(got['absent.gguf'][1], /absent\.gguf/);
  assert.equal(got.vision?.longestEdge, 64, JSON.stringify(got.vision));
  assert.deepEqual(got.ids, CASES.one_image.greedy.new_ids);
  const t = got.timing;
  assert.deepEqual([t.width, t.height, t.resized, t.patches, t.imageTokens], [37, 23, [40, 24], 60, 60], JSON.stringify(t));
  assert.ok(t.encodeSeconds > 0 && t.decodeSeconds >= 0 && t.preprocessSeconds >= 0, JSON.stringify(t));
  await p.context().close();
});

test('WorkerEngine takes an <img>; a corrupt image or one for a text-only model is INVALID_REQUEST and the engine goes on', { timeout: 300000 }, async () => {
  const p = await page();
  const got = await runInPage(p, async (T, a) => {
    const IMAGES = '/tests/fixtures/vision/images/';
    const img = new Image();
    img.src = IMAGES + 'small.png';
    await img.decode();
    const w = await T.WorkerEngine.load('/tests/fixtures/vision/pixtral/', { useCache: false });
    const ask = (eng, image, n) => eng.chat.completions.create({
      messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this? ' }, image] }], max_tokens: n, temperature: 0, ignore_eos: true,
    });
    const worker = (await ask(w, { type: 'image', image: img }, a.n)).token_ids;
    const png = new Uint8Array(await (await fetch(IMAGES + 'big.png')).arrayBuffer());
    const errors = [];
    for (const image of [
      { type: 'image', image: new Blob([png.slice(0, png.length / 2)], { type: 'image/png' }) },
      { type: 'image_url', image_url: { url: 'data:image/png;base64,bm90IGFuIGltYWdl' } },
      { type: 'image_url', image_url: { url: 'ftp://example.com/a.png' } },
    ]) {
      try { await ask(w, image, 2); errors.push('answered'); } catch (e) { errors.push([e.code, e.message]); }
    }
    // A URL relative to the page (not to the worker's script), and a canvas.
    const after = (await ask(w, { type: 'image_url', image_url: '../fixtures/vision/images/small.png' }, a.n)).token_ids;
    const canvas = new OffscreenCanvas(img.naturalWidth, img.naturalHeight);
    canvas.getContext('2d').drawImage(img, 0, 0);
    const streamed = [];
    for await (const c of w.chat.completions.create({ messages: [{ role: 'user', content: [{ type: 'text', text: 'What is this? ' }, { type: 'image', image: canvas }] }],
      max_tokens: a.n, temperature: 0, ignore_eos: true, stream: true })) {
      if (c.choices[0]?.delta?.content !== undefined) streamed.push(c.choices[0].delta.content);
    }
    w.terminate();
    const text = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    let textOnly;
    try { await ask(text, { type: 'image', image: img }, 2); textOnly = 'answered'; } catch (e) { textOnly = [e.code, e.message]; }
    const still = (await text.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, ignore_eos: true })).token_ids.length;
    return { worker, errors, after, streamed: streamed.length, textOnly, still, textVision: text.info.vision };
  }, { n: CASES.one_image.greedy.new_ids.length });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.deepEqual(got.worker, CASES.one_image.greedy.new_ids, 'an <img> through the worker');
  for (const e of got.errors) {
    assert.equal(e[0], 'INVALID_REQUEST', JSON.stringify(e));
    assert.match(e[1], /messages\[0\]\.content\[1\]/);
  }
  assert.deepEqual(got.after, CASES.one_image.greedy.new_ids, 'the engine answers after the errors (a page-relative URL)');
  assert.ok(got.streamed > 0, 'an OffscreenCanvas streams through the worker');
  assert.equal(got.textOnly[0], 'INVALID_REQUEST');
  assert.match(got.textOnly[1], /messages\[0\]\.content\[1\].*takes no images/);
  assert.equal(got.still, 2);
  assert.equal(got.textVision, null, 'a text model has no image side');
  await p.context().close();
});

register();
