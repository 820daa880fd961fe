import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import type { CommitFrame } from '../../shared/contract/downlink.ts';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { RECEIPTS_VERSION, type Receipt, type ReceiptsEnvelope } from '../../shared/contract/receipt.ts';
import { receiptTopic, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { signReceipt, type SeqRanges } from '../../shared/security/receipt-auth.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { parseExposition } from '../helpers/exposition.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'field-r';
const OTHER = 'other-r';
/** readings stored while the pipeline runs normally (their genuine receipts are captured) */
const EARLY = 200;
/** readings that sit "awaiting receipt" while the internal side is stalled and the DMZ forges */
const HELD = 300;

/**
 * A compromised DMZ cannot make a device delete anything. It holds the gateway's and the bridge's
 * broker identities and the edge certificate, never a device's key: every receipt it makes up —
 * a random MAC, another device's key, a genuine receipt with its epoch or ranges altered — is
 * refused by the field client (FIELD_RECEIPT_INVALID), and a genuine receipt replayed names only
 * records already gone (FIELD_RECEIPT_REPLAYED). The records stay until the internal network's own
 * receipts come, and every reading is stored exactly once.
 */
describe('commit receipts forged or replayed by a compromised DMZ delete nothing', () => {
  const pki = makeTestPki([DEVICE, OTHER]);
  const work = tempDir('receipt-forgery');
  const key = parseSigningKey(readFileSync(pki.paths.device(DEVICE).signingKey, 'utf8')) as Buffer;
  const otherKey = parseSigningKey(readFileSync(pki.paths.device(OTHER).signingKey, 'utf8')) as Buffer;
  const randomMac = () => randomBytes(32).toString('base64url');
  after(() => {
    pki.cleanup();
    work.cleanup();
  });

  describe('on the real stack: published on the DMZ Mosquitto with the gateway’s and the bridge’s certificates', () => {
    const logs = new LogCapture();
    let stack: LocalStack;
    let asGateway: MqttClient;
    let asBridge: MqttClient;
    const captured: ReceiptsEnvelope[] = [];
    before(async () => {
      ({ stack } = await startTestStack(pki.dir, join(work.dir, 'stack'), { DISTRIBUTOR_REQUIRE_SIGNATURES: 'true' }));
      const ca = readFileSync(pki.paths.publicCa);
      const as = (svc: string) => {
        const s = pki.paths.service(svc);
        return connectAsync(stack.urls.dmzMqtt, { ca, cert: readFileSync(s.cert), key: readFileSync(s.key), protocolVersion: 5, reconnectPeriod: 0 });
      };
      asGateway = await as('dmz/gateway');
      asBridge = await as('internal/bridge');
      // What a compromised DMZ sees pass: every gateway's receipts (the gateway identity may read them).
      asGateway.on('message', (_t, m) => captured.push(JSON.parse(m.toString()) as ReceiptsEnvelope));
      await asGateway.subscribeAsync(TOPIC_FILTERS.receipts, { qos: 1 });
    });
    after(async () => {
      await asGateway?.endAsync();
      await asBridge?.endAsync();
      await stack?.close();
    });

    it('refuses forged receipts, ignores replayed ones, and loses nothing once the internal side is back', async () => {
      // Long enough that nothing is sent again for a late receipt while the internal side is stalled.
      const field = await startTestFieldClient(pki.paths, DEVICE, stack.urls.wss, logs.logger, { FIELD_COMMIT_TIMEOUT_MS: '45000' });
      try {
        const client = field.client;
        assert.ok(client.receiptsOn, 'the device keeps records until their receipt');
        const base = Date.parse('2026-02-01T00:00:00Z');
        const readings = (from: number, n: number) => Array.from({ length: n }, (_, k) => ({ dataType: 'timeseries' as const, payload: { v: from + k, timestamp: base + (from + k) * 1000 } }));

        // 1. The pipeline runs normally: readings stored, their receipts (seen passing) delete them.
        await client.submitMany(readings(0, EARLY));
        await eventually(() => (client.unacknowledged === 0 ? true : undefined), 30_000, 'the first readings committed');
        const gatewayId = client.status().connection.gatewayId as string;
        assert.ok(gatewayId, 'connected through a gateway');
        const genuine = await eventually(() => {
          const mine = captured.filter((e) => e.gatewayId === gatewayId && e.receipts.some((r) => r.deviceId === DEVICE));
          return mine.length > 0 ? mine : undefined;
        }, 10_000, 'the genuine receipts captured on the DMZ broker');
        const genuineReceipts = genuine.flatMap((e) => e.receipts.filter((r) => r.deviceId === DEVICE));
        const sample = genuineReceipts[0] as Receipt;
        assert.equal(sample.epoch, client.queue.epoch);
        assert.equal(client.receiptStats.receiptsInvalid, 0);
        // Whatever duplicates QoS 1 made so far; the replays below are counted on top.
        await new Promise((r) => setTimeout(r, 500));
        const replayedBefore = client.receiptStats.receiptsReplayed;

        // 2. The internal side stalls: new readings reach the DMZ (acked) and await their receipt.
        await stack.pause('distributor');
        try {
          await client.submitMany(readings(EARLY, HELD));
          await eventually(() => (client.queue.awaiting.count === HELD ? true : undefined), 20_000, 'the held readings acked by the gateway, awaiting receipt');
          const held = client.unacknowledged;
          assert.equal(held, HELD);
          const from = client.queue.committedThrough + 1;
          const awaitingRanges: SeqRanges = [[from, from + HELD - 1]];
          const epoch = client.queue.epoch;

          // Each receipt names exactly what the device holds now: were one believed, it would delete it.
          const forged: [string, Receipt][] = [
            ['a random MAC', { deviceId: DEVICE, epoch, ranges: awaitingRanges, mac: randomMac() }],
            ['another device’s key', { deviceId: DEVICE, epoch, ranges: awaitingRanges, mac: signReceipt(otherKey, DEVICE, epoch, awaitingRanges) }],
            ['a genuine receipt, ranges altered', { ...sample, ranges: awaitingRanges }],
            ['a genuine receipt, ranges extended', { ...sample, ranges: [[(sample.ranges[0] as [number, number])[0], from + HELD - 1]] }],
            ['a genuine receipt, epoch altered', { ...sample, epoch: `${sample.epoch}x` }],
          ];
          const envelope = (receipts: Receipt[]): Buffer => Buffer.from(JSON.stringify({ v: RECEIPTS_VERSION, gatewayId, receipts } satisfies ReceiptsEnvelope));

          // The gateway's identity may only read receipts: the DMZ broker refuses its publish.
          for (const [what, r] of forged) {
            await assert.rejects(asGateway.publishAsync(receiptTopic(gatewayId), envelope([r]), { qos: 1 }), (e: { code?: number }) => e.code === 135, `gateway identity: ${what}`);
          }
          await assert.rejects(asGateway.publishAsync(receiptTopic(gatewayId), envelope(genuineReceipts), { qos: 1 }), (e: { code?: number }) => e.code === 135, 'gateway identity: replay');
          await new Promise((r) => setTimeout(r, 1000));
          assert.equal(client.receiptStats.receiptsInvalid, 0, 'nothing the gateway identity published reached the device');
          assert.equal(client.receiptStats.receiptsReplayed, replayedBefore);

          // The bridge's identity may write receipts: they reach the device, which refuses them all.
          for (const [, r] of forged) await asBridge.publishAsync(receiptTopic(gatewayId), envelope([r]), { qos: 1 });
          await eventually(() => (client.receiptStats.receiptsInvalid >= forged.length ? true : undefined), 10_000, 'the forged receipts refused');
          // And every genuine receipt captured earlier, replayed as it was.
          for (const e of genuine) await asBridge.publishAsync(receiptTopic(gatewayId), Buffer.from(JSON.stringify(e)), { qos: 1 });
          await eventually(() => (client.receiptStats.receiptsReplayed >= replayedBefore + genuineReceipts.length ? true : undefined), 10_000, 'the replayed receipts ignored');
          await new Promise((r) => setTimeout(r, 500));

          assert.equal(client.receiptStats.receiptsInvalid, forged.length, 'each forged receipt refused, counted once');
          assert.equal(client.receiptStats.receiptsReplayed, replayedBefore + genuineReceipts.length, 'each replayed receipt counted');
          assert.equal(client.unacknowledged, held, 'nothing deleted');
          assert.equal(client.queue.awaiting.count, HELD, 'everything still awaits its receipt');
          assert.equal(client.queue.committedThrough, from - 1, 'nothing committed');
          assert.equal(client.status().commit.receiptsInvalid, forged.length);
          const invalidLogs = logs.lines.filter((l) => l.code === 'FIELD_RECEIPT_INVALID');
          assert.equal(invalidLogs.length, forged.length, 'each refusal logged');
          assert.ok(logs.codes().includes('FIELD_RECEIPT_REPLAYED'));
          assert.equal(readLocalStore(stack.dataDir.timeseries).filter((p) => p.measurement === 'readings' && p.tags.device === DEVICE).length, EARLY, 'the held readings are not stored yet');
        } finally {
          await stack.resume('distributor');
        }

        // 3. The internal side is back: its own receipts commit everything, and each reading is stored once.
        await eventually(() => (client.unacknowledged === 0 ? true : undefined), 40_000, 'the queue drained by real receipts');
        const rows = await eventually(() => {
          const r = readLocalStore(stack.dataDir.timeseries).filter((p) => p.measurement === 'readings' && p.tags.device === DEVICE);
          return r.length >= EARLY + HELD ? r : undefined;
        }, 10_000, 'every reading stored');
        assert.equal(rows.length, EARLY + HELD);
        assert.deepEqual(rows.map((r) => r.fields.v), Array.from({ length: EARLY + HELD }, (_, i) => i));
        assert.deepEqual(rows.map((r) => r.time), Array.from({ length: EARLY + HELD }, (_, i) => base + i * 1000));
        // Not even a duplicate line in the store: nothing had to be sent again.
        const raw = readdirSync(stack.dataDir.timeseries)
          .filter((f) => f.endsWith('.jsonl'))
          .flatMap((f) => readFileSync(join(stack.dataDir.timeseries, f), 'utf8').split('\n'))
          .filter((l) => l.includes('"measurement":"readings"') && l.includes(`"device":"${DEVICE}"`));
        assert.equal(raw.length, EARLY + HELD, 'each reading written once');
        assert.equal(client.receiptStats.resentForReceipt, 0);
        assert.equal(client.receiptStats.receiptsInvalid, logs.lines.filter((l) => l.code === 'FIELD_RECEIPT_INVALID').length, 'no receipt of the internal network was refused');
        for (const proc of stack.all) assert.ok(proc.running, `${proc.name} is still running`);
      } finally {
        await field.close();
      }
    });
  });

  describe('a WSS endpoint holding only the edge certificate sends commit frames of its own', () => {
    const logs = new LogCapture();
    let rogue: RogueGateway;
    /** the message ids the device sent */
    const sent: string[] = [];
    before(async () => {
      // "In the DMZ broker", says the rogue of everything: the device must still keep it all.
      rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => {
        for (const m of batch) sent.push(m.messageId);
      });
    });
    after(() => rogue.close());

    it('deletes nothing for a forged commit frame; only the device’s own key commits, once', async () => {
      const url = rogue.url;
      const field = await startTestFieldClient(pki.paths, DEVICE, url, logs.logger, { FIELD_COMMIT_TIMEOUT_MS: '60000' });
      try {
        const client = field.client;
        const N = 100;
        await client.submitMany(Array.from({ length: N }, (_, i) => ({ dataType: 'timeseries' as const, payload: { v: i } })));
        await eventually(() => (client.queue.awaiting.count === N ? true : undefined), 10_000, 'every reading acked by the rogue gateway');
        const epoch = client.queue.epoch;
        const first = client.queue.committedThrough + 1;
        const all: SeqRanges = [[first, first + N - 1]];
        const half: SeqRanges = [[first, first + N / 2 - 1]];
        const send = (f: CommitFrame) => rogue.send(f);
        const genuineHalf: CommitFrame = { type: 'commit', epoch, ranges: half, mac: signReceipt(key, DEVICE, epoch, half) };

        const forged: [string, CommitFrame][] = [
          ['a random MAC', { type: 'commit', epoch, ranges: all, mac: randomMac() }],
          ['another device’s key', { type: 'commit', epoch, ranges: all, mac: signReceipt(otherKey, DEVICE, epoch, all) }],
          ['the device’s key, another device’s id', { type: 'commit', epoch, ranges: all, mac: signReceipt(key, OTHER, epoch, all) }],
          ['a genuine receipt, ranges widened', { ...genuineHalf, ranges: all }],
          ['a genuine receipt, epoch altered', { ...genuineHalf, epoch: `${epoch}x` }],
          ['a genuine receipt of another epoch, epoch changed to this one', { type: 'commit', epoch, ranges: half, mac: signReceipt(key, DEVICE, 'old-epoch', half) }],
        ];
        for (const [, f] of forged) send(f);
        await eventually(() => (client.receiptStats.receiptsInvalid === forged.length ? true : undefined), 10_000, 'the forged commit frames refused');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(client.unacknowledged, N, 'nothing deleted');
        assert.equal(client.queue.awaiting.count, N);
        assert.equal(logs.lines.filter((l) => l.code === 'FIELD_RECEIPT_INVALID').length, forged.length);

        // A receipt under the device's own key (as the distributor makes one) deletes exactly what it names ...
        send(genuineHalf);
        await eventually(() => (client.unacknowledged === N / 2 ? true : undefined), 10_000, 'the genuine receipt applied');
        assert.equal(client.queue.committedThrough, first + N / 2 - 1);
        // ... once: replayed, it deletes nothing more.
        send(genuineHalf);
        await eventually(() => (client.receiptStats.receiptsReplayed === 1 ? true : undefined), 10_000, 'the replay counted');
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(client.unacknowledged, N / 2);
        assert.equal(client.receiptStats.receiptsInvalid, forged.length);
        assert.equal(client.receiptStats.receipts, 1);
        assert.ok(sent.length >= N);

        // A refusal of its own making deletes nothing either: what awaits its receipt is not in
        // flight, so an error frame naming it (or a message never sent) is not the gateway's to refuse.
        const ids = Array.from({ length: N }, (_, i) => `${epoch}.${first + i}`);
        rogue.send({ type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'forged', messageIds: [...ids, `${epoch}.${first + 10 * N}`] });
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(client.unacknowledged, N / 2, 'nothing deleted for a forged refusal');
        assert.equal(client.stats.refusedByGateway, 0);
      } finally {
        await field.close();
      }
    });
  });

  describe('a WSS endpoint holding only the edge certificate refuses what it never acked', () => {
    const logs = new LogCapture();
    const sent: string[] = [];
    let rogue: RogueGateway;
    before(async () => {
      rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => sent.push(...batch.map((m) => m.messageId)), { ack: false });
    });
    after(() => rogue.close());

    it('a refusal sets the messages aside whole on the device, never deletes them', async () => {
      const field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger);
      try {
        const client = field.client;
        const N = 20;
        await client.submitMany(Array.from({ length: N }, (_, i) => ({ dataType: 'timeseries' as const, payload: { v: i, timestamp: 1_700_000_000_000 + i } })));
        await eventually(() => (sent.length >= N ? true : undefined), 10_000, 'the readings sent, unanswered');
        rogue.send({ type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: 'refused by a compromised DMZ', messageIds: sent.slice(0, N) });
        await eventually(() => (client.unacknowledged === 0 ? true : undefined), 10_000, 'the refused readings let go of');
        const lines = readFileSync(join(field.dataDir, 'rejected.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { code: string; message: { payload: { v: number } } });
        assert.deepEqual(lines.map((l) => l.message.payload.v), Array.from({ length: N }, (_, i) => i), 'every refused reading kept whole');
        assert.ok(lines.every((l) => l.code === 'CONTRACT_INVALID_MESSAGE'));
        assert.equal(client.stats.refusedByGateway, N);
        assert.ok(logs.lines.some((l) => l.code === 'FIELD_MESSAGE_REFUSED'));
      } finally {
        await field.close();
      }
    });
  });

  /**
   * What is set aside (rejected.jsonl, rejected/) counts against FIELD_QUEUE_MAX_BYTES with the
   * queue: a DMZ refusing everything would otherwise move all the device takes in aside, free the
   * queue for more, and fill its disk. No room to set a refusal aside: the message stays queued.
   */
  describe('refusals forged for everything fill the device no further than FIELD_QUEUE_MAX_BYTES', () => {
    const logs = new LogCapture();
    const CAP = 1024 * 1024;
    /** far longer than any gateway's reason, and written on every line of its refusal unless cut */
    const REASON = `refused by a compromised DMZ ${'!'.repeat(20_000)}`;
    const sent = new Set<string>();
    let rogue: RogueGateway;
    before(async () => {
      // It refuses for good everything it is sent, at once.
      rogue = await RogueGateway.start(
        pki.paths,
        DEVICE,
        (batch) => {
          for (const m of batch) sent.add(m.messageId);
          rogue.send({ type: 'error', code: 'CONTRACT_INVALID_MESSAGE', message: REASON, messageIds: batch.map((m) => m.messageId) });
        },
        { ack: false },
      );
    });
    after(() => rogue.close());

    const size = (path: string) => (existsSync(path) ? statSync(path).size : 0);
    /** bytes on disk that count against the cap: the queue's segments and what is set aside (no file is sent here) */
    const counted = (dataDir: string) => {
      const q = join(dataDir, 'queue');
      return readdirSync(q).filter((f) => /^seg-\d+\.log$/.test(f)).reduce((n, f) => n + size(join(q, f)), 0) + size(join(dataDir, 'rejected.jsonl'));
    };
    type Line = { reason: string; message: { payload: { v: number } } };
    const linesOf = (path: string): Line[] => readFileSync(path, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line);
    /** 25 readings of about 4 KiB */
    const batch = (from: number) => Array.from({ length: 25 }, (_, k) => ({ dataType: 'timeseries' as const, payload: { v: from + k, note: 'n'.repeat(4000), timestamp: 1_700_000_000_000 + from + k } }));

    it('sets aside what fits, holds the rest queued and unsent (then new data is refused), and takes the room back as the operator moves rejected.jsonl away', async () => {
      const field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, { FIELD_QUEUE_MAX_BYTES: String(CAP), FIELD_METRICS_PORT: '0', FIELD_HTTP_PORT: '0' });
      const rejectedPath = join(field.dataDir, 'rejected.jsonl');
      try {
        const client = field.client;
        const held = () => client.status().rejected?.held ?? 0;
        let accepted = 0;
        let full = false;
        for (let i = 0; i < 30 && !full; i++) {
          try {
            accepted += (await client.submitMany(batch(accepted))).length;
          } catch (err) {
            assert.ok(isFieldStreamError(err, 'FIELD_QUEUE_FULL'), String(err));
            full = true;
            break;
          }
          // Sent, refused, and set aside or held: nothing else in flight.
          await eventually(() => (sent.size === accepted && client.unacknowledged === held() ? true : undefined), 10_000, `batch ${i} sent and refused`);
          const bytes = counted(field.dataDir);
          assert.ok(bytes <= CAP, `after batch ${i}: ${bytes} bytes on disk (queue and rejected.jsonl), over FIELD_QUEUE_MAX_BYTES ${CAP}`);
        }
        assert.ok(full, 'new data refused once the refusals fill the cap');
        assert.ok(held() > 0, 'refusals with no room to be set aside are held');
        const aside = linesOf(rejectedPath);
        // Nothing lost: every reading accepted is set aside or still queued, never sent again.
        assert.equal(aside.length + client.unacknowledged, accepted);
        assert.equal(sent.size, accepted);
        assert.ok(aside.every((l) => l.reason.length <= LIMITS.rejectedReasonMaxChars), "the DMZ's reason is cut");
        assert.ok(logs.lines.some((l) => l.code === 'FIELD_REJECTED_FULL'));
        // Visible: status, metrics, and the doctor (its network checks fail here; the local ones run).
        const status = client.status();
        assert.equal(status.rejected.bytes, size(rejectedPath));
        const m = parseExposition(await (await fetch(`${field.metricsUrl}/metrics`)).text());
        assert.equal(m.get('fieldstream_field_rejected_held_messages{service="field-client"}'), held());
        assert.equal(m.get('fieldstream_field_rejected_bytes{service="field-client"}'), size(rejectedPath));
        const d = pki.paths.device(DEVICE);
        const doctor = await runDoctor({ DEVICE_ID: DEVICE, GATEWAY_URL: 'wss://localhost:1/ws', FIELD_CA_FILE: pki.paths.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_DATA_DIR: field.dataDir, FIELD_HTTP_PORT: String(field.httpPort), FIELD_QUEUE_MAX_BYTES: String(CAP) });
        const check = doctor.find((r) => r.name === 'set aside');
        assert.equal(check?.level, 'fail', JSON.stringify(check));
        assert.match(check?.detail ?? '', new RegExp(`^${held()} refused messages wait`));

        // The operator moves rejected.jsonl off the device, as often as it fills again: the client
        // notices without a restart and sets the held messages aside, all of them in the end.
        const looked: string[] = [];
        await eventually(
          () => {
            if (held() > 0 && existsSync(rejectedPath) && size(rejectedPath) > 0) {
              const to = join(work.dir, `looked-at-${looked.length}.jsonl`);
              renameSync(rejectedPath, to);
              looked.push(to);
            }
            return held() === 0 && client.unacknowledged === 0 ? true : undefined;
          },
          15_000,
          'every held refusal set aside',
        );
        const all = [...looked, rejectedPath].filter((f) => existsSync(f)).flatMap(linesOf);
        assert.deepEqual(
          all.map((l) => l.message.payload.v).sort((a, b) => a - b),
          Array.from({ length: accepted }, (_, i) => i),
          'every reading set aside exactly once',
        );
        assert.equal(sent.size, accepted, 'a held message is never sent again');
        // And the room is new data's again.
        await client.submitMany(batch(accepted));
      } finally {
        await field.close();
      }
    });

    it('what earlier runs set aside (rejected.jsonl and rejected/) counts from the start, and is room again once moved away, without a restart', async () => {
      const dataDir = join(work.dir, 'set-aside-before');
      mkdirSync(join(dataDir, 'rejected'), { recursive: true, mode: 0o700 });
      writeFileSync(join(dataDir, 'rejected.jsonl'), `${JSON.stringify({ code: 'CONTRACT_INVALID_MESSAGE', pad: 'p'.repeat(500 * 1024) })}\n`);
      writeFileSync(join(dataDir, 'rejected', 'f0123-camera.jpg'), Buffer.alloc(500 * 1024));
      // Offline: nothing is sent, only what fits on the disk is at stake.
      const field = await startTestFieldClient(pki.paths, DEVICE, 'wss://localhost:1/ws', logs.logger, { FIELD_QUEUE_MAX_BYTES: String(CAP), FIELD_DATA_DIR: dataDir });
      try {
        await assert.rejects(field.client.submitMany(batch(0)), (err) => isFieldStreamError(err, 'FIELD_QUEUE_FULL'));
        assert.equal(field.client.status().rejected.bytes, size(join(dataDir, 'rejected.jsonl')) + 500 * 1024);
        const d = pki.paths.device(DEVICE);
        const doctor = await runDoctor({ DEVICE_ID: DEVICE, GATEWAY_URL: 'wss://localhost:1/ws', FIELD_CA_FILE: pki.paths.publicCa, FIELD_CERT_FILE: d.cert, FIELD_KEY_FILE: d.key, FIELD_DATA_DIR: dataDir, FIELD_HTTP_PORT: 'off', FIELD_QUEUE_MAX_BYTES: String(CAP) });
        assert.equal(doctor.find((r) => r.name === 'set aside')?.level, 'warn');
        rmSync(join(dataDir, 'rejected', 'f0123-camera.jpg'));
        await eventually(() => field.client.submitMany(batch(0)).catch(() => undefined), 5_000, 'the room taken back');
      } finally {
        await field.close();
      }
    });
  });
});
