import { spawn } from 'node:child_process';
import { join } from 'node:path';
import WebSocket from 'ws';
import { z } from 'zod';
import { DownlinkFrameSchema } from '../../shared/contract/downlink.ts';
import { issueCertificate, newKeyPair, type KeyAndCert } from '../../pki/certificates.ts';
import type { LocalStack } from '../../scripts/local-stack/stack.ts';
import { mallocOf, memoryByMapping, residentBytes, type MemoryByMapping } from '../lib/proc-stats.ts';

export interface ConnectionsOptions {
  /** the gateway's WSS URL */
  url: string;
  /** the gateway's process, whose resident memory is measured */
  gatewayPid: number;
  ca: KeyAndCert;
  count: number;
  /** handshakes in progress at once */
  concurrency: number;
}

export interface ConnectionsResult {
  scenario: string;
  connections: number;
  /** seconds to open them all */
  seconds: number;
  gatewayRssBeforeMiB: number;
  gatewayRssMiB: number;
  /** (resident after − resident before) / connections */
  kibPerConnection: number;
  /** the same by the kind of mapping that holds it (KiB per connection; proc-stats.ts) */
  kibPerConnectionBy: MemoryByMapping;
  /** the gateway's malloc (proc-stats.ts mallocOf): glibc's, or one preloaded with --set LD_PRELOAD */
  malloc: string;
  /** the same count held by a bare WSS server, measured after (heldOnBareServer): Node's TLS and ws alone */
  bare?: Pick<ConnectionsResult, 'kibPerConnection' | 'kibPerConnectionBy' | 'gatewayRssBeforeMiB' | 'gatewayRssMiB'>;
}

const MiB = 1024 * 1024;

/**
 * Many devices connected to one gateway at once, each with its own certificate (CN = device id,
 * its own serial), each welcomed by the gateway: how many one gateway holds and what each costs in
 * resident memory. The simulated devices share one RSA key so that issuing ten thousand
 * certificates takes seconds; the gateway sees ten thousand distinct identities all the same.
 */
export async function heldConnections(o: ConnectionsOptions): Promise<ConnectionsResult> {
  const keyPair = newKeyPair();
  const devices = Array.from({ length: o.count }, (_, i) => {
    const id = `conn-${String(i).padStart(5, '0')}`;
    return { id, cert: issueCertificate(o.ca, { commonName: id, organizationalUnit: 'devices', role: 'client', validityDays: 1, keyPair }).certPem };
  });
  const before = residentBytes(o.gatewayPid);
  const mappedBefore = memoryByMapping(o.gatewayPid);
  const open: WebSocket[] = [];
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < devices.length) {
      const d = devices[next++] as (typeof devices)[number];
      open.push(await connectWelcomed(o.url, { ca: o.ca.certPem, cert: d.cert, key: keyPair.privatePem }, d.id));
    }
  };
  try {
    await Promise.all(Array.from({ length: o.concurrency }, worker));
    const seconds = (Date.now() - started) / 1000;
    // Let the gateway settle (status messages published, buffers returned) before measuring.
    await new Promise((r) => setTimeout(r, 3_000));
    const stillOpen = open.filter((ws) => ws.readyState === WebSocket.OPEN).length;
    if (stillOpen !== o.count) throw new Error(`connections: ${o.count - stillOpen} of ${o.count} were closed by the gateway`);
    const after = residentBytes(o.gatewayPid);
    const mappedAfter = memoryByMapping(o.gatewayPid);
    const perConnection = (k: keyof MemoryByMapping) => Math.round(((mappedAfter[k] - mappedBefore[k]) / o.count / 1024) * 10) / 10;
    return {
      scenario: `concurrent device connections on one gateway`,
      connections: stillOpen,
      seconds,
      gatewayRssBeforeMiB: Math.round(before / MiB),
      gatewayRssMiB: Math.round(after / MiB),
      kibPerConnection: Math.round(((after - before) / o.count / 1024) * 10) / 10,
      kibPerConnectionBy: { mallocHeap: perConnection('mallocHeap'), smallAnon: perConnection('smallAnon'), otherAnon: perConnection('otherAnon'), files: perConnection('files') },
      malloc: mallocOf(o.gatewayPid),
    };
  } finally {
    for (const ws of open) ws.terminate();
  }
}

/**
 * The scenario on the stack's direct gateway: the one devices reach without Caddy, terminating their
 * TLS itself; then the same count on a bare WSS server, the reference (heldOnBareServer).
 */
export async function heldOnDirectGateway(stack: LocalStack, ca: KeyAndCert, count: number): Promise<ConnectionsResult> {
  const direct = stack.directGateway;
  if (!direct?.process.pid) throw new Error('the direct gateway is not running');
  const gateway = await heldConnections({ url: direct.url, gatewayPid: direct.process.pid, ca, count, concurrency: 32 });
  const { kibPerConnection, kibPerConnectionBy, gatewayRssBeforeMiB, gatewayRssMiB } = await heldOnBareServer(ca, count);
  return { ...gateway, bare: { kibPerConnection, kibPerConnectionBy, gatewayRssBeforeMiB, gatewayRssMiB } };
}

/**
 * The same connections held by a bare WSS server (bench/reference/bare-wss-main.ts: the gateway's
 * TLS settings and ws options, a welcome frame, nothing else) in its own process: what Node's TLS
 * and ws hold per connection before anything of the gateway's. Measured in the same run as the
 * gateway, after its connections are closed.
 */
export async function heldOnBareServer(ca: KeyAndCert, count: number): Promise<ConnectionsResult> {
  const server = issueCertificate(ca, { commonName: 'localhost', organizationalUnit: 'services', role: 'server', subjectAltNames: ['localhost', '127.0.0.1'], validityDays: 1 });
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../reference/bare-wss-main.ts')], {
    env: { ...process.env, BARE_WSS_CERT: server.certPem, BARE_WSS_KEY: server.keyPem, BARE_WSS_CA: ca.certPem },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const line = /^(\{.*\})\n/.exec(out);
        if (line) resolve(z.object({ port: z.number().int().positive() }).parse(JSON.parse(line[1] as string)).port);
      });
      child.once('exit', (code) => reject(new Error(`the bare WSS server exited (${code}) before listening`)));
      setTimeout(() => reject(new Error('the bare WSS server did not listen within 30 s')), 30_000).unref();
    });
    if (child.pid === undefined) throw new Error('the bare WSS server has no pid');
    const held = await heldConnections({ url: `wss://localhost:${port}/`, gatewayPid: child.pid, ca, count, concurrency: 32 });
    return { ...held, scenario: 'concurrent device connections on a bare WSS server (reference)' };
  } finally {
    child.kill('SIGKILL');
  }
}

/** The report's lines for a connections result. */
export function renderConnections(c: ConnectionsResult): string[] {
  const by = c.kibPerConnectionBy;
  // A preloaded malloc keeps what C and C++ code allocate in large anonymous mappings, not in [heap].
  const preloaded = c.malloc !== 'glibc';
  return [
    `Connections: ${c.connections.toLocaleString('en')} devices held by one gateway (opened in ${c.seconds.toFixed(1)} s, its malloc ${preloaded ? `${c.malloc}, preloaded` : "glibc's"}); its resident memory went from ${c.gatewayRssBeforeMiB} to ${c.gatewayRssMiB} MiB, ${c.kibPerConnection} KiB per connection: glibc's heap ${by.mallocHeap}, anonymous mappings of up to 512 KiB (V8's heap) ${by.smallAnon}, other anonymous mappings${preloaded ? ` (${c.malloc}'s heap among them)` : ''} ${by.otherAnon}, files ${by.files}.`,
    ...(c.bare
      ? [
          '',
          `Reference, the same run: the same ${c.connections.toLocaleString('en')} devices held by a bare WSS server (the gateway's TLS settings and ws options, a welcome frame and nothing else; bench/reference/bare-wss-main.ts, glibc's malloc): ${c.bare.gatewayRssBeforeMiB} to ${c.bare.gatewayRssMiB} MiB, ${c.bare.kibPerConnection} KiB per connection (glibc's heap ${c.bare.kibPerConnectionBy.mallocHeap}, V8's ${c.bare.kibPerConnectionBy.smallAnon}, other anonymous ${c.bare.kibPerConnectionBy.otherAnon}, files ${c.bare.kibPerConnectionBy.files}).`,
        ]
      : []),
  ];
}

/** Opens one device's WebSocket and resolves once the gateway's welcome frame arrived. */
function connectWelcomed(url: string, tls: { ca: string; cert: string; key: string }, id: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...tls, perMessageDeflate: false });
    const fail = (why: string) => {
      ws.terminate();
      reject(new Error(`${id}: ${why}`));
    };
    const timer = setTimeout(() => fail('no welcome within 30 s'), 30_000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      const frame = DownlinkFrameSchema.safeParse(JSON.parse(String(data)));
      if (frame.data?.type === 'welcome') resolve(ws);
      else fail(`first frame was ${frame.data ? frame.data.type : 'not a gateway frame'}, not welcome`);
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      fail(err.message);
    });
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      fail(`HTTP ${res.statusCode}`);
    });
  });
}
