import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { claimSocketPath, listenOnSocket } from '../../dmz/gateway/unix-socket.ts';
import { loadGatewayConfig } from '../../dmz/gateway/config.ts';
import { tempDir } from '../helpers/pki.ts';

describe('the gateway’s Unix socket for the hop from Caddy (EDGE_HOP=unix)', () => {
  const work = tempDir('unix-socket');
  after(() => work.cleanup());

  it('takes a free path as it is, in a folder of its user closed to others’ writes', async () => {
    chmodSync(work.dir, 0o700);
    assert.equal(await claimSocketPath(join(work.dir, 'none.sock')), 'free');
    chmodSync(work.dir, 0o770);
    await assert.rejects(claimSocketPath(join(work.dir, 'none.sock')), { code: 'LISTEN_FAILED', message: /Others may write to the socket's folder .* \(mode 770\)/ });
    chmodSync(work.dir, 0o700);
    await assert.rejects(claimSocketPath(join(work.dir, 'missing', 'x.sock')), { code: 'LISTEN_FAILED', message: /cannot use the socket's folder/ });
  });

  it('creates the socket 0600 whatever the process’s umask', async () => {
    const path = join(work.dir, 'mode.sock');
    const server = createHttpServer();
    const umask = process.umask(0);
    try {
      await new Promise<void>((resolve) => listenOnSocket(server, path, resolve));
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.equal(process.umask(), 0, 'the umask is back as it was');
    } finally {
      process.umask(umask);
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('removes the socket file a gateway killed with SIGKILL left behind', async () => {
    const path = join(work.dir, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok(lstatSync(path).isSocket(), 'SIGKILL leaves the file');
    assert.equal(await claimSocketPath(path), 'stale socket removed');
    assert.ok(!existsSync(path));
  });

  it('refuses a socket another process still listens on, and leaves it', async () => {
    const path = join(work.dir, 'live.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      await assert.rejects(claimSocketPath(path), { code: 'LISTEN_FAILED', message: /Another process listens/ });
      assert.ok(lstatSync(path).isSocket());
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('refuses to replace anything that is not a socket', async () => {
    const path = join(work.dir, 'file.sock');
    writeFileSync(path, 'keep me');
    await assert.rejects(claimSocketPath(path), { code: 'LISTEN_FAILED', message: /not a socket/ });
    assert.equal(readFileSync(path, 'utf8'), 'keep me');
    // Nor is a symbolic link followed to a socket elsewhere.
    const link = join(work.dir, 'link.sock');
    symlinkSync(join(work.dir, 'elsewhere.sock'), link);
    await assert.rejects(claimSocketPath(link), { code: 'LISTEN_FAILED', message: /not a socket/ });
  });

  it('is a setting of a gateway behind Caddy only, at an absolute path that fits a socket address', () => {
    assert.equal(loadGatewayConfig({ GATEWAY_IDENTITY_SOURCE: 'proxy', EDGE_HOP: 'unix' }).GATEWAY_SOCKET, '/run/fieldstream/gateway.sock');
    assert.equal(loadGatewayConfig({}).EDGE_HOP, 'mtls');
    assert.throws(() => loadGatewayConfig({ EDGE_HOP: 'unix' }), { code: 'CONFIG_INVALID', message: /EDGE_HOP: EDGE_HOP=unix is the hop from Caddy: it needs GATEWAY_IDENTITY_SOURCE=proxy/ });
    assert.throws(() => loadGatewayConfig({ GATEWAY_IDENTITY_SOURCE: 'proxy', EDGE_HOP: 'tcp' }), { code: 'CONFIG_INVALID', message: /EDGE_HOP/ });
    assert.equal(loadGatewayConfig({ GATEWAY_IDENTITY_SOURCE: 'proxy', GATEWAY_SOCKET: `/${'x'.repeat(106)}` }).GATEWAY_SOCKET.length, 107);
    for (const bad of ['run/gateway.sock', `/${'x'.repeat(107)}`, `/${'é'.repeat(54)}`]) {
      assert.throws(() => loadGatewayConfig({ GATEWAY_IDENTITY_SOURCE: 'proxy', EDGE_HOP: 'unix', GATEWAY_SOCKET: bad }), { code: 'CONFIG_INVALID', message: /GATEWAY_SOCKET/ });
    }
  });
});
