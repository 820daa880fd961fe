import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runDoctor } from '../../field-client/src/doctor.ts';
import { freePort } from '../../scripts/local-stack/ports.ts';
import { foreignDeviceCert, makeTestPki } from '../helpers/pki.ts';
import { revokeDevice } from '../../pki/revocation.ts';

/**
 * `fieldstream doctor`'s certificate check, before any network step: what a device presents must be
 * what the gateway takes as a device (gateway/identity.ts: OU "devices", a device id as CN, a
 * certificate a client may log in with), or the doctor says so with the gateway's code.
 */
describe('fieldstream doctor: the device certificate', () => {
  let pki: ReturnType<typeof makeTestPki>;
  let url: string;
  before(async () => {
    pki = makeTestPki(['dev-a', 'dev-r']);
    url = `wss://localhost:${await freePort()}/ws`; // nothing listens: only the local checks matter here
  });
  after(() => pki.cleanup());

  const doctor = (env: Record<string, string>) =>
    runDoctor({
      DEVICE_ID: 'dev-a',
      GATEWAY_URL: url,
      FIELD_CA_FILE: pki.paths.publicCa,
      FIELD_CERT_FILE: pki.paths.device('dev-a').cert,
      FIELD_KEY_FILE: pki.paths.device('dev-a').key,
      FIELD_DATA_DIR: join(pki.dir, 'doctor-data'),
      FIELD_HTTP_PORT: 'off',
      ...env,
    });
  const certificates = async (env: Record<string, string>) => (await doctor(env)).find((r) => r.name === 'certificates');

  it('takes the device certificate of its bundle', async () => {
    assert.equal((await certificates({}))?.level, 'ok');
  });

  it("refuses a service's certificate of the same CA, which the gateway refuses as no device's, rather than pass it or say to rename the device", async () => {
    // A consumer's certificate and key with DEVICE_ID=consumer passed every check ("ok"), and the
    // gateway then refused it (GATEWAY_NOT_A_DEVICE_CERTIFICATE); with the device's id, the doctor
    // said to make DEVICE_ID the service's name.
    const consumer = pki.paths.service('internal/consumer');
    for (const deviceId of ['consumer', 'dev-a']) {
      const r = await certificates({ DEVICE_ID: deviceId, FIELD_CERT_FILE: consumer.cert, FIELD_KEY_FILE: consumer.key });
      assert.equal(r?.level, 'fail', JSON.stringify(r));
      assert.match(r?.detail ?? '', /^GATEWAY_NOT_A_DEVICE_CERTIFICATE: /, JSON.stringify(r));
      assert.doesNotMatch(r?.hint ?? '', /make DEVICE_ID match/, JSON.stringify(r));
      assert.match(r?.hint ?? '', /client\.crt/, JSON.stringify(r));
    }
  });

  it('says FIELD_CERT_FILE is the CA certificate when it is (the bundle\'s ca.crt for its client.crt), not that the key is wrong', async () => {
    const r = await certificates({ FIELD_CERT_FILE: pki.paths.publicCa });
    assert.equal(r?.level, 'fail', JSON.stringify(r));
    assert.match(r?.detail ?? '', /FIELD_CERT_FILE.*CA/, JSON.stringify(r));
    assert.match(r?.hint ?? '', /client\.crt/, JSON.stringify(r));
  });

  it("fails a device certificate the CA's CRL it holds revokes, rather than call it valid for its remaining days", async () => {
    // It said "certificates ok: ... valid 729 more days" of a revoked certificate: the gateway
    // refuses it (GATEWAY_CERTIFICATE_REVOKED), which the doctor only showed once it reached one.
    revokeDevice(pki.dir, 'dev-r');
    const results = await doctor({ DEVICE_ID: 'dev-r', FIELD_CERT_FILE: pki.paths.device('dev-r').cert, FIELD_KEY_FILE: pki.paths.device('dev-r').key });
    const all = JSON.stringify(results);
    const r = results.find((x) => x.name === 'crl');
    assert.equal(r?.level, 'fail', all);
    assert.match(r?.detail ?? '', /^GATEWAY_CERTIFICATE_REVOKED: FIELD_CERT_FILE=.* \(serial [0-9A-F]+\) is revoked in .*ca\.crl/, all);
    assert.ok(!results.some((x) => x.name === 'tcp'), `no network step for a certificate the gateway refuses: ${all}`);
    assert.equal((await certificates({}))?.level, 'ok', 'dev-a, not revoked, still passes');
  });

  it('starts each failure of the local checks with a code of docs/errors.md: the one the client stops on, or the gateway refuses with', async () => {
    // The lines said "FIELD_CA_FILE=...: ENOENT", "FIELD_KEY_FILE is not the key of FIELD_CERT_FILE",
    // "the certificate is for device ...": no code to look up, though the client stops on each with one.
    const garbage = join(pki.dir, 'garbage.pem');
    writeFileSync(garbage, 'garbage\n');
    const foreign = foreignDeviceCert('dev-a');
    const foreignCa = join(pki.dir, 'foreign-ca.crt');
    writeFileSync(foreignCa, foreign.ca);
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ DEVICE_ID: '' }, 'configuration', /^CONFIG_INVALID: .*DEVICE_ID/],
      [{ FIELD_CA_FILE: join(pki.dir, 'missing.crt') }, 'certificates', /^CONFIG_FILE_UNREADABLE: FIELD_CA_FILE=.*: ENOENT$/],
      [{ FIELD_CERT_FILE: pki.dir }, 'certificates', /^CONFIG_FILE_UNREADABLE: FIELD_CERT_FILE=.*: EISDIR$/],
      [{ FIELD_KEY_FILE: pki.paths.device('dev-r').key }, 'certificates', /^CONFIG_INVALID: FIELD_KEY_FILE is not the key of FIELD_CERT_FILE/],
      [{ FIELD_CA_FILE: foreignCa }, 'certificates', /^CONFIG_INVALID: FIELD_CERT_FILE was not issued by the CA/],
      [{ DEVICE_ID: 'dev-other' }, 'certificates', /^CONFIG_INVALID: the certificate is for device "dev-a"/],
      [{ FIELD_CRL_FILE: garbage }, 'crl', /^CONFIG_INVALID: FIELD_CRL_FILE=/],
      [{ FIELD_TOKEN_FILE: garbage }, 'credentials', /^CONFIG_INVALID: FIELD_TOKEN_FILE=/],
      [{ FIELD_TOKEN_FILE: garbage, FIELD_CA_FILE: garbage }, 'credentials', /^CONFIG_INVALID: FIELD_CA_FILE=.* is not a PEM certificate/],
    ];
    for (const [env, name, code] of cases) {
      const results = await doctor(env);
      const r = results.find((x) => x.level === 'fail');
      assert.equal(r?.name, name, `${JSON.stringify(env)}: ${JSON.stringify(results)}`);
      assert.match(r?.detail ?? '', code, `${JSON.stringify(env)}: ${JSON.stringify(r)}`);
    }
  });

  it('names the file that is no certificate, and says what to put there', async () => {
    // Both certificates were parsed in one step: "not a PEM certificate: ...PEM routines::no start
    // line", with no hint, said nothing of which of the two it was; the key's failure named no file.
    const garbage = join(pki.dir, 'not-a-certificate.pem');
    writeFileSync(garbage, 'garbage\n');
    for (const [variable, what, file] of [
      ['FIELD_CERT_FILE', 'a PEM certificate', /client\.crt/],
      ['FIELD_CA_FILE', 'a PEM certificate', /ca\.crt/],
      ['FIELD_KEY_FILE', 'a private key', /client\.key/],
    ] as const) {
      const r = await certificates({ [variable]: garbage });
      assert.equal(r?.level, 'fail', JSON.stringify(r));
      assert.ok((r?.detail ?? '').startsWith(`CONFIG_INVALID: ${variable}=${garbage} is not ${what}`), JSON.stringify(r));
      assert.match(r?.hint ?? '', file, JSON.stringify(r));
    }
  });
});
