import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

/** fs calls a test makes fail as a failing disk does, for the files it names (shared/line-file.ts, durable-fs.ts). */
export type FsCall = 'closeSync' | 'fsyncSync' | 'ftruncateSync';

/**
 * Runs `body` with the named fs calls failing with EIO for the files `where` names (by descriptor:
 * those opened there while it runs; a string is a folder, every file under it). As the kernel does,
 * a failing close still releases the descriptor, and a failed fsync reports its write-back error
 * once: the next fsync of the descriptor (the cut's, after the append's) goes through. A `body`
 * that returns a promise has the calls fail until it settles.
 */
export function failing<T>(calls: FsCall | FsCall[], where: string | ((path: string) => boolean), body: () => T): T {
  const f = fs as unknown as Record<string, (...a: unknown[]) => unknown>;
  const names = typeof calls === 'string' ? [calls] : calls;
  const originals = new Map((['openSync', 'closeSync', ...names] as const).map((call) => [call, f[call] as (...a: unknown[]) => unknown]));
  const original = (call: string) => originals.get(call as FsCall) as (...a: unknown[]) => unknown;
  const chosen = typeof where === 'string' ? (path: string) => path.startsWith(where) : where;
  /** the descriptors open on chosen files, and the calls each has yet to fail */
  const ours = new Map<number, Set<FsCall>>();
  f.openSync = (...a) => {
    const fd = original('openSync')(...a) as number;
    if (chosen(String(a[0]))) ours.set(fd, new Set(names));
    return fd;
  };
  f.closeSync = (...a) => {
    const fails = ours.get(a[0] as number)?.has('closeSync');
    // Released either way: a number used again for another file is not ours.
    ours.delete(a[0] as number);
    original('closeSync')(...a);
    if (fails) throw Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO', errno: -5, syscall: 'close' });
  };
  for (const call of names.filter((c) => c !== 'closeSync')) {
    f[call] = (...a) => {
      const left = ours.get(a[0] as number);
      if (!left?.has(call)) return original(call)(...a);
      if (call === 'fsyncSync') left.delete(call);
      throw Object.assign(new Error(`EIO: i/o error, ${call}`), { code: 'EIO', errno: -5, syscall: call.replace('Sync', '') });
    };
  }
  return whileReplaced(f, originals, body);
}

/** fs calls by path a test makes fail (failingByPath). */
export type FsPathCall = 'statSync' | 'openSync' | 'readFileSync' | 'utimesSync';

/**
 * Runs `body` with the named fs calls failing with `code` (EIO by default: a storage hiccup; EMFILE:
 * a process out of descriptors) for the paths `where` says; a `body` that returns a promise has them
 * fail until it settles. For code that looks at a file by its path each time (state-lease.ts).
 */
export function failingByPath<T>(calls: FsPathCall[], where: (path: string) => boolean, body: () => T, code = 'EIO'): T {
  const f = fs as unknown as Record<string, (...a: unknown[]) => unknown>;
  const originals = new Map(calls.map((call) => [call, f[call] as (...a: unknown[]) => unknown]));
  for (const [call, original] of originals) {
    f[call] = (...a) => {
      if (!where(String(a[0]))) return original(...a);
      throw Object.assign(new Error(`${code}: failing by test, ${call.replace('Sync', '')} '${String(a[0])}'`), { code, syscall: call.replace('Sync', ''), path: String(a[0]) });
    };
  }
  return whileReplaced(f, originals, body);
}

/** `body` run with the fs calls replaced (as they are in `f`), `originals` put back once it settles. */
function whileReplaced<T>(f: Record<string, (...a: unknown[]) => unknown>, originals: ReadonlyMap<string, (...a: unknown[]) => unknown>, body: () => T): T {
  syncBuiltinESMExports();
  const restore = () => {
    for (const [call, fn] of originals) f[call] = fn;
    syncBuiltinESMExports();
  };
  let result: T;
  try {
    result = body();
  } catch (err) {
    restore();
    throw err;
  }
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}
