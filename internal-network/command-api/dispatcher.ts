import { randomUUID } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { ENVELOPE_VERSION, parseEnvelope, StatusEnvelopeSchema, UplinkEnvelopeSchema, uplinkEnvelopeMaxValues, type CommandEnvelope } from '../../shared/contract/envelope.ts';
import { commandTopic, parseTopic } from '../../shared/contract/topics.ts';
import { FieldStreamError, isFieldStreamError, type ErrorCode } from '../../shared/errors.ts';
import { TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { keepExpiryOnResend } from '../../shared/mqtt/expiring-store.ts';
import { signCommand } from '../../shared/security/command-auth.ts';
import type { DeviceKeyRegistry } from '../shared/device-keys.ts';
import { BelievedResponses, type Response } from './believed-responses.ts';
import { Reconciler } from './reconciler.ts';
import { Resends, type ResendPolicy } from './resends.ts';
import { isFinal, type CommandRecord } from './schemas.ts';
import type { CommandStore } from './store.ts';
import type { ResponseLedger } from './stored-responses.ts';

/**
 * Sends commands through the internal broker (the bridge carries them to the DMZ broker, the
 * gateway holding the device forwards them) and records each device's response against its
 * command id. A command whose device is offline is sent again when the device's presence turns
 * "online", until it is answered or expires; the device answers a command id only once.
 *
 * Each command is authenticated for its device with the device's signing key from the internal
 * registry (security/command-auth.ts), so a compromised DMZ can neither forge nor alter one. It is
 * signed at each publish, not stored signed: a key rotated or revoked since takes effect at once.
 *
 * Each response is believed only if the device provably sent it (believed-responses.ts); the
 * responses the distributor stored are looked up for commands whose answer the broker may have lost
 * (reconciler.ts).
 */
export interface CommandSigning {
  keys: DeviceKeyRegistry;
  /** COMMAND_ALLOW_UNSIGNED: send commands unsigned to devices without a registered key, and
   * believe their unsigned responses */
  allowUnsigned: boolean;
}

export class CommandDispatcher {
  private readonly sweep: NodeJS.Timeout;
  private closed = false;
  /** whether a sweep's look-up of stored responses runs */
  private sweeping = false;
  /** what is sent again at a device's presence, and while it stays online */
  private readonly resends: Resends;
  private readonly believed: BelievedResponses;
  /** the look-ups of the responses the distributor stored (with a ledger) */
  private readonly reconciler: Reconciler | undefined;

  constructor(
    private readonly mqtt: MqttClient,
    private readonly store: CommandStore,
    private readonly log: Logger,
    private readonly signing: CommandSigning,
    /**
     * The responses the distributor stored (PostgreSQL or InfluxDB), looked up for the commands still waiting
     * at the start and at each connection to the broker, and for each command before it is
     * expired: the broker's copy of a response for this API can be lost (a broker killed between
     * its autosaves while this API was away) when the distributor's was written and the device,
     * receipted, let its own go. Without it, such a command ended `expired` although it ran.
     */
    ledger?: ResponseLedger,
    resend: ResendPolicy = {},
  ) {
    this.resends = new Resends(store, signing.keys, resend, (r) => this.publish(r));
    this.believed = new BelievedResponses(signing.keys, signing.allowUnsigned, log);
    this.reconciler = ledger
      ? new Reconciler(ledger, store, signing.keys, signing.allowUnsigned, log, (record, response) => this.answer(record, response), () => this.closed)
      : undefined;
    mqtt.on('message', (topic, payload) => this.onMessage(topic, payload));
    // mqtt.js emits 'message' (the answer recorded in memory), then calls handleMessage, and sends
    // the PUBACK at its callback (MQTT 3.1.1 §4.3.2 lets the receiver choose when). Acknowledged
    // before the journal held the answer, a kill in between lost it for good: the broker forgets an
    // acknowledged message, the device deletes its copy at the distributor's receipt, and the
    // command, still `sent` here, ended `expired` although it ran.
    mqtt.handleMessage = (_packet, callback) => this.whenDurable(callback, TIMINGS.commandJournalRetryInitialMs);
    // A command cut off before its PUBACK is sent again by mqtt.js at the next connection, as it was
    // first sent: its message expiry counted again from then, so one whose broker was away past its
    // TTL reached the broker after it and was held there for a whole TTL more. Now with the rest of
    // its TTL, or not at all (publish below, its callback: the sweep expires it).
    keepExpiryOnResend(mqtt);
    mqtt.on('connect', () => {
      for (const r of this.store.all()) if (r.state === 'queued' && r.expiresAt > Date.now()) this.publish(r);
      // What the broker held for this session may not have outlived it (a broker restarted).
      void this.reconciler?.waiting();
    });
    this.sweep = setInterval(() => this.expire(), TIMINGS.commandExpirySweepMs);
    this.sweep.unref();
    void this.reconciler?.waiting();
  }

  /** responses ignored because they are not provably the device's, by code */
  get refusedResponses(): Partial<Record<ErrorCode, number>> {
    return this.believed.refused;
  }

  issue(deviceIds: readonly string[], command: string, params: CommandRecord['params'], ttlSeconds: number, request?: CommandRecord['request']): CommandRecord[] {
    // All or nothing: a fleet command with a revoked device, or one that cannot be authenticated,
    // sends nothing. Revoked first, as the distributor checks it: the key registry and the revoked
    // list are two files (two Kubernetes objects), and a key file left behind, or brought back by a
    // restore, must not get a revoked device commands (nor, with COMMAND_ALLOW_UNSIGNED, unsigned ones).
    const revoked = deviceIds.filter((d) => this.signing.keys.isRevoked(d));
    if (revoked.length > 0) {
      throw new FieldStreamError(
        'API_DEVICE_REVOKED',
        `${revoked.length === 1 ? `Device ${revoked[0]} is` : `${revoked.length} of the devices are`} revoked; nothing was sent.`,
        { deviceIds: revoked.slice(0, 100) },
      );
    }
    const keyless = this.signing.allowUnsigned ? [] : deviceIds.filter((d) => !this.signing.keys.get(d));
    if (keyless.length > 0) {
      throw new FieldStreamError(
        'API_DEVICE_KEY_MISSING',
        `No signing key is registered for ${keyless.length === 1 ? `device ${keyless[0]}` : `${keyless.length} of the devices`}; nothing was sent.`,
        { deviceIds: keyless.slice(0, 100) },
      );
    }
    const now = Date.now();
    const records = deviceIds.map((deviceId): CommandRecord => ({
      commandId: `cmd-${randomUUID()}`,
      deviceId,
      command,
      ...(params !== undefined ? { params } : {}),
      issuedAt: now,
      expiresAt: now + ttlSeconds * 1000,
      state: 'queued',
      attempts: 0,
      updatedAt: now,
      ...(request ? { request } : {}),
    }));
    // On disk before anything is sent or answered: a command the API took survives a crash. The
    // store refuses the request whole (API_COMMANDS_FULL) when too many commands, or too many bytes
    // of them, wait already.
    try {
      this.store.add(records);
    } catch (err) {
      // Kept, perhaps not durable (store.ts keepUnsettled): sent as a restart would send them, and
      // the caller told so.
      if (isFieldStreamError(err, 'API_STATE_UNCERTAIN')) for (const r of records) this.publish(r);
      throw err;
    }
    for (const r of records) this.publish(r);
    return records;
  }

  /** Resolves once the look-up of stored responses that runs, if any, is over (for a clean stop, and tests). */
  async settled(): Promise<void> {
    await this.reconciler?.settled();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweep);
    this.resends.close();
  }

  /**
   * Calls back (the PUBACK) once every change recorded so far is synced. A journal the disk refuses
   * is tried again with backoff, the PUBACK held meanwhile: mqtt.js hands this connection nothing
   * more until then, and the broker keeps the rest (the session is persistent).
   */
  private whenDurable(callback: (err?: Error) => void, retryMs: number): void {
    if (this.closed) return; // unacknowledged: the broker delivers it again to the next session
    try {
      this.store.flush();
    } catch (err) {
      this.log.error({ code: 'API_STATE_WRITE_FAILED', err: (err as Error).message, retryInMs: retryMs }, "a device's message is not acknowledged to the broker until the command journal takes what it changed");
      setTimeout(() => this.whenDurable(callback, Math.min(retryMs * 2, TIMINGS.commandJournalRetryMaxMs)), retryMs);
      return;
    }
    callback();
  }

  private publish(record: CommandRecord): void {
    if (!this.mqtt.connected) return; // sent on (re)connect
    if (this.signing.keys.isRevoked(record.deviceId)) {
      this.log.warn({ commandId: record.commandId, deviceId: record.deviceId, code: 'API_DEVICE_REVOKED' }, 'the device was revoked; command not sent');
      return;
    }
    const key = this.signing.keys.get(record.deviceId);
    if (!key && !this.signing.allowUnsigned) {
      this.log.warn({ commandId: record.commandId, deviceId: record.deviceId, code: 'API_DEVICE_KEY_MISSING' }, 'the device has no signing key (revoked?); command not sent');
      return;
    }
    const command = {
      commandId: record.commandId,
      command: record.command,
      ...(record.params !== undefined ? { params: record.params } : {}),
      issuedAt: record.issuedAt,
    };
    const envelope: CommandEnvelope = {
      v: ENVELOPE_VERSION,
      ...command,
      ...(key ? { auth: signCommand(key, { ...command, deviceId: record.deviceId }, record.expiresAt) } : {}),
    };
    // The rest of its TTL as its Message Expiry Interval (MQTT 5 §3.3.2.3.3): a broker drops a copy
    // it has not begun to deliver once that has passed. The bridge's session on the internal broker
    // is persistent, so while the DMZ is away every command waits there; without it, one reached the
    // DMZ days later, and a device running unsigned commands (which carry no expiry) ran it.
    const expiryS = Math.max(1, Math.ceil((record.expiresAt - Date.now()) / 1000));
    const expiry = this.mqtt.options.protocolVersion === 5 ? { properties: { messageExpiryInterval: expiryS } } : {};
    this.mqtt.publish(commandTopic(record.deviceId), JSON.stringify(envelope), { qos: 1, ...expiry }, (err) => {
      const current = this.store.get(record.commandId);
      if (!current || isFinal(current.state)) return;
      if (err) {
        if (current.expiresAt <= Date.now()) {
          this.log.info({ commandId: record.commandId, deviceId: record.deviceId, err: err.message }, 'the command was not taken by the broker before its TTL passed; not sent again');
          return;
        }
        // A PUBACK reason code of 0x80 or more (MQTT 5 §3.4.2.1) comes as an error with a numeric code;
        // any other error is the connection ending before the PUBACK. Either way the command stays
        // queued: sent again at the next connection (connect) or when its device comes online.
        const reason = (err as { code?: unknown }).code;
        if (typeof reason === 'number') {
          this.log.error({ commandId: record.commandId, deviceId: record.deviceId, code: 'MQTT_PUBLISH_REFUSED', reasonCode: reason, err: err.message }, 'the broker refused the command (its ACL?); it stays queued, sent again at the next connection to the broker or when the device comes online');
        } else {
          this.log.warn({ commandId: record.commandId, err: err.message }, 'the command was not acknowledged by the broker before the connection ended; it stays queued, sent again at the next connection');
        }
        return;
      }
      const sent = { ...current, attempts: current.attempts + 1, sentAt: Date.now(), updatedAt: Date.now() };
      // The first send is journaled (a command `queued` at a crash is sent again at the start). A
      // resend changes only its count and time, which a crash may forget: it is not journaled (the
      // next change of the command takes it there). An `online` presence, the DMZ's word, has one
      // made per waiting command every TIMINGS.commandRedeliverMinIntervalMs, and a compromised DMZ
      // publishes them without end: a synced line each, and compactions of the whole journal.
      if (current.state === 'queued') this.store.put({ ...sent, state: 'sent' });
      else this.store.note(sent);
    });
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      const where = parseTopic(topic);
      if (where.kind === 'status') {
        // An empty presence clears the retained one (MQTT 5 §3.3.1.3): the distributor clears those
        // of ids the DMZ invented (internal-network/distributor/presence-clearer.ts). Not a fault.
        if (payload.length === 0) return;
        const status = parseEnvelope(StatusEnvelopeSchema, payload);
        if (status.state === 'online') this.resends.online(where.deviceId);
        else this.resends.offline(where.deviceId);
        return;
      }
      if (where.kind !== 'uplink' || where.dataType !== 'response') return;
      const env = parseEnvelope(UplinkEnvelopeSchema, payload, uplinkEnvelopeMaxValues(where.dataType));
      if (env.dataType !== 'response' || env.deviceId !== where.deviceId) return;
      for (const { payload: response } of this.believed.genuine(env)) {
        const record = this.store.get(response.commandId);
        // A device answers only its own commands; anything else is noise, or an attack.
        if (!record || record.deviceId !== env.deviceId) {
          this.believed.floodLog({ deviceId: env.deviceId, commandId: response.commandId }, 'response to an unknown command, or another device’s');
          continue;
        }
        if (this.answer(record, response)) this.log.info({ commandId: record.commandId, deviceId: record.deviceId, state: response.status }, 'command answered');
      }
    } catch (err) {
      if (!isFieldStreamError(err)) throw err;
      this.believed.floodLog({ code: err.code, topic: topic.slice(0, 200) }, err.message);
    }
  }

  /**
   * Records the device's answer to its command; false when it changes nothing.
   * `expired` is this API's word, not the device's: the device runs a command until its signed
   * expiry plus its clock skew (field-client/src/command-guard.ts), and a handler may take
   * minutes, so its answer can come after the sweep. It says what happened, and replaces
   * `expired` (left, it told the operator a command that ran did not, and it was sent again);
   * an acceptance is kept in `response`, the command staying final. Any other final state is
   * the device's own answer, which never changes. `expiredAt` stays: the command shows that its
   * answer came after this API had said `expired`, which an operator may have acted on.
   */
  private answer(record: CommandRecord, response: Pick<Response['payload'], 'status' | 'result'>): boolean {
    const late = record.state === 'expired';
    if (isFinal(record.state) && !late) return false;
    // The device answered this id before (that answer stands); this one says a copy was refused.
    if (response.status === 'rejected' && (response.result as { code?: unknown } | undefined)?.code === 'FIELD_COMMAND_REPLAYED') return false;
    // An acceptance after any answer says nothing new: the first stands. Its signature stays valid,
    // so the DMZ can replay a genuine one without end, and each copy was journaled (with its result,
    // up to 64 KiB), synced and logged again, an acceptance being no final state.
    if (response.status === 'accepted' && record.response !== undefined) return false;
    this.update(record, {
      state: late && !isFinal(response.status) ? 'expired' : response.status,
      response: { status: response.status, ...(response.result !== undefined ? { result: response.result as CommandRecord['params'] } : {}), at: Date.now() },
    });
    if (late) this.log.warn({ commandId: record.commandId, deviceId: record.deviceId, state: response.status, expiredAt: record.expiredAt }, "the device's answer came after the command was expired: recorded, the command showing both");
    return true;
  }

  private expire(): void {
    this.resends.sweep();
    const now = Date.now();
    // An accepted command too: a device that accepted it and never finished (crashed, or lost
    // its answer) would otherwise keep it waiting, and counted against commandMaxLive, for ever.
    // Its acceptance stays in `response`.
    const due = (r: CommandRecord | undefined, at: number): r is CommandRecord => r !== undefined && !isFinal(r.state) && r.expiresAt <= at;
    const overdue = [...this.store.all()].filter((r) => due(r, now));
    if (overdue.length === 0) return;
    if (!this.reconciler) {
      for (const r of overdue) this.update(r, { state: 'expired', expiredAt: now });
      return;
    }
    // Looked up first: a command whose response the distributor stored ends with that response.
    // One sweep's look-up at a time; the next sweep takes what is overdue then.
    if (this.sweeping) return;
    this.sweeping = true;
    this.reconciler.lookUp(() => overdue.flatMap((r) => this.store.get(r.commandId) ?? [])).then(
      () => this.expireNow(overdue, (r) => due(r, Date.now())),
      (err: unknown) => {
        const at = Date.now();
        const past = overdue.filter((r) => r.expiresAt + TIMINGS.commandReconcileGraceMs <= at);
        this.log.error(
          { code: 'API_RESPONSES_UNREADABLE', err: (err as Error).message, overdue: overdue.length, expiredAnyway: past.length },
          'commands due to expire could not be looked up among the responses the distributor stored: they wait, up to TIMINGS.commandReconcileGraceMs past their expiry',
        );
        this.expireNow(past, (r) => due(r, at));
      },
    ).finally(() => {
      this.sweeping = false;
    });
  }

  /** Expires those of `records` that, as they are now, `still` holds for. */
  private expireNow(records: readonly CommandRecord[], still: (r: CommandRecord | undefined) => boolean): void {
    if (this.closed) return;
    for (const r of records) {
      const current = this.store.get(r.commandId);
      if (still(current)) this.update(current as CommandRecord, { state: 'expired', expiredAt: Date.now() });
    }
  }

  private update(record: CommandRecord, change: Partial<CommandRecord>): void {
    this.store.put({ ...record, ...change, updatedAt: Date.now() });
  }
}
