import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually } from '../helpers/ws-device.ts';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { fieldClientProcess } from '../helpers/field.ts';
import { tempDir } from '../helpers/pki.ts';

const DEVICE = 'dev-killed';
const CHUNK_BYTES = 64 * 1024;
const CHUNKS = 400;
/** FIELD_FILE_WINDOW's default: chunks of a file sent ahead of the first one not committed */
const WINDOW = 4;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * The field client as its container runs it (its own process), SIGKILLed three times while it sends
 * a file of 400 chunks taken from its watched folder, and started again on the same data folder each
 * time. Each start goes on from the chunks committed in order before the kill (ID.progress): it
 * sends the rest, not the file from its first chunk, and skips none (the distributor checks the
 * SHA-256 of the whole file before it stores it). The device lets go of its copy once all of it is
 * stored.
 */
describe('a field client SIGKILLed in the middle of a file', () => {
  let fx: EmbeddedFixture;
  const tmp = tempDir('field-file-kill');
  before(async () => {
    fx = await startEmbeddedFixture([DEVICE]);
  });
  after(async () => {
    await fx.stop();
    tmp.cleanup();
  });

  it('goes on at each start from the chunks committed before the kill, and the file is stored whole, once', async () => {
    const dataDir = join(tmp.dir, 'data');
    const watched = join(tmp.dir, 'watched');
    mkdirSync(watched);
    const { process: field, httpPort } = await fieldClientProcess({
      paths: fx.pki.paths,
      deviceId: DEVICE,
      gatewayUrl: fx.pipeline.gatewayUrl,
      dataDir,
      logFile: join(tmp.dir, 'field.log'),
      env: { FIELD_FILE_CHUNK_BYTES: String(CHUNK_BYTES), FIELD_WATCH_DIR: watched, FIELD_WATCH_INTERVAL_MS: '100' },
    });
    const outgoing = join(dataDir, 'outgoing');
    /** chunks committed in order, as the client saved them for its next start */
    const progress = () => {
      const f = existsSync(outgoing) ? readdirSync(outgoing).find((n) => n.endsWith('.progress')) : undefined;
      return f ? Number(readFileSync(join(outgoing, f), 'utf8')) : 0;
    };
    /** chunks sent since this start (the status counts what this process sent: no readings here) */
    const sent = async () => ((await (await fetch(`http://127.0.0.1:${httpPort}/status`)).json()) as { sent: number }).sent;
    const content = randomBytes(CHUNKS * CHUNK_BYTES - 1000);
    const stored = join(fx.data.files, DEVICE, 'survey.bin');
    try {
      await field.start();
      writeFileSync(join(watched, 'survey.bin'), content);
      let saved = 0;
      for (const at of [60, 160, 260]) {
        await eventually(() => (progress() >= at ? true : undefined), 60_000, `${at} chunks committed`);
        await field.kill();
        saved = progress();
        assert.ok(saved >= at && saved < CHUNKS, `killed mid-file: ${saved} chunks committed`);
        await field.start();
        await eventually(() => (progress() > saved ? true : undefined), 60_000, 'chunks committed after the start');
      }
      await eventually(() => (existsSync(stored) ? true : undefined), 60_000, 'the file stored');
      assert.equal(sha(readFileSync(stored)), sha(content));
      assert.deepEqual(readdirSync(join(fx.data.files, DEVICE)), ['survey.bin'], 'stored once');
      await eventually(() => (readdirSync(outgoing).length === 0 ? true : undefined), 10_000, 'the outbox copy gone once all of it is stored');
      // The last start sent what was left after its kill: the chunks awaiting their receipts then
      // (at most the window) go again, copies the distributor recognises. From the first chunk,
      // it would have sent all 400.
      const last = await sent();
      assert.ok(last >= CHUNKS - saved && last <= CHUNKS - saved + 2 * WINDOW, `after the last kill at ${saved} chunks committed, ${last} chunks sent`);
    } finally {
      await field.stop();
    }
  });
});
