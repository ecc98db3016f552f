#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets from the test fixtures.

Run from the repository root: python3 crates/tramontane/fuzz/make_seeds.py
Seeds are small (each under 64 KiB) and deterministic; files the fuzzers add
(`cargo fuzz cmin`) and the crashes under `regression/` are left alone.
Needs only the Python standard library.
"""

import glob
import json
import os
import struct

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "crates", "tramontane", "fuzz", "corpus")
LIMIT = 64 << 10


def write(target, name, data):
    assert len(data) < LIMIT, (target, name, len(data))
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- GGUF: a minimal reader/writer of the metadata section -------------------

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.unpack("<Q")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", "replace")

    def value(self, ty):
        if ty in SCALAR:
            return self.unpack(SCALAR[ty])
        if ty == 8:
            return self.string()
        if ty == 9:
            ety, n = self.unpack("<I"), self.unpack("<Q")
            return (ety, [self.value(ety) for _ in range(n)])
        raise ValueError(ty)


def read_metadata(path):
    """(key, type, value) of every metadata entry of a GGUF."""
    with open(path, "rb") as f:
        buf = f.read(16 << 20)
    r = Reader(buf)
    assert buf[:4] == b"GGUF"
    r.pos = 8
    _n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    out = []
    for _ in range(n_kv):
        k = r.string()
        ty = r.unpack("<I")
        out.append((k, ty, r.value(ty)))
    return out


def enc_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def enc_value(ty, v):
    if ty in SCALAR:
        return struct.pack(SCALAR[ty], v)
    if ty == 8:
        return enc_string(v)
    ety, items = v
    return struct.pack("<IQ", ety, len(items)) + b"".join(enc_value(ety, x) for x in items)


def gguf(kvs):
    """A vocab-only GGUF (v3, no tensors) holding `kvs`."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for k, ty, v in kvs:
        out += enc_string(k) + struct.pack("<I", ty) + enc_value(ty, v)
    return out


def header_prefix(path):
    """The bytes of a GGUF up to the start of its tensor data."""
    with open(path, "rb") as f:
        buf = f.read(1 << 20)
    r = Reader(buf)
    r.pos = 8
    n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
    align = 32
    for _ in range(n_kv):
        k = r.string()
        ty = r.unpack("<I")
        v = r.value(ty)
        if k == "general.alignment":
            align = v
    for _ in range(n_tensors):
        r.string()
        nd = r.unpack("<I")
        r.pos += 8 * nd + 4 + 8
    return buf[:(r.pos + align - 1) // align * align]


def small_vocab(path, n):
    """The tokenizer metadata of a vocab GGUF cut to its first `n` tokens (plus
    BOS/EOS, renumbered), with the merges that stay inside them."""
    meta = {k: (ty, v) for k, ty, v in read_metadata(path)}
    ety, tokens = meta["tokenizer.ggml.tokens"][1]
    keep = list(range(min(n, len(tokens))))
    for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        if k in meta and meta[k][1] not in keep and meta[k][1] < len(tokens):
            keep.append(meta[k][1])
    new_id = {old: i for i, old in enumerate(keep)}
    kvs = []
    for k, (ty, v) in meta.items():
        if not k.startswith("tokenizer.") or k == "tokenizer.chat_template":
            continue
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            v = (v[0], [v[1][i] for i in keep if i < len(v[1])])
        elif k == "tokenizer.ggml.merges":
            vocab = {tokens[i] for i in keep}
            merges = [m for m in v[1] if " " in m and all(p in vocab for p in m.split(" ", 1)) and m.replace(" ", "", 1) in vocab]
            v = (v[0], merges[:2000])
        elif k.endswith("_token_id"):
            if v not in new_id:
                continue
            v = new_id[v]
        kvs.append((k, ty, v))
    return kvs


# --- the corpora --------------------------------------------------------------

def config_json():
    for p in sorted(glob.glob(os.path.join(FIX, "**", "config.json"), recursive=True)):
        name = os.path.relpath(os.path.dirname(p), FIX).replace(os.sep, "-")
        with open(p, "rb") as f:
            write("config_json", name + ".json", f.read())


def safetensors_file(tensors):
    """A safetensors file of F32 tensors {name: shape}, data zero."""
    table, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors.items():
        n = 4
        for d in shape:
            n *= d
        table[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(table, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + b"\0" * off


def safetensors_index():
    for p in sorted(glob.glob(os.path.join(FIX, "*", "model.safetensors.index.json"))):
        with open(p, "rb") as f:
            index = json.load(f)
        wm = index["weight_map"]
        first = sorted(set(wm.values()))[0]
        # The first shard holds small stand-ins of its tensors (shapes [2]).
        shard = safetensors_file({t: [2] for t, s in wm.items() if s == first})
        name = os.path.basename(os.path.dirname(p))
        write("safetensors_index", name + ".bin", json.dumps(index, indent=2).encode() + b"\0" + shard)
    one = {"metadata": {"total_size": 16}, "weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}
    write("safetensors_index", "two-tensors.bin", json.dumps(one).encode() + b"\0" + safetensors_file({"a": [2], "b": [2]}))
    bad = {"weight_map": {"a": "../outside.safetensors"}}
    write("safetensors_index", "outside.bin", json.dumps(bad).encode() + b"\0" + safetensors_file({"a": [2]}))


def safetensors_header():
    write("safetensors_header", "two-f32.st", safetensors_file({"a": [2, 3], "b": [4]}))


def chat_template():
    with open(os.path.join(FIX, "templates", "cases.json")) as f:
        cases = json.load(f)["cases"]
    by_template = {}
    for c in cases:
        by_template.setdefault(c["template"], []).append(c)
    for t, cs in sorted(by_template.items()):
        with open(os.path.join(FIX, "templates", t), "rb") as f:
            src = f.read()
        # The plainest request and the largest (tools, tool calls, documents).
        plain = cs[0]
        rich = max(cs, key=lambda c: len(json.dumps(c["request"])))
        for tag, c in (("plain", plain), ("rich", rich)):
            req = json.dumps(c["request"], separators=(",", ":")).encode()
            write("chat_template", f"{t[:-len('.jinja')]}-{tag}.bin", src + b"\0" + req)
    write("chat_template", "messages-list.bin", b"{% for m in messages %}{{ m.role }}: {{ m.content | trim }}\n{% endfor %}\0"
          + json.dumps([{"role": "user", "content": " hi "}]).encode())


def gguf_tokenizer():
    for p in sorted(glob.glob(os.path.join(FIX, "tokenizers", "ggml-vocab-*.gguf"))):
        name = os.path.basename(p)[len("ggml-vocab-"):-len(".gguf")]
        write("gguf_tokenizer", name + ".gguf", gguf(small_vocab(p, 1200)))
    # A model's own metadata, tensors left out (a vocab-only file).
    for p in ("moe_gguf/moe-q4_0.gguf", "variants/qwen3_gguf/qwen3-f32.gguf"):
        kvs = read_metadata(os.path.join(FIX, p))
        write("gguf_tokenizer", os.path.basename(p)[:-5] + "-vocab.gguf", gguf(kvs))
    # The compact description (see tramontane::fuzzing::tokenizer_metadata).
    byte_vocab = "\n".join(chr(c) if chr(c).isprintable() and c > 32 else "3:<0x%02X>" % c for c in range(256))
    write("gguf_tokenizer", "compact-gpt2-llama3.bin",
          bytes([0, 1, 0b1111, 0, 1]) + ("3:<s>\n3:</s>\n" + byte_vocab + "\nhe\nll\nhell\nhello\x01h e\nl l\nhe ll\nhell o").encode()
          + b"\0hello world <s>")
    write("gguf_tokenizer", "compact-spm.bin",
          bytes([1, 0, 0b10111111, 1, 2]) + ("2:<unk>\n3:<s>\n3:</s>\n" + "\n".join("6:<0x%02X>" % c for c in range(256))
                                             + "\n\u2581\nh\ne\nl\no\nhe\nll\n\u2581hello").encode() + "\0hello  hell\u00e9".encode())


def gguf_header():
    for p in ("quant_ggufs/llama3-Q2_K.gguf", "quant_ggufs/llama3-IQ4_XS.gguf", "variants/yarn_gguf/yarn-f32.gguf"):
        write("gguf_header", os.path.basename(p)[:-5] + "-head.gguf", header_prefix(os.path.join(FIX, p)))
    write("gguf_header", "vocab-only.gguf", gguf(read_metadata(os.path.join(FIX, "moe_gguf/moe-q4_0.gguf"))))


def lying_size_headers():
    lie = struct.pack("<Q", 1 << 39)
    write("lying_size_headers", "gguf-head.bin", lie + b"\0" + header_prefix(os.path.join(FIX, "quant_ggufs/llama3-Q2_K.gguf")))
    write("lying_size_headers", "gguf-small-lie.bin", struct.pack("<Q", 4096) + b"\0"
          + header_prefix(os.path.join(FIX, "variants/llama3_gguf/llama3-f32.gguf")))
    st = safetensors_file({"a": [2, 3], "b": [4]})
    write("lying_size_headers", "safetensors.bin", lie + b"\1" + st)
    write("lying_size_headers", "safetensors-no-lie.bin", struct.pack("<Q", 0) + b"\1" + st)
    # Counts that the claimed size would allow but the bytes do not hold.
    write("lying_size_headers", "gguf-many-tensors.bin", lie + b"\0" + b"GGUF" + struct.pack("<IQQ", 3, 1 << 30, 0))
    write("lying_size_headers", "gguf-long-array.bin", lie + b"\0" + b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
          + enc_string("a") + struct.pack("<IIQ", 9, 0, 1 << 34))
    write("lying_size_headers", "safetensors-long-header.bin", lie + b"\1" + struct.pack("<Q", 100 << 20) + b"{")


if __name__ == "__main__":
    config_json()
    safetensors_index()
    safetensors_header()
    chat_template()
    gguf_tokenizer()
    gguf_header()
    lying_size_headers()
