import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { TestBrowser } from '../helpers/browser.ts';

// The browser helper the console's tests rely on: if it stopped seeing CSP violations or console
// errors, those tests would pass on a broken page. Static files only, no server.

const CSP = `<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'self'; style-src 'self'">`;
let dir: string;
let browser: TestBrowser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fs-browser-'));
  writeFileSync(join(dir, 'ok.js'), `document.getElementById('out').textContent = 'ran';`);
  writeFileSync(join(dir, 'clean.html'), `<!doctype html><html><head>${CSP}<script src="ok.js" defer></script></head><body><p id="out">not run</p></body></html>`);
  writeFileSync(join(dir, 'inline.html'), `<!doctype html><html><head>${CSP}</head><body><p id="out">x</p><script>document.title = 'inline ran'</script><p style="color: red">styled</p></body></html>`);
  writeFileSync(join(dir, 'noisy.js'), `console.error('something broke'); setTimeout(() => { throw new Error('nobody caught this'); });`);
  writeFileSync(join(dir, 'noisy.html'), `<!doctype html><html><head>${CSP}<script src="noisy.js"></script></head><body></body></html>`);
  browser = await TestBrowser.launch({ artifacts: join(dir, 'shots') });
});

after(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

const url = (name: string) => pathToFileURL(join(dir, name)).href;

test('a clean page reports nothing, runs its allowed script, and is saved as a screenshot', async () => {
  const page = await browser.open(url('clean.html'));
  assert.equal(await page.page.textContent('#out'), 'ran');
  const shot = await page.screenshot('clean page');
  assert.equal(shot, join(dir, 'shots', 'clean-page.png'));
  assert.ok(existsSync(shot));
  assert.deepEqual([...readFileSync(shot).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG file');
  page.assertClean();
  await page.close();
});

test('an inline script and an inline style are blocked and reported as CSP violations', async () => {
  const page = await browser.open(url('inline.html'));
  await page.page.waitForFunction(() => true);
  assert.notEqual(await page.page.title(), 'inline ran', 'the inline script was blocked');
  const directives = page.problems.cspViolations.join('\n');
  // Seen both ways: the securitypolicyviolation event (its directive) and chromium's console message.
  assert.match(directives, /script-src-elem blocked inline/);
  assert.match(directives, /style-src-attr blocked inline/);
  assert.match(directives, /inline script.*Content Security Policy directive/);
  assert.match(directives, /inline style.*Content Security Policy directive/);
  assert.throws(() => page.assertClean(), /CSP/);
  // Allowing console errors never allows a CSP violation.
  assert.throws(() => page.assertClean([/.*/]), /CSP/);
  await page.close();
});

test('console errors and uncaught exceptions are recorded; expected console errors can be allowed', async () => {
  const page = await browser.open(url('noisy.html'));
  await page.page.waitForTimeout(100);
  assert.ok(page.problems.consoleErrors.some((e) => e.includes('something broke')));
  assert.ok(page.problems.pageErrors.some((e) => e.includes('nobody caught this')));
  assert.throws(() => page.assertClean([/something broke/]), /uncaught/);
  assert.deepEqual(page.unexpected([/something broke/]).filter((p) => p.startsWith('console:')), []);
  await page.close();
});
