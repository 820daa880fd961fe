import assert from 'node:assert/strict';
import { isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';

/** Asserts that `p` rejects with a FieldStreamError of `code`, and returns that error (to read its message). */
export async function refusedWith(code: ErrorCode, p: Promise<unknown>): Promise<Error> {
  let caught: Error | undefined;
  await assert.rejects(p, (err) => {
    assert.ok(isFieldStreamError(err), String(err));
    assert.equal(err.code, code, err.message);
    caught = err;
    return true;
  });
  return caught as Error;
}
