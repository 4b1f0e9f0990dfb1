import { spawn, spawnSync } from 'node:child_process';
import { request } from 'node:http';

/** One sample of Prometheus's text format: `name{labels} value`. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** An HTTP request to a metrics listener (`address` host:port): its status, content type and body. */
export function scrape(address: string, path = '/metrics', method = 'GET'): Promise<{ status: number; contentType: string; body: string }> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path, method, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from http://${address}${path} in 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Whether Debian's `promtool` (package prometheus) is on the PATH. */
export function havePromtool(): boolean {
  return spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * `promtool check metrics` on `text` (its stdin): resolves when it passes,
 * rejects with what promtool said (its lint problems) when it does not, or
 * with how to install it when it is missing.
 */
export function promtoolCheck(text: string): Promise<void> {
  if (!havePromtool()) return Promise.reject(new Error('promtool is not installed: `apt-get install prometheus` (Debian) provides it; scripts/test.sh installs it'));
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`promtool check metrics exited with ${code}:\n${out}`))));
    child.stdin.end(text);
  });
}

/** The samples of a page in Prometheus's text format (comments skipped; label values unescaped). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels`. */
export function total(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}

/** The samples named `name`, by the value of their label `label`. */
export function byLabel(samples: readonly Sample[], name: string, label: string, labels: Record<string, string> = {}): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) out.set(s.labels[label]!, (out.get(s.labels[label]!) ?? 0) + s.value);
  return out;
}
