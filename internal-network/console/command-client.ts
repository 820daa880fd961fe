import { z } from 'zod';
import { ERRORS, FieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import { JsonValueSchema } from '../../shared/contract/payloads.ts';
import { CommandViewSchema as CommandViewSchemaOfApi } from '../command-api/schemas.ts';

const ms = z.iso.datetime().transform((t) => Date.parse(t));

/** A command as the command API shows it (its `view`), times turned into epoch ms for the browser. */
const CommandFieldsSchema = CommandViewSchemaOfApi.extend({
  issuedAt: ms,
  expiresAt: ms,
  sentAt: ms.optional(),
  response: CommandViewSchemaOfApi.shape.response.unwrap().extend({ at: ms }).optional(),
  expiredAt: ms.optional(),
});
const withUpdatedAt = <C extends z.infer<typeof CommandFieldsSchema>>(c: C) => ({ ...c, updatedAt: Math.max(c.issuedAt, c.sentAt ?? 0, c.response?.at ?? 0, c.expiredAt ?? 0) });
const CommandViewSchema = CommandFieldsSchema.transform(withUpdatedAt);

/** What the command API answers, read as untrusted as any other network answer. */
const ListSchema = z.object({ commands: z.array(CommandViewSchema), total: z.number().int().nonnegative().optional() });
/**
 * What it answers a command sent (IssuedAnswerSchema): the request's params once, beside the
 * commands. A command API of before that gave each command its params: read too, so that either
 * may be upgraded first.
 */
const IssuedSchema = z.object({ params: JsonValueSchema.optional(), commands: z.array(CommandFieldsSchema) });
const ErrorSchema = z.object({ code: z.string().max(100), message: z.string().max(2000) });
/** A refusal of the command API's own: one of its codes (API_*, of the registry this console knows). */
const RefusalSchema = z.object({
  code: z.enum(Object.keys(ERRORS).filter((c) => c.startsWith('API_')) as [ErrorCode, ...ErrorCode[]]),
  message: z.string().max(2000),
});
/**
 * 4xx answers that are about the console as the command API's client, not about what its caller
 * asked: a method it does not take (CONSOLE_COMMAND_API_URL pointing at something else) and its
 * throttle of the console's address (every operator's). These stay gateway failures.
 */
const NOT_THE_CALLERS = new Set([405, 429]);
export type ConsoleCommand = z.infer<typeof CommandViewSchema>;

/**
 * The command API refused the request for its caller's reason (a 4xx: no signing key for the
 * device, no such command, a body too large): passed on with the command API's own code and
 * status, since a gateway failure (502) would send the caller looking for a fault that is none.
 */
export class CommandApiRefusal extends FieldStreamError {
  constructor(
    code: ErrorCode,
    message: string,
    /** the status the command API answered (4xx) */
    readonly status: number,
  ) {
    super(code, message);
  }

  override get httpStatus(): number {
    return this.status;
  }
}

/** Every code the client throws but a CommandApiRefusal's, so that its callers can map each to their
 * own (the management API answers MANAGE_* codes, and those refusals as they are): a new one fails
 * their type check until it is mapped. */
export type CommandClientCode = 'CONSOLE_UNAUTHORIZED' | 'CONSOLE_FORBIDDEN' | 'CONSOLE_INVALID_REQUEST' | 'CONSOLE_COMMAND_API_FAILED';
const fail = (code: CommandClientCode, message: string, details?: Record<string, unknown>) => new FieldStreamError(code, message, details);

/**
 * The console's way to the command API: every request carries the logged-in user's own token, so
 * the command API applies that user's role again (a viewer's command is refused there too) and its
 * log names who sent what.
 */
export class CommandClient {
  constructor(
    private readonly baseUrl: string,
    /** told of a token the command API refused (401): revoked there since the login */
    private readonly onRefused: (token: string) => void = () => undefined,
  ) {}

  /** A device's newest commands, `limit` at most, and how many the command API keeps of the device's (a version before said not). */
  async list(deviceId: string, token: string, limit: number): Promise<{ commands: ConsoleCommand[]; total?: number }> {
    const url = new URL('/v1/commands', this.baseUrl);
    url.searchParams.set('deviceId', deviceId);
    url.searchParams.set('limit', String(limit));
    const { commands, total } = await this.call(url, { method: 'GET' }, token, ListSchema);
    return total === undefined ? { commands } : { commands, total };
  }

  /** One command by its id (the management API's test events). */
  async get(commandId: string, token: string): Promise<ConsoleCommand> {
    return this.call(new URL(`/v1/commands/${encodeURIComponent(commandId)}`, this.baseUrl), { method: 'GET' }, token, CommandViewSchema);
  }

  /**
   * Sends a command as the user of `token`. `idempotencyKey`: the caller's key for this request
   * (its Idempotency-Key), handed to the command API, which answers a request sent again under it
   * with the command the first made: an answer lost on the way (a timeout here) leaves the caller
   * unsure whether the command was taken, and a retry without the key would be a second command.
   */
  async send(deviceId: string, body: { command: string; params?: unknown; ttlSeconds?: number | undefined }, token: string, idempotencyKey?: string): Promise<ConsoleCommand> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    // A Structured Fields String (RFC 8941 §3.3.3), as the command API reads it: quoted, `"` and `\` escaped.
    if (idempotencyKey !== undefined) headers['idempotency-key'] = `"${idempotencyKey.replace(/["\\]/g, '\\$&')}"`;
    const answer = await this.call(
      new URL('/v1/commands', this.baseUrl),
      { method: 'POST', headers, body: JSON.stringify({ deviceId, ...body }) },
      token,
      IssuedSchema,
    );
    const first = answer.commands[0];
    if (!first) throw fail('CONSOLE_COMMAND_API_FAILED', 'The command API answered without the command.');
    const params = first.params ?? answer.params;
    return withUpdatedAt({ ...first, ...(params !== undefined ? { params } : {}) });
  }

  private async call<S extends z.ZodType>(url: URL, init: RequestInit, token: string, schema: S): Promise<z.infer<S>> {
    let res: Response;
    try {
      res = await fetch(url, { ...init, headers: { ...(init.headers as Record<string, string> | undefined), authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(TIMINGS.commandApiRequestTimeoutMs) });
    } catch (err) {
      throw fail('CONSOLE_COMMAND_API_FAILED', `The command API did not answer: ${(err as Error).message}`);
    }
    const body = await boundedJson(res);
    if (!res.ok) {
      const e = ErrorSchema.safeParse(body);
      // The command API's own refusals keep their meaning: its credential check, its role check and its validation.
      if (res.status === 401) {
        this.onRefused(token);
        throw fail('CONSOLE_UNAUTHORIZED', 'The command API no longer accepts the token of this login (revoked?): log in again.');
      }
      if (res.status === 403) throw fail('CONSOLE_FORBIDDEN', e.success ? e.data.message : 'The command API refused this credential.');
      if (res.status === 400 && e.success) throw fail('CONSOLE_INVALID_REQUEST', e.data.message, { commandApiCode: e.data.code });
      const refusal = RefusalSchema.safeParse(body);
      if (res.status >= 400 && res.status < 500 && !NOT_THE_CALLERS.has(res.status) && refusal.success) throw new CommandApiRefusal(refusal.data.code, refusal.data.message, res.status);
      throw fail('CONSOLE_COMMAND_API_FAILED', `The command API answered ${res.status}${e.success ? ` ${e.data.code}: ${e.data.message}` : ''}`, e.success ? { commandApiCode: e.data.code } : undefined);
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) throw fail('CONSOLE_COMMAND_API_FAILED', 'The command API answered something the console does not understand.');
    return parsed.data;
  }
}

/**
 * The answer's JSON, undefined when it is none; read up to LIMITS.consoleCommandApiAnswerMaxBytes,
 * past which it is dropped (CONSOLE_COMMAND_API_FAILED): read whole, an answer without end (a
 * command API gone wrong, another server at CONSOLE_COMMAND_API_URL) filled the console's memory.
 */
async function boundedJson(res: Response): Promise<unknown> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body ?? []) {
      size += chunk.length;
      if (size > LIMITS.consoleCommandApiAnswerMaxBytes) {
        await res.body?.cancel().catch(() => undefined);
        throw fail('CONSOLE_COMMAND_API_FAILED', `The command API's answer is longer than ${LIMITS.consoleCommandApiAnswerMaxBytes} bytes (LIMITS.consoleCommandApiAnswerMaxBytes): not read.`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof FieldStreamError) throw err;
    throw fail('CONSOLE_COMMAND_API_FAILED', `The command API's answer was cut off: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}
