import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseExposition as parseSamples } from './exposition.ts';
import { tempDir } from './pki.ts';

const mon = join(import.meta.dirname, '..', '..', 'monitoring');

/** The description of alert `name` in the shipped alerts.yml, as written (its template unexpanded). */
export function alertDescription(name: string): string {
  const found = new RegExp(`alert: ${name}\n[\\s\\S]*?description: "([^"]*)"`).exec(readFileSync(join(mon, 'prometheus', 'alerts.yml'), 'utf8'))?.[1];
  assert.ok(found, `alerts.yml has no alert ${name} with a description`);
  return found;
}

/**
 * `promtool test rules` (Prometheus's unit tests of rules: input series, then the alerts expected at
 * given times) of the shipped alerts.yml. Fails with promtool's own account of the difference.
 */
export function promtoolTestRules(tests: string): void {
  const tmp = tempDir('promtest');
  try {
    copyFileSync(join(mon, 'prometheus', 'alerts.yml'), join(tmp.dir, 'alerts.yml'));
    writeFileSync(join(tmp.dir, 'tests.yml'), `rule_files: [alerts.yml]\nevaluation_interval: 15s\ntests:\n${tests}`);
    try {
      execFileSync('promtool', ['test', 'rules', join(tmp.dir, 'tests.yml')], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      assert.fail(`promtool test rules failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
  } finally {
    tmp.cleanup();
  }
}

/**
 * promtool's input series of the metrics named, as a service exposes them over successive scrapes
 * (each exposition repeated `times`, one scrape every 15 s): a series missing from a scrape is `_`,
 * as Prometheus has no sample of it then.
 */
export function scrapedSeries(scrapes: ReadonlyArray<{ text: string; times: number }>, names: readonly string[]): string {
  const parsed = scrapes.map(({ text, times }) => ({ samples: parseSamples(text), times }));
  const keys = new Set(parsed.flatMap(({ samples }) => [...samples.keys()].filter((k) => names.some((n) => k.startsWith(`${n}{`) || k === n))));
  assert.ok(keys.size > 0, `no series of ${names.join(', ')}`);
  return [...keys]
    .map((k) => {
      const values = parsed.flatMap(({ samples, times }) => Array<string>(times).fill(samples.has(k) ? String(samples.get(k)) : '_'));
      return `      - series: '${k}'\n        values: '${values.join(' ')}'\n`;
    })
    .join('');
}
