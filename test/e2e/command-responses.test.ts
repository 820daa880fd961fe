import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, type EnvelopeOf } from '../../shared/contract/envelope.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { parseSigningKey, signGroup, signMessage } from '../../shared/security/message-auth.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { startTestFieldClient } from '../helpers/field.ts';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { api, influxSettings, startTestStack } from '../helpers/stack.ts';
import { eventually } from '../helpers/ws-device.ts';
import { InfluxV1, Postgres } from '../../scripts/local-stack/databases.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { InfluxV1Sink } from '../../internal-network/distributor/sinks/influx-v1.ts';
import { responsePoints, uplinkKey } from '../../internal-network/distributor/points.ts';
import { InfluxResponses } from '../../internal-network/command-api/influx-responses.ts';
import { PostgresResponses } from '../../internal-network/command-api/stored-responses.ts';
import { PostgresSink } from '../../internal-network/distributor/sinks/postgres/sink.ts';
import { postgresConnection } from '../../internal-network/shared/postgres-settings.ts';
import { createLogger } from '../../shared/logger.ts';

const DEVICE = 'valve-1';
const OTHER = 'valve-2';
/** the device of the scenario with PostgreSQL, and one registered (a signing key) that never connects */
const PUMP_PG = 'pump-9';
const AWAY_PG = 'pump-10';
/** the same for the scenario with InfluxDB */
const PUMP_INFLUX = 'pump-19';
const AWAY_INFLUX = 'pump-20';
/** the InfluxDB database the distributor writes to */
const DB = 'fieldstream';

// One stack, one PostgreSQL and one InfluxDB for the whole file: each start costs seconds, and no
// scenario needs them fresh. The distributor writes to both databases (as deployed with both set);
// each lost-response scenario restarts the command API with the ledger it is about (it reads
// PostgreSQL when that is set, else InfluxDB), and checks which one it read.
const pki = makeTestPki([DEVICE, OTHER, PUMP_PG, AWAY_PG, PUMP_INFLUX, AWAY_INFLUX]);
const work = tempDir('command-responses');
const logs = new LogCapture();
const pgPassword = 'lost-response-pw';
let db: Postgres;
let influx: InfluxV1;
let postgresUrl: string;
let stack: LocalStack;
let token: string;
let dmz: MqttClient;

before(async () => {
  [db, influx] = await Promise.all([Postgres.start(join(work.dir, 'pg')), InfluxV1.start(join(work.dir, 'influxdb'), DB)]);
  await db.createUser('fieldstream', pgPassword);
  postgresUrl = `postgres://fieldstream:${pgPassword}@127.0.0.1:${db.port}/fieldstream`;
  // Every service takes these: the distributor writes to both, the command API reads one.
  ({ stack, token } = await startTestStack(pki.dir, join(work.dir, 'stack'), {
    POSTGRES_URL: postgresUrl,
    POSTGRES_TIMEOUT_MS: '5000',
    ...influxSettings(influx, DB),
    DISTRIBUTOR_RETRY_MAX_MS: '1000',
  }));
  const gw = pki.paths.service('dmz/gateway');
  dmz = await connectAsync(stack.urls.dmzMqtt, { ca: readFileSync(pki.paths.publicCa), cert: readFileSync(gw.cert), key: readFileSync(gw.key), protocolVersion: 5 });
});
after(async () => {
  await dmz?.endAsync();
  await stack?.close();
  await influx?.process.stop();
  await db?.stop();
  pki.cleanup();
  work.cleanup();
});

/**
 * A compromised DMZ publishes uplink envelopes with the gateway's identity. It holds back a command
 * the API issued to a device that is offline, and reports it answered: `completed` unsigned, signed
 * with another device's key, or in a signed group it altered; `rejected` (which would make the
 * command final, never delivered again). The command API believes none of them: the command stays
 * pending, runs when the device connects, and the device's own answer is what is recorded.
 */
describe('command responses authenticated end to end against a compromised DMZ', () => {
  const marker = join(work.dir, 'valve-closed');
  const commandsFile = join(work.dir, 'commands.json');
  writeFileSync(commandsFile, JSON.stringify({ close_valve: { type: 'exec', program: 'sh', args: ['-c', `echo "$FIELDSTREAM_COMMAND_ID" >> '${marker}'`] } }));
  const key = parseSigningKey(readFileSync(pki.paths.device(DEVICE).signingKey, 'utf8')) as Buffer;
  const otherKey = parseSigningKey(readFileSync(pki.paths.device(OTHER).signingKey, 'utf8')) as Buffer;
  const runs = () => (existsSync(marker) ? readFileSync(marker, 'utf8').trim().split('\n') : []);

  it('records no forged answer; the device’s own answer once it connects', async () => {
    const r = await api(stack, token, 'POST', '/v1/commands', { deviceId: DEVICE, command: 'close_valve' });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const id = r.body.commands[0].commandId as string;
    const state = async () => (await api(stack, token, 'GET', `/v1/commands/${id}`)).body;

    type Response = EnvelopeOf<'response'>['messages'][number];
    const completed = { commandId: id, status: 'completed' as const, result: { forged: true } };
    const rejected = { commandId: id, status: 'rejected' as const, result: { code: 'FIELD_COMMAND_BAD_SIGNATURE' } };
    const now = Date.now();
    const header = { deviceId: DEVICE, dataType: 'response' as const, epoch: 'forged', ts: now };
    const inGroup = (k: Buffer, payloads: Response['payload'][], seq0: number): Response[] => {
      const members = payloads.map((payload, j) => ({ seq: seq0 + j, payload }));
      const auth = signGroup(k, header, members);
      return members.map((m, j) => ({ messageId: `forged-${seq0 + j}`, ...(j === 0 ? { auth } : { seq: m.seq }), payload: m.payload }));
    };
    const altered = inGroup(key, [{ ...completed, commandId: 'cmd-other' }], 30); // the device's key, the content changed
    (altered[0] as Response).payload = completed;
    const attacks: [string, Response[], string][] = [
      ['unsigned completed', [{ messageId: 'forged-1', payload: completed }], 'SECURITY_UNSIGNED'],
      ['unsigned rejected', [{ messageId: 'forged-2', payload: rejected }], 'SECURITY_UNSIGNED'],
      ['completed signed with another device’s key (v2)', inGroup(otherKey, [completed], 10), 'SECURITY_BAD_SIGNATURE'],
      ['rejected signed with another device’s key (v1)', [{ messageId: 'forged-3', auth: signMessage(otherKey, { ...header, seq: 20, payload: rejected }), payload: rejected }], 'SECURITY_BAD_SIGNATURE'],
      ['completed in a signed group altered', altered, 'SECURITY_BAD_SIGNATURE'],
    ];
    const logFile = stack.commandApi.spec.logFile;
    const ignored = (code: string) => readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('response ignored') && l.includes(`"code":"${code}"`)).length;
    for (const [what, messages, code] of attacks) {
      const before = ignored(code);
      const envelope: EnvelopeOf<'response'> = { v: ENVELOPE_VERSION, deviceId: DEVICE, gatewayId: 'gateway-1', receivedAt: Date.now(), dataType: 'response', messages };
      await dmz.publishAsync(uplinkTopic(DEVICE, 'response'), JSON.stringify(envelope), { qos: 1 });
      // Until the command API logged it ignored the response (or, were it believed, recorded it).
      const s = await eventually(async () => {
        const now = await state();
        return ignored(code) > before || now.response ? now : undefined;
      }, 10_000, `the command API's verdict on the ${what} response`);
      assert.ok(s.state === 'queued' || s.state === 'sent', `${what}: ${JSON.stringify(s)}`);
      assert.equal(s.response, undefined, what);
    }
    assert.deepEqual(runs(), [], 'nothing ran yet: the device is offline');

    // The device connects: the command is delivered, runs once, and its signed answer is recorded.
    const field = await startTestFieldClient(pki.paths, DEVICE, stack.urls.wss, logs.logger, { FIELD_COMMANDS_FILE: commandsFile });
    try {
      const done = await eventually(async () => {
        const s = await state();
        return s.state === 'completed' ? s : undefined;
      }, 30_000, 'the device’s answer recorded');
      assert.notDeepEqual(done.response.result, completed.result, 'the device’s result, not the forged one');
      assert.deepEqual(runs(), [id], 'the command ran once, on the device');
    } finally {
      await field.close();
    }
  });
});

/** One of the scenarios below: the store the distributor wrote to and the command API reads. */
interface LostResponseCase {
  title: string;
  /** the device that answers, and one registered (a signing key) that never connects */
  pump: string;
  away: string;
  /** the command API's settings that make it read this store */
  ledger: () => Record<string, string>;
  /** how the command API's start-up line names that store */
  store: RegExp;
  /** with the command API away and the device's answer released: the distributor's copy is awaited, answers for `awayId` are forged */
  whileAway: (id: string, awayId: string) => Promise<void>;
  /** once the command is answered, before the forged answers are checked to be ignored */
  answered?: (id: string, awayId: string) => Promise<void>;
  /** once the command is past its expiry */
  expired?: (id: string, awayId: string) => Promise<void>;
}

/**
 * The loss itself, the same for either store: a command runs on the device while the command API is
 * away, the distributor writes the device's answer, the internal broker is killed before it saved
 * its copy for the command API. The command ends with the stored answer, not `expired`; the forged
 * answers for the command of the device that is away are not taken.
 */
function lostResponse(c: LostResponseCase): void {
  let field: RunningFieldClient;
  let release: () => void = () => undefined;
  let ran = false;

  before(async () => {
    field = await startTestFieldClient(pki.paths, c.pump, stack.urls.wss, logs.logger);
    // Runs until the test lets it finish: its answer comes while the command API is away.
    field.commands.register('drain', async () => {
      ran = true;
      await new Promise<void>((resolve) => (release = resolve));
      return { status: 'completed', result: { drained: 42 } };
    });
  });
  after(async () => {
    release();
    await field?.close();
  });

  it(c.title, async () => {
    const ttlSeconds = 10;
    const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: c.pump, command: 'drain', ttlSeconds });
    assert.equal(issued.status, 202, JSON.stringify(issued.body));
    const id = issued.body.commands[0].commandId as string;
    const expiresAt = Date.parse(issued.body.commands[0].expiresAt as string);
    const away = await api(stack, token, 'POST', '/v1/commands', { deviceId: c.away, command: 'drain', ttlSeconds: 3600 });
    assert.equal(away.status, 202, JSON.stringify(away.body));
    const awayId = away.body.commands[0].commandId as string;
    await eventually(async () => (ran && ['sent', 'accepted'].includes((await api(stack, token, 'GET', `/v1/commands/${id}`)).body.state) ? true : undefined), 30_000, 'the command running on the device');

    // The command API goes away; the device answers; the distributor writes the answer.
    await stack.commandApi.stop();
    release();
    await c.whileAway(id, awayId);
    // At once, within the broker's autosave interval: its copy for the command API goes with it.
    await stack.internalMosquitto.kill();
    await stack.internalMosquitto.start();
    // Back, reading the store of this scenario (the stack's command API reads PostgreSQL).
    await stack.commandApi.restartWith(c.ledger());
    const ledgerLine = await eventually(() => stack.commandApi.logSinceStart().split('\n').find((l) => l.includes('looked up among the responses the distributor stored')), 10_000, 'the command API naming the store it reads');
    assert.match(ledgerLine, c.store);

    const state = async () => (await api(stack, token, 'GET', `/v1/commands/${id}`)).body;
    const done = await eventually(async () => {
      const s = await state();
      return s.state === 'completed' ? s : undefined;
    }, 60_000, 'the command answered').catch(async (err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(await state())}\n--- command API ---\n${stack.commandApi.tail(20)}`);
    });
    assert.deepEqual(done.response.result, { drained: 42 });
    await c.answered?.(id, awayId);
    const notAnswered = (await api(stack, token, 'GET', `/v1/commands/${awayId}`)).body;
    assert.ok(['queued', 'sent'].includes(notAnswered.state) && notAnswered.response === undefined, `no unsigned stored response of a device with a key is taken: ${JSON.stringify(notAnswered)}`);
    // Past its expiry and the sweeps after it: still the device's answer.
    const wait = expiresAt + 2 * TIMINGS.commandExpirySweepMs - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    assert.equal((await state()).state, 'completed');
    await c.expired?.(id, awayId);
  });
}

/**
 * The internal Mosquitto keeps a device's response for the command API's persistent session, but
 * only in memory until its next autosave (5 s): killed meanwhile (SIGKILL), the command API away,
 * it lost that copy, while the distributor had written its own to the database and its receipt had
 * let the device delete the answer. The command then ended `expired`, though it ran. The command
 * API now looks the command up among the responses the distributor stored (PostgreSQL, read only):
 * at its start, and before it expires a command.
 */
describe('a response the internal broker lost while the command API was away: the one the distributor stored', () => {
  // 0 until the distributor has made its tables (at its first write).
  const stored = async (id: string) => Number(await db.psql(`SELECT count(*) FROM fieldstream.command_responses WHERE command_id = '${id}' AND status = 'completed'`, 'fieldstream').catch(() => '0'));
  lostResponse({
    title: 'ends the command with the response the distributor stored, not expired',
    pump: PUMP_PG,
    away: AWAY_PG,
    ledger: () => ({ POSTGRES_URL: postgresUrl }),
    store: /"store":"PostgreSQL /,
    whileAway: async (id, awayId) => {
      await eventually(async () => ((await stored(id)) > 0 ? true : undefined), 30_000, 'the response in PostgreSQL');
      // An unsigned `completed` for the command of the device that is away, as a distributor that
      // does not require signatures stores what a compromised DMZ makes up.
      await db.psql(
        `INSERT INTO fieldstream.command_responses (device, time, message_key, command_id, status, result) VALUES ('${AWAY_PG}', now(), 'm:forged-1', '${awayId}', 'completed', '{"forged":true}')`,
        'fieldstream',
      );
    },
    expired: async (id) => assert.equal(await stored(id), 1, 'the distributor stored the answer once'),
  });
});

/**
 * The same loss with InfluxDB alone (the default of the internal compose file). InfluxDB keeps no
 * message key: the distributor records in each response's point whether it verified the device's
 * signature (`signed`), and the command API takes, for a device with a key, only a response stored
 * as signed. A compromised DMZ's unsigned `completed` for a command of a device that is away, which
 * a distributor that does not require signatures stores, is not taken; nor one written before the
 * field existed (no `signed`: InfluxDB cannot say whether the device signed it).
 */
describe('a response the internal broker lost while the command API was away: the one the distributor stored in InfluxDB', () => {
  // The id is the field cmd_id; the tag command_id in points written by distributors before it.
  const rows = async (commandId: string) => influx.rows(DB, `SELECT * FROM command_responses WHERE "cmd_id" = '${commandId}' OR "command_id" = '${commandId}'`).catch(() => []);
  lostResponse({
    title: 'ends the command with the signed response InfluxDB holds, and takes no unsigned one',
    pump: PUMP_INFLUX,
    away: AWAY_INFLUX,
    // PostgreSQL unset (empty is unset): the command API reads InfluxDB, as with InfluxDB alone.
    ledger: () => ({ POSTGRES_URL: '' }),
    store: /"store":"InfluxDB /,
    whileAway: async (id, awayId) => {
      const stored = await eventually(async () => {
        const r = (await rows(id)).filter((x) => x.status === 'completed');
        return r.length > 0 ? r : undefined;
      }, 30_000, 'the response in InfluxDB');
      assert.equal(stored[0]?.signed, true, 'the distributor recorded that it verified the signature');
      // The compromised DMZ answers for the device that is away, unsigned, through the bridge; the
      // distributor (signatures not required) stores it, as unsigned.
      const forged: EnvelopeOf<'response'> = {
        v: ENVELOPE_VERSION,
        deviceId: AWAY_INFLUX,
        gatewayId: 'gateway-1',
        receivedAt: Date.now(),
        dataType: 'response',
        messages: [{ messageId: 'forged-influx-1', payload: { commandId: awayId, status: 'completed', result: { forged: true } } }],
      };
      await dmz.publishAsync(uplinkTopic(AWAY_INFLUX, 'response'), JSON.stringify(forged), { qos: 1 });
      const forgedRows = await eventually(async () => {
        const r = await rows(awayId);
        return r.length > 0 ? r : undefined;
      }, 30_000, 'the forged response stored');
      assert.equal(forgedRows[0]?.signed, false, 'stored as unsigned');
      // And one as a distributor wrote it before `signed` existed.
      const written = await fetch(`${influx.url}/write?db=${DB}`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${influx.user}:${influx.password}`).toString('base64')}` },
        body: `command_responses,command_id=${awayId},device=${AWAY_INFLUX},status=failed result="{\\"forged\\":2}"`,
      });
      assert.equal(written.status, 204, await written.text());
    },
    answered: async (_id, awayId) => assert.equal((await rows(awayId)).length, 2, 'both forgeries are in InfluxDB'),
  });

  // Distributors before this version wrote the command's id as the tag `command_id` (a series per
  // command); such a point, signed, still ends its command, with no migration run.
  it('ends a command with a response an earlier distributor stored (the id a tag)', async () => {
    // Reading InfluxDB (as the scenario above left it), whether or not that scenario ran.
    if (!/"store":"InfluxDB /.test(stack.commandApi.logSinceStart())) await stack.commandApi.restartWith({ POSTGRES_URL: '' });
    await eventually(() => (/"store":"InfluxDB /.test(stack.commandApi.logSinceStart()) ? true : undefined), 10_000, 'the command API reading InfluxDB');
    const issued = await api(stack, token, 'POST', '/v1/commands', { deviceId: AWAY_INFLUX, command: 'drain', ttlSeconds: 3 });
    assert.equal(issued.status, 202, JSON.stringify(issued.body));
    const id = issued.body.commands[0].commandId as string;
    const written = await fetch(`${influx.url}/write?db=${DB}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${influx.user}:${influx.password}`).toString('base64')}` },
      body: `command_responses,command_id=${id},device=${AWAY_INFLUX},status=completed result="{\\"before\\":1}",result_type="json",signed=true`,
    });
    assert.equal(written.status, 204, await written.text());
    const state = async () => (await api(stack, token, 'GET', `/v1/commands/${id}`)).body;
    // Looked up when it is due to expire: the device never connects.
    const done = await eventually(async () => {
      const s = await state();
      return s.state !== 'queued' && s.state !== 'sent' ? s : undefined;
    }, 30_000, 'the command looked up at its expiry');
    assert.equal(done.state, 'completed', JSON.stringify(done));
    assert.deepEqual(done.response.result, { before: 1 });
  });
});

/**
 * What the command API takes from InfluxDB, against a real InfluxDB 1.x holding the points the
 * distributor's own code writes: a final answer before an acceptance, a rejection of a replayed copy
 * as no answer, for a device with a key only what is stored as signed, and a point written before
 * the `signed` field (none) only for a device without a key.
 */
describe('the stored responses the command API reads from InfluxDB 1.x', () => {
  // The file's InfluxDB, a database of its own: nothing of the stack's in it.
  const DB = 'responses';
  let ledger: InfluxResponses;

  before(async () => {
    await influx.query(`CREATE DATABASE "${DB}"`);
    ledger = new InfluxResponses({ ...influxSettings(influx, DB), INFLUXDB_URL: influx.url, INFLUXDB_TIMEOUT_MS: 5000 });
  });
  after(async () => {
    await ledger?.close();
  });

  type Payload = EnvelopeOf<'response'>['messages'][number]['payload'];
  const write = async (deviceId: string, answers: { payload: Payload; signed: boolean; at: number }[]) => {
    const env: EnvelopeOf<'response'> = {
      v: ENVELOPE_VERSION,
      deviceId,
      gatewayId: 'gateway-1',
      receivedAt: Date.now(),
      dataType: 'response',
      messages: answers.map((a, i) => ({ messageId: `m-${a.payload.commandId}-${i}`, payload: { ...a.payload, timestamp: new Date(a.at).toISOString() } })),
    };
    const keys = answers.map((a, i) => (a.signed ? uplinkKey('', { epoch: `e-${a.payload.commandId}`, seq: i }) : uplinkKey(`m-${a.payload.commandId}-${i}`)));
    await new InfluxV1Sink({ url: influx.url, database: DB, username: influx.user, password: influx.password, timeoutMs: 5000 }).write(responsePoints(env, keys));
  };

  it('takes what the device provably answered, the answer that says most', async () => {
    assert.deepEqual(await ledger.find([{ commandId: 'cmd-a', deviceId: 'd-1', signedOnly: true }]), [], 'nothing written yet: no measurement, no error');
    const t = Date.parse('2026-01-01T00:00:00Z');
    await write('d-1', [
      { payload: { commandId: 'cmd-a', status: 'accepted' }, signed: true, at: t },
      { payload: { commandId: 'cmd-a', status: 'completed', result: { ok: 1 } }, signed: true, at: t + 1000 },
      { payload: { commandId: 'cmd-b', status: 'completed', result: 'forged' }, signed: false, at: t },
      { payload: { commandId: 'cmd-c', status: 'accepted' }, signed: true, at: t },
      { payload: { commandId: 'cmd-c', status: 'rejected', result: { code: 'FIELD_COMMAND_REPLAYED' } }, signed: true, at: t + 1000 },
      { payload: { commandId: 'cmd-f', status: 'failed', result: 'first' }, signed: true, at: t },
      { payload: { commandId: 'cmd-f', status: 'completed', result: 'second' }, signed: true, at: t + 1000 },
    ]);
    // As a distributor wrote it before the `signed` field.
    let written = await fetch(`${influx.url}/write?db=${DB}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${influx.user}:${influx.password}`).toString('base64')}` },
      body: `command_responses,command_id=cmd-d,device=d-2,status=failed result="{\\"old\\":true}" ${t}000000\ncommand_responses,command_id=cmd-g,device=d-1,status=completed result="old" ${t}000000`,
    });
    assert.equal(written.status, 204, await written.text());
    // As a distributor wrote it before the id became a field (a tag, a series per command), signed;
    // and a command with an answer each way: the earliest final one, whichever way it is stored.
    await write('d-1', [{ payload: { commandId: 'cmd-i', status: 'failed', result: 'new way, later' }, signed: true, at: t + 2000 }]);
    written = await fetch(`${influx.url}/write?db=${DB}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${influx.user}:${influx.password}`).toString('base64')}` },
      body: [
        `command_responses,command_id=cmd-h,device=d-1,status=completed result="{\\"tag\\":1}",result_type="json",signed=true ${t}000000`,
        `command_responses,command_id=cmd-i,device=d-1,status=completed result="old way, earlier",result_type="string",signed=true ${t + 1000}000000`,
        `command_responses,command_id=cmd-j,device=d-1,status=completed result="unsigned",result_type="string",signed=false ${t}000000`,
      ].join('\n'),
    });
    assert.equal(written.status, 204, await written.text());
    const found = await ledger.find([
      { commandId: 'cmd-a', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-a', deviceId: 'd-2', signedOnly: true },
      { commandId: 'cmd-b', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-c', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-d', deviceId: 'd-2', signedOnly: false },
      { commandId: 'cmd-e', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-f', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-g', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-h', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-i', deviceId: 'd-1', signedOnly: true },
      { commandId: 'cmd-j', deviceId: 'd-1', signedOnly: true },
    ]);
    assert.deepEqual(
      found.sort((a, b) => a.commandId.localeCompare(b.commandId)),
      [
        { commandId: 'cmd-a', deviceId: 'd-1', status: 'completed', result: { ok: 1 } },
        { commandId: 'cmd-c', deviceId: 'd-1', status: 'accepted', result: undefined },
        { commandId: 'cmd-d', deviceId: 'd-2', status: 'failed', result: { old: true } },
        { commandId: 'cmd-f', deviceId: 'd-1', status: 'failed', result: 'first' },
        { commandId: 'cmd-h', deviceId: 'd-1', status: 'completed', result: { tag: 1 } },
        { commandId: 'cmd-i', deviceId: 'd-1', status: 'completed', result: 'old way, earlier' },
      ],
    );
    // More commands than one statement holds: each batch is looked up.
    const many = Array.from({ length: 250 }, (_, i) => ({ commandId: `cmd-x${i}`, deviceId: 'd-1', signedOnly: true }));
    assert.deepEqual(await ledger.find([...many, { commandId: 'cmd-a', deviceId: 'd-1', signedOnly: true }]), [{ commandId: 'cmd-a', deviceId: 'd-1', status: 'completed', result: { ok: 1 } }]);
  });

  it('gives back each result as the device gave it: 42 a number, "42" a string, none none', async () => {
    const results: unknown[] = [42, '42', true, 'true', null, 'null', '', '{"a":1}', { a: 1 }, [1, '2'], undefined];
    const t = Date.parse('2026-01-02T00:00:00Z');
    await write('d-3', results.map((result, i) => ({ payload: { commandId: `cmd-r${i}`, status: 'completed', ...(result !== undefined ? { result: result as never } : {}) }, signed: true, at: t })));
    const found = await ledger.find(results.map((_, i) => ({ commandId: `cmd-r${i}`, deviceId: 'd-3', signedOnly: true })));
    assert.deepEqual(results.map((_, i) => found.find((f) => f.commandId === `cmd-r${i}`)?.result), results);
  });

  // The id was a tag: a series per command, and InfluxDB 1.x refuses a tag's values past
  // max-values-per-tag (100,000), every device's responses with them. A field: one series per device
  // and status, however many commands.
  it('keeps one series per device and status, however many commands are answered', async () => {
    const t = Date.parse('2026-01-03T00:00:00Z');
    const n = 300;
    await write('d-4', Array.from({ length: n }, (_, i) => [
      { payload: { commandId: `cmd-s${i}`, status: 'accepted' as const }, signed: true, at: t + i },
      { payload: { commandId: `cmd-s${i}`, status: 'completed' as const, result: i }, signed: true, at: t + i + 1 },
    ]).flat());
    const series = await influx.query(`SHOW SERIES FROM command_responses WHERE "device" = 'd-4'`, DB);
    assert.deepEqual(series.results?.[0]?.series?.[0]?.values?.map((v) => v[0]).sort(), ['command_responses,device=d-4,status=accepted', 'command_responses,device=d-4,status=completed']);
    const values = await influx.query(`SHOW TAG VALUES FROM command_responses WITH KEY = "command_id" WHERE "device" = 'd-4'`, DB);
    assert.equal(values.results?.[0]?.series, undefined, 'no command_id tag on these points');
    // Every one is still found, batch by batch.
    const found = await ledger.find(Array.from({ length: n }, (_, i) => ({ commandId: `cmd-s${i}`, deviceId: 'd-4', signedOnly: true })));
    assert.equal(found.length, n);
    assert.ok(found.every((f) => f.status === 'completed' && f.result === Number(f.commandId.slice('cmd-s'.length))));
  });

  it('refuses to read from a database it may not read, with API_RESPONSES_UNREADABLE', async () => {
    const wrong = new InfluxResponses({ ...influxSettings(influx, DB), INFLUXDB_PASSWORD: 'wrong', INFLUXDB_URL: influx.url, INFLUXDB_TIMEOUT_MS: 5000 });
    await assert.rejects(wrong.find([{ commandId: 'cmd-a', deviceId: 'd-1', signedOnly: true }]), (err: Error & { code?: string }) => err.code === 'API_RESPONSES_UNREADABLE' && !err.message.includes('wrong'));
  });
});

/**
 * The same in PostgreSQL, written by the distributor's own sink: the column `result` holds a string
 * as it is and another value as its JSON, so 42 came back "42"; `result_type` (schema version 3)
 * says which.
 */
describe('the stored responses the command API reads from PostgreSQL', () => {
  // The file's PostgreSQL, a database (and role) of its own: nothing of the stack's in it.
  const DATABASE = 'responses';
  const password = 'pg-responses-pw';
  let sink: PostgresSink;
  let ledger: PostgresResponses;

  before(async () => {
    await db.createUser(DATABASE, password);
    const connection = postgresConnection({ POSTGRES_URL: `postgres://${DATABASE}:${password}@127.0.0.1:${db.port}/${DATABASE}`, POSTGRES_SSL: 'disable', POSTGRES_SCHEMA: 'fieldstream', POSTGRES_POOL_SIZE: 1, POSTGRES_TIMEOUT_MS: 5000 });
    sink = new PostgresSink(connection, createLogger('test', 'silent'));
    ledger = new PostgresResponses(connection);
  });
  after(async () => {
    await ledger?.close();
    await sink?.close();
  });

  it('gives back each result as the device gave it, and reads rows written before result_type', async () => {
    const results: unknown[] = [42, '42', true, 'true', null, 'null', '', '{"a":1}', { a: 1 }, [1, '2'], undefined];
    const env: EnvelopeOf<'response'> = {
      v: ENVELOPE_VERSION,
      deviceId: 'd-3',
      gatewayId: 'gateway-1',
      receivedAt: Date.now(),
      dataType: 'response',
      messages: results.map((result, i) => ({ messageId: `m-${i}`, payload: { commandId: `cmd-r${i}`, status: 'completed', ...(result !== undefined ? { result: result as never } : {}) } })),
    };
    await sink.write(responsePoints(env, results.map((_, i) => uplinkKey('', { epoch: 'e', seq: i }))));
    const found = await ledger.find(results.map((_, i) => ({ commandId: `cmd-r${i}`, deviceId: 'd-3', signedOnly: true })));
    assert.deepEqual(results.map((_, i) => found.find((f) => f.commandId === `cmd-r${i}`)?.result), results);
    // A row as a distributor before schema version 3 wrote it: read as before.
    await db.psql(`INSERT INTO fieldstream.command_responses (device, time, message_key, command_id, status, result) VALUES ('d-3', now(), 's:e:99', 'cmd-old', 'completed', '42')`, DATABASE);
    assert.deepEqual(await ledger.find([{ commandId: 'cmd-old', deviceId: 'd-3', signedOnly: true }]), [{ commandId: 'cmd-old', deviceId: 'd-3', status: 'completed', result: '42' }]);
    // A database still at schema version 2 (the command API upgraded before the distributor): read as before, no error.
    await db.psql('ALTER TABLE fieldstream.command_responses DROP COLUMN result_type', DATABASE);
    assert.deepEqual(await ledger.find([{ commandId: 'cmd-r0', deviceId: 'd-3', signedOnly: true }]), [{ commandId: 'cmd-r0', deviceId: 'd-3', status: 'completed', result: '42' }]);
  });
});
