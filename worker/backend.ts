import * as tf from '@tensorflow/tfjs-core';
// Both register themselves with tfjs-core on import; they are hard dependencies.
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { InvalidArgumentError } from '../cluster/errors.js';
import { createLogger } from '../cluster/log.js';
import { BackendUnavailableError } from './backend-errors.js';

/**
 * Chooses the TensorFlow.js backend the worker computes on.
 *
 * Only `wasm` and `cpu` are dependencies. `tensorflow` (libtensorflow through
 * tfjs-node) and `webgpu` (Dawn through the `webgpu` package) are imported
 * dynamically when present, so a host without them still starts: their
 * install scripts or native parts cannot be fetched everywhere.
 *
 * Gradients: the worker's models write their backward pass by hand (see
 * `models/dense-model.ts`), so nothing here relies on tfjs-core's gradient
 * registry, which its Node build leaves empty.
 */

const log = createLogger('backend');

/** Every backend, in the order {@link selectBackend} tries them. */
export const BACKENDS = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

const TFJS_NODE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;
const WEBGPU_BACKEND_PACKAGE = '@tensorflow/tfjs-backend-webgpu';
const WEBGPU_PACKAGE = 'webgpu';

const REMEDY: Record<BackendName, string> = {
  tensorflow:
    'Install @tensorflow/tfjs-node-gpu (CUDA) or @tensorflow/tfjs-node (CPU); their install scripts download libtensorflow, so use the GPU container image or a host with network access. Or choose --backend wasm',
  webgpu: `Install ${WEBGPU_BACKEND_PACKAGE} and ${WEBGPU_PACKAGE}, and give the process a GPU that Dawn can open (a Vulkan loader and the GPU vendor's Vulkan driver). Or choose --backend wasm`,
  wasm: 'Reinstall @tensorflow/tfjs-backend-wasm so that its dist/*.wasm binaries are present, or choose --backend cpu',
  cpu: 'Reinstall @tensorflow/tfjs-backend-cpu',
};

export function isBackendName(name: string): name is BackendName {
  return (BACKENDS as readonly string[]).includes(name);
}

/**
 * Why a backend could not be set up, `null` when it is now the active one.
 * `installed` says whether its package was there (and so failing is news).
 */
type Attempt = Promise<{ missing: string; installed: boolean } | null>;

/**
 * Makes a backend active: the forced one, or else the first that works of
 * `tensorflow`, `webgpu`, `wasm`, `cpu`. Resolves to the name in use.
 * Afterwards tfjs runs in production mode, so its console advice (such as
 * "install tfjs-node") stays out of the CLI's output.
 *
 * @throws BackendUnavailableError when the forced backend cannot run here.
 * @throws InvalidArgumentError for a name that is no backend.
 */
export async function selectBackend(forced?: BackendName): Promise<BackendName> {
  if (forced !== undefined && !isBackendName(forced)) {
    throw new InvalidArgumentError(`unknown compute backend "${String(forced)}"; choose one of ${BACKENDS.join(', ')}`);
  }
  const candidates: readonly BackendName[] = forced ? [forced] : BACKENDS;
  for (const name of candidates) {
    const failed = await ATTEMPTS[name]();
    if (failed === null) {
      tf.enableProdMode();
      log.info(`computing on the ${name} backend${forced ? ' (forced)' : ''}`);
      return name;
    }
    if (forced) throw new BackendUnavailableError(name, failed.missing, REMEDY[name]);
    // An absent optional backend is the common case; one installed but failing is worth a warning.
    (failed.installed ? log.warn : log.debug)(`backend ${name} skipped: ${failed.missing}`);
  }
  // cpu is a dependency: reaching here means the installation is broken.
  throw new BackendUnavailableError('cpu', 'no backend could be initialized', REMEDY.cpu);
}

const ATTEMPTS: Record<BackendName, () => Attempt> = {
  async tensorflow() {
    const reasons: string[] = [];
    let installed = false;
    for (const pkg of TFJS_NODE_PACKAGES) {
      const loaded = await importOptional(pkg);
      installed ||= loaded.installed;
      if ('missing' in loaded) {
        reasons.push(loaded.missing);
        continue;
      }
      // tfjs-node registers "tensorflow" in the registry every tfjs-core copy shares.
      if (tf.findBackendFactory('tensorflow') === null) {
        reasons.push(`${pkg} loaded but registered no "tensorflow" backend`);
        continue;
      }
      if (await activate('tensorflow')) return null;
      reasons.push(`${pkg} failed to initialize libtensorflow`);
    }
    return { missing: reasons.join('; '), installed };
  },

  async webgpu() {
    const dawn = await importOptional(WEBGPU_PACKAGE);
    if ('missing' in dawn) return dawn;
    const { create, globals } = dawn.module as { create(flags: string[]): GpuLike; globals: object };
    let gpu: GpuLike;
    let adapter: unknown;
    try {
      gpu = create([]);
      adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    } catch (e) {
      return { missing: `${WEBGPU_PACKAGE} could not start Dawn (${(e as Error).message})`, installed: true };
    }
    // No adapter is what a host without a GPU looks like: not news.
    if (!adapter) return { missing: 'no WebGPU adapter was found (no GPU, or no Vulkan driver the loader can use)', installed: false };
    // tfjs-backend-webgpu looks for navigator.gpu when it is imported, so expose Dawn first.
    Object.assign(globalThis, globals);
    const nav = (globalThis as { navigator?: object }).navigator ?? {};
    Object.defineProperty(globalThis, 'navigator', { value: Object.assign(Object.create(nav) as object, { gpu }), configurable: true, writable: true });
    const backend = await importOptional(WEBGPU_BACKEND_PACKAGE);
    if ('missing' in backend) return backend;
    if (await activate('webgpu')) return null;
    return { missing: `${WEBGPU_BACKEND_PACKAGE} failed to initialize on the adapter found`, installed: true };
  },

  async wasm() {
    // In Node the emscripten loader finds the .wasm binaries beside its own
    // script (node_modules/@tensorflow/tfjs-backend-wasm/dist/), wherever our
    // compiled code runs from, so setWasmPaths is not needed. Node gets no
    // threaded build (tfjs turns WASM_HAS_MULTITHREAD_SUPPORT off there): one
    // thread per process, which suits one worker per core.
    if (!(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'))) log.warn('this Node has no WebAssembly SIMD: the wasm backend runs its slower scalar build');
    return (await activate('wasm')) ? null : { missing: 'its .wasm binary could not be loaded', installed: true };
  },

  async cpu() {
    return (await activate('cpu')) ? null : { missing: 'tfjs-backend-cpu failed to initialize', installed: true };
  },
};

interface GpuLike {
  requestAdapter(options: { powerPreference: string }): Promise<unknown>;
}

async function activate(name: BackendName): Promise<boolean> {
  if (!(await tf.setBackend(name))) return false;
  await tf.ready();
  return tf.getBackend() === name;
}

/**
 * The module (its CommonJS exports where it is CommonJS), or why it could not
 * be imported: absent, or present but failing to load (a native library missing…).
 */
async function importOptional(specifier: string): Promise<{ module: object; installed: true } | { missing: string; installed: boolean }> {
  try {
    const ns = (await import(specifier)) as { default?: unknown };
    return { module: typeof ns.default === 'object' && ns.default !== null ? ns.default : ns, installed: true };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if ((err.code === 'ERR_MODULE_NOT_FOUND' || err.code === 'MODULE_NOT_FOUND') && err.message.includes(`'${specifier}'`)) {
      return { missing: `${specifier} is not installed`, installed: false };
    }
    return { missing: `${specifier} failed to load (${err.message.split('\n')[0]})`, installed: true };
  }
}
