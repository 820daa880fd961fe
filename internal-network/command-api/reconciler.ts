import { ResponsePayloadSchema } from '../../shared/contract/payloads.ts';
import { isFieldStreamError } from '../../shared/errors.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import type { DeviceKeyRegistry } from '../shared/device-keys.ts';
import type { Response } from './believed-responses.ts';
import { isFinal, type CommandRecord } from './schemas.ts';
import type { CommandStore } from './store.ts';
import type { ResponseLedger, StoredResponse, Wanted } from './stored-responses.ts';

/**
 * What a stored response must be to be taken: a status and a result a response carries (the
 * contract's own schema). The database is read, not trusted to hold only what the distributor
 * checked: a result nested deeper than LIMITS.jsonMaxDepth, with a "__proto__" key or too large,
 * recorded as it was, made the journal line holding it fail the journal's schema at the next start,
 * and the answer (after a compaction, the whole command, and its Idempotency-Key) was lost.
 */
const StoredAnswerSchema = ResponsePayloadSchema.pick({ status: true, result: true });

/**
 * Looks up the responses the distributor stored (the ledger: PostgreSQL or InfluxDB) for commands
 * still waiting, and records each genuine one as if it had come through the broker: the broker's
 * copy of a response for the command API can be lost (a broker killed between its autosaves while
 * the API was away) when the distributor's was written and the device, receipted, let its own go.
 * One look-up at a time; a second one asked for meanwhile runs after it, for what is waiting then.
 */
export class Reconciler {
  /** the look-up of every waiting command's stored response that is queued and has not started */
  private waitingLookUp: Promise<void> | undefined;
  /** the look-up of stored responses that runs (one at a time), if one does */
  private reconciling: Promise<void> | undefined;

  constructor(
    private readonly ledger: ResponseLedger,
    private readonly store: CommandStore,
    private readonly keys: DeviceKeyRegistry,
    /** COMMAND_ALLOW_UNSIGNED: a device without a key may have its unsigned responses taken */
    private readonly allowUnsigned: boolean,
    private readonly log: Logger,
    /** records a device's answer (the dispatcher's), false when it changes nothing */
    private readonly answer: (record: CommandRecord, response: Pick<Response['payload'], 'status' | 'result'>) => boolean,
    private readonly closed: () => boolean,
  ) {}

  /**
   * Looks up the stored responses of every command still waiting, and of those expired within
   * TIMINGS.commandLateAnswerLookUpMs (at the start, at each connection). An expired command's
   * device may still answer (it runs a command until its expiry plus its clock skew), and the
   * broker's copy of that late answer is lost as any other's; the distributor's is there.
   */
  waiting(): Promise<void> {
    // One waiting to run is enough: it takes what waits when it starts (a broker that flaps
    // queues no look-up per connection).
    if (this.waitingLookUp) return this.waitingLookUp;
    const lookUp = this.lookUp(() => {
      this.waitingLookUp = undefined;
      const since = Date.now() - TIMINGS.commandLateAnswerLookUpMs;
      return [...this.store.all()].filter((r) => !isFinal(r.state) || (r.state === 'expired' && (r.expiredAt ?? r.expiresAt) >= since));
    }).then(
      () => undefined,
      (err: unknown) => this.log.warn({ code: isFieldStreamError(err) ? err.code : 'API_RESPONSES_UNREADABLE', err: (err as Error).message }, 'the responses the distributor stored could not be read; looked up again before each command expires'),
    );
    this.waitingLookUp = lookUp;
    return lookUp;
  }

  /**
   * Looks up the stored responses of `records()` and records each genuine one. Genuine by what the
   * distributor checked: of a device with a registered key, only a response it signed (the
   * distributor verified that signature under the same registry's key before it wrote it); of a
   * device without one, with COMMAND_ALLOW_UNSIGNED only; of a revoked device, none. Rejects when
   * the database cannot be read (API_RESPONSES_UNREADABLE).
   */
  lookUp(records: () => CommandRecord[]): Promise<void> {
    const run = async (): Promise<void> => {
      const wanted: Wanted[] = [];
      for (const r of records()) {
        if (this.keys.isRevoked(r.deviceId)) continue;
        const keyed = this.keys.get(r.deviceId) !== undefined;
        if (!keyed && !this.allowUnsigned) continue;
        wanted.push({ commandId: r.commandId, deviceId: r.deviceId, signedOnly: keyed });
      }
      if (wanted.length === 0) return;
      let answered = 0;
      /** stored responses not taken (StoredAnswerSchema): how many, and the first ids */
      const invalid = { count: 0, commandIds: [] as string[] };
      // A batch at a time, each recorded before the next is read: a result may be 64 K characters,
      // and those of every waiting command (up to LIMITS.commandMaxLive) read at once made gigabytes.
      for (let i = 0; i < wanted.length; i += LIMITS.commandReconcileBatch) {
        const found: StoredResponse[] = await this.ledger.find(wanted.slice(i, i + LIMITS.commandReconcileBatch));
        if (this.closed()) return;
        for (const f of found) {
          const record = this.store.get(f.commandId);
          // Known already (an acceptance found again at each look-up while the command runs): unchanged.
          if (!record || record.deviceId !== f.deviceId || record.response?.status === f.status) continue;
          const stored = StoredAnswerSchema.safeParse({ status: f.status, result: f.result });
          if (!stored.success) {
            if (invalid.count++ < 20) invalid.commandIds.push(f.commandId);
            continue;
          }
          if (this.answer(record, { status: stored.data.status, ...(stored.data.result !== undefined ? { result: stored.data.result } : {}) })) {
            answered++;
            this.log.info({ commandId: record.commandId, deviceId: record.deviceId, state: f.status }, 'command answered: its response found among those the distributor stored');
          }
        }
      }
      if (invalid.count > 0) {
        this.log.warn(
          { code: 'CONTRACT_INVALID_MESSAGE', ...invalid },
          'stored responses whose result no response carries were not taken; their commands wait for an answer, or expire',
        );
      }
      // Journaled as every change is (store.put), synced by the end of this turn.
      if (answered > 0) this.log.info({ answered, lookedUp: wanted.length }, 'commands answered from the responses the distributor stored');
    };
    const next = (this.reconciling ?? Promise.resolve()).then(run);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.reconciling = settled;
    void settled.then(() => {
      if (this.reconciling === settled) this.reconciling = undefined;
    });
    return next;
  }

  /** Resolves once the look-up that runs, if any, is over (for a clean stop, and tests). */
  async settled(): Promise<void> {
    while (this.reconciling) await this.reconciling;
  }
}
