import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CommandApi } from '../../internal-network/command-api/command-api.ts';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { issueTestCommand, startTestCommandApi, testCommandState } from '../helpers/command-api.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { startMosquitto } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

/**
 * A command the broker refuses to take (its ACL: an MQTT 5 PUBACK with reason code 0x87, "Not
 * authorized"). The API logged "will retry" without a code, though nothing retries it before the
 * next connection or the device's presence. Now MQTT_PUBLISH_REFUSED, at error, saying so; the
 * command stays queued. A real Mosquitto over mutual TLS whose ACL lets clients read but write nothing.
 */
describe('a command the broker refuses', () => {
  const pki = makeTestPki(['pump-1']);
  const work = tempDir('command-publish-refused');
  const logs = new LogCapture();
  const token = 'refused-test-token-0123456789abcdef';
  let broker: { tlsUrl?: string; process: ManagedProcess } | undefined;
  let api: CommandApi | undefined;

  before(async () => {
    const p = pki.paths;
    const acl = join(work.dir, 'acl');
    writeFileSync(acl, 'topic read #\n');
    broker = await startMosquitto(work.dir, { ca: p.publicCa, cert: p.service('internal/mosquitto').cert, key: p.service('internal/mosquitto').key }, `acl_file ${acl}\n`);
    api = await startTestCommandApi({ brokerUrl: broker.tlsUrl ?? '', pki, dir: work.dir, token, clientId: 'command-api-refused', log: logs.logger });
  });
  after(async () => {
    await api?.close();
    await broker?.process.stop();
    work.cleanup();
    pki.cleanup();
  });

  it('logs MQTT_PUBLISH_REFUSED with the reason code, and the command stays queued', async () => {
    const a = api as CommandApi;
    await eventually(() => (a.mqtt.connected ? true : undefined), 10_000, 'the broker connection');
    const id = await issueTestCommand(a.port, token, { deviceId: 'pump-1', command: 'reboot' });
    const line = await eventually(() => logs.lines.find((l) => l.code === 'MQTT_PUBLISH_REFUSED'), 10_000, 'the refusal logged');
    assert.equal(line.reasonCode, 0x87, 'Not authorized (MQTT 5 §2.4)');
    assert.equal(line.level, 50, 'at error: nothing goes through until the policy is fixed');
    assert.equal(line.commandId, id);
    assert.ok(!logs.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('will retry')), 'no promise of a retry');
    assert.equal(await testCommandState(a.port, token, id), 'queued');
  });
});
