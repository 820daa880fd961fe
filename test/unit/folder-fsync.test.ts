import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fullDiskSkip, moduleUrl, runOnSmallDisk } from '../helpers/full-disk.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * What is acknowledged must survive a power cut, and a new, renamed or removed name in a folder is
 * on disk only once that folder is fsync'ed (shared/durable-fs.ts). No test here can cut the power:
 * the calls are watched instead, with strace, in real processes: the distributor storing chunks,
 * setting a failed file's chunks aside and writing a dead letter; the field client's queue starting
 * new segments. Skipped where strace cannot run.
 */
const strace = spawnSync('strace', ['-o', '/dev/null', 'true']).status === 0;
const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);

/** The paths whose file descriptors `script` (an ES module) fsync'ed, run under strace. */
async function syncedBy(script: string, env: Record<string, string>, log: string, alsoTraced: readonly string[] = []): Promise<Set<string>> {
  // -y: each file descriptor printed with its path; -f: libuv's threads make the calls.
  const child = spawn('strace', ['-f', '-y', '-e', `trace=${['fsync', 'fdatasync', ...alsoTraced].join(',')}`, '-o', log, process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(code, 0);
  return new Set([...readFileSync(log, 'utf8').matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)].map((m) => m[1]!));
}

/** Runs `script` and SIGKILLs it at its first fsync of the folder `path` (strace -P injects the signal there). */
async function killedAtSyncOf(path: string, script: string, env: Record<string, string>): Promise<void> {
  const child = spawn('strace', ['-f', '-o', '/dev/null', '-P', path, '-e', 'trace=fsync,fdatasync', '-e', 'inject=fsync,fdatasync:signal=SIGKILL', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  // strace ends the way its tracee did: by the same signal.
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  assert.ok(signal === 'SIGKILL' || code === 128 + 9, `killed at the sync of ${path} (exit ${code}, signal ${signal}, output ${out})`);
}

describe('the folders of what is acknowledged are synced', { skip: !strace && 'strace is not available' }, () => {
  const tmp = tempDir('folder-fsync');
  after(() => tmp.cleanup());

  it('a redelivery after a kill before a folder sync syncs the folders its answer relies on: the name linked, the folders made', async () => {
    const root = join(tmp.dir, 'files-redelivered');
    const script = `
      import { FileStore } from ${url('../../internal-network/distributor/file-store.ts')};
      const store = new FileStore(process.env.ROOT);
      if (process.env.WHAT === 'file') await store.store('cam-1', { filename: 'a.bin', data: Buffer.from('a file').toString('base64') });
      else await store.storeChunk('cam-2', { filename: 'b.bin', data: Buffer.from('one').toString('base64'), transfer: { id: 't1', index: 0, count: 2, size: 6, sha256: 'a'.repeat(64) } });
      console.log('done');
    `;
    // Killed right after the link, at the sync of its folder: the name is there, its entry maybe not on disk.
    await killedAtSyncOf(join(root, 'cam-1'), script, { ROOT: root, WHAT: 'file' });
    assert.equal(readFileSync(join(root, 'cam-1', 'a.bin'), 'utf8'), 'a file');
    // Killed at the sync of the new transfer folder's parent: the folder is there, its entry maybe not on disk.
    await killedAtSyncOf(join(root, '.partial', 'cam-2'), script, { ROOT: root, WHAT: 'chunk' });
    // The broker delivers both again, to a new process: it answers "stored" (receipted) only once
    // those entries are synced.
    const file = await syncedBy(script, { ROOT: root, WHAT: 'file' }, join(tmp.dir, 'redelivered-file.strace'));
    for (const dir of [join(root, 'cam-1'), root]) assert.ok(file.has(dir), `${dir} synced (synced: ${[...file].join(', ')})`);
    const chunk = await syncedBy(script, { ROOT: root, WHAT: 'chunk' }, join(tmp.dir, 'redelivered-chunk.strace'));
    for (const dir of [join(root, '.partial', 'cam-2', 't1'), join(root, '.partial', 'cam-2'), join(root, '.partial'), root]) {
      assert.ok(chunk.has(dir), `${dir} synced (synced: ${[...chunk].join(', ')})`);
    }
  });

  it('syncs chunk folders, their new parents, the done marker, the set-aside chunks and a new dead-letter file', async () => {
    const root = join(tmp.dir, 'files');
    const letters = join(tmp.dir, 'dead-letter');
    const script = `
      import { createHash } from 'node:crypto';
      import { FileStore } from ${url('../../internal-network/distributor/file-store.ts')};
      import { DeadLetters } from ${url('../../internal-network/distributor/dead-letter.ts')};
      import { FieldStreamError } from ${url('../../shared/errors.ts')};
      const store = new FileStore(process.env.ROOT);
      const file = Buffer.from('two chunks of a file');
      const transfer = (id, index, sha256) => ({ id, index, count: 2, size: file.length, sha256 });
      const chunk = (id, index, sha256 = createHash('sha256').update(file).digest('hex')) =>
        ({ filename: 'a.bin', data: file.subarray(index * 10, index * 10 + 10).toString('base64'), transfer: transfer(id, index, sha256) });
      await store.storeChunk('cam-1', chunk('t1', 0));
      if (!(await store.storeChunk('cam-1', chunk('t1', 1)))) throw new Error('not stored');
      await store.storeChunk('cam-2', chunk('bad', 0, 'a'.repeat(64)));
      await store.storeChunk('cam-2', chunk('bad', 1, 'a'.repeat(64))).then(() => { throw new Error('stored'); }, (e) => { if (e.code !== 'DISTRIBUTOR_FILE_CHECKSUM') throw e; });
      await new DeadLetters(process.env.LETTERS).put('t', Buffer.from('x'), new FieldStreamError('DISTRIBUTOR_WRITE_REJECTED'));
    `;
    const synced = await syncedBy(script, { ROOT: root, LETTERS: letters }, join(tmp.dir, 'distributor.strace'));
    const expect = (path: string, why: string) => assert.ok(synced.has(path), `${path} synced: ${why} (synced: ${[...synced].join(', ')})`);
    expect(join(root, '.partial', 'cam-1', 't1'), 'a chunk renamed into it');
    expect(join(root, '.partial', 'cam-1'), 'the transfer folder made in it, then the done marker');
    expect(join(root, '.partial'), "the device's chunk folder made in it");
    expect(root, 'the chunk folders made in it');
    assert.ok([...synced].some((p) => p.startsWith(join(root, '.partial', 'cam-1', 't1.done.json'))), 'the done marker written with fsync');
    expect(join(root, '.failed', 'cam-2'), 'the chunks of a failed file moved into it');
    expect(join(root, '.failed'), "the device's folder of set-aside chunks made in it");
    expect(join(root, '.partial', 'cam-2'), 'the chunks of a failed file moved out of it');
    expect(letters, "a new day's dead-letter file made in it");
  });

  it("syncs the field client's queue folder when a segment file is made", async () => {
    const dir = join(tmp.dir, 'queue');
    const script = `
      import { DurableQueue } from ${url('../../field-client/src/queue/durable-queue.ts')};
      import { createLogger } from ${url('../../shared/logger.ts')};
      const q = await DurableQueue.open({ dir: process.env.QUEUE, maxBytes: 1 << 30, segmentBytes: 512, fullPolicy: 'reject', sync: { mode: 'always' }, log: createLogger('t', 'silent') });
      for (let i = 0; i < 20; i++) await q.append([{ dataType: 'timeseries', payload: { v: i, timestamp: 1700000000000 + i } }]);
      await q.close();
    `;
    const log = join(tmp.dir, 'queue.strace');
    const synced = await syncedBy(script, { QUEUE: dir }, log);
    assert.ok(synced.has(dir), `the queue folder synced (synced: ${[...synced].join(', ')})`);
    // Once per new segment: as many folder syncs as segments made (their files, each synced itself).
    const segments = [...synced].filter((p) => p.startsWith(join(dir, 'seg-'))).length;
    const folderSyncs = [...readFileSync(log, 'utf8').matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)].filter((m) => m[1] === dir).length;
    assert.ok(segments > 2, `the segments rotated (${segments})`);
    assert.ok(folderSyncs >= segments, `${folderSyncs} folder syncs for ${segments} segments`);
  });

  it("syncs the parent of each folder the field client's data and the distributor's replay windows make, up to the first that was there", async () => {
    const data = join(tmp.dir, 'made', 'field', 'data');
    const state = join(tmp.dir, 'made', 'internal', 'state');
    const script = `
      import { join } from 'node:path';
      import { DurableQueue } from ${url('../../field-client/src/queue/durable-queue.ts')};
      import { ReplayWindows } from ${url('../../internal-network/distributor/security/replay-window.ts')};
      import { createLogger } from ${url('../../shared/logger.ts')};
      const q = await DurableQueue.open({ dir: join(process.env.DATA, 'queue'), maxBytes: 1 << 30, segmentBytes: 512, fullPolicy: 'reject', sync: { mode: 'always' }, log: createLogger('t', 'silent') });
      await q.append([{ dataType: 'timeseries', payload: { v: 1, timestamp: 1700000000000 } }]);
      await q.close();
      new ReplayWindows(join(process.env.STATE, 'replay'));
    `;
    const synced = await syncedBy(script, { DATA: data, STATE: state }, join(tmp.dir, 'made.strace'));
    // A segment synced in a folder whose own entry is not on disk is lost with it at a power cut.
    for (const dir of [data, join(tmp.dir, 'made', 'field'), join(tmp.dir, 'made'), tmp.dir, state, join(tmp.dir, 'made', 'internal')]) {
      assert.ok(synced.has(dir), `${dir} synced (synced: ${[...synced].join(', ')})`);
    }
    // Found on the next start, made by a process maybe killed before it synced: the parent again.
    const again = await syncedBy(script, { DATA: data, STATE: state }, join(tmp.dir, 'made-again.strace'));
    for (const dir of [data, state]) assert.ok(again.has(dir), `${dir} synced again (synced: ${[...again].join(', ')})`);
  });

  it('syncs the folders a backup makes for its archive before it reports the archive written', async () => {
    // An archive synced in a folder whose own entry is not on disk is lost with it at a power cut,
    // though the backup printed its sha256 and exited 0.
    const state = join(tmp.dir, 'backup-state');
    const out = join(tmp.dir, 'archives', '2026', 'backup.tar.gz');
    const script = `
      import { mkdirSync, writeFileSync } from 'node:fs';
      import { join } from 'node:path';
      import { createBackup } from ${url('../../scripts/admin/backup.ts')};
      mkdirSync(process.env.STATE, { recursive: true });
      writeFileSync(join(process.env.STATE, 'gateways.txt'), 'gw-1\\n');
      await createBackup({ certsDir: join(process.env.STATE, 'no-certs'), stateDir: process.env.STATE, commandState: join(process.env.STATE, 'none.jsonl') }, process.env.OUT);
    `;
    const synced = await syncedBy(script, { STATE: state, OUT: out }, join(tmp.dir, 'backup.strace'));
    for (const dir of [join(tmp.dir, 'archives', '2026'), join(tmp.dir, 'archives'), tmp.dir]) {
      assert.ok(synced.has(dir), `${dir} synced (synced: ${[...synced].join(', ')})`);
    }
  });

  it("syncs the distributor's admitted gateway ids and event tag values, and their new files' folder, before anything is stored under them", async () => {
    const dir = join(tmp.dir, 'admissions');
    const script = `
      import { mkdirSync } from 'node:fs';
      import { join } from 'node:path';
      import { GatewayAdmission } from ${url('../../internal-network/distributor/security/gateway-admission.ts')};
      import { TagAdmission } from ${url('../../internal-network/distributor/security/tag-admission.ts')};
      import { createLogger } from ${url('../../shared/logger.ts')};
      const log = createLogger('t', 'silent');
      mkdirSync(process.env.DIR, { recursive: true });
      new GatewayAdmission({ listed: [], max: 10, file: join(process.env.DIR, 'gateways.txt') }, log).admits('gw-1');
      new TagAdmission({ tag: 'event_type', perDevice: 10, total: 10, file: join(process.env.DIR, 'event-types.jsonl') }, log).admits('pump-1', 'alarm');
    `;
    const synced = await syncedBy(script, { DIR: dir }, join(tmp.dir, 'admissions.strace'));
    for (const p of [join(dir, 'gateways.txt'), join(dir, 'event-types.jsonl'), dir]) assert.ok(synced.has(p), `${p} synced (synced: ${[...synced].join(', ')})`);
  });

  it("syncs the certificates, keys and signing keys onboarding writes, and their folders", async () => {
    const root = join(tmp.dir, 'pki');
    const script = `
      import { setupPki } from ${url('../../pki/onboarding.ts')};
      import { buildDeviceBundle, issueDeviceCertificate } from ${url('../../pki/device-bundle.ts')};
      setupPki(process.env.ROOT, { domain: 'fieldstream.test' });
      issueDeviceCertificate(process.env.ROOT, 'sensor-1');
      buildDeviceBundle(process.env.ROOT, 'sensor-1', process.env.COMPOSE);
    `;
    const compose = new URL('../../field-client/docker-compose.yml', import.meta.url).pathname;
    const synced = await syncedBy(script, { ROOT: root, COMPOSE: compose }, join(tmp.dir, 'pki.strace'));
    // Each file is synced under its name aside (NAME.tmp-PID), before it is renamed into place: a
    // device's bundle too (it holds its keys: never readable by others, never left half written).
    const fileSynced = (path: string) => [...synced].some((p) => p.startsWith(`${path}.tmp-`));
    const device = join(root, 'devices', 'sensor-1');
    for (const f of [join(root, 'ca.crt'), join(device, 'client.crt'), join(device, 'client.key'), join(device, 'signing.key'), join(root, 'bundles', 'sensor-1.tar.gz')]) {
      assert.ok(fileSynced(f), `${f} synced (synced: ${[...synced].join(', ')})`);
    }
    assert.ok(synced.has(device), `the device's folder synced (synced: ${[...synced].join(', ')})`);
    // The folders made hold them: each one's entry in its parent synced too.
    for (const dir of [join(root, 'devices'), tmp.dir]) assert.ok(synced.has(dir), `${dir} synced (synced: ${[...synced].join(', ')})`);
  });
  it("syncs the parent of each folder a device token's issue makes: the DMZ tokens file is not lost with its folder", async () => {
    // A revocation or a token is reported once dmz/tokens/device-tokens.json is synced; made by a
    // plain mkdir, dmz/tokens/ (and dmz/) could be lost at a power cut, and the file with them.
    const root = join(tmp.dir, 'tokens-certs');
    const script = `
      import { issueDeviceToken } from ${url('../../pki/device-tokens.ts')};
      await issueDeviceToken(process.env.ROOT, 'tok-1');
    `;
    const log = join(tmp.dir, 'tokens.strace');
    await syncedBy(script, { ROOT: root }, log, ['mkdir', 'mkdirat']);
    const text = readFileSync(log, 'utf8');
    const syncs = (from: number) => new Set([...text.slice(from).matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)].map((m) => m[1]!));
    for (const [made, parent] of [[join(root, 'dmz'), root], [join(root, 'dmz', 'tokens'), join(root, 'dmz')], [join(root, 'devices'), root]] as const) {
      const at = text.indexOf(`mkdir("${made}"`);
      assert.ok(at >= 0, `${made} made (${text})`);
      assert.ok(syncs(at).has(parent), `${parent} synced after ${made} was made (synced: ${[...syncs(at)].join(', ')})`);
    }
  });
  it("syncs the distributor's list of earlier consumer sessions before it retires them, and its folder", async () => {
    // Recorded first so that a crash while retiring leaves them to be tried again: a list lost with
    // the power (written without fsync) forgot sessions that keep collecting their share of messages.
    const dir = join(tmp.dir, 'distributor-state');
    const file = join(dir, 'consumer-sessions.json');
    const script = `
      import { retireConsumerSessions } from ${url('../../internal-network/distributor/session-retirement.ts')};
      import { createLogger } from ${url('../../shared/logger.ts')};
      await retireConsumerSessions({
        stateFile: process.env.FILE, current: ['dist'], base: 'dist', maxConsumers: 1, filters: [],
        connect: () => { throw new Error('no session to retire'); }, consume: () => { throw new Error('no session to retire'); },
        signal: new AbortController().signal, log: createLogger('t', 'silent'),
      });
    `;
    const synced = await syncedBy(script, { FILE: file }, join(tmp.dir, 'sessions.strace'));
    assert.equal(readFileSync(file, 'utf8'), '{"clientIds":["dist"]}\n');
    assert.ok([...synced].some((p) => p.startsWith(`${file}.tmp`)), `the list synced before its rename (synced: ${[...synced].join(', ')})`);
    assert.ok(synced.has(dir), `its folder synced (synced: ${[...synced].join(', ')})`);
  });
  it("syncs the folder of a refused messages' file made again after the operator moved it away, before the messages are let go", async () => {
    // docs/field-client.md has the operator move rejected.jsonl off the device: the next refusal makes
    // the file again, and its name must be on disk before the queue lets the messages go.
    const dir = join(tmp.dir, 'field-data');
    const script = `
      import { mkdirSync, renameSync } from 'node:fs';
      import { RejectedMessages } from ${url('../../field-client/src/rejected.ts')};
      mkdirSync(process.env.DIR, { recursive: true });
      const rejected = new RejectedMessages(process.env.DIR);
      rejected.write('{"refused":1}\\n');
      renameSync(rejected.path, rejected.path + '.moved-off');
      rejected.write('{"refused":2}\\n');
    `;
    const log = join(tmp.dir, 'rejected.strace');
    await syncedBy(script, { DIR: dir }, log);
    assert.equal(readFileSync(join(dir, 'rejected.jsonl'), 'utf8'), '{"refused":2}\n');
    const folderSyncs = [...readFileSync(log, 'utf8').matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)].filter((m) => m[1] === dir).length;
    assert.equal(folderSyncs, 2, 'the folder synced for each file made');
  });
  it("syncs the folders of a refused file set aside (moved into rejected/) before its queue record is let go", async () => {
    const data = join(tmp.dir, 'field-data-files');
    const script = `
      import { mkdirSync, writeFileSync } from 'node:fs';
      import { join } from 'node:path';
      import { FileOutbox } from ${url('../../field-client/src/files/file-outbox.ts')};
      mkdirSync(process.env.DATA, { recursive: true });
      writeFileSync(join(process.env.DATA, 'photo.jpg'), 'a photo');
      const outbox = new FileOutbox(process.env.DATA, 1024);
      const rec = await outbox.accept(join(process.env.DATA, 'photo.jpg'), {});
      outbox.accepted(rec.transferId);
      console.error('set aside: ' + outbox.setAside(rec));
    `;
    const log = join(tmp.dir, 'set-aside.strace');
    await syncedBy(script, { DATA: data }, log, ['rename', 'renameat', 'renameat2', 'mkdir', 'mkdirat']);
    // Those after the move: the new name, the name gone from the outbox; the new folder's own entry
    // (its parent synced) from its mkdir on, before setAside returns.
    const text = readFileSync(log, 'utf8');
    const moved = text.search(/rename(?:at2?)?\([^\n]*outgoing[^\n]*rejected/);
    assert.ok(moved >= 0, 'moved by a rename');
    const syncs = (from: number) => new Set([...text.slice(from).matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>/g)].map((m) => m[1]!));
    const after = syncs(moved);
    for (const dir of [join(data, 'rejected'), join(data, 'outgoing')]) assert.ok(after.has(dir), `${dir} synced after the move (synced: ${[...after].join(', ')})`);
    const made = text.search(/mkdir(?:at)?\([^\n]*rejected"/);
    assert.ok(made >= 0, 'rejected/ made');
    assert.ok(syncs(made).has(data), `${data} synced after rejected/ was made (synced: ${[...syncs(made)].join(', ')})`);
  });
  it("takes back the lines of a new file whose folder the disk fails to sync: the caller, told they were not appended, never finds them", async () => {
    // The command API's journal (store.ts add()): commands refused with API_STATE_WRITE_FAILED
    // ("nothing was sent") were read back as queued at its next start, and sent.
    const file = join(tmp.dir, 'journal.jsonl');
    const script = `
      import { statSync } from 'node:fs';
      import { appendLinesSync } from ${url('../../shared/line-file.ts')};
      try {
        appendLinesSync(process.env.FILE, 'a command\\n', 0o600, new Set());
        console.log('appended');
      } catch (err) {
        console.log('refused ' + err.code + ', ' + statSync(process.env.FILE).size + ' bytes');
      }
    `;
    // The second fsync of the process is the folder's (the first, the file's): it fails.
    const child = spawnSync('strace', ['-f', '-o', '/dev/null', '-e', 'trace=fsync', '-e', 'inject=fsync:error=EIO:when=2', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, FILE: file },
      encoding: 'utf8',
    });
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'refused EIO, 0 bytes');
  });
});

/**
 * A folder that cannot be made is reported with the system's own answer. mkdirSync's recursive
 * mode looks the path up again after mkdir(2) refused it and throws what that says: a read-only
 * disk came out as ENOENT, "no such file or directory", and under /proc it tried for ever.
 */
describe('a folder that cannot be made', () => {
  const work = tempDir('make-dir');
  after(() => work.cleanup());
  const attempt = (path: string) =>
    `import { makeDirDurablySync } from ${moduleUrl('shared/durable-fs.ts')};
     try { makeDirDurablySync(${path}); console.log('made'); } catch (err) { console.log(err.code, err.message); }`;

  it('on a read-only disk: EROFS, naming the first folder to be made', { skip: fullDiskSkip }, () => {
    const mnt = join(work.dir, 'ro');
    mkdirSync(mnt);
    const r = runOnSmallDisk(mnt, attempt('process.env.MNT + "/timeseries/2026"'), 64, { readOnly: true });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^EROFS .*mkdir '[^']*\/ro\/timeseries'/, r.stdout);
  });

  it('where mkdir says ENOENT under a folder that exists (/proc): that, at once', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', attempt('"/proc/fieldstream-no-such/x"')], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.signal, null, 'it did not end by itself');
    assert.match(r.stdout, /^ENOENT .*mkdir '\/proc\/fieldstream-no-such'/, r.stdout + r.stderr);
  });

  it('a folder already there, or made a level at a time with its parents', () => {
    const deep = join(work.dir, 'a', 'b', 'c');
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `${attempt(JSON.stringify(deep))}\n${attempt(JSON.stringify(deep)).split('\n')[1]}`], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(r.stdout, 'made\nmade\n', r.stderr);
    assert.ok(statSync(deep).isDirectory());
  });
});
