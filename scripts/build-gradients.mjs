// Bundles TensorFlow.js's gradient and chained-op registrations for Node, so
// that `tf.grads` works on the worker's `@tensorflow/tfjs-core` (docs/worker.md).
//
// tfjs-core's Node build registers no gradients, and the files that do
// (`dist/register_all_gradients.js`, `dist/public/chained_ops/register_all_chained_ops.js`)
// are ES-module source with extensionless imports in a package Node loads as
// CommonJS, so Node cannot import them. This bundles them into one CommonJS
// file, as the `@tensorflow/tfjs` union package's Node build does: the bundle
// carries its own copy of the ops the gradients use, and registers into the
// registries, engine and Tensor class that every copy of tfjs-core shares
// through the global namespace.
//
// Run by `npm run build` after tsc; writes dist/worker/models/tfjs-gradients.cjs.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const result = await build({
  stdin: {
    contents: ["import '@tensorflow/tfjs-core/dist/register_all_gradients';", "import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';"].join('\n'),
    resolveDir: root,
    loader: 'js',
  },
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // tfjs-core's own dependencies stay where npm put them.
  external: ['seedrandom', 'long'],
  legalComments: 'inline',
  outfile: join(root, 'dist/worker/models/tfjs-gradients.cjs'),
  logLevel: 'warning',
});
if (result.errors.length > 0) process.exit(1);
