import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import type { z } from 'zod';
import { GatewayConfigSchema } from '../../dmz/gateway/config.ts';
import { EmbeddedConfigSchema } from '../../embedded/config.ts';
import { FieldClientConfigSchema } from '../../field-client/src/config.ts';
import { BrokerExporterConfigSchema } from '../../internal-network/broker-exporter/config.ts';
import { CommandApiConfigSchema } from '../../internal-network/command-api/config.ts';
import { ConsoleConfigSchema } from '../../internal-network/console/config.ts';
import { DistributorConfigSchema } from '../../internal-network/distributor/config.ts';
import { AdminSettingsSchema } from '../../scripts/admin/paths.ts';

/**
 * docs/configuration.md says it lists every setting, and .env.example that it does: each setting a
 * program's schema reads, each one a compose file interpolates and each one of .env.example is a row
 * of its table, and the row's "used by" names every program whose schema reads it.
 */
const ROOT = resolve(import.meta.dirname, '..', '..');
const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');

/** The table's rows: the variables of the first cell, and the "used by" cell. */
function rows(): Array<{ names: string[]; usedBy: string }> {
  return read('docs/configuration.md')
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((l) => {
      const cells = l.split(/(?<!\\)\|/).map((c) => c.trim());
      return { names: [...(cells[1] ?? '').matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]!), usedBy: cells[2] ?? '' };
    });
}

/** Each program's settings, by the name its "used by" cell gives it. */
const SCHEMAS: Array<[string, z.ZodObject]> = [
  ['gateway', GatewayConfigSchema],
  ['distributor', DistributorConfigSchema],
  ['command API', CommandApiConfigSchema],
  ['console', ConsoleConfigSchema],
  ['broker exporter', BrokerExporterConfigSchema],
  ['field client', FieldClientConfigSchema],
  ['npm start', EmbeddedConfigSchema],
  ['fieldstream-admin', AdminSettingsSchema],
];

describe('docs/configuration.md', () => {
  const table = rows();
  const documented = new Set(table.flatMap((r) => r.names));

  it("has a row for every setting a program reads, whose 'used by' names that program", () => {
    const problems: string[] = [];
    for (const [program, schema] of SCHEMAS) {
      for (const name of Object.keys(schema.shape)) {
        const usedBy = table.filter((r) => r.names.includes(name)).map((r) => r.usedBy);
        if (usedBy.length === 0) problems.push(`${name} (${program}): no row`);
        else if (!usedBy.some((u) => u === 'all' || u.includes(program))) problems.push(`${name}: "used by" lacks ${program} (${usedBy.join('; ')})`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it("names in 'used by' the tools that read a setting without a schema", () => {
    // These read process.env themselves (an option's default, the address of a running client):
    // a reader of the table must learn that the setting moves them too.
    const READERS: Array<[string, string]> = [
      ['npm run readings', 'scripts/readings.ts'],
      ['field client', 'field-client/src/cli.ts'],
      ['scripts', 'scripts/pki.ts'],
    ];
    const problems: string[] = [];
    for (const [program, file] of READERS) {
      for (const [, name] of read(file).matchAll(/process\.env\.([A-Z][A-Z0-9_]*)/g)) {
        const usedBy = table.filter((r) => r.names.includes(name!)).map((r) => r.usedBy);
        if (usedBy.length === 0) problems.push(`${name} (${file}): no row`);
        else if (!usedBy.some((u) => u.includes(program))) problems.push(`${name}: "used by" lacks ${program} (${usedBy.join('; ')})`);
      }
    }
    assert.deepEqual(problems, []);
  });

  it('has a row for every setting a compose file interpolates', () => {
    const missing: string[] = [];
    for (const file of ['docker-compose.dmz.yml', 'docker-compose.internal.yml', 'field-client/docker-compose.yml']) {
      // ${NAME...} is compose's; $${NAME} is the container shell's own variable.
      for (const [, name] of read(file).matchAll(/(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)/g)) {
        if (!documented.has(name!)) missing.push(`${file}: ${name}`);
      }
    }
    assert.deepEqual([...new Set(missing)], []);
  });

  it('and .env.example name the same settings', () => {
    const example = new Set([...read('.env.example').matchAll(/^(?:# ?)?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!));
    assert.deepEqual([...example].filter((n) => !documented.has(n)), [], 'in .env.example, not in docs/configuration.md');
    assert.deepEqual([...documented].filter((n) => !example.has(n)), [], 'in docs/configuration.md, not in .env.example');
  });
});
