import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Consumer } from '../../internal-network/distributor/consumer.ts';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { MessageHandler } from '../../internal-network/distributor/message-handler.ts';
import { DistributorMetrics } from '../../internal-network/distributor/metrics.ts';
import { POINT_KEY, type StoredPoint } from '../../internal-network/distributor/points.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { MessageVerifier } from '../../internal-network/distributor/security/verifier.ts';
import { DeviceKeyRegistry } from '../../internal-network/shared/device-keys.ts';
import { gatewayPresenceTopic, uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { signGroup } from '../../shared/security/message-auth.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { eventually } from '../helpers/ws-device.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * A message whose handling fails with an error that has no code is a defect's, not the message's
 * fault. mqtt.js hands a connection its next message only after this one's PUBACK: retried for
 * ever, one such message stalled its consumer connection for good (and, redelivered after a
 * restart, the next one it reached). It is tried LIMITS.distributorUnexpectedMaxAttempts times,
 * then kept whole as a dead letter and acknowledged; a failing database is still retried for ever.
 */
describe('the distributor consumer and a message that keeps failing without an error code', () => {
  const tmp = tempDir('consumer-poison');
  after(() => tmp.cleanup());

  /** `failing` stands in for a defect (or a database that is down): what the sink throws for a write. */
  /** `o.key`: sensor-1's key, registered; `o.fence`: the replay windows' (the state lease's assertHeld). */
  function fixture(name: string, failing: (points: readonly StoredPoint[]) => Error | undefined, o: { key?: Buffer; fence?: () => void; retry?: { initialMs: number; maxMs: number } } = {}) {
    const dir = join(tmp.dir, name);
    const dead = new DeadLetters(join(dir, 'letters'));
    const logs = new LogCapture();
    const log = logs.logger;
    mkdirSync(join(dir, 'keys'), { recursive: true });
    if (o.key) writeFileSync(join(dir, 'keys', 'sensor-1.key'), o.key.toString('hex'));
    const verifier = new MessageVerifier(new DeviceKeyRegistry(join(dir, 'keys')), new ReplayWindows(join(dir, 'replay'), { fence: o.fence }), { requireSignatures: false, freshnessMs: 30_000, maxDelayMs: 86_400_000 }, log);
    const written: StoredPoint[] = [];
    const attempted: StoredPoint[] = [];
    const calls = { writes: 0, at: [] as number[] };
    const sink = {
      description: 'defective',
      write: async (points: StoredPoint[]) => {
        calls.writes++;
        calls.at.push(performance.now());
        attempted.push(...points);
        const err = failing(points);
        if (err) throw err;
        written.push(...points);
      },
      close: async () => {},
    };
    const metrics = new DistributorMetrics();
    const handler = new MessageHandler(sink, new FileStore(join(dir, 'files')), verifier, metrics);
    const mqtt = { reschedulePing: () => undefined, on: () => undefined, options: {} } as unknown as MqttClient;
    const consumer = new Consumer(mqtt, handler, dead, o.retry ?? { initialMs: 10, maxMs: 20 }, undefined, log, metrics.deadLetters, metrics.deadLettersNotKept);
    const deliver = (payload: Buffer, topic = uplinkTopic('sensor-1', 'timeseries')) => {
      const acked = { done: false };
      mqtt.handleMessage({ cmd: 'publish', topic, payload, qos: 1, dup: false, retain: false } as IPublishPacket, () => (acked.done = true));
      return acked;
    };
    const letters = () =>
      readdirSync(join(dir, 'letters')).flatMap((f) =>
        readFileSync(join(dir, 'letters', f), 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as { code: string; topic: string; payloadBase64: string }),
      );
    return { dead, consumer, deliver, letters, written, attempted, calls, metrics, logs };
  }
  const envelope = (i: number, poison = false) =>
    Buffer.from(JSON.stringify({ v: 1, deviceId: 'sensor-1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: Date.now(), messages: [{ messageId: `m${i}`, payload: { t: i, ...(poison ? { poison: 1 } : {}) } }] }));

  it('keeps it whole as a dead letter after its attempts, acknowledges it, and handles the next', async () => {
    const f = fixture('defect', (points) => (points.some((p) => 'poison' in p.fields) ? new TypeError("Cannot read properties of undefined (reading 'x')") : undefined));
    try {
      const poison = envelope(1, true);
      const acked = f.deliver(poison);
      await eventually(() => (acked.done ? true : undefined), 5_000);
      assert.equal(f.calls.writes, LIMITS.distributorUnexpectedMaxAttempts, 'tried its attempts, no more');
      const [letter, ...more] = f.letters();
      assert.equal(more.length, 0);
      assert.equal(letter?.code, 'DISTRIBUTOR_MESSAGE_FAILED');
      assert.equal(letter?.topic, uplinkTopic('sensor-1', 'timeseries'));
      assert.ok(Buffer.from(letter.payloadBase64, 'base64').equals(poison), 'kept whole, byte for byte');
      assert.match(await f.metrics.metrics.registry.metrics(), /^fieldstream_distributor_dead_letters_total\{?[^}\n]*\}? 1$/m);

      // The connection is free: the next message is written and acknowledged.
      const next = f.deliver(envelope(2));
      await eventually(() => (next.done ? true : undefined), 5_000);
      assert.deepEqual(f.written.map((p) => p.fields.t), [2]);
    } finally {
      f.consumer.stop();
      await f.dead.close();
    }
  });

  it('retries a failing system call for ever (a full disk is no defect), and counts only failures in a row', async () => {
    let failures = 0;
    const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { errno: -28, code: 'ENOSPC', syscall: 'write' });
    const f = fixture('system-error', () => {
      failures++;
      if (failures <= LIMITS.distributorUnexpectedMaxAttempts * 2) return enospc();
      // then defects, each after a failed write: never as many as the limit in a row
      if (failures <= LIMITS.distributorUnexpectedMaxAttempts * 4) return failures % 2 === 0 ? new TypeError('a defect') : new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'InfluxDB is unreachable');
      return undefined;
    });
    try {
      const acked = f.deliver(envelope(4));
      await eventually(() => (acked.done ? true : undefined), 10_000);
      assert.equal(f.calls.writes, LIMITS.distributorUnexpectedMaxAttempts * 4 + 1, 'tried until it was written');
      assert.deepEqual(f.letters(), [], 'not given up');
      assert.deepEqual(f.written.map((p) => p.fields.t), [4]);
      // 30 retries without a code within one window (each 10–20 ms apart): logged as far as the bound
      // of such lines, at error level, the failure named.
      const uncoded = f.logs.lines.filter((l) => typeof l.msg === 'string' && /^(a system call failed|unexpected failure \(no error code\)); retrying/.test(l.msg));
      assert.equal(uncoded.length, LIMITS.distributorRetryLogMaxPerWindow);
      assert.ok(uncoded.every((l) => l.level === 50 && typeof l.err === 'object'), JSON.stringify(uncoded[0]));
    } finally {
      f.consumer.stop();
      await f.dead.close();
    }
  });

  it('counts an errno that a message can cause (EISDIR, EINVAL: not the machine) as a defect', async () => {
    const f = fixture('errno-defect', () => Object.assign(new Error('EISDIR: illegal operation on a directory, open'), { errno: -21, code: 'EISDIR', syscall: 'open' }));
    try {
      const acked = f.deliver(envelope(5));
      await eventually(() => (acked.done ? true : undefined), 5_000);
      assert.equal(f.calls.writes, LIMITS.distributorUnexpectedMaxAttempts);
      assert.deepEqual(f.letters().map((l) => l.code), ['DISTRIBUTOR_MESSAGE_FAILED']);
    } finally {
      f.consumer.stop();
      await f.dead.close();
    }
  });

  it('still retries a failing database for ever: its message is not given up', async () => {
    let down = true;
    const f = fixture('database-down', () => (down ? new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'InfluxDB is unreachable') : undefined));
    try {
      const acked = f.deliver(envelope(3));
      await eventually(() => (f.calls.writes > LIMITS.distributorUnexpectedMaxAttempts * 2 ? true : undefined), 5_000);
      assert.equal(acked.done, false, 'unacknowledged while the database is down');
      assert.deepEqual(f.letters(), []);
      down = false;
      await eventually(() => (acked.done ? true : undefined), 5_000);
      assert.deepEqual(f.written.map((p) => p.fields.t), [3]);
    } finally {
      f.consumer.stop();
      await f.dead.close();
    }
  });

  it('never acknowledges a message whose replay window could not be journalled because another distributor took the state slot over', async () => {
    // A distributor paused past its lease's expiry finds its slot taken at its next append
    // (state-lease.ts, fencing): DISTRIBUTOR_STATE_LEASE. Coded, it went to the dead-letter folder
    // like a message that can never be written, and was acknowledged, its device sent a receipt,
    // with its sequence number in no window the slot's new holder loaded: a copy of it then passed.
    // It is retried, unacknowledged, until the distributor (stopping meanwhile) stops the consumer.
    const key = randomBytes(32);
    let taken = false;
    const f = fixture('state-lost', () => undefined, {
      key,
      fence: () => {
        if (taken) throw new FieldStreamError('DISTRIBUTOR_STATE_LEASE', 'Slot 1 was taken over by another distributor');
      },
    });
    const signed = (seq: number) => {
      const now = Date.now();
      const payload = { t: seq };
      const auth = signGroup(key, { deviceId: 'sensor-1', dataType: 'timeseries', epoch: 'e1', ts: now }, [{ seq, payload }]);
      return Buffer.from(JSON.stringify({ v: 1, deviceId: 'sensor-1', dataType: 'timeseries', gatewayId: 'gw', receivedAt: now, messages: [{ messageId: `e1.${seq}`, seq, payload, auth }] }));
    };
    try {
      const first = f.deliver(signed(1));
      await eventually(() => (first.done ? true : undefined), 5_000);
      taken = true;
      const second = f.deliver(signed(2));
      await eventually(() => (f.calls.writes >= 4 || second.done ? true : undefined), 5_000);
      assert.equal(second.done, false, 'not acknowledged');
      assert.deepEqual(f.letters(), [], 'not a dead letter');
    } finally {
      f.consumer.stop();
      await f.dead.close();
    }
  });

  it("keeps a gateway presence's arrival time across its retries: the same row, and the order it came in", async () => {
    // A gateway's presence is stamped when it arrives (its key and its time, postgres/rows.ts).
    // Stamped again at each retry, a write that had reached one store (the other failing, or a
    // COMMIT whose answer was lost) made a second row; and two presences retried by two consumers
    // while the database was down took the order of their random backoffs: `online` written after
    // `offline`, the gateway's state wrong.
    let failures = 3;
    const f = fixture('presence-retried', () => (failures-- > 0 ? new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'PostgreSQL is unreachable') : undefined));
    try {
      const taken = Date.now();
      const acked = f.deliver(Buffer.from(JSON.stringify({ v: 1, state: 'online', gatewayId: 'gw-1', since: taken - 60_000 })), gatewayPresenceTopic('gw-1'));
      const delivered = Date.now();
      await eventually(() => (acked.done ? true : undefined), 5_000);
      assert.equal(f.attempted.length, 4, 'written at the fourth attempt');
      const [first] = f.attempted;
      assert.ok(first && first.time >= taken && first.time <= delivered, `${first?.time} within ${taken}..${delivered}`);
      for (const p of f.attempted) {
        assert.equal(p.time, first.time, 'the time it was taken from the broker');
        assert.equal(p[POINT_KEY], first[POINT_KEY]);
      }
    } finally {
      f.consumer.stop();
      await f.dead.close();
    }
  });

  it("waits at least a failed write's Retry-After (a 429 or 503 of the store), up to the longest pause", async () => {
    // Its own backoff starts at a fraction of a second: InfluxDB Cloud, rate-limiting with a 429 and
    // Retry-After, was asked again at once, by every consumer, several times before the time it gave.
    for (const [maxMs, least, most] of [
      [5_000, 600, 2_000],
      [150, 0, 400],
    ] as const) {
      let failures = 2;
      const f = fixture(`retry-after-${maxMs}`, () => (failures-- > 0 ? new FieldStreamError('DISTRIBUTOR_WRITE_FAILED', 'InfluxDB answered 429', { status: 429, retryAfterMs: 600 }) : undefined), { retry: { initialMs: 10, maxMs } });
      try {
        const acked = f.deliver(envelope(1));
        await eventually(() => (acked.done ? true : undefined), 5_000);
        assert.equal(f.calls.at.length, 3);
        for (let i = 1; i < f.calls.at.length; i++) {
          const pause = (f.calls.at[i] as number) - (f.calls.at[i - 1] as number);
          assert.ok(pause >= least - 5 && pause < most, `pause ${i} of ${Math.round(pause)} ms, with the longest pause ${maxMs} ms`);
        }
      } finally {
        f.consumer.stop();
        await f.dead.close();
      }
    }
  });
});
