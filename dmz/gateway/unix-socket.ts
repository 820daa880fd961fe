import { lstatSync, statSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';

/**
 * The gateway's Unix socket for the hop from Caddy (EDGE_HOP=unix). Whoever can open it is believed
 * to be Caddy, so its permissions are the hop's whole authentication: Caddy and the gateway run as
 * one user, and the socket is that user's alone (0600). connect(2) on a Unix socket needs write
 * permission on it (unix(7), "Pathname socket ownership and permissions").
 */
export const SOCKET_MODE = 0o600;
/** The umask while the socket is bound: bind(2) creates it 0600, with no moment of a wider mode. */
const BIND_UMASK = 0o177;

/** What was at the socket's path before the gateway took it. */
export type Claimed = 'free' | 'stale socket removed';

/**
 * Makes `path` free for the gateway to listen on. Its folder must be the gateway user's and closed
 * to others' writes (else another user could put something in the socket's place). A socket left
 * by a gateway that was killed (SIGKILL leaves the file) is removed; one another process still
 * listens on is not, nor is anything that is not a socket (lstat: a symbolic link is not followed):
 * the gateway refuses to start instead of taking over either.
 */
export async function claimSocketPath(path: string): Promise<Claimed> {
  checkFolder(dirname(path));
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'free';
    throw new FieldStreamError('LISTEN_FAILED', `Gateway cannot use the socket ${path}: ${(err as Error).message}`);
  }
  if (!isSocket) throw new FieldStreamError('LISTEN_FAILED', `Gateway will not replace ${path}: it is not a socket.`);
  if (await someoneListens(path)) throw new FieldStreamError('LISTEN_FAILED', `Another process listens on ${path} (one gateway per socket).`);
  unlinkSync(path);
  return 'stale socket removed';
}

function checkFolder(dir: string): void {
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    throw new FieldStreamError('LISTEN_FAILED', `Gateway cannot use the socket's folder ${dir}: ${(err as Error).message}`);
  }
  const uid = process.getuid?.();
  if (!st.isDirectory()) throw new FieldStreamError('LISTEN_FAILED', `The socket's folder ${dir} is not a folder.`);
  if (uid !== undefined && st.uid !== uid) {
    throw new FieldStreamError('LISTEN_FAILED', `The socket's folder ${dir} belongs to uid ${st.uid}, not to the gateway's user (${uid}): chown it to the user Caddy and the gateway run as.`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new FieldStreamError('LISTEN_FAILED', `Others may write to the socket's folder ${dir} (mode ${(st.mode & 0o777).toString(8)}): chmod 0700 it.`);
  }
}

function someoneListens(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    const done = (listening: boolean) => {
      probe.destroy();
      resolve(listening);
    };
    probe.setTimeout(TIMINGS.socketProbeTimeoutMs, () => done(true));
    probe.once('connect', () => done(true));
    // ECONNREFUSED: a socket nobody listens on; anything else (EACCES) is a live socket not ours.
    probe.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED'));
  });
}

/**
 * Listens on `path` with the socket created 0600. Node binds a pipe synchronously inside listen()
 * (errors are reported later, as 'error'), so the umask is back as it was before anything else runs.
 */
export function listenOnSocket(server: Server, path: string, onListening: () => void): void {
  const previous = process.umask(BIND_UMASK);
  try {
    server.listen(path, onListening);
  } finally {
    process.umask(previous);
  }
}
