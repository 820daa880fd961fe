import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stackBanner } from '../../scripts/local-stack/banner.ts';
import type { DmzServer } from '../../scripts/local-stack/dmz-server.ts';

/** What `npm run stack` prints (scripts/local-stack.ts): where every service's /metrics is, as `npm start` prints them. */
describe("npm run stack's banner", () => {
  it("names every service's /metrics, the console's included", () => {
    const dmz = { id: undefined, sockets: [], ports: { gateways: [9444] }, urls: { wss: 'wss://localhost:9443', mqtt: 'mqtts://127.0.0.1:18883' } } as unknown as DmzServer;
    const metrics = { brokerExporter: 'http://127.0.0.1:41001', gateways: ['http://127.0.0.1:41002'], gateway: 'http://127.0.0.1:41002', distributor: 'http://127.0.0.1:41003', commandApi: 'http://127.0.0.1:41004', console: 'http://127.0.0.1:41005' };
    const text = stackBanner(
      { urls: { wss: 'wss://localhost:9443', dmzMqtt: 'mqtts://127.0.0.1:18883', internalMqtt: 'mqtts://127.0.0.1:28883', commandApi: 'https://127.0.0.1:9090', console: 'http://127.0.0.1:9095', tokenWss: undefined }, dmzServers: [dmz], metrics },
      { token: '(COMMAND_API_TOKEN)', timeseries: 'data/stack/timeseries', files: 'data/stack/files', logs: 'data/stack/logs', certificates: 'certs' },
    );
    for (const url of [metrics.brokerExporter, ...metrics.gateways, metrics.distributor, metrics.commandApi, metrics.console]) assert.ok(text.includes(`${url}/metrics`), `${url}/metrics in:\n${text}`);
    assert.match(text, /console http:\/\/127\.0\.0\.1:41005\/metrics/);
  });

  it("says where each further DMZ server's logs are: in a folder of its own, not the logs folder it prints", () => {
    const server = (id: string | undefined, logDir: string) =>
      ({ id, sockets: [], logDir, ports: { gateways: [9444] }, urls: { wss: 'wss://localhost:9443', mqtt: 'mqtts://127.0.0.1:18883' }, metrics: { gateways: ['http://127.0.0.1:41002'] } }) as unknown as DmzServer;
    const metrics = { brokerExporter: 'http://127.0.0.1:41001', gateways: ['http://127.0.0.1:41002'], gateway: 'http://127.0.0.1:41002', distributor: 'http://127.0.0.1:41003', commandApi: 'http://127.0.0.1:41004', console: 'http://127.0.0.1:41005' };
    const text = stackBanner(
      { urls: { wss: 'wss://localhost:9443', dmzMqtt: 'mqtts://127.0.0.1:18883', internalMqtt: 'mqtts://127.0.0.1:28883', commandApi: 'http://127.0.0.1:9090', console: 'http://127.0.0.1:9095', tokenWss: undefined }, dmzServers: [server(undefined, '/repo/data/stack/logs'), server('dmz2', '/repo/data/stack/dmz2/logs')], metrics },
      { token: '(COMMAND_API_TOKEN)', timeseries: 'data/stack/timeseries', files: 'data/stack/files', logs: 'data/stack/logs', certificates: 'certs', shownPath: (p) => p.replace('/repo/', '') },
    );
    assert.match(text, /DMZ server dmz2 .* logs data\/stack\/dmz2\/logs\//);
    // The exporter reads the internal broker and the first DMZ server's (broker-exporter), not dmz2's.
    assert.match(text, /broker exporter .*the internal broker's and the first DMZ server's broker's \$SYS/);
    assert.doesNotMatch(text, /both brokers/);
  });

  it("names each further DMZ server's gateways' /metrics too, with that server", () => {
    const server = (id: string | undefined, metricsUrls: string[]) =>
      ({ id, sockets: [], logDir: `/repo/data/stack/${id ?? ''}logs`, ports: { gateways: [9444] }, urls: { wss: 'wss://localhost:9443', mqtt: 'mqtts://127.0.0.1:18883' }, metrics: { gateways: metricsUrls } }) as unknown as DmzServer;
    const metrics = { brokerExporter: 'http://127.0.0.1:41001', gateways: ['http://127.0.0.1:41002'], gateway: 'http://127.0.0.1:41002', distributor: 'http://127.0.0.1:41003', commandApi: 'http://127.0.0.1:41004', console: 'http://127.0.0.1:41005' };
    const text = stackBanner(
      { urls: { wss: 'wss://localhost:9443', dmzMqtt: 'mqtts://127.0.0.1:18883', internalMqtt: 'mqtts://127.0.0.1:28883', commandApi: 'http://127.0.0.1:9090', console: 'http://127.0.0.1:9095', tokenWss: undefined }, dmzServers: [server(undefined, metrics.gateways), server('dmz2', ['http://127.0.0.1:42001', 'http://127.0.0.1:42002'])], metrics },
      { token: '(COMMAND_API_TOKEN)', timeseries: 'data/stack/timeseries', files: 'data/stack/files', logs: 'data/stack/logs', certificates: 'certs' },
    );
    assert.match(text, /DMZ server dmz2 .*metrics http:\/\/127\.0\.0\.1:42001\/metrics http:\/\/127\.0\.0\.1:42002\/metrics/);
  });
});
