// The packed npm package in apps built by bundlers, with no bundler
// configuration about tramontane: Vite 7 and the latest Vite (dev server,
// which pre-bundles dependencies, and build) and webpack 5 (build). Each app
// (tests/bundlers/app) loads the tiny Llama with Engine and with WorkerEngine
// and must give transformers' greedy tokens. A plain import map is
// demo.test.mjs's examples/minimal-chat test.
//
// The bundlers are installed from the npm registry into target/bundlers/ (a
// few seconds each, kept between runs). TRAMONTANE_VITES=vite5,vite6,... picks
// other Vite majors (vite5, vite6, vite7, vite-latest).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage } from './browser.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORK = path.join(ROOT, 'target/bundlers');
const reference = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/fixtures/llama_tiny/reference.json'), 'utf8')).prompts[0];

const BUNDLERS = {
  vite5: ['vite@^5'],
  vite6: ['vite@^6'],
  vite7: ['vite@^7'],
  'vite-latest': ['vite@latest'],
  webpack5: ['webpack@^5', 'webpack-cli@^6'],
  typescript: ['typescript@^5'],
};

let models, browser, tarball;

function npm(args, cwd) {
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--silent'], { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
}

/** target/bundlers/<name>: the bundler and the packed package installed, the app copied in. */
function setUp(name) {
  const dir = path.join(WORK, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ private: true, type: 'module' }));
  console.log(`installing ${BUNDLERS[name].join(' ')} and the packed package into ${path.relative(ROOT, dir)}`);
  npm(['install', '--no-package-lock', ...BUNDLERS[name], tarball], dir);
  fs.rmSync(path.join(dir, 'app'), { recursive: true, force: true });
  fs.cpSync(path.join(ROOT, 'tests/bundlers/app'), path.join(dir, 'app'), { recursive: true });
  fs.rmSync(path.join(dir, 'types'), { recursive: true, force: true });
  fs.cpSync(path.join(ROOT, 'tests/bundlers/types'), path.join(dir, 'types'), { recursive: true });
  // A stale pre-bundle would hide what the dev server does with this package.
  fs.rmSync(path.join(dir, 'node_modules/.vite'), { recursive: true, force: true });
  return dir;
}

before(() => {
  fs.mkdirSync(path.join(ROOT, 'target/pack'), { recursive: true });
  const name = execFileSync('npm', ['pack', './pkg', '--pack-destination', 'target/pack', '--silent'], { cwd: ROOT, encoding: 'utf8' }).trim();
  tarball = path.join(ROOT, 'target/pack', name);
});

before(async () => {
  models = await startServer({ root: path.join(ROOT, 'tests/fixtures'), cors: true });
  browser = await launch();
});
after(async () => { await browser?.close(); await models?.close(); });

/** Open the app at `url` with Engine and with WorkerEngine; each must give the reference tokens. */
async function answers(url, what) {
  for (const worker of [false, true]) {
    const q = new URLSearchParams({ model: `${models.url}llama_tiny/`, prompt: JSON.stringify(reference.input_ids), n: String(reference.greedy.new_ids.length) });
    if (worker) q.set('worker', '1');
    const p = await openPage(browser, `${url}?${q}`);
    try {
      await p.waitForSelector('#out[data-done=true]', { timeout: 120000 });
      const got = JSON.parse(await p.textContent('#out'));
      assert.deepEqual(got, { ids: reference.greedy.new_ids }, `${what}, ${worker ? 'WorkerEngine' : 'Engine'}`);
    } finally {
      await p.context().close();
    }
  }
}

async function importVite(dir) {
  return import(pathToFileURL(path.join(dir, 'node_modules/vite/dist/node/index.js')).href);
}

const VITES = (process.env.TRAMONTANE_VITES ?? 'vite7,vite-latest').split(',');
for (const name of VITES) {
  test(`${name}: the dev server (dependencies pre-bundled) and a build run the package unchanged`, { timeout: 300000 }, async () => {
    const dir = setUp(name);
    const vite = await importVite(dir);
    const root = path.join(dir, 'app');
    const server = await vite.createServer({ root, configFile: false, logLevel: 'error', server: { host: '127.0.0.1', port: 0 } });
    await server.listen();
    try {
      await answers(server.resolvedUrls.local[0], `${name} ${vite.version} dev server`);
    } finally {
      await server.close();
    }
    const outDir = path.join(dir, 'dist');
    await vite.build({ root, configFile: false, logLevel: 'error', build: { outDir, emptyOutDir: true } });
    const srv = await startServer({ root: outDir });
    try {
      await answers(srv.url, `${name} ${vite.version} build`);
    } finally {
      await srv.close();
    }
  });
}

test('webpack 5: a production build runs the package unchanged', { timeout: 300000 }, async () => {
  const dir = setUp('webpack5');
  execFileSync(process.execPath, [path.join(dir, 'node_modules/webpack-cli/bin/cli.js'), '--config', 'app/webpack.config.js'], { cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
  const outDir = path.join(dir, 'dist');
  // webpack emits scripts only: the page is the app's own.
  fs.copyFileSync(path.join(dir, 'app/index.html'), path.join(outDir, 'index.html'));
  const srv = await startServer({ root: outDir });
  try {
    await answers(srv.url, 'webpack 5 build');
  } finally {
    await srv.close();
  }
});

test('index.d.ts: an app type-checks against it (tsc --strict) and it declares everything index.js exports', { timeout: 120000 }, async () => {
  const dir = setUp('typescript');
  const tsc = path.join(dir, 'node_modules/typescript/bin/tsc');
  const args = ['--strict', '--noEmit', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--lib', 'es2022,dom,dom.iterable', 'types/check.ts'];
  try {
    execFileSync(process.execPath, [tsc, ...args], { cwd: dir, encoding: 'utf8' });
  } catch (e) {
    assert.fail(`tsc found errors in tests/bundlers/types/check.ts:\n${e.stdout}${e.stderr}`);
  }
  const installed = path.join(dir, 'node_modules/tramontane');
  const exported = Object.keys(await import(pathToFileURL(path.join(installed, 'index.js')).href));
  const dts = fs.readFileSync(path.join(installed, 'index.d.ts'), 'utf8');
  const undeclared = exported.filter((n) => !new RegExp(`^export (declare )?(class|function|const|let) ${n}\\b`, 'm').test(dts));
  assert.deepEqual(undeclared, [], 'exported by index.js but not declared in index.d.ts');
  assert.ok(exported.length >= 7, exported.join(' '));
});
