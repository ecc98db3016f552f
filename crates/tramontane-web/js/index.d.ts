// Types of the tramontane npm package (js/index.js).

export type ErrorCode =
  | 'WEBGPU_UNAVAILABLE' | 'MODEL_FORMAT' | 'UNSUPPORTED' | 'NETWORK' | 'WASM_LOAD' | 'ABORTED'
  | 'CONTEXT_OVERFLOW' | 'DEVICE_LOST' | 'OUT_OF_MEMORY' | 'QUOTA' | 'INVALID_REQUEST'
  | 'GPU' | 'INTERNAL';

export class TramontaneError extends Error {
  code: ErrorCode;
  /** NETWORK, WASM_LOAD: the URL that failed and its HTTP status (0 when there was no response). */
  url?: string;
  status?: number;
  /** INVALID_REQUEST: the request field at fault, where one is. */
  param?: string;
}

export interface LoadProgress {
  phase: 'download' | 'upload' | 'compile' | 'ready' | 'cache';
  /** download: the file and its bytes */
  file?: string;
  fileLoaded?: number;
  fileTotal?: number;
  /** download: all files opened so far */
  downloaded?: number;
  downloadTotal?: number;
  /** upload: weight bytes on the GPU so far, of all */
  loaded?: number;
  total?: number;
  /** cache: why the model was not cached (code QUOTA for a full quota, else NOT_CACHED) */
  warning?: string;
  code?: 'QUOTA' | 'NOT_CACHED';
}

export interface LoadOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** Keep downloaded files in the Cache API (default true). */
  useCache?: boolean;
  /** Files larger than this are cached in parts of this many bytes (default
   * 32 MiB; 64 KiB to 2 GiB): a multi-GB file is no single entry. */
  cachePartBytes?: number;
  /** Where files over `cachePartBytes` are cached: `auto` (default: one OPFS
   * file where it can be written synchronously, in a worker such as
   * WorkerEngine's; Cache API parts elsewhere), `opfs` (one OPFS file wherever
   * the browser can write one) or `cacheApi` (Cache API parts always). */
  cacheStore?: 'auto' | 'opfs' | 'cacheApi';
  /** Context window in tokens (default: the model's, at most 4096). */
  contextLength?: number;
  /** Files downloaded at once (default 4). */
  parallelDownloads?: number;
  /** Tokens per prefill pass (default 64). */
  prefillChunk?: number;
  /** Most bytes one weight buffer may hold (default: the device's
   * maxStorageBufferBindingSize). Larger matrices are split into slabs by
   * output row; set it to behave like a device with smaller limits. */
  maxBindingSize?: number;
  /** GPU memory the model may take in all: weights, KV cache and activations.
   * A model that needs more fails with OUT_OF_MEMORY before any weight is
   * downloaded, or once they are in where the self-test falls back to a
   * larger f32 KV cache (default: no limit of ours; the device's own applies). */
  maxGpuBytes?: number;
  /** KV cache element type: "auto" (default: f16 for quantized models when the
   * adapter has shader-f16, else f32), "f16" (needs shader-f16) or "f32". */
  kvCache?: 'auto' | 'f16' | 'f32';
  /** Kernel shapes: "auto" (default: CPU-shaped on a CPU rasterizer behind
   * WebGPU such as SwiftShader, GPU-shaped otherwise), or "gpu" / "cpu" to
   * choose (a misdetected adapter; comparing the two). */
  kernels?: 'auto' | 'gpu' | 'cpu';
  /** Hugging Face repo ids: the revision (default "main") and which GGUF file to load. */
  revision?: string;
  ggufFile?: string;
  /** A GGUF model's image side (Pixtral 12B, Mistral Small 3.x): llama.cpp's
   * mmproj GGUF, as a file name in the repo or a URL in the model's folder
   * (relative URLs: to the model's URL). */
  mmproj?: string;
  hfEndpoint?: string;
  /** A Hugging Face access token for gated or private repos (mistralai/*,
   * meta-llama/*): sent as `Authorization: Bearer <token>` only to the model's
   * host (the origin of its URL; browsers drop it when a file redirects to
   * another host, such as Hugging Face's CDN). Never cached or put in errors. */
  hfToken?: string;
  /** Headers sent with every request to the model's host (and only there).
   * Browsers keep custom headers other than Authorization across redirects:
   * put credentials in `hfToken` or `Authorization`. */
  headers?: Record<string, string> | Headers | [string, string][];
  /** Where the .wasm is, if not next to index.js (relative URLs: to the page).
   * Needed where a bundler copies index.js without the .wasm, e.g. Vite's
   * dev server when it pre-bundles the package:
   * `import wasmUrl from 'tramontane/wasm/tramontane_web_bg.wasm?url'`.
   * A URL that does not give the module is a WASM_LOAD error naming it; a
   * later load may pass a corrected one. */
  wasmUrl?: string | URL;
  /** A Jinja chat template used instead of the model's own. */
  chatTemplate?: string;
  /** The opening of the conversations to come (a system prompt, the tools
   * offered, a few turns ending before a user's), run into the KV cache as
   * the load ends and not waited for: the first request that opens the same
   * way prefills only its own turn (`usage.prompt_tokens_details.cached_tokens`).
   * `{}`: the template's own opening (its default system prompt). Its
   * fields are checked before the download (INVALID_REQUEST, `param:
   * 'prefill.…'`). It only saves time: an opening the model's template
   * refuses, or one that leaves no room in the context, prefills nothing
   * and `info.prefillError` says why; a model with no chat template that
   * works prefills nothing (`chatTemplateError`, `hasChatTemplate` say
   * why). A `createEngine` that falls back to a server ignores it. */
  prefill?: Pick<ChatRequest, 'tools' | 'tool_choice' | 'documents' | 'chat_template_kwargs'> & { messages?: ChatMessage[] };
}

/** Sampling settings the model recommends (generation_config.json, GGUF
 * general.sampling.*); requests that leave a setting out use these. */
export interface GenerationDefaults { temperature: number | null; top_p: number | null; top_k: number | null; min_p: number | null; repetition_penalty: number | null }

/** Every kernel-shape choice of a load (crates/tramontane/src/gpu/profile.rs). */
export interface DeviceProfile {
  shapes: 'gpu' | 'cpu';
  decodeMatvec: 'shared_outputs' | 'whole_outputs';
  prefillMatmul: 'tiles' | 'rows';
  attention: 'tiled' | 'barrier_free';
  normInMatvec: boolean;
  ropeInMatvec: boolean;
  weights: 'buffer' | 'texture';
  prefillInputs: 'buffer' | 'texture';
  /** Subgroup lanes reductions sum over; 1: none. */
  lanes: number;
  moeTile: number;
}

export interface EngineInfo {
  source: string;
  arch: string;
  dtype: string;
  weightBytes: number;
  gpuBytes: number;
  /** GPU bytes by kind (what `gpuBytes` is made of). */
  gpuMemory: { weights: number; kvCache: number; activations: number; scratch: number };
  /** Size of the wasm linear memory after the load: its peak (it only grows). */
  wasmMemoryBytes: number;
  contextLength: number;
  vocabSize: number;
  layers: number;
  experts: number | null;
  slidingWindow: number | null;
  loadSeconds: number;
  /** Weight matrices split into slabs to fit the binding limit. */
  splitMatrices: number;
  /** What the KV cache holds. */
  kvCache: 'f16' | 'f32';
  /** Tokens of the `prefill` option's opening run into the KV cache (0: none). */
  prefilledTokens: number;
  /** Why the `prefill` option's opening was not run (its code, then the
   * message: the template refused it, the context is too short), else null. */
  prefillError: string | null;
  /** The kernel shapes this device got (the `kernels` load option and the adapter). */
  deviceProfile: DeviceProfile;
  /** The adapter self-test, run beside the weights' download. */
  selfTest: {
    /** Kernels run and compared with the CPU. */
    kernels: number;
    /** Its time (0 where an earlier load on this device ran the same test). */
    millis: number;
    /** Of which creating the model's pipelines, which the model then uses
     * (browsers compile them at the first dispatch: there it shows in the
     * checks). */
    pipelineMillis: number;
    /** What gave wrong values and what was used instead; empty when all passed. */
    fallbacks: string[];
  };
  /** Where `loadSeconds` went, in seconds: before the first weight byte is
   * asked for (config, tokenizer, tables, sizes); the adapter self-test,
   * which runs beside the download (so it overlaps `read`); waiting for the
   * weights' bytes (network, cache); placing them (repacking, writes to the
   * GPU); the forward pass's pipelines. */
  loadPhases: { prepare: number; selfTest: number; read: number; upload: number; pipelines: number };
  /** An image model's image side: images are resized to fit `longestEdge`
   * (the processor's `processorLongestEdge`, or less on a device that cannot
   * bind the encoder's buffers for that: larger images are then processed
   * smaller than transformers would); the largest takes `maxImageTokens`
   * prompt tokens (`maxPatches` patches); GPU bytes of its weights and of its
   * buffers. null: no images. */
  vision: { longestEdge: number; processorLongestEdge: number; maxImageTokens: number; maxPatches: number; weightBytes: number; bufferBytes: number } | null;
  hasChatTemplate: boolean;
  /** Why the model's template cannot be used (it does not compile); chat fails, completions work. */
  chatTemplateError: string | null;
  /** How the model writes tool calls (read off its template). */
  toolFormat: 'mistral' | 'hermes' | 'llama3' | null;
  generationDefaults: GenerationDefaults;
  /** BOS/EOS ids, and whether text prompts get them (the tokenizer's own rule). */
  bos: number | null;
  eos: number[];
  addBos: boolean;
  addEos: boolean;
  tokenizerWarnings: string[];
  adapter: { name: string; backend: string; driver: string; shaderF16: boolean; maxBufferSize: number; maxStorageBufferBindingSize: number;
    vendor?: string; architecture?: string; device?: string; description?: string;
    /** A CPU rasterizer (SwiftShader, llvmpipe): what `kernels: 'auto'` follows. */
    cpu?: boolean;
    /** The device got WebGPU's `subgroups` with subgroups of at least this
     * many invocations (0: none): kernels shuffle between subgroup lanes. */
    subgroupMinSize?: number };
  network: { requests: number; cacheHits: number; bytesDownloaded: number; cacheAvailable: boolean; cacheStore: 'opfs' | 'cacheApi' | null; cacheSyncReads: number; cacheWarning: string | null };
  urls: string[];
}

/** OpenAI's tool call: `arguments` is a JSON text. */
export interface ToolCall { id: string; type: 'function'; function: { name: string; arguments: string } }
export interface ToolCallDelta extends ToolCall { index: number }

export interface Tool { type: 'function'; function: { name: string; description?: string; parameters?: object } }

/** A text part of a message's content (OpenAI's content parts). */
export interface TextPart { type: 'text'; text: string }

export interface SystemMessage { role: 'system'; content: string | TextPart[]; name?: string }
export interface DeveloperMessage { role: 'developer'; content: string | TextPart[]; name?: string }
/** An image part (vision models: Mistral Small 3.x, Pixtral): OpenAI's
 * `image_url` with a data:, blob: or http(s) URL (fetched by the page: CORS
 * applies), or this package's `image` with the picture itself. Decoded by the
 * browser; at most 16 images a request and 4096 x 4096 pixels an image. */
export type ImagePart =
  | { type: 'image_url'; image_url: { url: string; detail?: string } | string }
  | { type: 'image'; image: Blob | ImageBitmap | ImageData | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas };
export interface UserMessage { role: 'user'; content: string | (TextPart | ImagePart)[]; name?: string }
export interface AssistantMessage {
  role: 'assistant';
  /** null where the turn is tool calls only. */
  content: string | TextPart[] | null;
  tool_calls?: ToolCall[];
  name?: string;
}
/** A tool's result, answering the assistant's call `tool_call_id`. */
export interface ToolMessage { role: 'tool'; content: string | TextPart[]; tool_call_id?: string; name?: string }

/** A message, told apart by `role` (`switch (m.role)` narrows it). The
 * engine passes any other non-empty role to the model's chat template; type
 * such a message yourself (`as unknown as ChatMessage`) where a template
 * expects one. */
export type ChatMessage = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage;

export interface ChatRequest {
  messages: ChatMessage[];
  /** Offered to the model through its template; calls come back in `message.tool_calls`. */
  tools?: Tool[];
  /** 'auto' (default): text or calls, and a call the model opens must name a
   * tool and carry arguments valid for its `parameters`; 'required': at least
   * one call, forced, in the model's own tool-call format; a named function:
   * only it is offered and a call to it is forced; 'none': no tools offered. */
  tool_choice?: 'auto' | 'none' | 'required' | { type: 'function'; function: { name: string } };
  /** false: at most one call (default true). */
  parallel_tool_calls?: boolean;
  /** Documents for templates that render them (RAG). */
  documents?: object[];
  /** Extra template variables, e.g. `{ enable_thinking: false }`. */
  chat_template_kwargs?: Record<string, unknown>;
  /** default true */
  add_generation_prompt?: boolean;
}

/** What the output must be (OpenAI's `response_format`, with our `regex`
 * and `grammar` types). The JSON is laid out as `json.dumps` writes it
 * (`", "` and `": "`, no other whitespace); a schema keyword llguidance does
 * not implement is ignored with a warning in `usage.extra.constraint`. */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; json_schema: { name?: string; schema?: object | boolean; strict?: boolean; description?: string } }
  /** Ours: the whole output matches the regex. */
  | { type: 'regex'; regex: string }
  /** Ours: the output follows a grammar in llguidance's Lark syntax. */
  | { type: 'grammar'; grammar: string };

/** Output constraints (compiled by llguidance, cached by their text; the
 * mask of allowed tokens is applied on the GPU). A schema or grammar that
 * does not compile rejects with INVALID_REQUEST naming what is wrong. */
export interface ConstraintRequest {
  response_format?: ResponseFormat;
  /** Extension: the whole output matches this regex. */
  regex?: string;
  /** Extension: a grammar in llguidance's Lark syntax (llama.cpp's GBNF is refused). */
  grammar?: string;
  /** llama.cpp's extension: a JSON Schema the output follows. */
  json_schema?: object | boolean;
}

/** Every field is checked by the engine's OpenAI protocol (as `tramontane
 * serve` checks it; RemoteEngine: by the server): a bad one rejects with
 * INVALID_REQUEST whose message starts with the field's name and whose
 * `param` is it (max_tokens an integer >= 1, temperature >= 0, top_p in
 * (0, 1], top_k and seed integers >= 0, repetition_penalty > 0, finite
 * penalties, stop strings, top_logprobs 0..20). A request whose signal is
 * already aborted never runs. */
export interface SamplingRequest extends ConstraintRequest {
  max_tokens?: number;
  max_completion_tokens?: number;
  /** 0 = greedy; default: the model's recommendation, else 1 */
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string | string[];
  repetition_penalty?: number;
  frequency_penalty?: number;
  presence_penalty?: number;
  /** true: each token's log-probability (`choices[].logprobs.content`), with
   * `top_logprobs` alternatives. Completions also take OpenAI's legacy
   * integer form (N alternatives: `tokens`, `token_logprobs`, `top_logprobs`,
   * `text_offset`). */
  logprobs?: boolean | number;
  top_logprobs?: number;
  /** keep generating past end-of-generation tokens */
  ignore_eos?: boolean;
  signal?: AbortSignal;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
}

export interface TokenLogprob { token: string; id: number; logprob: number; bytes: number[]; top_logprobs: { token: string; id: number; logprob: number; bytes: number[] }[] }
/** Completions' legacy form (`logprobs: N`). */
export interface LegacyLogprobs { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[]; text_offset: number[] }

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** `cached_tokens`: prompt tokens whose keys and values were in the KV
   * cache already (an earlier turn, the `prefill` load option); a server
   * other than tramontane's may leave it out. */
  prompt_tokens_details?: { cached_tokens: number };
  extra: { prefilled_tokens: number; prefill_tokens_per_s: number; decode_tokens_per_s: number; time_to_first_token_s: number; e2e_latency_s: number;
    /** With an output constraint: compiling it (`cached`: it came from the
     * cache), the mask's CPU time per token, and whether the model looped or
     * ran short of `max_tokens` and was steered to close its JSON. */
    constraint?: { compile_seconds: number; cached: boolean; mask_ms_per_token: number; masks: number; warnings?: string[]; steered?: boolean } };
}

export interface ChatCompletion {
  id: string; object: 'chat.completion'; created: number; model: string;
  choices: { index: number; message: { role: 'assistant'; content: string | null; tool_calls?: ToolCall[] }; finish_reason: 'stop' | 'length' | 'tool_calls'; logprobs: { content: TokenLogprob[] } | null }[];
  usage: Usage;
  token_ids: number[];
}

export interface ChatCompletionChunk {
  id: string; object: 'chat.completion.chunk'; created: number; model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string; tool_calls?: ToolCallDelta[] }; finish_reason: 'stop' | 'length' | 'tool_calls' | null; logprobs: { content: TokenLogprob[] } | null }[];
  usage?: Usage;
}

export interface Completion {
  id: string; object: 'text_completion'; created: number; model: string;
  choices: { index: number; text: string; finish_reason: 'stop' | 'length' | null; logprobs: { content: TokenLogprob[] } | LegacyLogprobs | null }[];
  usage?: Usage;
  token_ids?: number[];
}

export interface ChatAPI {
  completions: {
    create(req: SamplingRequest & ChatRequest & { stream: true }): AsyncIterable<ChatCompletionChunk>;
    create(req: SamplingRequest & ChatRequest & { stream?: false }): Promise<ChatCompletion>;
    /** As OpenAI's SDKs: `create` (not streamed) with `message.parsed`, the
     * content read as JSON when `response_format` asked for JSON (else null). */
    parse<T = unknown>(req: SamplingRequest & ChatRequest & { stream?: false }): Promise<ChatCompletion & {
      choices: (ChatCompletion['choices'][number] & { message: ChatCompletion['choices'][number]['message'] & { parsed: T | null } })[] }>;
  };
}

export interface CompletionsAPI {
  create(req: SamplingRequest & { prompt: string | number[]; stream: true }): AsyncIterable<Completion>;
  create(req: SamplingRequest & { prompt: string | number[]; stream?: false }): Promise<Completion>;
}

interface EngineLike {
  readonly info: EngineInfo | null;
  chat: ChatAPI;
  completions: CompletionsAPI;
  /** `addSpecial`: the tokenizer's BOS/EOS rule (default false); `parseSpecial`:
   * special-token texts become their ids (default true). */
  tokenize(text: string, options?: { addSpecial?: boolean; parseSpecial?: boolean }): Promise<number[]>;
  /** The prompt a chat request renders to, and its tokens. */
  chatPrompt(req: ChatRequest): Promise<{ text: string; ids: number[] }>;
  detokenize(ids: number[]): Promise<string>;
  resetChat(): Promise<void>;
  unload(): Promise<void>;
}

/** The instance API both engines share comes from EngineLike (declaration merging). */
export interface Engine extends EngineLike {}
export class Engine {
  static load(source: string, options?: LoadOptions): Promise<Engine>;
  /** Bytes of wasm linear memory (it only grows: the peak so far). */
  static wasmMemoryBytes(): Promise<number>;
  static cache: { has(source: string, options?: LoadOptions): Promise<boolean>; delete(source: string, options?: LoadOptions): Promise<boolean> };
  load(source: string, options?: LoadOptions): Promise<Engine>;
  /** One image through the image side alone, timed (`npm run bench --image`);
   * the conversation's cache is kept. INVALID_REQUEST for a text-only model. */
  timeImage(image: string | Blob | ImageBitmap | ImageData | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas): Promise<ImageTiming>;
}

export interface ImageTiming {
  width: number;
  height: number;
  /** [width, height] after the processor's resize. */
  resized: [number, number];
  patches: number;
  /** Rows of features (image tokens less the row breaks). */
  imageTokens: number;
  /** The browser's decode to pixels. */
  decodeSeconds: number;
  /** The processor's resize and normalization (in the wasm). */
  preprocessSeconds: number;
  /** The encoder and projector on the GPU, until it is done. */
  encodeSeconds: number;
}

export interface WorkerEngine extends EngineLike {}
export class WorkerEngine {
  static load(source: string, options?: LoadOptions & { worker?: Worker }): Promise<WorkerEngine>;
  load(source: string, options?: LoadOptions): Promise<WorkerEngine>;
  terminate(): void;
}

export function resolveSource(source: string, options?: LoadOptions): { base: string; gguf: string | null };
/** The headers `load` sends to the model's host: `headers` plus `hfToken`. */
export function modelHeaders(options?: LoadOptions): Record<string, string>;

/** What every engine does, on this device or on a server: code written against
 * it runs on Engine, WorkerEngine and RemoteEngine alike. */
export interface EngineAPI {
  readonly info: EngineInfo | RemoteEngineInfo | null;
  chat: ChatAPI;
  completions: CompletionsAPI;
  tokenize(text: string, options?: { addSpecial?: boolean; parseSpecial?: boolean }): Promise<number[]>;
  detokenize(ids: number[]): Promise<string>;
  /** RemoteEngine: rejects UNSUPPORTED (the server renders the template). */
  chatPrompt(req: ChatRequest): Promise<{ text: string; ids: number[] }>;
  resetChat(): Promise<void>;
  unload(): Promise<void>;
}

export interface RemoteEngineOptions {
  /** Sent as `Authorization: Bearer <key>` (`tramontane serve --api-key`); never put in errors. */
  apiKey?: string;
  /** The model named in every request (default: the first the server lists at GET /v1/models). */
  model?: string;
  /** Headers sent with every request to the server. */
  headers?: Record<string, string> | Headers | [string, string][];
  /** A fetch to use instead of the global one. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  /** Aborts `connect`. */
  signal?: AbortSignal;
}

export interface RemoteEngineInfo {
  remote: true;
  /** The server's root (a trailing /v1 removed): /tokenize and /detokenize live there. */
  baseUrl: string;
  /** `${baseUrl}/v1`: the OpenAI API. */
  apiBase: string;
  /** The model named in requests (also `source`). */
  model: string;
  source: string;
  /** Every id the server lists. */
  models: string[];
  ownedBy: string | null;
  created: number | null;
}

/** Engine's API over an OpenAI-compatible server (`tramontane serve`,
 * llama.cpp's llama-server, vLLM, ...): `chat.completions.create` and
 * `completions.create`, streamed (the same chunk stream as Engine's; a `break`
 * out of `for await` cancels the request) or not, with `signal`. Requests are
 * checked here first by Engine's rules (INVALID_REQUEST, nothing sent); what a
 * request leaves out the server decides. Streams end with a usage chunk unless
 * `stream_options.include_usage` is false. `token_ids` and `usage.extra` are
 * there when the server sends them (tramontane serve does; llama-server's
 * `timings` become `usage.extra`). Errors: NETWORK with `url` and `status`
 * (0: no answer; 401: the API key was missing or refused; 429: busy),
 * INVALID_REQUEST for 400/413/422 with the server's message, the server's own
 * code where it is one of ours (CONTEXT_OVERFLOW, ...), ABORTED. */
export class RemoteEngine implements EngineAPI {
  /** Checks the server (GET /v1/models) and picks the model. `baseUrl` is the
   * server's root or its /v1 (`http://127.0.0.1:8080` or `http://127.0.0.1:8080/v1`). */
  static connect(baseUrl: string | URL, options?: RemoteEngineOptions): Promise<RemoteEngine>;
  readonly kind: 'remote';
  /** Set by createEngine: why this engine was chosen. */
  reason?: string;
  readonly baseUrl: string;
  readonly apiBase: string;
  readonly model: string;
  readonly info: RemoteEngineInfo;
  chat: ChatAPI;
  completions: CompletionsAPI;
  /** POST <baseUrl>/tokenize; UNSUPPORTED where the server has none. */
  tokenize(text: string, options?: { addSpecial?: boolean; parseSpecial?: boolean }): Promise<number[]>;
  /** POST <baseUrl>/detokenize; UNSUPPORTED where the server has none. */
  detokenize(ids: number[]): Promise<string>;
  /** Rejects UNSUPPORTED. */
  chatPrompt(req: ChatRequest): Promise<{ text: string; ids: number[] }>;
  /** Nothing to do (the server keeps its own cache). */
  resetChat(): Promise<void>;
  /** Nothing to do (the model stays on the server). */
  unload(): Promise<void>;
  /** Rejects UNSUPPORTED: a server serves the model it was started with. */
  load(source?: string, options?: LoadOptions): Promise<never>;
}

export interface CreateEngineOptions extends LoadOptions {
  /** The server to use when this device cannot run the model: its URL, or
   * RemoteEngine's options with `baseUrl`. Without it, createEngine loads
   * locally or fails as Engine.load does. */
  remote?: string | URL | (RemoteEngineOptions & { baseUrl: string | URL });
  /** GPU memory the model may take here (the local load's `maxGpuBytes`):
   * a model that needs more goes to the server, decided before any weight is
   * downloaded (after them only where the self-test falls back to a larger
   * f32 KV cache). */
  localMaxGpuBytes?: number;
  /** Run the local engine in a Web Worker (a WorkerEngine). */
  useWorker?: boolean;
}

export type LocalChoice = (Engine | WorkerEngine) & { kind: 'local'; reason: string };
export type RemoteChoice = RemoteEngine & { kind: 'remote'; reason: string };

/** A local engine when this device can run the model, else the server in
 * `options.remote`. No `navigator.gpu` or no adapter: remote. Else the model is
 * loaded here (`maxGpuBytes` = `localMaxGpuBytes`) and a load failing with
 * WEBGPU_UNAVAILABLE, UNSUPPORTED or OUT_OF_MEMORY goes remote; other errors
 * (NETWORK, ABORTED, ...) are thrown. `source` null with `remote`: remote.
 * The engine says which (`kind`) and why (`reason`, a sentence). */
export function createEngine(source: string | null, options?: CreateEngineOptions): Promise<LocalChoice | RemoteChoice>;
