/**
 * `npm start`: the whole pipeline on this machine, no Docker, no external server.
 * Embedded broker, gateway (WSS), distributor and a simulated field device, on loopback.
 */
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { loadDotenv } from '../shared/config.ts';
import { createLogger } from '../shared/logger.ts';
import { pkiPaths } from '../pki/layout.ts';
import { runService } from '../shared/service.ts';
import { loadEmbeddedConfig, SEED_DEVICE_IDS } from '../embedded/config.ts';
import { ensureDevelopmentPki } from '../embedded/dev-pki.ts';
import { dialHost, resolveDataPaths, startEmbeddedPipeline, urlHost } from '../embedded/pipeline.ts';

loadDotenv();
runService('fieldstream', loadEmbeddedConfig, async (config) => {
  const logger = createLogger('fieldstream', config.LOG_LEVEL);
  const certsDir = resolve(config.CERTS_DIR);
  const simulated = config.DEVICE_ID === 'none' ? undefined : config.DEVICE_ID;
  const pki = ensureDevelopmentPki(certsDir, [...(simulated ? [simulated] : []), ...SEED_DEVICE_IDS]);
  if (pki.created.length > 0) logger.info({ certsDir, created: pki.created }, 'created development certificates');

  const pipeline = await startEmbeddedPipeline({
    env: process.env,
    logger,
    certsDir,
    host: config.EMBEDDED_HOST,
    gatewayPort: config.GATEWAY_PORT,
    brokerPort: config.EMBEDDED_MQTT_PORT,
    commandApiPort: config.COMMAND_API_PORT,
    commandApiToken: config.COMMAND_API_TOKEN ?? randomBytes(24).toString('hex'),
    simulatedDeviceId: simulated,
    metricsPorts: { gateway: config.GATEWAY_METRICS_PORT, distributor: config.DISTRIBUTOR_METRICS_PORT, commandApi: config.COMMAND_API_METRICS_PORT, console: config.CONSOLE_METRICS_PORT },
    consolePort: config.CONSOLE_PORT,
  });
  const token = config.COMMAND_API_TOKEN ? '$COMMAND_API_TOKEN' : pipeline.commandApiToken;
  // Addresses to type: loopback where it listens on every address; an IPv6 one in brackets.
  const host = urlHost(dialHost(config.EMBEDDED_HOST));
  const apiUrl = `http://${host}:${pipeline.commandApi.port}`;
  const data = resolveDataPaths(process.env);
  const p = pkiPaths(certsDir);
  const rel = (path: string) => path.replace(`${process.cwd()}/`, '');
  const dev = p.device('sensor-001');
  const my = p.device('my-device');
  // generate-client-cert.sh takes CERTS_DIR from the shell it is typed in, or that shell's .env, or
  // certs/: a folder given to npm start in its own environment alone (CERTS_DIR=./certs-dev npm
  // start, beside a deployment's certs/) is none of those, and the device went under the other CA.
  const issueInto = certsDir === resolve(import.meta.dirname, '..', 'certs') ? '' : `CERTS_DIR=${rel(certsDir)} `;
  // The other device's local inputs beside the simulated device's, on ports free now: fixed ones
  // (8082, 1885) were the simulated device's own, or another service's, when those were moved.
  const otherHttp = await freePortFrom((pipeline.field?.httpPort ?? 8081) + 1);
  const otherMqtt = await freePortFrom((pipeline.field?.mqttPort ?? 1884) + 1);
  const metricsOf = (s: { url: string } | undefined) => (s ? `${s.url}/metrics   (${s.url}/healthz, ${s.url}/readyz)` : 'off');
  const distributorMetrics = await pipeline.distributor.metricsServer;
  // The local store only while no database is set (sinks/select.ts): with PostgreSQL alone it holds
  // nothing, and naming it sent the reader to an empty folder.
  const set = (name: string) => (process.env[name]?.trim() ?? '') !== '';
  const toDatabase = set('INFLUXDB_URL') || set('POSTGRES_URL') || set('PGHOST');
  const timeseries = toDatabase ? pipeline.distributor.sink.description : `${rel(data.timeseries)}/  (read it: npm run readings)`;
  process.stdout.write(`
FieldStream is running (embedded pipeline, Ctrl-C to stop)

  gateway (WSS)      ${pipeline.gatewayUrl}          client certificate required
  MQTT broker        mqtts://${host}:${pipeline.broker.port}   embedded, mTLS, stands in for both Mosquittos
  time series        ${timeseries}
  files              ${rel(data.files)}/
  dead letters       ${rel(data.deadLetters)}/
  certificates       ${rel(certsDir)}/  (CA key in ${rel(p.caDir)}/ stays here)
  command API        ${apiUrl}   bearer token ${token}${config.COMMAND_API_TOKEN ? '   (yours, not printed: set COMMAND_API_TOKEN in the shell you run curl in when it is only in .env)' : ''}
  operator console   ${pipeline.console ? `${pipeline.console.url}   log in with the command API's token` : 'off'}
  metrics            gateway      ${metricsOf(pipeline.gateway.metricsServer)}
                     distributor  ${metricsOf(distributorMetrics)}
                     command API  ${metricsOf(pipeline.commandApi.metricsServer)}
                     console      ${metricsOf(pipeline.console?.metricsServer)}
                     field client ${pipeline.field ? metricsOf(pipeline.field.metricsUrl ? { url: pipeline.field.metricsUrl } : undefined) : '(no simulated device)'}
  simulated device   ${simulated ?? '(none)'}${simulated ? `   local inputs: http://127.0.0.1:${pipeline.field?.httpPort ?? 'off'}, mqtt://127.0.0.1:${pipeline.field?.mqttPort ?? 'off'}, folder ${pipeline.field?.watchDir ? `${rel(resolve(pipeline.field.watchDir))}/` : 'off'}` : ''}

Talk to it as device sensor-001 (type one of the example messages of docs/message-contract.md):
  npx wscat -c ${pipeline.gatewayUrl} --ca ${rel(p.publicCa)} --cert ${rel(dev.cert)} --key ${rel(dev.key)}

${simulated ? 'Send the simulated device a command, then read its state:' : 'Send sensor-001 a command (it waits, sent, until sensor-001 connects: with wscat above, say), then read its state:'}
  curl -s -X POST ${apiUrl}/v1/commands -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' \\
    -d '{"deviceId": "${simulated ?? 'sensor-001'}", "command": "ping"}'
  curl -s '${apiUrl}/v1/commands?deviceId=${simulated ?? 'sensor-001'}' -H "Authorization: Bearer ${token}"

Connect another device (a real one, or this machine as one, with a data folder and local ports beside the simulated device's):
  ${issueInto}scripts/generate-client-cert.sh my-device
  DEVICE_ID=my-device GATEWAY_URL=${pipeline.gatewayUrl} FIELD_CA_FILE=${rel(p.publicCa)} \\
    FIELD_CERT_FILE=${rel(my.cert)} FIELD_KEY_FILE=${rel(my.key)} \\
    FIELD_SIGNING_KEY_FILE=${rel(my.signingKey)} FIELD_DATA_DIR=data/my-device FIELD_HTTP_PORT=${otherHttp} FIELD_MQTT_PORT=${otherMqtt} npm run field-client

Inspect the TLS endpoint:
  openssl s_client -connect ${new URL(pipeline.gatewayUrl).host} -CAfile ${rel(p.publicCa)} -cert ${rel(dev.cert)} -key ${rel(dev.key)} </dev/null

`);
  return pipeline;
});

/** The first port from `port` on that can be listened on now (loopback), for a command printed to run next. */
async function freePortFrom(port: number): Promise<number> {
  for (let p = port; p < Math.min(port + 100, 65_536); p++) {
    const free = await new Promise<boolean>((resolveFree) => {
      const probe = createServer();
      probe.once('error', () => resolveFree(false));
      probe.listen(p, '127.0.0.1', () => probe.close(() => resolveFree(true)));
    });
    if (free) return p;
  }
  return port;
}
