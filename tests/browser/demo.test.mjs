// The demo page (web/) as a newcomer uses it: served with the package and the
// default model, in headless Chromium. Screenshots go to target/artifacts/.
// Every test opens the page afresh in its own browser context (its own Cache
// API storage, settings and conversation); none relies on another having run.
// TRAMONTANE_TEST_ORDER=reverse (or shuffle:<seed>) runs them in another order.
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage, testQueue } from './browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ART = path.join(ROOT, 'target/artifacts');
let server, browser;

// Registered at the end of the file, in the order TRAMONTANE_TEST_ORDER asks for.
const { test, register } = testQueue(nodeTest);

before(async () => {
  fs.mkdirSync(ART, { recursive: true });
  server = await startServer({ mounts: { '/': path.join(ROOT, 'web'), '/pkg/': path.join(ROOT, 'pkg'), '/models/': path.join(ROOT, 'models') } });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.close(); });

// The demo in a new browser context: nothing cached, default settings, no
// conversation. The page starts loading the default model by itself.
const openDemo = (viewport = { width: 1280, height: 800 }) => openPage(browser, server.url, { viewport });

// `fn(page)` on a fresh demo page, closed afterwards whatever happens.
async function withDemo(fn, viewport) {
  const page = await openDemo(viewport);
  try {
    await fn(page);
  } finally {
    await page.context().close();
  }
}

const state = (page) => page.getAttribute('#status', 'data-state');
const lastReply = (page) => page.evaluate(() => document.querySelector('#messages li.assistant:last-of-type .body')?.textContent ?? '');

async function waitState(page, want, ms) {
  await page.waitForFunction((w) => document.querySelector('#status').dataset.state === w, want, { timeout: ms });
}

test('the default model loads with no typing and shows what it is', { timeout: 180000 }, () => withDemo(async (page) => {
  await waitState(page, 'ready', 150000);
  const name = await page.textContent('#model-name');
  assert.match(name, /SmolLM2-135M-Instruct/);
  const meta = await page.textContent('#model-meta');
  assert.match(meta, /Q4_1/);
  assert.match(meta, /MB of weights/);
  assert.match(meta, /GPU:/);
  // No system prompt of the page's own: the template's default applies.
  assert.equal(await page.inputValue('#system-prompt'), '');
  // The embedded model (no sampling metadata) gets the page's choice for it:
  // greedy with a repetition penalty, and says so (README: why not its
  // card's T 0.2).
  assert.equal(await page.inputValue('#temperature'), '0');
  assert.equal(await page.inputValue('#top-p'), '1');
  assert.equal(await page.inputValue('#repetition-penalty'), '1.1');
  assert.match(await page.textContent('#sampling-source'), /greedy/);
}));

async function setRange(page, sel, v) {
  await page.evaluate(([s, val]) => { const el = document.querySelector(s); el.value = val; el.dispatchEvent(new Event('input')); }, [sel, String(v)]);
}

test('a question gets a streamed answer that mentions Paris, with speed stats', { timeout: 300000 }, () => withDemo(async (page) => {
  await waitState(page, 'ready', 150000);
  // The page's own settings for the embedded model, as a new user gets them
  // (greedy: every fresh page gives this answer, so one load stands for all;
  // at its card's T 0.2 most pages answered "L'Étoile, …" and looped).
  // Short: SwiftShader runs the model on the CPU at a token or two a second
  // (the answer's first sentence is 7 tokens).
  await page.fill('#max-tokens', '8');
  await page.fill('#input', 'What is the capital of France?');
  await page.press('#input', 'Enter');
  await waitState(page, 'generating', 10000);
  const lengths = [];
  while ((await state(page)) === 'generating') {
    lengths.push((await lastReply(page)).length);
    await page.waitForTimeout(250);
  }
  const text = await lastReply(page);
  // With the template's own default system prompt; natively,
  // smollm2_gguf.rs checks the same answer greedy without the penalty.
  assert.match(text, /^The capital of France is Paris\./);
  const growth = new Set(lengths.filter((n) => n > 0));
  assert.ok(growth.size >= 2, `the reply grew in steps: ${[...growth]}`);
  const stats = await page.textContent('#messages li.assistant:last-of-type .stats');
  assert.match(stats, /tokens · prefill [\d.]+ tok\/s · decode [\d.]+ tok\/s · first token [\d.]+ s/);
  // The template's opening (its default system prompt) was prefilled as the
  // load ended, and the question reused it.
  const [, cached, prompt] = stats.match(/ · (\d+) of (\d+) prompt tokens cached$/) ?? [];
  assert.ok(Number(cached) > 10 && Number(cached) < Number(prompt), stats);
  await page.screenshot({ path: path.join(ART, 'demo-desktop.png') });
}));

test('Stop ends a long reply; New chat clears the conversation', { timeout: 300000 }, () => withDemo(async (page) => {
  await waitState(page, 'ready', 150000);
  await page.fill('#input', 'Write a very long story about a dragon who learns to fly.');
  await page.click('#send');
  await page.waitForFunction(() => (document.querySelector('#messages li.assistant:last-of-type .body')?.textContent ?? '').length > 5, null, { timeout: 120000 });
  await page.click('#stop');
  await waitState(page, 'ready', 30000);
  const a = await lastReply(page);
  await page.waitForTimeout(2000);
  assert.equal(await lastReply(page), a, 'no more text after Stop');
  assert.equal(await page.textContent('#messages li.assistant:last-of-type .stats'), 'stopped');
  await page.click('#new-chat');
  assert.equal(await page.locator('#messages li').count(), 0);
  assert.equal(await page.isVisible('#empty'), true);
}));

test('a JSON Schema in the settings gives answers valid for it, shown parsed', { timeout: 360000 }, () => withDemo(async (page) => {
  await waitState(page, 'ready', 150000);
  await setRange(page, '#temperature', 0);
  await page.fill('#max-tokens', '32');
  await page.click('#json-example');
  assert.match(await page.textContent('#json-schema-status'), /valid for this schema/);
  assert.equal(JSON.parse(await page.inputValue('#json-schema')).type, 'object');
  // A small schema of our own (SwiftShader decodes about a token a second here).
  const schema = { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, capital: { type: 'boolean' } }, required: ['city', 'capital'], additionalProperties: false };
  await page.fill('#json-schema', JSON.stringify(schema));
  await page.fill('#input', 'Tell me about Paris.');
  await page.press('#input', 'Enter');
  await waitState(page, 'generating', 10000);
  await waitState(page, 'ready', 300000);
  await page.waitForSelector('#messages li.assistant[data-parsed=true]', { timeout: 10000 });
  const v = JSON.parse(await page.textContent('#messages li.assistant:last-of-type .parsed code'));
  assert.deepEqual(Object.keys(v), ['city', 'capital']);
  assert.ok(typeof v.city === 'string' && v.city.length <= 12 && typeof v.capital === 'boolean', JSON.stringify(v));
  await page.screenshot({ path: path.join(ART, 'demo-json-schema.png') });
  // A schema that is not JSON: said so, nothing sent.
  await page.fill('#json-schema', '{not json');
  assert.match(await page.textContent('#json-schema-status'), /not valid JSON/);
  const before = await page.locator('#messages li').count();
  await page.fill('#input', 'Again?');
  await page.press('#input', 'Enter');
  await page.waitForSelector('#error:not([hidden])', { timeout: 10000 });
  assert.match(await page.textContent('#error'), /not valid JSON/);
  assert.equal(await page.locator('#messages li').count(), before);
  // Emptied: free text again.
  await page.fill('#json-schema', '');
  assert.equal(await page.textContent('#json-schema-status'), '');
}));

test('a model that does not exist gets an explanation; the page stays usable', { timeout: 240000 }, () => withDemo(async (page) => {
  // Once the page's own first load is over.
  await waitState(page, 'ready', 150000);
  await page.fill('#model-source', '/models/no-such-model.gguf');
  await page.click('#load-button');
  await page.waitForSelector('#error:not([hidden])', { timeout: 30000 });
  const err = await page.textContent('#error');
  assert.match(err, /could not be downloaded/);
  assert.match(err, /no-such-model\.gguf/);
  assert.equal(await state(page), 'error', 'no model after a failed load');
  assert.equal(await page.isEnabled('#send'), false);
  await page.click('#load-default');
  await waitState(page, 'ready', 60000);
  assert.equal(await page.isHidden('#error'), true);
  assert.match(await page.textContent('#model-name'), /SmolLM2/);
  assert.equal(await page.isEnabled('#input'), true);
}));

test('phone width: one column, nothing wider than the screen', { timeout: 180000 }, () => withDemo(async (page) => {
  // The input opens once the default model is ready.
  await waitState(page, 'ready', 150000);
  await page.fill('#input', 'Hello');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px`);
  await page.screenshot({ path: path.join(ART, 'demo-phone.png'), fullPage: true });
  await page.click('#toggle-settings');
  assert.equal(await page.isVisible('#system-prompt'), true);
  // Model text is never HTML.
  const html = await page.evaluate(async () => (await import('/app.js')).renderMarkdown('<img src=x onerror=alert(1)> **b** `c`\n```js\n<script>\n```'));
  assert.ok(!html.includes('<img') && !html.includes('<script>'), html);
  assert.match(html, /<strong>b<\/strong>/);
}, { width: 390, height: 844 }));

test('examples/minimal-chat installs the packed tarball and streams a reply', { timeout: 240000 }, async () => {
  const { execFileSync } = await import('node:child_process');
  const pack = path.join(ROOT, 'target/pack');
  fs.mkdirSync(pack, { recursive: true });
  execFileSync('npm', ['pack', './pkg', '--pack-destination', pack, '--silent'], { cwd: ROOT });
  const ex = path.join(ROOT, 'examples/minimal-chat');
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--no-package-lock', '--silent'], { cwd: ex });
  assert.ok(fs.existsSync(path.join(ex, 'node_modules/tramontane/wasm/tramontane_web_bg.wasm')));
  const srv = await startServer({ mounts: { '/': ex, '/models/': path.join(ROOT, 'models') } });
  try {
    const p = await browser.newPage();
    try {
      await p.goto(`${srv.url}?model=/models/SmolLM2-135M-Instruct.Q4_1.gguf`);
      await p.waitForSelector('#out[data-done=true]', { timeout: 200000 });
      assert.match(await p.textContent('#out'), /Paris/);
    } finally {
      await p.context().close();
    }
  } finally {
    await srv.close();
  }
});

register();
