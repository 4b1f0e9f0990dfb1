import { TesseraClient } from '../../client/tessera-client.js';
import { NotFoundError } from '../../cluster/errors.js';
import { BACKENDS, type BackendName, selectBackend } from '../../worker/backend.js';
import { loadTask } from '../../worker/tasks/index.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';
import { taskFromOption } from '../model-option.js';

export const evalCommand: Command = {
  name: 'eval',
  summary: "Measure the model the cluster holds now on the model's held-out data (test accuracy; AUC for ctr): reads every value from the shards, trains nothing.",
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'model', type: 'string', metavar: 'NAME|PATH', description: "the model's module, for a model of your own (default: the cluster's model, by name)" },
    { name: 'backend', type: 'string', default: 'auto', choices: ['auto', ...BACKENDS], description: 'compute backend of the evaluation' },
    { name: 'json', type: 'boolean', description: 'print one JSON object: the cluster, the map epoch and the metrics' },
  ],
  async run(o) {
    await selectBackend(o['backend'] === 'auto' ? undefined : (o['backend'] as BackendName));
    const store = openStore(o);
    let client: TesseraClient | undefined;
    try {
      const config = await store.getConfig();
      if (!config) throw new NotFoundError('no cluster is configured in the membership store; create one first (tessera init, or tessera local)');
      const task = o['model'] !== undefined ? await taskFromOption(o['model'] as string) : await loadTask(config.model.name);
      if (task.name !== config.model.name) throw new UsageError(`this cluster trains ${config.model.name}, not ${task.name}; drop --model or pass --model ${config.model.name} (or its module)`);
      client = await TesseraClient.connect({ store, workerId: `eval-${process.pid}` });
      const metrics = await task.evaluate(client);
      if (o['json']) process.stdout.write(`${JSON.stringify({ cluster: config.name, model: config.model.name, epoch: client.epoch, metrics })}\n`);
      else process.stdout.write(`${config.model.name} in cluster ${config.name} (map epoch ${client.epoch}): ${Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}\n`);
      return EXIT.ok;
    } finally {
      await client?.close();
      await store.close();
    }
  },
};
