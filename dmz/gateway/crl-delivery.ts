import { readFileSync } from 'node:fs';
import type { CrlFrame } from '../../shared/contract/downlink.ts';
import { FieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { ReloadedFile } from '../../shared/reloaded-file.ts';
import { verifyCrl, type VerifiedCrl } from '../../shared/security/crl.ts';

/**
 * The CA's CRL, handed to each device that says (CRL_HEADER, on its upgrade request) it holds an
 * older one: the field client checks the server's certificate against it (field-client/src/
 * server-crl.ts), so a device that reaches a genuine DMZ after a `--renew-dmz` learns there that
 * the old edge certificate is revoked, and refuses whoever presents it afterwards, with nobody
 * copying a file to it.
 *
 * The DMZ only passes the CRL on: the device takes it only when the CA signed it and it is newer
 * than its own. A compromised DMZ can withhold it (the device keeps what it has), never forge one
 * nor take a revocation back with an older copy.
 *
 * GATEWAY_CRL_FILE: the CA's certs/ca.crl, which the DMZ has for its Mosquitto anyway; re-read
 * within TIMINGS.gatewayCrlRecheckMs of a change. Missing: nothing is handed over. At start, a file
 * that is no CRL of GATEWAY_CA_FILE's CA stops the gateway (CONFIG_INVALID); later, such a version
 * is logged once and the CRL read before is handed over still.
 */
export class CrlDelivery {
  private readonly file: ReloadedFile<Offer>;

  constructor(
    readonly path: string,
    caPem: string,
    log: Logger,
    /** milliseconds between two looks at the file */
    recheckMs: number = TIMINGS.gatewayCrlRecheckMs,
  ) {
    this.file = new ReloadedFile({
      path,
      recheckMs,
      read: (p) => offerOf(verifyCrl(readFileSync(p), caPem)),
      whenMissing: 'forget',
      onInvalid: (err) => log.warn({ code: 'CONFIG_INVALID', crl: path, err: err.message }, 'GATEWAY_CRL_FILE changed and cannot be used: the CRL read before is handed over still'),
      onChange: (offer) => log.info({ crl: path, revoked: offer.crl.revoked, thisUpdate: offer.crl.thisUpdate.toISOString() }, 'GATEWAY_CRL_FILE changed: devices holding an older CRL are handed this one'),
    });
    let offer: Offer | undefined;
    try {
      offer = this.file.load();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        log.info({ crl: path }, 'no GATEWAY_CRL_FILE: no CRL is handed to devices');
        return;
      }
      // There but not readable (a folder, no permission) is the file's fault, as for every file a
      // setting names; read but no CRL of the CA, its content's.
      if ((err as NodeJS.ErrnoException).syscall !== undefined) throw new FieldStreamError('CONFIG_FILE_UNREADABLE', `GATEWAY_CRL_FILE=${path} cannot be read (${code}); fix the path or its permissions, or copy the CA's current certs/ca.crl there.`, { variable: 'GATEWAY_CRL_FILE', path });
      throw new FieldStreamError('CONFIG_INVALID', `GATEWAY_CRL_FILE=${path}: ${(err as Error).message}. Copy the CA's current certs/ca.crl there, as for the DMZ broker.`, { variable: 'GATEWAY_CRL_FILE', path });
    }
    if (offer && !offer.frame) log.warn({ crl: path, bytes: offer.crl.der.length }, `the CRL is too large for a frame to a device (${LIMITS.downlinkFrameMaxBytes} bytes): devices get it by copy only`);
  }

  /**
   * The frame for a device that holds a CRL of `held` (CRL_HEADER: its thisUpdate in epoch ms, 0
   * when it holds none); undefined when the device did not say (it would not know the frame), holds
   * this CRL or a newer one, or there is none to give.
   */
  frameFor(held: string | string[] | undefined): CrlFrame | undefined {
    if (typeof held !== 'string' || !/^\d{1,15}$/.test(held)) return undefined;
    const offer = this.file.current();
    if (!offer?.frame || offer.crl.thisUpdate.getTime() <= Number(held)) return undefined;
    return offer.frame;
  }
}

interface Offer {
  crl: VerifiedCrl;
  /** undefined when it would not fit a downlink frame */
  frame: CrlFrame | undefined;
}

function offerOf(crl: VerifiedCrl): Offer {
  const frame: CrlFrame = { type: 'crl', crl: crl.der.toString('base64') };
  return { crl, frame: Buffer.byteLength(JSON.stringify(frame)) <= LIMITS.downlinkFrameMaxBytes ? frame : undefined };
}
