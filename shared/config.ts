import { config as dotenvConfig } from 'dotenv';
import { z } from 'zod';
import { closeSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { FieldStreamError } from './errors.ts';
import { LIMITS, TIMINGS } from './limits.ts';
import { readUpToSync } from './durable-fs.ts';

/**
 * Settings come from the environment only, read once at start-up: `.env` (dotenv) fills in what
 * the real environment does not set, then a strict zod schema parses the result. A wrong or
 * missing setting stops the service with a message naming the variable.
 *
 * The file is FIELDSTREAM_ENV_FILE's, else the working directory's `.env`; one that cannot be read
 * (not there when named, a folder, no permission) stops the program at once with
 * CONFIG_FILE_UNREADABLE and status 78.
 */
export function loadDotenv(path?: string): void {
  const named = path ?? (process.env.FIELDSTREAM_ENV_FILE?.trim() || undefined);
  const file = named ?? '.env';
  // quiet: dotenv would otherwise print a banner on stdout, which is not a log line.
  const { error } = dotenvConfig({ path: file, quiet: true });
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  // No .env in the working directory is the usual case (a fresh clone, a container): none. Any
  // other failure was once passed over in silence, and the program ran on its defaults, every
  // setting of the file ignored (npm start writing to data/ instead of the InfluxDB it named).
  if (error === undefined || (named === undefined && code === 'ENOENT')) return;
  const err = new FieldStreamError(
    'CONFIG_FILE_UNREADABLE',
    `${named === undefined ? `${resolve(file)} (the working directory's .env)` : `FIELDSTREAM_ENV_FILE=${file}`} cannot be read: ${error.message}. ` +
      (named === undefined ? 'Make it a file this user can read, or remove it.' : 'Name a file this user can read (/dev/null: none).'),
    { file, ...(code === undefined ? {} : { errno: code }) },
  );
  // At the first line of every program, before anything else: one line, as a setting at fault
  // stops a service (shared/service.ts), with EX_CONFIG.
  process.stderr.write(`fieldstream: error ${err.code}: ${err.message}\n`);
  process.exit(78);
}

type Env = Record<string, string | undefined>;

export function parseConfig<S extends z.ZodType>(schema: S, env: Env = process.env): Readonly<z.infer<S>> {
  // Empty strings count as unset, so `FOO=` in a .env file means "use the default".
  const cleaned: Env = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && v.trim() !== '') cleaned[k] = v.trim();
  }
  let result: ReturnType<S['safeParse']>;
  try {
    result = schema.safeParse(cleaned) as ReturnType<S['safeParse']>;
  } catch (err) {
    // A check that throws instead of reporting an issue is a bug in the schema; still one line, not a stack.
    throw new FieldStreamError('CONFIG_INVALID', `Invalid configuration — ${oneLine((err as Error).message)}`);
  }
  if (!result.success) {
    // One line per error: the variable and what it must be (zod's messages may span lines).
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(settings)'}: ${oneLine(i.message)}`);
    throw new FieldStreamError('CONFIG_INVALID', `Invalid configuration — ${problems.join('; ')}`, {
      variables: result.error.issues.map((i) => i.path.join('.')),
    });
  }
  return Object.freeze(result.data) as Readonly<z.infer<S>>;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}

/** Reusable setting types. */
export const setting = {
  port: (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback),
  host: (fallback: string) => z.string().min(1).default(fallback),
  /** A port, or "off" (read as undefined): for an optional listener such as a metrics endpoint. */
  portOrOff: (fallback: number | 'off') =>
    z
      .union([z.literal('off'), z.coerce.number().int().min(0).max(65535)])
      .default(fallback)
      .transform((v) => (v === 'off' ? undefined : v)),
  bool: (fallback: boolean) =>
    z
      .enum(['true', 'false', '1', '0', 'yes', 'no'])
      .default(fallback ? 'true' : 'false')
      .transform((v) => v === 'true' || v === '1' || v === 'yes'),
  positiveInt: (fallback: number) => z.coerce.number().int().positive().default(fallback),
  /** Milliseconds a Node timer is set to (a timeout, an interval, a backoff's ceiling): at most
   * TIMINGS.timerMaxMs, past which the timer would fire at once. */
  timerMs: (fallback: number) => z.coerce.number().int().positive().max(TIMINGS.timerMaxMs).default(fallback),
  logLevel: () => z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** A URL with one of these schemes. Something that is no URL at all (`http//x`) is refused with
   * the same message, never with URL's TypeError: `abort` stops zod before the scheme check. */
  url: (protocols: readonly string[]) => {
    const expected = `must be a URL with scheme ${protocols.join(' or ')} (e.g. ${protocols[0]}://host:port)`;
    return z
      .url({ error: expected, abort: true })
      .refine((u) => URL.canParse(u) && protocols.includes(new URL(u).protocol.replace(':', '')), { message: expected });
  },
};

/** Reads a JSON file named by a setting and checks it against a schema; errors name the setting. */
/**
 * The text of a file a setting names, read whole up to LIMITS.settingFileMaxBytes: one it cannot
 * read is CONFIG_FILE_UNREADABLE, one larger (a setting naming /dev/zero read until the process ran
 * out of memory) CONFIG_INVALID, each naming the setting.
 */
export function readSettingFile(variable: string, path: string): string {
  let data: Buffer;
  try {
    const fd = openSync(path, 'r');
    try {
      data = readUpToSync(fd, 0, LIMITS.settingFileMaxBytes + 1);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `${variable}=${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { variable, path });
  }
  if (data.length > LIMITS.settingFileMaxBytes) {
    throw new FieldStreamError('CONFIG_INVALID', `${variable}=${path} is larger than ${LIMITS.settingFileMaxBytes} bytes: not a file this setting takes.`, { variable, path });
  }
  return data.toString('utf8');
}

export function readJsonSetting<S extends z.ZodType>(variable: string, path: string, schema: S): z.infer<S> {
  const text = readSettingFile(variable, path);
  // Read, but not JSON (a typo, a file cut short): its content is wrong, not its path or permissions.
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new FieldStreamError('CONFIG_INVALID', `${variable}=${path} is not JSON: ${(err as Error).message}`, { variable, path });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new FieldStreamError('CONFIG_INVALID', `${variable}=${path}: ${i ? `${i.path.join('.') || '(file)'}: ${i.message}` : 'invalid'}`, { variable, path });
  }
  return parsed.data;
}
