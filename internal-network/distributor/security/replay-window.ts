import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** sequence numbers remembered below the highest seen, per device and epoch */
export const WINDOW = 65_536;
/** epochs remembered per device (queue lifetimes, file transfers); the least recently used goes first */
const EPOCHS_PER_DEVICE = 64;

interface EpochWindow {
  /** highest sequence number accepted */
  top: number;
  /** bit i set: top - i was accepted (i < WINDOW) */
  bits: Buffer;
  lastSeen: number;
}

export type ReplayVerdict = 'new' | 'seen' | 'too-old';

/**
 * Which sequence numbers of each (device, epoch) were accepted: the highest, and a bitmap of the
 * WINDOW below it. Persisted per device (DIR/DEVICE.json) before the broker is acknowledged, so
 * restarting the distributor does not reopen replay. Out-of-order arrival within the window is
 * fine (a device resends unacknowledged messages after a reconnect); anything below the window is
 * refused, since a device never holds that many messages unacknowledged.
 */
export class ReplayWindows {
  private readonly devices = new Map<string, Map<string, EpochWindow>>();
  private readonly dirty = new Set<string>();

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private device(deviceId: string): Map<string, EpochWindow> {
    let d = this.devices.get(deviceId);
    if (d) return d;
    d = new Map();
    try {
      const raw = JSON.parse(readFileSync(join(this.dir, `${deviceId}.json`), 'utf8')) as Record<string, { top: number; bits: string; lastSeen: number }>;
      for (const [epoch, w] of Object.entries(raw)) d.set(epoch, { top: w.top, bits: Buffer.from(w.bits, 'base64'), lastSeen: w.lastSeen });
    } catch {
      /* a device seen for the first time */
    }
    this.devices.set(deviceId, d);
    return d;
  }

  check(deviceId: string, epoch: string, seq: number): ReplayVerdict {
    const w = this.device(deviceId).get(epoch);
    if (!w || seq > w.top) return 'new';
    const i = w.top - seq;
    if (i >= WINDOW) return 'too-old';
    return (w.bits[i >> 3] as number) & (1 << (i & 7)) ? 'seen' : 'new';
  }

  record(deviceId: string, epoch: string, seq: number): void {
    const d = this.device(deviceId);
    let w = d.get(epoch);
    if (!w) {
      w = { top: seq, bits: Buffer.alloc(WINDOW / 8), lastSeen: Date.now() };
      d.set(epoch, w);
      if (d.size > EPOCHS_PER_DEVICE) {
        const oldest = [...d.entries()].sort((a, b) => a[1].lastSeen - b[1].lastSeen)[0];
        if (oldest) d.delete(oldest[0]);
      }
    }
    if (seq > w.top) {
      shiftLeft(w.bits, seq - w.top);
      w.top = seq;
    }
    const i = w.top - seq;
    if (i < WINDOW) w.bits[i >> 3] = (w.bits[i >> 3] as number) | (1 << (i & 7));
    w.lastSeen = Date.now();
    this.dirty.add(deviceId);
  }

  /** Writes every changed device (write to a temporary file, then rename: never a torn file). */
  persist(): void {
    for (const deviceId of this.dirty) {
      const d = this.devices.get(deviceId);
      if (!d) continue;
      const out: Record<string, { top: number; bits: string; lastSeen: number }> = {};
      for (const [epoch, w] of d) out[epoch] = { top: w.top, bits: w.bits.toString('base64'), lastSeen: w.lastSeen };
      const path = join(this.dir, `${deviceId}.json`);
      writeFileSync(`${path}.tmp`, JSON.stringify(out));
      renameSync(`${path}.tmp`, path);
    }
    this.dirty.clear();
  }
}

/** Moves every bit up by n positions (bit i becomes bit i + n); bits past the window fall off. */
function shiftLeft(bits: Buffer, n: number): void {
  if (n >= WINDOW) {
    bits.fill(0);
    return;
  }
  const bytes = n >> 3;
  const rest = n & 7;
  for (let i = bits.length - 1; i >= 0; i--) {
    const hi = i - bytes >= 0 ? (bits[i - bytes] as number) : 0;
    const lo = i - bytes - 1 >= 0 ? (bits[i - bytes - 1] as number) : 0;
    bits[i] = rest === 0 ? hi : ((hi << rest) | (lo >> (8 - rest))) & 0xff;
  }
}
