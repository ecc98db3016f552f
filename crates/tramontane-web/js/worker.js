// The Web Worker side of WorkerEngine: hosts an Engine and answers its messages.
import { Engine } from './index.js';

const engine = new Engine();
const controllers = new Map();

function errorOf(e) {
  return { code: e?.code ?? 'INTERNAL', message: String(e?.message ?? e), url: e?.url, status: e?.status, param: e?.param };
}

self.onmessage = async (ev) => {
  const m = ev.data;
  if (m.abort !== undefined) { controllers.get(m.abort)?.abort(); return; }
  const { id, method, args } = m;
  const ctl = new AbortController();
  controllers.set(id, ctl);
  try {
    let result;
    switch (method) {
      case 'load': {
        const [source, options] = args;
        await engine.load(source, { ...options, signal: ctl.signal, onProgress: (p) => self.postMessage({ id, progress: p }) });
        result = engine.info;
        break;
      }
      case 'chat':
      case 'text': {
        const req = { ...args[0], signal: ctl.signal };
        const api = method === 'chat' ? engine.chat.completions : engine.completions;
        if (req.stream) {
          for await (const chunk of api.create(req)) self.postMessage({ id, chunk });
        } else {
          result = await api.create(req);
        }
        break;
      }
      case 'tokenize': result = await engine.tokenize(args[0], args[1]); break;
      case 'chatPrompt': result = await engine.chatPrompt(args[0]); break;
      case 'detokenize': result = await engine.detokenize(args[0]); break;
      case 'resetChat': await engine.resetChat(); break;
      case 'unload': await engine.unload(); break;
      default: throw new Error(`unknown method ${method}`);
    }
    self.postMessage({ id, result });
  } catch (e) {
    self.postMessage({ id, error: errorOf(e) });
  } finally {
    controllers.delete(id);
  }
};
