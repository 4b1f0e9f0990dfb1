import { type TesseraClient } from '../../client/tessera-client.js';
import { type OptimizerName } from '../../cluster/optimizer-config.js';
import { type Dataset } from '../data/dataset.js';
import { accuracy, argmaxAccuracy } from '../evaluate.js';
import { type Model } from '../models/model.js';
import { train } from '../trainer.js';
import { type TaskTrainOptions, type TrainingTask } from './task.js';

/** A classifier over dense parameters and its labelled data, split into training and held-out sets. */
export function denseTask(model: Model, data: () => { train: Dataset; test: Dataset }, tunedLearningRates: Partial<Record<OptimizerName, number>> = {}, defaultShift = 0): TrainingTask {
  return {
    name: model.name,
    defaultShift,
    defaultEpochs: 10,
    spec: (seed) => model.spec(seed),
    get trainExamples() {
      return data().train.count;
    },
    tunedLearningRates,
    train: (o: TaskTrainOptions) =>
      train({ client: o.client, model, data: data().train, source: o.source, seed: o.seed, batchSize: o.batchSize, pipeline: o.pipeline, augment: o.augment, signal: o.signal, onStep: o.onStep }),
    async evaluate(client: TesseraClient) {
      const params = await client.pull();
      return { test_accuracy: await accuracy(model, params, data().test) };
    },
    heldOut() {
      const test = data().test;
      return {
        dataset: `${model.name} held-out split, ${test.count} examples`,
        inputs: test.x.subarray(0, test.count * test.inputSize),
        rows: test.count,
        metrics: (outputs, rows) => ({ test_accuracy: argmaxAccuracy(outputs, rows, model.classes, test.y) }),
      };
    },
  };
}
