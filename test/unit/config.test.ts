import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import type { z } from 'zod';
import { GatewayConfigSchema, loadGatewayConfig } from '../../dmz/gateway/config.ts';
import { DistributorConfigSchema, loadDistributorConfig } from '../../internal-network/distributor/config.ts';
import { CommandApiConfigSchema, loadCommandApiConfig } from '../../internal-network/command-api/config.ts';
import { FieldClientConfigSchema, loadFieldClientConfig } from '../../field-client/src/config.ts';
import { EmbeddedConfigSchema } from '../../embedded/config.ts';
import { loadConsoleConfig } from '../../internal-network/console/config.ts';
import { selectHistory } from '../../internal-network/console/history/influxql.ts';
import { selectSink } from '../../internal-network/distributor/sinks/select.ts';
import { FieldTypeGuard } from '../../internal-network/distributor/sinks/field-types.ts';
import { createLogger } from '../../shared/logger.ts';
import { InfluxV2Sink } from '../../internal-network/distributor/sinks/influx-v2.ts';
import { resolveDataPaths, simulatedDeviceSettings } from '../../embedded/pipeline.ts';
import { parse as parseDotenv } from 'dotenv';
import { parseConfig } from '../../shared/config.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { makeTestPki } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

function configError(fn: () => unknown): FieldStreamError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FieldStreamError);
    assert.equal(err.code, 'CONFIG_INVALID');
    return err;
  }
  assert.fail('expected CONFIG_INVALID');
}

describe('configuration', () => {
  it('applies documented defaults and freezes the result', () => {
    const c = loadGatewayConfig({});
    assert.equal(c.GATEWAY_PORT, 8443);
    assert.equal(c.GATEWAY_PATH, '/ws');
    assert.equal(c.MQTT_PROTOCOL_VERSION, 5);
    assert.ok(Object.isFrozen(c));
  });

  it("gives the gateway its client certificate to the DMZ broker by default, not the server certificate it serves Caddy with", () => {
    // certs/dmz/gateway.crt is of the gateway's own anchor after a --renew-dmz, which the DMZ broker
    // refuses; gateway-client.crt stays the CA's (docs/configuration.md, docs/operations.md).
    const c = loadGatewayConfig({});
    assert.equal(c.MQTT_CERT_FILE, 'certs/dmz/gateway-client.crt');
    assert.equal(c.MQTT_KEY_FILE, 'certs/dmz/gateway-client.key');
  });

  it("refuses a bound on unfinished messages that one device's largest message alone passes", () => {
    // Past the bound the connection keeping the most is closed (1013): below a message of
    // GATEWAY_MAX_FRAME_BYTES (its fragments' headers on top), every device sending one was closed
    // mid-message on every try, for ever, with no other device involved.
    assert.match(configError(() => loadGatewayConfig({ GATEWAY_UNFINISHED_FRAMES_MAX_MIB: '8' })).message, /GATEWAY_UNFINISHED_FRAMES_MAX_MIB/);
    assert.match(configError(() => loadGatewayConfig({ GATEWAY_UNFINISHED_FRAMES_MAX_MIB: '3', GATEWAY_MAX_FRAME_BYTES: String(2 * 1024 * 1024) })).message, /GATEWAY_MAX_FRAME_BYTES/);
    assert.equal(loadGatewayConfig({ GATEWAY_UNFINISHED_FRAMES_MAX_MIB: '16' }).GATEWAY_UNFINISHED_FRAMES_MAX_MIB, 16);
    assert.equal(loadGatewayConfig({ GATEWAY_UNFINISHED_FRAMES_MAX_MIB: '4', GATEWAY_MAX_FRAME_BYTES: String(2 * 1024 * 1024) }).GATEWAY_UNFINISHED_FRAMES_MAX_MIB, 4);
  });

  it('names the variable that is wrong', () => {
    assert.match(configError(() => loadGatewayConfig({ GATEWAY_PORT: 'eighty' })).message, /GATEWAY_PORT/);
    assert.match(configError(() => loadGatewayConfig({ MQTT_URL: 'mqtt://plain-text:1883' })).message, /MQTT_URL/);
    assert.match(configError(() => loadFieldClientConfig({ GATEWAY_URL: 'wss://x/ws' })).message, /DEVICE_ID/);
    assert.match(configError(() => loadFieldClientConfig({ DEVICE_ID: 'a/b', GATEWAY_URL: 'wss://x/ws' })).message, /DEVICE_ID/);
    assert.match(configError(() => loadFieldClientConfig({ DEVICE_ID: 'd', GATEWAY_URL: 'ws://x/ws' })).message, /GATEWAY_URL/);
    assert.match(configError(() => loadDistributorConfig({ FILE_STORAGE_TYPE: 's3' })).message, /FILE_STORAGE_TYPE/);
  });

  it('requires a complete InfluxDB setting and says which part is missing', () => {
    assert.match(configError(() => loadDistributorConfig({ INFLUXDB_URL: 'http://db:8086' })).message, /INFLUXDB_TOKEN/);
    const e = configError(() => loadDistributorConfig({ INFLUXDB_URL: 'http://db:8086', INFLUXDB_TOKEN: 't' }));
    assert.match(e.message, /INFLUXDB_ORG/);
    assert.match(e.message, /INFLUXDB_BUCKET/);
    assert.doesNotThrow(() => loadDistributorConfig({ INFLUXDB_URL: 'http://db:8086', INFLUXDB_DATABASE: 'sensor_data' }));
    assert.doesNotThrow(() => loadDistributorConfig({ INFLUXDB_URL: 'http://db:8086', INFLUXDB_TOKEN: 't', INFLUXDB_ORG: 'o', INFLUXDB_BUCKET: 'b' }));
  });

  it("takes InfluxDB 2.x with INFLUXDB_DATABASE beside it, the bucket's InfluxQL name that docs/monitoring.md has a 2.x site set for Grafana", () => {
    // compose and the Kubernetes overlay give the distributor, the console and Grafana one
    // INFLUXDB_DATABASE: refused beside a token, following monitoring.md stopped both services.
    const v2 = { INFLUXDB_URL: 'http://db:8086', INFLUXDB_TOKEN: 't', INFLUXDB_ORG: 'o', INFLUXDB_BUCKET: 'sensor-data', INFLUXDB_DATABASE: 'sensor_data' };
    const d = loadDistributorConfig(v2);
    const sink = selectSink(d, createLogger('test', 'silent'), ['readings']);
    assert.ok(sink instanceof FieldTypeGuard && sink.inner instanceof InfluxV2Sink, 'the token still selects 2.x for writing (behind the field-type guard)');
    const c = loadConsoleConfig({ ...v2, COMMAND_API_TOKEN: 'x'.repeat(32) });
    const history = selectHistory(c, () => assert.fail('not the local store'));
    assert.match(history.description, /\(sensor_data\)$/, 'the console reads through the DBRP name, as Grafana does');
    // Without it, the bucket's own name (its automatic mapping); a token without org and bucket is still refused.
    const { INFLUXDB_DATABASE: _, ...bucketOnly } = v2;
    assert.match(selectHistory(loadConsoleConfig({ ...bucketOnly, COMMAND_API_TOKEN: 'x'.repeat(32) }), () => assert.fail('local')).description, /\(sensor-data\)$/);
    assert.match(configError(() => loadDistributorConfig({ INFLUXDB_URL: 'http://db:8086', INFLUXDB_TOKEN: 't', INFLUXDB_DATABASE: 'sensor_data' })).message, /INFLUXDB_ORG/);
  });

  it('answers garbage in any setting of any service with one line of CONFIG_INVALID naming it, never a TypeError', () => {
    const services: [string, z.ZodObject, Record<string, string>][] = [
      ['gateway', GatewayConfigSchema, {}],
      ['distributor', DistributorConfigSchema, {}],
      ['command API', CommandApiConfigSchema, { COMMAND_API_TOKEN: 'x'.repeat(32) }],
      ['field client', FieldClientConfigSchema, { DEVICE_ID: 'd', GATEWAY_URL: 'wss://gateway:8443/ws' }],
      ['npm start', EmbeddedConfigSchema, {}],
    ];
    const garbage = ['http//x', '-1', 'abc', '99999999999', '', ' ', '0', '1.5', 'wss://', 'mqtts://', 'true', '\u0000', '%', 'x'.repeat(5000)];
    for (const [service, schema, required] of services) {
      assert.doesNotThrow(() => parseConfig(schema, required), service);
      for (const variable of Object.keys(schema.shape)) {
        for (const value of garbage) {
          const what = `${service} ${variable}=${JSON.stringify(value.slice(0, 20))}`;
          try {
            parseConfig(schema, { ...required, [variable]: value });
          } catch (err) {
            assert.ok(err instanceof FieldStreamError, `${what}: ${String(err)}`);
            assert.equal(err.code, 'CONFIG_INVALID', what);
            assert.match(err.message, new RegExp(`\\b${variable}\\b`), what);
            assert.doesNotMatch(err.message, /\n/, what);
          }
        }
      }
    }
  });

  it("refuses a COMMAND_DEFAULT_TTL_S longer than a request's ttlSeconds may be (LIMITS.commandMaxTtlS)", () => {
    // Past it, a command without ttlSeconds was signed with an expiry the field client refuses as
    // stale (its FIELD_COMMAND_MAX_AGE_S defaults to the same 30 days), and a large one made an
    // expiresAt no Date holds: the command was journaled and sent, then answered 500, and every
    // GET of the commands failed with it.
    const token = { COMMAND_API_TOKEN: 'x'.repeat(32) };
    assert.equal(loadCommandApiConfig({ ...token, COMMAND_DEFAULT_TTL_S: String(LIMITS.commandMaxTtlS) }).COMMAND_DEFAULT_TTL_S, LIMITS.commandMaxTtlS);
    for (const value of [String(LIMITS.commandMaxTtlS + 1), '10000000000000']) {
      assert.match(configError(() => loadCommandApiConfig({ ...token, COMMAND_DEFAULT_TTL_S: value })).message, /COMMAND_DEFAULT_TTL_S/, value);
    }
  });

  it('refuses a duration that becomes a Node timer past 2^31 - 1 ms, which would fire at once (TIMINGS.timerMaxMs)', () => {
    // A timer past it fires after 1 ms: an INFLUXDB_TIMEOUT_MS of a month gave every write up at
    // once, retried for ever; a retry ceiling or poll interval that long spun.
    const field = { DEVICE_ID: 'd', GATEWAY_URL: 'wss://x/ws' };
    const influx = { INFLUXDB_URL: 'http://db:8086', INFLUXDB_TOKEN: 't', INFLUXDB_ORG: 'o', INFLUXDB_BUCKET: 'b' };
    const cases: [string, (v: string) => unknown][] = [
      ['INFLUXDB_TIMEOUT_MS', (v) => loadDistributorConfig({ ...influx, INFLUXDB_TIMEOUT_MS: v })],
      ['DISTRIBUTOR_RETRY_MAX_MS', (v) => loadDistributorConfig({ DISTRIBUTOR_RETRY_MAX_MS: v })],
      ['FIELD_RECONNECT_MAX_MS', (v) => loadFieldClientConfig({ ...field, FIELD_RECONNECT_MAX_MS: v })],
      ['FIELD_WATCH_INTERVAL_MS', (v) => loadFieldClientConfig({ ...field, FIELD_WATCH_INTERVAL_MS: v })],
      ['FIELD_SAMPLE_INTERVAL_MS', (v) => loadFieldClientConfig({ ...field, FIELD_SAMPLE_INTERVAL_MS: v })],
    ];
    for (const [variable, load] of cases) {
      assert.equal((load(String(TIMINGS.timerMaxMs)) as Record<string, unknown>)[variable], TIMINGS.timerMaxMs, variable);
      assert.match(configError(() => load(String(TIMINGS.timerMaxMs + 1))).message, new RegExp(variable));
    }
  });

  it('treats an empty setting as unset', () => {
    assert.equal(loadGatewayConfig({ GATEWAY_PORT: '' }).GATEWAY_PORT, 8443);
  });

  for (const [service, entry, env, variable] of [
    ['gateway', 'dmz/gateway/main.ts', { GATEWAY_PORT: '99999' }, 'GATEWAY_PORT'],
    ['distributor', 'internal-network/distributor/main.ts', { INFLUXDB_URL: 'http://db:8086' }, 'INFLUXDB_TOKEN'],
    ['field-client', 'field-client/src/main.ts', {}, 'DEVICE_ID'],
    ['field-client (missing CRL file)', 'field-client/src/main.ts', { DEVICE_ID: 'dev-1', GATEWAY_URL: 'wss://localhost:1/ws', FIELD_CA_FILE: '/dev/null', FIELD_CRL_FILE: '/nonexistent/ca.crl' }, 'FIELD_CRL_FILE'],
    // Its own files and settings were checked only once the broker answered: with the broker away
    // (here: nothing listens) the gateway waited on, its error unsaid.
    ['gateway (missing TLS certificate, broker away)', 'dmz/gateway/main.ts', { GATEWAY_CA_FILE: '/dev/null', GATEWAY_TLS_CERT_FILE: '/nonexistent/gateway.crt', MQTT_URL: 'mqtts://127.0.0.1:1' }, 'GATEWAY_TLS_CERT_FILE'],
    ['gateway (CA file a folder Docker made, broker away)', 'dmz/gateway/main.ts', { GATEWAY_CA_FILE: '/tmp', MQTT_URL: 'mqtts://127.0.0.1:1' }, 'GATEWAY_CA_FILE'],
    ['gateway (device tokens without Caddy, broker away)', 'dmz/gateway/main.ts', { GATEWAY_TOKEN_AUTH: 'on', MQTT_URL: 'mqtts://127.0.0.1:1' }, 'GATEWAY_TOKEN_AUTH'],
    ['distributor (not a URL)', 'internal-network/distributor/main.ts', { INFLUXDB_URL: 'http//x' }, 'INFLUXDB_URL'],
    ['command API (not a URL)', 'internal-network/command-api/main.ts', { COMMAND_API_TOKEN: 'x'.repeat(32), MQTT_URL: 'mqtts//broker' }, 'MQTT_URL'],
    ['broker exporter (not an MQTT URL)', 'internal-network/broker-exporter/main.ts', { DMZ_MQTT_URL: 'mqtt://dmz:1883' }, 'DMZ_MQTT_URL'],
    ['broker exporter (missing certificate file)', 'internal-network/broker-exporter/main.ts', { MQTT_CERT_FILE: '/nonexistent/monitor.crt' }, 'MQTT_'],
  ] as const) {
    it(`stops the ${service} process with a message naming ${variable}`, () => {
      const r = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, entry)], {
        cwd: repoRoot,
        env: { PATH: process.env.PATH, FIELDSTREAM_ENV_FILE: '/dev/null', ...env },
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, new RegExp(`error CONFIG_[A-Z_]+: .*${variable}`));
      // One line: the code and the variable, no stack trace.
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /^\s+at /m);
      assert.equal(r.status, 78);
    });
  }

  // Its own files are checked first (they are valid here), then the broker's.
  it('stops the gateway (missing certificate file) process with a message naming MQTT_CA_FILE', () => {
    const pki = makeTestPki([]);
    try {
      const p = pki.paths;
      const r = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, 'dmz', 'gateway', 'main.ts')], {
        cwd: repoRoot,
        env: {
          PATH: process.env.PATH,
          FIELDSTREAM_ENV_FILE: '/dev/null',
          GATEWAY_CA_FILE: p.publicCa,
          GATEWAY_TLS_CERT_FILE: p.service('dmz/edge').cert,
          GATEWAY_TLS_KEY_FILE: p.service('dmz/edge').key,
          GATEWAY_CRL_FILE: p.crl,
          GATEWAY_REVOKED_SERIALS_FILE: join(pki.dir, 'dmz', 'revocation', 'revoked-serials.txt'),
          MQTT_CA_FILE: '/nonexistent/ca.crt',
          MQTT_URL: 'mqtts://127.0.0.1:1',
        },
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /error CONFIG_[A-Z_]+: .*MQTT_CA_FILE/);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /^\s+at /m);
    } finally {
      pki.cleanup();
    }
  });

  // Both were taken at start and failed every connection attempt, for ever; at a reload they were
  // refused already. A key that is not its certificate's (the bundle's client.crt copied after a
  // renewal, its client.key not) was a "gateway connection error" of OpenSSL's ("key values
  // mismatch"); another device's bundle connected, and the gateway refused each of its messages
  // (GATEWAY_DEVICE_MISMATCH: the device id is the certificate's CN, not DEVICE_ID). A service's
  // certificate of the same CA (its OU not "devices") was refused by the gateway at each attempt
  // (GATEWAY_NOT_A_DEVICE_CERTIFICATE), with DEVICE_ID its CN too. A name with a slash is a service's.
  const NOT_A_DEVICE = /error CONFIG_INVALID: FIELD_CERT_FILE=\S+ is the certificate of "consumer" \(OU "[^"]+"\), not a device certificate \(OU "devices"\): the gateway refuses it \(GATEWAY_NOT_A_DEVICE_CERTIFICATE\)/;
  for (const [what, cert, key, stderr, deviceId = 'dev-1'] of [
    ["FIELD_KEY_FILE is not FIELD_CERT_FILE's key, naming both", 'dev-1', 'dev-2', /error CONFIG_INVALID: FIELD_KEY_FILE=\S+ is not the key of FIELD_CERT_FILE=/],
    ['FIELD_CERT_FILE is the certificate of another device, naming it and DEVICE_ID', 'dev-2', 'dev-2', /error CONFIG_INVALID: FIELD_CERT_FILE=\S+ is the certificate of device "dev-2", not of DEVICE_ID=dev-1/],
    ["FIELD_CERT_FILE is a service's certificate, naming what it is", 'internal/consumer', 'internal/consumer', NOT_A_DEVICE],
    ["FIELD_CERT_FILE is a service's certificate whose CN is DEVICE_ID, naming what it is", 'internal/consumer', 'internal/consumer', NOT_A_DEVICE, 'consumer'],
  ] as const) {
    it(`stops the field-client process when ${what}`, () => {
      const pki = makeTestPki(['dev-1', 'dev-2']);
      const files = (name: string) => (name.includes('/') ? pki.paths.service(name) : pki.paths.device(name));
      const data = mkdtempSync(join(tmpdir(), 'fieldstream-keypair-'));
      try {
        const r = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, 'field-client', 'src', 'main.ts')], {
          cwd: repoRoot,
          env: {
            PATH: process.env.PATH,
            FIELDSTREAM_ENV_FILE: '/dev/null',
            DEVICE_ID: deviceId,
            GATEWAY_URL: 'wss://localhost:1/ws',
            FIELD_CA_FILE: pki.paths.publicCa,
            FIELD_CERT_FILE: files(cert).cert,
            FIELD_KEY_FILE: files(key).key,
            FIELD_DATA_DIR: data,
            FIELD_HTTP_PORT: 'off',
            FIELD_MQTT_PORT: 'off',
            FIELD_METRICS_PORT: 'off',
          },
          encoding: 'utf8',
          timeout: 20_000,
        });
        assert.equal(r.status, 78, r.stderr);
        assert.match(r.stderr, stderr);
        assert.doesNotMatch(r.stderr, /^\s+at /m);
      } finally {
        rmSync(data, { recursive: true, force: true });
        pki.cleanup();
      }
    });
  }

  // A service's key that was not its certificate's crashed it with OpenSSL's stack trace (the MQTT
  // client's, at its first connection: "key values mismatch"), or would have, for the gateway's WSS
  // certificate, once its broker answered.
  for (const [service, entry, files] of [
    ['distributor', 'internal-network/distributor/main.ts', { MQTT_CERT_FILE: 'internal/distributor', MQTT_KEY_FILE: 'internal/console' }],
    ['command API', 'internal-network/command-api/main.ts', { MQTT_CERT_FILE: 'internal/command-api', MQTT_KEY_FILE: 'internal/distributor' }],
    ['gateway', 'dmz/gateway/main.ts', { GATEWAY_TLS_CERT_FILE: 'dmz/gateway', GATEWAY_TLS_KEY_FILE: 'dmz/edge' }],
  ] as const) {
    const [certVar, keyVar] = Object.keys(files) as [string, string];
    it(`stops the ${service} process when ${keyVar} is not ${certVar}'s key, in one line naming both`, () => {
      const pki = makeTestPki([]);
      const work = mkdtempSync(join(tmpdir(), 'fieldstream-keypair-'));
      try {
        const [certOf, keyOf] = Object.values(files) as [string, string];
        const r = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, entry)], {
          cwd: work,
          env: {
            PATH: process.env.PATH,
            FIELDSTREAM_ENV_FILE: '/dev/null',
            MQTT_URL: 'mqtts://127.0.0.1:1',
            MQTT_CA_FILE: pki.paths.publicCa,
            MQTT_CERT_FILE: pki.paths.service(entry.startsWith('dmz') ? 'dmz/gateway-client' : 'internal/distributor').cert,
            MQTT_KEY_FILE: pki.paths.service(entry.startsWith('dmz') ? 'dmz/gateway-client' : 'internal/distributor').key,
            [certVar]: pki.paths.service(certOf).cert,
            [keyVar]: pki.paths.service(keyOf).key,
            GATEWAY_CA_FILE: pki.paths.publicCa,
            COMMAND_API_TOKEN: 'x'.repeat(32),
            DISTRIBUTOR_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
            DISTRIBUTOR_STORED_FEED_KEY_FILE: join(pki.dir, 'internal', 'stored-feed.key'),
            COMMAND_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
            DISTRIBUTOR_METRICS_PORT: 'off',
            COMMAND_API_METRICS_PORT: 'off',
            COMMAND_API_PORT: '0',
            GATEWAY_METRICS_PORT: 'off',
          },
          encoding: 'utf8',
          timeout: 20_000,
        });
        assert.equal(r.status, 78, r.stderr);
        assert.match(r.stderr, new RegExp(`error CONFIG_INVALID: ${keyVar}=\\S+ is not the key of ${certVar}=`));
        assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      } finally {
        rmSync(work, { recursive: true, force: true });
        pki.cleanup();
      }
    });
  }

  // A .env that cannot be read was passed over in silence: the program ran on its defaults, every
  // setting of that file ignored (npm start wrote to data/ instead of the InfluxDB the file named).
  // None in the working directory is the usual case (a fresh clone, a container), and means none.
  for (const [what, envFile, makeDotenvFolder, named] of [
    ['a FIELDSTREAM_ENV_FILE that is not there', '/nonexistent/site.env', false, /FIELDSTREAM_ENV_FILE=\/nonexistent\/site\.env/],
    ['a FIELDSTREAM_ENV_FILE that is a folder', '/tmp', false, /FIELDSTREAM_ENV_FILE=\/tmp\b/],
    ['a .env in the working directory that is a folder', undefined, true, /\.env\b/],
  ] as const) {
    it(`stops npm start at once on ${what} (CONFIG_FILE_UNREADABLE, one line)`, () => {
      const cwd = mkdtempSync(join(tmpdir(), 'fieldstream-dotenv-'));
      try {
        if (makeDotenvFolder) mkdirSync(join(cwd, '.env'));
        const r = spawnSync(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, 'scripts', 'start-embedded.ts')], {
          cwd,
          env: { PATH: process.env.PATH, CERTS_DIR: join(cwd, 'certs'), ...(envFile === undefined ? {} : { FIELDSTREAM_ENV_FILE: envFile }) },
          encoding: 'utf8',
          timeout: 20_000,
        });
        assert.equal(r.status, 78, r.stderr);
        assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
        assert.match(r.stderr, /error CONFIG_FILE_UNREADABLE: /);
        assert.match(r.stderr, named);
        assert.equal(existsSync(join(cwd, 'certs')), false, 'nothing made before');
      } finally {
        rmSync(cwd, { recursive: true, force: true });
      }
    });
  }

  it("npm start with a .env copied from .env.example keeps its own defaults: the simulated device samples, watches data/outbox, queues in data/field, takes MQTT on 1884", () => {
    // The README's way to InfluxDB is `cp .env.example .env` and INFLUXDB_URL; npm start then read
    // .env.example's FIELD_SIMULATE=false, /var/lib/fieldstream and 1883, and took its empty
    // FIELD_WATCH_DIR for "no folder" while printing data/outbox/: no reading ever came.
    const env = parseDotenv(readFileSync(join(repoRoot, '.env.example')));
    const c = loadFieldClientConfig(simulatedDeviceSettings(env, { certsDir: 'certs', deviceId: 'field-sim-001', gatewayUrl: 'wss://localhost:8443/ws', host: '127.0.0.1' }));
    assert.equal(c.FIELD_SIMULATE, true);
    assert.equal(c.FIELD_WATCH_DIR, './data/outbox');
    assert.equal(c.FIELD_DATA_DIR, './data/field');
    assert.equal(c.FIELD_MQTT_PORT, 1884);
    assert.equal(c.FIELD_METRICS_PORT, 0);
    // What a .env sets is taken, and an empty setting means npm start's default, as everywhere.
    const set = loadFieldClientConfig(simulatedDeviceSettings({ ...env, FIELD_SIMULATE: 'false', FIELD_WATCH_DIR: 'in', FIELD_MQTT_PORT: 'off' }, { certsDir: 'certs', deviceId: 'd', gatewayUrl: 'wss://localhost:8443/ws', host: '127.0.0.1' }));
    assert.equal(set.FIELD_SIMULATE, false);
    assert.equal(set.FIELD_WATCH_DIR, 'in');
    assert.equal(set.FIELD_MQTT_PORT, undefined);
    assert.deepEqual(resolveDataPaths({ FILE_STORAGE_PATH: '', TIMESERIES_LOCAL_PATH: ' ', DEAD_LETTER_PATH: '' }), {
      files: resolve('data/files'),
      timeseries: resolve('data/timeseries'),
      deadLetters: resolve('data/dead-letter'),
    });
  });
});
