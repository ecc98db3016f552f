// Headless Debian Chromium with WebGPU (SwiftShader when there is no GPU),
// driven by playwright-core.
import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-dev-shm-usage',
];

export async function launch({ webgpu = true } = {}) {
  const args = webgpu ? CHROMIUM_ARGS : CHROMIUM_ARGS.filter((a) => !a.includes('webgpu') && !a.includes('Vulkan')).concat(['--disable-webgpu']);
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args });
}

// A browser context with a profile on disk in `dir`, as a person's browser has:
// the contexts of `launch()` are incognito ones, whose storage is in memory
// and refuses a model of a few GB whatever `navigator.storage.estimate()` says.
export async function launchProfile(dir) {
  return chromium.launchPersistentContext(dir, { executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

// A new browser context and page on `url`; errors the page throws are printed
// and kept in `page.uncaught`.
export async function openPage(browser, url, contextOptions = {}) {
  const ctx = await browser.newContext(contextOptions);
  const page = await ctx.newPage();
  page.uncaught = [];
  page.on('pageerror', (e) => { page.uncaught.push(e.message); console.error('page error:', e.message); });
  await page.goto(url);
  return page;
}

// Evaluate `fn(T, arg)` in `page` with the package imported as `T` (from
// /pkg/index.js); an error it throws comes back as
// `{ thrown: { code, message, url, status } }`.
export async function runInPage(page, fn, arg) {
  return page.evaluate(async ([src, a]) => {
    const T = await import('/pkg/index.js');
    const f = new Function('T', 'a', `return (${src})(T, a);`);
    try { return await f(T, a); } catch (e) { return { thrown: { code: e.code, message: e.message, url: e.url, status: e.status } }; }
  }, [fn.toString(), arg]);
}

// Tests queued by `test` and registered by `register()` (called at the end of
// a file) in the order TRAMONTANE_TEST_ORDER asks for: `reverse`,
// `shuffle:SEED`, or as written. A file whose tests pass in every order does
// not depend on what an earlier test left behind.
export function testQueue(nodeTest) {
  const queued = [];
  const test = (name, opts, fn) => { queued.push([name, opts, fn]); };
  const register = () => { for (const [name, opts, fn] of ordered(queued)) nodeTest(name, opts, fn); };
  return { test, register };
}

function ordered(list) {
  const how = process.env.TRAMONTANE_TEST_ORDER ?? '';
  if (how === 'reverse') return [...list].reverse();
  const m = /^shuffle:(\d+)$/.exec(how);
  if (!m) return list;
  let x = Number(m[1]) || 1; // xorshift32, so a seed reproduces its order
  const rand = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) / 2 ** 32; };
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
