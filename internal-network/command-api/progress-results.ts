import { LIMITS } from '../../shared/limits.ts';
import { isFinal, type CommandRecord } from './schemas.ts';

/**
 * The results of devices' progress answers (`accepted`, no final state) the command store holds,
 * oldest first, within LIMITS.commandProgressResultsMaxBytes in all. A waiting command keeps its
 * last such answer; one each, of up to 64 KiB, for LIMITS.commandMaxLive commands took gigabytes,
 * while the waiting commands' bytes are bounded only as they are made (API_COMMANDS_FULL). Past the
 * bound the oldest results are let go: the final answer, what the operator waits for, is kept whole
 * in any case, and a progress result is a note on the way to it.
 */
export class ProgressResults {
  /** command id to its result's bytes as JSON, in the order the results came */
  private readonly held = new Map<string, number>();
  private heldBytes = 0;

  /** bytes of the results held */
  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * Counts the record's result when it is a progress answer's (the one held before for it having
   * been let go with `drop`), and returns the ids whose results are now to be let go, oldest first:
   * the record's own too, should it alone pass the bound.
   */
  hold(record: CommandRecord): string[] {
    if (isFinal(record.state) || record.response?.result === undefined) return [];
    const bytes = Buffer.byteLength(JSON.stringify(record.response.result));
    this.held.set(record.commandId, bytes);
    this.heldBytes += bytes;
    const over: string[] = [];
    let left = this.heldBytes;
    for (const [id, b] of this.held) {
      if (left <= LIMITS.commandProgressResultsMaxBytes) break;
      over.push(id);
      left -= b;
    }
    return over;
  }

  /** No longer counts the command's result (it changed, was let go, or the command was forgotten). */
  drop(commandId: string): void {
    const bytes = this.held.get(commandId);
    if (bytes === undefined) return;
    this.held.delete(commandId);
    this.heldBytes -= bytes;
  }
}

/** The record without its progress result, marked so that the API says it was not kept. */
export function withoutResult(record: CommandRecord): CommandRecord {
  const { result: _result, ...response } = record.response as NonNullable<CommandRecord['response']>;
  return { ...record, response: { ...response, resultNotKept: true } };
}
