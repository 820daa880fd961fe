import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** sequence numbers remembered below the highest seen, per device and epoch */
export const WINDOW = 65_536;
/** epochs remembered per device (queue lifetimes, file transfers); the least recently used goes first */
const EPOCHS_PER_DEVICE = 64;

interface EpochWindow {
  /** highest sequence number accepted */
  top: number;
  /**
   * A ring of WINDOW bits: bit (seq mod WINDOW) is set when seq was accepted, for seq in
   * (top - WINDOW, top]. Advancing `top` clears only the bits it passes over, so recording a
   * sequence number costs O(advance), not O(WINDOW) as shifting a bitmap would (the ring is the
   * bitmap layout of RFC 6479, §2).
   */
  ring: Buffer;
  lastSeen: number;
}

/** On disk, per device: epoch → window. `ring` is base64. Version 2; version 1 had a shifted `bits` map. */
type StoredEpoch = { top: number; ring: string; lastSeen: number } | { top: number; bits: string; lastSeen: number };

export type ReplayVerdict = 'new' | 'seen' | 'too-old';

const isSet = (ring: Buffer, seq: number) => ((ring[(seq % WINDOW) >> 3] as number) & (1 << (seq & 7))) !== 0;
const setBit = (ring: Buffer, seq: number) => {
  const i = (seq % WINDOW) >> 3;
  ring[i] = (ring[i] as number) | (1 << (seq & 7));
};
const clearBit = (ring: Buffer, seq: number) => {
  const i = (seq % WINDOW) >> 3;
  ring[i] = (ring[i] as number) & ~(1 << (seq & 7));
};

/**
 * Which sequence numbers of each (device, epoch) were accepted: the highest, and which of the
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
      const raw = JSON.parse(readFileSync(join(this.dir, `${deviceId}.json`), 'utf8')) as Record<string, StoredEpoch>;
      for (const [epoch, w] of Object.entries(raw)) d.set(epoch, { top: w.top, ring: 'ring' in w ? Buffer.from(w.ring, 'base64') : fromShifted(w.top, Buffer.from(w.bits, 'base64')), lastSeen: w.lastSeen });
    } catch {
      /* a device seen for the first time */
    }
    this.devices.set(deviceId, d);
    return d;
  }

  check(deviceId: string, epoch: string, seq: number): ReplayVerdict {
    const w = this.device(deviceId).get(epoch);
    if (!w || seq > w.top) return 'new';
    if (w.top - seq >= WINDOW) return 'too-old';
    return isSet(w.ring, seq) ? 'seen' : 'new';
  }

  record(deviceId: string, epoch: string, seq: number): void {
    const d = this.device(deviceId);
    let w = d.get(epoch);
    if (!w) {
      w = { top: seq, ring: Buffer.alloc(WINDOW / 8), lastSeen: Date.now() };
      d.set(epoch, w);
      if (d.size > EPOCHS_PER_DEVICE) {
        const oldest = [...d.entries()].sort((a, b) => a[1].lastSeen - b[1].lastSeen)[0];
        if (oldest) d.delete(oldest[0]);
      }
    }
    if (seq > w.top) {
      // The slots of top+1 .. seq held sequence numbers that now fall out of the window.
      if (seq - w.top >= WINDOW) w.ring.fill(0);
      else for (let s = w.top + 1; s <= seq; s++) clearBit(w.ring, s);
      w.top = seq;
    }
    if (w.top - seq < WINDOW) setBit(w.ring, seq);
    w.lastSeen = Date.now();
    this.dirty.add(deviceId);
  }

  /** Writes every changed device (write to a temporary file, then rename: never a torn file). */
  persist(): void {
    for (const deviceId of this.dirty) {
      const d = this.devices.get(deviceId);
      if (!d) continue;
      const out: Record<string, StoredEpoch> = {};
      for (const [epoch, w] of d) out[epoch] = { top: w.top, ring: w.ring.toString('base64'), lastSeen: w.lastSeen };
      const path = join(this.dir, `${deviceId}.json`);
      writeFileSync(`${path}.tmp`, JSON.stringify(out));
      renameSync(`${path}.tmp`, path);
    }
    this.dirty.clear();
  }
}

/** The version 1 layout (bit i set: top - i accepted) as a ring, so an upgrade keeps every window. */
function fromShifted(top: number, bits: Buffer): Buffer {
  const ring = Buffer.alloc(WINDOW / 8);
  for (let i = 0; i < WINDOW && i <= top; i++) if ((bits[i >> 3] as number) & (1 << (i & 7))) setBit(ring, top - i);
  return ring;
}
