"""`tramontane serve` driven by the official `openai` Python client.

Run by scripts/test.sh (after `cargo test` built target/debug/tramontane) as
`python -m unittest discover -s tests/serve -v`, with the client installed in
target/pyenv by scripts/setup.sh. Each class starts its own server on a free
port and stops it with SIGTERM (which must end it cleanly).

Greedy outputs are compared with transformers' reference tokens (the tiny
fixtures) and with the native CLI's output (the default SmolLM2 model).
"""

import json
import os
import signal
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

import openai

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("TRAMONTANE_BIN", os.path.join(ROOT, "target", "debug", "tramontane"))
FIX = os.path.join(ROOT, "tests", "fixtures")
SMOLLM2 = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def env():
    e = dict(os.environ)
    xdg = os.path.join(ROOT, "target", "xdg")
    os.makedirs(xdg, mode=0o700, exist_ok=True)
    e.setdefault("XDG_RUNTIME_DIR", xdg)
    return e


def reference(name):
    with open(os.path.join(FIX, name, "reference.json")) as f:
        return json.load(f)


class Server:
    """`tramontane serve` on a free port; the log (stderr) is kept."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "serve", "--port", "0", *args], stderr=subprocess.PIPE, text=True, env=env())
        self.lines = []
        deadline = time.time() + 180
        while True:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("the server exited: " + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("listening on "):
                self.url = line.split()[-1]
                break
            if time.time() > deadline:
                raise RuntimeError("the server did not start")
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def log(self):
        return "".join(self.lines)

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def raw(self, path, body, headers=None):
        """POST raw bytes; returns (status, parsed JSON body)."""
        req = urllib.request.Request(self.url + path, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.drain.join(10)
        self.proc.stderr.close()
        return code


def token_ids(resp):
    """Our extension: the generated ids (the JS API's `token_ids`)."""
    return resp.model_extra["token_ids"]


class TinyModels(unittest.TestCase):
    """Completions and chat on the transformers fixtures."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--model", os.path.join(FIX, "llama_tiny"), "--queue", "1")
        cls.client = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        code = cls.server.stop()
        if code != 0:
            raise AssertionError(f"the server exited with {code} on SIGTERM:\n{cls.server.log()}")

    def greedy(self, prompt_ids, n, **kw):
        return self.client.completions.create(model="llama_tiny", prompt=prompt_ids, max_tokens=n, temperature=0,
                                              extra_body={"ignore_eos": True}, **kw)

    def assert_reference(self):
        prompts = reference("llama_tiny")["prompts"]
        self.assertGreater(len(prompts), 0)
        for p in prompts:
            want = p["greedy"]["new_ids"]
            r = self.greedy(p["input_ids"], len(want))
            self.assertEqual(token_ids(r), want)
            self.assertEqual(r.choices[0].finish_reason, "length")
            self.assertEqual(r.usage.prompt_tokens, len(p["input_ids"]))
            self.assertEqual(r.usage.completion_tokens, len(want))

    def test_models_and_health(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["llama_tiny"])
        self.assertEqual(self.client.models.retrieve("llama_tiny").id, "llama_tiny")
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("gpt-4")
        with urllib.request.urlopen(self.server.url + "/health") as r:
            self.assertEqual(json.loads(r.read()), {"status": "ok"})

    def test_greedy_completions_equal_the_reference(self):
        self.assert_reference()

    def test_streamed_chunks_add_up_to_the_whole(self):
        p = reference("llama_tiny")["prompts"][0]
        whole = self.greedy(p["input_ids"], 12)
        chunks = list(self.greedy(p["input_ids"], 12, stream=True, stream_options={"include_usage": True}))
        self.assertGreater(len(chunks), 2)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].text)
        self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], "length")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 12)
        # Chat: the template's prompt, streamed and not, the same text.
        msgs = [{"role": "user", "content": "Hello there"}]
        whole = self.client.chat.completions.create(model="x", messages=msgs, max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
        self.assertEqual(whole.choices[0].message.role, "assistant")
        stream = self.client.chat.completions.create(model="x", messages=msgs, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}, stream=True)
        parts = [c.choices[0].delta.content or "" for c in stream if c.choices]
        self.assertEqual("".join(parts), whole.choices[0].message.content)
        self.assertEqual(whole.usage.completion_tokens, 10)

    def test_logprobs_and_seeds(self):
        p = reference("llama_tiny")["prompts"][0]
        r = self.greedy(p["input_ids"], 4, logprobs=3)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 4)
        self.assertEqual(len(lp.token_logprobs), 4)
        self.assertTrue(all(len(t) <= 3 for t in lp.top_logprobs))
        self.assertTrue(all(x <= 0 for x in lp.token_logprobs))
        chat = self.client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0,
                                                   logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
        content = chat.choices[0].logprobs.content
        self.assertEqual(len(content), 3)
        self.assertEqual(len(content[0].top_logprobs), 2)
        # A seed reproduces a sampled answer.
        kw = dict(model="x", prompt=p["input_ids"], max_tokens=8, temperature=1.0, seed=7, extra_body={"ignore_eos": True})
        self.assertEqual(token_ids(self.client.completions.create(**kw)), token_ids(self.client.completions.create(**kw)))

    def test_bad_requests_get_openai_errors_and_the_server_still_answers(self):
        p = reference("llama_tiny")["prompts"][0]
        bad = [
            dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(max_tokens=0), dict(top_logprobs=99, logprobs=True),
            dict(n=2), dict(stop=5), dict(seed=-3), dict(frequency_penalty="x"),
        ]
        for kw in bad:
            args = dict(model="x", prompt=p["input_ids"], max_tokens=2)
            args.update(kw)
            if "top_logprobs" in kw:
                with self.assertRaises(openai.BadRequestError):
                    self.client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], **kw)
                continue
            with self.assertRaises(openai.BadRequestError, msg=str(kw)) as e:
                self.client.completions.create(**args)
            self.assertEqual(e.exception.status_code, 400)
            self.assertEqual(e.exception.body["code"], "INVALID_REQUEST")
            self.assertEqual(e.exception.body["param"], next(iter(kw)))
        # Messages of the wrong shape, by field.
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.chat.completions.create(model="x", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": 3}}]}])
        self.assertIn("messages[1].tool_calls[0].function.name", e.exception.message)
        # Token ids outside the vocabulary; a prompt longer than the context.
        with self.assertRaises(openai.BadRequestError):
            self.client.completions.create(model="x", prompt=[1, 10**9], max_tokens=2)
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.completions.create(model="x", prompt=[5] * 600, max_tokens=2)
        self.assertEqual(e.exception.body["code"], "CONTEXT_OVERFLOW")
        # Not JSON; too large; an unknown route.
        status, body = self.server.raw("/v1/completions", b"{not json")
        self.assertEqual((status, body["error"]["type"]), (400, "invalid_request_error"))
        # Over --max-body's default of 48 MiB (room for images sent inline).
        status, body = self.server.raw("/v1/completions", b'{"prompt": "' + b"a" * (49 << 20) + b'"}')
        self.assertEqual(status, 413)
        self.assertIn("error", body)
        status, body = self.server.raw("/v1/nothing", b"{}")
        self.assertEqual(status, 404)
        self.assertIn("message", body["error"])
        # And afterwards the answers are still transformers'.
        self.assert_reference()

    def test_a_client_that_disconnects_stops_its_generation(self):
        p = reference("llama_tiny")["prompts"][0]
        stream = self.greedy(p["input_ids"], 400, stream=True)
        for i, _ in enumerate(stream):
            if i == 2:
                break
        stream.close()
        deadline = time.time() + 30
        while "the client disconnected" not in self.server.log() and time.time() < deadline:
            time.sleep(0.1)
        self.assertIn("generation stopped: the client disconnected", self.server.log())
        self.assert_reference()

    def test_a_full_queue_answers_429(self):
        # --queue 1: one generates, one waits, the third is refused.
        p = reference("llama_tiny")["prompts"][0]
        first = self.greedy(p["input_ids"], 400, stream=True)
        next(iter(first))  # generating now
        results = {}

        def waiter():
            results["second"] = token_ids(self.greedy(p["input_ids"], 2))

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.5)
        with self.assertRaises(openai.RateLimitError) as e:
            self.greedy(p["input_ids"], 2)
        self.assertEqual(e.exception.status_code, 429)
        first.close()
        t.join(60)
        self.assertEqual(len(results["second"]), 2)


class ApiKey(unittest.TestCase):
    def test_a_wrong_key_is_401_and_the_right_one_works(self):
        server = Server("--model", os.path.join(FIX, "qwen2_tiny"), "--api-key", "sekret")
        try:
            with self.assertRaises(openai.AuthenticationError) as e:
                server.client("wrong").models.list()
            self.assertEqual(e.exception.status_code, 401)
            with self.assertRaises(openai.AuthenticationError):
                server.client("wrong").completions.create(model="x", prompt=[1, 2], max_tokens=1)
            ref = reference("qwen2_tiny")["prompts"][0]
            want = ref["greedy"]["new_ids"]
            r = server.client("sekret").completions.create(model="x", prompt=ref["input_ids"], max_tokens=len(want), temperature=0, extra_body={"ignore_eos": True})
            self.assertEqual(token_ids(r), want)
        finally:
            self.assertEqual(server.stop(), 0)


class Tools(unittest.TestCase):
    def test_tool_calls_come_back_in_openai_form(self):
        template = os.path.join(FIX, "templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
        server = Server("--model", os.path.join(FIX, "scripted", "scripted.gguf"), "--chat-template", template)
        try:
            tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}]
            msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
            c = server.client()
            r = c.chat.completions.create(model="x", messages=msgs, tools=tools, max_tokens=12, temperature=0)
            self.assertEqual(r.choices[0].finish_reason, "tool_calls")
            call = r.choices[0].message.tool_calls[0]
            self.assertEqual(call.function.name, "get_weather")
            self.assertEqual(json.loads(call.function.arguments), {"city": "Paris", "days": 2})
            chunks = list(c.chat.completions.create(model="x", messages=msgs, tools=tools, max_tokens=12, temperature=0, stream=True))
            calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
            self.assertEqual([tc.function.name for tc in calls], ["get_weather"])
            self.assertEqual([ch.choices[0].finish_reason for ch in chunks if ch.choices][-1], "tool_calls")
            content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            self.assertNotIn("<tool_call>", content)
            # The call and its result go back through the template.
            msgs += [r.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
            c.chat.completions.create(model="x", messages=msgs, tools=tools, max_tokens=2, temperature=0)
        finally:
            self.assertEqual(server.stop(), 0)


class DefaultModel(unittest.TestCase):
    def test_greedy_chat_equals_the_native_cli(self):
        self.assertTrue(os.path.exists(SMOLLM2), "the default model (scripts/setup.sh fetches it)")
        question = "What is the capital of France?"
        cli = subprocess.run([BIN, "run", "--model", SMOLLM2, "--chat", "--prompt", question, "--max-tokens", "24", "--json"],
                             capture_output=True, text=True, env=env(), check=True)
        want = json.loads(cli.stdout)
        server = Server("--model", SMOLLM2)
        try:
            c = server.client()
            r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0)
            self.assertEqual(token_ids(r), want["generated_ids"])
            self.assertEqual(r.choices[0].message.content, want["text"])
            self.assertIn("Paris", r.choices[0].message.content)
            # OpenAI's count of prompt tokens served from a cache: the KV
            # cache's here. The same question again reuses all its prompt
            # but the last token (which must run for the first logits).
            self.assertEqual(r.usage.prompt_tokens_details.cached_tokens, 0)
            again = c.chat.completions.create(model="x", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0)
            self.assertEqual(again.usage.prompt_tokens_details.cached_tokens, again.usage.prompt_tokens - 1)
            self.assertEqual(again.choices[0].message.content, want["text"])
            parts = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model="x", messages=[{"role": "user", "content": question}], max_tokens=24, temperature=0, stream=True) if ch.choices]
            self.assertEqual("".join(parts), want["text"])
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
