import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { LIMITS } from '../../../shared/limits.ts';
import { type JournalEntry, journalLine, readFramed, ReplayStore, type Snapshot, STORED_RUNS_MAX, type StoredWindow } from './replay-store.ts';
import { makeDirDurablySync } from '../../../shared/durable-fs.ts';
import type { Logger } from '../../../shared/logger.ts';

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

/** The layout before the journal, per device: epoch → window. `ring` is base64; version 1 had a shifted `bits` map. */
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
 * The layout before the journal (replay-store.ts): per device, two slots written in turn
 * (DIR/DEVICE.0.win and .1.win), each `MAGIC GENERATION BYTES CRC32\n` then the JSON of its epochs,
 * and before them DIR/DEVICE.json. Read once, when a folder without a journal is first opened, into
 * the first snapshot; then removed.
 */
const SLOT_MAGIC = 'fieldstream-replay-window-v3';
const LEGACY_FILE = /^(.+)\.(?:([01])\.win|json)$/;

function readSlot(path: string): { generation: number; epochs: Record<string, StoredEpoch> } | undefined {
  const framed = readFramed(path, SLOT_MAGIC);
  const epochs = StoredEpochsSchema.safeParse(framed?.json);
  return framed && epochs.success ? { generation: framed.generation, epochs: epochs.data } : undefined; // not a window: damaged
}

/** A device's windows in the layout before the journal: the intact slot of the highest generation, or its .json. */
function readLegacyDevice(dir: string, deviceId: string): Record<string, StoredEpoch> | undefined {
  const slots = [0, 1].map((i) => readSlot(join(dir, `${deviceId}.${i}.win`)));
  const newest = slots.reduce((a, b) => (b && (!a || b.generation > a.generation) ? b : a), undefined);
  if (newest) return newest.epochs;
  try {
    return StoredEpochsSchema.parse(JSON.parse(readFileSync(join(dir, `${deviceId}.json`), 'utf8')));
  } catch {
    return undefined; // damaged: not trusted
  }
}

/** The accepted sequence numbers of a window as ranges, newest first; undefined past STORED_RUNS_MAX. */
function runsOf(w: EpochWindow): Array<[number, number]> | undefined {
  const words = new Uint32Array(w.ring.buffer, w.ring.byteOffset, WINDOW / 32);
  const runs: Array<[number, number]> = [];
  const lowest = Math.max(0, w.top - WINDOW + 1);
  let open: number | undefined; // the highest of the range being walked
  let s = w.top;
  while (s >= lowest) {
    // 32 at a time where a whole word lies in the window and says the same of all of them
    if ((s & 31) === 31 && s - 31 >= lowest) {
      const word = words[(s % WINDOW) >>> 5] as number;
      if (word === 0 || word === 0xffff_ffff) {
        if (word === 0 && open !== undefined) {
          runs.push([open, s + 1]);
          open = undefined;
        } else if (word !== 0) open ??= s;
        s -= 32;
        if (runs.length > STORED_RUNS_MAX) return undefined;
        continue;
      }
    }
    if (isSet(w.ring, s)) open ??= s;
    else if (open !== undefined) {
      runs.push([open, s + 1]);
      open = undefined;
      if (runs.length > STORED_RUNS_MAX) return undefined;
    }
    s--;
  }
  if (open !== undefined) runs.push([open, lowest]);
  return runs.length > STORED_RUNS_MAX ? undefined : runs;
}

function storedOf(w: EpochWindow): StoredWindow {
  const runs = runsOf(w);
  return runs ? { top: w.top, lastSeen: w.lastSeen, runs } : { top: w.top, lastSeen: w.lastSeen, ring: Buffer.from(w.ring).toString('base64') };
}

/** A fresh ring (aligned for runsOf's word reads), with the bits of `stored`. */
function windowOf(stored: StoredWindow | StoredEpoch): EpochWindow {
  const ring = Buffer.from(new ArrayBuffer(WINDOW / 8));
  if ('runs' in stored) {
    for (const [hi, lo] of stored.runs) for (let s = Math.min(hi, stored.top); s >= lo && stored.top - s < WINDOW; s--) setBit(ring, s);
  } else if ('ring' in stored) Buffer.from(stored.ring, 'base64').copy(ring, 0, 0, WINDOW / 8);
  else fromShifted(stored.top, Buffer.from(stored.bits, 'base64')).copy(ring);
  return { top: stored.top, ring, lastSeen: stored.lastSeen };
}

/**
 * Which sequence numbers of each (device, epoch) were accepted: the highest, and which of the
 * WINDOW below it. Kept in memory, and journalled (replay-store.ts) by persist() before the broker
 * is acknowledged, so restarting the distributor does not reopen replay. Out-of-order arrival
 * within the window is fine (a device resends unacknowledged messages after a reconnect); anything
 * below the window is refused, since a device never holds that many messages unacknowledged.
 */
export class ReplayWindows {
  private readonly devices = new Map<string, Map<string, EpochWindow>>();
  /** what was recorded since the last persist(), a device and epoch's run of records in one entry */
  private pending: JournalEntry[] = [];
  private readonly store: ReplayStore;

  /**
   * `journalMaxBytes`: see LIMITS.replayJournalMaxBytes (lower only in tests, to see compactions).
   * `fence`: throws once the folder is another distributor's (the state lease's assertHeld): then
   * persist() throws, after its append, and what it journalled must not be acknowledged.
   */
  constructor(
    private readonly dir: string,
    o: { journalMaxBytes?: number; fence?: () => void; log?: Logger } = {},
  ) {
    makeDirDurablySync(dir);
    this.store = new ReplayStore(dir, o.journalMaxBytes, o.fence);
    const { snapshot, entries, damage } = this.store.load();
    // Said, not only skipped: the numbers a damaged line or snapshot held may be accepted once more.
    if (damage.lines > 0 || damage.snapshots.length > 0) {
      o.log?.warn(
        { code: 'DISTRIBUTOR_REPLAY_STATE_DAMAGED', dir, lines: damage.lines, snapshots: damage.snapshots },
        "damaged lines or snapshots of the replay windows skipped: the sequence numbers only they held may be accepted once more",
      );
    }
    const legacy = snapshot || entries.length > 0 ? [] : this.legacyDevices();
    for (const [deviceId, epochs] of Object.entries(snapshot?.devices ?? {})) {
      this.devices.set(deviceId, new Map(Object.entries(epochs).map(([epoch, w]) => [epoch, windowOf(w)])));
    }
    for (const deviceId of legacy) {
      const epochs = readLegacyDevice(dir, deviceId);
      if (epochs) this.devices.set(deviceId, new Map(Object.entries(epochs).map(([epoch, w]) => [epoch, windowOf(w)])));
    }
    for (const e of entries) for (const seq of e.seqs) this.apply(e.deviceId, e.epoch, seq, e.time);
    // A new generation at every start: the journal is appended to only after its intact lines.
    this.store.compact(this.snapshot());
    for (const name of readdirSync(dir)) if (LEGACY_FILE.test(name)) rmSync(join(dir, name), { force: true });
  }

  /** The devices that have windows in the layout before the journal. */
  private legacyDevices(): string[] {
    const ids = new Set<string>();
    for (const name of readdirSync(this.dir)) {
      const m = LEGACY_FILE.exec(name);
      if (m) ids.add(m[1] as string);
    }
    return [...ids];
  }

  check(deviceId: string, epoch: string, seq: number): ReplayVerdict {
    const w = this.devices.get(deviceId)?.get(epoch);
    if (!w || seq > w.top) return 'new';
    if (w.top - seq >= WINDOW) return 'too-old';
    return isSet(w.ring, seq) ? 'seen' : 'new';
  }

  /** Takes effect at once; on disk at the next persist(). */
  record(deviceId: string, epoch: string, seq: number): void {
    const now = Date.now();
    this.apply(deviceId, epoch, seq, now);
    const last = this.pending.at(-1);
    if (last && last.deviceId === deviceId && last.epoch === epoch) last.seqs.push(seq);
    else this.pending.push({ time: now, deviceId, epoch, seqs: [seq] });
  }

  private apply(deviceId: string, epoch: string, seq: number, now: number): void {
    let d = this.devices.get(deviceId);
    if (!d) {
      d = new Map();
      this.devices.set(deviceId, d);
    }
    let w = d.get(epoch);
    if (!w) {
      w = { top: seq, ring: Buffer.from(new ArrayBuffer(WINDOW / 8)), lastSeen: now };
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
    w.lastSeen = Math.max(w.lastSeen, now);
  }

  /** Appends what was recorded since the last call to the journal, with one write. */
  persist(): void {
    if (this.pending.length === 0) return;
    const full = this.store.append(this.pending.map(journalLine).join(''));
    this.pending = [];
    if (full) this.store.compact(this.snapshot());
  }

  private snapshot(): Snapshot {
    const devices: Snapshot['devices'] = {};
    for (const [deviceId, d] of this.devices) {
      const epochs: Record<string, StoredWindow> = {};
      for (const [epoch, w] of d) epochs[epoch] = storedOf(w);
      devices[deviceId] = epochs;
    }
    return { devices };
  }

  close(): void {
    this.store.close();
  }
}

/** The version 1 layout (bit i set: top - i accepted) as a ring, so an upgrade keeps every window. */
function fromShifted(top: number, bits: Buffer): Buffer {
  const ring = Buffer.alloc(WINDOW / 8);
  for (let i = 0; i < WINDOW && i <= top; i++) if ((bits[i >> 3] as number) & (1 << (i & 7))) setBit(ring, top - i);
  return ring;
}
