// The smallest bundled app: the package imported by its bare name, as an app
// would, with no bundler configuration. The test (tests/bundlers/) opens
// index.html?model=URL&prompt=[ids]&n=tokens[&worker=1] and reads #out.
import { Engine, WorkerEngine } from 'tramontane';

async function main() {
  const q = new URLSearchParams(location.search);
  const out = document.getElementById('out');
  try {
    const Kind = q.get('worker') ? WorkerEngine : Engine;
    const engine = await Kind.load(q.get('model'), { useCache: false });
    const r = await engine.completions.create({ prompt: JSON.parse(q.get('prompt')), max_tokens: Number(q.get('n')), temperature: 0, ignore_eos: true });
    out.textContent = JSON.stringify({ ids: r.token_ids });
  } catch (e) {
    out.textContent = JSON.stringify({ error: { name: e?.name, code: e?.code, message: String(e?.message ?? e) } });
  }
  out.dataset.done = 'true';
}

main();
