import { writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { connectAsync, type MqttClient } from 'mqtt';
import { newClient, type UPayload } from 'sparkplug-client';
import * as sparkplugPayload from 'sparkplug-payload';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import type { RunningFieldClient } from '../../field-client/src/start.ts';
import { LogCapture } from './embedded.ts';
import { startTestFieldClient } from './field.ts';
import { freezableBroker } from './freezable-broker.ts';

/**
 * For the Sparkplug tests: a plain Mosquitto, and an edge node published by an implementation not
 * ours (sparkplug-client, with sparkplug-payload's encoder for the raw messages a test forges).
 */
const codec = sparkplugPayload.get('spBv1.0');
if (!codec) throw new Error('sparkplug-payload has no spBv1.0 codec');
export const tahu = codec;

/** The time of the edge node's births (ten minutes ago: stored times are the metrics' own, not arrival). */
export const T0 = Date.now() - 10 * 60_000;

/**
 * A Mosquitto of its own on a loopback port picked now, anonymous (as many plant brokers are). With
 * `tls`, a second listener on another port speaks TLS and asks every client for a certificate
 * issued by `tls.ca`. `extra`: more lines of its configuration (an acl_file).
 */
export async function startMosquitto(
  dir: string,
  tls?: { ca: string; cert: string; key: string },
  extra = '',
): Promise<{ url: string; tlsUrl?: string; process: ManagedProcess }> {
  const port = await freePort();
  const tlsPort = tls ? await freePort() : undefined;
  const conf = join(dir, 'mosquitto.conf');
  // Started by root, Mosquitto would switch to the "mosquitto" user, which cannot read our 0600 keys.
  let text = `user ${userInfo().username}\nlistener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\n`;
  text += extra;
  if (tls) text += `listener ${tlsPort} 127.0.0.1\ncafile ${tls.ca}\ncertfile ${tls.cert}\nkeyfile ${tls.key}\nrequire_certificate true\n`;
  writeFileSync(conf, text);
  const process_ = new ManagedProcess({
    name: 'mosquitto-sparkplug',
    command: 'mosquitto',
    args: ['-c', conf],
    env: { PATH: process.env.PATH },
    cwd: dir,
    logFile: join(dir, 'mosquitto.log'),
    ready: { port: tlsPort ?? port },
  });
  await process_.start();
  return { url: `mqtt://127.0.0.1:${port}`, ...(tlsPort ? { tlsUrl: `mqtts://127.0.0.1:${tlsPort}` } : {}), process: process_ };
}

/** An edge node with one device, by sparkplug-client: births on connect and on every rebirth request. */
export function edgeNode(url: string, clientId: string) {
  const edge = newClient({ serverUrl: url, username: 'edge', password: 'edge', groupId: 'Plant1', edgeNode: 'Line4', clientId, publishDeath: true, version: 'spBv1.0' });
  const state = { births: 0, rebirthRequests: 0 };
  const births = () => {
    state.births++;
    edge.publishNodeBirth({
      timestamp: T0,
      metrics: [
        { name: 'Node Control/Rebirth', type: 'Boolean', value: false },
        { name: 'Inputs/Temp', alias: 1, type: 'Double', value: 21.5 },
        { name: 'Running', alias: 2, type: 'Boolean', value: true },
        { name: 'Count', alias: 3, type: 'Int32', value: -5 },
        { name: 'Mode', alias: 4, type: 'String', value: 'auto' },
        { name: 'Total', alias: 5, type: 'UInt64', value: 123_456_789_012 },
      ],
    });
    edge.publishDeviceBirth('Press', { timestamp: T0, metrics: [{ name: 'Pressure', alias: 10, type: 'Float', value: 2.5 }] });
  };
  edge.on('birth', births);
  edge.on('ncmd', (payload: UPayload) => {
    if (payload.metrics?.some((m) => m.name === 'Node Control/Rebirth' && m.value === true)) {
      state.rebirthRequests++;
      births();
    }
  });
  return { edge, state };
}


/**
 * A field client whose Sparkplug input follows group Plant1 on a plain Mosquitto of the test's own
 * (`freezableBroker`), and a publisher of raw payloads on it: registered on the calling `describe`
 * (its before and after hooks). `env`: more settings of the field client.
 */
export function plantInput(name: string, device: string, env: Record<string, string> = {}) {
  const fx = freezableBroker(name, [device]);
  const logs = new LogCapture();
  const rig = { fx, logs, field: undefined as RunningFieldClient | undefined, raw: undefined as MqttClient | undefined };
  before(async () => {
    rig.field = await startTestFieldClient(fx.pki.paths, device, `wss://127.0.0.1:${await freePort()}/ws`, logs.logger, {
      FIELD_SPARKPLUG_URL: fx.broker.url,
      FIELD_SPARKPLUG_GROUPS: 'Plant1',
      ...env,
    });
    await rig.field.sparkplug?.ready;
    rig.raw = await connectAsync(fx.broker.url, { clientId: 'raw-publisher' });
  });
  after(async () => {
    await rig.raw?.endAsync();
    await rig.field?.close();
  });
  return rig;
}
