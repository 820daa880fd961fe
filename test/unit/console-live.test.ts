import assert from 'node:assert/strict';
import { createServer, get, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EventEmitter } from 'node:events';
import { after, before, describe, it, mock } from 'node:test';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import type { PipelineView } from '../../internal-network/console/pipeline/pipeline-view.ts';
import { LiveHub } from '../../internal-network/console/web/live.ts';
import { CONSOLE } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The console's live stream (docs/console.md, "The API") over a real HTTP connection to a browser
 * on a slow link: a fleet whose snapshot is larger than CONSOLE.liveMaxBufferedBytes reaches it
 * whole, the updates after it too, while the console holds a bounded part of it in memory.
 */

const limits = CONSOLE as { liveMaxBufferedBytes: number };
const view: PipelineView = { at: 0, services: [], brokers: [], bridgeConnected: null, readingsPerSecond: null, writeFailures: null, deadLetters: null, feedDropped: null };

/** Reads a response at about `bytesPerSecond`, pausing it (so the socket pushes back) when ahead. */
function readSlowly(res: IncomingMessage, bytesPerSecond: number): { text: () => string; ended: Promise<void> } {
  const start = Date.now();
  let got = 0;
  const parts: Buffer[] = [];
  res.on('data', (c: Buffer) => {
    parts.push(c);
    got += c.length;
    const aheadMs = (got / bytesPerSecond) * 1000 - (Date.now() - start);
    if (aheadMs > 0) {
      res.pause();
      setTimeout(() => res.resume(), aheadMs);
    }
  });
  const ended = new Promise<void>((resolve) => {
    res.on('close', resolve);
    res.on('error', () => resolve());
  });
  return { text: () => Buffer.concat(parts).toString('utf8'), ended };
}

/** The complete events in what was read so far. */
const eventsIn = (text: string) =>
  text
    .split('\n\n')
    .slice(0, -1)
    .filter((b) => b.startsWith('event: '))
    .map((b) => ({ event: /^event: (.+)$/m.exec(b)?.[1], data: /^data: (.+)$/m.exec(b)?.[1] ?? '' }));

describe('the console live stream to a slow browser', () => {
  const bound = limits.liveMaxBufferedBytes;
  const devices = 100_000;
  const fleet = new Fleet({ staleAfterMs: 180_000 });
  for (let i = 0; i < devices; i++) fleet.register(`meter-${String(i).padStart(6, '0')}`);
  const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
  let server: ReturnType<typeof createServer>;
  let port = 0;
  /** the most the console held unsent for the stream at any write */
  let mostBuffered = 0;

  before(async () => {
    // Lowered so that the snapshot (some 10 MB) is many times the bound on any link.
    limits.liveMaxBufferedBytes = 1024 * 1024;
    server = createServer((_req, res: ServerResponse) => {
      const write = res.write.bind(res) as (chunk: string) => boolean;
      res.write = ((chunk: string) => {
        mostBuffered = Math.max(mostBuffered, res.writableLength);
        return write(chunk);
      }) as typeof res.write;
      void hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, undefined);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    limits.liveMaxBufferedBytes = bound;
    hub.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('gets a snapshot larger than the bound whole, then the updates, with a bounded part of it held by the console', async () => {
    const res = await new Promise<IncomingMessage>((resolve) => get(`http://127.0.0.1:${port}/`, resolve));
    const reader = readSlowly(res, 4 * 1024 * 1024);
    // Devices change all along: every flush has an update for the stream, the first ones while the
    // snapshot is still on its way.
    let n = 0;
    const changes = setInterval(() => fleet.apply({ measurement: 'device_status', tags: { device: `meter-${String(n++ % devices).padStart(6, '0')}`, gateway: 'gw-1' }, fields: { state: 'online' }, time: Date.now() }), 100);
    try {
      let ended = false;
      void reader.ended.then(() => (ended = true));
      const deadline = Date.now() + 60_000;
      for (;;) {
        const seen = eventsIn(reader.text());
        const at = seen.findIndex((e) => e.event === 'snapshot');
        if (at >= 0 && seen.slice(at + 1).some((e) => e.event === 'devices')) {
          const snapshot = JSON.parse(seen[at]!.data) as { devices: unknown[]; security: unknown; pipeline: unknown; anomalies: unknown[] };
          assert.equal(snapshot.devices.length, devices, 'every device in the snapshot');
          assert.ok(seen[at]!.data.length > 4 * limits.liveMaxBufferedBytes, `a snapshot of ${seen[at]!.data.length} bytes, over the bound`);
          assert.deepEqual(snapshot.pipeline, view);
          assert.equal(seen.filter((e) => e.event === 'snapshot').length, 1, 'one snapshot: never disconnected and sent again');
          break;
        }
        assert.equal(ended, false, `the stream was ended after ${reader.text().length} bytes, before its snapshot and an update`);
        assert.ok(Date.now() < deadline, 'the snapshot and an update within a minute');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(mostBuffered <= limits.liveMaxBufferedBytes, `the console held at most ${mostBuffered} bytes unsent`);
    } finally {
      clearInterval(changes);
      res.destroy();
    }
  });

  it('is still disconnected when it stops reading what follows the snapshot', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const small = new Fleet({ staleAfterMs: 180_000 });
    small.register('meter-1');
    const quiet = new LiveHub({ fleet: small, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
    // A response whose socket takes everything at once until the test says it has stopped reading.
    const res = Object.assign(new EventEmitter(), { destroyed: false, writableEnded: false, writableLength: 0, writeHead: () => res, write: () => true, end: () => undefined, destroy: () => void (res.destroyed = true) });
    try {
      await quiet.open(res as unknown as ServerResponse, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, undefined);
      assert.equal(quiet.size, 1);
      res.writableLength = limits.liveMaxBufferedBytes + 1;
      small.apply({ measurement: 'device_status', tags: { device: 'meter-1', gateway: 'gw-1' }, fields: { state: 'online' }, time: Date.now() });
      mock.timers.tick(CONSOLE.liveFlushMs);
      assert.equal(res.destroyed, true, 'disconnected');
      assert.equal(quiet.size, 0);
    } finally {
      quiet.close();
      mock.timers.reset();
    }
  });
});
