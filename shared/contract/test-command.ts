import { z } from 'zod';
import { MANAGE } from '../limits.ts';

/**
 * The test event of the management API (docs/management-api.md): an ordinary command, sent by the
 * command API and authenticated with the device's key like every command (shared/security/
 * command-auth.ts), that every field client answers by itself. It changes nothing on the device:
 * its answer proves the whole downlink (command API → internal broker → bridge → DMZ broker →
 * gateway → device, the device's check of the command's MAC) and the uplink of the signed response.
 */
export const TEST_COMMAND = 'fieldstream.test';

export const TestCommandParamsSchema = z.strictObject({
  /** who asked for it (the management API's caller), shown in the device's log */
  requestedBy: z.string().min(1).max(64).optional(),
  /** free text for the device's log and its answer */
  note: z.string().max(MANAGE.testNoteMaxChars).optional(),
});
export type TestCommandParams = z.infer<typeof TestCommandParamsSchema>;

/** What the device answers (status `completed`). */
export type TestCommandResult = {
  test: 'received';
  /** epoch ms by the device's clock */
  receivedAt: number;
  /** epoch ms the command API issued it */
  issuedAt: number;
  note?: string;
};

/** The device's handler: refuses params that are not a test event's, answers the rest. */
export function answerTestCommand(params: unknown, issuedAt: number, now = Date.now()): { status: 'completed'; result: TestCommandResult } | { status: 'rejected'; result: string } {
  const p = TestCommandParamsSchema.safeParse(params ?? {});
  if (!p.success) return { status: 'rejected', result: `not a test event: ${p.error.issues[0]?.message ?? 'invalid params'}` };
  return { status: 'completed', result: { test: 'received', receivedAt: now, issuedAt, ...(p.data.note !== undefined ? { note: p.data.note } : {}) } };
}
