import assert from 'node:assert/strict';
import type { Submission } from '../../field-client/src/client-options.ts';

/**
 * A field client's queue for the Sparkplug session tests whose appends can be held: the process is
 * killed before they are written. `hold(false)` writes those held. A test simulating the kill waits
 * with `untilHeld` for the message's append to be handed over, the instant after which a kill must
 * find everything its append depends on (the session's births file) on the disk: a fixed sleep
 * there was outrun by a loaded machine's disk.
 */
export function heldQueue() {
  const stored: Submission[] = [];
  let hold = false;
  const held: Array<() => void> = [];
  return {
    stored,
    hold(on: boolean) {
      hold = on;
      if (!on) for (const h of held.splice(0)) h();
    },
    /** Waits until `n` appends are held (handed over, not written). */
    async untilHeld(n = 1): Promise<void> {
      for (let i = 0; i < 1_000 && held.length < n; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(held.length, n, 'appends handed to the queue and held');
    },
    client: {
      submitMany: (items: readonly Submission[]) =>
        new Promise<never[]>((resolve) => {
          const write = () => (stored.push(...items), resolve([]));
          if (hold) held.push(write);
          else write();
        }),
    },
  };
}
