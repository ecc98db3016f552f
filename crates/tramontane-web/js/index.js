// tramontane: Mistral-family language models in the browser on WebGPU.
// The package's API; each part lives in its own module:
//   errors.js           TramontaneError and the error codes
//   source.js           model sources, host headers, the cache manifest
//   protocol.js         requests as JSON, load options checked by name, parse, chunk streams
//   webgpu-subgroups.js subgroups for wgpu's WebGPU device
//   engine.js           Engine (the wasm engine on this page's GPU) and Engine.cache
//   worker-engine.js    WorkerEngine (the same API in a Web Worker, worker.js)
//   remote-engine.js    RemoteEngine (the same API over an OpenAI-compatible server)
//   create-engine.js    createEngine (local when the model fits, else the server)
export { TramontaneError } from './errors.js';
export { resolveSource, modelHeaders } from './source.js';
export { Engine } from './engine.js';
export { WorkerEngine } from './worker-engine.js';
export { RemoteEngine } from './remote-engine.js';
export { createEngine } from './create-engine.js';
