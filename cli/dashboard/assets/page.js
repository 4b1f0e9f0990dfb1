// The dashboard's page: reads /api/status and /api/history every few seconds
// and redraws. Plain browser JavaScript, no build step; charts by uPlot.
'use strict';

const PALETTE = ['#2e86de', '#e67e22', '#27ae60', '#8e44ad', '#c0392b', '#16a085', '#d35400', '#2c3e50', '#f1c40f', '#7f8c8d'];
const charts = {};
let everyS = 2;
let samples = 0;

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : c === null || c === undefined ? '' : String(c));
  return e;
};
const bytes = (b) => (b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : b >= 1e3 ? `${(b / 1e3).toFixed(1)} kB` : `${Math.round(b)} B`);
const ago = (iso, now) => `${Math.max(0, Math.round((now - Date.parse(iso)) / 1000))} s ago`;
const colorOf = (ids, id) => PALETTE[Math.max(0, ids.indexOf(id)) % PALETTE.length];

async function getJson(path) {
  const res = await fetch(path, { cache: 'no-store' });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || `${path}: HTTP ${res.status}`);
  return body;
}

function header(s) {
  $('cluster').textContent = s.cluster;
  $('model').textContent = s.model;
  $('consistency').textContent = s.consistency;
  $('epoch').textContent = s.epoch;
  $('slots').textContent = s.slots;
  $('orphaned').textContent = s.orphaned_slots ? `${s.orphaned_slots} slots on dead shards` : '';
  $('updated').textContent = new Date(s.at).toLocaleTimeString();
}

function shardTable(s, ids) {
  const body = $('shards').tBodies[0];
  body.replaceChildren(
    ...s.shards.map((x) => {
      const rate = (s.load[x.id] || []).reduce((a, l) => a + l.bytesPerSec, 0);
      const lost = x.lost_slots.map((r) => (r.begin === r.end - 1 ? `${r.begin}` : `${r.begin}–${r.end - 1}`)).join(', ');
      const row = el('tr', { 'data-shard': x.id },
        el('td', {}, ''), el('td', {}, x.address), el('td', { class: x.state === 'alive' ? '' : 'dead' }, x.state),
        el('td', { class: 'num', 'data-testid': 'shard-slots' }, x.slots), el('td', { class: 'num', 'data-testid': 'shard-bytes', 'data-value': x.bytes }, bytes(x.bytes)),
        el('td', { class: 'num' }, `${bytes(rate)}/s`),
        el('td', { 'data-testid': 'shard-checkpoint' }, x.last_checkpoint ? `${ago(x.last_checkpoint.at, s.at)} · ${x.last_checkpoint.path.split('/').pop()}` : '–'),
        el('td', { class: lost ? 'bad' : '' }, lost || (x.rolled_back ? `rolled back to ${x.rolled_back.to}` : '–')));
      const swatch = el('span', { style: `color:${colorOf(ids, x.id)}` }, '■ ');
      row.cells[0].append(swatch, el('span', { 'data-testid': 'shard-id' }, x.id));
      return row;
    }),
  );
  $('shard-count').textContent = s.shards.length;
}

/** One cell per slot, slots grouped by owner, colored by the owner's hue, darker for more bytes/s. */
function heatmap(s, ids) {
  const canvas = $('heatmap');
  const n = s.owners.length;
  const rate = new Float64Array(n);
  for (const loads of Object.values(s.load)) for (const l of loads) if (l.slot < n) rate[l.slot] = l.bytesPerSec;
  const order = [...Array(n).keys()].sort((a, b) => ids.indexOf(s.owners[a]) - ids.indexOf(s.owners[b]) || a - b);
  const cols = Math.max(1, Math.ceil(Math.sqrt(n * (canvas.width / canvas.height))));
  const rows = Math.max(1, Math.ceil(n / cols));
  const w = canvas.width / cols;
  const h = canvas.height / rows;
  const max = Math.max(1, ...rate);
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  order.forEach((slot, i) => {
    const x = (i % cols) * w;
    const y = Math.floor(i / cols) * h;
    // sqrt: a few hot slots should not leave every other cell blank.
    ctx.globalAlpha = 0.12 + 0.88 * Math.sqrt(rate[slot] / max);
    ctx.fillStyle = colorOf(ids, s.owners[slot]);
    ctx.fillRect(x, y, Math.max(1, w - (w > 4 ? 1 : 0)), Math.max(1, h - (h > 4 ? 1 : 0)));
  });
  ctx.globalAlpha = 1;
  canvas.dataset.cells = String(n);
  canvas.dataset.max = String(max);
  $('heatmap-legend').textContent = n ? `${n} slots in ${cols}×${rows} cells · darkest ${bytes(max)}/s · pale: idle` : 'no map yet';
}

function workerTable(s) {
  $('workers').tBodies[0].replaceChildren(
    ...s.workers.map((w) =>
      el('tr', { 'data-worker': w.id },
        el('td', { 'data-testid': 'worker-id' }, w.id), el('td', {}, w.state), el('td', { class: 'num', 'data-testid': 'worker-step' }, w.step),
        el('td', { class: 'num' }, w.train_epoch + 1), el('td', { class: 'num' }, w.loss === null ? '–' : w.loss.toFixed(4)),
        el('td', {}, w.held_out ? Object.entries(w.held_out).map(([k, v]) => `${k.replace('test_', '')} ${v.toFixed(4)}`).join(' ') : '–'),
        el('td', {}, w.backend)),
    ),
  );
  $('worker-count').textContent = s.workers.length;
  const d = s.data;
  if (d) {
    const held = Object.values(d.held).reduce((a, h) => a + h.length, 0);
    $('data').textContent = `${d.epochs} epochs × ${d.blocks_per_epoch} blocks · ${d.handed_out - held} of ${d.items} blocks done · ${held} in progress`;
    $('data-progress').max = d.items;
    $('data-progress').value = d.handed_out - held;
  }
}

/** A uPlot chart of `series` (name → values by sample), made again when the series change, else fed new data. */
function chart(id, times, series, fmt) {
  const box = $(id);
  const names = Object.keys(series);
  const key = names.join('\u0000');
  const data = [times, ...names.map((n) => series[n])];
  const c = charts[id];
  if (c && c.key === key) return c.plot.setData(data);
  if (c) c.plot.destroy();
  box.replaceChildren();
  const opts = {
    width: Math.max(300, box.clientWidth),
    height: 180,
    legend: { live: false },
    scales: { x: { time: true } },
    axes: [{}, { size: 70, values: (_, ticks) => ticks.map(fmt) }],
    series: [{}, ...names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true, points: { show: false } }))],
  };
  charts[id] = { key, plot: new uPlot(opts, data, box) };
}

function curves(h) {
  const times = h.samples.map((x) => x.at / 1000);
  const pick = (f) => {
    const out = {};
    h.samples.forEach((x, i) => {
      for (const [name, v] of f(x)) {
        out[name] ??= new Array(h.samples.length).fill(null);
        out[name][i] = v;
      }
    });
    return out;
  };
  chart('throughput', times, pick((x) => Object.entries(x.shards)), (v) => `${bytes(v)}/s`);
  chart('loss', times, pick((x) => Object.entries(x.workers).map(([w, v]) => [w, v.loss])), (v) => v.toFixed(3));
  chart('held-out', times, pick((x) => Object.entries(x.workers).flatMap(([w, v]) => Object.entries(v.held_out || {}).map(([k, m]) => [`${w} ${k.replace('test_', '')}`, m]))), (v) => v.toFixed(3));
  $('events').replaceChildren(...h.events.slice().reverse().map((e) => el('li', { class: e.kind }, `${new Date(e.at).toLocaleTimeString()} · ${e.text}`)));
}

async function refresh() {
  try {
    const [s, h] = await Promise.all([getJson('/api/status'), getJson('/api/history')]);
    everyS = h.every_s;
    const ids = s.shards.map((x) => x.id);
    header(s);
    shardTable(s, ids);
    heatmap(s, ids);
    workerTable(s);
    curves(h);
    $('error').textContent = '';
    const root = $('root');
    root.dataset.at = String(s.at);
    root.dataset.samples = String(++samples);
  } catch (err) {
    $('error').textContent = `(${err.message})`;
  } finally {
    setTimeout(refresh, everyS * 1000);
  }
}

refresh();
