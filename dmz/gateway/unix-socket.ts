import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { FieldStreamError } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';

/**
 * The gateway's Unix socket for the hop from Caddy (EDGE_HOP=unix). Whoever can open it is believed
 * to be Caddy, so its permissions are the hop's whole authentication: read and write for the owner
 * and the group (the user both containers run as), nothing for others. connect(2) on a Unix socket
 * needs write permission on it (unix(7), "Pathname socket ownership and permissions").
 */
export const SOCKET_MODE = 0o660;

/**
 * Makes `path` free for the gateway to listen on. A socket left by a gateway that was killed
 * (SIGKILL leaves the file) is removed; one that another process still listens on is not, nor is
 * anything that is not a socket: the gateway refuses to start instead of taking over either.
 */
export async function claimSocketPath(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new FieldStreamError('LISTEN_FAILED', `Gateway cannot use the socket ${path}: ${(err as Error).message}`);
  }
  if (!isSocket) throw new FieldStreamError('LISTEN_FAILED', `Gateway will not replace ${path}: it is not a socket.`);
  if (await someoneListens(path)) throw new FieldStreamError('LISTEN_FAILED', `Another process listens on ${path} (one gateway per socket).`);
  unlinkSync(path);
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

/** Sets the socket's mode once it exists (listen(2) created it under the process's umask). */
export function restrictSocket(path: string): void {
  chmodSync(path, SOCKET_MODE);
}
