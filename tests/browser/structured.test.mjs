// Structured output in headless Chromium (WebGPU on SwiftShader), with the
// default model: `response_format` json_schema (schemas of
// tests/fixtures/structured/schemas.json, greedy and seeded) and json_object,
// `chat.completions.parse`, forced tool calls, the `regex` and `grammar`
// extensions, errors that leave the engine usable, WorkerEngine, and
// RemoteEngine sending the fields on. Every output is checked here, in Node,
// by a real validator (ajv, JSON Schema 2020-12 with formats).
import { test as nodeTest, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { startServer } from '../../scripts/server.mjs';
import { launch, openPage, runInPage, testQueue } from './browser.mjs';

const { test, register } = testQueue(nodeTest);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CASES = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests/fixtures/structured/schemas.json'), 'utf8')).cases;
const MODEL = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
let server, browser;

before(async () => {
  server = await startServer({ root: ROOT });
  browser = await launch();
});
after(async () => { await browser?.close(); await server?.close(); });

const page = () => openPage(browser, server.url + 'tests/browser/blank.html');

function validate(schema, text, what) {
  let value;
  try { value = JSON.parse(text); } catch (e) { assert.fail(`${what}: not JSON (${e.message}): ${text}`); }
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const ok = ajv.validate(schema, value);
  assert.ok(ok, `${what}: ${text}\n${JSON.stringify(ajv.errors)}`);
  return value;
}

const format = (name, schema) => ({ type: 'json_schema', json_schema: { name, schema, strict: true } });

test('every schema family gives valid JSON, greedy and seeded, streamed or not', { timeout: 600000 }, async () => {
  const p = await page();
  const picked = ['person', 'union_const', 'nullable', 'recursive_ref', 'patterns_formats', 'nested_items', 'pydantic_style'];
  const cases = CASES.filter((c) => picked.includes(c.name));
  const got = await runInPage(p, async (T, a) => {
    const e = await T.Engine.load(a.model, { useCache: false });
    const out = [];
    for (const [i, c] of a.cases.entries()) {
      const response_format = { type: 'json_schema', json_schema: { name: c.name, schema: c.schema } };
      const messages = [{ role: 'user', content: c.prompt }];
      const r = await e.chat.completions.create({ messages, response_format, temperature: 0, max_tokens: 160 });
      out.push({ name: c.name, how: 'greedy', text: r.choices[0].message.content, finish: r.choices[0].finish_reason, extra: r.usage.extra.constraint });
      if (i % 2 === 0) {
        let text = '', finish = null;
        for await (const ch of e.chat.completions.create({ messages, response_format, temperature: 0.8, seed: 7 + i, max_tokens: 160, stream: true })) {
          text += ch.choices[0]?.delta?.content ?? '';
          finish = ch.choices[0]?.finish_reason ?? finish;
        }
        out.push({ name: c.name, how: 'seeded, streamed', text, finish });
      }
    }
    return out;
  }, { model: MODEL, cases });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  for (const r of got) {
    const c = cases.find((x) => x.name === r.name);
    assert.equal(r.finish, 'stop', `${r.name} (${r.how}): ${r.text}`);
    validate(c.schema, r.text, `${r.name} (${r.how})`);
    if (r.extra) assert.ok(r.extra.masks > 0 && r.extra.mask_ms_per_token >= 0, JSON.stringify(r.extra));
  }
  await p.context().close();
});

test('json_object, parse, regex, grammar, forced tool calls; bad schemas are INVALID_REQUEST', { timeout: 600000 }, async () => {
  const p = await page();
  const weather = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 30 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false } } };
  const time = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'string', pattern: '^[A-Z]{3}$' } }, required: ['tz'] } } };
  const book = { type: 'object', properties: { title: { type: 'string', maxLength: 40 }, year: { type: 'integer', minimum: 0, maximum: 2100 } }, required: ['title', 'year'], additionalProperties: false };
  const got = await runInPage(p, async (T, a) => {
    const e = await T.Engine.load(a.model, { useCache: false });
    const ask = (content, extra) => e.chat.completions.create({ messages: [{ role: 'user', content }], temperature: 0, max_tokens: 80, ...extra });
    const out = {};
    out.object = (await ask('Describe a dog as JSON.', { response_format: { type: 'json_object' } })).choices[0].message.content;
    const parsed = await e.chat.completions.parse({ messages: [{ role: 'user', content: 'Dune, 1965.' }], temperature: 0, max_tokens: 60,
      response_format: { type: 'json_schema', json_schema: { name: 'book', schema: a.book } } });
    out.parsed = { content: parsed.choices[0].message.content, parsed: parsed.choices[0].message.parsed };
    out.regex = (await ask('When did Apollo 11 land?', { regex: '[0-9]{4}-[0-9]{2}-[0-9]{2}' })).choices[0].message.content;
    out.grammar = (await ask('Is water wet?', { response_format: { type: 'grammar', grammar: 'start: ("yes" | "no") ", because " /[a-z ]{1,30}/ "."\n' } })).choices[0].message.content;
    const required = await ask('What is the weather in Paris?', { tools: a.tools, tool_choice: 'required' });
    out.required = { finish: required.choices[0].finish_reason, calls: required.choices[0].message.tool_calls };
    const named = await ask('What is the weather in Paris?', { tools: a.tools, tool_choice: { type: 'function', function: { name: 'get_time' } } });
    out.named = { finish: named.choices[0].finish_reason, calls: named.choices[0].message.tool_calls };
    out.errors = [];
    for (const bad of [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'strin' } } } },
      { grammar: 'root ::= "a"' }, { response_format: { type: 'yaml' } }, { regex: 'a{3,1}' }]) {
      try { await ask('Hi', bad); out.errors.push('no error'); } catch (x) { out.errors.push({ code: x.code, message: x.message }); }
    }
    out.after = (await ask('Describe a dog as JSON.', { response_format: { type: 'json_object' } })).choices[0].message.content;
    return out;
  }, { model: MODEL, tools: [weather, time], book });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  assert.equal(typeof JSON.parse(got.object), 'object');
  validate(book, got.parsed.content, 'parse');
  assert.deepEqual(got.parsed.parsed, JSON.parse(got.parsed.content));
  assert.match(got.regex, /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/);
  assert.match(got.grammar, /^(yes|no), because [a-z ]{1,30}\.$/);
  const params = { get_weather: weather.function.parameters, get_time: time.function.parameters };
  for (const [what, r, name] of [['required', got.required, null], ['named', got.named, 'get_time']]) {
    assert.equal(r.finish, 'tool_calls', what);
    assert.ok(r.calls.length >= 1, what);
    for (const c of r.calls) {
      if (name) assert.equal(c.function.name, name);
      validate(params[c.function.name], c.function.arguments, `${what}: ${c.function.name}`);
    }
  }
  for (const [i, e] of got.errors.entries()) {
    assert.equal(e.code, 'INVALID_REQUEST', `bad request ${i}: ${JSON.stringify(e)}`);
  }
  assert.match(got.errors[0].message, /strin/);
  assert.match(got.errors[1].message, /GBNF/);
  assert.equal(got.after, got.object, 'the errors changed nothing');
  await p.context().close();
});

test('WorkerEngine constrains too; RemoteEngine sends the fields on and parses replies', { timeout: 300000 }, async () => {
  const p = await page();
  const schema = { type: 'object', properties: { city: { type: 'string', maxLength: 30 } }, required: ['city'], additionalProperties: false };
  const got = await runInPage(p, async (T, a) => {
    const w = await T.WorkerEngine.load(a.model, { useCache: false });
    const worker = await w.chat.completions.parse({ messages: [{ role: 'user', content: 'Where is the Eiffel Tower?' }], temperature: 0, max_tokens: 40,
      response_format: { type: 'json_schema', json_schema: { name: 'place', schema: a.schema } } });
    w.terminate();
    // A server stand-in: records what RemoteEngine sends.
    const sent = [];
    const fetch = async (url, init) => {
      if (url.endsWith('/models')) return new Response(JSON.stringify({ data: [{ id: 'm' }] }), { status: 200 });
      sent.push(JSON.parse(init.body));
      return new Response(JSON.stringify({ id: 'x', object: 'chat.completion', created: 0, model: 'm',
        choices: [{ index: 0, message: { role: 'assistant', content: '{"city": "Paris"}' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }), { status: 200 });
    };
    const r = await T.RemoteEngine.connect('http://server.invalid', { fetch });
    const remote = await r.chat.completions.parse({ messages: [{ role: 'user', content: 'Hi' }], response_format: { type: 'json_schema', json_schema: { name: 'place', schema: a.schema } },
      tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required', parallel_tool_calls: false });
    await r.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], regex: 'a+', grammar: undefined });
    return { worker: { content: worker.choices[0].message.content, parsed: worker.choices[0].message.parsed }, sent, remoteParsed: remote.choices[0].message.parsed };
  }, { model: MODEL, schema });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  validate(schema, got.worker.content, 'worker');
  assert.deepEqual(got.worker.parsed, JSON.parse(got.worker.content));
  assert.deepEqual(got.sent[0].response_format, { type: 'json_schema', json_schema: { name: 'place', schema } });
  assert.equal(got.sent[0].tool_choice, 'required');
  assert.equal(got.sent[0].parallel_tool_calls, false);
  assert.equal(got.sent[1].regex, 'a+');
  assert.deepEqual(got.remoteParsed, { city: 'Paris' });
  await p.context().close();
});

register();
