// Where a model's files are, the headers for its host, and the cache of a
// model: its manifest (Cache API), and its large files' OPFS copies.
import { TramontaneError } from './errors.js';

const HF = 'https://huggingface.co';
const CACHE_NAME = 'tramontane-v1';

/** Where a model's files are: `{ base, gguf, mmproj }`. `source` is a model folder URL,
 * a `.gguf` URL (the first part of a split model), or a Hugging Face repo id
 * `org/name` (`options.revision`, `options.ggufFile` pick what to load).
 * `options.mmproj`, a GGUF's image side (llama.cpp's mmproj file), is a file
 * name in the repo, or a URL (relative ones: to the model's URL) in the
 * model's folder. */
export function resolveSource(source, options = {}) {
  if (typeof source !== 'string' || source.length === 0) {
    throw new TramontaneError('INVALID_REQUEST', 'source must be a URL or a Hugging Face repo id');
  }
  let r;
  if (/^[\w.-]+\/[\w.-]+$/.test(source) && !source.startsWith('.')) {
    const base = `${options.hfEndpoint ?? HF}/${source}/resolve/${encodeURIComponent(options.revision ?? 'main')}/`;
    r = { base, gguf: options.ggufFile ?? null };
  } else {
    const url = new URL(source, globalThis.location?.href);
    url.hash = '';
    const path = url.pathname;
    if (path.toLowerCase().endsWith('.gguf')) {
      const cut = url.href.lastIndexOf('/') + 1;
      r = { base: url.href.slice(0, cut), gguf: decodeURIComponent(url.href.slice(cut).split('?')[0]) };
    } else {
      r = { base: url.href.endsWith('/') ? url.href : url.href + '/', gguf: null };
    }
  }
  r.mmproj = mmprojName(r, options.mmproj);
  return r;
}

/** `options.mmproj` as a file name within the model's folder (`r.base`):
 * the engine fetches every file from that base, with its headers. */
function mmprojName(r, mmproj) {
  if (mmproj == null || mmproj === '') return null;
  if (typeof mmproj !== 'string') throw new TramontaneError('INVALID_REQUEST', 'mmproj must be a file name or a URL');
  if (!r.gguf) throw new TramontaneError('INVALID_REQUEST', 'mmproj goes with a GGUF model: a Hugging Face model keeps its image side in its own safetensors');
  const plain = /^[^/?#:%\\]+(\/[^/?#:%\\]+)*$/.test(mmproj) && !mmproj.split('/').some((s) => s === '.' || s === '..');
  if (plain) return mmproj;
  const url = new URL(mmproj, r.base);
  url.hash = '';
  const href = url.href.split('?')[0];
  if (!href.startsWith(r.base) || href.length === r.base.length) {
    throw new TramontaneError('INVALID_REQUEST', `mmproj ${mmproj} is not in the model's folder (${r.base}): put the two files side by side`);
  }
  return decodeURIComponent(href.slice(r.base.length));
}

/** The headers for the model's host, as a plain object: `options.headers` (an
 * object, a Headers or [name, value] pairs) and `options.hfToken` as
 * `Authorization: Bearer <token>`. The engine sends them only to the origin of
 * the model's URL, never caches them and never puts them in an error. */
export function modelHeaders(options = {}) {
  const out = {};
  const h = options.headers;
  if (h != null) {
    if (typeof h !== 'object') throw new TramontaneError('INVALID_REQUEST', 'headers must be an object, a Headers or [name, value] pairs');
    // Headers and Maps iterate as [name, value]; a plain object does not iterate.
    const entries = Array.isArray(h) || typeof h[Symbol.iterator] === 'function' ? [...h] : Object.entries(h);
    for (const e of entries) {
      if (!Array.isArray(e) || e.length !== 2) throw new TramontaneError('INVALID_REQUEST', 'headers must be [name, value] pairs');
      out[String(e[0])] = String(e[1]);
    }
  }
  const token = options.hfToken;
  if (token != null && token !== '') {
    // The message does not echo the value.
    if (typeof token !== 'string') throw new TramontaneError('INVALID_REQUEST', 'hfToken must be a string');
    for (const k of Object.keys(out)) if (k.toLowerCase() === 'authorization') delete out[k];
    out.Authorization = `Bearer ${token.trim()}`;
  }
  return out;
}

// The list of a source's cached files. A query string, not a fragment: the
// Cache API ignores fragments, so `model.gguf#x` would overwrite `model.gguf`.
export function manifestKey(r) {
  return `${r.base}${r.gguf ?? ''}?tramontane-manifest`;
}

export async function openCache() {
  if (!globalThis.caches) return null;
  try { return await caches.open(CACHE_NAME); } catch { return null; }
}

// A file over a part is kept in OPFS: its Cache API entry names the file
// (fetch.rs, opfs.rs).
export const OPFS_HEADER = 'x-tramontane-opfs';

async function opfsDir() {
  try { return await (await navigator.storage.getDirectory()).getDirectoryHandle(CACHE_NAME); } catch { return null; }
}

/** Whether a cache entry's OPFS file (if it names one) is there, whole. */
export async function opfsFileHolds(entry) {
  const name = entry.headers.get(OPFS_HEADER);
  if (!name) return true;
  try {
    const file = await (await (await opfsDir())?.getFileHandle(name))?.getFile();
    return file != null && file.size === Number(entry.headers.get('x-tramontane-size'));
  } catch { return false; }
}

export async function removeOpfsFile(name) {
  try { await (await opfsDir())?.removeEntry(name); } catch { /* gone already */ }
}
