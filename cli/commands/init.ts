import { layout } from '../../cluster/model-spec.js';
import { OPTIMIZERS, type OptimizerName } from '../../cluster/optimizer-config.js';
import { DEFAULT_SLOTS } from '../../cluster/slots.js';
import { TASK_NAMES } from '../../worker/tasks/index.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { clusterConfig, COMPRESSION_OPTION, parseCompressionOption, parseConsistencyOption } from '../local/defaults.js';
import { MEMBERSHIP_OPTIONS, openStore } from '../membership-options.js';
import { taskFromOption } from '../model-option.js';

export const initCommand: Command = {
  name: 'init',
  summary: 'Create a cluster: write its configuration (model, slots, optimizer, consistency) once to the membership store.',
  options: [
    ...MEMBERSHIP_OPTIONS,
    { name: 'model', type: 'string', required: true, metavar: 'NAME|PATH', description: `model the cluster trains: ${TASK_NAMES.join(', ')}, or a module (docs/user-models.md)` },
    { name: 'slots', type: 'int', default: DEFAULT_SLOTS, description: 'slots in the key space (fixed for the life of the cluster)' },
    { name: 'optimizer', type: 'string', default: 'adam', choices: OPTIMIZERS, description: 'server-side optimizer' },
    { name: 'learning-rate', type: 'number', description: 'learning rate (default: per optimizer, tuned for the model)' },
    { name: 'consistency', type: 'string', default: 'async', metavar: 'async|ssp:K|bsp', description: 'consistency model (docs/consistency.md)' },
    COMPRESSION_OPTION,
    { name: 'workers', type: 'int', default: 1, description: 'under ssp/bsp: workers that must join before the first step goes through' },
    { name: 'shards', type: 'int', default: 1, description: 'shards that must have registered before the slots are first spread over every live shard' },
    { name: 'seed', type: 'int', default: 1, description: 'seed of the initial weights' },
    { name: 'force', type: 'boolean', description: 'overwrite the configuration of an existing cluster (its shard map is dropped)' },
    { name: 'json', type: 'boolean', description: 'print the configuration written as JSON' },
  ],
  async run(o) {
    const task = await taskFromOption(o['model'] as string);
    const optimizer = o['optimizer'] as OptimizerName;
    const config = clusterConfig({
      name: o['cluster'] as string,
      slots: o['slots'] as number,
      task,
      seed: o['seed'] as number,
      optimizer: optimizer,
      learningRate: o['learning-rate'] as number | undefined,
      initialShards: o['shards'] as number,
      consistency: parseConsistencyOption(o['consistency'] as string),
      compression: parseCompressionOption(o['compression'] as string),
      initialWorkers: o['workers'] as number,
    });
    const store = openStore(o);
    try {
      await store.createCluster(config, Boolean(o['force']));
    } finally {
      await store.close();
    }
    if (o['json']) process.stdout.write(`${JSON.stringify(config)}\n`);
    else {
      const { elements } = layout(config.model);
      process.stdout.write(
        `cluster ${config.name} created: ${task.name} (${elements.toLocaleString('en-US')} parameters), ${config.slots} slots, ${config.optimizer.name} lr ${config.optimizer.learningRate}, ${config.consistency}.\n` +
          `Start ${config.initialShards} shard(s) with \`tessera shard\`: once they have registered, the slots are spread over them.\n`,
      );
    }
    return EXIT.ok;
  },
};
