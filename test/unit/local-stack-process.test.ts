import assert from 'node:assert/strict';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ManagedProcess } from '../../scripts/local-stack/process.ts';
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
