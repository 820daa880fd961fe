import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import { gzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import * as tar from 'tar';
import { makeTestPki, tempDir } from '../helpers/pki.ts';
import { REPO_ROOT } from '../helpers/stack.ts';
import { ReplayWindows } from '../../internal-network/distributor/security/replay-window.ts';
import { isRevoked } from '../../pki/onboarding.ts';
import { issueDeviceCertificate } from '../../pki/device-bundle.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { createBackup } from '../../scripts/admin/backup.ts';
import { ManifestSchema, type Manifest } from '../../scripts/admin/backup-manifest.ts';
import { resolveAdminPaths, type AdminPaths } from '../../scripts/admin/paths.ts';
import { restoreBackup } from '../../scripts/admin/restore.ts';
import { EXIT, runAdmin } from '../../scripts/admin/run.ts';
import { refusedWith } from '../helpers/coded.ts';

/**
 * Backup and restore of the state the internal server cannot lose: what an archive holds (its
 * manifest, each file's sha256, mode 0600), a restore onto a clean installation (the same bytes and
 * modes, replay windows that still refuse), and every refusal, each before anything is written:
 * other state in the way, a file that differs from the manifest, a path out of its folder, a link,
 * something that is no backup.
 */
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A gzip tar written byte by byte, to say exactly what a hostile or damaged archive holds. */
function rawTarGz(entries: Array<{ path: string; data?: Buffer | string; type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link'; linkpath?: string; mode?: number }>): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? '');
    const header = Buffer.alloc(512);
    new tar.Header({ path: e.path, mode: e.mode ?? 0o600, size: data.length, type: e.type ?? 'File', uid: 0, gid: 0, mtime: new Date(0), ...(e.linkpath ? { linkpath: e.linkpath } : {}) }).encode(header, 0);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}

/** Every entry of an archive: name, type, mode and content. */
async function entriesOf(archive: string): Promise<Array<{ path: string; type: string; mode: number; data: Buffer }>> {
  const out: Array<{ path: string; type: string; mode: number; data: Buffer }> = [];
  await tar.t({
    file: archive,
    onReadEntry: (e) => {
      const chunks: Buffer[] = [];
      e.on('data', (c: Buffer) => chunks.push(c));
      e.on('end', () => out.push({ path: e.path, type: e.type, mode: e.mode ?? 0, data: Buffer.concat(chunks) }));
    },
  });
  return out;
}

/** Regular files below a folder, relative, sorted. */
function filesBelow(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesBelow(join(dir, e.name), `${prefix}${e.name}/`) : e.isFile() ? [`${prefix}${e.name}`] : []))
    .sort();
}


describe('backup and restore', () => {
  const pki = makeTestPki(['dev-a', 'dev-b']);
  const work = tempDir('backup');
  const source: AdminPaths = { certsDir: pki.dir, stateDir: join(work.dir, 'state'), commandState: join(work.dir, 'commands.jsonl') };
  const archive = join(work.dir, 'out', 'backup.tar.gz');
  /** A clean installation to restore onto, one per test. */
  let n = 0;
  const cleanTarget = (): AdminPaths => {
    const dir = join(work.dir, `target-${++n}`);
    return { certsDir: join(dir, 'certs'), stateDir: join(dir, 'data', 'distributor-state'), commandState: join(dir, 'data', 'commands.jsonl') };
  };
  let manifest: Manifest;

  before(async () => {
    revokeDevice(pki.dir, 'dev-b');
    // a device with a token instead of a certificate
    const added = await runAdmin(['devices', 'add', 'tok-1', '--token'], { out: () => undefined, err: () => undefined, env: { CERTS_DIR: pki.dir }, cwd: REPO_ROOT });
    assert.equal(added, EXIT.ok);
    // things a backup leaves out
    mkdirSync(join(pki.dir, 'bundles'), { recursive: true });
    writeFileSync(join(pki.dir, 'bundles', 'dev-a.tar.gz'), 'a bundle');
    writeFileSync(join(pki.dir, 'notes.txt'), 'not state');
    // the distributor's replay windows, written by the distributor's own code
    const windows = new ReplayWindows(join(source.stateDir, 'replay'));
    for (let seq = 1; seq <= 40; seq++) windows.record('dev-a', 'epoch-1', seq);
    windows.record('dev-a', 'epoch-2', 7);
    windows.persist();
    writeFileSync(source.commandState, '{"commandId":"c-1","deviceId":"dev-a","command":"ping"}\n', { mode: 0o640 });
    ({ manifest } = await createBackup(source, archive));
  });
  after(() => {
    pki.cleanup();
    work.cleanup();
  });

  it('writes one archive, mode 0600, with a manifest: version, created, what is inside, the sha256 and mode of each file', async () => {
    assert.equal(statSync(archive).mode & 0o777, 0o600);
    const entries = await entriesOf(archive);
    assert.equal(entries[0]?.path, 'manifest.json', 'the manifest comes first');
    const m = ManifestSchema.parse(JSON.parse((entries[0] as { data: Buffer }).data.toString('utf8')));
    assert.deepEqual(m, manifest);
    assert.equal(m.version, 1);
    assert.ok(Math.abs(Date.parse(m.created) - Date.now()) < 60_000);
    assert.deepEqual(m.contents, { ca: 7, revocations: 3, 'device-keys': 2, 'device-tokens': 1, 'stored-feed-key': 1, devices: 8, 'service-certificates': 25 /* 11 certificates and keys, the DMZ broker's anchor in dmz/ and internal/, and the gateway's in dmz/ */, 'replay-windows': 2, 'command-journal': 1 });
    for (const f of m.files) {
      const src = f.root === 'command-state' ? source.commandState : join(f.root === 'certs' ? source.certsDir : source.stateDir, f.path);
      const bytes = readFileSync(src);
      assert.equal(f.sha256, sha(bytes), f.path);
      assert.equal(f.size, bytes.length, f.path);
      assert.equal(f.mode, statSync(src).mode & 0o777, f.path);
      const entry = entries.find((e) => e.path === `files/${f.root}/${f.path}`);
      assert.ok(entry, f.path);
      assert.ok(entry.data.equals(bytes), f.path);
    }
    const paths = m.files.map((f) => `${f.root}/${f.path}`);
    for (const p of ['certs/ca/ca.key', 'certs/ca/issued.jsonl', 'certs/ca/revoked.jsonl', 'certs/ca.crl', 'certs/dmz/revocation/revoked-serials.txt', 'certs/internal/revoked-devices.txt', 'certs/internal/device-keys/dev-a.key', 'certs/devices/dev-b/signing.key', 'certs/internal/distributor.key', 'certs/dmz/tokens/device-tokens.json', 'certs/devices/tok-1/device.token', 'command-state/commands.jsonl']) {
      assert.ok(paths.includes(p), p);
    }
    assert.ok(paths.includes('distributor-state/replay/windows-1.snap') && paths.includes('distributor-state/replay/windows-1.log'), 'the snapshot and its journal');
    assert.ok(!paths.some((p) => p.includes('bundles') || p.includes('notes.txt')));
    assert.equal(m.files.find((f) => f.path === 'ca/ca.key')?.mode, 0o600);
    // The stored feed's key, a kind of its own: a rebuilt internal server's console must take its distributors' feed.
    assert.deepEqual(m.files.filter((f) => f.kind === 'stored-feed-key').map((f) => [f.path, f.mode]), [['internal/stored-feed.key', 0o600]]);
  });

  it('restores onto a clean installation: the same bytes and modes, private folders, working CA, replay windows that still refuse', async () => {
    const target = cleanTarget();
    const r = await restoreBackup(target, archive);
    assert.equal(r.written.length, manifest.files.length);
    for (const f of manifest.files) {
      const from = f.root === 'command-state' ? source.commandState : join(f.root === 'certs' ? source.certsDir : source.stateDir, f.path);
      const to = f.root === 'command-state' ? target.commandState : join(f.root === 'certs' ? target.certsDir : target.stateDir, f.path);
      assert.ok(readFileSync(to).equals(readFileSync(from)), f.path);
      assert.equal(statSync(to).mode & 0o777, statSync(from).mode & 0o777, f.path);
    }
    assert.equal(statSync(join(target.certsDir, 'ca', 'ca.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(target.certsDir, 'internal', 'device-keys', 'dev-a.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(target.certsDir, 'internal', 'stored-feed.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(target.certsDir, 'ca')).mode & 0o777, 0o700);
    assert.equal(statSync(join(target.certsDir, 'internal', 'device-keys')).mode & 0o777, 0o700);
    assert.equal(statSync(target.commandState).mode & 0o777, 0o640);
    const windows = new ReplayWindows(join(target.stateDir, 'replay'));
    assert.equal(windows.check('dev-a', 'epoch-1', 40), 'seen');
    assert.equal(windows.check('dev-a', 'epoch-1', 1), 'seen');
    assert.equal(windows.check('dev-a', 'epoch-2', 7), 'seen');
    assert.equal(windows.check('dev-a', 'epoch-1', 41), 'new');
    // the restored CA issues, remembers what it revoked, and can revoke a token device (its
    // token's hash is in the archive: without it, "unknown device")
    assert.equal(isRevoked(target.certsDir, 'dev-b'), true);
    assert.deepEqual(revokeDevice(target.certsDir, 'tok-1'), { serials: [], token: true });
    issueDeviceCertificate(target.certsDir, 'dev-c');
    assert.ok(existsSync(join(target.certsDir, 'internal', 'device-keys', 'dev-c.key')));
  });

  it('refuses to overwrite other state without --force (writing nothing); state in place already is fine; --force overwrites', async () => {
    const target = cleanTarget();
    await restoreBackup(target, archive);
    const again = await restoreBackup(target, archive);
    assert.deepEqual([again.written.length, again.unchanged.length], [0, manifest.files.length]);
    writeFileSync(target.commandState, '{"commandId":"other"}\n');
    const key = join(target.certsDir, 'internal', 'device-keys', 'dev-a.key');
    rmSync(key);
    await refusedWith('BACKUP_STATE_EXISTS', restoreBackup(target, archive));
    assert.equal(existsSync(key), false, 'nothing was written');
    assert.equal(readFileSync(target.commandState, 'utf8'), '{"commandId":"other"}\n');
    const forced = await restoreBackup(target, archive, { force: true });
    assert.deepEqual(forced.written.sort(), [key, target.commandState].sort());
    assert.ok(readFileSync(target.commandState).equals(readFileSync(source.commandState)));
  });

  it("does not leave the restored replay windows behind newer generations a distributor started before the restore made: refused without --force, set aside with it", async () => {
    const target = cleanTarget();
    const replay = join(target.stateDir, 'replay');
    // A compose host started before its restore, its distributor restarted (each start a new
    // generation, the two newest kept): windows-2 and windows-3, empty, newer than the archive's windows-1.
    for (let start = 0; start < 3; start++) new ReplayWindows(replay).close();
    const newer = readdirSync(replay).filter((f) => /^windows-[23]\./.test(f)).sort();
    assert.deepEqual(newer, ['windows-2.log', 'windows-2.snap', 'windows-3.log', 'windows-3.snap']);
    // Restored beside them, the archive's windows were never read: the newest snapshot is.
    await refusedWith('BACKUP_STATE_EXISTS', restoreBackup(target, archive));
    assert.ok(!existsSync(join(replay, 'windows-1.snap')), 'nothing was written');
    const forced = await restoreBackup(target, archive, { force: true });
    assert.equal(forced.written.length, manifest.files.length);
    assert.deepEqual(readdirSync(replay).sort(), ['windows-1.log', 'windows-1.snap'], 'the newer generations set aside, nothing left beside the files');
    // What a restore killed while it set one aside left (its process gone): removed by the next.
    writeFileSync(join(replay, 'windows-3.snap.tmp-restore-999999999'), 'set aside by a restore killed since');
    assert.deepEqual((await restoreBackup(target, archive)).written, []);
    assert.deepEqual(readdirSync(replay).sort(), ['windows-1.log', 'windows-1.snap']);
    const windows = new ReplayWindows(replay);
    assert.equal(windows.check('dev-a', 'epoch-1', 40), 'seen');
    assert.equal(windows.check('dev-a', 'epoch-2', 7), 'seen');
    windows.close();
  });

  it('refuses an archive whose files differ from its manifest, with a file more or less, or not the sha256 expected; nothing is written', async () => {
    const entries = await entriesOf(archive);
    const files = entries.filter((e) => e.type === 'File');
    const rebuild = (list: typeof files) => {
      const file = join(work.dir, `tampered-${++n}.tar.gz`);
      writeFileSync(file, rawTarGz(list.map((e) => ({ path: e.path, data: e.data, mode: e.mode }))));
      return file;
    };
    const journal = 'files/command-state/commands.jsonl';
    const altered = files.map((e) => (e.path === journal ? { ...e, data: Buffer.from('{"commandId":"forged"}\n') } : e));
    const target = cleanTarget();
    await refusedWith('BACKUP_TAMPERED', restoreBackup(target, rebuild(altered)));
    await refusedWith('BACKUP_TAMPERED', restoreBackup(target, rebuild(files.filter((e) => e.path !== journal))));
    await refusedWith('BACKUP_TAMPERED', restoreBackup(target, rebuild([...files, { path: 'files/certs/internal/device-keys/intruder.key', type: 'File', mode: 0o600, data: Buffer.from('00'.repeat(32)) }])));
    await refusedWith('BACKUP_TAMPERED', restoreBackup(target, archive, { expectSha256: 'a'.repeat(64) }));
    assert.equal(existsSync(dirname(target.certsDir)), false, 'nothing was written');
    const ok = await restoreBackup(target, archive, { expectSha256: sha(readFileSync(archive)) });
    assert.equal(ok.written.length, manifest.files.length);
  });

  it('refuses to restore the command journal while a command API holds it (its lock), writing nothing; once it stopped, restores', async () => {
    const target = cleanTarget();
    // A command API's hold of the journal, in a process of its own (command-api/state-lock.ts).
    mkdirSync(dirname(target.commandState), { recursive: true });
    const url = new URL('../../internal-network/command-api/state-lock.ts', import.meta.url).href;
    const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `const { lockCommandState } = await import(${JSON.stringify(url)}); await lockCommandState(process.env.JOURNAL, () => {}); console.log('held'); setInterval(() => {}, 1000);`], { env: { ...process.env, JOURNAL: target.commandState }, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout?.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
        holder.once('exit', (code) => reject(new Error(`the holder exited with ${code}`)));
      });
      await assert.rejects(restoreBackup(target, archive), (err: unknown) => isFieldStreamError(err) && err.code === 'API_STATE_IN_USE' && err.message.includes(`process ${holder.pid}`) && err.message.includes('Stop the command API, then restore'));
      assert.equal(existsSync(target.commandState), false, 'no journal written');
      assert.equal(existsSync(target.certsDir), false, 'nothing else either');
    } finally {
      holder.kill('SIGKILL');
    }
    await new Promise((r) => holder.once('exit', r));
    const ok = await restoreBackup(target, archive);
    assert.equal(ok.written.length, manifest.files.length);
    assert.equal(existsSync(`${target.commandState}.lock`), false, 'the lock released');
  });

  it("restores no private key readable by others, whatever modes the archive's manifest gives", async () => {
    const entries = (await entriesOf(archive)).filter((e) => e.type === 'File');
    const loose = { ...manifest, files: manifest.files.map((f) => ({ ...f, mode: 0o777 })) };
    const file = join(work.dir, 'loose-modes.tar.gz');
    writeFileSync(file, rawTarGz(entries.map((e) => (e.path === 'manifest.json' ? { path: e.path, data: Buffer.from(JSON.stringify(loose)) } : { path: e.path, data: e.data, mode: e.mode }))));
    const target = cleanTarget();
    const r = await restoreBackup(target, file);
    assert.equal(r.written.length, manifest.files.length);
    let keys = 0;
    for (const path of r.written) {
      const mode = statSync(path).mode & 0o777;
      if (path.endsWith('.key')) {
        keys++;
        assert.equal(mode, 0o600, path);
      } else assert.equal(mode & 0o133, 0, `${path}: ${mode.toString(8)}`);
    }
    assert.ok(keys > 2, 'the CA key and device keys among them');
  });

  it('fails on a symbolic link in the state rather than leave out what it points to', async () => {
    // A folder of keys moved to another volume and linked back: not followed, not skipped.
    const linked = makeTestPki(['dev-l']);
    try {
      const keys = join(linked.dir, 'internal', 'device-keys');
      renameSync(keys, join(work.dir, 'keys-elsewhere'));
      symlinkSync(join(work.dir, 'keys-elsewhere'), keys);
      const none = join(work.dir, 'no-state');
      await refusedWith('BACKUP_UNREADABLE', createBackup({ certsDir: linked.dir, stateDir: none, commandState: join(none, 'commands.jsonl') }, join(work.dir, 'linked.tar.gz')));
      // The command journal's path a link: the same.
      mkdirSync(none, { recursive: true });
      symlinkSync(source.commandState, join(none, 'commands.jsonl'));
      await refusedWith('BACKUP_UNREADABLE', createBackup({ certsDir: pki.dir, stateDir: source.stateDir, commandState: join(none, 'commands.jsonl') }, join(work.dir, 'linked-journal.tar.gz')));
      assert.ok(!existsSync(join(work.dir, 'linked.tar.gz')) && !existsSync(join(work.dir, 'linked-journal.tar.gz')));
    } finally {
      linked.cleanup();
    }
  });

  it('refuses path traversal, absolute paths and links, before writing anything', async () => {
    const manifestEntry = (files: unknown[]) => ({ path: 'manifest.json', data: JSON.stringify({ ...manifest, files }) });
    const evil = Buffer.from('evil');
    const one = (path: string) => ({ root: 'certs', path, kind: 'ca', size: evil.length, mode: 0o600, sha256: sha(evil) });
    const cases = [
      [manifestEntry([]), { path: '../evil', data: evil }],
      [manifestEntry([]), { path: '/tmp/fieldstream-evil', data: evil }],
      [manifestEntry([]), { path: 'files/certs/../../evil', data: evil }],
      [manifestEntry([one('../../evil')]), { path: 'files/certs/../../evil', data: evil }],
      [manifestEntry([one('ca.crt')]), { path: 'files/certs/ca.crt', type: 'SymbolicLink' as const, linkpath: '/etc/passwd' }],
      [manifestEntry([one('ca.crt')]), { path: 'files/certs/ca.crt', type: 'Link' as const, linkpath: '../../../etc/passwd' }],
      [manifestEntry([]), { path: 'files/certs/ca', type: 'SymbolicLink' as const, linkpath: '/tmp' }],
    ];
    for (const [i, entries] of cases.entries()) {
      const file = join(work.dir, `traversal-${i}.tar.gz`);
      writeFileSync(file, rawTarGz(entries));
      const target = cleanTarget();
      await refusedWith('BACKUP_UNSAFE_PATH', restoreBackup(target, file));
      assert.equal(existsSync(dirname(target.certsDir)), false, `case ${i}: nothing was written`);
    }
    assert.deepEqual(readdirSync(work.dir).filter((f) => f.includes('evil')), []);
    assert.equal(existsSync('/tmp/fieldstream-evil'), false);
  });

  it('refuses what is not a backup of this version, or names a file as what it is not', async () => {
    const write = (name: string, data: Buffer | string) => {
      const file = join(work.dir, name);
      writeFileSync(file, data);
      return file;
    };
    const bytes = readFileSync(archive);
    const cases: Array<[string, Buffer]> = [
      ['random', Buffer.from('not an archive at all')],
      ['gzip-text', gzipSync('plain text, not tar')],
      ['truncated', bytes.subarray(0, Math.floor(bytes.length / 2))],
      ['no-manifest', rawTarGz([{ path: 'files/certs/ca.crt', data: 'x' }])],
      ['manifest-not-json', rawTarGz([{ path: 'manifest.json', data: '{' }])],
      ['version-2', rawTarGz([{ path: 'manifest.json', data: JSON.stringify({ ...manifest, version: 2 }) }])],
      ['other-entry', rawTarGz([{ path: 'manifest.json', data: JSON.stringify({ ...manifest, files: [] }) }, { path: 'elsewhere/x', data: 'x' }])],
      ['wrong-kind', rawTarGz([{ path: 'manifest.json', data: JSON.stringify({ ...manifest, files: [{ root: 'certs', path: 'bundles/x.tar.gz', kind: 'ca', size: 1, mode: 0o600, sha256: sha(Buffer.from('x')) }] }) }, { path: 'files/certs/bundles/x.tar.gz', data: 'x' }])],
    ];
    for (const [name, data] of cases) {
      const target = cleanTarget();
      await refusedWith('BACKUP_INVALID', restoreBackup(target, write(`${name}.tar.gz`, data)));
      assert.equal(existsSync(dirname(target.certsDir)), false, `${name}: nothing was written`);
    }
    await assert.rejects(restoreBackup(cleanTarget(), write('v2.tar.gz', cases[5]![1])), /version 2/);
  });

  it('refuses a manifest that declares more than a backup holds (one file, all files), before reading any file', async () => {
    const line = (path: string, size: number) => ({ root: 'certs', path, kind: 'service-certificates', size, mode: 0o644, sha256: 'a'.repeat(64) });
    const big = LIMITS.backupArchiveMaxBytes;
    const many = Array.from({ length: Math.floor(LIMITS.backupMaxBytes / big) + 1 }, (_, i) => line(`internal/s${i}.crt`, big));
    for (const [i, files] of [[line('internal/s.crt', big + 1)], many].entries()) {
      const file = join(work.dir, `too-large-${i}.tar.gz`);
      writeFileSync(file, rawTarGz([{ path: 'manifest.json', data: JSON.stringify({ ...manifest, files }) }]));
      await refusedWith('BACKUP_TOO_LARGE', restoreBackup(cleanTarget(), file));
    }
  });

  it('--expect-sha256: unpacks the very bytes it hashed; the file replaced after the hash changes nothing', async () => {
    // Another valid backup, with another command journal: what a swap between two reads would restore.
    const forged: AdminPaths = { certsDir: join(work.dir, 'forged', 'certs'), stateDir: join(work.dir, 'forged', 'state'), commandState: join(work.dir, 'forged', 'commands.jsonl') };
    mkdirSync(dirname(forged.commandState), { recursive: true });
    writeFileSync(forged.commandState, '{"commandId":"forged"}\n');
    const swapIn = join(work.dir, 'forged.tar.gz');
    await createBackup(forged, swapIn);
    const file = join(work.dir, 'swapped.tar.gz');
    copyFileSync(archive, file);
    const target = cleanTarget();
    const r = await restoreBackup(target, file, { expectSha256: sha(readFileSync(archive)), afterRead: () => renameSync(swapIn, file) });
    assert.notEqual(sha(readFileSync(file)), sha(readFileSync(archive)), 'the file was replaced meanwhile');
    assert.equal(r.written.length, manifest.files.length);
    assert.ok(readFileSync(target.commandState).equals(readFileSync(source.commandState)), 'the journal of the archive hashed');
  });

  it('a restore failing midway puts back every file it replaced, removes what it added, and finishes when run again', async () => {
    const target = cleanTarget();
    const top = dirname(target.certsDir);
    mkdirSync(join(target.certsDir, 'internal'), { recursive: true });
    mkdirSync(dirname(target.commandState), { recursive: true });
    writeFileSync(join(target.certsDir, 'ca.crt'), 'the CA certificate before\n');
    writeFileSync(target.commandState, 'the journal before\n');
    // A file where the folder of the DMZ's revoked serials goes: the write fails there (ENOTDIR),
    // after the CA's files. (One where the device keys' folder goes fails before any write: the
    // restore marks that folder first, restore-marks.ts.)
    mkdirSync(join(target.certsDir, 'dmz'), { recursive: true });
    const obstacle = join(target.certsDir, 'dmz', 'revocation');
    writeFileSync(obstacle, 'in the way');
    const before = filesBelow(top).map((f) => [f, readFileSync(join(top, f), 'utf8')]);
    await assert.rejects(restoreBackup(target, archive, { force: true }), (err) => {
      assert.ok(isFieldStreamError(err, 'BACKUP_WRITE_FAILED'), String(err));
      assert.match(err.message, /^The restore failed after [1-9]\d* of \d+ files: ENOTDIR.*; every file written was put back as it was\.$/);
      return true;
    });
    assert.deepEqual(filesBelow(top).map((f) => [f, readFileSync(join(top, f), 'utf8')]), before, 'as it was: the same files, the same content, nothing left beside them');
    assert.deepEqual(readdirSync(target.certsDir).sort(), ['ca.crt', 'dmz', 'internal'], 'the folders it made are gone');
    assert.deepEqual(readdirSync(join(target.certsDir, 'internal')), [], 'its marks too');
    rmSync(obstacle);
    const r = await restoreBackup(target, archive, { force: true });
    assert.equal(r.written.length, manifest.files.length);
    assert.ok(readFileSync(target.commandState).equals(readFileSync(source.commandState)));
    assert.deepEqual(filesBelow(top).filter((f) => f.includes('.tmp-')), []);
  });

  it("restores over the empty folders Docker makes where a mounted file is missing (a compose host started before its restore); a failure puts them back", async () => {
    const docker = ['ca.crt', 'ca.crl', 'internal/revoked-devices.txt', 'internal/stored-feed.key'];
    const target = cleanTarget();
    for (const f of docker) mkdirSync(join(target.certsDir, f), { recursive: true });
    // A failure after the first of them (a file where the DMZ's revoked serials' folder goes): each folder is back as it was.
    mkdirSync(join(target.certsDir, 'dmz'));
    writeFileSync(join(target.certsDir, 'dmz', 'revocation'), 'in the way');
    await refusedWith('BACKUP_WRITE_FAILED', restoreBackup(target, archive, { force: true }));
    for (const f of docker) assert.deepEqual([statSync(join(target.certsDir, f)).isDirectory(), readdirSync(join(target.certsDir, f))], [true, []], f);
    // A file where the device keys' folder goes: refused before anything is written (it is marked first).
    writeFileSync(join(target.certsDir, 'internal', 'device-keys'), 'in the way');
    await refusedWith('BACKUP_WRITE_FAILED', restoreBackup(target, archive, { force: true }));
    for (const f of docker) assert.deepEqual([statSync(join(target.certsDir, f)).isDirectory(), readdirSync(join(target.certsDir, f))], [true, []], f);
    rmSync(join(target.certsDir, 'internal', 'device-keys'));
    rmSync(join(target.certsDir, 'dmz', 'revocation'));
    // No --force needed: an empty folder holds no state to lose.
    const r = await restoreBackup(target, archive);
    assert.equal(r.written.length, manifest.files.length);
    for (const f of docker) assert.ok(readFileSync(join(target.certsDir, f)).equals(readFileSync(join(pki.dir, f))), f);
    // A folder that holds something is state in the way, as before.
    const other = cleanTarget();
    mkdirSync(join(other.certsDir, 'ca.crl', 'x'), { recursive: true });
    await refusedWith('BACKUP_STATE_EXISTS', restoreBackup(other, archive));
  });

  it('a restore killed midway is finished by running it again, which removes what the dead one left', async () => {
    const target = cleanTarget();
    await restoreBackup(target, archive);
    // What a kill midway leaves: some files new, others old; beside them, under the id of a process
    // now gone, the old content of a file it replaced and a file half written.
    writeFileSync(target.commandState, 'the journal before\n');
    const key = join(target.certsDir, 'ca', 'ca.key');
    const dead = spawnSync('true').pid;
    const left = [`${key}.tmp-restore-${dead}`, `${key}.tmp-${dead}`, `${target.commandState}.tmp-restore-${dead}`, `${key}.restore-${dead}`];
    for (const f of left) writeFileSync(f, 'left by a restore killed midway', { mode: 0o600 });
    const running = `${key}.tmp-restore-1`; // process 1 runs: not stale
    writeFileSync(running, 'of a restore still running');
    const again = await restoreBackup(target, archive, { force: true });
    assert.deepEqual([again.written, again.unchanged.length], [[target.commandState], manifest.files.length - 1]);
    assert.ok(readFileSync(target.commandState).equals(readFileSync(source.commandState)));
    for (const f of left) assert.equal(existsSync(f), false, f);
    assert.equal(existsSync(running), true);
  });

  it('does not overwrite an archive, finds nothing in empty folders, and names a missing archive', async () => {
    await refusedWith('BACKUP_EXISTS', createBackup(source, archive));
    const empty = join(work.dir, 'empty');
    await refusedWith('BACKUP_EMPTY', createBackup({ certsDir: join(empty, 'c'), stateDir: join(empty, 's'), commandState: join(empty, 'j') }, join(work.dir, 'none.tar.gz')));
    assert.equal(existsSync(join(work.dir, 'none.tar.gz')), false);
    await refusedWith('BACKUP_NOT_FOUND', restoreBackup(cleanTarget(), join(work.dir, 'missing.tar.gz')));
  });

  it('fieldstream-admin backup and restore: messages and exit codes', async () => {
    const admin = async (...argv: string[]) => {
      let out = '';
      let err = '';
      const code = await runAdmin(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, cwd: work.dir });
      return { code, out, err };
    };
    const paths = ['--certs-dir', source.certsDir, '--state-dir', source.stateDir, '--command-state', source.commandState];
    const made = await admin('backup', 'cli.tar.gz', ...paths);
    assert.equal(made.code, EXIT.ok, made.err);
    const digest = sha(readFileSync(join(work.dir, 'cli.tar.gz')));
    assert.match(made.out, new RegExp(`^Backed up ${manifest.files.length} files to .*cli\\.tar\\.gz \\(mode 0600\\): ca 7, revocations 3, `));
    assert.ok(made.out.includes(`sha256   ${digest}`));
    assert.ok(!made.out.includes('No replay windows'), made.out);
    assert.equal((await admin('backup', 'cli.tar.gz', ...paths)).code, EXIT.conflict);
    assert.equal((await admin('backup', 'cli.tar.gz', ...paths, '--force')).code, EXIT.ok);
    const digest2 = sha(readFileSync(join(work.dir, 'cli.tar.gz')));

    const t = cleanTarget();
    const to = ['--certs-dir', t.certsDir, '--state-dir', t.stateDir, '--command-state', t.commandState];
    const restored = await admin('restore', 'cli.tar.gz', ...to, '--expect-sha256', digest2);
    assert.equal(restored.code, EXIT.ok, restored.err);
    assert.match(restored.out, new RegExp(`written    ${manifest.files.length} files; 0 were in place already`));
    writeFileSync(t.commandState, 'other\n');
    const inTheWay = await admin('restore', 'cli.tar.gz', ...to);
    assert.equal(inTheWay.code, EXIT.conflict);
    assert.match(inTheWay.err, /^error BACKUP_STATE_EXISTS: /);
    assert.equal((await admin('restore', 'cli.tar.gz', ...to, '--force')).code, EXIT.ok);
    assert.equal((await admin('restore', 'nowhere.tar.gz', ...to)).code, EXIT.notFound);
    const tampered = await admin('restore', 'cli.tar.gz', ...to, '--expect-sha256', 'b'.repeat(64));
    assert.equal(tampered.code, EXIT.failed);
    assert.match(tampered.err, /^error BACKUP_TAMPERED: /);
    const empty = join(work.dir, 'nothing');
    assert.equal((await admin('backup', 'e.tar.gz', '--certs-dir', empty, '--state-dir', empty, '--command-state', join(empty, 'j'))).code, EXIT.notFound);
  });

  it('takes its paths from the options, else the settings, else the repository defaults', () => {
    const checkout = join(work.dir, 'checkout-defaults');
    mkdirSync(checkout);
    assert.deepEqual(resolveAdminPaths({}, {}, '/somewhere', checkout), {
      certsDir: join(checkout, 'certs'),
      stateDir: join(checkout, 'data', 'distributor-state'),
      commandState: join(checkout, 'data', 'commands.jsonl'),
      commandStateFrom: 'default',
    });
    assert.equal(resolveAdminPaths({}, {}, '/somewhere').certsDir, join(REPO_ROOT, 'certs'), 'relative to this repository by default');
    const env = { CERTS_DIR: 'c', DISTRIBUTOR_STATE_DIR: '/srv/state', COMMAND_STATE_PATH: 'j.jsonl' };
    assert.deepEqual(resolveAdminPaths({}, env, '/somewhere', checkout), { certsDir: '/somewhere/c', stateDir: '/srv/state', commandState: '/somewhere/j.jsonl', commandStateFrom: 'setting' });
    assert.deepEqual(resolveAdminPaths({ 'certs-dir': 'x', 'state-dir': '/y', 'command-state': 'z' }, env, '/w', checkout), { certsDir: '/w/x', stateDir: '/y', commandState: '/w/z', commandStateFrom: 'option' });
  });

  it('the command journal by default: npm start\'s data/commands.jsonl, or docker-compose.internal.yml\'s data/command-api/commands.jsonl when only its folder is there', () => {
    const checkout = join(work.dir, 'checkout-journal');
    const npmStart = join(checkout, 'data', 'commands.jsonl');
    const compose = join(checkout, 'data', 'command-api', 'commands.jsonl');
    const journal = () => { const p = resolveAdminPaths({}, {}, '/w', checkout); return [p.commandState, p.commandStateFrom]; };
    mkdirSync(join(checkout, 'data'), { recursive: true });
    assert.deepEqual(journal(), [npmStart, 'default']);
    // the compose file mounts ./data/command-api at the command API's /data (COMMAND_STATE_PATH=/data/commands.jsonl)
    mkdirSync(dirname(compose));
    assert.deepEqual(journal(), [compose, 'compose']);
    writeFileSync(npmStart, '{}\n');
    assert.deepEqual(journal(), [npmStart, 'default'], 'a journal npm start keeps comes first');
    // an option or setting always wins
    assert.deepEqual(resolveAdminPaths({}, { COMMAND_STATE_PATH: 'j' }, '/w', checkout).commandState, '/w/j');
  });

  it("a compose host whose .env is docs/deployment.md's copy of .env.example: backup takes the compose file's journal", () => {
    // A copy of .env.example (`install -m 0600 .env.example .env`) is the set-up of both servers, and the admin command reads .env as the
    // services do: a COMMAND_STATE_PATH there is a setting, which wins over finding the compose
    // file's journal, and a backup of the internal server held no command journal.
    const checkout = join(work.dir, 'compose-host-dotenv');
    const compose = join(checkout, 'data', 'command-api', 'commands.jsonl');
    mkdirSync(dirname(compose), { recursive: true });
    writeFileSync(compose, '{}\n');
    const env = parseDotenv(readFileSync(join(REPO_ROOT, '.env.example')));
    const p = resolveAdminPaths({}, env, checkout, checkout);
    assert.deepEqual([p.commandState, p.commandStateFrom], [compose, 'compose']);
    // The other paths .env.example gives are the host folders the compose files mount.
    assert.equal(p.certsDir, join(checkout, 'certs'));
    assert.equal(p.stateDir, join(checkout, 'data', 'distributor-state'));
  });

  it('backup on a compose host with the defaults takes the compose file\'s journal; without a journal it says so, naming where it looked and how to point it', async () => {
    const checkout = join(work.dir, 'compose-host');
    const certs = join(checkout, 'certs');
    mkdirSync(join(certs, 'ca'), { recursive: true });
    copyFileSync(join(pki.dir, 'ca.crt'), join(certs, 'ca.crt'));
    const compose = join(checkout, 'data', 'command-api', 'commands.jsonl');
    mkdirSync(dirname(compose), { recursive: true });
    writeFileSync(compose, '{"commandId":"c-compose"}\n');
    const admin = async (...argv: string[]) => {
      let out = '';
      let err = '';
      const code = await runAdmin(argv, { out: (t) => void (out += t), err: (t) => void (err += t), env: {}, cwd: checkout, repoRoot: checkout });
      return { code, out, err };
    };
    const made = await admin('backup', 'compose.tar.gz');
    assert.equal(made.code, EXIT.ok, made.err);
    assert.match(made.out, /: ca 1, command-journal 1\n/);
    assert.ok(made.out.includes(`  journal  ${compose}\n`), made.out);
    assert.ok(!made.out.includes('No command journal'), made.out);
    const inArchive = await entriesOf(join(checkout, 'compose.tar.gz'));
    assert.equal(inArchive.find((e) => e.path === 'files/command-state/commands.jsonl')?.data.toString(), '{"commandId":"c-compose"}\n');

    // No journal where it looks: still a backup (a command API that never took a command has none), said plainly.
    rmSync(compose);
    const none = await admin('backup', 'none.tar.gz');
    assert.equal(none.code, EXIT.ok, none.err);
    assert.match(none.out, /: ca 1\n/);
    assert.ok(none.out.includes(`  journal  none: no command journal at ${compose}\n`), none.out);
    assert.ok(none.out.includes(`No command journal at ${compose} (the default of docker-compose.internal.yml), so the archive holds none:`), none.out);
    // Nor any replay window where it looks (this checkout's distributor never ran): said too, with how to point it.
    assert.ok(none.out.includes(`No replay windows in ${join(checkout, 'data', 'distributor-state')}, so the archive holds none:`), none.out);
    assert.match(none.out, /--state-dir DIR or DISTRIBUTOR_STATE_DIR=DIR/);
    assert.match(none.out, /--command-state FILE or COMMAND_STATE_PATH=FILE/);
    const given = await admin('backup', 'given.tar.gz', '--command-state', 'elsewhere.jsonl');
    assert.ok(given.out.includes(`No command journal at ${join(checkout, 'elsewhere.jsonl')} (given by --command-state)`), given.out);

    // A restore into npm start's default path says where a compose host reads its journal.
    const restored = await admin('restore', 'compose.tar.gz', '--certs-dir', join(checkout, 'restored-certs'));
    assert.equal(restored.code, EXIT.ok, restored.err);
    assert.ok(restored.out.includes(`  journal    ${compose}\n`), restored.out);
    rmSync(dirname(compose), { recursive: true });
    const elsewhere = await admin('restore', 'compose.tar.gz', '--certs-dir', join(checkout, 'restored-certs-2'));
    assert.equal(elsewhere.code, EXIT.ok, elsewhere.err);
    assert.ok(elsewhere.out.includes(`  journal    ${join(checkout, 'data', 'commands.jsonl')}\n`), elsewhere.out);
    assert.match(elsewhere.out, /restore again with --command-state data\/command-api\/commands.jsonl/);
  });
});
