import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { CommandRecordSchema, type CommandRecord } from './schemas.ts';

/** Most commands kept; the oldest finished ones are forgotten first. */
const MAX_RECORDS = 100_000;

/**
 * Command state: in memory, with every change appended to a JSON-lines journal that is replayed
 * (last line per command wins) and compacted at start. A torn last line is skipped.
 */
export class CommandStore {
  private readonly records = new Map<string, CommandRecord>();

  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.load();
  }

  get(commandId: string): CommandRecord | undefined {
    return this.records.get(commandId);
  }

  all(): IterableIterator<CommandRecord> {
    return this.records.values();
  }

  put(record: CommandRecord): void {
    this.records.delete(record.commandId); // re-insert: Map order is recency of change
    this.records.set(record.commandId, record);
    appendFileSync(this.path, JSON.stringify(record) + '\n', { mode: 0o640 });
    if (this.records.size > MAX_RECORDS) {
      const oldest = this.records.keys().next().value;
      if (oldest !== undefined) this.records.delete(oldest);
    }
  }

  private load(): void {
    if (!existsSync(this.path)) return;
    let lines = 0;
    for (const line of readFileSync(this.path, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      lines++;
      const parsed = CommandRecordSchema.safeParse(safeJson(line));
      if (parsed.success) {
        this.records.delete(parsed.data.commandId);
        this.records.set(parsed.data.commandId, parsed.data);
      }
    }
    if (lines > 2 * this.records.size) {
      const tmp = `${this.path}.compact`;
      writeFileSync(tmp, [...this.records.values()].map((r) => JSON.stringify(r) + '\n').join(''), { mode: 0o640 });
      renameSync(tmp, this.path);
    }
  }
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
