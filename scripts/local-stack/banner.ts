import type { DmzServer } from './dmz-server.ts';
import type { LocalStack } from './stack.ts';

export interface BannerOptions {
  /** what stands for the command API's token: `(COMMAND_API_TOKEN)` or the one made at start */
  token: string;
  /** where time series go (a URL without its credentials, or a directory) */
  timeseries: string;
  files: string;
  logs: string;
  certificates: string;
  /** how a path is shown (relative to the working directory); default as it is */
  shownPath?: (path: string) => string;
}

function gatewaysOf(s: DmzServer): string {
  return s.sockets.length > 0
    ? `${s.sockets.join(' ')}  (Unix socket, EDGE_HOP=unix: only this user may connect)`
    : `${s.ports.gateways.map((g) => `127.0.0.1:${g}`).join(' ')}  (mTLS, only Caddy may connect)`;
}

/** What `npm run stack` prints once it runs: where each part is, every service's /metrics among
 * them (the console's too, as `npm start` prints it). */
export function stackBanner(stack: Pick<LocalStack, 'urls' | 'dmzServers' | 'metrics'>, o: BannerOptions): string {
  return `
FieldStream local stack is running (Ctrl-C to stop)

  Caddy (public WSS)   ${stack.urls.wss}
  gateways             ${gatewaysOf(stack.dmzServers[0]!)}
  DMZ Mosquitto        ${stack.urls.dmzMqtt}
${stack.dmzServers.slice(1).map((s) => `  DMZ server ${s.id}      ${s.urls.wss}  broker ${s.urls.mqtt}  gateways ${gatewaysOf(s)}  metrics ${s.metrics.gateways.map((u) => `${u}/metrics`).join(' ')}  logs ${(o.shownPath ?? ((p) => p))(s.logDir)}/\n`).join('')}  internal Mosquitto   ${stack.urls.internalMqtt}  (bridged to every DMZ broker, dialling out)
  command API          ${stack.urls.commandApi}  token ${o.token}
  operator console     ${stack.urls.console}  (log in with the command API's token)
  broker exporter      ${stack.metrics.brokerExporter}/metrics  (${stack.dmzServers.length > 1 ? "the internal broker's and the first DMZ server's broker's $SYS" : "both brokers' $SYS"})
  metrics              gateways ${stack.metrics.gateways.map((u) => `${u}/metrics`).join(' ')}
                       distributor ${stack.metrics.distributor}/metrics   command API ${stack.metrics.commandApi}/metrics   console ${stack.metrics.console}/metrics  (and /healthz, /readyz)
  time series          ${o.timeseries}
  files                ${o.files}
  logs                 ${o.logs}/
  certificates         ${o.certificates}/
`;
}
