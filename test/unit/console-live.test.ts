import assert from 'node:assert/strict';
import { createServer, get, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EventEmitter } from 'node:events';
import { after, before, describe, it, mock } from 'node:test';
import { Fleet } from '../../internal-network/console/fleet/fleet.ts';
import type { PipelineView } from '../../internal-network/console/pipeline/pipeline-view.ts';
import { LiveHub } from '../../internal-network/console/web/live.ts';
import { liveRow } from '../../internal-network/console/web/live-snapshot.ts';
import { CONSOLE, LIMITS } from '../../shared/limits.ts';
import { createLogger } from '../../shared/logger.ts';

/**
 * The console's live stream (docs/console.md, "The API") over a real HTTP connection to a browser
 * on a slow link: a fleet whose snapshot is larger than CONSOLE.liveMaxBufferedBytes reaches it
 * whole, the updates after it too, while the console holds a bounded part of it in memory.
 */

const limits = CONSOLE as { liveMaxBufferedBytes: number };
const view: PipelineView = { at: 0, services: [], brokers: [], bridgeConnected: null, readingsPerSecond: null, writeFailures: null, deadLetters: null, feedDropped: null, feedRefused: null, feedConnected: null, feedDownSince: null };

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
      void hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, undefined, true);
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

  it('gets a snapshot larger than the bound whole, in events of at most CONSOLE.liveSnapshotRowsPerEvent devices, then the updates, with a bounded part of it held by the console', async () => {
    const perEvent = CONSOLE.liveSnapshotRowsPerEvent;
    assert.ok(Number.isInteger(perEvent) && perEvent > 0 && perEvent < devices / 10, `parts of ${perEvent} devices`);
    const res = await new Promise<IncomingMessage>((resolve) => get(`http://127.0.0.1:${port}/`, resolve));
    const reader = readSlowly(res, 4 * 1024 * 1024);
    // Devices change all along, at both ends of the fleet: every flush has an update for the stream,
    // the first ones while the snapshot is still on its way (changing rows of parts already sent and
    // of parts still to come).
    let n = 0;
    const change = () => {
      const i = n++;
      const at = i % 2 === 0 ? i % devices : devices - 1 - (i % devices);
      fleet.apply({ measurement: 'device_status', tags: { device: `meter-${String(at).padStart(6, '0')}`, gateway: `gw-${i}` }, fields: { state: i % 4 < 2 ? 'online' : 'offline' }, time: Date.now() });
    };
    let changes: NodeJS.Timeout | undefined = setInterval(change, 100);
    try {
      let ended = false;
      void reader.ended.then(() => (ended = true));
      const deadline = Date.now() + 60_000;
      let seen: ReturnType<typeof eventsIn> = [];
      for (;;) {
        seen = eventsIn(reader.text());
        const at = seen.findIndex((e) => e.event === 'snapshot' || e.event === 'snapshot-end');
        if (at >= 0 && seen.slice(at + 1).some((e) => e.event === 'devices')) break;
        assert.equal(ended, false, `the stream was ended after ${reader.text().length} bytes, before its snapshot and an update`);
        assert.ok(Date.now() < deadline, 'the snapshot and an update within a minute');
        await new Promise((r) => setTimeout(r, 100));
      }
      // Every event a browser waits for is a bounded part of the fleet: a page on a slow link hears
      // from its stream every part, not once the whole 20 MB of 100,000 devices has come.
      const deviceCounts = seen.map((e) => (JSON.parse(e.data) as { devices?: unknown[]; rows?: unknown[] }).devices?.length ?? 0);
      assert.ok(Math.max(...deviceCounts) <= perEvent, `events of at most ${perEvent} devices: the largest had ${Math.max(...deviceCounts)}`);
      const end = seen.findIndex((e) => e.event === 'snapshot-end');
      assert.ok(end > 0, 'a snapshot in parts, ended by snapshot-end');
      assert.deepEqual(new Set(seen.slice(0, end).map((e) => e.event)), new Set(['snapshot-part']), 'nothing but its parts before its end');
      assert.equal(seen.filter((e) => e.event === 'snapshot' || e.event === 'snapshot-end').length, 1, 'one snapshot: never disconnected and sent again');
      const last = JSON.parse(seen[end]!.data) as { devices: unknown[]; total: number; security: unknown; pipeline: unknown; anomalies: unknown[] };
      assert.equal(last.total, devices);
      assert.deepEqual(last.pipeline, view);
      assert.ok(seen.slice(0, end + 1).reduce((sum, e) => sum + e.data.length, 0) > 4 * limits.liveMaxBufferedBytes, 'a snapshot over the bound');

      // What the page does: the parts make the fleet at the snapshot's end, the updates go over it.
      // Once the changes stop and a flush has passed, it holds the console's fleet exactly: no update
      // lost, none overwritten by a part sent before it.
      clearInterval(changes);
      changes = undefined;
      await new Promise((r) => setTimeout(r, 2 * CONSOLE.liveFlushMs + 200));
      const model = new Map<string, unknown>();
      const parts: Array<{ id: string }> = [];
      for (const e of eventsIn(reader.text())) {
        const data = JSON.parse(e.data) as { devices: Array<{ id: string }>; rows: Array<{ id: string }>; total: number };
        if (e.event === 'snapshot-part') parts.push(...data.devices);
        if (e.event === 'snapshot-end') {
          parts.push(...data.devices);
          assert.equal(parts.length, data.total, 'the parts hold as many devices as the snapshot says');
          for (const r of parts) model.set(r.id, r);
        }
        if (e.event === 'devices') for (const r of data.rows) model.set(r.id, r);
      }
      assert.equal(model.size, devices, 'every device, once');
      assert.ok(n > 10, `${n} changes made`);
      const want = new Map(fleet.rows().map((r) => [r.id, r]));
      const differ = [...want].filter(([id, r]) => JSON.stringify(model.get(id)) !== JSON.stringify(r)).map(([id]) => id);
      assert.deepEqual(differ, [], 'the page holds the fleet as the console has it');
      assert.ok(mostBuffered <= limits.liveMaxBufferedBytes, `the console held at most ${mostBuffered} bytes unsent`);
    } finally {
      if (changes) clearInterval(changes);
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

/**
 * A browser that stops reading its stream (a hostile one keeps its TCP window closed) must not leave
 * the console holding anything once the stream no longer counts against the limits: at the end of
 * its login, or when its snapshot stalls for CONSOLE.liveDrainTimeoutMs.
 */
describe('a live stream whose browser stopped reading', () => {
  const timings = CONSOLE as { liveDrainTimeoutMs: number };
  const drainTimeout = timings.liveDrainTimeoutMs;
  /** A snapshot (some 10 MB) far larger than what the loopback sockets hold: it stalls mid-way. */
  const fleet = new Fleet({ staleAfterMs: 180_000 });
  for (let i = 0; i < 100_000; i++) fleet.register(`meter-${String(i).padStart(6, '0')}`);

  /** A hub and a server for one stream; `opened` settles once `open()` let go of its snapshot. */
  async function streamTo(read: (res: IncomingMessage) => void) {
    let alive = true;
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => alive }, createLogger('test', 'silent'));
    let served: { res: ServerResponse; opened: Promise<'opened'> } | undefined;
    const server = createServer((_req, res) => {
      served = { res, opened: hub.open(res, { sessionId: 's', user: 'viewer', expiresAt: Date.now() + 600_000 }, undefined, true).then(() => 'opened' as const) };
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const req = get({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: '/' }, read);
    req.on('error', () => {});
    await waitFor(() => served !== undefined);
    return {
      hub,
      served: served!,
      logout: () => {
        hub.endSession('s');
        alive = false;
      },
      async close() {
        hub.close();
        req.destroy();
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
      },
    };
  }

  const waitFor = async (ok: () => boolean, ms = 10_000) => {
    for (const end = Date.now() + ms; !ok(); await new Promise((r) => setTimeout(r, 20))) assert.ok(Date.now() < end, 'in time');
  };
  const settled = (p: Promise<unknown>, ms: number) => Promise.race([p, new Promise((r) => setTimeout(() => r('still waiting'), ms))]);

  after(() => {
    timings.liveDrainTimeoutMs = drainTimeout;
  });

  it('is let go at its logout: its socket destroyed, nothing unsent held, its snapshot given up', async () => {
    const s = await streamTo((res) => res.pause());
    try {
      // Stalled mid-snapshot: bytes waiting for a socket that takes none.
      await waitFor(() => s.served.res.writableLength > 0);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(s.hub.size, 1);
      assert.ok(s.served.res.writableLength > 0, 'the snapshot stalled');
      s.logout();
      assert.equal(await settled(s.served.opened, 2_000), 'opened', 'the snapshot waits no longer (its rows let go)');
      const { res } = s.served;
      assert.deepEqual({ streams: s.hub.size, destroyed: res.destroyed && (res.socket?.destroyed ?? true), unsent: res.writableLength }, { streams: 0, destroyed: true, unsent: 0 });
    } finally {
      await s.close();
    }
  });

  it(`is let go when its snapshot stalls for CONSOLE.liveDrainTimeoutMs (${drainTimeout} ms), its login still on`, async () => {
    timings.liveDrainTimeoutMs = 1_000;
    const s = await streamTo((res) => res.pause());
    try {
      await waitFor(() => s.served.res.writableLength > 0);
      assert.equal(s.hub.size, 1, 'counted while it waits');
      assert.equal(await settled(s.served.opened, 4_000), 'opened', 'given up past the deadline');
      const { res } = s.served;
      // The socket lets go of its buffer as it closes, a moment after it is destroyed.
      await waitFor(() => res.writableLength === 0, 1_000).catch(() => {});
      assert.deepEqual({ streams: s.hub.size, destroyed: res.destroyed, unsent: res.writableLength }, { streams: 0, destroyed: true, unsent: 0 });
    } finally {
      timings.liveDrainTimeoutMs = drainTimeout;
      await s.close();
    }
  });

  it('a browser that reads gets a clean end at its logout, its snapshot whole, with a deadline far shorter than the snapshot takes', async () => {
    // One piece at a time is taken well within the deadline, though the whole snapshot is not.
    timings.liveDrainTimeoutMs = 1_000;
    let text = '';
    let how: Promise<string> = Promise.resolve('not connected');
    const s = await streamTo((res) => {
      const reader = readSlowly(res, 4 * 1024 * 1024);
      how = new Promise((resolve) => {
        res.on('end', () => resolve('end'));
        res.on('aborted', () => resolve('aborted'));
        res.on('error', () => resolve('error'));
      });
      const poll = setInterval(() => (text = reader.text()), 50);
      res.on('close', () => clearInterval(poll));
    });
    try {
      await waitFor(() => eventsIn(text).some((e) => e.event === 'snapshot-end'), 30_000);
      assert.equal(s.hub.size, 1, 'not taken for a browser that stopped reading');
      s.logout();
      assert.equal(await settled(how, 5_000), 'end', 'a clean end of the response');
      assert.equal(s.hub.size, 0);
    } finally {
      timings.liveDrainTimeoutMs = drainTimeout;
      await s.close();
    }
  });
});

describe("the page's live stream timeout (public/api.js)", () => {
  it('outlasts several of the pipeline views every stream gets, the events that keep a page from taking its stream for dead', async () => {
    // EventSource hands a page only events: the keepalive comment (CONSOLE.liveKeepaliveMs) is for
    // proxies and never reaches the page's code, so what tells a page its stream is alive is the
    // `pipeline` view broadcast to every stream each CONSOLE.pipelinePollMs. A page that waited less
    // than a few of them would reconnect to a fresh snapshot, for ever.
    const { SILENCE_MS } = await import(new URL('../../internal-network/console/public/api.js', import.meta.url).href);
    assert.equal(typeof SILENCE_MS, 'number', 'api.js states its silence timeout');
    assert.ok(SILENCE_MS >= 3 * CONSOLE.pipelinePollMs, `the page waits ${SILENCE_MS} ms, the server sends its pipeline view every ${CONSOLE.pipelinePollMs} ms`);
  });
});

describe("a snapshot part and the page's silence (public/api.js)", () => {
  it('a part of the largest rows reaches a page on the slowest link the docs promise before it takes its stream for dead, and the console gives up on a slower one first', async () => {
    // A page reconnects after SILENCE_MS without an event, and every part of a snapshot is one event:
    // the console waiting longer for a part than the page waits for it left the page reconnecting to
    // a fresh snapshot on a link the console still kept, for ever, never seeing a fleet whole.
    const { SILENCE_MS } = await import(new URL('../../internal-network/console/public/api.js', import.meta.url).href);
    assert.ok(CONSOLE.liveDrainTimeoutMs <= SILENCE_MS, `the console waits ${CONSOLE.liveDrainTimeoutMs} ms for a part, the page ${SILENCE_MS} ms for an event`);

    // Rows as large as the console makes them: ids of the longest, a simulator's reading and health
    // whose numbers take the most characters, every field of the row set.
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const big = -1.7976931348623157e308;
    const time = 8.64e15;
    const ids: string[] = [];
    for (let i = 0; i < CONSOLE.liveSnapshotRowsPerEvent; i++) {
      const id = `${String(i).padStart(6, '0')}`.padEnd(LIMITS.deviceIdMaxChars, 'x');
      ids.push(id);
      fleet.register(id);
      const gateway = `gw-${i}`.padEnd(LIMITS.deviceIdMaxChars, 'g');
      fleet.apply({ measurement: 'device_status', tags: { device: id, gateway }, fields: { state: 'online' }, time });
      fleet.apply({ measurement: 'readings', tags: { device: id }, fields: { temperature: big, humidity: big, pressure: big, timestamp: '+275760-09-13T00:00:00.000Z' }, time });
      fleet.apply({ measurement: 'device_health', tags: { device: id }, fields: { queue_messages: Number.MAX_SAFE_INTEGER, cert_days_left: big }, time });
    }
    const rows = fleet.rows();
    assert.equal(rows.length, CONSOLE.liveSnapshotRowsPerEvent);
    assert.ok(rows.every((r) => r.lastReading !== null && r.gateway !== null && r.backlog !== null), 'every row full');
    const partBytes = Buffer.byteLength(`event: snapshot-part\ndata: ${JSON.stringify({ devices: rows })}\n\n`);

    // The slowest link the console keeps takes a part within its drain timeout; a page on it hears
    // the part within its silence. The docs promise CONSOLE.liveSlowestLinkBytesPerSecond.
    const keptBytesPerSecond = partBytes / (CONSOLE.liveDrainTimeoutMs / 1000);
    const promised = CONSOLE.liveSlowestLinkBytesPerSecond;
    assert.ok(keptBytesPerSecond <= promised, `the console lets go of links under ${Math.round(keptBytesPerSecond)} B/s (a part of ${partBytes} bytes), the docs promise ${promised}`);
    assert.ok((partBytes / promised) * 1000 <= SILENCE_MS, `a part of ${partBytes} bytes takes ${Math.round((partBytes / promised) * 1000)} ms at ${promised} B/s, the page waits ${SILENCE_MS} ms`);
  });
});

/** A response that takes everything at once: the texts a hub wrote, as events with their bytes. */
function recordingResponse() {
  const chunks: string[] = [];
  const res = Object.assign(new EventEmitter(), {
    destroyed: false,
    writableEnded: false,
    writableLength: 0,
    writeHead: () => res,
    write: (chunk: string) => (chunks.push(chunk), true),
    end: () => undefined,
    destroy: () => void (res.destroyed = true),
  });
  const events = () =>
    chunks
      .join('')
      .split('\n\n')
      .slice(0, -1)
      .map((b) => ({ event: /^event: (.+)$/m.exec(b)?.[1] ?? '', data: /^data: (.+)$/m.exec(b)?.[1] ?? '', bytes: Buffer.byteLength(`${b}\n\n`) }));
  return { res: res as unknown as ServerResponse, events };
}

describe('a snapshot of devices whose readings are large, on the slowest link the docs promise', () => {
  it('comes in parts of at most CONSOLE.liveSnapshotPartMaxBytes, a part any link that fast takes within the drain timeout and the page\'s silence, every row in one, showing what the page shows of the whole reading', async () => {
    const { SILENCE_MS } = await import(new URL('../../internal-network/console/public/api.js', import.meta.url).href);
    const promised = CONSOLE.liveSlowestLinkBytesPerSecond;
    const budget = CONSOLE.liveSnapshotPartMaxBytes;
    assert.ok(budget > 0 && budget <= (promised * CONSOLE.liveDrainTimeoutMs) / 1000, `parts of ${budget} bytes, the console waits ${CONSOLE.liveDrainTimeoutMs} ms for one, the docs promise ${promised} B/s`);
    assert.ok((budget / promised) * 1000 <= SILENCE_MS, `a part of ${budget} bytes takes ${Math.round((budget / promised) * 1000)} ms at ${promised} B/s, the page waits ${SILENCE_MS} ms`);

    // Readings at the contract's bounds: LIMITS.readingMaxFields fields of 128-character names, string
    // values of up to LIMITS.stringMaxChars, characters JSON writes as 6 bytes, numbers of the most digits.
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const name = (i: number, len: number) => `f${i}`.padEnd(len, 'n');
    const reading = (len: number, value: (i: number) => string | number | boolean) =>
      Object.fromEntries(Array.from({ length: LIMITS.readingMaxFields }, (_, i) => [name(i, len), value(i)]));
    const long = 'v'.repeat(1000);
    const escaped = '\u0001'.repeat(LIMITS.stringMaxChars);
    const readings = [
      reading(128, () => long),
      reading(128, () => escaped),
      reading(2, () => '\u0001'.repeat(41)),
      reading(2, () => -1.7976931348623157e308),
      reading(2, (i) => i % 2 === 0),
    ];
    const devices = 250;
    const full = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < devices; i++) {
      const id = `${String(i).padStart(6, '0')}`.padEnd(LIMITS.deviceIdMaxChars, 'x');
      fleet.register(id);
      const fields = i < 120 ? readings[0]! : readings[i % readings.length]!;
      full.set(id, fields);
      fleet.apply({ measurement: 'readings', tags: { device: id }, fields, time: 8.64e15 });
    }
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
    const { res, events } = recordingResponse();
    try {
      await hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, undefined, true);
    } finally {
      hub.close();
    }
    const seen = events();
    assert.ok(seen.length > 2 && seen.at(-1)!.event === 'snapshot-end', `a snapshot in parts: ${seen.map((e) => e.event).join(', ')}`);
    const largest = Math.max(...seen.map((e) => e.bytes));
    assert.ok(largest <= budget, `events of at most ${budget} bytes: the largest had ${largest}`);

    // The parts make the whole fleet; the page (public/format.js) shows of each row what it shows of
    // the whole reading, in its cell and its hover text.
    const { fieldsSummary, readingSummary } = await import(new URL('../../internal-network/console/public/format.js', import.meta.url).href);
    const rows = seen.flatMap((e) => (JSON.parse(e.data) as { devices: Array<{ id: string; lastReading: { fields: Record<string, unknown>; omitted?: number } }> }).devices);
    assert.equal(rows.length, devices);
    for (const row of rows) {
      const whole = full.get(row.id)!;
      for (const max of [120, 2000]) assert.equal(fieldsSummary(row.lastReading.fields, max), fieldsSummary(whole, max), `${row.id}: as shown in ${max} characters`);
      assert.equal(Object.keys(row.lastReading.fields).length + (row.lastReading.omitted ?? 0), Object.keys(whole).length, 'the fields left out are counted');
      // The hover text says how many fields the row left out, never taking what it shows for the whole.
      const hover = readingSummary(row.lastReading, 2000);
      if (row.lastReading.omitted) assert.equal(hover, `${fieldsSummary(whole, 2000)} (${row.lastReading.omitted} more fields not shown)`);
      else assert.equal(hover, fieldsSummary(whole, 2000));
    }
    assert.ok(rows.some((r) => (r.lastReading.omitted ?? 0) > 0), 'some rows left fields out');
  });
});

describe('a live stream to a page of an earlier version (open in a tab across an upgrade)', () => {
  it('gets the snapshot of a fleet over one part as the one `snapshot` event it knows, when it did not ask for parts; a page that asked gets parts', async () => {
    // The page of before the parts knows only `snapshot`: sent parts, it never had a fleet, and
    // reconnected for ever. The page of now asks for them (`?parts=1`, public/api.js).
    const devices = 3 * CONSOLE.liveSnapshotRowsPerEvent + 1;
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    for (let i = 0; i < devices; i++) fleet.register(`meter-${String(i).padStart(6, '0')}`);
    fleet.apply({ measurement: 'readings', tags: { device: 'meter-000007' }, fields: { note: 'n'.repeat(LIMITS.stringMaxChars) }, time: Date.now() });
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
    const owner = { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 };
    const old = recordingResponse();
    const now = recordingResponse();
    try {
      await hub.open(old.res, owner, undefined);
      await hub.open(now.res, owner, undefined, true);
    } finally {
      hub.close();
    }
    const single = old.events();
    assert.deepEqual(single.map((e) => e.event), ['snapshot'], 'one snapshot event');
    const whole = JSON.parse(single[0]!.data) as { devices: Array<{ id: string; lastReading: { fields: { note: string } } | null }>; total: number; pipeline: unknown };
    assert.equal(whole.devices.length, devices);
    assert.equal(whole.total, devices);
    assert.deepEqual(whole.pipeline, view);
    assert.equal(whole.devices.find((r) => r.id === 'meter-000007')?.lastReading?.fields.note.length, CONSOLE.liveRowValueMaxChars + 1, 'its rows bounded as in parts');
    const parts = now.events();
    assert.ok(parts.length > 3 && parts.slice(0, -1).every((e) => e.event === 'snapshot-part') && parts.at(-1)!.event === 'snapshot-end', `parts: ${parts.map((e) => e.event).join(', ')}`);
  });
});

describe('the updates of a busy large fleet after its snapshot, on the slowest link the docs promise', () => {
  it('come as `devices` events of at most CONSOLE.liveSnapshotPartMaxBytes each, which a page of any version applies one after the other', async () => {
    // Every row changed within one flush (a busy fleet): one `devices` event of them all was
    // megabytes, which a page on a 5 KB/s link waited for longer than its silence, reconnecting for
    // ever to a fresh snapshot and the next such update.
    mock.timers.enable({ apis: ['setInterval'] });
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const devices = 2000;
    const ids = Array.from({ length: devices }, (_, i) => `${String(i).padStart(6, '0')}`.padEnd(LIMITS.deviceIdMaxChars, 'x'));
    for (const id of ids) fleet.register(id);
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
    const { res, events } = recordingResponse();
    (globalThis as { requestAnimationFrame?: unknown }).requestAnimationFrame = () => 1;
    try {
      await hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, undefined, true);
      const before = events().length;
      const fields = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`field_${i}`.padEnd(32, 'n'), 'v'.repeat(60)]));
      for (const id of ids) fleet.apply({ measurement: 'readings', tags: { device: id }, fields, time: Date.now() });
      mock.timers.tick(CONSOLE.liveFlushMs);
      const updates = events().slice(before).filter((e) => e.event === 'devices');
      const largest = Math.max(...updates.map((e) => e.bytes));
      assert.ok(largest <= CONSOLE.liveSnapshotPartMaxBytes, `events of at most ${CONSOLE.liveSnapshotPartMaxBytes} bytes: the largest had ${largest} (${updates.length} events)`);

      // The page's store (public/store.js; its `devices` handling that of every page since the live
      // stream began) applies each as it comes: together, every changed row.
      const { Store } = await import(new URL('../../internal-network/console/public/store.js', import.meta.url).href);
      const store = new Store();
      for (const e of updates) store.apply('devices', JSON.parse(e.data));
      assert.equal(store.devices.size, devices, 'every changed row, once');
      const want = fleet.rows().map(liveRow);
      assert.deepEqual(want.filter((r) => JSON.stringify(store.devices.get(r.id)) !== JSON.stringify(r)).map((r) => r.id), [], 'each as the console has it');
    } finally {
      hub.close();
      mock.timers.reset();
      delete (globalThis as { requestAnimationFrame?: unknown }).requestAnimationFrame;
    }
  });
});

describe('the rest of a snapshot (security, anomalies) under an attack across the fleet, on the slowest link the docs promise', () => {
  it('comes in events of at most CONSOLE.liveSnapshotPartMaxBytes, the security counts as their totals and the devices with most, and the page holds what it shows', async () => {
    const budget = CONSOLE.liveSnapshotPartMaxBytes;
    (globalThis as { requestAnimationFrame?: unknown }).requestAnimationFrame = () => 1;
    const { Store } = await import(new URL('../../internal-network/console/public/store.js', import.meta.url).href);
    try {
      // A fleet of one snapshot event and one of parts; every device refused (its finding and a
      // gateway's report of many), anomalies of the longest ids and field names.
      for (const devices of [30, 3000]) {
        const fleet = new Fleet({ staleAfterMs: 180_000 });
        const ids = Array.from({ length: devices }, (_, i) => `${String(i).padStart(6, '0')}`.padEnd(LIMITS.deviceIdMaxChars, 'x'));
        let time = 1_700_000_000_000;
        for (const [i, id] of ids.entries()) {
          fleet.register(id);
          fleet.apply({ measurement: 'security_events', tags: { device: id, reason: 'SECURITY_BAD_SIGNATURE' }, fields: { message_id: `m${i}` }, time: time++ });
          fleet.apply({ measurement: 'security_events', tags: { device: id, reason: 'GATEWAY_RATE_LIMITED', source: 'gateway' }, fields: { count: 1 + (i % 500) }, time: time++ });
        }
        const field = (n: number) => `f${n}`.padEnd(128, 'n');
        for (let k = 0; k < CONSOLE.snapshotRecent + 20; k++) {
          fleet.addAnomaly({ time: time++, device: ids[k % devices]!, field: field(k), detector: 'isolation-forest', score: 0.12345678901234568, value: -1.7976931348623157e308, kind: 'correlation', fields: [field(k + 1), field(k + 2)] });
        }
        mock.timers.enable({ apis: ['setInterval'] });
        const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
        const { res, events } = recordingResponse();
        const store = new Store();
        const parts: unknown[] = [];
        let applied = 0;
        /** The events so far, each within the budget, applied as the page does (public/api.js joins
         * the parts into one `snapshot`, store.js applies every event). */
        const read = (what: string) => {
          const seen = events().slice(applied);
          applied += seen.length;
          const largest = seen.reduce((a, e) => (e.bytes > a.bytes ? e : a));
          assert.ok(largest.bytes <= budget, `${devices} devices, ${what}: events of at most ${budget} bytes: a ${largest.event} had ${largest.bytes} (${seen.map((e) => e.event).join(', ')})`);
          for (const e of seen) {
            const data = JSON.parse(e.data) as { devices?: unknown[] };
            if (e.event === 'snapshot-part') parts.push(...data.devices!);
            else if (e.event === 'snapshot-end') store.apply('snapshot', { ...data, devices: [...parts, ...data.devices!] });
            else store.apply(e.event, data);
          }
          const { security } = store;
          const summary = fleet.securitySummary();
          assert.deepEqual(security.recent, summary.recent, `${what}: the distributor's newest findings`);
          assert.deepEqual(security.reported, summary.reported, `${what}: the gateways' newest reports`);
          assert.deepEqual({ ...security.byReason }, summary.byReason, `${what}: every reason counted`);
          assert.equal(security.devices, devices, `${what}: how many devices have events`);
          const top = (counts: Record<string, number>) => Object.entries(counts).sort(([ka, a], [kb, b]) => b - a || (ka < kb ? -1 : 1)).slice(0, 50);
          assert.deepEqual(top(security.byDevice), top(summary.byDevice), `${what}: the devices with most events, as the security page lists them`);
          assert.deepEqual(store.anomalies.slice(0, CONSOLE.snapshotRecent), fleet.anomalies.newest(CONSOLE.snapshotRecent), `${what}: the newest anomalies, newest first`);
        };
        try {
          await hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, undefined, true);
          assert.equal(store.devices.size, 0);
          read('the snapshot');
          assert.equal(store.devices.size, devices);
          // The attack goes on: every device refused again within one flush, more anomalies.
          for (const [i, id] of ids.entries()) {
            fleet.apply({ measurement: 'security_events', tags: { device: id, reason: 'SECURITY_REPLAY' }, fields: { message_id: `r${i}` }, time: time++ });
            fleet.apply({ measurement: 'security_events', tags: { device: id, reason: 'GATEWAY_RATE_LIMITED', source: 'gateway' }, fields: { count: 1 + ((i * 7) % 900) }, time: time++ });
          }
          for (let k = 0; k < CONSOLE.snapshotRecent; k++) {
            fleet.addAnomaly({ time: time++, device: ids[(CONSOLE.snapshotRecent + 20 + k) % devices]!, field: field(k), detector: 'isolation-forest', score: 0.98765432109876543, kind: 'correlation', fields: [field(k + 3), field(k + 4)] });
          }
          mock.timers.tick(CONSOLE.liveFlushMs);
          read('the update');
        } finally {
          hub.close();
          mock.timers.reset();
        }
      }
    } finally {
      delete (globalThis as { requestAnimationFrame?: unknown }).requestAnimationFrame;
    }
  });
});

describe("a device page's `device` event, of a device whose readings are at the contract's limits, on the slowest link the docs promise", () => {
  it('is within CONSOLE.liveSnapshotPartMaxBytes, its latest reading cut as the fleet rows\' are with what was left out counted and marked cut (the page reads the whole on demand), the newest of its lists kept and the rest counted', async () => {
    const budget = CONSOLE.liveSnapshotPartMaxBytes;
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const id = 'meter-000001'.padEnd(LIMITS.deviceIdMaxChars, 'x');
    fleet.register(id);
    const name = (i: number) => `f${i}`.padEnd(128, 'n');
    // Every field a string JSON writes as 6 bytes a character, the first of LIMITS.stringMaxChars.
    const strings = (chars: number) => Object.fromEntries(Array.from({ length: LIMITS.readingMaxFields }, (_, i) => [name(i), '\u0001'.repeat(i === 0 ? LIMITS.stringMaxChars : chars)]));
    const fields = strings(4096);
    const numeric = Object.fromEntries(Array.from({ length: LIMITS.readingMaxFields }, (_, i) => [name(i), -1.7976931348623157e308]));
    let time = Date.now() - 1000;
    for (let i = 0; i < CONSOLE.perDeviceRing + 5; i++) fleet.apply({ measurement: 'events', tags: { device: id }, fields: strings(256), time: time++ });
    fleet.apply({ measurement: 'device_health', tags: { device: id }, fields, time: time++ });
    fleet.apply({ measurement: 'readings', tags: { device: id }, fields: numeric, time: time++ });
    fleet.apply({ measurement: 'readings', tags: { device: id }, fields, time: time++ });
    const big = 'x'.repeat(LIMITS.stringMaxChars);
    const commands = Array.from({ length: 20 }, (_, i) => ({ commandId: `c${i}`, command: 'exec', params: { cmd: big }, state: 'completed', attempts: 1, issuedAt: time - i, updatedAt: time - i, response: { status: 'ok', result: big } }));
    const detail = async (d: string) => {
      const x = fleet.detail(d);
      return x && { ...x, commands };
    };
    const whole = (await detail(id))!;
    assert.ok(Buffer.byteLength(JSON.stringify(whole)) > 100 * budget, 'the whole detail is far past the budget');
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: detail, sessionAlive: () => true }, createLogger('test', 'silent'));
    const { res, events } = recordingResponse();
    try {
      await hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, { id, token: 't' }, true);
    } finally {
      hub.close();
    }
    const seen = events();
    const largest = Math.max(...seen.map((e) => e.bytes));
    assert.ok(largest <= budget, `events of at most ${budget} bytes: the largest had ${largest} (${seen.map((e) => `${e.event} ${e.bytes}`).join(', ')})`);
    const device = seen.filter((e) => e.event === 'device');
    assert.equal(device.length, 1, 'the device page gets its detail');
    type Reading = { time: number; fields: Record<string, unknown>; omitted?: number; cut?: boolean };
    const d = JSON.parse(device[0]!.data) as { row: { id: string; lastReading: Reading }; latest: Reading; health: Reading; events: Reading[]; commands: unknown[]; omitted?: Record<string, number> };
    assert.equal(d.row.id, id);
    assert.equal(d.latest.time, whole.latest!.time);
    assert.equal(d.latest.cut, true, 'marked cut: the page offers the whole reading');
    assert.equal(Object.keys(d.latest.fields).length + (d.latest.omitted ?? 0), LIMITS.readingMaxFields, 'the fields left out are counted');
    for (const v of Object.values(d.latest.fields)) assert.equal(v, `${'\u0001'.repeat(CONSOLE.liveRowValueMaxChars)}…`, 'values cut as the fleet rows\' are');
    assert.equal(d.events.length + (d.omitted?.events ?? 0), whole.events.length, 'events left out are counted');
    assert.equal(d.commands.length + (d.omitted?.commands ?? 0), commands.length, 'commands left out are counted');
    if (d.events.length > 0) assert.equal(d.events[0]!.time, whole.events[0]!.time, 'the newest events kept');
  });

  it('keeps every field of a device of many numeric fields, past the fleet row\'s characters, when the event fits with them: the page charts each from it', async () => {
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    const id = 'plc-000001';
    fleet.register(id);
    // 150 numeric fields of 24-character names: some 5,000 characters shown, past a row's 2,000.
    const numeric = Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`line4_motor_${String(i).padStart(3, '0')}_current`, 12.345678 + i]));
    fleet.apply({ measurement: 'readings', tags: { device: id }, fields: { ...numeric, label: 'y'.repeat(500) }, time: Date.now() - 1000 });
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async (d: string) => fleet.detail(d) && { ...fleet.detail(d)!, commands: [] }, sessionAlive: () => true }, createLogger('test', 'silent'));
    const { res, events } = recordingResponse();
    try {
      await hub.open(res, { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 }, { id, token: 't' }, true);
    } finally {
      hub.close();
    }
    const device = events().filter((e) => e.event === 'device');
    assert.equal(device.length, 1);
    assert.ok(device[0]!.bytes <= CONSOLE.liveSnapshotPartMaxBytes);
    const d = JSON.parse(device[0]!.data) as { latest: { fields: Record<string, unknown>; omitted?: number; cut?: boolean } };
    assert.equal(d.latest.omitted, undefined, 'no field left out');
    for (const [name, v] of Object.entries(numeric)) assert.equal(d.latest.fields[name], v, `${name} there, for its chart`);
    assert.equal(d.latest.fields.label, `${'y'.repeat(CONSOLE.liveRowValueMaxChars)}…`, 'a long string still cut');
    assert.equal(d.latest.cut, true);
  });
});

describe('updates to several live streams', () => {
  it('gives each stream the rows changed since its own snapshot, streams at the same version sharing one update', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    const fleet = new Fleet({ staleAfterMs: 180_000 });
    for (const id of ['a-1', 'a-2', 'a-3']) fleet.register(id);
    const hub = new LiveHub({ fleet, pipeline: () => view, deviceDetail: async () => undefined, sessionAlive: () => true }, createLogger('test', 'silent'));
    const owner = { sessionId: 's', user: 'viewer-user', expiresAt: Date.now() + 600_000 };
    const rowsOf = (events: ReturnType<ReturnType<typeof recordingResponse>['events']>) =>
      events.filter((e) => e.event === 'devices').flatMap((e) => (JSON.parse(e.data) as { rows: Array<{ id: string; lastReading: { fields: Record<string, unknown> } | null }> }).rows.map((r) => `${r.id}=${JSON.stringify(r.lastReading?.fields)}`));
    try {
      const early = [recordingResponse(), recordingResponse()];
      for (const r of early) await hub.open(r.res, owner, undefined, true);
      fleet.apply({ measurement: 'readings', tags: { device: 'a-1' }, fields: { v: 1 }, time: Date.now() });
      const late = recordingResponse();
      await hub.open(late.res, owner, undefined, true); // its snapshot holds a-1's reading already
      fleet.apply({ measurement: 'readings', tags: { device: 'a-2' }, fields: { v: 2 }, time: Date.now() });
      mock.timers.tick(CONSOLE.liveFlushMs);
      for (const r of early) assert.deepEqual(rowsOf(r.events()).sort(), ['a-1={"v":1}', 'a-2={"v":2}'], 'a stream opened before both readings gets both');
      assert.deepEqual(rowsOf(late.events()), ['a-2={"v":2}'], 'a stream opened between them gets the one after its snapshot');
      fleet.apply({ measurement: 'readings', tags: { device: 'a-3' }, fields: { v: 3 }, time: Date.now() });
      mock.timers.tick(CONSOLE.liveFlushMs);
      for (const r of [...early, late]) assert.deepEqual(rowsOf(r.events()).slice(-1), ['a-3={"v":3}'], 'then each the same one');
    } finally {
      hub.close();
      mock.timers.reset();
    }
  });
});
