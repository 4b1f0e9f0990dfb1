// A model of your own for Tessera: `tessera local --model docs/examples/two-moons.js`.
//
// The module's default export is a function of TensorFlow.js (the worker's
// `@tensorflow/tfjs-core`, already on its chosen backend) that returns the
// model: its dense tensors, its logits, and its data. The loss is mean softmax
// cross-entropy and its gradients come from TensorFlow.js's autodiff, unless
// the model gives `loss` or a hand-written `lossAndGradients`. See
// docs/user-models.md.
//
// This one classifies the two interleaved half-moons of scikit-learn's
// `make_moons` with a 2-16-2 MLP.

const HIDDEN = 16;

/** mulberry32: seeded, so every worker builds the same data. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function moons(count, seed) {
  const next = random(seed);
  const x = new Float32Array(count * 2);
  const y = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = i % 2;
    const angle = Math.PI * next();
    const noise = () => (next() - 0.5) * 0.3;
    x[2 * i] = (label ? 1 - Math.cos(angle) : Math.cos(angle)) + noise();
    x[2 * i + 1] = (label ? 0.5 - Math.sin(angle) : Math.sin(angle)) + noise();
    y[i] = label;
  }
  return { x, y, count };
}

export default function twoMoons(tf) {
  return {
    name: 'two-moons',
    inputSize: 2,
    classes: 2,
    tensors: [
      { name: 'W1', shape: [2, HIDDEN], init: { kind: 'glorot-uniform', fanIn: 2, fanOut: HIDDEN } },
      { name: 'b1', shape: [HIDDEN], init: { kind: 'zeros' } },
      { name: 'W2', shape: [HIDDEN, 2], init: { kind: 'glorot-uniform', fanIn: HIDDEN, fanOut: 2 } },
      { name: 'b2', shape: [2], init: { kind: 'zeros' } },
    ],
    // w holds the tensors above, in that order; x is [n, 2].
    logits(w, x) {
      const [W1, b1, W2, b2] = w;
      const h = tf.relu(tf.add(tf.matMul(x, W1), b1));
      return tf.add(tf.matMul(h, W2), b2);
    },
    // For `tessera export` and `tessera serve`: the same computation as affine layers over the
    // tensors, ending in the activation that turns logits into probabilities.
    inference: {
      input: { kind: 'features', features: 2 },
      layers: [
        { weight: 'W1', bias: 'b1', activation: 'relu' },
        { weight: 'W2', bias: 'b2', activation: 'softmax' },
      ],
      output: { labels: ['upper moon', 'lower moon'] },
    },
    data: () => ({ train: moons(4000, 1), test: moons(1000, 2) }),
    learningRates: { sgd: 0.5, adam: 0.01 },
  };
}
