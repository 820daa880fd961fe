import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TIMINGS } from '../../shared/limits.ts';
import { makeTestPki, serviceMqttSettings, tempDir } from '../helpers/pki.ts';

const repoRoot = join(import.meta.dirname, '..', '..');

// A distributor whose broker never let it subscribe (down, or not answering) did not stop on
// SIGTERM: its stop waited for the retirement of earlier consumer sessions, which starts only once
// the consumers are subscribed, so the wait never ended and the process ran on until SIGKILL (or a
// second signal), against docs/operations.md ("Each step of a stop has a bound").

/** A TCP port that refuses: bound at run time, then closed. */
async function refusedPort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

/** A broker that takes the connection and never answers (no CONNACK). */
async function silentBroker(): Promise<{ server: Server; port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('the distributor process stops on SIGTERM while its broker never let it subscribe', () => {
  const pki = makeTestPki([]);
  let silent: Awaited<ReturnType<typeof silentBroker>>;
  before(async () => {
    silent = await silentBroker();
  });
  after(() => {
    silent.close();
    pki.cleanup();
  });

  for (const [what, url] of [
    ['a broker that refuses the connection', async () => `mqtts://127.0.0.1:${await refusedPort()}`],
    ['a broker that never answers', async () => `mqtts://127.0.0.1:${silent.port}`],
  ] as const) {
    it(`exits 0 within a bound, with ${what}`, async () => {
      const tmp = tempDir('distributor-stop');
      const p = pki.paths;
      // node itself, not the tsx wrapper: the signals, and the SIGKILL of a failed run, reach the service.
      const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(repoRoot, 'internal-network', 'distributor', 'main.ts')], {
        cwd: tmp.dir,
        env: {
          PATH: process.env.PATH,
          FIELDSTREAM_ENV_FILE: '/dev/null',
          LOG_LEVEL: 'info',
          ...serviceMqttSettings(p, 'internal/distributor', await url()),
          DISTRIBUTOR_DEVICE_KEYS_DIR: join(pki.dir, 'internal', 'device-keys'),
          DISTRIBUTOR_REVOKED_DEVICES_FILE: join(pki.dir, 'internal', 'revoked-devices.txt'),
          DISTRIBUTOR_STORED_FEED_KEY_FILE: join(pki.dir, 'internal', 'stored-feed.key'),
          DISTRIBUTOR_METRICS_PORT: 'off',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      try {
        // Started: its signal handlers are in place once it says it is writing.
        const started = Date.now();
        while (!out.includes('distributor writing')) {
          assert.equal(child.exitCode, null, `exited before it started: ${err}`);
          assert.ok(Date.now() - started < 30_000, `not started in 30 s: ${out.slice(-2000)} ${err}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        // Past the time a Ctrl-C's copies take to arrive, so this signal is the first, not a copy.
        await new Promise((r) => setTimeout(r, TIMINGS.stopSignalCopyMs));
        const stopAt = Date.now();
        child.kill('SIGTERM');
        const bound = TIMINGS.closeGraceMs * 3 + 5_000;
        const result = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), bound))]);
        assert.notEqual(result, 'hung', `still running ${bound} ms after SIGTERM`);
        assert.deepEqual(result, [0, null], err);
        assert.match(err, /distributor: SIGTERM, stopping/);
        assert.ok(Date.now() - stopAt < bound);
      } finally {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
        tmp.cleanup();
      }
    });
  }
});
