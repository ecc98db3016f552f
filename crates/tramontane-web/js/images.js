// Images of a chat request into pixels, with the browser's own decoder (the
// wasm carries none): OpenAI's `{type: 'image_url', image_url: {url}}` parts
// (data:, blob: and http(s) URLs, fetched as the page may: CORS applies),
// and, as this package's extension, `{type: 'image', image}` with a Blob,
// ImageBitmap, ImageData, HTMLImageElement, HTMLCanvasElement or
// OffscreenCanvas. The engine gets each image's RGBA pixels in order; the
// JSON it gets keeps an image_url part in each image's place (the chat
// template writes the image token there).
import { TramontaneError } from './errors.js';

/** Most images one request may carry, and pixels an image (as the engine's
 * crates/tramontane/src/vision/mod.rs). */
export const MAX_IMAGES = 16;
export const MAX_PIXELS = 4096 * 4096;

const PLACEHOLDER = 'tramontane:image';

/** `{message, part, source}` of every image part of `req.messages`, in order. */
export function imageParts(req) {
  const out = [];
  const messages = Array.isArray(req?.messages) ? req.messages : [];
  messages.forEach((m, i) => {
    if (!Array.isArray(m?.content)) return;
    m.content.forEach((p, j) => {
      if (p?.type === 'image_url') {
        const u = p.image_url;
        out.push({ message: i, part: j, source: typeof u === 'string' ? u : u?.url });
      } else if (p?.type === 'image') {
        out.push({ message: i, part: j, source: p.image });
      }
    });
  });
  return out;
}

/** `req` with every image part an image_url part of a placeholder URL (what
 * JSON can carry), for the engine, which takes the pixels apart. */
export function withoutImages(req) {
  const parts = imageParts(req);
  if (!parts.length) return req;
  const messages = req.messages.map((m) => (Array.isArray(m?.content)
    ? { ...m, content: m.content.map((p) => (p?.type === 'image' || p?.type === 'image_url' ? { type: 'image_url', image_url: { url: PLACEHOLDER } } : p)) }
    : m));
  return { ...req, messages };
}

const isA = (v, name) => typeof globalThis[name] === 'function' && v instanceof globalThis[name];

/** A request for a Worker, on the page's thread before it is posted: image
 * elements and canvases (which cannot be posted) become ImageBitmaps of
 * their own pixels, and relative image URLs the page's absolute ones (the
 * worker would resolve them against its script). */
export async function transferable(req) {
  if (!imageParts(req).length) return req;
  const element = (v) => ['HTMLImageElement', 'HTMLCanvasElement', 'OffscreenCanvas'].some((t) => isA(v, t));
  const messages = await Promise.all(req.messages.map(async (m, i) => {
    if (!Array.isArray(m?.content)) return m;
    const content = await Promise.all(m.content.map(async (p, j) => {
      if (p?.type === 'image' && element(p.image)) {
        try {
          return { ...p, image: await createImageBitmap(p.image, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' }) };
        } catch (e) {
          throw bad(`messages[${i}].content[${j}]`, `not a readable image (${e?.message ?? e})`);
        }
      }
      if (p?.type === 'image_url' && globalThis.location) {
        const u = typeof p.image_url === 'string' ? p.image_url : p.image_url?.url;
        if (typeof u === 'string' && !/^[a-z][a-z0-9+.-]*:/i.test(u)) {
          let abs = u;
          try { abs = new URL(u, location.href).href; } catch { /* left as it is: the worker says why */ }
          return { ...p, image_url: typeof p.image_url === 'string' ? abs : { ...p.image_url, url: abs } };
        }
      }
      return p;
    }));
    return { ...m, content };
  }));
  return { ...req, messages };
}

function bad(what, message) {
  return new TramontaneError('INVALID_REQUEST', `${what}: ${message}`, { param: 'messages' });
}

/** The RGBA pixels of one image source: `{width, height, data}`. */
async function pixelsOf(source, what, signal) {
  let src = source;
  if (typeof src === 'string') {
    if (src === PLACEHOLDER) throw bad(what, 'an image_url of the placeholder this package writes');
    // Relative URLs are the page's (or the worker's) own.
    try { src = new URL(src, globalThis.location?.href).href; } catch { throw bad(what, `not a URL: ${src.slice(0, 80)}`); }
    if (!/^(data|blob|https?):/i.test(src)) throw bad(what, 'the image URL must be a data:, blob: or http(s): URL');
    let resp;
    try {
      resp = await fetch(src, { signal });
    } catch (e) {
      if (signal?.aborted) throw new TramontaneError('ABORTED', 'aborted');
      throw new TramontaneError('NETWORK', `${what}: fetching the image failed (${e?.message ?? e})`, { url: src, status: 0 });
    }
    if (!resp.ok) throw new TramontaneError('NETWORK', `${what}: fetching the image: HTTP ${resp.status}`, { url: src, status: resp.status });
    try {
      src = await resp.blob();
    } catch (e) {
      if (signal?.aborted) throw new TramontaneError('ABORTED', 'aborted');
      throw new TramontaneError('NETWORK', `${what}: reading the image failed (${e?.message ?? e})`, { url: src, status: resp.status });
    }
  }
  if (isA(src, 'ImageData')) {
    if (src.width * src.height > MAX_PIXELS) throw bad(what, `${src.width}x${src.height} is over the limit of ${MAX_PIXELS} pixels`);
    return { width: src.width, height: src.height, data: new Uint8Array(src.data.buffer, src.data.byteOffset, src.data.byteLength) };
  }
  if (src == null || typeof src !== 'object') throw bad(what, 'an image must be a URL, a Blob, an ImageBitmap, ImageData, an image or a canvas');
  let bitmap;
  try {
    // The file's own pixels: no colour-space conversion, no premultiplied alpha.
    bitmap = await createImageBitmap(src, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw bad(what, `not a readable image (${e?.message ?? e})`);
  }
  const { width, height } = bitmap;
  if (width * height > MAX_PIXELS) {
    bitmap.close();
    throw bad(what, `${width}x${height} is over the limit of ${MAX_PIXELS} pixels`);
  }
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const d = ctx.getImageData(0, 0, width, height);
  return { width, height, data: new Uint8Array(d.data.buffer) };
}

/** The RGBA pixels (`{width, height, data}`) of one image of any form an
 * `image` part takes; errors name it `what`. */
export function imagePixels(source, what, signal) {
  return pixelsOf(source, what, signal);
}

/** The pixels of every image of `req`, in order (none: an empty list). */
export async function requestImages(req, signal) {
  const parts = imageParts(req);
  if (parts.length > MAX_IMAGES) {
    const p = parts[MAX_IMAGES];
    throw bad(`messages[${p.message}].content[${p.part}]`, `more than ${MAX_IMAGES} images in one request`);
  }
  const out = [];
  for (const p of parts) out.push(await pixelsOf(p.source, `messages[${p.message}].content[${p.part}]`, signal));
  return out;
}
