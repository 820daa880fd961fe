import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, statSync, ftruncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readIssuedRecords, readRevokedSerials, recordIssued } from '../../pki/revocation.ts';
import { listDevices } from '../../scripts/admin/devices.ts';
import { FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS } from '../../shared/limits.ts';
import { tempDir } from '../helpers/pki.ts';

/**
 * The CA's logs (ca/issued.jsonl, ca/revoked.jsonl) were read whole: a file damaged into one
 * endless line (a disk fault, a log replaced by a dump) was held in memory at once, past 512 MiB an
 * uncoded ERR_STRING_TOO_LONG, and a line past any record's length at the end was passed over as a
 * torn append.
 */
const coded = (code: ErrorCode) => (e: unknown) => e instanceof FieldStreamError && e.code === code;
const RECORD = JSON.stringify({ name: 'devices/pump-1', serial: '0A', notAfter: 'Jan  1 00:00:00 2030 GMT', subject: 'CN=pump-1' });
/** A certificate to record as issued (openssl's, self-signed: recordIssued reads its serial and subject). */
const CERT = execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=pump-2', '-days', '1', '-keyout', '/dev/null'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });

/** A PKI root whose ca/NAME holds `text`, then, when given, `zeros` bytes more (sparse: no disk taken). */
function caLog(dir: string, name: string, text: string, zeros = 0): string {
  const ca = join(dir, 'ca');
  mkdirSync(ca, { recursive: true });
  const path = join(ca, name);
  writeFileSync(path, text);
  if (zeros > 0) {
    const fd = openSync(path, 'r+');
    try {
      ftruncateSync(fd, Buffer.byteLength(text) + zeros);
    } finally {
      closeSync(fd);
    }
  }
  return path;
}

describe("the CA's logs are read a bounded line at a time", () => {
  it('a record line longer than LIMITS.pkiLogLineMaxBytes, in the middle or at the end, is CONFIG_INVALID, not passed over as a torn append', () => {
    const work = tempDir('pki-log-long-line');
    try {
      const long = `{"name":"${'x'.repeat(LIMITS.pkiLogLineMaxBytes)}"}`;
      caLog(work.dir, 'issued.jsonl', `${RECORD}\n${long}`);
      assert.throws(() => readIssuedRecords(work.dir), coded('CONFIG_INVALID'));
      caLog(work.dir, 'issued.jsonl', `${RECORD}\n${long}\n${RECORD}\n`);
      assert.throws(() => readIssuedRecords(work.dir), coded('CONFIG_INVALID'));
      // A short torn end is still passed over, as before.
      caLog(work.dir, 'issued.jsonl', `${RECORD}\n{"name":"dev`);
      assert.equal(readIssuedRecords(work.dir).length, 1);
    } finally {
      work.cleanup();
    }
  });

  it('a log of 600 MiB without a line break is CONFIG_INVALID for the revocation tools and skipped by the device list, never read whole', () => {
    const work = tempDir('pki-log-huge');
    try {
      const zeros = 600 * 1024 * 1024;
      caLog(work.dir, 'revoked.jsonl', `${RECORD}\n`, zeros);
      assert.throws(() => readRevokedSerials(work.dir), coded('CONFIG_INVALID'));
      const issued = caLog(work.dir, 'issued.jsonl', `${RECORD}\n`, zeros);
      assert.throws(() => recordIssued(work.dir, 'devices/pump-2', CERT), coded('CONFIG_INVALID'));
      assert.equal(statSync(issued).size, Buffer.byteLength(RECORD) + 1 + zeros, 'the log left as it was: an end past any record is no torn append to cut off');
      assert.deepEqual(listDevices(work.dir).map((d) => d.id), ['pump-1'], 'the record listed, the damaged line skipped, as the list skips any line that is no record');
    } finally {
      work.cleanup();
    }
  });

  it('appending reads only the end of the log: a torn end is cut off first, a whole last record without its newline kept', () => {
    const work = tempDir('pki-log-append');
    try {
      const path = caLog(work.dir, 'issued.jsonl', `${RECORD}\n{"name":"dev`);
      recordIssued(work.dir, 'devices/pump-2', CERT);
      const lines = readFileSync(path, 'utf8').split('\n');
      assert.deepEqual([lines.length, lines[0], JSON.parse(lines[1] as string).name, lines[2]], [3, RECORD, 'devices/pump-2', '']);
      writeFileSync(path, RECORD);
      recordIssued(work.dir, 'devices/pump-2', CERT);
      assert.deepEqual(readIssuedRecords(work.dir).map((r) => r.name), ['devices/pump-1', 'devices/pump-2']);
    } finally {
      work.cleanup();
    }
  });
});
