import { after, before } from 'node:test';
import type { ManagedProcess } from '../../scripts/local-stack/process.ts';
import { makeTestPki, tempDir } from './pki.ts';
import { startMosquitto } from './sparkplug.ts';

/** What freezableBroker sets up; `broker` is read once its `before` has run. */
export interface FreezableBroker {
  readonly pki: ReturnType<typeof makeTestPki>;
  readonly work: ReturnType<typeof tempDir>;
  readonly broker: { url: string; tlsUrl: string; process: ManagedProcess };
}

/**
 * Registers, in the calling describe, a real Mosquitto for a test that freezes it (SIGSTOP, through
 * `broker.process.pause()`) or kills it: a test PKI with `deviceIds`, the broker started in
 * `before` (over mutual TLS with the PKI's `service` certificate too, when given: its `tlsUrl`),
 * and in `after` resumed (a frozen process cannot act on its stop), stopped, and its folder and
 * the PKI removed. Its hooks are registered first: the describe's own `before` finds it running.
 * `extra`: configuration lines added to the broker's own (e.g. the shipped `sys_interval`).
 * `sharedPki`: another broker's PKI, used instead of one of its own (and left to that broker to
 * remove), for two brokers one client trusts alike (two DMZ servers of one internal broker).
 */
export function freezableBroker(name: string, deviceIds: readonly string[], service?: 'internal/mosquitto' | 'dmz/mosquitto', extra = '', sharedPki?: ReturnType<typeof makeTestPki>): FreezableBroker {
  const pki = sharedPki ?? makeTestPki(deviceIds);
  const work = tempDir(name);
  let broker: { url: string; tlsUrl?: string; process: ManagedProcess } | undefined;
  before(async () => {
    const p = pki.paths;
    broker = await startMosquitto(work.dir, service ? { ca: p.publicCa, cert: p.service(service).cert, key: p.service(service).key } : undefined, extra);
  });
  after(async () => {
    await broker?.process.resume().catch(() => undefined);
    await broker?.process.stop();
    work.cleanup();
    if (sharedPki === undefined) pki.cleanup();
  });
  return {
    pki,
    work,
    get broker() {
      if (!broker) throw new Error('the broker is not started yet');
      return { url: broker.url, tlsUrl: broker.tlsUrl ?? '', process: broker.process };
    },
  };
}
