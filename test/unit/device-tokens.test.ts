import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { bearerToken, generateToken, hashTokenSecret, parseToken, SCRYPT_PARAMS, TokensFileSchema, verifyTokenSecret } from '../../shared/security/device-token.ts';
import { TokenThrottle } from '../../dmz/gateway/token-throttle.ts';
import { DeviceTokens } from '../../dmz/gateway/device-tokens.ts';
import { issueDeviceToken, readTokensFile, revokeDeviceToken, tokenDeviceEnvFile, tokenPaths } from '../../pki/device-tokens.ts';
import { deviceEnvFile } from '../../pki/device-bundle.ts';
import { pkiPaths, SERVICE_CERTS } from '../../pki/layout.ts';
import { revokeDevice } from '../../pki/revocation.ts';
import { runAdmin, EXIT } from '../../scripts/admin/run.ts';
import { readDeviceToken } from '../../field-client/src/device-token-file.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { makeTestPki } from '../helpers/pki.ts';
import { eventually } from '../helpers/ws-device.ts';
import { captureLogs } from '../helpers/gateway-fixture.ts';

const silent = pino({ level: 'silent' });
const codeOf = async (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (isFieldStreamError(e) ? e.code : String(e)));

describe('device token format and hashing', () => {
  it('a token names its device and carries 256 random bits; anything else is not a token', () => {
    const t = generateToken('plc.line-1');
    assert.deepEqual(parseToken(t)?.deviceId, 'plc.line-1');
    assert.equal(parseToken(t)?.secret.length, 43);
    assert.notEqual(generateToken('a'), generateToken('a'));
    for (const bad of ['', 'fst1.', 'fst1.dev', 'fst2.dev.' + 'A'.repeat(43), 'fst1.dev.' + 'A'.repeat(42), 'fst1./x.' + 'A'.repeat(43), 'fst1.dev.' + 'A'.repeat(42) + '=']) {
      assert.equal(parseToken(bad), undefined, bad);
    }
    assert.equal(bearerToken(`Bearer ${t}`), t);
    assert.equal(bearerToken(`Basic ${t}`), undefined);
    assert.equal(bearerToken(undefined), undefined);
  });

  it('scrypt with a random salt per hash and the documented parameters; verify takes only the right secret', async () => {
    const secret = parseToken(generateToken('d1'))!.secret;
    const a = await hashTokenSecret(secret);
    const b = await hashTokenSecret(secret);
    assert.equal(a.N, SCRYPT_PARAMS.N);
    assert.equal(a.r, SCRYPT_PARAMS.r);
    assert.notEqual(a.salt, b.salt);
    assert.notEqual(a.hash, b.hash);
    assert.equal(await verifyTokenSecret(secret, a), true);
    assert.equal(await verifyTokenSecret(parseToken(generateToken('d1'))!.secret, a), false);
  });
});

describe('TokenThrottle: a failure budget with bounded memory', () => {
  it('blocks a key past its budget until the window has passed', () => {
    const t = new TokenThrottle(3, 1000);
    for (let i = 0; i < 3; i++) {
      assert.equal(t.blocked(['addr:x'], 0), false);
      t.fail(['addr:x'], 0);
    }
    assert.equal(t.blocked(['addr:x'], 10), true);
    assert.equal(t.blocked(['addr:y', 'addr:x'], 10), true, 'blocked when any of the keys is');
    assert.equal(t.blocked(['addr:y'], 10), false, 'another key keeps its own budget');
    assert.equal(t.blocked(['addr:x'], 1000), false, 'the window passed');
  });

  it('a failure charged in advance is taken back', () => {
    const t = new TokenThrottle(2, 1000);
    t.fail(['addr:x'], 0);
    t.fail(['addr:x'], 0);
    assert.equal(t.blocked(['addr:x'], 1), true);
    t.refund(['addr:x']);
    assert.equal(t.blocked(['addr:x'], 1), false);
    t.refund(['addr:x']);
    assert.equal(t.size, 0);
  });

  it('keeps at most maxKeys records', () => {
    const t = new TokenThrottle(1, 60_000, 100);
    for (let i = 0; i < 1000; i++) t.fail([`addr:${i}`], 0);
    assert.equal(t.size, 100);
    assert.equal(t.blocked(['addr:999'], 1), true, 'the newest are kept');
  });
});

describe('the gateway side: DeviceTokens', () => {
  it('verifies against the file, refuses with codes, re-reads revocations and keeps the last good file', async () => {
    const pki = makeTestPki([]);
    try {
      await issueDeviceToken(pki.dir, 'tok-a');
      await issueDeviceToken(pki.dir, 'tok-b');
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      let changes = 0;
      const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: 4, failureWindowMs: 60_000, log: silent, onChange: () => changes++ });
      try {
        const ok = await tokens.verify(token('tok-a'), '10.0.0.1');
        assert.equal(ok.deviceId, 'tok-a');
        assert.equal(tokens.isCurrent(ok), true);
        assert.equal(await codeOf(tokens.verify(generateToken('tok-a'), '10.0.0.2')), 'GATEWAY_TOKEN_INVALID');
        assert.equal(await codeOf(tokens.verify(generateToken('nobody'), '10.0.0.3')), 'GATEWAY_TOKEN_UNKNOWN_DEVICE');
        assert.equal(await codeOf(tokens.verify(undefined, '10.0.0.4')), 'GATEWAY_TOKEN_MISSING');
        assert.equal(await codeOf(tokens.verify('not-a-token', '10.0.0.4')), 'GATEWAY_TOKEN_MISSING');

        revokeDevice(pki.dir, 'tok-b');
        await eventually(() => (tokens.isCurrent({ deviceId: 'tok-a', tokenId: ok.tokenId }) && changes >= 2 ? true : undefined), 10_000, 'reloaded');
        assert.equal(await codeOf(tokens.verify(token('tok-b'), '10.0.0.5')), 'GATEWAY_TOKEN_REVOKED');

        // rotation: the old token and its connections are no longer current
        await issueDeviceToken(pki.dir, 'tok-a', { renew: true });
        await eventually(() => (tokens.isCurrent(ok) ? undefined : true), 10_000, 'rotation applied');
        const old = (await codeOf(tokens.verify(`fst1.tok-a.${'A'.repeat(43)}`, '10.0.0.6')));
        assert.equal(old, 'GATEWAY_TOKEN_INVALID');
        const renewed = await tokens.verify(token('tok-a'), '10.0.0.7');
        assert.equal(renewed.deviceId, 'tok-a');

        // brute force from one address: refused unchecked once its budget is spent
        for (let i = 0; i < 4; i++) assert.equal(await codeOf(tokens.verify(generateToken('tok-a'), '10.0.0.8')), 'GATEWAY_TOKEN_INVALID');
        assert.equal(await codeOf(tokens.verify(token('tok-a'), '10.0.0.8')), 'GATEWAY_TOKEN_THROTTLED');
        assert.equal((await tokens.verify(token('tok-a'), '10.0.0.10')).deviceId, 'tok-a', 'the device from another address: not per device');

        // a damaged file: the last good one stays in force
        const changed = changes;
        writeFileSync(tokenPaths(pki.dir).file, '{"version":1,"devices":{"tok-a":{"state":"active"}}}');
        await new Promise((r) => setTimeout(r, 2500));
        assert.equal(changes, changed);
        assert.equal(tokens.isCurrent(renewed), true);
        assert.equal(await codeOf(tokens.verify(token('tok-b'), '10.0.0.9')), 'GATEWAY_TOKEN_REVOKED');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * A revocation reaches the DMZ as a copy of the tokens file. One that keeps the old file's
 * modification time (cp -p, rsync -t, a restore, or two writes within one tick of a coarse clock)
 * went unnoticed: the gateway looked at the mtime only, and the revoked token stayed good.
 */
describe('the gateway side: a tokens file changed under the same mtime', () => {
  it('takes the revocation all the same (its size or inode changed)', async () => {
    const pki = makeTestPki([]);
    try {
      await issueDeviceToken(pki.dir, 'tok-a');
      const file = tokenPaths(pki.dir).file;
      const token = readFileSync(tokenPaths(pki.dir, 'tok-a').token, 'utf8').trim();
      const tokens = new DeviceTokens({ path: file, maxFailures: 100, failureWindowMs: 60_000, log: silent });
      try {
        const ok = await tokens.verify(token, '10.0.0.1');
        const before = statSync(file);
        const current = readFileSync(file, 'utf8');
        revokeDevice(pki.dir, 'tok-a');
        const revoked = readFileSync(file, 'utf8');
        assert.notEqual(revoked, current);
        // The revoked version, copied over the old file in place with the old file's times.
        writeFileSync(file, current);
        utimesSync(file, before.atime, before.mtime);
        await new Promise((r) => setTimeout(r, TIMINGS.deviceTokensReloadMs + 500));
        writeFileSync(file, revoked);
        utimesSync(file, before.atime, before.mtime);
        await eventually(() => (tokens.isCurrent(ok) ? undefined : true), TIMINGS.deviceTokensReloadMs * 3, 'the revocation taken');
        assert.equal(await codeOf(tokens.verify(token, '10.0.0.2')), 'GATEWAY_TOKEN_REVOKED');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

describe('the gateway side: token expiry', () => {
  it('refuses an expired token with GATEWAY_TOKEN_EXPIRED (a wrong secret still only INVALID), closes it when it expires, and reads entries without expiresAt as never expiring', async () => {
    const pki = makeTestPki([]);
    const out: string[] = [];
    const io = { out: (t: string) => void out.push(t), err: (t: string) => void out.push(t), env: {}, cwd: pki.dir };
    try {
      for (const id of ['tok-e', 'tok-soon', 'tok-old']) await issueDeviceToken(pki.dir, id);
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      // As the tooling writes it, then aged: one expired, one expiring in a few seconds, one from before expiry dates.
      const file = JSON.parse(readFileSync(tokenPaths(pki.dir).file, 'utf8')) as { devices: Record<string, { expiresAt?: string }> };
      file.devices['tok-e']!.expiresAt = new Date(Date.now() - 60_000).toISOString();
      file.devices['tok-soon']!.expiresAt = new Date(Date.now() + 5_000).toISOString();
      delete file.devices['tok-old']!.expiresAt;
      writeFileSync(tokenPaths(pki.dir).file, JSON.stringify(file));
      assert.equal(TokensFileSchema.parse(file).devices['tok-old']?.state, 'active', 'an entry without expiresAt is valid');

      let changes = 0;
      const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: 20, failureWindowMs: 60_000, log: silent, onChange: () => changes++ });
      try {
        // Checked first, while still valid: on a loaded machine the other checks' scrypt took the
        // seconds to its expiry.
        const soon = await tokens.verify(token('tok-soon'), '10.2.0.4');
        assert.equal(tokens.refusal(soon), undefined);
        const loaded = changes;
        const refused = await tokens.verify(token('tok-e'), '10.2.0.1').then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(isFieldStreamError(refused) && refused.code === 'GATEWAY_TOKEN_EXPIRED' && refused.details?.deviceId === 'tok-e', String(refused));
        assert.equal(await codeOf(tokens.verify(generateToken('tok-e'), '10.2.0.2')), 'GATEWAY_TOKEN_INVALID', 'the expiry is told only to the holder of the secret');

        assert.equal(await codeOf(tokens.verify(generateToken('constructor'), '10.2.0.6')), 'GATEWAY_TOKEN_UNKNOWN_DEVICE', 'an id that names a property of every object is no entry');
        const old = await tokens.verify(token('tok-old'), '10.2.0.3');
        assert.equal(tokens.isCurrent(old, Date.now() + 100 * 365 * 86_400_000), true, 'no expiresAt: never expires');

        // No change of the file: the periodic look finds the expiry and asks the gateway to recheck its connections.
        await eventually(() => (changes > loaded ? true : undefined), 15_000, 'onChange at the expiry');
        assert.equal(tokens.refusal(soon), 'GATEWAY_TOKEN_EXPIRED');
        assert.equal(tokens.isCurrent(soon), false);
        assert.equal(tokens.isCurrent(old), true);
        assert.equal(await codeOf(tokens.verify(token('tok-soon'), '10.2.0.5')), 'GATEWAY_TOKEN_EXPIRED');
      } finally {
        tokens.close();
      }

      // The tooling: "never" for the old entry, "expired" for the expired one; renew gives the old one an expiry.
      assert.equal(await runAdmin(['devices', 'list', '--json', '--certs-dir', pki.dir], io), EXIT.ok);
      const listed = JSON.parse(out.join('')) as Array<{ id: string; auth: string; expiresAt: string | null; token?: { expired?: boolean } }>;
      assert.deepEqual(listed.map((d) => [d.id, d.auth, d.expiresAt === null ? null : 'date', d.token?.expired]), [
        ['tok-e', 'token', 'date', true],
        ['tok-old', 'token', null, false],
        ['tok-soon', 'token', 'date', true],
      ]);
      out.length = 0;
      assert.equal(await runAdmin(['devices', 'list', '--certs-dir', pki.dir], io), EXIT.ok);
      assert.match(out.join(''), /\ntok-old\s+token\s+never\s+-\s+active/);
      assert.match(out.join(''), /\ntok-e\s+token\s+\S+ \(expired\)\s+-1\s+active/);
      out.length = 0;
      assert.equal(await runAdmin(['devices', 'show', 'tok-old', '--certs-dir', pki.dir], io), EXIT.ok);
      assert.match(out.join(''), /\n  auth: +device token, expires never\n/);
      assert.equal(await runAdmin(['devices', 'renew', 'tok-old', '--token', '--certs-dir', pki.dir], io), EXIT.ok);
      const renewed = readTokensFile(pki.dir).devices['tok-old'];
      assert.ok(renewed?.state === 'active' && renewed.expiresAt !== undefined, 'renew sets an expiry');
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * An expired token's right secret is no guess, so it is charged nothing (its device retries; its
 * address's other devices must not be refused for it). But each try was still a scrypt: whoever kept
 * a lost device's token, expired, could make the gateway hash at full speed from one address, every
 * check slot and libuv thread busy, though an expired token is meant to be harmless.
 */
describe('the gateway side: an expired token retried', () => {
  it('costs one scrypt, not one a try; still GATEWAY_TOKEN_EXPIRED to its holder only, and nothing charged', async () => {
    const pki = makeTestPki([]);
    try {
      await issueDeviceToken(pki.dir, 'tok-x');
      const path = tokenPaths(pki.dir).file;
      const file = JSON.parse(readFileSync(path, 'utf8')) as { devices: Record<string, { expiresAt?: string }> };
      file.devices['tok-x']!.expiresAt = new Date(Date.now() - 60_000).toISOString();
      writeFileSync(path, JSON.stringify(file));
      const expired = readFileSync(tokenPaths(pki.dir, 'tok-x').token, 'utf8').trim();
      const tokens = new DeviceTokens({ path, maxFailures: 3, failureWindowMs: 60_000, log: silent });
      try {
        // One check's hash, on this machine now.
        const started = performance.now();
        assert.equal(await codeOf(tokens.verify(expired, '10.7.0.1')), 'GATEWAY_TOKEN_EXPIRED');
        const oneHash = performance.now() - started;
        const tries = 30;
        const t0 = performance.now();
        for (let i = 0; i < tries; i++) assert.equal(await codeOf(tokens.verify(expired, '10.7.0.1')), 'GATEWAY_TOKEN_EXPIRED');
        const took = performance.now() - t0;
        assert.ok(took < oneHash * 5, `${tries} tries of the expired token took ${Math.round(took)} ms, one hash ${Math.round(oneHash)} ms: a hash each`);
        // A wrong secret is still hashed, answered only INVALID, and charged.
        for (let i = 0; i < 3; i++) assert.equal(await codeOf(tokens.verify(generateToken('tok-x'), '10.7.0.2')), 'GATEWAY_TOKEN_INVALID');
        assert.equal(await codeOf(tokens.verify(generateToken('tok-x'), '10.7.0.2')), 'GATEWAY_TOKEN_THROTTLED');
        assert.equal(await codeOf(tokens.verify(expired, '10.7.0.1')), 'GATEWAY_TOKEN_EXPIRED', 'its own address never charged');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * A device's right token is charged nothing either, and each connection of it was a scrypt and a
 * check slot: one token device reconnecting in a burst (a loop, a bug, a thief of its token) held
 * every slot (LIMITS.deviceTokenChecksMax) and every other token device was refused meanwhile.
 */
describe("the gateway side: a device's token proven before", () => {
  it('takes no hash and no check slot when it comes again: the other devices are checked meanwhile', async () => {
    const pki = makeTestPki([]);
    try {
      for (const id of ['tok-v', 'tok-w']) await issueDeviceToken(pki.dir, id);
      const path = tokenPaths(pki.dir).file;
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      const tokens = new DeviceTokens({ path, maxFailures: 3, failureWindowMs: 60_000, log: silent, checksMax: 2 });
      try {
        assert.equal((await tokens.verify(token('tok-v'), '10.8.0.1')).deviceId, 'tok-v');
        const burst = Array.from({ length: 6 }, () => codeOf(tokens.verify(token('tok-v'), '10.8.0.1')));
        const other = codeOf(tokens.verify(token('tok-w'), '10.8.0.2'));
        assert.deepEqual(await Promise.all(burst), Array(6).fill('ok'), "the device's own connections");
        assert.equal(await other, 'ok', "another device's check, while the first device came again six times");
        // Renewed: the old secret is checked anew, and refused.
        const old = token('tok-v');
        await issueDeviceToken(pki.dir, 'tok-v', { renew: true });
        await eventually(async () => ((await codeOf(tokens.verify(old, '10.8.0.3'))) === 'GATEWAY_TOKEN_INVALID' ? true : undefined), 10_000, 'the renewal read');
        assert.equal((await tokens.verify(token('tok-v'), '10.8.0.3')).deviceId, 'tok-v');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

describe('the gateway side: guesses in parallel', () => {
  it('cannot pass the budget while the first ones are still being hashed', async () => {
    const pki = makeTestPki([]);
    await issueDeviceToken(pki.dir, 'tok-p');
    const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: 3, failureWindowMs: 60_000, log: silent });
    try {
      const codes = await Promise.all(Array.from({ length: 12 }, () => codeOf(tokens.verify(generateToken('tok-p'), '10.1.0.1'))));
      assert.equal(codes.filter((c) => c === 'GATEWAY_TOKEN_INVALID').length, 3);
      assert.equal(codes.filter((c) => c === 'GATEWAY_TOKEN_THROTTLED').length, 9);
    } finally {
      tokens.close();
      pki.cleanup();
    }
  });
});

describe('the gateway side: guesses from many networks of one IPv6 site', () => {
  it(`are bounded per /${LIMITS.tokenFailureSitePrefixBits} too (LIMITS.tokenFailureSiteFactor budgets of a /64): one holder of a site cannot keep every check busy`, async () => {
    // Each /64 had its own budget and nothing more: one attacker given a /48 (65,536 /64s) sent
    // GATEWAY_TOKEN_MAX_FAILURES slow hashes from each, enough to keep all 64 check slots full and
    // every token device out (503) for as long as it cared to.
    const pki = makeTestPki([]);
    await issueDeviceToken(pki.dir, 'tok-s');
    const right = readFileSync(tokenPaths(pki.dir, 'tok-s').token, 'utf8').trim();
    const max = 2;
    const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: max, failureWindowMs: 60_000, log: silent });
    try {
      const site = max * LIMITS.tokenFailureSiteFactor;
      const codes: string[] = [];
      for (let net = 0; net < LIMITS.tokenFailureSiteFactor + 2; net++) {
        for (let i = 0; i < max; i++) codes.push(await codeOf(tokens.verify(generateToken('tok-s'), `2001:db8:7:${net.toString(16)}::${i + 1}`)));
      }
      assert.equal(codes.filter((c) => c === 'GATEWAY_TOKEN_INVALID').length, site, 'checked: the site\'s budget');
      assert.equal(codes.filter((c) => c === 'GATEWAY_TOKEN_THROTTLED').length, codes.length - site);
      // Another site is checked; the right token is taken from anywhere but a spent site.
      assert.equal(await codeOf(tokens.verify(generateToken('tok-s'), '2001:db8:8::1')), 'GATEWAY_TOKEN_INVALID');
      assert.equal((await tokens.verify(right, '2001:db8:9::1')).deviceId, 'tok-s');
      // IPv4 addresses have no site: each keeps its own budget only.
      for (let a = 1; a <= LIMITS.tokenFailureSiteFactor + 2; a++) assert.equal(await codeOf(tokens.verify(generateToken('tok-s'), `10.9.${a}.1`)), 'GATEWAY_TOKEN_INVALID');
    } finally {
      tokens.close();
      pki.cleanup();
    }
  });
});

/**
 * Wrong tokens naming a device, sent from addresses other than the device's, once counted against
 * the device too: ten every window kept its own right token refused (GATEWAY_TOKEN_THROTTLED) for
 * as long as anyone cared to send them. A secret of 256 random bits needs no budget per device.
 */
describe('the gateway side: failures others cause naming a device', () => {
  it("do not refuse the device's right token from its own address", async () => {
    const pki = makeTestPki([]);
    await issueDeviceToken(pki.dir, 'tok-v');
    const right = readFileSync(tokenPaths(pki.dir, 'tok-v').token, 'utf8').trim();
    const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: 3, failureWindowMs: 60_000, log: silent });
    try {
      // From rotating addresses: each stays within its own budget, together they pass any per-device one.
      for (let i = 0; i < 6; i++) assert.equal(await codeOf(tokens.verify(generateToken('tok-v'), `10.3.0.${i + 1}`)), 'GATEWAY_TOKEN_INVALID');
      assert.equal((await tokens.verify(right, '10.3.1.1')).deviceId, 'tok-v');
      // An address's own budget still holds.
      for (let i = 0; i < 3; i++) assert.equal(await codeOf(tokens.verify(generateToken('tok-v'), '10.3.2.1')), 'GATEWAY_TOKEN_INVALID');
      assert.equal(await codeOf(tokens.verify(generateToken('tok-v'), '10.3.2.1')), 'GATEWAY_TOKEN_THROTTLED');
      assert.equal((await tokens.verify(right, '10.3.1.1')).deviceId, 'tok-v');
    } finally {
      tokens.close();
      pki.cleanup();
    }
  });
});

describe('issuing, rotating and revoking tokens (pki/, fieldstream-admin)', () => {
  it('a revocation made while another token is issued (during its scrypt) stands', async () => {
    const pki = makeTestPki([]);
    try {
      await issueDeviceToken(pki.dir, 'tok-1');
      // Two admin commands at once: issuing tok-9 hashes its secret while tok-1 is revoked.
      const issuing = issueDeviceToken(pki.dir, 'tok-9');
      await new Promise((r) => setTimeout(r, 5));
      assert.equal(revokeDeviceToken(pki.dir, 'tok-1'), true);
      await issuing;
      const devices = readTokensFile(pki.dir).devices;
      assert.equal(devices['tok-1']?.state, 'revoked', 'the revocation was not written over');
      assert.equal(devices['tok-9']?.state, 'active');
      // A lock left by a command killed while holding it is taken over once old.
      mkdirSync(join(pki.dir, '.tokens.lock'));
      utimesSync(join(pki.dir, '.tokens.lock'), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
      assert.equal(revokeDeviceToken(pki.dir, 'tok-9'), true);
      assert.equal(readTokensFile(pki.dir).devices['tok-9']?.state, 'revoked');
    } finally {
      pki.cleanup();
    }
  });

  it('the DMZ file holds only hashes (0600); the bundle holds the token and no certificate; revoke covers the token', async () => {
    const pki = makeTestPki([]);
    const out: string[] = [];
    const io = { out: (t: string) => void out.push(t), err: (t: string) => void out.push(t), env: {}, cwd: pki.dir };
    try {
      assert.equal(await runAdmin(['devices', 'add', 'tok-c', '--token', '--certs-dir', pki.dir], io), EXIT.ok, out.join(''));
      const token = readFileSync(tokenPaths(pki.dir, 'tok-c').token, 'utf8').trim();
      assert.equal(parseToken(token)?.deviceId, 'tok-c');
      const text = readFileSync(tokenPaths(pki.dir).file, 'utf8');
      assert.ok(!text.includes(parseToken(token)!.secret));
      assert.equal(statSync(tokenPaths(pki.dir).file).mode & 0o777, 0o600);
      assert.equal(TokensFileSchema.parse(JSON.parse(text)).devices['tok-c']?.state, 'active');
      assert.ok(!out.join('').includes(token), 'the token is not printed');

      const listing = execFileSync('tar', ['-tzvf', join(pki.dir, 'bundles', 'tok-c.tar.gz')], { encoding: 'utf8' });
      assert.match(listing, /tok-c\/certs\/device\.token/);
      assert.match(listing, /tok-c\/certs\/ca\.crl/, "the CA's CRL, which the client checks the server's certificate against");
      assert.match(listing, /tok-c\/certs\/signing\.key/);
      assert.doesNotMatch(listing, /client\.(crt|key)/);
      const env = execFileSync('tar', ['-xzOf', join(pki.dir, 'bundles', 'tok-c.tar.gz'), 'tok-c/.env'], { encoding: 'utf8' });
      assert.match(env, /^FIELD_TOKEN_FILE=\/certs\/device\.token$/m);
      assert.match(env, /^GATEWAY_URL=wss:\/\/localhost:8444\/ws$/m);
      assert.equal(readDeviceToken(tokenPaths(pki.dir, 'tok-c').token, 'tok-c'), token);
      assert.throws(() => readDeviceToken(tokenPaths(pki.dir, 'tok-c').token, 'other'), (e: unknown) => isFieldStreamError(e) && e.code === 'CONFIG_INVALID' && !e.message.includes(token));

      // devices list and show say the device has a token, and never print it.
      out.length = 0;
      assert.equal(await runAdmin(['devices', 'list', '--json', '--certs-dir', pki.dir], io), EXIT.ok);
      const listed = (JSON.parse(out.join('')) as Array<{ id: string; token?: { state: string } }>).find((d) => d.id === 'tok-c');
      assert.equal(listed?.token?.state, 'active');
      out.length = 0;
      assert.equal(await runAdmin(['devices', 'show', 'tok-c', '--certs-dir', pki.dir], io), EXIT.ok);
      assert.match(out.join(''), /token: +active since /);
      assert.ok(!out.join('').includes(token));

      assert.equal(await runAdmin(['devices', 'add', 'tok-c', '--token', '--certs-dir', pki.dir], io), EXIT.conflict);
      assert.equal(await runAdmin(['devices', 'renew', 'tok-c', '--token', '--certs-dir', pki.dir], io), EXIT.ok);
      assert.notEqual(readFileSync(tokenPaths(pki.dir, 'tok-c').token, 'utf8').trim(), token, 'rotated');
      assert.equal(await runAdmin(['devices', 'revoke', 'tok-c', '--certs-dir', pki.dir], io), EXIT.ok, out.join(''));
      assert.deepEqual(readTokensFile(pki.dir).devices['tok-c']?.state, 'revoked');
      out.length = 0;
      assert.equal(await runAdmin(['devices', 'show', 'tok-c', '--certs-dir', pki.dir], io), EXIT.ok);
      assert.match(out.join(''), /token: +revoked /);
      assert.equal(await runAdmin(['devices', 'renew', 'tok-c', '--token', '--certs-dir', pki.dir], io), EXIT.conflict);
      assert.equal(await runAdmin(['devices', 'add', 'tok-d', '--token', '--days', '0', '--certs-dir', pki.dir], io), EXIT.usage);
    } finally {
      pki.cleanup();
    }
  });
  it("refuses a device id that is a service's certificate name, as a certificate's issue does: PKI_INVALID_NAME, nothing written", async () => {
    // The brokers' ACLs, the internal side's key registry and the certificate route all take these
    // names for the services; a device may hold none of them, whichever way it authenticates.
    const pki = makeTestPki([]);
    const out: string[] = [];
    const io = { out: (t: string) => void out.push(t), err: (t: string) => void out.push(t), env: {}, cwd: pki.dir };
    try {
      for (const name of new Set(SERVICE_CERTS.map((c) => c.commonName))) {
        assert.equal(await codeOf(issueDeviceToken(pki.dir, name)), 'PKI_INVALID_NAME', name);
        assert.equal(await codeOf(issueDeviceToken(pki.dir, name, { renew: true })), 'PKI_INVALID_NAME', name);
        assert.equal(existsSync(tokenPaths(pki.dir, name).token), false, name);
        assert.equal(existsSync(pkiPaths(pki.dir).deviceKeyRegistry(name)), false, name);
      }
      out.length = 0;
      assert.equal(await runAdmin(['devices', 'add', 'command-api', '--token', '--certs-dir', pki.dir], io), EXIT.usage, out.join(''));
      assert.match(out.join(''), /^error PKI_INVALID_NAME: /);
      assert.deepEqual(readTokensFile(pki.dir).devices, {});
    } finally {
      pki.cleanup();
    }
  });
});

describe("a bundle's .env", () => {
  it('tells the operator a CRL copied over the bundle\'s needs no restart of the client (it is read again when the file changes)', () => {
    // docs/operations.md and docs/field-client.md: the client reads its CRL again whenever the file
    // changes; a comment asking for a restart sent operators to stop every device for nothing.
    for (const env of [deviceEnvFile('pump-7', 'fieldstream.example.org'), tokenDeviceEnvFile('plc-3', 'fieldstream.example.org', 8444)]) {
      assert.match(env, /certs\/ca\.crl over it: read again without a restart\)/);
      assert.doesNotMatch(env, /restart the client/);
    }
  });

  it("says which folder the compose file mounts at /certs: the bundle's certs/, not the bundle's folder", () => {
    const compose = readFileSync(join(import.meta.dirname, '..', '..', 'field-client', 'docker-compose.yml'), 'utf8');
    assert.match(compose, /^\s+- \.\/certs:\/certs:ro\b/m);
    for (const env of [deviceEnvFile('pump-7', 'fieldstream.example.org'), tokenDeviceEnvFile('plc-3', 'fieldstream.example.org', 8444)]) {
      assert.match(env, /\(the bundle's certs\/ folder is mounted at \/certs\)/);
    }
  });
});

describe('the field client: FIELD_TOKEN_FILE', () => {
  it('a token file that cannot be read stops it with CONFIG_FILE_UNREADABLE naming the setting, as every file a setting names (docs/errors.md)', () => {
    const missing = join(tmpdir(), `fieldstream-no-token-${process.pid}`, 'device.token');
    assert.throws(
      () => readDeviceToken(missing, 'plc-3'),
      (e: unknown) => isFieldStreamError(e) && e.code === 'CONFIG_FILE_UNREADABLE' && e.message.startsWith(`FIELD_TOKEN_FILE=${missing} cannot be read: ENOENT`),
    );
  });
});

/**
 * An expired token proves its secret (GATEWAY_TOKEN_EXPIRED is said only to its holder) and is no
 * guess, yet each try was charged against its address and never refunded: a device whose token
 * was left to expire, retrying with its back-off, spent its address's budget within minutes and
 * kept it spent, so every token device behind the same address (a site's NAT, a carrier's CGNAT)
 * was refused GATEWAY_TOKEN_THROTTLED, and the device itself once its token was renewed.
 */
describe('the gateway side: an expired token retried', () => {
  it('spends nothing of its address budget: other devices behind the address, and its renewed token, get in', async () => {
    const pki = makeTestPki([]);
    try {
      for (const id of ['tok-late', 'tok-fine']) await issueDeviceToken(pki.dir, id);
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      const file = JSON.parse(readFileSync(tokenPaths(pki.dir).file, 'utf8')) as { devices: Record<string, { expiresAt?: string }> };
      file.devices['tok-late']!.expiresAt = new Date(Date.now() - 60_000).toISOString();
      writeFileSync(tokenPaths(pki.dir).file, JSON.stringify(file));
      let changes = 0;
      const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: 3, failureWindowMs: 60_000, log: silent, onChange: () => changes++ });
      try {
        for (let i = 0; i < 6; i++) assert.equal(await codeOf(tokens.verify(token('tok-late'), '10.4.0.1')), 'GATEWAY_TOKEN_EXPIRED', `try ${i + 1}`);
        assert.equal((await tokens.verify(token('tok-fine'), '10.4.0.1')).deviceId, 'tok-fine', 'another device behind the address');
        const loaded = changes;
        await issueDeviceToken(pki.dir, 'tok-late', { renew: true });
        await eventually(() => (changes > loaded ? true : undefined), 10_000, 'the renewal read');
        assert.equal((await tokens.verify(token('tok-late'), '10.4.0.1')).deviceId, 'tok-late', 'the renewed token, from the same address');
        // Guesses from the address are still counted.
        for (let i = 0; i < 3; i++) assert.equal(await codeOf(tokens.verify(generateToken('tok-fine'), '10.4.0.1')), 'GATEWAY_TOKEN_INVALID');
        assert.equal(await codeOf(tokens.verify(token('tok-fine'), '10.4.0.1')), 'GATEWAY_TOKEN_THROTTLED');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * docs/errors.md told an operator with a damaged tokens file to write it again with `devices
 * add/renew --token`; both read the file before they change it, and refuse it. The remedy it names
 * must be one that works.
 */
describe("a damaged tokens file on the operator's machine", () => {
  it('issuing and renewing refuse it and leave it as it is; docs/errors.md names a remedy that works', async () => {
    const pki = makeTestPki([]);
    try {
      await issueDeviceToken(pki.dir, 'tok-d');
      const damaged = '{"version":1,"devices":{"tok-d":';
      writeFileSync(tokenPaths(pki.dir).file, damaged);
      assert.equal(await codeOf(issueDeviceToken(pki.dir, 'tok-e')), 'TOKENS_FILE_INVALID');
      assert.equal(await codeOf(issueDeviceToken(pki.dir, 'tok-d', { renew: true })), 'TOKENS_FILE_INVALID');
      assert.equal(readFileSync(tokenPaths(pki.dir).file, 'utf8'), damaged, 'left as it is');
      const row = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8').split('\n').find((l) => l.startsWith('| `TOKENS_FILE_INVALID` |'));
      assert.ok(row);
      assert.doesNotMatch(row, /Write it again with `fieldstream-admin devices add\/renew --token`/, 'the commands named refuse the file');
      assert.match(row, /the one last copied to the DMZ server/);
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * A revocation reaches the gateways as a new copy of the tokens file; an older copy put back after
 * it (a stale file pushed again, a restored backup, copies crossing) made the gateway take the
 * revoked token, or the one a rotation replaced, as current again. The revoked serials never
 * un-revoke what they listed (dmz/gateway/revocation.ts); neither do the tokens.
 */
describe('the gateway side: an older tokens file copied back', () => {
  it('brings back no token revoked or replaced meanwhile; a newer file is taken as before', async () => {
    const pki = makeTestPki([]);
    try {
      for (const id of ['tok-r', 'tok-s']) await issueDeviceToken(pki.dir, id);
      const file = tokenPaths(pki.dir).file;
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      const older = readFileSync(file, 'utf8');
      const oldR = token('tok-r');
      const oldS = token('tok-s');
      let changes = 0;
      const tokens = new DeviceTokens({ path: file, maxFailures: 100, failureWindowMs: 60_000, log: silent, onChange: () => changes++ });
      try {
        const r = await tokens.verify(oldR, '10.5.0.1');
        const s = await tokens.verify(oldS, '10.5.0.1');
        let seen = changes;
        revokeDevice(pki.dir, 'tok-r');
        await issueDeviceToken(pki.dir, 'tok-s', { renew: true });
        await eventually(() => (!tokens.isCurrent(r) && !tokens.isCurrent(s) ? true : undefined), 10_000, 'the revocation and the rotation read');
        const current = readFileSync(file, 'utf8');

        // The older copy, written over it (another size, another mtime): not taken.
        seen = changes;
        writeFileSync(file, older);
        await new Promise((res) => setTimeout(res, TIMINGS.deviceTokensReloadMs * 2 + 500));
        assert.equal(changes, seen, 'nothing new taken');
        assert.equal(await codeOf(tokens.verify(oldR, '10.5.0.2')), 'GATEWAY_TOKEN_REVOKED');
        assert.equal(await codeOf(tokens.verify(oldS, '10.5.0.2')), 'GATEWAY_TOKEN_INVALID');
        assert.equal(tokens.isCurrent(r), false);
        assert.equal(tokens.isCurrent(s), false);
        assert.equal((await tokens.verify(token('tok-s'), '10.5.0.2')).deviceId, 'tok-s', 'the rotated token stays good');

        // The current file back, and then a newer one: taken.
        writeFileSync(file, current);
        await issueDeviceToken(pki.dir, 'tok-u');
        await eventually(async () => ((await codeOf(tokens.verify(token('tok-u'), '10.5.0.3'))) === 'ok' ? true : undefined), 10_000, 'a newer file taken');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * After a restore of an older certificates folder (docs/operations.md: revoke again what was revoked
 * since the backup), every tokens file the tooling writes holds the token a rotation since the
 * backup replaced. The gateway refused each such file whole: a device revoked after the restore kept
 * its token accepted, and its connection open, until the gateways restarted.
 */
describe('the gateway side: a file that brings back a replaced token and revokes another', () => {
  it('takes the revocation; the replaced token stays refused and its successor good', async () => {
    const pki = makeTestPki([]);
    try {
      for (const id of ['tok-p', 'tok-q']) await issueDeviceToken(pki.dir, id);
      const file = tokenPaths(pki.dir).file;
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      const backup = readFileSync(file, 'utf8');
      const oldP = token('tok-p');
      const q = token('tok-q');
      const logs = captureLogs();
      const tokens = new DeviceTokens({ path: file, maxFailures: 100, failureWindowMs: 60_000, log: logs.logger });
      try {
        const pIdentity = await tokens.verify(oldP, '10.6.0.1');
        await issueDeviceToken(pki.dir, 'tok-p', { renew: true });
        await eventually(() => (!tokens.isCurrent(pIdentity) ? true : undefined), 10_000, 'the rotation read');
        const newP = token('tok-p');
        const qIdentity = await tokens.verify(q, '10.6.0.1');
        // The backup restored (its tokens file holds tok-p's replaced token), then tok-q revoked there.
        writeFileSync(file, backup);
        revokeDevice(pki.dir, 'tok-q');
        assert.equal(JSON.parse(readFileSync(file, 'utf8')).devices['tok-p'].tokenId, pIdentity.tokenId, 'the file brings the replaced token back');
        await eventually(() => (!tokens.isCurrent(qIdentity) ? true : undefined), 10_000, 'the revocation of tok-q taken');
        assert.equal(await codeOf(tokens.verify(q, '10.6.0.2')), 'GATEWAY_TOKEN_REVOKED');
        assert.equal(await codeOf(tokens.verify(oldP, '10.6.0.2')), 'GATEWAY_TOKEN_INVALID', 'the replaced token stays refused');
        assert.equal((await tokens.verify(newP, '10.6.0.2')).deviceId, 'tok-p', 'its successor stays good');
        assert.ok(logs.lines.some((l) => l.code === 'TOKENS_FILE_INVALID' && Array.isArray(l.devices) && (l.devices as string[]).includes('tok-p')), 'the device brought back named in the log');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * A revoked device is answered GATEWAY_TOKEN_REVOKED before any hash, so its tries cost the gateway
 * nothing and bring no guess nearer; yet each was charged against its address. A device revoked
 * while still running in the field (decommissioned, replaced) retries with its back-off, and kept
 * its address's budget spent: every token device behind the same NAT was refused
 * GATEWAY_TOKEN_THROTTLED for as long as it ran.
 */
describe('the gateway side: a revoked token retried', () => {
  it('spends nothing of its address budget: the other devices behind the address get in', async () => {
    const pki = makeTestPki([]);
    try {
      for (const id of ['tok-gone', 'tok-here']) await issueDeviceToken(pki.dir, id);
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      revokeDevice(pki.dir, 'tok-gone');
      const tokens = new DeviceTokens({ path: tokenPaths(pki.dir).file, maxFailures: 3, failureWindowMs: 60_000, log: silent });
      try {
        for (let i = 0; i < 6; i++) assert.equal(await codeOf(tokens.verify(token('tok-gone'), '10.6.0.1')), 'GATEWAY_TOKEN_REVOKED', `try ${i + 1}`);
        assert.equal((await tokens.verify(token('tok-here'), '10.6.0.1')).deviceId, 'tok-here', 'another device behind the address');
        // Guesses from the address are still counted.
        for (let i = 0; i < 3; i++) assert.equal(await codeOf(tokens.verify(generateToken('tok-here'), '10.6.0.1')), 'GATEWAY_TOKEN_INVALID');
        assert.equal(await codeOf(tokens.verify(token('tok-gone'), '10.6.0.1')), 'GATEWAY_TOKEN_THROTTLED');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});

/**
 * A copy that is not atomic (cp over it after removing it, an editor's save, rsync without
 * --inplace replacing it) leaves the tokens file gone for a moment. The gateway took that as a file
 * with no tokens: every token refused and every token device's connection closed, though the
 * console's role tokens keep the last good set in the same case.
 */
describe('the gateway side: the tokens file gone for a while', () => {
  it('keeps the last good file in force, says so with a code, and takes the file again when it is back', async () => {
    const pki = makeTestPki([]);
    try {
      for (const id of ['tok-g', 'tok-h']) await issueDeviceToken(pki.dir, id);
      const file = tokenPaths(pki.dir).file;
      const token = (id: string) => readFileSync(tokenPaths(pki.dir, id).token, 'utf8').trim();
      const { lines, logger } = captureLogs();
      let changes = 0;
      const tokens = new DeviceTokens({ path: file, maxFailures: 100, failureWindowMs: 60_000, log: logger, onChange: () => changes++ });
      try {
        const g = await tokens.verify(token('tok-g'), '10.7.0.1');
        const seen = changes;
        renameSync(file, `${file}.away`);
        await new Promise((res) => setTimeout(res, TIMINGS.deviceTokensReloadMs * 2 + 500));
        assert.equal(changes, seen, 'no connection closed');
        assert.equal(tokens.isCurrent(g), true);
        assert.equal((await tokens.verify(token('tok-h'), '10.7.0.2')).deviceId, 'tok-h');
        const warned = lines.filter((l) => l.code === 'CONFIG_FILE_UNREADABLE' && l.path === file);
        assert.equal(warned.length, 1, JSON.stringify(lines));

        // Back, with tok-g revoked meanwhile: taken.
        renameSync(`${file}.away`, file);
        revokeDevice(pki.dir, 'tok-g');
        await eventually(() => (tokens.isCurrent(g) ? undefined : true), 10_000, 'the file taken again');
        assert.equal(await codeOf(tokens.verify(token('tok-g'), '10.7.0.3')), 'GATEWAY_TOKEN_REVOKED');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });

  it('started without the file: no token is accepted until it is there', async () => {
    const pki = makeTestPki([]);
    try {
      await issueDeviceToken(pki.dir, 'tok-i');
      const file = tokenPaths(pki.dir).file;
      renameSync(file, `${file}.away`);
      const tokens = new DeviceTokens({ path: file, maxFailures: 100, failureWindowMs: 60_000, log: silent });
      try {
        const t = readFileSync(tokenPaths(pki.dir, 'tok-i').token, 'utf8').trim();
        assert.equal(await codeOf(tokens.verify(t, '10.7.1.1')), 'GATEWAY_TOKEN_UNKNOWN_DEVICE');
        renameSync(`${file}.away`, file);
        await eventually(async () => ((await codeOf(tokens.verify(t, '10.7.1.2'))) === 'ok' ? true : undefined), 10_000, 'the file taken when it appears');
      } finally {
        tokens.close();
      }
    } finally {
      pki.cleanup();
    }
  });
});
