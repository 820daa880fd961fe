import { readFileSync } from 'node:fs';
import { connectAsync } from 'mqtt';

/**
 * Resolves once every bridge of the internal broker has its subscriptions on its DMZ broker. Until
 * then a DMZ broker has no subscriber for a device's messages, and its gateway refuses them
 * (GATEWAY_BROKER_UNAVAILABLE: PUBACK 0x10, dmz/gateway/puback-reasons.ts): a device connecting
 * the moment the stack says it is up would be told to send again.
 *
 * Each bridge subscribes to its DMZ broker's `$SYS/broker/uptime` last of its topics
 * (internal-network/mosquitto/bridge.conf) and brings it in as `$SYS/broker/connection/<state
 * name>/remote/uptime`; the DMZ broker hands a retained `$SYS` value over as it takes that
 * subscription, after the ones before it on the same connection. Read with the monitor's
 * certificate, which may read `$SYS` (acl). The state names carry the token of this start
 * (BRIDGE_STATE_TOKEN), so nothing retained by an earlier run counts.
 */
export async function untilBridged(o: { url: string; ca: string; cert: string; key: string; token: string; bridges: number; timeoutMs: number }): Promise<void> {
  const client = await connectAsync(o.url, {
    ca: readFileSync(o.ca),
    cert: readFileSync(o.cert),
    key: readFileSync(o.key),
    clientId: `stack-bridge-ready-${o.token.slice(0, 8)}`,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: o.timeoutMs,
  });
  try {
    const seen = new Set<string>();
    const bridged = new Promise<void>((resolve) => {
      client.on('message', (topic) => {
        const state = topic.split('/')[3] ?? '';
        if (!state.endsWith(`-${o.token}`)) return;
        seen.add(state);
        if (seen.size >= o.bridges) resolve();
      });
    });
    await client.subscribeAsync('$SYS/broker/connection/+/remote/uptime', { qos: 0 });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${seen.size} of ${o.bridges} bridges of the internal broker subscribed on their DMZ brokers after ${o.timeoutMs} ms (see the brokers' logs)`)),
        o.timeoutMs,
      );
    });
    try {
      await Promise.race([bridged, late]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await client.endAsync(true);
  }
}
