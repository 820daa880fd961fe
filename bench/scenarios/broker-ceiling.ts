import { readFileSync } from 'node:fs';
import { connectAsync } from 'mqtt';
import { GatewayEnvelopeSchema, parseEnvelope, UplinkEnvelopeSchema } from '../../shared/contract/envelope.ts';
import { parseTopic, TOPIC_FILTERS } from '../../shared/contract/topics.ts';
import { pkiPaths } from '../../pki/layout.ts';
import { connectClients, publishWindowed, startDmzBroker } from '../lib/brokers.ts';
import type { BenchContext } from '../lib/context.ts';
import { sleep } from '../lib/context.ts';
import type { ThroughputResult } from '../lib/results.ts';

export const BROKER_CEILING = "broker ceiling: the batched run's envelopes into one Mosquitto";

/** An MQTT message as the gateway published it into the DMZ broker. */
export interface CapturedMessage {
  topic: string;
  payload: Buffer;
}

export interface Capture {
  messages: CapturedMessage[];
  /** readings the envelopes carry */
  readings: number;
}

/**
 * Records what the gateway publishes into the DMZ broker while `run` (a batched round of devices
 * PREFIX-*) goes on: every envelope of those devices' readings, byte for byte, read by a
 * subscriber of its own with the bridge's identity. The round is a capture only, not one of the
 * measured ones: the subscriber's copies cost the broker and this process CPU. It ends when the
 * envelopes hold the round's `total` readings.
 */
export async function captureEnvelopes(ctx: BenchContext, prefix: string, total: number, run: () => Promise<unknown>): Promise<Capture> {
  const p = pkiPaths(ctx.certs);
  const sub = await connectAsync(ctx.stack.urls.dmzMqtt, {
    ca: readFileSync(p.publicCa),
    cert: readFileSync(p.service('internal/bridge').cert),
    key: readFileSync(p.service('internal/bridge').key),
    protocolVersion: 5,
    clientId: 'bench-capture',
  });
  const messages: CapturedMessage[] = [];
  let readings = 0;
  sub.on('message', (topic, payload) => {
    const t = parseTopic(topic);
    // The readings' envelopes only (the gateway's, or with GATEWAY_UPLINK_ENVELOPES=device each
    // device's): the clients' health reports travel beside them.
    let n = 0;
    if (t.kind === 'gatewayUplink') {
      for (const s of parseEnvelope(GatewayEnvelopeSchema, payload).devices) if (s.deviceId.startsWith(`${prefix}-`)) n += s.messages.length;
    } else if (t.kind === 'uplink' && t.dataType === 'timeseries' && t.deviceId.startsWith(`${prefix}-`)) {
      n = parseEnvelope(UplinkEnvelopeSchema, payload).messages.length;
    }
    if (n === 0) return;
    messages.push({ topic, payload });
    readings += n;
  });
  try {
    await sub.subscribeAsync([TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink], { qos: 1 });
    await run();
    const deadline = Date.now() + 60_000;
    while (readings < total) {
      if (Date.now() > deadline) throw new Error(`envelope capture: ${readings} of ${total} readings seen`);
      await sleep(20);
    }
  } finally {
    await sub.endAsync();
  }
  return { messages, readings };
}

/**
 * The broker's ceiling for the pipeline's own messages: the envelopes a batched round produced
 * (the same count, the same bytes, on their topics) published at QoS 1 straight into one
 * Mosquitto in the DMZ configuration (TLS, client certificates) by as many MQTT clients as the
 * pipeline scenarios have devices, each envelope by its device's client, and counted by one
 * subscriber. Readings/s are the readings those envelopes carry.
 */
export async function brokerCeiling(ctx: BenchContext, capture: Capture): Promise<ThroughputResult & { messages: number }> {
  const broker = await startDmzBroker(ctx, 'ceiling-mosquitto');
  try {
    const sub = await connectAsync(broker.url, { ...broker.options('internal/bridge'), protocolVersion: 5, clientId: 'ceiling-counter' });
    let received = 0;
    let bytes = 0;
    sub.on('message', (_topic, payload) => {
      received++;
      bytes += payload.length;
    });
    await sub.subscribeAsync([TOPIC_FILTERS.uplink, TOPIC_FILTERS.gatewayUplink], { qos: 1 });
    const pubs = await connectClients(broker, ctx.clients, 'ceiling-pub', { protocolVersion: 5 });
    // Each device's envelopes, in their order, by one client; the gateway's, in turn by each.
    const byClient = pubs.map(() => [] as CapturedMessage[]);
    capture.messages.forEach((m, i) => byClient[Number(/devices\/[^/]*-(\d+)\/up\//.exec(m.topic)?.[1] ?? i) % pubs.length]?.push(m));
    const sent = capture.messages.reduce((n, m) => n + m.payload.length, 0);
    const started = Date.now();
    await Promise.all(pubs.map((c, i) => publishWindowed(c, byClient[i]?.length ?? 0, (k) => [byClient[i]?.[k]?.topic ?? '', byClient[i]?.[k]?.payload ?? ''])));
    const deadline = Date.now() + 300_000;
    while (received < capture.messages.length && Date.now() < deadline) await sleep(20);
    const seconds = (Date.now() - started) / 1000;
    for (const c of [...pubs, sub]) await c.endAsync();
    if (received !== capture.messages.length || bytes !== sent) throw new Error(`broker ceiling: ${received} of ${capture.messages.length} messages (${bytes} of ${sent} bytes) counted`);
    return {
      scenario: BROKER_CEILING,
      clients: ctx.clients,
      readings: capture.readings,
      messages: received,
      seconds,
      readingsPerSecond: Math.round(capture.readings / seconds),
      lost: 0,
      duplicated: 0,
    };
  } finally {
    await broker.process.stop();
  }
}
