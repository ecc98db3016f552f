// Subgroups for wgpu's WebGPU device. wgpu asks WebGPU only for the
// features it knows, and `subgroups` is not one of them. So while an engine
// opens its device and loads (`withSubgroups` around `init` and `load`: a
// new device after a loss opens inside `load`),
// GPUAdapter.requestDevice also asks for `subgroups` where the adapter has
// it, and notes the smallest subgroup size of a device that got it: the
// kernels then shuffle between subgroup lanes (shaders/lanes.wgsl). Windows
// of several engines may overlap: the page's own method is kept once and put
// back when the last one closes. Every device is opened on the same default
// adapter, so the size noted holds for any of them.
export let subgroupMinSize = 0;
let pageRequestDevice = null;
let openWindows = 0;
async function requestDeviceWithSubgroups(desc) {
  const want = this.features?.has?.('subgroups') && !(desc?.requiredFeatures ?? []).includes?.('subgroups');
  let device;
  try {
    device = await pageRequestDevice.call(this, want ? { ...desc, requiredFeatures: [...(desc?.requiredFeatures ?? []), 'subgroups'] } : desc);
  } catch (err) {
    if (!want) throw err;
    device = await pageRequestDevice.call(this, desc);
  }
  subgroupMinSize = device.features?.has?.('subgroups') ? (this.info?.subgroupMinSize ?? 0) : 0;
  return device;
}
export async function withSubgroups(fn) {
  const proto = globalThis.GPUAdapter?.prototype;
  if (typeof proto?.requestDevice !== 'function') return fn();
  if (openWindows++ === 0) {
    pageRequestDevice = proto.requestDevice;
    proto.requestDevice = requestDeviceWithSubgroups;
  }
  try {
    return await fn();
  } finally {
    if (--openWindows === 0) proto.requestDevice = pageRequestDevice;
  }
}
