import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, it } from 'node:test';

/**
 * The README and the docs link to each other, often to a section: a section renamed or moved must
 * not leave a link that lands at the top of a long page, or nowhere. Anchors are the slugs GitHub
 * gives headings (lower case, punctuation dropped, spaces to hyphens, -1, -2 … for repeats).
 */
const root = join(import.meta.dirname, '..', '..');
const markdown = execFileSync('git', ['ls-files', '*.md'], { cwd: root, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f !== '' && !f.startsWith('node_modules/'));

/** The lines of a Markdown file outside fenced code blocks. */
function prose(text: string): string[] {
  const out: string[] = [];
  let fence: string | undefined;
  for (const line of text.split('\n')) {
    const m = /^\s*(```+|~~~+)/.exec(line);
    if (m) {
      const marker = (m[1] as string).slice(0, 3);
      if (fence === undefined) fence = marker;
      else if (fence === marker) fence = undefined;
      continue;
    }
    if (fence === undefined) out.push(line);
  }
  return out;
}

/** GitHub's anchor for a heading's text. */
export function slug(heading: string): string {
  return heading
    .replace(/`/g, '')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchorsOf(file: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const line of prose(readFileSync(join(root, file), 'utf8'))) {
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[1] as string);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

/** Every link of a file to a file of the repository, with the line it is on. */
function linksOf(file: string): Array<{ target: string; line: number }> {
  const links: Array<{ target: string; line: number }> = [];
  prose(readFileSync(join(root, file), 'utf8')).forEach((line, i) => {
    // Inline code is not a link.
    const text = line.replace(/`[^`]*`/g, '');
    for (const m of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1] as string;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: …
      links.push({ target, line: i + 1 });
    }
  });
  return links;
}

describe("the README's table of where things are", () => {
  it('has a row for every top-level folder of the repository', () => {
    const tracked = execFileSync('git', ['ls-files'], { cwd: root, encoding: 'utf8' }).split('\n');
    const folders = new Set(tracked.filter((f) => f.includes('/')).map((f) => f.split('/')[0] as string));
    const section = readFileSync(join(root, 'README.md'), 'utf8').split('## Where things are')[1]?.split('\n## ')[0] ?? '';
    const firstCells = section.split('\n').filter((l) => l.startsWith('| `')).map((l) => l.split('|')[1] ?? '');
    const named = (folder: string) => firstCells.some((c) => [...c.matchAll(/`([^`]+)`/g)].some((m) => (m[1] as string).startsWith(`${folder}/`)));
    assert.ok(folders.size >= 10, `${folders.size} folders`);
    assert.deepEqual([...folders].filter((f) => !named(f)).sort(), []);
  });
});

describe('the links of the README and the docs', () => {
  it('finds the Markdown files', () => {
    assert.ok(markdown.includes('README.md'));
    assert.ok(markdown.filter((f) => f.startsWith('docs/')).length >= 10);
  });

  it('computes anchors as GitHub does', () => {
    assert.equal(slug('Fleet: 10,000 devices through Caddy'), 'fleet-10000-devices-through-caddy');
    assert.equal(slug("The field client's durable queue: `npm run bench:queue`"), 'the-field-clients-durable-queue-npm-run-benchqueue');
    assert.equal(slug('Sustained: `npm run bench -- --long`'), 'sustained-npm-run-bench------long');
  });

  it('lead to files that exist and to sections that exist', () => {
    const anchors = new Map<string, Set<string>>();
    const broken: string[] = [];
    for (const file of markdown) {
      for (const { target, line } of linksOf(file)) {
        const [path = '', anchor] = target.split('#', 2);
        const to = path === '' ? file : relative(root, join(root, dirname(file), decodeURI(path)));
        if (!existsSync(join(root, to))) {
          broken.push(`${file}:${line}: ${target} (no such file)`);
          continue;
        }
        if (anchor === undefined || !to.endsWith('.md') || statSync(join(root, to)).isDirectory()) continue;
        if (!anchors.has(to)) anchors.set(to, anchorsOf(to));
        if (!anchors.get(to)?.has(anchor)) broken.push(`${file}:${line}: ${target} (no such section)`);
      }
    }
    assert.deepEqual(broken, []);
  });
});
