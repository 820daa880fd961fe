import { LIMITS, TIMINGS } from '../../shared/limits.ts';

export interface ConnectBudgetOptions {
  /** connections a device may open in a row (LIMITS.gatewayDeviceConnectsBurst) */
  burst: number;
  /** milliseconds after which one more comes back (TIMINGS.gatewayDeviceConnectRefillMs) */
  refillMs: number;
}

/** Below this many devices tracked the budgets are never swept: a sweep is not worth it. */
const SWEEP_MIN = 1024;

/**
 * How many connections each device may still open at this gateway now: `burst` at first, one
 * taken by each connection opened, one given back every `refillMs`. Keyed by the id the device
 * proved (its certificate, its token), so nobody can spend another device's budget, and taken only
 * for a connection let in: refused attempts cost the device nothing here.
 *
 * One entry per device that connected lately: an entry whose budget has come back whole says
 * nothing a missing one does not, and such entries are dropped whenever the map has doubled since
 * the last sweep (each sweep paid for by the connections that grew it).
 */
export class ConnectBudget {
  private readonly spent = new Map<string, { left: number; at: number }>();
  private sweepAt = SWEEP_MIN;

  constructor(private readonly o: ConnectBudgetOptions = { burst: LIMITS.gatewayDeviceConnectsBurst, refillMs: TIMINGS.gatewayDeviceConnectRefillMs }) {}

  /**
   * Whether `deviceId` may open a connection now; when it may, one is taken from its budget. `now`:
   * performance.now(), which does not step back when the system clock is set (a wall clock set back
   * an hour would have refused a device that had spent its budget for that hour).
   */
  take(deviceId: string, now = performance.now()): boolean {
    const e = this.spent.get(deviceId);
    const left = e ? this.leftOf(e, now) : this.o.burst;
    if (left < 1) return false;
    if (e) {
      // The time of the last whole refill is kept, not now: a part of a refill is not lost.
      const refills = Math.floor((now - e.at) / this.o.refillMs);
      e.at = left >= this.o.burst ? now : e.at + refills * this.o.refillMs;
      e.left = left - 1;
    } else {
      this.spent.set(deviceId, { left: left - 1, at: now });
      if (this.spent.size >= this.sweepAt) this.sweep(now);
    }
    return true;
  }

  /** Devices tracked now (for tests and the metrics). */
  get size(): number {
    return this.spent.size;
  }

  private leftOf(e: { left: number; at: number }, now: number): number {
    return Math.min(this.o.burst, e.left + Math.floor(Math.max(0, now - e.at) / this.o.refillMs));
  }

  private sweep(now: number): void {
    for (const [id, e] of this.spent) if (this.leftOf(e, now) >= this.o.burst) this.spent.delete(id);
    this.sweepAt = Math.max(SWEEP_MIN, this.spent.size * 2);
  }
}
