/**
 * `npm run stack`: the DMZ and internal tiers as real processes on this machine, without Docker —
 * Caddy, the DMZ Mosquitto, the internal Mosquitto with its bridge, the gateway(s), the distributor
 * the command API and the operator console — from the same configuration files the compose files mount. Time series go
 * to INFLUXDB_URL when set, otherwise to the local store. Needs mosquitto and caddy installed.
 */
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { z } from 'zod';
import { loadDotenv, parseConfig, setting } from '../shared/config.ts';
import { FieldStreamError, isFieldStreamError } from '../shared/errors.ts';
import { runService } from '../shared/service.ts';
import { ensureDevelopmentPki } from '../embedded/dev-pki.ts';
import { SEED_DEVICE_IDS } from '../embedded/config.ts';
import { startLocalStack } from './local-stack/stack.ts';
import { lockStackDir } from './local-stack/stack-lock.ts';
import { stackBanner } from './local-stack/banner.ts';
import { shownUrl } from '../internal-network/shared/influx-settings.ts';

const StackConfigSchema = z
  .object({
  CERTS_DIR: z.string().default('./certs'),
  STACK_DIR: z.string().default('./data/stack'),
  STACK_GATEWAYS: z.coerce.number().int().min(1).max(16).default(1),
  STACK_DMZ_SERVERS: z.coerce.number().int().min(1).max(8).default(1),
  /** the hop from Caddy to the gateways, as in the deployment (docs/deployment.md) */
  EDGE_HOP: z.enum(['mtls', 'unix']).default('mtls'),
  STACK_HTTPS_PORT: setting.port(9443),
  STACK_HTTP_PORT: setting.port(9080),
  STACK_DMZ_MQTT_PORT: setting.port(18883),
  STACK_INTERNAL_MQTT_PORT: setting.port(28883),
  STACK_GATEWAY_PORT: setting.port(9444),
  STACK_COMMAND_API_PORT: setting.port(9090),
  STACK_CONSOLE_PORT: setting.port(9095),
  COMMAND_API_TOKEN: z.string().min(24).optional(),
  })
  .refine((c) => c.EDGE_HOP === 'mtls' || c.STACK_GATEWAYS === 1, { path: ['EDGE_HOP'], message: 'EDGE_HOP=unix takes one gateway per DMZ server (STACK_GATEWAYS=1)' })
  .superRefine((c, ctx) => {
    // One port for two components: the second cannot listen, while a readiness check on the port is
    // answered by the first (a gateway found "ready" on Caddy's port), so the stack would say it
    // runs with a component that never listened. 0 (picked at start) is never shared.
    const taken = new Map<number, string>();
    const ports: Array<[string, number, string]> = [
      ['STACK_HTTPS_PORT', c.STACK_HTTPS_PORT, 'STACK_HTTPS_PORT'],
      ['STACK_HTTP_PORT', c.STACK_HTTP_PORT, 'STACK_HTTP_PORT'],
      ['STACK_DMZ_MQTT_PORT', c.STACK_DMZ_MQTT_PORT, 'STACK_DMZ_MQTT_PORT'],
      ['STACK_INTERNAL_MQTT_PORT', c.STACK_INTERNAL_MQTT_PORT, 'STACK_INTERNAL_MQTT_PORT'],
      ['STACK_COMMAND_API_PORT', c.STACK_COMMAND_API_PORT, 'STACK_COMMAND_API_PORT'],
      ['STACK_CONSOLE_PORT', c.STACK_CONSOLE_PORT, 'STACK_CONSOLE_PORT'],
      // The first gateway listens on STACK_GATEWAY_PORT, each further one on the port after (none with EDGE_HOP=unix).
      ...(c.EDGE_HOP === 'mtls' && c.STACK_GATEWAY_PORT !== 0
        ? Array.from({ length: c.STACK_GATEWAYS }, (_, i): [string, number, string] => ['STACK_GATEWAY_PORT', c.STACK_GATEWAY_PORT + i, i === 0 ? 'STACK_GATEWAY_PORT' : `gateway ${i + 1} (STACK_GATEWAY_PORT + ${i})`])
        : []),
    ];
    for (const [setting, port, what] of ports) {
      if (port === 0) continue;
      if (port > 65_535) {
        ctx.addIssue({ code: 'custom', path: [setting], message: `${what} would be port ${port}: lower STACK_GATEWAY_PORT or STACK_GATEWAYS (the gateways' ports are STACK_GATEWAY_PORT and the ones after it, up to 65535)` });
        continue;
      }
      const other = taken.get(port);
      if (other) ctx.addIssue({ code: 'custom', path: [setting], message: `${what} and ${other} are both port ${port}: each component needs a port of its own` });
      else taken.set(port, what);
    }
  });

/**
 * A port of the stack another program holds stops it before anything listens (startInStages): the
 * message names the setting that chooses that port, as npm start's LISTEN_FAILED does, so the
 * operator knows what to change. Ports picked at start (a second DMZ server's, the metrics ports) have
 * none: another start picks others.
 */
function listenFailedWithSetting(err: unknown, c: z.infer<typeof StackConfigSchema>): unknown {
  if (!isFieldStreamError(err, 'LISTEN_FAILED') || typeof err.details?.port !== 'number') return err;
  const port = err.details.port;
  const fixed: Array<[string, number]> = [
    ['STACK_HTTPS_PORT', c.STACK_HTTPS_PORT],
    ['STACK_HTTP_PORT', c.STACK_HTTP_PORT],
    ['STACK_DMZ_MQTT_PORT', c.STACK_DMZ_MQTT_PORT],
    ['STACK_INTERNAL_MQTT_PORT', c.STACK_INTERNAL_MQTT_PORT],
    ['STACK_COMMAND_API_PORT', c.STACK_COMMAND_API_PORT],
    ['STACK_CONSOLE_PORT', c.STACK_CONSOLE_PORT],
  ];
  const named = fixed.find(([, p]) => p === port)?.[0];
  // The first gateway listens on STACK_GATEWAY_PORT, each further one on the port after.
  const gateway = port >= c.STACK_GATEWAY_PORT && port < c.STACK_GATEWAY_PORT + c.STACK_GATEWAYS;
  const setting = named ?? (gateway ? 'STACK_GATEWAY_PORT' : undefined);
  const advice = setting ? `(${setting}): free the port or change that setting, then start again` : '(picked at start): start again';
  return new FieldStreamError('LISTEN_FAILED', `${err.message} ${advice}`, err.details);
}

loadDotenv();
runService('stack', () => parseConfig(StackConfigSchema), async (c) => {
  const repoRoot = resolve(import.meta.dirname, '..');
  const certsDir = resolve(c.CERTS_DIR);
  // One stack per STACK_DIR, before anything in it is touched (stack-lock.ts).
  const lock = lockStackDir(resolve(c.STACK_DIR));
  ensureDevelopmentPki(certsDir, SEED_DEVICE_IDS);
  const token = c.COMMAND_API_TOKEN ?? randomBytes(24).toString('hex');
  const stack = await startLocalStack({
    repoRoot,
    certsDir,
    workDir: resolve(c.STACK_DIR),
    env: process.env,
    commandApiToken: token,
    gateways: c.STACK_GATEWAYS,
    dmzServers: c.STACK_DMZ_SERVERS,
    edgeHop: c.EDGE_HOP,
    ports: {
      https: c.STACK_HTTPS_PORT,
      http: c.STACK_HTTP_PORT,
      dmzMqtt: c.STACK_DMZ_MQTT_PORT,
      internalMqtt: c.STACK_INTERNAL_MQTT_PORT,
      gateway: c.STACK_GATEWAY_PORT,
      commandApi: c.STACK_COMMAND_API_PORT,
      console: c.STACK_CONSOLE_PORT,
    },
  }).catch((err: unknown) => {
    throw listenFailedWithSetting(err, c);
  });
  const rel = (path: string) => path.replace(`${process.cwd()}/`, '');
  process.stdout.write(
    stackBanner(stack, {
      token: c.COMMAND_API_TOKEN ? '(COMMAND_API_TOKEN)' : token,
      timeseries: process.env.INFLUXDB_URL?.trim() ? shownUrl(process.env.INFLUXDB_URL.trim()) : rel(stack.dataDir.timeseries),
      files: rel(stack.dataDir.files),
      logs: rel(resolve(c.STACK_DIR, 'logs')),
      certificates: rel(certsDir),
      shownPath: rel,
    }),
  );
  return {
    async close() {
      await stack.close();
      lock.release();
    },
  };
});
