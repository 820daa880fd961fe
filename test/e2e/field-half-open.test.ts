import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import { CommandHandlers } from '../../field-client/src/commands.ts';
import { FieldClient } from '../../field-client/src/field-client.ts';
import { FileOutbox } from '../../field-client/src/files/file-outbox.ts';
import { GatewayConnection } from '../../field-client/src/gateway-connection.ts';
import { DurableQueue } from '../../field-client/src/queue/durable-queue.ts';
import { createCertificateAuthority, issueCertificate } from '../../pki/certificates.ts';
import { LIMITS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * A half-open connection for real: once the device is connected, nftables drops every packet of
 * the gateway's port, both ways (no FIN, no RST: a DMZ server whose power or link went). The device
 * notices by the gateway's silence, within the answer timeout after a frame it sent, or the idle
 * timeout when it sends nothing, rather than the kernel's keepalive (2 hours), and reconnects once
 * the path is back. Needs root and nft (skipped otherwise).
 */
const DEVICE = 'd1';
function nftUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'nftables needs root';
  try {
    execFileSync('nft', ['list', 'tables'], { stdio: 'pipe' });
  } catch (err) {
    return `nft cannot be used here: ${(err as Error).message.split('\n')[0]}`;
  }
  return undefined;
}
const why = nftUnavailable();

describe('a field client on a connection that goes half-open', { skip: why }, () => {
  const ca = createCertificateAuthority('Half-open Test CA', 1);
  const serverCert = issueCertificate(ca, { commonName: 'gw', organizationalUnit: 'services', role: 'server', validityDays: 1, subjectAltNames: ['localhost'] });
  const table = `fs_halfopen_${randomBytes(3).toString('hex')}`;
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  /** Drops every TCP packet to or from `port` on this machine (loopback included), until `restore`. */
  function blackhole(port: number): () => void {
    execFileSync('nft', ['-f', '-'], {
      input: `table inet ${table} {\n chain out { type filter hook output priority 0; policy accept; tcp dport ${port} drop; tcp sport ${port} drop; }\n}\n`,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let done = false;
    const restore = () => {
      if (done) return;
      done = true;
      execFileSync('nft', ['delete', 'table', 'inet', table], { stdio: 'pipe' });
    };
    cleanups.push(restore);
    return restore;
  }

  async function gateway() {
    const https: Server = createServer({ cert: serverCert.certPem, key: serverCert.keyPem });
    const wss = new WebSocketServer({ server: https });
    const g = { port: 0, connections: 0, received: new Set<string>() };
    wss.on('connection', (ws) => {
      g.connections++;
      ws.on('error', () => {});
      ws.send(JSON.stringify({ type: 'welcome', deviceId: DEVICE, gatewayId: 'gw', serverTime: Date.now(), limits: { frameMaxBytes: LIMITS.frameMaxBytes, batchMaxMessages: LIMITS.batchMaxMessages } }));
      ws.on('message', (data: Buffer) => {
        const frame = JSON.parse(data.toString()) as { batch?: { messageId: string }[] };
        if (!frame.batch) return;
        for (const m of frame.batch) g.received.add(m.messageId);
        ws.send(JSON.stringify({ type: 'ack', messageIds: frame.batch.map((m) => m.messageId) }));
      });
    });
    await new Promise<void>((r) => https.listen(0, '127.0.0.1', r));
    g.port = (https.address() as AddressInfo).port;
    cleanups.push(async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      await new Promise<void>((r) => https.close(() => r()));
    });
    return g;
  }

  async function device(port: number, logs: LogCapture) {
    const work = tempDir('half-open');
    const queue = await DurableQueue.open({ dir: join(work.dir, 'queue'), maxBytes: 64 * 1024 * 1024, segmentBytes: 4 * 1024 * 1024, fullPolicy: 'reject', sync: { mode: 'interval', ms: 1000 }, log: logs.logger });
    const connection = new GatewayConnection(
      { url: `wss://localhost:${port}/ws`, tls: { ca: ca.certPem, token: `fst1.${DEVICE}.x` }, reconnectInitialMs: 20, reconnectMaxMs: 200, idleTimeoutMs: 4_000, answerTimeoutMs: 1_500 },
      logs.logger,
    );
    const commands = new CommandHandlers({ deviceId: DEVICE, key: undefined, allowUnsigned: false, maxAgeMs: 1000, skewMs: 1000 });
    const client = new FieldClient({ deviceId: DEVICE, batchMax: 500, window: 100, fileWindow: 1, maxBytes: 64 * 1024 * 1024, dataDir: work.dir }, queue, new FileOutbox(work.dir, 64 * 1024), connection, commands, logs.logger);
    cleanups.push(async () => {
      client.stop();
      await connection.stop();
      await queue.close();
      work.cleanup();
    });
    connection.start();
    await eventually(() => (client.welcome ? true : undefined), 10_000, 'welcomed');
    return { client, connection };
  }

  it('drops it within the answer timeout of the next frame, then delivers once the path is back', async () => {
    const logs = new LogCapture();
    const gw = await gateway();
    const d = await device(gw.port, logs);
    await d.client.submit('event', { eventType: 'e', message: 'before', severity: 'info' });
    await eventually(() => (gw.received.size === 1 ? true : undefined), 10_000, 'the first message');
    const restore = blackhole(gw.port);
    const sentAt = performance.now();
    await d.client.submit('event', { eventType: 'e', message: 'into the void', severity: 'info' });
    await eventually(() => (logs.codes().includes('FIELD_GATEWAY_SILENT') ? true : undefined), 10_000, 'the silence noticed');
    const tookMs = performance.now() - sentAt;
    assert.ok(tookMs < 3_500, `noticed ${Math.round(tookMs)} ms after the frame (answer timeout 1.5 s)`);
    assert.equal(gw.received.size, 1, 'the frame never arrived');
    restore();
    await eventually(() => (gw.received.size === 2 ? true : undefined), 20_000, 'sent again once the path is back');
  });

  it('drops an idle one within the idle timeout', async () => {
    const logs = new LogCapture();
    const gw = await gateway();
    await device(gw.port, logs);
    blackhole(gw.port);
    const droppedAt = performance.now();
    await eventually(() => (logs.codes().includes('FIELD_GATEWAY_SILENT') ? true : undefined), 10_000, 'the silence noticed');
    const tookMs = performance.now() - droppedAt;
    assert.ok(tookMs < 6_000, `noticed ${Math.round(tookMs)} ms after the path went (idle timeout 4 s)`);
  });
});
