// A static file server for the browser tests and the demo (npm start): serves
// folders on 127.0.0.1 with HTTP Range support, counts requests per path, and
// can be told to break a download midway (?fail-after=N closes the connection).
// `mounts` maps URL prefixes to folders (longest prefix first); default: root.
// For gated-repo tests: `auth` maps URL prefixes to a token that requests there
// must carry as `Authorization: Bearer <token>` (else 401), `redirect(path)`
// may answer a URL to send a 302 to, and `cors` answers cross-origin requests
// and preflights. The log records each request's Authorization header.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.svg': 'image/svg+xml', '.png': 'image/png',
};

export function startServer({ root, mounts = null, port = 0, host = '127.0.0.1', headers = {}, quiet = true, auth = null, redirect = null, cors = false } = {}) {
  const table = Object.entries(mounts ?? { '/': root }).map(([p, dir]) => [p, path.resolve(dir)]).sort((a, b) => b[0].length - a[0].length);
  const log = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let rel;
    try { rel = decodeURIComponent(url.pathname); } catch { res.writeHead(400).end(); return; }
    log.push({ method: req.method, path: rel, range: req.headers.range ?? null, authorization: req.headers.authorization ?? null });
    if (cors) {
      res.setHeader('access-control-allow-origin', '*');
      res.setHeader('access-control-expose-headers', 'content-range, content-length, accept-ranges');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, {
          'access-control-allow-methods': 'GET, HEAD',
          'access-control-allow-headers': req.headers['access-control-request-headers'] ?? '',
          'access-control-max-age': '0',
        }).end();
        return;
      }
    }
    const gate = Object.entries(auth ?? {}).find(([p]) => rel.startsWith(p));
    if (gate && req.headers.authorization !== `Bearer ${gate[1]}`) {
      res.writeHead(401, { 'content-type': 'text/plain' }).end('Invalid credentials in Authorization header');
      return;
    }
    const to = redirect?.(rel);
    if (to) { res.writeHead(302, { location: to }).end(); return; }
    if (rel.endsWith('/')) rel += 'index.html';
    const mount = table.find(([p]) => rel.startsWith(p));
    if (!mount) { res.writeHead(404).end(); return; }
    const base = mount[1];
    const file = path.join(base, path.normalize('/' + rel.slice(mount[0].length)));
    if (file !== base && !file.startsWith(base + path.sep)) { res.writeHead(403).end(); return; }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found'); return; }
      const common = { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'accept-ranges': 'bytes', 'cache-control': 'no-store', ...headers };
      let start = 0, end = st.size - 1, status = 200;
      const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      if (m) {
        start = m[1] ? Number(m[1]) : Math.max(0, st.size - Number(m[2]));
        end = m[1] && m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
        if (start >= st.size || start > end) { res.writeHead(416, { 'content-range': `bytes */${st.size}` }).end(); return; }
        status = 206;
        common['content-range'] = `bytes ${start}-${end}/${st.size}`;
      }
      res.writeHead(status, { ...common, 'content-length': end - start + 1 });
      if (req.method === 'HEAD') { res.end(); return; }
      const failAfter = url.searchParams.get('fail-after');
      const stream = fs.createReadStream(file, { start, end });
      if (failAfter) {
        let sent = 0;
        stream.on('data', (c) => { sent += c.length; if (sent > Number(failAfter)) { stream.destroy(); res.destroy(); } });
      }
      stream.pipe(res);
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
