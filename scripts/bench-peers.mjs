// `npm run bench:peers`: tramontane and the engines a user would pick instead,
// on the same model file with the same prompt/generation lengths, in one run:
//   - tramontane native (wgpu on the default Vulkan device: lavapipe here) and,
//     for the browser/native ratio, native on Chromium's SwiftShader Vulkan;
//   - llama.cpp natively (PyPI llama-cpp-python, CPU backend, 2 threads) and,
//     with --llama-vulkan, its Vulkan backend on the same Vulkan device, built
//     from source with glslc and SPIRV-Headers from apt. It needs Vulkan headers
//     >= 1.3.261 (VK_EXT_layer_settings); Debian 12 ships 1.3.239, so point
//     VULKAN_INCLUDE_DIR at newer ones (e.g. a Vulkan-Headers checkout's include/);
//   - tramontane in headless Chromium (WebGPU), i.e. `npm run bench`;
//   - wllama (npm @wllama/wllama) in the same Chromium, CPU multi-threaded
//     (cross-origin isolated) and with WebGPU requested.
// Peers are installed into target/peers (ignored, never committed); the first
// run builds llama.cpp from source (~15 min on 2 cores).
// Prints a table with ratios and writes target/peers/results.json.
//   node scripts/bench-peers.mjs [--prompt-tokens 128] [--gen-tokens 64] [--repetitions 3] [--skip name,name] [--llama-vulkan]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PEERS = path.join(ROOT, 'target/peers');
const MODEL = path.join(ROOT, 'models/SmolLM2-135M-Instruct.Q4_1.gguf');
const arg = (name, d) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : d; };
const P = Number(arg('prompt-tokens', 128)), G = Number(arg('gen-tokens', 64)), R = Number(arg('repetitions', 3));
const skip = new Set(arg('skip', '').split(',').filter(Boolean));
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

const say = (m) => process.stderr.write(`\x1b[1mbench:peers:\x1b[0m ${m}\n`);
function sh(cmd, args, { env = {}, capture = false } = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}`);
  return r.stdout;
}
// The JSON object a tool printed: all of stdout, or its last line that is one.
const lastJson = (out) => {
  try { return JSON.parse(out); } catch { return JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop()); }
};

if (!fs.existsSync(MODEL)) {
  say('the default model is missing: running scripts/setup.sh');
  sh('bash', ['scripts/setup.sh']);
}

// Peers, into target/peers.
const py = path.join(PEERS, 'venv/bin/python');
if (!skip.has('llama.cpp') && !fs.existsSync(path.join(PEERS, 'venv/.llama-cpp-python-0.3.36'))) {
  say('installing llama-cpp-python 0.3.36 into target/peers/venv (builds llama.cpp from source: ~15 min on 2 cores; pip shows progress)');
  fs.mkdirSync(PEERS, { recursive: true });
  sh('python3', ['-m', 'venv', path.join(PEERS, 'venv')]);
  sh(path.join(PEERS, 'venv/bin/pip'), ['install', '--progress-bar', 'on', '-v', 'llama-cpp-python==0.3.36'], { env: { CMAKE_BUILD_PARALLEL_LEVEL: '2' } });
  fs.writeFileSync(path.join(PEERS, 'venv/.llama-cpp-python-0.3.36'), '');
}
const pyVk = path.join(PEERS, 'venv-vulkan/bin/python');
const vulkan = process.argv.includes('--llama-vulkan');
if (vulkan && !fs.existsSync(path.join(PEERS, 'venv-vulkan/.llama-cpp-python-0.3.36'))) {
  say('building llama-cpp-python 0.3.36 with the Vulkan backend into target/peers/venv-vulkan (~25 min on 2 cores)');
  sh('bash', ['-c', '$([ "$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q libvulkan-dev glslc glslang-tools spirv-headers']);
  sh('python3', ['-m', 'venv', path.join(PEERS, 'venv-vulkan')]);
  // --no-cache-dir: pip would otherwise reuse the CPU-only wheel of the same version.
  const inc = process.env.VULKAN_INCLUDE_DIR;
  const env = { CMAKE_ARGS: `-DGGML_VULKAN=on${inc ? ` -DVulkan_INCLUDE_DIR=${inc}` : ''}`, CMAKE_BUILD_PARALLEL_LEVEL: '2' };
  if (inc) Object.assign(env, { CXXFLAGS: `-I${inc}`, CFLAGS: `-I${inc}` });
  sh(path.join(PEERS, 'venv-vulkan/bin/pip'), ['install', '--no-cache-dir', '-v', 'llama-cpp-python==0.3.36'], { env });
  fs.writeFileSync(path.join(PEERS, 'venv-vulkan/.llama-cpp-python-0.3.36'), '');
}
const WLLAMA = path.join(PEERS, 'npm/node_modules/@wllama/wllama/esm');
if (!skip.has('wllama') && !fs.existsSync(path.join(WLLAMA, 'index.js'))) {
  say('installing @wllama/wllama 3.13.0 into target/peers/npm');
  fs.mkdirSync(path.join(PEERS, 'npm'), { recursive: true });
  fs.writeFileSync(path.join(PEERS, 'npm/package.json'), '{"private":true}\n');
  sh('npm', ['install', '--no-audit', '--no-fund', '--prefix', path.join(PEERS, 'npm'), '@wllama/wllama@3.13.0']);
}

// Our builds.
say('building tramontane (release CLI, and the npm package if needed)');
sh('cargo', ['build', '--release', '--locked', '-p', 'tramontane-cli']);
if (!fs.existsSync(path.join(ROOT, 'pkg/wasm/tramontane_web_bg.wasm'))) sh('bash', ['scripts/build-wasm.sh']);

const rows = [];
const run = (name, device, fn) => {
  if (skip.has(name.split(' ')[0])) return;
  say(`measuring ${name} on ${device}`);
  try {
    rows.push({ name, device, ...fn() });
  } catch (e) {
    say(`${name}: ${e.message}`);
    rows.push({ name, device, error: e.message });
  }
};
const cli = path.join(ROOT, 'target/release/tramontane');
const lengths = ['--prompt-tokens', String(P), '--gen-tokens', String(G)];
run('tramontane native', 'default Vulkan device', () => {
  const j = lastJson(sh(cli, ['bench', '--model', MODEL, ...lengths, '--repetitions', String(R), '--json'], { capture: true }));
  return { ...j, device: `${j.adapter.name} (${j.adapter.backend})` };
});
if (fs.existsSync(SWIFTSHADER_ICD)) {
  run('tramontane native (SwiftShader)', "Chromium's SwiftShader Vulkan", () =>
    lastJson(sh(cli, ['bench', '--model', MODEL, ...lengths, '--repetitions', '1', '--json'], { capture: true, env: { VK_ICD_FILENAMES: SWIFTSHADER_ICD } })));
}
run('llama.cpp CPU', 'CPU, 2 threads', () => lastJson(sh(py, ['scripts/peers/llama_cpp_bench.py', MODEL, String(P), String(G), String(R)], { capture: true })));
if (vulkan) {
  run('llama.cpp Vulkan', 'default Vulkan device', () =>
    lastJson(sh(pyVk, ['scripts/peers/llama_cpp_bench.py', MODEL, String(P), String(G), String(R), '--gpu-layers', '99'], { capture: true })));
}
run('tramontane browser', 'Chromium WebGPU (SwiftShader)', () =>
  lastJson(sh('node', ['scripts/bench-browser.mjs', ...lengths, '--repetitions', String(Math.min(R, 1))], { capture: true })));
for (const mode of ['cpu', 'webgpu']) {
  run(`wllama ${mode}`, mode === 'cpu' ? 'Chromium wasm, 2 threads' : 'Chromium, WebGPU requested', () =>
    lastJson(sh('node', ['scripts/peers/wllama-bench.mjs', '--wllama', WLLAMA, '--mode', mode, ...lengths, '--repetitions', String(R)], { capture: true })));
}

const ours = rows.find((r) => r.name === 'tramontane native');
const browser = rows.find((r) => r.name === 'tramontane browser');
const f = (x) => (typeof x === 'number' ? x.toFixed(x < 10 ? 2 : 1) : '–');
const lines = [
  `SmolLM2-135M-Instruct Q4_1, prompt ${P} tokens, ${G} generated; ${new Date().toISOString().slice(0, 10)}`,
  '',
  '| engine | device | load s (cached) | prefill tok/s | decode tok/s | first token s | ours native ÷ it (prefill / decode) | ours browser ÷ it (decode) |',
  '| --- | --- | --- | --- | --- | --- | --- | --- |',
];
for (const r of rows) {
  if (r.error) { lines.push(`| ${r.name} | ${r.device} | failed: ${r.error} | | | | | |`); continue; }
  // Natively a load from disk (the page cache); in the browser from the local
  // server, and for tramontane again from its cache.
  const load = `${f(r.load_seconds)}${r.load_seconds_cached != null ? ` (${f(r.load_seconds_cached)})` : ''}`;
  const rn = ours && !ours.error ? `${f(ours.prefill_tokens_per_s / r.prefill_tokens_per_s)} / ${f(ours.decode_tokens_per_s / r.decode_tokens_per_s)}` : '–';
  const rb = browser && !browser.error ? f(browser.decode_tokens_per_s / r.decode_tokens_per_s) : '–';
  lines.push(`| ${r.name} | ${r.device} | ${load} | ${f(r.prefill_tokens_per_s)} | ${f(r.decode_tokens_per_s)} | ${f(r.time_to_first_token_s)} | ${rn} | ${rb} |`);
}
const ss = rows.find((r) => r.name === 'tramontane native (SwiftShader)');
if (browser && ss && !browser.error && !ss.error) {
  lines.push('', `Browser ÷ native on the same driver (SwiftShader): prefill ${f(browser.prefill_tokens_per_s / ss.prefill_tokens_per_s)}, decode ${f(browser.decode_tokens_per_s / ss.decode_tokens_per_s)}.`);
}
const wl = rows.filter((r) => r.name.startsWith('wllama') && !r.error).sort((a, b) => b.decode_tokens_per_s - a.decode_tokens_per_s)[0];
if (browser && wl && !browser.error) {
  lines.push(`Browser decode ÷ the best wllama mode (${wl.name}): ${f(browser.decode_tokens_per_s / wl.decode_tokens_per_s)}.`);
}
console.log(lines.join('\n'));
fs.mkdirSync(PEERS, { recursive: true });
fs.writeFileSync(path.join(PEERS, 'results.json'), JSON.stringify({ prompt_tokens: P, gen_tokens: G, repetitions: R, rows }, null, 2));
say('wrote target/peers/results.json');
