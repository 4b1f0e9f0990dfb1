import { snapshotModel } from '../../client/model-snapshot.js';
import { createLogger } from '../../cluster/log.js';
import { type MembershipStore } from '../../cluster/membership/store.js';
import { prune } from '../compress/prune.js';
import { writeOnnx } from '../formats/onnx-writer.js';
import { buildGraph } from '../model/build-graph.js';
import { type Quantization } from '../model/model-graph.js';
import { loadOnnx } from '../runtime/onnx-runtime.js';
import { type ModelRepository } from './model-repository.js';

const log = createLogger('cluster-follower');

export interface ClusterFollowerOptions {
  store: MembershipStore;
  repository: ModelRepository;
  /** Seconds between two pulls of the weights. */
  refreshS: number;
  /** Compression applied to each pull, as `tessera export` applies it; default none. */
  prune?: number;
  pruneUnits?: number;
  quantize?: Quantization;
}

/**
 * Online serving of a model that is still training (`tessera serve --redis
 * URL --refresh S`): every `refreshS` seconds the weights are taken from the
 * shards as `tessera export` takes them (a snapshot per shard, no pause of
 * training beyond a checkpoint's), built into the ONNX model in memory and
 * swapped in as the next version (1, 2, …) — in-flight requests finish on the
 * one before. A pull that fails is logged and the current version serves on.
 */
export class ClusterFollower {
  private version = 0;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly o: ClusterFollowerOptions) {
    if (!(o.refreshS > 0)) throw new RangeError(`refreshS must be a positive number of seconds, got ${o.refreshS}`);
  }

  /** Pulls once (the server is ready once a version is in), then every refreshS. */
  async start(): Promise<void> {
    await this.refresh();
    this.schedule();
  }

  /** One pull and swap; concurrent calls share one. */
  refresh(): Promise<void> {
    this.running ??= this.pull().finally(() => (this.running = undefined));
    return this.running;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => void this.refresh().finally(() => this.schedule()), this.o.refreshS * 1000);
    this.timer.unref();
  }

  private async pull(): Promise<void> {
    try {
      const snapshot = await snapshotModel(this.o.store);
      const graph = prune(buildGraph(snapshot.config.model, snapshot.dense, snapshot.tables), this.o);
      const { files } = writeOnnx(graph, this.o.quantize ?? 'none');
      const model = await loadOnnx(files[0]!.bytes);
      if (this.closed) {
        await model.close();
        return;
      }
      const version = ++this.version;
      const source = { cluster: snapshot.config.name, map_epoch: snapshot.epoch, closed_steps: snapshot.closedSteps, taken_at: snapshot.takenAt.toISOString() };
      await this.o.repository.swap({ name: this.o.repository.name, version, model, manifest: { source } });
      log.info(`serving the cluster's weights as version ${version} (map epoch ${snapshot.epoch}${snapshot.closedSteps ? `, step ${snapshot.closedSteps}` : ''})`);
    } catch (err) {
      log.warn(`could not take the weights from the cluster: ${(err as Error).message}; ${this.o.repository.current() ? 'the current version serves on' : 'nothing to serve yet'}`);
    }
  }
}
