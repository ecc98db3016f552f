// In a page under test: the model cache's OPFS files (crates/tramontane-web/
// src/opfs.rs) as [name, size] pairs (size -1: not a file); none before the
// cache's directory exists.
export async function opfsFiles() {
  const out = [];
  try {
    const d = await (await navigator.storage.getDirectory()).getDirectoryHandle('tramontane-v1');
    for await (const [name, h] of d.entries()) out.push([name, h.kind === 'file' ? (await h.getFile()).size : -1]);
  } catch { /* no directory: no files */ }
  return out;
}
