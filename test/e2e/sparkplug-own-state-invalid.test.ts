import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectAsync } from 'mqtt';
import { LIMITS } from '../../shared/limits.ts';
import { plantInput } from '../helpers/sparkplug.ts';
import { eventually } from '../helpers/ws-device.ts';

const DEVICE = 'plc-gw-010';
const HOST = 'fieldstream-own';
const TOPIC = `spBv1.0/STATE/${HOST}`;

/**
 * Our own STATE on the plant's broker (real Mosquitto) replaced, retained, by something that is not a
 * STATE at all: a Sparkplug 2.2 host's `OFFLINE` text (one configured with our host id), JSON of
 * another shape, a packet over the input's bound. An edge node waiting for its primary host reads
 * none of them as online and keeps away (no NBIRTH) for as long as it stays retained. Each must be
 * answered as our STATE delivered offline, or removed, is: with our STATE online again.
 */
describe('our own Sparkplug STATE replaced by one that cannot be read', () => {
  const rig = plantInput('sparkplug-own-state', DEVICE, { FIELD_SPARKPLUG_HOST_ID: HOST });
  const { fx } = rig;

  /** The retained STATE as an edge node connecting now finds it (undefined: none within a second). */
  const retained = async (): Promise<string | undefined> => {
    const w = await connectAsync(fx.broker.url, { clientId: 'state-watcher' });
    const text = new Promise<string | undefined>((resolve) => {
      w.on('message', (_t, p) => resolve(p.toString()));
      setTimeout(() => resolve(undefined), 1000);
    });
    await w.subscribeAsync(TOPIC, { qos: 1 });
    const t = await text;
    await w.endAsync();
    return t;
  };
  const online = async () => {
    const t = await retained();
    try {
      return t !== undefined && (JSON.parse(t) as { online?: unknown }).online === true ? true : undefined;
    } catch {
      return undefined;
    }
  };

  for (const [what, payload] of [
    ["a 2.2 host's OFFLINE text", Buffer.from('OFFLINE')],
    ['JSON of another shape', Buffer.from(JSON.stringify({ state: 'offline' }))],
    ['a packet over the bound', Buffer.alloc(LIMITS.sparkplugMaxPacketBytes + 1024)],
  ] as const) {
    it(`answers ${what} with our STATE online again`, async () => {
      assert.ok(rig.raw && rig.field?.sparkplug);
      await eventually(online, 15_000, 'our STATE online to begin with');
      const refused = rig.field.sparkplug.session.stats.refusedByCode.SPARKPLUG_STATE_INVALID ?? 0;
      await rig.raw.publishAsync(TOPIC, payload, { qos: 1, retain: true });
      await eventually(() => ((rig.field?.sparkplug?.session.stats.refusedByCode.SPARKPLUG_STATE_INVALID ?? 0) > refused ? true : undefined), 15_000, 'it refused');
      await eventually(online, 15_000, 'our STATE online again');
      assert.equal(rig.field.sparkplug.session.peers.get(HOST), undefined, 'never a peer');
    });
  }
});
