import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';

/**
 * docs/testing.md says what each test file covers: a file added without an entry leaves a reader of
 * a failure with nothing to go on, and an entry for a file removed or renamed sends them to nothing.
 * Every test file `npm test` and `npm run test:bench` run (their globs: `*.test.ts` directly under
 * these folders) must be named by its path in the doc's list, and every test file the doc names, with
 * or without its folder, must exist.
 */
const ROOT = resolve(import.meta.dirname, '..', '..');
const FOLDERS = ['test/unit', 'test/e2e', 'test/bench'] as const;
const LIST_HEADING = '## What each test file covers';

const doc = readFileSync(join(ROOT, 'docs', 'testing.md'), 'utf8');

/** The test files on disk, as paths from the repository's root. */
function testFiles(): string[] {
  return FOLDERS.flatMap((folder) =>
    readdirSync(join(ROOT, folder), { withFileTypes: true })
      .filter((e) => e.isFile() && e.name.endsWith('.test.ts'))
      .map((e) => `${folder}/${e.name}`),
  ).sort();
}

/** The doc's list of what each file covers: from its heading to the next heading of its level. */
function listSection(): string {
  const start = doc.indexOf(`\n${LIST_HEADING}\n`);
  assert.ok(start >= 0, `docs/testing.md has no "${LIST_HEADING}"`);
  const rest = doc.slice(start + LIST_HEADING.length + 2);
  const end = rest.search(/^## /m);
  return end < 0 ? rest : rest.slice(0, end);
}

/** Test files named with their folder, e.g. `test/unit/limits.test.ts`. */
function pathsIn(text: string): Set<string> {
  return new Set([...text.matchAll(/test\/(?:unit|e2e|bench)\/[\w.-]+\.test\.ts/g)].map((m) => m[0]));
}

/** Test files named without a folder, e.g. `durable-queue.test.ts` in a sentence. */
function bareNamesIn(text: string): Set<string> {
  return new Set([...text.matchAll(/(?<![\w./-])[\w-][\w.-]*\.test\.ts/g)].map((m) => m[0]));
}

describe('docs/testing.md', () => {
  const files = testFiles();

  it('finds the test files', () => {
    assert.ok(files.filter((f) => f.startsWith('test/unit/')).length >= 100, `${files.length} files`);
    assert.ok(files.filter((f) => f.startsWith('test/e2e/')).length >= 50, `${files.length} files`);
    assert.ok(files.some((f) => f.startsWith('test/bench/')));
    assert.ok(files.includes('test/unit/testing-doc.test.ts'));
  });

  it('reads names as a reader would', () => {
    assert.deepEqual([...pathsIn('see `test/unit/a-b.test.ts`, `test/e2e/c.test.ts`: and test/helpers/d.ts')], [
      'test/unit/a-b.test.ts',
      'test/e2e/c.test.ts',
    ]);
    assert.deepEqual([...bareNamesIn('as in `a-b.test.ts`; not test/unit/c.test.ts')], ['a-b.test.ts']);
  });

  it('names every test file in its list of what each file covers', () => {
    const named = pathsIn(listSection());
    assert.deepEqual(
      files.filter((f) => !named.has(f)),
      [],
      'test files without an entry in docs/testing.md',
    );
  });

  it('names no test file that does not exist', () => {
    const onDisk = new Set(files);
    const basenames = new Set(files.map((f) => f.slice(f.lastIndexOf('/') + 1)));
    const gone = [
      ...[...pathsIn(doc)].filter((p) => !onDisk.has(p) || !existsSync(join(ROOT, p))),
      ...[...bareNamesIn(doc)].filter((n) => !basenames.has(n)),
    ];
    assert.deepEqual(gone, [], 'test files docs/testing.md names that do not exist');
  });
});
