import { dirname, join } from 'node:path';
import { FieldStreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { ReloadedFile } from '../../shared/reloaded-file.ts';
import { makeDirDurablySync, readRegularFileSync, removeLeftAsideSync, replaceFileDurablySync } from '../../shared/durable-fs.ts';
import { verifyCrl, type VerifiedCrl } from '../../shared/security/crl.ts';
import { describedCrl, readServerCrl, type ServerCrl } from './server-crl.ts';

/**
 * The CRL the client holds while it runs (server-crl.ts reads one): read at start, and read again
 * whenever its file has changed since (looked at before each connection attempt and every
 * TIMINGS.fieldCrlCheckMs: gateway-connection.ts), so that copying the CA's current certs/ca.crl to
 * a device after a `--renew-dmz` takes effect without a restart, and drops a connection to a server
 * it now revokes.
 *
 * A new file that cannot be used does not take the held list away: one that cannot be read, is no
 * CRL or no CRL of the CA, or is older than the one held (an earlier thisUpdate: a stale copy would
 * take a revocation back), is FIELD_CRL_RELOAD_REFUSED, logged once for that version of the file,
 * and the held list stays. So does a file removed while the client runs: the check is turned off
 * by a restart without the file (and without deliveredPath's copy), as at start. A file that appears where none was at start (the
 * ca.crl beside FIELD_CA_FILE) is read as a change.
 */
/** The file gone between ReloadedFile's look and the read. */
const GONE = new Error('the file is gone');

export class ServerCrlSource {
  private readonly file: ReloadedFile<ServerCrl | undefined>;
  /** the list in use (the file's last good version) */
  private held: ServerCrl | undefined;

  /** a CRL handed over that could not be written to deliveredPath yet (save) */
  private unsaved: Buffer | undefined;
  /** the newest CRL a gateway handed over (offer), kept in `deliveredPath` */
  private delivered: ServerCrl | undefined;

  private constructor(
    readonly path: string,
    explicit: string | undefined,
    caFile: string,
    private readonly caPem: string,
    private readonly log: Pick<Logger, 'info' | 'warn'>,
    /** where the CRL a gateway hands over is kept (FIELD_DATA_DIR/ca.crl) */
    readonly deliveredPath: string,
  ) {
    const refused = (why: string) => log.warn({ code: 'FIELD_CRL_RELOAD_REFUSED', crl: path, revoked: this.held?.revoked ?? null }, `the CRL file changed and was not taken: ${why}`);
    this.file = new ReloadedFile({
      path,
      // Looked at whenever asked: before each connection attempt and every crlCheckMs (one stat).
      recheckMs: 0,
      read: () => {
        const next = readServerCrl(explicit, caFile, caPem, log);
        // Gone between the look and the read (readServerCrl's "no CRL beside FIELD_CA_FILE"): as gone.
        if (!next && this.held) throw GONE;
        if (this.held && next && next.thisUpdate.getTime() < this.held.thisUpdate.getTime()) {
          throw new Error(`it is older than the one held (thisUpdate ${next.thisUpdate.toISOString()}, before ${this.held.thisUpdate.toISOString()}): a stale copy would take revocations back`);
        }
        return next;
      },
      whenMissing: 'keep',
      onInvalid: (err) => {
        if (err === GONE || (err as NodeJS.ErrnoException).code === 'ENOENT') {
          if (this.held) refused('the file is gone: the list read before is kept (a restart without it, and without the copy a gateway handed over, turns the check off)');
        } else refused(err.message);
      },
      onChange: (next) => {
        log.info({ crl: path, revoked: next?.revoked ?? 0, before: this.held?.revoked ?? null }, "the CRL changed: the server's certificate is checked against the new one");
        this.held = next;
      },
    });
    // As at start: a file that cannot be used stops the client (readServerCrl's codes, exit 78).
    this.held = this.file.load();
    removeLeftAsideSync(deliveredPath);
    this.delivered = this.readDelivered();
  }

  /** The copy a gateway handed over before this start; damaged (a disk's fault: it is written whole or not at all), said and not used. */
  private readDelivered(): ServerCrl | undefined {
    let bytes: Buffer;
    try {
      bytes = readRegularFileSync(this.deliveredPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ code: 'FIELD_CRL_RELOAD_REFUSED', crl: this.deliveredPath, err: (err as Error).message }, 'the CRL a gateway handed over earlier cannot be read: not used');
      return undefined;
    }
    try {
      return describedCrl(verifyCrl(bytes, this.caPem), this.deliveredPath, this.log);
    } catch (err) {
      this.log.warn({ code: 'FIELD_CRL_RELOAD_REFUSED', crl: this.deliveredPath, err: (err as Error).message }, 'the CRL a gateway handed over earlier cannot be used: not used');
      return undefined;
    }
  }

  /**
   * The CRL of FIELD_CRL_FILE (`explicit`), or of the ca.crl beside FIELD_CA_FILE; undefined when
   * FIELD_CRL_FILE is unset and no ca.crl was there at start nor is now.
   */
  static open(explicit: string | undefined, caFile: string, caPem: string, log: Pick<Logger, 'info' | 'warn'>, dataDir: string): ServerCrlSource {
    return new ServerCrlSource(explicit ?? join(dirname(caFile), 'ca.crl'), explicit, caFile, caPem, log, join(dataDir, 'ca.crl'));
  }

  /**
   * The list to check the server's certificate against now: the newer of the file's (read again
   * first if it changed) and the one a gateway handed over, when both are of one CA; the file's
   * when they are not.
   */
  current(): ServerCrl | undefined {
    if (this.unsaved) this.save(this.unsaved);
    const file = this.file.current();
    if (!this.delivered) return file;
    if (!file) return this.delivered;
    // A copy of another CA's CRL is no later version of the file's (a file of another CA put there
    // since): the file, the operator's, is used.
    if (!sameCa(file, this.delivered)) return file;
    return file.thisUpdate.getTime() >= this.delivered.thisUpdate.getTime() ? file : this.delivered;
  }

  /**
   * Keeps a CRL handed over in deliveredPath. One that cannot be written (a full or failing disk)
   * is in use all the same, and written again at the next look (current(): each connection attempt,
   * every crlCheckMs): it is the one the device now says it holds, so no gateway hands it over again.
   */
  private save(der: Buffer): void {
    try {
      makeDirDurablySync(dirname(this.deliveredPath), 0o700);
      replaceFileDurablySync(this.deliveredPath, der, 0o644);
      if (this.unsaved) this.log.info({ crl: this.deliveredPath }, 'the CRL the gateway handed over is kept on disk now');
      this.unsaved = undefined;
    } catch (err) {
      if (!this.unsaved) this.log.warn({ code: 'FIELD_CRL_STORE_FAILED', crl: this.deliveredPath, err: (err as Error).message }, 'the CRL the gateway handed over could not be kept on disk: in use, written again at the next connection attempt');
      this.unsaved = der;
    }
  }

  /**
   * A CRL a gateway handed over (its `crl` frame): taken when the CA signed it (the CA of the one
   * in use, when there is one) and it is newer than the one in use, and kept in deliveredPath (replaced whole: after a crash, the old copy or the
   * new) for the next start. The DMZ passes it on and cannot forge it: one that is not the CA's is
   * thrown as FIELD_GATEWAY_CRL_REFUSED, for the caller to log as it logs what else the gateway
   * sends (rate-limited, cut: a hostile gateway decides how often, and what the message says); an
   * older one, or the same, changes nothing (another server's CRL may lag behind). Returns it when
   * taken.
   */
  offer(bytes: Buffer, from: string): ServerCrl | undefined {
    let verified: VerifiedCrl;
    try {
      verified = verifyCrl(bytes, this.caPem);
    } catch (err) {
      throw new FieldStreamError('FIELD_GATEWAY_CRL_REFUSED', (err as Error).message, { url: from });
    }
    const held = this.current();
    // Dates say which list is later only between two lists of one CA. FIELD_CA_FILE may hold
    // another CA beside ours (a public root for CADDY_TLS=acme), whose CRL anyone can fetch and a
    // hostile DMZ hand over: newer, it took the place of ours, and the revocations with it.
    if (held && !sameCa(held, verified)) {
      throw new FieldStreamError('FIELD_GATEWAY_CRL_REFUSED', `a CRL of another CA (${verified.issuer.subject.replace(/\n/g, ', ')}) than the one in use (${held.issuer.subject.replace(/\n/g, ', ')}): it revokes none of its certificates`, { url: from });
    }
    if (held && verified.thisUpdate.getTime() <= held.thisUpdate.getTime()) return undefined;
    this.unsaved = undefined;
    this.save(verified.der);
    this.delivered = describedCrl(verified, this.deliveredPath, this.log);
    this.log.info({ url: from, crl: this.deliveredPath, revoked: verified.revoked, before: held?.revoked ?? null }, "a newer CRL from the gateway, the CA's: the server's certificate is checked against it");
    return this.delivered;
  }
}

/** Whether two CRLs are of one CA (the same certificate signed both): only then is one a later version of the other. */
function sameCa(a: VerifiedCrl, b: VerifiedCrl): boolean {
  return a.issuer.fingerprint256 === b.issuer.fingerprint256;
}
