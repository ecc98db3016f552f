// Type-checked (tsc --strict --noEmit) against the packed package's index.d.ts
// by tests/browser/bundlers.test.mjs: what an app writes with the package's
// types compiles, and what they forbid does not (each @ts-expect-error line
// must be an error, or tsc fails). Never run.
import {
  Engine, WorkerEngine, RemoteEngine, createEngine, TramontaneError, resolveSource, modelHeaders,
  type ChatMessage, type ChatCompletion, type ChatCompletionChunk, type EngineInfo, type DeviceProfile, type ErrorCode,
} from 'tramontane';

/** Messages are told apart by role. */
export function describe(m: ChatMessage): string {
  switch (m.role) {
    case 'assistant':
      return m.tool_calls?.map((c) => `${c.function.name}(${c.function.arguments})`).join(', ') ?? String(m.content);
    case 'tool':
      return `${m.tool_call_id ?? '?'}: ${typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('')}`;
    default:
      // system, developer, user: content is never null here; a user's parts
      // may be images.
      return typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p.text : '[image]')).join('');
  }
}

export async function app(): Promise<void> {
  const engine = await Engine.load('HuggingFaceTB/SmolLM2-135M-Instruct', {
    kernels: 'gpu',
    wasmUrl: new URL('/tramontane_web_bg.wasm', 'https://example.com'),
    onProgress: (p) => console.log(p.phase, p.file),
  });
  const info: EngineInfo | null = engine.info;
  const profile: DeviceProfile | undefined = info?.deviceProfile;
  const shapes: 'gpu' | 'cpu' | undefined = profile?.shapes;
  const fallbacks: string[] = info?.selfTest.fallbacks ?? [];
  console.log(shapes, fallbacks.length, info?.selfTest.millis);

  const messages: ChatMessage[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [{ type: 'text', text: 'Weather in Paris?' }] },
    { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'c1', content: '{"temp":21}' },
  ];
  const reply: ChatCompletion = await engine.chat.completions.create({ messages, max_tokens: 32, temperature: 0 });
  console.log(reply.choices[0].message.content, reply.choices[0].finish_reason);
  const chunks: AsyncIterable<ChatCompletionChunk> = engine.chat.completions.create({ messages, stream: true });
  for await (const c of chunks) console.log(c.choices[0].delta.content ?? '');
  const parsed = await engine.chat.completions.parse<{ city: string }>({
    messages, response_format: { type: 'json_schema', json_schema: { name: 'city', schema: { type: 'object' } } },
  });
  console.log(parsed.choices[0].message.parsed?.city);
  // Images: OpenAI's image_url parts and this package's picture objects.
  const seen = await engine.chat.completions.create({ messages: [{ role: 'user', content: [
    { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
    { type: 'image', image: new Blob([]) },
    { type: 'text', text: 'Compare them.' },
  ] }] });
  console.log(seen.choices[0].message.content, info?.vision?.maxImageTokens ?? 0);
  const pixtral = await Engine.load('org/pixtral-GGUF', { ggufFile: 'pixtral-Q4_K_M.gguf', mmproj: 'mmproj-pixtral-f16.gguf' });
  const timing = await pixtral.timeImage(new Blob([]));
  console.log(timing.encodeSeconds, timing.resized[0], timing.imageTokens);
  const done = await engine.completions.create({ prompt: [1, 2, 3], max_tokens: 4 });
  console.log(done.choices[0].text);

  const worker = await WorkerEngine.load('https://example.com/model.gguf');
  worker.terminate();
  const remote = await RemoteEngine.connect('http://127.0.0.1:8080/v1', { apiKey: 'k' });
  console.log(remote.info);
  const chosen = await createEngine('org/model');
  console.log(chosen.kind === 'local' ? chosen.reason : chosen.reason);
  console.log(resolveSource('org/model').base, modelHeaders({ hfToken: 't' }));

  try {
    await Engine.load('org/model');
  } catch (e) {
    if (e instanceof TramontaneError) {
      const code: ErrorCode = e.code;
      if (code === 'WASM_LOAD' || code === 'NETWORK') console.log(e.url, e.status);
    }
  }

  // @ts-expect-error a tool result's content is text, not a number
  const badTool: ChatMessage = { role: 'tool', content: 1 };
  // @ts-expect-error only the assistant's content may be null
  const badUser: ChatMessage = { role: 'user', content: null };
  // @ts-expect-error kernels is auto, gpu or cpu
  await Engine.load('org/model', { kernels: 'fast' });
  // @ts-expect-error no such error code
  const badCode: ErrorCode = 'OOPS';
  console.log(badTool, badUser, badCode);
}
