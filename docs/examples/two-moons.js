// A model of your own for Tessera: `tessera local --model docs/examples/two-moons.js`.
//
// The module's default export is a function of TensorFlow.js (the worker's
// `@tensorflow/tfjs-core`, already on its chosen backend) that returns the
// model: its dense tensors, logits, the loss with its gradients written by
// hand, and its data. See docs/user-models.md.
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
  const forward = (w, x) => {
    const [W1, b1, W2, b2] = w;
    const h = tf.relu(tf.add(tf.matMul(x, W1), b1));
    return { h, logits: tf.add(tf.matMul(h, W2), b2) };
  };
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
    logits: (w, x) => forward(w, x).logits,
    // Mean softmax cross-entropy and its gradient for each tensor, in declared order and shapes.
    lossAndGradients(w, x, labels) {
      const n = x.shape[0];
      const { h, logits } = forward(w, x);
      const logp = tf.logSoftmax(logits);
      const loss = tf.neg(tf.div(tf.sum(tf.mul(labels, logp)), n));
      const dLogits = tf.div(tf.sub(tf.exp(logp), labels), n);
      const dh = tf.mul(tf.matMul(dLogits, tf.transpose(w[2])), tf.step(h));
      return {
        loss,
        gradients: [tf.matMul(tf.transpose(x), dh), tf.sum(dh, 0), tf.matMul(tf.transpose(h), dLogits), tf.sum(dLogits, 0)],
      };
    },
    data: () => ({ train: moons(4000, 1), test: moons(1000, 2) }),
    learningRates: { sgd: 0.5, adam: 0.01 },
  };
}
