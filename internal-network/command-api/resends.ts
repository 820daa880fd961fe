import { LIMITS, TIMINGS } from '../../shared/limits.ts';
import type { DeviceKeyRegistry } from '../shared/device-keys.ts';
import type { CommandRecord } from './schemas.ts';
import type { CommandStore } from './store.ts';

/** How the dispatcher sends again what is not answered. */
export interface ResendPolicy {
  /** COMMAND_RESEND_UNANSWERED_S, in milliseconds: a command `sent` this long ago, unanswered, whose
   * device was last said online, is sent again (off: only at the device's next presence) */
  unansweredMs?: number;
}

/**
 * What the command API sends again of a device's commands waiting for an answer: all of them at its
 * `online` presence (at most once per TIMINGS.commandRedeliverMinIntervalMs), and, while it was last
 * said online, each one not answered `unansweredMs` after it was sent. A resend is a publish like
 * the first (dispatcher.ts), not journaled; the device answers a command id once.
 */
export class Resends {
  /**
   * devices whose waiting commands were resent lately: when, the resend put off till later, and
   * whether the device was said offline since that resend was put off
   */
  private readonly resent = new Map<string, { at: number; later?: NodeJS.Timeout; offline?: boolean }>();
  /**
   * Devices last said `online`: their unanswered commands are sent again each `unansweredMs`
   * (sweep). Only devices with a registered key or a command waiting, so the ids a compromised DMZ
   * invents add nothing. Left at an `offline`.
   */
  private readonly onlineIds = new Set<string>();
  private closed = false;

  constructor(
    private readonly store: CommandStore,
    private readonly keys: Pick<DeviceKeyRegistry, 'has'>,
    private readonly policy: ResendPolicy,
    private readonly publish: (record: CommandRecord) => void,
  ) {}

  /** The device's presence says `online`: its waiting commands are sent again. */
  online(deviceId: string): void {
    if (this.policy.unansweredMs !== undefined && this.keys.has(deviceId)) this.onlineIds.add(deviceId);
    const last = this.resent.get(deviceId);
    if (last) last.offline = false;
    this.redeliver(deviceId);
  }

  /** The device's presence says `offline`: nothing more is sent again to it before it is back. */
  offline(deviceId: string): void {
    this.onlineIds.delete(deviceId);
    // A resend put off still goes (it serves a presence that came), but no longer makes the device
    // followed as online: it was said offline after that presence.
    const last = this.resent.get(deviceId);
    if (last?.later) last.offline = true;
  }

  /** At each sweep of the dispatcher. */
  sweep(): void {
    this.forgetResends();
    this.resendUnanswered();
  }

  close(): void {
    this.closed = true;
    for (const r of this.resent.values()) clearTimeout(r.later);
    this.resent.clear();
  }

  /** The device's waiting commands only: a status for each device of a gateway that reconnects (ten
   * thousand at once) went through every command kept (up to 100,000) each. `follow`: the device is
   * followed as online from then on (false for a resend put off past an `offline`). */
  private redeliver(deviceId: string, follow = true): void {
    const now = performance.now();
    const last = this.resent.get(deviceId);
    if (last && now - last.at < TIMINGS.commandRedeliverMinIntervalMs) {
      // Once per interval at most (a presence flood from the DMZ resends nothing more), and never
      // dropped: a device that really came back within it gets its commands when it has passed.
      last.later ??= setTimeout(() => {
        last.later = undefined;
        if (!this.closed) this.redeliver(deviceId, last.offline !== true);
      }, TIMINGS.commandRedeliverMinIntervalMs - (now - last.at));
      return;
    }
    const wall = Date.now();
    let sent = 0;
    for (const r of this.store.waitingFor(deviceId)) {
      if ((r.state === 'queued' || r.state === 'sent') && r.expiresAt > wall) {
        this.publish(r);
        sent++;
      }
    }
    // Remembered only for a device something was resent to: presences of devices with nothing
    // waiting (any id the DMZ makes up) cost no memory. Followed as online unless it was said
    // offline after the presence this resend serves (`follow`): else a resend put off past an
    // `offline` had its commands sent again every unansweredMs to a device said offline.
    if (sent > 0) {
      this.resent.set(deviceId, { at: now });
      if (follow && this.policy.unansweredMs !== undefined) this.onlineIds.add(deviceId);
    } else this.resent.delete(deviceId);
  }

  /**
   * Sends again each command `sent` at least `unansweredMs` ago, unanswered, to a device last said
   * online (at each sweep). The device may have put it off, running nothing of it: too many of its
   * commands waited (FIELD_COMMANDS_WAITING_FULL), its queue had no room for answers
   * (FIELD_QUEUE_FULL), it was stopping; or the way lost it. Any of these waited for the device's
   * next presence, which a gateway publishes once a day to a device that stays connected: the
   * command expired unrun beside a device online all along. The device answers a command id once,
   * and a copy of one it runs or holds gets nothing (field-client/src/commands.ts), so a resend
   * cannot run anything twice. Not journaled, as no resend is (dispatcher.ts, publish).
   */
  private resendUnanswered(): void {
    const after = this.policy.unansweredMs;
    if (after === undefined) return;
    const now = Date.now();
    for (const deviceId of [...this.onlineIds]) {
      const live = [...this.store.waitingFor(deviceId)].filter((r) => r.expiresAt > now && (r.state === 'queued' || r.state === 'sent'));
      const waiting = live.length;
      // The oldest LIMITS.commandResendPerDeviceMax only, as many as a device can hold; it runs them
      // in the order they arrive. By when they were issued: the store's order changes as commands
      // are noted (a resend moves one to the end), and the younger would pass the older.
      if (waiting > LIMITS.commandResendPerDeviceMax) live.sort((x, y) => x.issuedAt - y.issuedAt);
      for (const r of live.slice(0, LIMITS.commandResendPerDeviceMax)) {
        if (r.state === 'sent' && r.sentAt !== undefined && now - r.sentAt >= after) this.publish(r);
      }
      // Kept while its key is registered (a command issued later is resent too); else only while
      // something of it waits (COMMAND_ALLOW_UNSIGNED's keyless devices).
      if (waiting === 0 && !this.keys.has(deviceId)) this.onlineIds.delete(deviceId);
    }
  }

  /** Drops the devices whose interval has passed and that have no resend put off (at each sweep). */
  private forgetResends(): void {
    const now = performance.now();
    for (const [id, r] of this.resent) if (!r.later && now - r.at >= TIMINGS.commandRedeliverMinIntervalMs) this.resent.delete(id);
  }
}
