// webpack 5 with the least configuration an app has anyway: an entry, an output
// folder; the package's `new URL(..., import.meta.url)` assets and its worker
// are webpack's defaults.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
const here = path.dirname(fileURLToPath(import.meta.url));
export default {
  mode: 'production',
  entry: path.join(here, 'main.js'),
  output: { path: path.join(here, '../dist'), clean: true },
};
