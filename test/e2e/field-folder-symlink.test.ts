import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'cam-1';

/**
 * A local program that may write into the watched folder links a file name to a secret (the
 * device's signing key). The watcher refuses the link (FIELD_INPUT_INVALID) and leaves it in place;
 * nothing of the secret reaches the (compromised) gateway, while a regular file beside it is sent.
 */
describe('the watched folder refuses what is not a regular file', () => {
  const pki = makeTestPki([DEVICE]);
  const work = tempDir('folder-symlink');
  const logs = new LogCapture();
  const watched = join(work.dir, 'watched');
  const secret = join(work.dir, 'signing.key');
  const SECRET = `secret-${'k'.repeat(40)}`;
  const frames: string[] = [];
  let rogue: RogueGateway;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;
  before(async () => {
    writeFileSync(secret, SECRET);
    mkdirSync(watched);
    rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => frames.push(JSON.stringify(batch)));
    field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, { FIELD_WATCH_DIR: watched, FIELD_WATCH_INTERVAL_MS: '50' });
  });
  after(async () => {
    await field?.close();
    await rogue.close();
    pki.cleanup();
    work.cleanup();
  });

  it('sends a regular file, never a symbolic link or a FIFO, and leaves them in place', async () => {
    symlinkSync(secret, join(watched, 'innocent.txt'));
    symlinkSync(work.dir, join(watched, 'folder-link'));
    execFileSync('mkfifo', [join(watched, 'pipe.txt')]);
    writeFileSync(join(watched, 'ok.txt'), 'a regular file');
    await eventually(() => frames.some((f) => f.includes('ok.txt')) || undefined, 15_000, 'the regular file sent');
    await eventually(() => logs.lines.filter((l) => l.code === 'FIELD_INPUT_INVALID').length >= 3 || undefined, 10_000, 'three refusals logged');
    // More ticks: a refusal is logged once, not at every look.
    await new Promise((r) => setTimeout(r, 500));
    const refusals = logs.lines.filter((l) => l.code === 'FIELD_INPUT_INVALID');
    assert.deepEqual(refusals.map((l) => l.file).sort(), ['folder-link', 'innocent.txt', 'pipe.txt']);
    const all = frames.join('\n');
    assert.ok(!all.includes('innocent.txt'), 'the link was not taken');
    assert.ok(!all.includes(Buffer.from(SECRET).toString('base64').slice(0, 24)) && !all.includes(SECRET), 'nothing of the secret was sent');
    assert.equal(readlinkSync(join(watched, 'innocent.txt')), secret, 'the link is left in place');
    assert.ok(lstatSync(join(watched, 'pipe.txt')).isFIFO());
    assert.ok(existsSync(secret));
    assert.ok(!existsSync(join(watched, 'ok.txt')), 'the regular file was moved into the outbox');
  });
});
