// A static file server for the browser tests and the demo (npm start): serves
// folders on 127.0.0.1 with HTTP Range support and counts requests per path.
// `mounts` maps URL prefixes to folders (longest prefix first); default: root.
// For gated-repo tests: `auth` maps URL prefixes to a token that requests there
// must carry as `Authorization: Bearer <token>` (else 401), `redirect(path)`
// may answer a URL to send a 302 to, and `cors` answers cross-origin requests
// and preflights. The log (`log`) has one entry per request: method, path (as
// asked, chaos prefix included), file (the path served), range, authorization,
// chaos (the modes applied, or null), status (as sent), and for a body cut
// short `dropped: true` with `sent` (body bytes sent).
//
// Misbehaving modes, for transport tests. Either as query parameters of one
// request (`/m.gguf?drop-once=1000`), or as a path prefix, which a model folder
// passes on to every file in it (the engine builds shard URLs from the base
// URL, so a query on the base reaches no shard):
//
//   /chaos/<modes>/<real path>
//   e.g. /chaos/drop-once=100000,only=model-00002/tests/fixtures/llama_tiny/
//
// <modes> is a comma-separated list of name=value (a bare name for a flag):
//   fail-after=N      every request: close the connection once over N body bytes are sent
//   drop-once=N       the first request for a URL closes the connection after exactly N body
//                     bytes (if the body is longer); later requests are served normally
//   hold=MS           with drop-once or lie-length: wait MS ms before closing the connection
//                     (browsers drop received bytes not yet read when a body fails: a pause
//                     lets the page read up to the break)
//   status-once=S     the first request for a URL answers status S (no body); later ones normally
//   status-always=S   every request answers status S
//   lie-length=L      the file claims to be L bytes (Content-Length L, or for a Range request
//                     Content-Range `bytes a-(L-1)/L` and its length); the real bytes are sent
//                     and the connection is closed
//   bad-range=offset  a Range request gets a 206 whose body (and Content-Range) starts 1000
//                     bytes away from the byte asked for
//   bad-range=total   ... a 206 whose Content-Range names a total 1000 bytes too big
//   bad-range=length  ... a 206 whose Content-Length (and body) is one byte short of its
//                     Content-Range
//   ignore-range      Range requests get 200 and the whole file
//   only=TEXT         the modes apply only to files whose path contains TEXT
//   tag=TEXT          no effect but to make a URL distinct: "once" counts are per URL
//                     (path and query as asked), kept as long as the server runs
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png',
};

const MODES = ['fail-after', 'drop-once', 'hold', 'status-once', 'status-always', 'lie-length', 'bad-range', 'ignore-range', 'only', 'tag'];

// `/chaos/<modes>/<rest>` → [modes, '/<rest>']; anything else → [null, p].
function splitChaos(p) {
  const m = /^\/chaos\/([^/]*)(\/.*)$/.exec(p);
  if (!m) return [null, p];
  const modes = {};
  for (const part of m[1].split(',')) {
    if (!part) continue;
    const i = part.indexOf('=');
    modes[i < 0 ? part : part.slice(0, i)] = i < 0 ? '' : part.slice(i + 1);
  }
  return [modes, m[2]];
}

// Write bytes [from, to] of `file` (to < from: none). With `cut`, the
// connection closes after exactly that many bytes; with `close`, at the end
// (a body shorter than its Content-Length); else the response ends normally.
async function sendBody(res, file, from, to, { cut = Infinity, close = false, hold = 0, entry }) {
  let closed = false;
  const gone = new Promise((r) => res.once('close', () => { closed = true; r(); }));
  const hangUp = () => {
    // A FIN after what was written (end() flushes and uncorks first), the body
    // short of its Content-Length; then the socket goes.
    entry.dropped = true;
    const s = res.socket;
    if (!s) return;
    s.once('finish', () => s.destroy());
    if (hold > 0) {
      s.uncork();
      setTimeout(() => s.end(), hold);
    } else {
      s.end();
    }
  };
  let sent = 0;
  if (to >= from && cut > 0) {
    const stream = fs.createReadStream(file, { start: from, end: to });
    try {
      for await (const chunk of stream) {
        if (closed) { stream.destroy(); return; }
        const c = sent + chunk.length > cut ? chunk.subarray(0, cut - sent) : chunk;
        sent += c.length;
        entry.sent = sent;
        const more = res.write(c);
        if (sent >= cut) { stream.destroy(); hangUp(); return; }
        if (!more) await Promise.race([new Promise((r) => res.once('drain', r)), gone]);
      }
    } catch {
      res.destroy();
      return;
    }
  }
  entry.sent = sent;
  if (close) {
    res.flushHeaders();
    hangUp();
  } else {
    res.end();
  }
}

export function startServer({ root, mounts = null, port = 0, host = '127.0.0.1', headers = {}, quiet = true, auth = null, redirect = null, cors = false } = {}) {
  const table = Object.entries(mounts ?? { '/': root }).map(([p, dir]) => [p, path.resolve(dir)]).sort((a, b) => b[0].length - a[0].length);
  const log = [];
  // Requests seen per (mode, URL), for the "once" modes.
  const counts = new Map();
  const first = (mode, key) => {
    const k = `${mode} ${key}`;
    const n = counts.get(k) ?? 0;
    counts.set(k, n + 1);
    return n === 0;
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let asked;
    try { asked = decodeURIComponent(url.pathname); } catch { res.writeHead(400).end(); return; }
    let [modes, rel] = splitChaos(asked);
    for (const k of MODES) if (url.searchParams.has(k)) (modes ??= {})[k] ??= url.searchParams.get(k);
    const entry = { method: req.method, path: asked, file: rel, range: req.headers.range ?? null, authorization: req.headers.authorization ?? null, chaos: null, status: null };
    log.push(entry);
    const head = (status, h) => { entry.status = status; return res.writeHead(status, h); };
    if (cors) {
      res.setHeader('access-control-allow-origin', '*');
      res.setHeader('access-control-expose-headers', 'content-range, content-length, accept-ranges');
      if (req.method === 'OPTIONS') {
        head(204, {
          'access-control-allow-methods': 'GET, HEAD',
          'access-control-allow-headers': req.headers['access-control-request-headers'] ?? '',
          'access-control-max-age': '0',
        }).end();
        return;
      }
    }
    const gate = Object.entries(auth ?? {}).find(([p]) => rel.startsWith(p));
    if (gate && req.headers.authorization !== `Bearer ${gate[1]}`) {
      head(401, { 'content-type': 'text/plain' }).end('Invalid credentials in Authorization header');
      return;
    }
    const to = redirect?.(rel);
    if (to) { head(302, { location: to }).end(); return; }
    if (rel.endsWith('/')) rel += 'index.html';
    const mount = table.find(([p]) => rel.startsWith(p));
    if (!mount) { head(404).end(); return; }
    const base = mount[1];
    const file = path.join(base, path.normalize('/' + rel.slice(mount[0].length)));
    if (file !== base && !file.startsWith(base + path.sep)) { head(403).end(); return; }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) { head(404, { 'content-type': 'text/plain' }).end('not found'); return; }
      const chaos = modes && (modes.only === undefined || rel.includes(modes.only)) ? modes : {};
      if (modes && chaos === modes) entry.chaos = modes;
      const key = req.url;
      const forced = chaos['status-always'] ?? (chaos['status-once'] !== undefined && first('status-once', key) ? chaos['status-once'] : undefined);
      if (forced !== undefined) {
        head(Number(forced) || 500, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(`chaos: status ${forced}`);
        return;
      }
      const common = { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'accept-ranges': 'bytes', 'cache-control': 'no-store', ...headers };
      const real = st.size;
      const lie = chaos['lie-length'] !== undefined;
      // The size the server claims (what Content-Length / Content-Range say).
      const size = lie ? Number(chaos['lie-length']) : real;
      let start = 0, end = size - 1, status = 200;
      const m = 'ignore-range' in chaos ? null : /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      if (m) {
        start = m[1] ? Number(m[1]) : Math.max(0, size - Number(m[2]));
        end = m[1] && m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
        if (start >= size || start > end) { head(416, { 'content-range': `bytes */${size}` }).end(); return; }
        status = 206;
      }
      // Announced: bytes [start, end] of `total`, in `length` bytes; sent: real bytes [from, to].
      let total = size, length = end - start + 1, from = start, to = Math.min(end, real - 1);
      if (status === 206) {
        const bad = chaos['bad-range'];
        if (bad === 'offset') {
          start = from = start >= 1000 ? start - 1000 : Math.min(start + 1000, end);
          length = end - start + 1;
        } else if (bad === 'total') {
          total = size + 1000;
        } else if (bad === 'length') {
          length -= 1;
          to -= 1;
        }
        common['content-range'] = `bytes ${start}-${end}/${total}`;
      }
      head(status, { ...common, 'content-length': length });
      if (req.method === 'HEAD') { res.end(); return; }
      const failAfter = url.searchParams.get('fail-after') ?? chaos['fail-after'];
      if (failAfter) {
        const stream = fs.createReadStream(file, { start: from, end: to });
        let sent = 0;
        stream.on('data', (c) => { sent += c.length; if (sent > Number(failAfter)) { entry.dropped = true; stream.destroy(); res.destroy(); } });
        stream.pipe(res);
        return;
      }
      const drop = chaos['drop-once'] !== undefined && first('drop-once', key) ? Number(chaos['drop-once']) : Infinity;
      if (drop === Infinity && !lie) {
        fs.createReadStream(file, { start: from, end: to }).pipe(res);
        return;
      }
      sendBody(res, file, from, to, { cut: drop < to - from + 1 ? drop : Infinity, close: lie && to - from + 1 < length, hold: Number(chaos.hold ?? 0), entry });
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const { port: p } = server.address();
      if (!quiet) console.log(`serving at http://${host}:${p}/`);
      resolve({ url: `http://${host}:${p}/`, log, close: () => new Promise((r) => { server.close(r); server.closeAllConnections(); }), server });
    });
  });
}
