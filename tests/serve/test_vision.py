"""Images through `tramontane serve` with the official `openai` client (issue
27): the tiny random Pixtral (LlavaForConditionalGeneration) checkpoint of
tests/fixtures/vision, every case of its reference (one and two images, a
second turn, transparency, text only) sent as OpenAI content parts with the
images as data: URLs, and the Mistral 3 one through the GGUF + mmproj files
llama.cpp's converter wrote; the greedy tokens must be transformers'. A corrupt or
truncated image, a URL of no known scheme and an image sent to a text-only
model are 400s naming the message and part, and the server keeps answering."""

import base64
import json
import os
import unittest

import openai

from test_openai_client import FIX, Server, token_ids

VISION = os.path.join(FIX, "vision")


def data_url(name, mime="image/png"):
    with open(os.path.join(VISION, "images", name), "rb") as f:
        return f"data:{mime};base64," + base64.b64encode(f.read()).decode()


def openai_messages(messages):
    """The reference's messages as OpenAI sends them: image parts as image_url."""
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = [{"type": "image_url", "image_url": {"url": data_url(p["file"])}} if p["type"] == "image" else p for p in content]
        out.append({"role": m["role"], "content": content})
    return out


class Vision(unittest.TestCase):
    MODEL = "pixtral"
    ARGS = ["--model", os.path.join(VISION, "pixtral")]

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.ARGS, "--served-model-name", "pixtral")
        cls.client = cls.server.client()
        with open(os.path.join(VISION, cls.MODEL, "reference.json")) as f:
            cls.reference = json.load(f)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0

    def greedy(self, messages, n):
        return self.client.chat.completions.create(model="pixtral", messages=messages, temperature=0, max_tokens=n,
                                                   extra_body={"ignore_eos": True})

    def test_images_as_transformers_sees_them(self):
        for case in self.reference["cases"]:
            want = case["greedy"]["new_ids"]
            r = self.greedy(openai_messages(case["messages"]), len(want))
            self.assertEqual(token_ids(r), want, case["name"])
            self.assertEqual(r.usage.prompt_tokens, len(case["input_ids"]), case["name"])

    def test_bad_images_are_400s_and_the_server_goes_on(self):
        good = data_url("small.png")
        with open(os.path.join(VISION, "images", "big.png"), "rb") as f:
            png = f.read()
        truncated = "data:image/png;base64," + base64.b64encode(png[: len(png) // 2]).decode()
        for url, says in [(truncated, "not a readable image"), ("data:image/png;base64,bm90IGFuIGltYWdl", "not a PNG"),
                          ("data:image/png,raw", "not base64"), ("ftp://example.com/a.png", "data: or http(s)")]:
            msgs = [{"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image_url", "image_url": {"url": url}}]}]
            with self.assertRaises(openai.BadRequestError) as e:
                self.greedy(msgs, 2)
            message = e.exception.body["message"]
            self.assertIn("messages[0].content[1]", message)
            self.assertIn(says, message)
        msgs = [{"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image_url", "image_url": {"url": good}}]}]
        self.assertEqual(len(token_ids(self.greedy(msgs, 3))), 3)


class VisionFromGguf(Vision):
    """The Mistral 3 checkpoint as llama.cpp's converter writes it: a GGUF
    text model (arch `mistral3`) and an F32 mmproj (`--mmproj`)."""
    MODEL = "mistral3"
    ARGS = ["--model", os.path.join(VISION, "mistral3", "gguf", "model.gguf"),
            "--mmproj", os.path.join(VISION, "mistral3", "gguf", "mmproj-f32.gguf"),
            # Its template's default system prompt is long (messages without one).
            "--context", "4096"]


class TextOnlyModel(unittest.TestCase):
    def test_an_image_for_a_text_model_is_a_400_naming_the_part(self):
        server = Server("--model", os.path.join(FIX, "llama_tiny"), "--served-model-name", "llama_tiny")
        try:
            client = server.client()
            msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": data_url("small.png")}}]}]
            with self.assertRaises(openai.BadRequestError) as e:
                client.chat.completions.create(model="llama_tiny", messages=msgs, max_tokens=2)
            self.assertIn("messages[0].content[1]", e.exception.body["message"])
            self.assertIn("takes no images", e.exception.body["message"])
            r = client.chat.completions.create(model="llama_tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            self.assertEqual(len(token_ids(r)), 2)
        finally:
            assert server.stop() == 0


if __name__ == "__main__":
    unittest.main()
