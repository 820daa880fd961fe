import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { WebSocket } from 'ws';
import { LIMITS } from '../../shared/limits.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { RogueGateway } from '../helpers/rogue-gateway.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'meter-7';

/**
 * A compromised gateway sends one frame far larger than any legitimate downlink frame. The field
 * client does not buffer it (ws's default would take 100 MiB): the connection is closed with
 * FIELD_GATEWAY_FRAME_TOO_LARGE logged, and the client reconnects and keeps sending.
 */
describe('the field client reads no downlink frame above LIMITS.downlinkFrameMaxBytes', () => {
  const pki = makeTestPki([DEVICE]);
  const logs = new LogCapture();
  let readings = 0;
  let rogue: RogueGateway;
  let field: Awaited<ReturnType<typeof startTestFieldClient>>;
  before(async () => {
    rogue = await RogueGateway.start(pki.paths, DEVICE, (batch) => (readings += batch.filter((m) => m.dataType === 'timeseries').length));
    field = await startTestFieldClient(pki.paths, DEVICE, rogue.url, logs.logger, { FIELD_RECONNECT_MAX_MS: '1000' });
    await eventually(() => rogue.socket, 10_000, 'the field client connected');
  });
  after(async () => {
    await field?.close();
    await rogue.close();
    pki.cleanup();
  });

  it('closes the connection on an oversized frame, logs its code, reconnects', async () => {
    assert.ok(LIMITS.downlinkFrameMaxBytes >= 4096 * 36 + 1024, 'a commit of receiptMaxRanges ranges fits');
    const first = rogue.socket as WebSocket;
    const closed = new Promise<number>((resolve) => first.once('close', (code) => resolve(code)));
    // A well-formed error frame, but 3 MiB: the old client parsed it whole.
    rogue.send({ type: 'error', code: 'GATEWAY_RATE_LIMITED', message: 'x'.repeat(3 * 1024 * 1024) });
    assert.equal(await closed, 1009);
    await eventually(() => logs.lines.find((l) => l.code === 'FIELD_GATEWAY_FRAME_TOO_LARGE'), 10_000, 'the code logged');
    await eventually(() => (rogue.socket !== first && rogue.socket?.readyState === 1 ? true : undefined), 15_000, 'reconnected');
    await field.client.submit('timeseries', { v: 1 });
    await eventually(() => (readings > 0 ? true : undefined), 10_000, 'a reading sent after the reconnect');
  });
});
