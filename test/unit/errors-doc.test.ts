import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { ERRORS, isTransient, type ErrorCode } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The error registry (shared/errors.ts), its documentation (docs/errors.md) and the codes the
 * source emits are one list: a code added, removed or renamed in one place fails here until the
 * others follow.
 */
const ROOT = resolve(import.meta.dirname, '..', '..');
const REGISTRY = Object.keys(ERRORS) as ErrorCode[];

/** The rows of docs/errors.md's table: | `CODE` | HTTP | transient/final | emitted by | meaning | */
function documentedRows(): Map<string, { http: string; kind: string; by: string; meaning: string }> {
  const rows = new Map<string, { http: string; kind: string; by: string; meaning: string }>();
  for (const line of readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8').split('\n')) {
    const m = /^\| `([A-Za-z0-9_]+)` \| ([^|]*) \| ([^|]*) \| ((?:[^|\\]|\\.)*) \| (.*) \|$/.exec(line);
    if (!m) continue;
    const [, code, http, kind, by, meaning] = m as unknown as [string, string, string, string, string, string];
    assert.ok(!rows.has(code), `${code} is documented twice in docs/errors.md`);
    rows.set(code, { http: http.trim(), kind: kind.trim(), by: by.trim(), meaning: meaning.trim() });
  }
  return rows;
}

/** A file's code without its comment lines. */
function code(file: string): string {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => !/^\s*(\/\/|\/\*|\*)/.test(line))
    .join('\n');
}

/** Source files the services, the field client and the scripts run (tests and dependencies excluded). */
function sourceFiles(dir = ROOT): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (['node_modules', 'test', 'docs', 'certs', 'data'].includes(e.name) || e.name.startsWith('.')) continue;
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(path));
    else if (e.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

/**
 * Codes the source sets: `code: 'X'` (log lines, HTTP answers), `new FieldStreamError('X'`, the
 * contract's issue codes. Lower-case values (zod's `code: 'custom'`) are not error codes; a
 * comparison (`err.code === 'ENOENT'`) may be about another library's codes, and comparing an
 * ErrorCode with a string that is none is a compile error already.
 */
const CODE_USES = [
  /\bcode\s*:\s*['"]([A-Z][A-Z0-9_]*)['"]/g,
  /FieldStreamError\(\s*['"]([A-Z][A-Z0-9_]*)['"]/g,
  /isFieldStreamError\([^,()]+,\s*['"]([A-Z][A-Z0-9_]*)['"]/g,
  /\[ISSUE_CODE_PARAM\]:\s*['"]([A-Z][A-Z0-9_]*)['"]/g,
];

describe('error registry', () => {
  it('docs/errors.md documents every code of the registry, and only those', () => {
    const documented = documentedRows();
    const missing = REGISTRY.filter((c) => !documented.has(c));
    const unknown = [...documented.keys()].filter((c) => !(c in ERRORS));
    assert.deepEqual(missing, [], `codes of shared/errors.ts missing from docs/errors.md: ${missing.join(', ')}`);
    assert.deepEqual(unknown, [], `codes in docs/errors.md that shared/errors.ts does not have: ${unknown.join(', ')}`);
  });

  it("each documented row gives the registry's HTTP status and kind, who emits it, and what it means", () => {
    for (const [code, row] of documentedRows()) {
      const spec = ERRORS[code as ErrorCode];
      assert.equal(row.http, String(spec.http), `${code}: HTTP status in docs/errors.md`);
      assert.equal(row.kind, spec.transient ? 'transient' : 'final', `${code}: kind in docs/errors.md`);
      assert.ok(row.by.length > 0, `${code}: who emits it`);
      assert.ok(row.meaning.length > 0, `${code}: what it means`);
    }
  });

  it('every code the source uses is in the registry', () => {
    const used = new Map<string, string>();
    for (const file of sourceFiles()) {
      const text = code(file);
      for (const re of CODE_USES) for (const m of text.matchAll(re)) used.set(m[1] as string, relative(ROOT, file));
    }
    // The scan itself works: it finds codes of every tier.
    assert.ok(used.size >= 40, `the scan found only ${used.size} codes`);
    for (const code of ['CONTRACT_INVALID_MESSAGE', 'GATEWAY_SLOW_CONSUMER', 'DISTRIBUTOR_WRITE_FAILED', 'FIELD_QUEUE_CORRUPT', 'API_INTERNAL', 'BROKER_NOT_AUTHORIZED']) {
      assert.ok(used.has(code), `the scan misses ${code}`);
    }
    const unregistered = [...used].filter(([code]) => !(code in ERRORS)).map(([code, file]) => `${code} (${file})`);
    assert.deepEqual(unregistered, [], `codes used in the source but not in shared/errors.ts: ${unregistered.join(', ')}`);
  });

  it('every code of the registry is emitted somewhere (a code only compared against is not emitted)', () => {
    const texts = sourceFiles()
      .filter((f) => relative(ROOT, f) !== join('shared', 'errors.ts'))
      .map(code);
    const silent = REGISTRY.filter((code) => {
      const literal = new RegExp(`(?<!(?:===|!==)\\s*)['"]${code}['"]`);
      return !texts.some((t) => literal.test(t));
    });
    assert.deepEqual(silent, [], `codes in shared/errors.ts that nothing emits: ${silent.join(', ')}`);
  });

  it('says of each code whether it is transient, and the field client sends again exactly after those', () => {
    for (const code of REGISTRY) assert.equal(typeof ERRORS[code].transient, 'boolean', code);
    // The error frames the gateway sends: sent again after these...
    for (const code of ['GATEWAY_BROKER_UNAVAILABLE', 'GATEWAY_RATE_LIMITED'] as const) assert.equal(isTransient(code), true, code);
    // ...and set aside after these, which sending again cannot change.
    for (const code of ['CONTRACT_INVALID_MESSAGE', 'CONTRACT_MALFORMED_JSON', 'CONTRACT_BATCH_TOO_LARGE', 'GATEWAY_DEVICE_MISMATCH', 'API_INTERNAL'] as const) {
      assert.equal(isTransient(code), false, code);
    }
  });

  it('types the log line code as a registry code', () => {
    const log = createLogger('test', 'silent');
    log.warn({ code: 'GATEWAY_SLOW_CONSUMER' }, 'a registry code compiles');
    // @ts-expect-error -- not a registry code: `npx tsc --noEmit` fails if this line compiles
    log.warn({ code: 'NOT_A_CODE' }, 'an unknown code does not');
    // @ts-expect-error -- a number is not a code either (a WebSocket close code goes in closeCode)
    log.child({ component: 'x' }).info({ code: 1006 }, 'nor does a number');
  });
});
