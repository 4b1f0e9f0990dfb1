import { expect } from 'chai';
import { validateModelSpec } from '../../../cluster/model-spec.js';
import { getModel, MODEL_NAMES } from '../../../worker/models/index.js';

describe('worker/models: the registry', () => {
  it('holds mnist-mlp (784-256-10) and logreg (784-10) with valid specs', () => {
    expect(MODEL_NAMES).to.include.members(['mnist-mlp', 'logreg']);
    const mlp = getModel('mnist-mlp');
    expect(mlp.elements).to.equal(784 * 256 + 256 + 256 * 10 + 10);
    expect(mlp.spec(9).tensors.map((t) => [t.name, t.shape, t.init.kind])).to.deep.equal([
      ['W1', [784, 256], 'glorot-uniform'],
      ['b1', [256], 'zeros'],
      ['W2', [256, 10], 'glorot-uniform'],
      ['b2', [10], 'zeros'],
    ]);
    expect(mlp.spec(9).seed).to.equal(9);
    expect(getModel('logreg').elements).to.equal(784 * 10 + 10);
    for (const name of MODEL_NAMES) {
      const m = getModel(name);
      expect(m.name).to.equal(name);
      expect(m.spec(1).name).to.equal(name);
      validateModelSpec(m.spec(1));
    }
  });

  it('refuses an unknown name with InvalidArgumentError listing the known models', () => {
    expect(() => getModel('resnet')).to.throw(/unknown model "resnet"; known models: mnist-mlp, logreg/).with.property('name', 'InvalidArgumentError');
  });
});
