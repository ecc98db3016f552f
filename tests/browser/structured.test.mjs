// Structured output in headless Chromium (WebGPU on SwiftShader):
// `response_format` json_schema (schemas of
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

// SwiftShader runs SmolLM2 at about a token a second here: the default
// model gets a few short answers (the whole schema suite runs natively and
// behind `serve`); the tiny Llama (random weights, SmolLM2's tokenizer: the
// constraint, not the model, makes the output valid) takes the rest.
const weather = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false } } };
const time = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'string', pattern: '^[A-Z]{3}$' } }, required: ['tz'], additionalProperties: false } } };
const params = { get_weather: weather.function.parameters, get_time: time.function.parameters };

function checkCalls(what, r, name) {
  assert.equal(r.finish, 'tool_calls', what);
  assert.equal(r.calls.length, 1, what);
  if (name) assert.equal(r.calls[0].function.name, name);
  validate(params[r.calls[0].function.name], r.calls[0].function.arguments, `${what}: ${r.calls[0].function.name}`);
}

test('SmolLM2: a schema', { timeout: 400000 }, async () => {
  const p = await page();
  const c = CASES.find((x) => x.name === 'union_const');
  const got = await runInPage(p, async (T, a) => {
    const e = await T.Engine.load(a.model, { useCache: false });
    // A short system message: shorter prompts (SwiftShader prefills slowly).
    const messages = [{ role: 'system', content: 'Answer in JSON.' }, { role: 'user', content: a.prompt }];
    const response_format = { type: 'json_schema', json_schema: { name: 'shape', schema: a.schema } };
    const r = await e.chat.completions.create({ messages, response_format, temperature: 0, max_tokens: 40 });
    return { runs: [{ how: 'greedy', text: r.choices[0].message.content, finish: r.choices[0].finish_reason, extra: r.usage.extra.constraint }] };
  }, { model: MODEL, prompt: c.prompt, schema: c.schema });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  for (const r of got.runs) {
    assert.equal(r.finish, 'stop', `${r.how}: ${r.text}`);
    validate(c.schema, r.text, `union_const (${r.how})`);
    if (r.extra) assert.ok(r.extra.masks > 0 && r.extra.mask_ms_per_token >= 0 && !r.extra.cached, JSON.stringify(r.extra));
  }
  await p.context().close();
});

test('json_object, parse, forced calls, regex, grammar, seeded schemas; bad ones are INVALID_REQUEST (tiny Llama)', { timeout: 300000 }, async () => {
  const p = await page();
  const person = CASES.find((c) => c.name === 'person').schema;
  const book = { type: 'object', properties: { title: { type: 'string', maxLength: 20 }, year: { type: 'integer', minimum: 0, maximum: 2100 } }, required: ['title', 'year'], additionalProperties: false };
  const got = await runInPage(p, async (T, a) => {
    const e = await T.Engine.load('/tests/fixtures/llama_tiny/', { useCache: false });
    const ask = (extra) => e.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], temperature: 0, max_tokens: 40, ...extra });
    const out = {};
    out.object = (await ask({ response_format: { type: 'json_object' } })).choices[0];
    out.person = [];
    for (const seed of [1, 2, 3]) {
      // Seeded, streamed: the pieces add up to valid JSON.
      let text = '', finish = null;
      for await (const ch of e.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], temperature: 1, seed, max_tokens: 80, stream: true,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: a.person } } })) {
        text += ch.choices[0]?.delta?.content ?? '';
        finish = ch.choices[0]?.finish_reason ?? finish;
      }
      out.person.push({ text, finish });
    }
    const parsed = await e.chat.completions.parse({ messages: [{ role: 'user', content: 'Dune, 1965.' }], temperature: 0, max_tokens: 40,
      response_format: { type: 'json_schema', json_schema: { name: 'book', schema: a.book } } });
    out.parsed = { content: parsed.choices[0].message.content, parsed: parsed.choices[0].message.parsed };
    const required = await ask({ tools: a.tools, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 60 });
    out.required = { finish: required.choices[0].finish_reason, calls: required.choices[0].message.tool_calls };
    const named = await ask({ tools: a.tools, tool_choice: { type: 'function', function: { name: 'get_time' } }, max_tokens: 80 });
    out.named = { finish: named.choices[0].finish_reason, calls: named.choices[0].message.tool_calls };
    out.regex = (await ask({ regex: '[0-9]{4}-[0-9]{2}-[0-9]{2}' })).choices[0].message.content;
    out.grammar = (await ask({ response_format: { type: 'grammar', grammar: 'start: ("yes" | "no") ", because " /[a-z ]{1,30}/ "."\n' } })).choices[0].message.content;
    out.errors = [];
    for (const bad of [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'strin' } } } },
      { grammar: 'root ::= "a"' }, { response_format: { type: 'yaml' } }, { regex: 'a{3,1}' }, { tool_choice: 'required' }]) {
      try { await ask(bad); out.errors.push('no error'); } catch (x) { out.errors.push({ code: x.code, message: x.message }); }
    }
    out.after = (await ask({ regex: '[0-9]{4}-[0-9]{2}-[0-9]{2}' })).choices[0].message.content;
    return out;
  }, { person, book, tools: [weather, time] });
  assert.ok(!got.thrown, JSON.stringify(got.thrown));
  validate(book, got.parsed.content, 'parse');
  assert.deepEqual(got.parsed.parsed, JSON.parse(got.parsed.content));
  checkCalls('required', got.required, null);
  checkCalls('named', got.named, 'get_time');
  assert.equal(got.object.finish_reason, 'stop', got.object.message.content);
  assert.equal(typeof JSON.parse(got.object.message.content), 'object');
  for (const [i, r] of got.person.entries()) {
    assert.equal(r.finish, 'stop', r.text);
    validate(person, r.text, `person, seed ${i + 1}`);
  }
  assert.match(got.regex, /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/);
  assert.match(got.grammar, /^(yes|no), because [a-z ]{1,30}\.$/);
  for (const [i, e] of got.errors.entries()) {
    assert.equal(e.code, 'INVALID_REQUEST', `bad request ${i}: ${JSON.stringify(e)}`);
  }
  assert.match(got.errors[0].message, /strin/);
  assert.match(got.errors[1].message, /GBNF/);
  assert.equal(got.after, got.regex, 'the errors changed nothing');
  await p.context().close();
});

test('WorkerEngine constrains too; RemoteEngine sends the fields on and parses replies', { timeout: 300000 }, async () => {
  const p = await page();
  const schema = { type: 'object', properties: { city: { type: 'string', maxLength: 20 } }, required: ['city'], additionalProperties: false };
  const got = await runInPage(p, async (T, a) => {
    const w = await T.WorkerEngine.load(a.model, { useCache: false });
    const worker = await w.chat.completions.parse({ messages: [{ role: 'system', content: 'Answer in JSON.' }, { role: 'user', content: 'Where is the Eiffel Tower?' }], temperature: 0, max_tokens: 24,
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
