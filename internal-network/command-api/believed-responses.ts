import type { EnvelopeOf } from '../../shared/contract/envelope.ts';
import type { ErrorCode } from '../../shared/errors.ts';
import { LimitedLog } from '../../shared/limited-log.ts';
import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import { sortBySignature } from '../shared/authentic.ts';
import type { DeviceKeyRegistry } from '../shared/device-keys.ts';

export type Response = EnvelopeOf<'response'>['messages'][number];

/**
 * Which responses the broker hands over the command API believes, and the log of what it refuses.
 *
 * Each response is believed only if the device signed it (shared/security/message-auth.ts) under
 * the same registered key: the DMZ publishes uplink envelopes with the gateway's identity, and could
 * otherwise hold a command back and report it `completed`, or make it final with a `rejected`.
 */
/**
 * Every code a response is refused with (genuine() below). command_api_responses_refused_total
 * exposes each at 0 from the start: a series that appears at its first refusal, already at 1, shows
 * rate() and increase() nothing, and the dashboards missed a forged or revoked device's first response.
 */
export const RESPONSE_REFUSAL_CODES = ['SECURITY_REVOKED', 'SECURITY_BAD_SIGNATURE', 'SECURITY_UNKNOWN_DEVICE', 'SECURITY_UNSIGNED'] as const satisfies readonly ErrorCode[];

export class BelievedResponses {
  /** responses ignored because they are not provably the device's, by code */
  readonly refused: Partial<Record<ErrorCode, number>> = {};
  /**
   * What the broker hands over that is refused or ignored (forged responses, invalid payloads,
   * answers to unknown commands): the DMZ decides how many, tens of thousands a second through the
   * bridge, and a line each filled this service's log. Per code, a few lines per
   * TIMINGS.floodLogIntervalMs, the rest counted in the next; `refused` (the metrics) counts every
   * refused response.
   */
  private readonly floodLogs = new Map<string, LimitedLog>();

  constructor(
    private readonly keys: DeviceKeyRegistry,
    /** COMMAND_ALLOW_UNSIGNED: believe the unsigned responses of devices without a registered key */
    private readonly allowUnsigned: boolean,
    private readonly log: Logger,
  ) {}

  /**
   * The responses of `env` the device provably sent: signed under its registered key (a signed group
   * counts whole or not at all), or, for a device without a key and only with COMMAND_ALLOW_UNSIGNED,
   * unsigned. A device with a key must sign. The rest is ignored, counted and logged with its code.
   * Freshness and replay are not checked: a genuine response replayed by the DMZ says what the device
   * said, for the same command id — recorded once, since a final state never changes and an
   * acceptance after any answer changes nothing (dispatcher.ts answer).
   */
  genuine(env: EnvelopeOf<'response'>): Response[] {
    const { deviceId, gatewayId } = env;
    const refuse = (code: (typeof RESPONSE_REFUSAL_CODES)[number], messages: readonly Response[], detail: string) => {
      if (messages.length === 0) return;
      this.refused[code] = (this.refused[code] ?? 0) + messages.length;
      this.floodLog(
        { code, deviceId, gatewayId, commandIds: messages.slice(0, 20).map((m) => m.payload.commandId), refused: this.refused[code] },
        `security: ${detail}; response ignored`,
      );
    };
    if (this.keys.isRevoked(deviceId)) {
      refuse('SECURITY_REVOKED', env.messages, 'the device was revoked');
      return [];
    }
    const key = this.keys.get(deviceId);
    const sorted = sortBySignature(key, env);
    const unsignedOk = !key && this.allowUnsigned;
    if (key) refuse('SECURITY_BAD_SIGNATURE', sorted.unverified, 'signature does not match the content and the device key (or the signed group is incomplete)');
    else refuse('SECURITY_UNKNOWN_DEVICE', sorted.unverified, 'no signing key registered for this device (unknown or revoked)');
    if (!unsignedOk) refuse('SECURITY_UNSIGNED', sorted.unsigned, key ? 'unsigned response from a device with a registered key' : 'unsigned response (COMMAND_ALLOW_UNSIGNED is off)');
    const believed = new Set<Response>(sorted.authentic.map((a) => a.message));
    if (unsignedOk) for (const m of sorted.unsigned) believed.add(m);
    return env.messages.filter((m) => believed.has(m)); // in the device's order
  }

  /** A line of what the broker handed over and was refused or ignored, within its code's budget (floodLogs). */
  floodLog(fields: { code?: ErrorCode } & Record<string, unknown>, message: string): void {
    const key = fields.code ?? 'none';
    let log = this.floodLogs.get(key);
    if (!log) {
      log = new LimitedLog(this.log, { level: 'warn', maxPerWindow: LIMITS.commandApiRefusalLogMaxPerWindow, windowMs: TIMINGS.floodLogIntervalMs, what: `refused or ignored messages from the broker (${key})` });
      this.floodLogs.set(key, log);
    }
    log.write(fields, message);
  }
}
