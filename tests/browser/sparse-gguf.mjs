// A GGUF file of several GB that costs no disk: a small model's tensors moved
// to the offsets asked for, with holes between them (a sparse file, read back
// as zeros). The header keeps its length (only the tensors' u64 offsets
// change), so the model and its reference outputs stay those of the source.
import fs from 'node:fs';

// Where each tensor's offset field lies in a GGUF header, and the data
// section's start.
export function ggufLayout(buf) {
  let at = 0;
  const u32 = () => { const v = buf.readUInt32LE(at); at += 4; return v; };
  const u64 = () => { const v = buf.readBigUInt64LE(at); at += 8; return v; };
  const str = () => { const n = Number(u64()); const s = buf.toString('utf8', at, at + n); at += n; return s; };
  const SIZES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const value = (type) => {
    if (type === 8) return str();
    if (type === 9) {
      const t = u32(), n = Number(u64());
      const vals = [];
      for (let i = 0; i < n; i++) vals.push(value(t));
      return vals;
    }
    const n = SIZES[type];
    if (!n) throw new Error(`GGUF value type ${type}`);
    const v = type === 4 ? buf.readUInt32LE(at) : null;
    at += n;
    return v;
  };
  if (buf.toString('latin1', 0, 4) !== 'GGUF') throw new Error('not a GGUF file');
  at = 4;
  u32(); // version
  const nTensors = Number(u64()), nKv = Number(u64());
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const v = value(u32());
    if (key === 'general.alignment') alignment = v;
  }
  const tensors = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const dims = u32();
    at += 8 * dims;
    u32(); // type
    tensors.push({ name, offsetField: at, offset: Number(buf.readBigUInt64LE(at)) });
    at += 8;
  }
  const dataStart = Math.ceil(at / alignment) * alignment;
  // Each tensor's bytes end where the next one (in offset order) starts.
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  byOffset.forEach((t, i) => { t.bytes = (i + 1 < byOffset.length ? byOffset[i + 1].offset : buf.length - dataStart) - t.offset; });
  return { tensors: byOffset, dataStart, alignment };
}

// Copy `src` to `dst` with tensor i (in file order) at data offset
// `place(i, tensor, end of the previous one)` (aligned up); the file ends
// with its last tensor. Returns the new file's size and offsets.
export function sparseGguf(src, dst, place) {
  const buf = fs.readFileSync(src);
  const { tensors, dataStart, alignment } = ggufLayout(buf);
  const header = Buffer.from(buf.subarray(0, dataStart));
  let end = 0;
  const placed = tensors.map((t, i) => {
    const at = Math.ceil(Math.max(place(i, t, end), end) / alignment) * alignment;
    header.writeBigUInt64LE(BigInt(at), t.offsetField);
    end = at + t.bytes;
    return { name: t.name, at: dataStart + at, bytes: t.bytes };
  });
  fs.rmSync(dst, { force: true });
  const fd = fs.openSync(dst, 'w');
  try {
    fs.writeSync(fd, header, 0, header.length, 0);
    tensors.forEach((t, i) => fs.writeSync(fd, buf, dataStart + t.offset, t.bytes, placed[i].at));
    fs.ftruncateSync(fd, dataStart + end);
  } finally {
    fs.closeSync(fd);
  }
  return { size: dataStart + end, tensors: placed };
}
