/**
 * The commands that run at once, at most `size` (FIELD_COMMANDS_CONCURRENCY), and those waiting for
 * one of them to end, in order of arrival and at most `waitingMax` (LIMITS.fieldCommandsWaitingMax).
 * A device back online after a day away is delivered every command queued for it at once: each of
 * them started its handler (an exec program each) at the same time, dozens of processes on a small
 * device. CommandHandlers (commands.ts) takes a slot before a command's "started" line is journaled
 * and gives it back once its answer is journaled.
 *
 * Order of arrival is the order of the tickets given as commands arrive (arrive), not the order
 * they ask for a slot: a command's checks may first wait (the first to arrive queues the answers the
 * queue refused before: KeptAnswers.drain), and those arriving meanwhile did not pass it. A slot goes
 * to no command while one that arrived before it has not yet asked for a slot nor gone without one
 * (leave). A slot given back goes at once to the first waiting, so that nothing passes it either.
 */
export class CommandSlots {
  private taken = 0;
  private tickets = 0;
  /** tickets of the commands arrived that have neither asked for a slot (take) nor gone without one (leave) */
  private readonly undecided = new Set<number>();
  /** the waiting, by ticket: each told true once the slot is its own, false when the line closed */
  private readonly line: Array<{ id: string; ticket: number; resolve: (mine: boolean) => void }> = [];
  /** the command ids in the line */
  private readonly ids = new Set<string>();
  private closed = false;

  constructor(
    /** slots: commands running at once */
    readonly size: number,
    /** commands waiting at most */
    readonly waitingMax: number,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`command slots: ${size} is no whole number of at least 1`);
  }

  /** Commands holding a slot now. */
  get running(): number {
    return this.taken;
  }

  /** Commands waiting for a slot now. */
  get waiting(): number {
    return this.line.length;
  }

  /** Whether command `id` waits in the line. */
  isWaiting(id: string): boolean {
    return this.ids.has(id);
  }

  /** A command arrived: its place in the order. It then takes a slot (take) or leaves without one (leave). */
  arrive(): number {
    const ticket = this.tickets++;
    this.undecided.add(ticket);
    return ticket;
  }

  /** The command of `ticket` runs nothing (refused, answered already, a copy): it holds back no one. Once taken, changes nothing. */
  leave(ticket: number): void {
    if (this.undecided.delete(ticket)) this.grant();
  }

  /**
   * A slot for command `id`, of `ticket` (arrive): `taken` now; `full` when `waitingMax` wait already
   * (nothing taken, nothing waits); or the wait for one, resolved true once the slot is the caller's,
   * false when close() let it go without. Whoever got a slot gives it back with release(), once.
   */
  take(id: string, ticket: number): 'taken' | 'full' | Promise<boolean> {
    this.undecided.delete(ticket);
    if (this.closed) return Promise.resolve(false);
    if (this.taken < this.size && !this.anyBefore(ticket) && !(this.line.length > 0 && (this.line[0]?.ticket ?? Infinity) < ticket)) {
      this.taken++;
      this.grant(); // those after it that waited for it to decide
      return 'taken';
    }
    if (this.line.length >= this.waitingMax) {
      this.grant();
      return 'full';
    }
    const mine = new Promise<boolean>((resolve) => {
      const at = this.line.findIndex((w) => w.ticket > ticket);
      this.line.splice(at < 0 ? this.line.length : at, 0, { id, ticket, resolve });
    });
    this.ids.add(id);
    this.grant();
    return mine;
  }

  /** Gives a slot back: to the first waiting, if it may have it. */
  release(): void {
    this.taken = Math.max(0, this.taken - 1);
    this.grant();
  }

  /** The client stops: every waiting command is let go without a slot, and none waits from now on. */
  close(): void {
    this.closed = true;
    for (const waiting of this.line.splice(0)) this.hand(waiting, false);
  }

  /** Slots free go to the first waiting, while no command that arrived before it is undecided. */
  private grant(): void {
    while (this.taken < this.size && this.line.length > 0 && !this.anyBefore(this.line[0]!.ticket)) {
      this.taken++;
      this.hand(this.line.shift()!, true);
    }
  }

  /** Whether a command that arrived before `ticket` is undecided (few are: those whose checks wait on the queue). */
  private anyBefore(ticket: number): boolean {
    for (const t of this.undecided) if (t < ticket) return true;
    return false;
  }

  private hand(waiting: { id: string; resolve: (mine: boolean) => void }, mine: boolean): void {
    this.ids.delete(waiting.id);
    waiting.resolve(mine);
  }
}
