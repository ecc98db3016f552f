// Where this package's own files (the .wasm, worker.js) are when a bundler
// moved its code without them.
//
// Bundlers find those files through `new URL('./…', import.meta.url)`, and
// webpack 5, Vite's builds and Vite 8's dev server copy them. Vite's dev
// server up to Vite 7 (whose dependency pre-bundler is esbuild) copies only
// the code, into node_modules/.vite/deps/, where those URLs then name files
// that are not there; the package's own folder is still served beside it, at
// node_modules/tramontane/. Measured with Vite 7 and 8, dev and build, and
// webpack 5 (tests/bundlers/).

/** The URL of `file` (relative to this package's folder) in the package's
 * installed folder, where `from` (a module's `import.meta.url`) shows that
 * the code runs from Vite's pre-bundled copy; null elsewhere. */
export function installedFile(file, from) {
  const m = /^(.*\/node_modules\/)\.vite\/deps\/[^?#]*(?:[?#].*)?$/.exec(String(from));
  return m ? new URL(`tramontane/${file}`, m[1]).href : null;
}
