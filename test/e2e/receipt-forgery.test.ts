import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import type { CommitFrame } from '../../shared/contract/downlink.ts';
import { RECEIPTS_VERSION, type Receipt, type ReceiptsEnvelope } from '../../shared/contract/receipt.ts';
import { receiptTopic, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { parseSigningKey } from '../../shared/security/message-auth.ts';
import { signReceipt, type SeqRanges } from '../../shared/security/receipt-auth.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
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
});
