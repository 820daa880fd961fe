/**
 * Room within FIELD_QUEUE_MAX_BYTES held for files being taken (copied or moved into the outbox,
 * or still arriving over HTTP), before the outbox counts them: a file is in outgoing/ only once it
 * is placed, and a check of the bound that did not count the files already on their way would let
 * every one of a burst through, each alone fitting, together far over the bound (then refused at
 * their queue records, after they were moved). The outbox counts these bytes as its own, so the
 * queue's own check (shareCapacity) sees them too: readings cannot take the room a file was given.
 */
export class FileRoom {
  /** bytes held by all reservations */
  private held = 0;

  get bytes(): number {
    return this.held;
  }

  /** Holds `bytes` (the caller checked there is room). */
  reserve(bytes: number): Reservation {
    return new Reservation(this, bytes);
  }

  /** @internal for Reservation */
  add(bytes: number): void {
    this.held += bytes;
  }
}

/** Room held for one file until it is queued, or released (either way once: release is idempotent). */
export class Reservation {
  private mine = 0;

  constructor(private readonly room: FileRoom, bytes: number) {
    this.grow(bytes);
  }

  /** bytes held */
  get bytes(): number {
    return this.mine;
  }

  grow(bytes: number): void {
    this.mine += bytes;
    this.room.add(bytes);
  }

  /** Gives back up to `bytes` (the file now counted where it lies: in outgoing/). */
  shrink(bytes: number): void {
    const n = Math.min(Math.max(0, bytes), this.mine);
    this.mine -= n;
    this.room.add(-n);
  }

  release(): void {
    this.shrink(this.mine);
  }
}
