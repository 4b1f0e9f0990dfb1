import { type ModelSpec, layout } from '../../cluster/model-spec.js';
import { ExportError } from '../errors.js';
import { type EmbeddingTable, type ModelGraph } from './model-graph.js';

/** A sparse table's rows as the cluster holds them: 64-bit ids and their values. */
export interface TableRows {
  ids: BigUint64Array;
  /** ids.length × dim values, row i belonging to ids[i]. */
  rows: Float32Array;
}

/** Name of the request tensor of a model over features, and of one over ids. */
export const FEATURES_INPUT = 'input';
export const IDS_INPUT = 'ids';
/** Name of the response tensor unless the model names it. */
export const DEFAULT_OUTPUT = 'probabilities';

/**
 * The inference graph of `spec` with the weights of a trained model: `dense`
 * the flat vector (the spec's tensors concatenated in declared order), and
 * the rows of the sparse table the graph looks ids up in. The weights are
 * copied, so the graph does not change when `dense` does.
 *
 * Ids are unsigned 64-bit in the cluster and signed 64-bit (INT64) on the
 * wire of every serving protocol: an id ≥ 2^63 is sent as its two's
 * complement, and the table is sorted in that order.
 *
 * @throws ExportError when the spec declares no inference graph (docs/user-models.md).
 */
export function buildGraph(spec: ModelSpec, dense: Float32Array, tables: ReadonlyMap<string, TableRows> = new Map()): ModelGraph {
  const inf = spec.inference;
  if (!inf) throw new ExportError(`model ${spec.name} declares no inference graph, so it cannot be exported; add "inference" to its definition (docs/user-models.md)`);
  const { tensors, elements } = layout(spec);
  if (dense.length !== elements) throw new ExportError(`model ${spec.name} has ${elements} dense parameters, the weights given hold ${dense.length}`);
  const values = (name: string) => {
    const t = tensors.find((x) => x.name === name)!;
    return { values: dense.slice(t.offset, t.offset + t.size), shape: t.shape };
  };
  let input: ModelGraph['input'];
  if (inf.input.kind === 'features') {
    input = { kind: 'features', name: FEATURES_INPUT, features: inf.input.features };
  } else {
    const tableSpec = (spec.sparse ?? []).find((t) => t.name === (inf.input as { table: string }).table)!;
    input = { kind: 'ids', name: IDS_INPUT, fields: inf.input.fields, table: embeddingTable(tableSpec.name, tableSpec.dim, tables.get(tableSpec.name)) };
  }
  const layers = inf.layers.map((l) => {
    const w = values(l.weight);
    return {
      weightName: l.weight,
      biasName: l.bias ?? null,
      inputs: w.shape[0]!,
      units: w.shape[1]!,
      weight: w.values,
      bias: l.bias !== undefined ? values(l.bias).values : null,
      activation: l.activation,
    };
  });
  return { name: spec.name, input, layers, output: { name: inf.output?.name ?? DEFAULT_OUTPUT, ...(inf.output?.labels ? { labels: [...inf.output.labels] } : {}) } };
}

/** The table's rows sorted by signed id. */
function embeddingTable(name: string, dim: number, held: TableRows | undefined): EmbeddingTable {
  const n = held?.ids.length ?? 0;
  if (held && held.rows.length !== n * dim) throw new ExportError(`table ${name} has ${n} ids but ${held.rows.length} values (dim ${dim})`);
  const signed = held ? new BigInt64Array(held.ids.buffer, held.ids.byteOffset, n) : new BigInt64Array(0);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => (signed[a]! < signed[b]! ? -1 : signed[a]! > signed[b]! ? 1 : 0));
  const ids = new BigInt64Array(n);
  const rows = new Float32Array(n * dim);
  order.forEach((from, to) => {
    ids[to] = signed[from]!;
    rows.set(held!.rows.subarray(from * dim, (from + 1) * dim), to * dim);
    if (to > 0 && ids[to] === ids[to - 1]) throw new ExportError(`table ${name} holds id ${ids[to]} twice`);
  });
  return { name, dim, ids, rows };
}
