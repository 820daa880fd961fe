import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { eventually } from '../helpers/ws-device.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { api, REPO_ROOT, startTestStack } from '../helpers/stack.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { LogCapture } from '../helpers/embedded.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { readLocalStore } from '../../internal-network/distributor/sinks/local-store.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { capturedReadings, READING_FILTERS } from '../helpers/captured-envelopes.ts';
import { parseExposition, sumOf } from '../../shared/metrics/exposition.ts';

const run = promisify(execFile);

/**
 * The internal server loses its state and gets it back from a backup, on the real stack with
 * signatures required: a device streams and answers a command; `fieldstream-admin backup` runs
 * while everything runs; the distributor and the command API stop and their state (device signing
 * keys, replay windows, command journal) is wiped; `fieldstream-admin restore` puts it back and
 * they start again. Readings arrive again, a frame captured before the backup and replayed by a
 * compromised DMZ is refused, and the command history is there.
 */
describe('backup, wipe and restore of the internal state on the real stack', () => {
  const work = tempDir('backup-e2e');
  const pki = makeTestPki(['keeper-1']);
  const logs = new LogCapture();
  const stackDir = join(work.dir, 'stack');
  const stateDir = join(stackDir, 'distributor-state');
  const journal = join(stackDir, 'commands.jsonl');
  const archive = join(work.dir, 'internal.tar.gz');
  let stack: LocalStack;
  let token: string;
  let dmz: MqttClient;
  let spy: MqttClient;
  const captured: Buffer[] = [];

  before(async () => {
    ({ stack, token } = await startTestStack(pki.dir, stackDir, { DISTRIBUTOR_REQUIRE_SIGNATURES: 'true' }));
    const ca = readFileSync(pki.paths.publicCa);
    const gw = pki.paths.service('dmz/gateway');
    dmz = await connectAsync(stack.urls.dmzMqtt, { ca, cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 5 }); // a compromised DMZ
    const c = pki.paths.service('internal/consumer');
    spy = await connectAsync(stack.urls.internalMqtt, { ca, cert: readFileSync(c.cert), key: readFileSync(c.key), protocolVersion: 5 }); // to capture a real frame
    spy.on('message', (t, m) => {
      captured.push(...capturedReadings('keeper-1', t, m));
    });
    await spy.subscribeAsync(READING_FILTERS, { qos: 0 });
  });
  after(async () => {
    await dmz?.endAsync();
    await spy?.endAsync();
    await stack?.close();
    pki.cleanup();
    work.cleanup();
  });

  const points = () => readLocalStore(stack.dataDir.timeseries);
  const readings = () => points().filter((p) => p.measurement === 'readings' && p.tags.device === 'keeper-1');
  const refusals = () => points().filter((p) => p.measurement === 'security_events' && (p.tags.reason === 'SECURITY_DUPLICATE' || p.tags.reason === 'SECURITY_REPLAY'));
  const admin = (...args: string[]) =>
    run(join(REPO_ROOT, 'bin', 'fieldstream-admin'), [...args, '--certs-dir', pki.dir, '--state-dir', stateDir, '--command-state', journal], {
      env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null' },
      cwd: REPO_ROOT,
    });

  it('brings the pipeline back: readings arrive, an old frame is refused, the command history is there', async () => {
    const field = await startTestFieldClient(pki.paths, 'keeper-1', stack.urls.wss, logs.logger);
    field.commands.register('ping', () => ({ status: 'completed', result: 'pong' }));
    try {
      const base = Date.parse('2026-03-01T00:00:00Z');
      const stream = (from: number, count: number) =>
        field.client.submitMany(Array.from({ length: count }, (_, i) => ({ dataType: 'timeseries' as const, payload: { n: from + i, timestamp: base + from + i } })));
      await stream(0, 20);
      await eventually(() => (readings().length === 20 ? true : undefined), 30_000, 'the first readings');
      await eventually(() => (captured.length >= 1 ? true : undefined), 10_000, 'a frame captured');

      const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: 'keeper-1', command: 'ping' });
      assert.equal(issued.status, 202, JSON.stringify(issued.body));
      const commandId = issued.body.commands[0].commandId as string;
      await eventually(async () => ((await api(stack, token, 'GET', `/v1/commands/${commandId}`)).body.state === 'completed' ? true : undefined), 30_000, 'the command answered');

      // Nothing left for the device to send again, so every refusal below is the replay's.
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 30_000, 'every message committed');

      // A backup while everything runs, then the loss of the internal state.
      const made = await admin('backup', archive);
      assert.match(made.stdout, /^Backed up \d+ files to .*\(mode 0600\).*device-keys 1.*stored-feed-key 1.*replay-windows \d.*command-journal 1/s);
      assert.equal(statSync(archive).mode & 0o777, 0o600);
      await stack.console.stop();
      await stack.distributor.stop();
      await stack.commandApi.stop();
      const keyFile = pki.paths.deviceKeyRegistry('keeper-1');
      const feedKey = readFileSync(pki.paths.storedFeedKey);
      rmSync(pki.paths.storedFeedKey);
      rmSync(join(pki.dir, 'internal', 'device-keys'), { recursive: true, force: true });
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(journal, { force: true });

      const restored = await admin('restore', archive);
      assert.match(restored.stdout, /^Restored /);
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      assert.ok(readFileSync(pki.paths.storedFeedKey).equals(feedKey), 'the stored-feed key, as it was');
      assert.equal(statSync(pki.paths.storedFeedKey).mode & 0o777, 0o600);
      assert.ok(existsSync(join(stateDir, 'replay')));
      await stack.distributor.start();
      await stack.commandApi.start();
      await stack.console.start();

      // Readings arrive again, from the same device and its same queue.
      await stream(20, 20);
      await eventually(() => (readings().length === 40 ? true : undefined), 60_000, 'the readings after the restore');
      // The console takes the restored distributor's feed: the same key on both sides again.
      const consoleSamples = async () => parseExposition(await (await fetch(`${stack.metrics.console}/metrics`)).text());
      await eventually(async () => ((sumOf(await consoleSamples(), 'fieldstream_console_feed_messages_total') ?? 0) > 0 ? true : undefined), 30_000, 'the console taking the feed');
      assert.equal(sumOf(await consoleSamples(), 'fieldstream_console_feed_refused_total'), 0);

      // A frame captured before the backup, replayed as it was: the restored window refuses it.
      await eventually(() => (field.client.unacknowledged === 0 ? true : undefined), 30_000, 'every message committed');
      assert.deepEqual(refusals(), [], 'no refusal before the replay');
      const frame = captured[0] as Buffer;
      const replayedIds = (JSON.parse(frame.toString()) as { messages: Array<{ messageId: string }> }).messages.map((m) => m.messageId);
      await dmz.publishAsync(uplinkTopic('keeper-1', 'timeseries'), frame, { qos: 1 });
      const refused = await eventually(() => {
        const r = refusals().filter((p) => p.tags.device === 'keeper-1');
        return r.length >= replayedIds.length ? r : undefined;
      }, 30_000, 'the replay refused');
      assert.deepEqual(refused.map((p) => p.fields.message_id).sort(), [...replayedIds].sort());
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(readings().length, 40, 'nothing was written twice');
      assert.deepEqual(readings().map((p) => p.fields.n).sort((a, b) => Number(a) - Number(b)), Array.from({ length: 40 }, (_, i) => i));

      // The command history came back with the journal.
      const history = await api(stack, token, 'GET', '/v1/commands?deviceId=keeper-1');
      assert.equal(history.status, 200);
      const found = (history.body.commands as Array<{ commandId: string; state: string }>).find((c) => c.commandId === commandId);
      assert.equal(found?.state, 'completed');
    } finally {
      await field.close();
    }
  });
});
