import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { startInStages } from '../../scripts/local-stack/machine.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LogCapture } from '../helpers/embedded.ts';
import { tempDir } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';

/** A program of `npm run stack` (Caddy, Mosquitto) that is not there, at its start or at a restart. */
describe('the local stack supervisor and a program it cannot run', () => {
  const work = tempDir('stack-process');
  const procs: ManagedProcess[] = [];
  after(async () => {
    for (const p of procs) await p.kill();
    work.cleanup();
  });
  const managed = (name: string, command: string, supervisor?: LogCapture) => {
    const proc = new ManagedProcess({
      name,
      command,
      args: [],
      env: { PATH: process.env.PATH },
      cwd: work.dir,
      logFile: join(work.dir, `${name}.log`),
      ready: { logLine: /ready/ },
      ...(supervisor ? { supervisor: supervisor.logger } : {}),
    });
    procs.push(proc);
    return proc;
  };

  it('a start refuses with SERVICE_START_FAILED naming the program, instead of an unhandled error event', async () => {
    const proc = managed('caddy', 'fieldstream-no-such-program');
    await assert.rejects(proc.start(), (err: unknown) => {
      assert.ok(isFieldStreamError(err, 'SERVICE_START_FAILED'), String(err));
      assert.match(err.message, /caddy cannot start: .*fieldstream-no-such-program.*ENOENT/);
      return true;
    });
    assert.equal(proc.running, false);
  });

  it('a program gone before a restart is tried again later, and the supervisor stays up', async () => {
    const program = join(work.dir, 'service.sh');
    writeFileSync(program, '#!/bin/sh\necho ready\nexec sleep 600\n');
    chmodSync(program, 0o755);
    const logs = new LogCapture();
    const proc = managed('gone', program, logs);
    await proc.start();
    rmSync(program);
    await proc.signal('SIGKILL');
    const retried = await eventually(() => logs.lines.find((l) => l.component === 'gone' && /did not come back/.test(String(l.msg))), 10_000, 'a failed restart logged');
    assert.match(String(retried.err), /ENOENT/);
    assert.equal(proc.running, false);
  });
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The supervisor itself killed with SIGKILL (the OOM killer, kill -9): no exit handler of its runs. */
describe('the local stack supervisor killed with SIGKILL', () => {
  const work = tempDir('stack-orphans');
  let orphan: number | undefined;
  after(() => {
    if (orphan !== undefined && alive(orphan)) process.kill(orphan, 'SIGKILL');
    work.cleanup();
  });

  it('takes the processes it started with it, leaving none holding the ports of the next start', async () => {
    const script = `
      import { ManagedProcess } from ${JSON.stringify(join(import.meta.dirname, '..', '..', 'scripts', 'local-stack', 'process.ts'))};
      const proc = new ManagedProcess({ name: 'component', command: 'sh', args: ['-c', 'echo ready; exec sleep 600'], env: { PATH: process.env.PATH },
        cwd: ${JSON.stringify(work.dir)}, logFile: ${JSON.stringify(join(work.dir, 'component.log'))}, ready: { logLine: /ready/ } });
      await proc.start();
      process.stdout.write(String(proc.pid) + '\\n');
      setInterval(() => {}, 1000);
    `;
    const supervisor = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve, reject) => {
      supervisor.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
      supervisor.once('exit', (code) => reject(new Error(`the supervisor exited (${code})`)));
    });
    orphan = pid;
    assert.ok(alive(pid), 'the component runs');
    supervisor.kill('SIGKILL');
    await eventually(() => (alive(pid) ? undefined : true), 5000, `the component (pid ${pid}) to end with its supervisor`);
  });
});

/** Caddy listens on its HTTP port besides its HTTPS one (readiness), each service on its metrics port too. */
describe('the local stack and a port other than the readiness one that another program holds', () => {
  const work = tempDir('stack-ports');
  after(() => work.cleanup());

  it('refuses with LISTEN_FAILED naming that port before anything of the stack starts', async () => {
    const held = createServer();
    await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve));
    const heldPort = (held.address() as { port: number }).port;
    const started = (name: string) => join(work.dir, `${name}.started`);
    const proc = (name: string, ports: number[]) =>
      new ManagedProcess({
        name,
        command: 'sh',
        args: ['-c', `touch ${started(name)}; echo ready; exec sleep 600`],
        env: { PATH: process.env.PATH },
        cwd: work.dir,
        logFile: join(work.dir, `${name}.log`),
        ready: { logLine: /ready/ },
        alsoListens: ports.map((port) => ({ port })),
      });
    const broker = proc('broker', [await freePort()]);
    const caddy = proc('caddy', [await freePort(), heldPort]);
    try {
      await assert.rejects(startInStages([[broker], [caddy]]), (err: unknown) => {
        assert.ok(isFieldStreamError(err, 'LISTEN_FAILED'), String(err));
        assert.equal(err.details?.port, heldPort);
        assert.match(err.message, new RegExp(`caddy cannot start: 127\\.0\\.0\\.1:${heldPort} is already in use`));
        return true;
      });
      assert.equal(existsSync(started('caddy')), false, 'caddy was not started');
      assert.equal(existsSync(started('broker')), false, 'nor anything before it');
    } finally {
      await broker.kill();
      await caddy.kill();
      held.close();
    }
  });
});

/** A component that has logged for long: its log past what one read of a whole file takes (2 GiB). */
describe('the local stack and a log file of more than 2 GiB', () => {
  const work = tempDir('stack-big-log');
  after(() => work.cleanup());

  it('a process ready by a line of its log is still found ready, and its tail read', async () => {
    const logFile = join(work.dir, 'gateway.log');
    writeFileSync(logFile, '');
    truncateSync(logFile, 2 ** 31 + 4096); // sparse: no disk space taken
    const proc = new ManagedProcess({
      name: 'gateway',
      command: 'sh',
      args: ['-c', 'echo "gateway listening"; exec sleep 600'],
      env: { PATH: process.env.PATH },
      cwd: work.dir,
      logFile,
      ready: { logLine: /gateway listening/ },
    });
    try {
      await proc.start(5000);
      assert.match(proc.tail(2), /gateway listening/);
      assert.match(proc.logSinceStart(), /^gateway listening\n$/);
    } finally {
      await proc.kill();
    }
  });
});

/** A process that dies the moment it is ready: while its readiness was being checked, its exit was ignored. */
describe('the local stack and a process that exits as it becomes ready', () => {
  const work = tempDir('stack-ready-exit');
  const procs: ManagedProcess[] = [];
  after(async () => {
    for (const p of procs) await p.kill();
    work.cleanup();
  });
  const managed = (name: string, script: string, supervisor?: LogCapture) => {
    const proc = new ManagedProcess({
      name,
      command: 'sh',
      args: ['-c', script],
      env: { PATH: process.env.PATH },
      cwd: work.dir,
      logFile: join(work.dir, `${name}.log`),
      ready: { logLine: /ready/ },
      ...(supervisor ? { supervisor: supervisor.logger } : {}),
    });
    procs.push(proc);
    return proc;
  };

  it('a start fails, instead of counting a dead process as started', async () => {
    // Its line and its exit both come while the start waits between two looks at its log.
    const proc = managed('distributor', 'sleep 0.15; echo ready; exit 3');
    await assert.rejects(proc.start(), /distributor did not start: .*exited/);
    assert.equal(proc.running, false);
  });

  it('a supervised restart whose process dies as it becomes ready is seen, and tried again', async () => {
    const marker = join(work.dir, 'started-once');
    // The first run stays up; every later one dies as it says it is ready.
    const logs = new LogCapture();
    const proc = managed('gateway', `if [ -e ${marker} ]; then sleep 0.15; echo ready; exit 3; fi; touch ${marker}; echo ready; exec sleep 600`, logs);
    await proc.start();
    await proc.signal('SIGKILL');
    // Each death is seen, and followed by another try: the SIGKILL, then at least two restarts that died.
    const deaths = () => logs.lines.filter((l) => l.component === 'gateway' && /exited unexpectedly|did not come back/.test(String(l.msg)));
    await eventually(() => (deaths().length >= 3 ? true : undefined), 15_000, 'the restarts that died seen and tried again');
  });
});

/** The stack closing while a component starts (a restart under way): its start gives up before it spawns. */
describe('the local stack and a start given up as the stack closes', () => {
  const work = tempDir('stack-start-stopped');
  after(() => work.cleanup());

  it('leaves no file open (the log it had opened for the process)', async () => {
    const proc = new ManagedProcess({
      name: 'gateway',
      command: 'sh',
      args: ['-c', 'exec sleep 600'],
      env: { PATH: process.env.PATH },
      cwd: work.dir,
      logFile: join(work.dir, 'gateway.log'),
      ready: { port: await freePort() },
    });
    const openFiles = () => readdirSync('/proc/self/fd').length;
    const before = openFiles();
    for (let i = 0; i < 50; i++) {
      const started = proc.start();
      await proc.stop(); // while start() still checks that its port is free
      await assert.rejects(started, /stopped while starting/);
    }
    assert.equal(proc.running, false);
    assert.ok(openFiles() - before < 10, `${openFiles() - before} more files open than before`);
  });
});
