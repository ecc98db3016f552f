"""llama.cpp (PyPI llama-cpp-python) measured like `tramontane bench`.

Prefill: one prompt of N pseudo-random token ids (the same generator as ours),
decode: M greedy tokens one at a time, both timed around llama.cpp's own eval
calls, repeated; prints one JSON object with the medians and min/max.
Usage: python llama_cpp_bench.py MODEL.gguf PROMPT GEN REPS [--gpu-layers N]
"""
import json
import statistics
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama, llama_supports_gpu_offload

# llama.cpp moves weights into "extra" buffer types (AMX tiles, repacked
# layouts) when the CPU reports them; AMX faults where the kernel does not grant
# tile state to the process (sandboxes). Plain CPU buffers work everywhere.
_default_params = llama_cpp.llama_cpp.llama_model_default_params


def _params():
    p = _default_params()
    p.use_extra_bufts = "--extra-bufts" in sys.argv
    return p


llama_cpp.llama_cpp.llama_model_default_params = _params


def prompt_ids(n, vocab):
    # xorshift32 seeded like scripts/bench-browser.mjs.
    x, out = 0x9E3779B9, []
    for _ in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(x % vocab)
    return out


def main():
    path, n_prompt, n_gen, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    gpu_layers = int(sys.argv[sys.argv.index("--gpu-layers") + 1]) if "--gpu-layers" in sys.argv else 0
    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_batch=max(n_prompt, 8), n_threads=2,
                n_gpu_layers=gpu_layers, logits_all=False, verbose=False)
    load = time.perf_counter() - t0
    ids = prompt_ids(n_prompt, llm.n_vocab())

    def next_token():
        # The last position's logits, straight from llama.cpp (greedy).
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))

    pre, dec, ttft = [], [], []
    for rep in range(reps + 1):  # the first round warms up
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        tok = next_token()
        t_pre = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n_gen):
            llm.eval([tok])
            tok = next_token()
        t_dec = time.perf_counter() - t
        if rep > 0:
            pre.append(n_prompt / t_pre)
            dec.append(n_gen / t_dec)
            ttft.append(t_pre)
    print(json.dumps({
        "engine": "llama.cpp (llama-cpp-python)",
        "backend": "gpu offload" if gpu_layers and llama_supports_gpu_offload() else "cpu, 2 threads",
        "prefill_tokens_per_s": statistics.median(pre), "prefill_tokens_per_s_min_max": [min(pre), max(pre)],
        "decode_tokens_per_s": statistics.median(dec), "decode_tokens_per_s_min_max": [min(dec), max(dec)],
        "time_to_first_token_s": statistics.median(ttft), "load_seconds": load,
    }))


if __name__ == "__main__":
    main()
