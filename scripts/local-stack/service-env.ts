import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GatewayConfigSchema } from '../../dmz/gateway/config.ts';
import { BrokerExporterConfigSchema } from '../../internal-network/broker-exporter/config.ts';
import { CommandApiConfigSchema } from '../../internal-network/command-api/config.ts';
import { ConsoleConfigSchema } from '../../internal-network/console/config.ts';
import { DistributorConfigSchema } from '../../internal-network/distributor/config.ts';

/**
 * What each process of the local stack takes from the stack's environment, so that a setting reaches
 * the processes it reaches under docker-compose and no other: the stack used to hand every process
 * the whole environment, so the DMZ's gateways and Caddy held the internal tier's database password
 * and command API token, and a setting that compose gives one service changed another here.
 *
 * Each process takes (serviceEnvironment):
 * - the variables the compose file gives its service (COMPOSE_ENVIRONMENT, the `environment:` keys
 *   of docker-compose.dmz.yml and docker-compose.internal.yml; test/unit/local-stack-env.test.ts
 *   holds the two in step);
 * - the settings its program reads that compose gives no service (left at their defaults there), so
 *   that a knob such as GATEWAY_RATE_BURST_S or DISTRIBUTOR_TRANSIT_MAX_S still reaches the one
 *   program that reads it: a Node service's are its settings schema's keys, Caddy's the `{$NAME}`s
 *   of the Caddyfile. One compose gives another service only is never among them;
 * - the variables of how the program runs, not of what it does (RUNTIME_VARIABLES: NODE_OPTIONS for
 *   a Node service, GOMAXPROCS for Caddy, LD_PRELOAD for any), which the benchmark sets
 *   (`npm run bench -- --set LD_PRELOAD=…`) and no compose file names.
 * What a process needs besides (PATH, HOME, the stack's own paths, ports and certificates) the
 * stack sets itself, over these.
 */
export const COMPOSE_ENVIRONMENT = {
  gateway: ['EDGE_HOP', 'GATEWAY_ACK_HOLD_MS', 'GATEWAY_BROKER_BACKLOG_MAX_MIB', 'GATEWAY_CA_FILE', 'GATEWAY_CRL_FILE', 'GATEWAY_DEVICE_TOKENS_FILE', 'GATEWAY_IDENTITY_SOURCE', 'GATEWAY_LINGER_MS', 'GATEWAY_MAX_BATCH', 'GATEWAY_MAX_CONNECTIONS', 'GATEWAY_MAX_FRAME_BYTES', 'GATEWAY_MAX_IN_FLIGHT', 'GATEWAY_MAX_PENDING_CONNECTIONS', 'GATEWAY_MAX_PENDING_PER_SOURCE', 'GATEWAY_METRICS_HOST', 'GATEWAY_METRICS_HOST_NAMES', 'GATEWAY_METRICS_PORT', 'GATEWAY_PATH', 'GATEWAY_PORT', 'GATEWAY_RATE_BURST_S', 'GATEWAY_RATE_BYTES_PER_S', 'GATEWAY_RATE_CPU_MS_PER_S', 'GATEWAY_RATE_MESSAGES_PER_S', 'GATEWAY_REVOKED_SERIALS_FILE', 'GATEWAY_SOCKET', 'GATEWAY_TLS_CERT_FILE', 'GATEWAY_TLS_KEY_FILE', 'GATEWAY_TOKEN_AUTH', 'GATEWAY_TOKEN_FAILURE_WINDOW_S', 'GATEWAY_TOKEN_MAX_FAILURES', 'GATEWAY_UNFINISHED_FRAMES_MAX_MIB', 'GATEWAY_UPLINK_ENVELOPES', 'LOG_LEVEL', 'MQTT_CA_FILE', 'MQTT_CERT_FILE', 'MQTT_KEY_FILE', 'MQTT_URL'],
  caddy: ['ADMIN_EMAIL', 'CADDY_ADMIN', 'CADDY_CLIENT_CA_FILE', 'CADDY_TLS', 'CADDY_TLS_CERT_FILE', 'CADDY_TLS_KEY_FILE', 'CADDY_TOKEN_PORT', 'CADDY_TOKEN_ROUTE', 'CADDY_UPSTREAM_CA_FILE', 'CADDY_UPSTREAM_CERT_FILE', 'CADDY_UPSTREAM_KEY_FILE', 'DOMAIN_NAME', 'EDGE_HOP', 'GATEWAY_PATH', 'GATEWAY_SOCKET', 'GATEWAY_UPSTREAMS', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME'],
  'dmz-mosquitto': [],
  'internal-mosquitto': ['BRIDGE_PROTOCOL_VERSION', 'BRIDGE_STATE_TOKEN', 'DMZ_BROKER_HOST', 'DMZ_BROKER_HOSTS', 'DMZ_BROKER_PORT'],
  distributor: ['DEAD_LETTER_MAX_BYTES', 'DEAD_LETTER_PATH', 'DISTRIBUTOR_BATCH_MAX_POINTS', 'DISTRIBUTOR_CLIENT_ID', 'DISTRIBUTOR_CONSUMERS', 'DISTRIBUTOR_DEVICE_KEYS_DIR', 'DISTRIBUTOR_FEED', 'DISTRIBUTOR_FRESHNESS_S', 'DISTRIBUTOR_GATEWAYS', 'DISTRIBUTOR_HEALTH_FILE', 'DISTRIBUTOR_MAX_DELAY_S', 'DISTRIBUTOR_MAX_GATEWAYS', 'DISTRIBUTOR_MAX_POINT_AGE_DAYS', 'DISTRIBUTOR_METRICS_HOST', 'DISTRIBUTOR_METRICS_HOST_NAMES', 'DISTRIBUTOR_METRICS_PORT', 'DISTRIBUTOR_REQUIRE_SIGNATURES', 'DISTRIBUTOR_RETRY_MAX_MS', 'DISTRIBUTOR_REVOKED_DEVICES_FILE', 'DISTRIBUTOR_SHARE_GROUP', 'DISTRIBUTOR_STATE_DIR', 'DISTRIBUTOR_STORED_FEED_KEY_FILE', 'DISTRIBUTOR_TRANSIT_MAX_S', 'DISTRIBUTOR_WRITE_CONCURRENCY', 'FILE_STORAGE_PATH', 'INFLUXDB_BUCKET', 'INFLUXDB_DATABASE', 'INFLUXDB_ORG', 'INFLUXDB_PASSWORD', 'INFLUXDB_TIMEOUT_MS', 'INFLUXDB_TOKEN', 'INFLUXDB_URL', 'INFLUXDB_USERNAME', 'LOG_LEVEL', 'MQTT_CA_FILE', 'MQTT_CERT_FILE', 'MQTT_KEY_FILE', 'MQTT_URL', 'PGDATABASE', 'PGHOST', 'PGPASSWORD_FILE', 'PGPORT', 'PGUSER', 'POSTGRES_POOL_SIZE', 'POSTGRES_SCHEMA', 'POSTGRES_SSL', 'POSTGRES_SSL_CA_FILE', 'POSTGRES_TIMEOUT_MS', 'POSTGRES_URL', 'TIMESERIES_LOCAL_PATH'],
  'command-api': ['COMMAND_ALLOW_UNSIGNED', 'COMMAND_API_CLIENT_ID', 'COMMAND_API_HOST', 'COMMAND_API_METRICS_HOST', 'COMMAND_API_METRICS_HOST_NAMES', 'COMMAND_API_METRICS_PORT', 'COMMAND_API_PORT', 'COMMAND_API_TOKEN', 'COMMAND_API_TOKENS_FILE', 'COMMAND_DEFAULT_TTL_S', 'COMMAND_DEVICE_KEYS_DIR', 'COMMAND_GROUPS_FILE', 'COMMAND_RESEND_UNANSWERED_S', 'COMMAND_REVOKED_DEVICES_FILE', 'COMMAND_STATE_PATH', 'INFLUXDB_BUCKET', 'INFLUXDB_DATABASE', 'INFLUXDB_ORG', 'INFLUXDB_PASSWORD', 'INFLUXDB_TIMEOUT_MS', 'INFLUXDB_TOKEN', 'INFLUXDB_URL', 'INFLUXDB_USERNAME', 'LOG_LEVEL', 'MQTT_CA_FILE', 'MQTT_CERT_FILE', 'MQTT_KEY_FILE', 'MQTT_URL', 'PGDATABASE', 'PGHOST', 'PGPASSWORD_FILE', 'PGPORT', 'PGUSER', 'POSTGRES_SCHEMA', 'POSTGRES_SSL', 'POSTGRES_SSL_CA_FILE', 'POSTGRES_TIMEOUT_MS', 'POSTGRES_URL'],
  console: ['COMMAND_API_TOKEN', 'COMMAND_API_TOKENS_FILE', 'CONSOLE_ANOMALY', 'CONSOLE_CLIENT_ID', 'CONSOLE_COMMAND_API_URL', 'CONSOLE_COOKIE_SECURE', 'CONSOLE_DEVICE_KEYS_DIR', 'CONSOLE_DEVICE_TOKENS_FILE', 'CONSOLE_HOST', 'CONSOLE_LOGIN_ATTEMPTS_PER_MINUTE', 'CONSOLE_MANAGE_API', 'CONSOLE_METRICS_HOST', 'CONSOLE_METRICS_HOST_NAMES', 'CONSOLE_METRICS_PORT', 'CONSOLE_PIPELINE_TARGETS', 'CONSOLE_PORT', 'CONSOLE_REVOKED_DEVICES_FILE', 'CONSOLE_SESSION_TTL_S', 'CONSOLE_STALE_AFTER_S', 'CONSOLE_STATE_DIR', 'CONSOLE_STORED_FEED_KEY_FILE', 'CONSOLE_TRUSTED_PROXY', 'INFLUXDB_BUCKET', 'INFLUXDB_DATABASE', 'INFLUXDB_ORG', 'INFLUXDB_PASSWORD', 'INFLUXDB_TIMEOUT_MS', 'INFLUXDB_TOKEN', 'INFLUXDB_URL', 'INFLUXDB_USERNAME', 'LOG_LEVEL', 'MQTT_CA_FILE', 'MQTT_CERT_FILE', 'MQTT_KEY_FILE', 'MQTT_URL', 'PGDATABASE', 'PGHOST', 'PGPASSWORD_FILE', 'PGPORT', 'PGUSER', 'POSTGRES_POOL_SIZE', 'POSTGRES_SCHEMA', 'POSTGRES_SSL', 'POSTGRES_SSL_CA_FILE', 'POSTGRES_TIMEOUT_MS', 'POSTGRES_URL', 'TIMESERIES_LOCAL_PATH'],
  'broker-exporter': ['BRIDGE_STATE_TOKEN', 'BROKER_EXPORTER_CLIENT_ID', 'BROKER_EXPORTER_METRICS_HOST', 'BROKER_EXPORTER_METRICS_HOST_NAMES', 'BROKER_EXPORTER_METRICS_PORT', 'BROKER_EXPORTER_STALE_S', 'DMZ_BROKER_HOSTS', 'DMZ_MQTT_CA_FILE', 'DMZ_MQTT_URL', 'LOG_LEVEL', 'MQTT_CA_FILE', 'MQTT_CERT_FILE', 'MQTT_KEY_FILE', 'MQTT_URL'],
} as const satisfies Record<string, readonly string[]>;

/** A service of the compose files that the stack runs as a process (a Mosquitto: either tier's). */
export type StackService = keyof typeof COMPOSE_ENVIRONMENT;
/** The Node services, by the entry point the stack runs (as the compose files' `command:`). */
export const NODE_SERVICES = {
  gateway: { entry: 'dmz/gateway/main.ts', schema: GatewayConfigSchema },
  distributor: { entry: 'internal-network/distributor/main.ts', schema: DistributorConfigSchema },
  'command-api': { entry: 'internal-network/command-api/main.ts', schema: CommandApiConfigSchema },
  console: { entry: 'internal-network/console/main.ts', schema: ConsoleConfigSchema },
  'broker-exporter': { entry: 'internal-network/broker-exporter/main.ts', schema: BrokerExporterConfigSchema },
} as const;
export type NodeService = keyof typeof NODE_SERVICES;

/** Variables of the runtime a program runs on (its allocator, Node.js, Go), not settings of ours. */
const RUNTIME_VARIABLES = {
  any: ['LD_PRELOAD', 'GLIBC_TUNABLES', 'MALLOC_ARENA_MAX'],
  node: ['NODE_OPTIONS', 'UV_THREADPOOL_SIZE'],
  caddy: ['GOMAXPROCS', 'GOMEMLIMIT', 'GOGC'],
} as const;

/** The settings a service's program reads (none for Mosquitto: the stack renders its configuration with variables of its own). */
function ownSettings(service: StackService, repoRoot: string): string[] {
  if (service in NODE_SERVICES) return Object.keys(NODE_SERVICES[service as NodeService].schema.shape);
  if (service === 'caddy') return [...readFileSync(join(repoRoot, 'Caddyfile'), 'utf8').matchAll(/\{\$([A-Z_][A-Z0-9_]*)/g)].map((m) => m[1] as string);
  return [];
}

const allowedCache = new Map<string, ReadonlySet<string>>();

/** The variables of the environment `service` takes (see the file's comment). */
export function allowedVariables(service: StackService, repoRoot: string): ReadonlySet<string> {
  const key = `${repoRoot}\0${service}`;
  const cached = allowedCache.get(key);
  if (cached) return cached;
  const others = new Set(Object.entries(COMPOSE_ENVIRONMENT).filter(([s]) => s !== service).flatMap(([, vars]) => vars as readonly string[]));
  const mine: readonly string[] = COMPOSE_ENVIRONMENT[service];
  const allowed = new Set([...mine, ...ownSettings(service, repoRoot).filter((v) => !others.has(v))]);
  for (const v of [...RUNTIME_VARIABLES.any, ...(service in NODE_SERVICES ? RUNTIME_VARIABLES.node : []), ...(service === 'caddy' ? RUNTIME_VARIABLES.caddy : [])]) allowed.add(v);
  allowedCache.set(key, allowed);
  return allowed;
}

/** What of `env` a process of `service` is given. */
export function serviceEnvironment(service: StackService, env: Record<string, string | undefined>, repoRoot: string): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const name of allowedVariables(service, repoRoot)) {
    const value = env[name];
    if (value !== undefined) picked[name] = value;
  }
  return picked;
}
