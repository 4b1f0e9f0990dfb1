import { layout } from '../../cluster/model-spec.js';
import { OPTIMIZERS, type OptimizerName } from '../../cluster/optimizer-config.js';
import { DEFAULT_SLOTS } from '../../cluster/slots.js';
import { TASK_NAMES } from '../../worker/tasks/index.js';
import { ClusterExistsError } from '../../cluster/errors.js';
import { UsageError } from '../args.js';
import { type Command } from '../command.js';
import { EXIT } from '../handle-error.js';
import { clusterConfig, COMPRESSION_OPTION, REPLICAS_OPTION, parseCompressionOption, parseConsistencyOption } from '../local/defaults.js';
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
    REPLICAS_OPTION,
    { name: 'workers', type: 'int', default: 1, description: 'under ssp/bsp: workers that must join before the first step goes through' },
    { name: 'shards', type: 'int', default: 1, description: 'shards that must have registered before the slots are first spread over every live shard' },
    { name: 'seed', type: 'int', default: 1, description: 'seed of the initial weights' },
    { name: 'exists-ok', type: 'boolean', description: 'a cluster of this name that exists already is success (exit 0, nothing written): for an init Job that may run again' },
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
      replicas: o['replicas'] as number,
    });
    if (o['exists-ok'] && o['force']) throw new UsageError('give --exists-ok or --force, not both');
    const store = openStore(o);
    try {
      await store.createCluster(config, Boolean(o['force']));
    } catch (err) {
      if (!(o['exists-ok'] && err instanceof ClusterExistsError)) throw err;
      process.stdout.write(`cluster ${config.name} exists already; nothing written (--exists-ok)\n`);
      return EXIT.ok;
    } finally {
      await store.close();
    }
    if (o['json']) process.stdout.write(`${JSON.stringify(config)}\n`);
    else {
      const { elements } = layout(config.model);
      process.stdout.write(
        `cluster ${config.name} created: ${task.name} (${elements.toLocaleString('en-US')} parameters), ${config.slots} slots, ${config.optimizer.name} lr ${config.optimizer.learningRate}, ${config.consistency}${config.replicas ? `, ${config.replicas} backup(s) of every slot` : ''}.\n` +
          `Start ${config.initialShards} shard(s) with \`tessera shard\`: once they have registered, the slots are spread over them.\n`,
      );
    }
    return EXIT.ok;
  },
};
