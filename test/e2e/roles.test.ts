import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { startEmbeddedFixture, type EmbeddedFixture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { commandTopic, TOPIC_FILTERS, uplinkTopic } from '../../shared/contract/topics.ts';
import { TIMINGS } from '../../shared/limits.ts';

describe('roles', () => {
  let fx: EmbeddedFixture;
  const tmp = tempDir('roles');
  const tokens = { viewer: 'viewer-token-0123456789abcdef', admin: 'admin-token-0123456789abcdef0' };
  before(async () => {
    const file = join(tmp.dir, 'tokens.json');
    writeFileSync(
      file,
      JSON.stringify([
        { name: 'dashboard', role: 'viewer', sha256: createHash('sha256').update(tokens.viewer).digest('hex') },
        { name: 'root', role: 'admin', sha256: createHash('sha256').update(tokens.admin).digest('hex') },
      ]),
    );
    fx = await startEmbeddedFixture(['role-dev'], { COMMAND_API_TOKENS_FILE: file });
  });
  after(async () => {
    await fx.stop();
    tmp.cleanup();
  });
  const call = (token: string, method: string, body?: unknown) =>
    fetch(`http://127.0.0.1:${fx.pipeline.commandApi.port}/v1/commands`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  it('the command API: a viewer reads, only an operator or admin sends commands', async () => {
    assert.equal((await call(tokens.viewer, 'GET')).status, 200);
    const refused = await call(tokens.viewer, 'POST', { deviceId: 'role-dev', command: 'ping' });
    assert.equal(refused.status, 403);
    assert.equal(((await refused.json()) as { code: string }).code, 'API_FORBIDDEN');
    // Logged for the operators' audit, naming the credential and its role.
    const audit = fx.logs.lines.find((l) => l.code === 'API_FORBIDDEN');
    assert.ok(audit && String(audit.err).includes('dashboard (viewer)') && audit.method === 'POST', JSON.stringify(audit));
    assert.equal((await call(fx.pipeline.commandApiToken, 'POST', { deviceId: 'role-dev', command: 'ping' })).status, 202, 'COMMAND_API_TOKEN is an operator');
    assert.equal((await call(tokens.admin, 'POST', { deviceId: 'role-dev', command: 'ping' })).status, 202);
    assert.equal((await call('nobody-0123456789abcdefghij', 'GET')).status, 401);
  });

  it('the command API reads COMMAND_API_TOKENS_FILE again when it changes: a token taken out is refused within a second, no restart', async () => {
    const file = join(tmp.dir, 'tokens.json');
    const before = readFileSync(file, 'utf8');
    const entries = JSON.parse(before) as Array<{ name: string; role: string; sha256: string }>;
    try {
      assert.equal((await call(tokens.admin, 'GET')).status, 200);
      writeFileSync(`${file}.new`, JSON.stringify(entries.filter((e) => e.role !== 'admin')));
      renameSync(`${file}.new`, file);
      const deadline = Date.now() + TIMINGS.roleTokensReloadMs + 3_000;
      let status = 0;
      while (Date.now() < deadline && (status = (await call(tokens.admin, 'GET')).status) !== 401) await new Promise((r) => setTimeout(r, 100));
      assert.equal(status, 401, 'the admin token taken out is refused');
      assert.equal((await call(tokens.viewer, 'GET')).status, 200, 'the others still work');
      assert.equal((await call(fx.pipeline.commandApiToken, 'GET')).status, 200, 'COMMAND_API_TOKEN too');
    } finally {
      writeFileSync(file, before);
    }
  });

  it('the broker: a read-only consumer sees the data and can change nothing', async () => {
    const c = fx.pki.paths.service('internal/consumer');
    const consumer = await connectAsync(`mqtts://127.0.0.1:${fx.pipeline.broker.port}`, {
      ca: readFileSync(fx.pki.paths.publicCa), cert: readFileSync(c.cert), key: readFileSync(c.key), protocolVersion: 4, reconnectPeriod: 0,
    });
    try {
      await consumer.subscribeAsync(TOPIC_FILTERS.uplink, { qos: 1 });
      await assert.rejects(consumer.subscribeAsync(commandTopic('role-dev'), { qos: 1 }), /Subscribe error/);
      const closed = new Promise<void>((resolve) => consumer.once('close', () => resolve()));
      consumer.publish(uplinkTopic('role-dev', 'timeseries'), '{}', { qos: 1 });
      await closed;
    } finally {
      await consumer.endAsync(true);
    }
  });
});
