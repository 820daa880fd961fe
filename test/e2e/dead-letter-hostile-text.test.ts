import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { DeadLetters } from '../../internal-network/distributor/dead-letter.ts';
import { FileStore } from '../../internal-network/distributor/file-store.ts';
import { REPO_ROOT } from '../../scripts/admin/paths.ts';
import { uplinkTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { tempDir } from '../helpers/pki.ts';

const DEVICE = 'cam-7';
/** Any character that drives a terminal; line feeds and tabs are the output's own. */
// eslint-disable-next-line no-control-regex
const DRIVES_A_TERMINAL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/**
 * `fieldstream-admin dead-letters replay` prints, for each letter it cannot write, why: text that
 * quotes what a device chose. Here a device's file whose name holds a right-to-left override: the
 * distributor refuses the name (DISTRIBUTOR_UNSAFE_FILENAME, its message quoting it) and keeps the
 * file as a dead letter, and the replay says why it cannot write it. Printed raw, the override
 * reversed the rest of the operator's line on a terminal that applies bidi (the extension spoofed).
 */
describe('fieldstream-admin prints what devices chose, never as terminal control', () => {
  const work = tempDir('dead-letter-hostile');
  const letters = join(work.dir, 'letters');
  const files = join(work.dir, 'files');
  const keys = join(work.dir, 'keys');
  const state = join(work.dir, 'state');
  after(() => work.cleanup());

  it('dead-letters replay: a letter of a file whose name holds a bidi override is reported without it', async () => {
    mkdirSync(keys, { recursive: true });
    mkdirSync(state);
    const filename = 'invoice\u202efdp.exe';
    const data = Buffer.from('the file');
    const payload = { filename, data: data.toString('base64') };
    const envelope = Buffer.from(JSON.stringify({ v: 1, deviceId: DEVICE, dataType: 'file', gatewayId: 'gw-1', receivedAt: Date.now(), messages: [{ messageId: 'f1', payload }] }));
    // As the distributor's consumer: the store's verdict, kept with the message.
    const err = await new FileStore(files).store(DEVICE, payload).then(
      () => assert.fail('stored'),
      (e: unknown) => e as FieldStreamError,
    );
    assert.equal(err.code, 'DISTRIBUTOR_UNSAFE_FILENAME');
    assert.ok(err.message.includes(filename), 'the verdict kept with the letter quotes the name as it came');
    const dead = new DeadLetters(letters);
    await dead.put(uplinkTopic(DEVICE, 'file'), envelope, err);
    await dead.close();

    const r = await new Promise<{ code: number; out: string; err: string }>((resolve) => {
      execFile(
        join(REPO_ROOT, 'bin', 'fieldstream-admin'),
        ['dead-letters', 'replay'],
        {
          cwd: work.dir,
          env: {
            PATH: process.env.PATH,
            FIELDSTREAM_ENV_FILE: '/dev/null',
            DEAD_LETTER_PATH: letters,
            DISTRIBUTOR_DEVICE_KEYS_DIR: keys,
            // The distributor's state (its admitted event tag values): a folder, of none here.
            DISTRIBUTOR_STATE_DIR: state,
            DISTRIBUTOR_REQUIRE_SIGNATURES: 'false',
            TIMESERIES_LOCAL_PATH: join(work.dir, 'timeseries'),
            FILE_STORAGE_PATH: files,
          },
        },
        (e, out, errText) => resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, out, err: errText }),
      );
    });
    assert.match(r.out, /DEAD_LETTER_NOT_REPLAYABLE .*filename: file name contains an invisible format character \(U\+202E/, r.out + r.err);
    assert.doesNotMatch(r.out + r.err, DRIVES_A_TERMINAL, JSON.stringify(r.out + r.err));
  });
});
