import { closeSync, constants, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import { LIMITS } from '../../../shared/limits.ts';

/** sequence numbers remembered below the highest seen, per device and epoch */
export const WINDOW = LIMITS.replayWindowSeqs;
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

/** Per device: epoch → window. `ring` is base64. Version 2; version 1 had a shifted `bits` map. */
const StoredEpochsSchema = z.record(
  z.string(),
  z.union([z.object({ top: z.number(), ring: z.string(), lastSeen: z.number() }), z.object({ top: z.number(), bits: z.string(), lastSeen: z.number() })]),
);
type StoredEpoch = z.infer<typeof StoredEpochsSchema>[string];

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
 * A device's windows on disk: two slots written in turn, in place (DIR/DEVICE.0.win and .1.win),
 * each `MAGIC GENERATION BYTES CRC32\n` then the JSON of its epochs. Loading takes the intact slot
 * of the highest generation, so a write torn by a crash costs at most the last update, never the
 * window. (Writing a new file and renaming it over the old, as before, cost 250 µs of kernel time
 * per update on ext4, a tenth of the distributor's CPU; the same bytes written in place cost 4 µs.)
 * Bytes past BYTES are left from longer earlier writes and ignored: the file is never truncated.
 * A DIR/DEVICE.json of the earlier layout is read when no slot is intact.
 */
const SLOT_MAGIC = 'fieldstream-replay-window-v3';

function readSlot(path: string): { generation: number; epochs: Record<string, StoredEpoch> } | undefined {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch {
    return undefined;
  }
  const eol = data.indexOf(10);
  const [magic, generation, bytes, crc] = data.subarray(0, Math.max(0, eol)).toString('latin1').split(' ');
  if (eol < 0 || magic !== SLOT_MAGIC) return undefined;
  const body = data.subarray(eol + 1, eol + 1 + Number(bytes));
  if (body.length !== Number(bytes) || crc32(body) !== Number(crc)) return undefined; // torn or damaged
  try {
    const epochs = StoredEpochsSchema.safeParse(JSON.parse(body.toString('utf8')));
    return epochs.success ? { generation: Number(generation), epochs: epochs.data } : undefined; // not a window: damaged
  } catch {
    return undefined;
  }
}

function writeSlot(path: string, generation: number, epochs: Record<string, StoredEpoch>): void {
  const body = Buffer.from(JSON.stringify(epochs), 'utf8');
  const header = Buffer.from(`${SLOT_MAGIC} ${generation} ${body.length} ${crc32(body)}\n`, 'latin1');
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT, 0o600);
  try {
    writeSync(fd, Buffer.concat([header, body]), 0, header.length + body.length, 0);
  } finally {
    closeSync(fd);
  }
}

/**
 * Which sequence numbers of each (device, epoch) were accepted: the highest, and which of the
 * WINDOW below it. Persisted per device (see SLOT_MAGIC) before the broker is acknowledged, so
 * restarting the distributor does not reopen replay. Out-of-order arrival within the window is
 * fine (a device resends unacknowledged messages after a reconnect); anything below the window is
 * refused, since a device never holds that many messages unacknowledged.
 */
export class ReplayWindows {
  private readonly devices = new Map<string, Map<string, EpochWindow>>();
  private readonly dirty = new Set<string>();
  /** per device, the generation last written (its slot is generation mod 2) */
  private readonly generations = new Map<string, number>();

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  private device(deviceId: string): Map<string, EpochWindow> {
    let d = this.devices.get(deviceId);
    if (d) return d;
    d = new Map();
    const slots = [0, 1].map((i) => readSlot(this.slotPath(deviceId, i)));
    const newest = slots.reduce((a, b) => (b && (!a || b.generation > a.generation) ? b : a), undefined);
    let raw: Record<string, StoredEpoch> | undefined = newest?.epochs;
    if (newest) this.generations.set(deviceId, newest.generation);
    else {
      try {
        raw = StoredEpochsSchema.parse(JSON.parse(readFileSync(join(this.dir, `${deviceId}.json`), 'utf8')));
      } catch {
        /* a device seen for the first time */
      }
    }
    for (const [epoch, w] of Object.entries(raw ?? {})) {
      d.set(epoch, { top: w.top, ring: 'ring' in w ? Buffer.from(w.ring, 'base64') : fromShifted(w.top, Buffer.from(w.bits, 'base64')), lastSeen: w.lastSeen });
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

  private slotPath(deviceId: string, slot: number): string {
    return join(this.dir, `${deviceId}.${slot}.win`);
  }

  /** Writes every changed device, into the slot not holding its last write. */
  persist(): void {
    for (const deviceId of this.dirty) {
      const d = this.devices.get(deviceId);
      if (!d) continue;
      const out: Record<string, StoredEpoch> = {};
      for (const [epoch, w] of d) out[epoch] = { top: w.top, ring: w.ring.toString('base64'), lastSeen: w.lastSeen };
      const generation = (this.generations.get(deviceId) ?? 0) + 1;
      writeSlot(this.slotPath(deviceId, generation % 2), generation, out);
      this.generations.set(deviceId, generation);
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
