// `npm start`'s server: the demo page (web/), the npm package (pkg/) and the
// embedded default model (models/), on 127.0.0.1 until stopped.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const port = Number(process.env.PORT ?? 8080);
const mounts = { '/': path.join(root, 'web'), '/pkg/': path.join(root, 'pkg'), '/models/': path.join(root, 'models') };

let srv;
try {
  srv = await startServer({ mounts, port });
} catch (e) {
  if (e.code !== 'EADDRINUSE') throw e;
  srv = await startServer({ mounts, port: 0 });
  console.log(`port ${port} is busy; using another`);
}
console.log(`\n  tramontane demo: ${srv.url}\n  (Chrome/Edge with WebGPU; Ctrl-C stops the server)\n`);
process.on('SIGINT', () => srv.close().then(() => process.exit(0)));
process.on('SIGTERM', () => srv.close().then(() => process.exit(0)));
