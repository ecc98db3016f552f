"""Structured output through `tramontane serve`, with the official `openai`
client on the default model (SmolLM2-135M-Instruct Q4_1): `response_format`
json_schema (schemas of tests/fixtures/structured/schemas.json, greedy,
sampled, streamed; the native suite runs every one) and json_object,
`chat.completions.parse` with Pydantic models, forced tool calls, our
`regex` / `grammar` extensions, and bad schemas answered with 400s while the
server keeps answering. Every output is checked by the `jsonschema` package
(formats too)."""

import json
import os
import unittest
from typing import List, Literal, Optional

import jsonschema
import openai
import pydantic

from test_openai_client import FIX, SMOLLM2, Server


def cases():
    with open(os.path.join(FIX, "structured", "schemas.json")) as f:
        return json.load(f)["cases"]


def check(testcase, schema, text, what):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        testcase.fail(f"{what}: not JSON ({e}): {text!r}")
    errors = list(jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).iter_errors(value))
    testcase.assertEqual(errors, [], f"{what}: {text}")
    return value


def schema_format(name, schema):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class Author(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=40)
    born: Optional[int] = None


class Book(pydantic.BaseModel):
    title: str = pydantic.Field(max_length=60)
    author: Author
    year: int
    genre: Literal["fiction", "science", "history"]
    tags: List[str] = pydantic.Field(max_length=3)


class Structured(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert os.path.exists(SMOLLM2), "the default model (scripts/setup.sh fetches it)"
        cls.server = Server("--model", SMOLLM2, "--served-model-name", "smollm2")
        cls.client = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0

    def chat(self, content, **kw):
        kw.setdefault("max_tokens", 200)
        return self.client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": content}], **kw)

    # The schema compiler is the core crate's: every schema of schemas.json,
    # greedy or seeded in turn, is checked natively on this model (suite
    # structured.rs). Here, what `serve` adds: response_format read from the
    # request, greedy, seeded and streamed, on a few schemas of different kinds.
    GREEDY = ("person", "recursive_ref", "patterns_formats")
    SAMPLED = ("union_const",)
    STREAMED = ("nullable",)

    def test_schemas_greedy_sampled_and_streamed(self):
        by_name = {c["name"]: c for c in cases()}
        for name in self.GREEDY + self.SAMPLED + self.STREAMED:
            case = by_name[name]
            fmt = schema_format(name, case["schema"])
            if name in self.GREEDY:
                r = self.chat(case["prompt"], temperature=0, response_format=fmt)
                self.assertEqual(r.choices[0].finish_reason, "stop", name)
                check(self, case["schema"], r.choices[0].message.content, name + " greedy")
                self.assertGreater(r.usage.model_extra["extra"]["constraint"]["masks"], 0)
            elif name in self.SAMPLED:
                r = self.chat(case["prompt"], temperature=0.8, seed=100, response_format=fmt)
                check(self, case["schema"], r.choices[0].message.content, name + " sampled")
            else:
                chunks = list(self.chat(case["prompt"], temperature=0.7, top_p=0.9, seed=2, response_format=fmt, stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], "stop")
                check(self, case["schema"], text, name + " streamed")

    def test_json_object_mode(self):
        for seed in (None, 4):
            kw = {"temperature": 0} if seed is None else {"temperature": 0.9, "seed": seed}
            r = self.chat("Describe a city as JSON.", response_format={"type": "json_object"}, **kw)
            self.assertIsInstance(json.loads(r.choices[0].message.content), dict)

    def test_parse_with_pydantic_models(self):
        r = self.client.chat.completions.parse(
            model="smollm2", messages=[{"role": "user", "content": "Dune, by Frank Herbert (born 1920), 1965 science fiction."}],
            response_format=Book, max_tokens=200, temperature=0)
        book = r.choices[0].message.parsed
        self.assertIsInstance(book, Book)
        self.assertIn(book.genre, ("fiction", "science", "history"))
        check(self, Book.model_json_schema(), r.choices[0].message.content, "Book")

    def test_forced_tool_calls(self):
        weather = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": False}}}
        time_ = {"type": "function", "function": {"name": "get_time", "description": "Time in a time zone",
                 "parameters": {"type": "object", "properties": {"tz": {"type": "string", "pattern": "^[A-Z]{3}$"}}, "required": ["tz"]}}}
        tools = [weather, time_]
        params = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
        for choice, want in [("required", None), ({"type": "function", "function": {"name": "get_time"}}, "get_time")]:
            for stream in (False, True):
                kw = dict(tools=tools, tool_choice=choice, temperature=0, max_tokens=120)
                if not stream:
                    r = self.chat("What is the weather in Paris?", **kw)
                    self.assertEqual(r.choices[0].finish_reason, "tool_calls")
                    calls = r.choices[0].message.tool_calls
                else:
                    chunks = list(self.chat("What is the weather in Paris?", stream=True, **kw))
                    self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], "tool_calls")
                    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
                self.assertGreaterEqual(len(calls), 1, f"{choice} stream={stream}")
                for call in calls:
                    if want:
                        self.assertEqual(call.function.name, want)
                    check(self, params[call.function.name], call.function.arguments, f"{call.function.name} arguments")
        # `auto`: free text or a call; a call is valid.
        r = self.chat("What is the weather in Paris?", tools=tools, temperature=0, max_tokens=80)
        for call in r.choices[0].message.tool_calls or []:
            check(self, params[call.function.name], call.function.arguments, "auto call")

    def test_regex_and_grammar_extensions(self):
        r = self.chat("When did Apollo 11 land?", temperature=0, max_tokens=20, extra_body={"regex": "[0-9]{4}-[0-9]{2}-[0-9]{2}"})
        text = r.choices[0].message.content
        self.assertRegex(text, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
        grammar = 'start: ("yes" | "no") ", because " /[a-z ]{1,30}/ "."\n'
        r = self.chat("Is water wet?", temperature=0, max_tokens=30, extra_body={"grammar": grammar})
        self.assertRegex(r.choices[0].message.content, r"^(yes|no), because [a-z ]{1,30}\.$")

    def test_bad_constraints_are_400s_and_the_server_keeps_answering(self):
        bad = [
            ({"response_format": schema_format("x", {"type": "strin"})}, "strin"),
            ({"response_format": schema_format("x", {"type": "string", "pattern": "(unclosed"})}, "unclosed"),
            ({"response_format": schema_format("x", {"$ref": "#/$defs/nowhere"})}, "nowhere"),
            ({"response_format": {"type": "json_schema"}}, "json_schema"),
            ({"response_format": {"type": "yaml"}}, "response_format"),
            ({"response_format": schema_format("bad name!", {"type": "object"})}, "name"),
            ({"extra_body": {"grammar": 'root ::= "yes" | "no"'}}, "GBNF"),
            ({"extra_body": {"grammar": "start: missing_rule"}}, "missing_rule"),
            ({"extra_body": {"regex": "a{3,1}"}}, "regex"),
            ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}],
              "tool_choice": "required"}, "nope"),
        ]
        for stream in (False, True):
            for kw, words in bad:
                with self.assertRaises(openai.BadRequestError, msg=str(kw)) as e:
                    r = self.chat("Hi", max_tokens=5, stream=stream, **kw)
                    if stream:
                        list(r)
                self.assertEqual(e.exception.status_code, 400, str(kw))
                self.assertIn(words, e.exception.message, str(kw))
        r = self.chat("Give a person as JSON.", temperature=0, max_tokens=60,
                      response_format=schema_format("p", {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}, "required": ["name"]}))
        self.assertIn("name", json.loads(r.choices[0].message.content))


if __name__ == "__main__":
    unittest.main()
