import { readdirSync, readFileSync } from 'node:fs';
import { processRuns } from './durable-fs.ts';

/**
 * A process of this machine told apart from a later one given the same id. Process ids are reused
 * (the kernel hands them out again once the range wraps, in a container every restart is pid 1): a
 * file naming only a pid, whose process is gone, is kept for ever by any unrelated process that got
 * that pid. With its start time as well (clock ticks since boot, /proc/PID/stat field 22), a reused
 * id is seen for what it is.
 */
export interface ProcessIdentity {
  pid: number;
  /** clock ticks after boot at which it started; undefined where /proc says nothing (not Linux) */
  start?: string | undefined;
}

/**
 * The fields of /proc/PID/stat from field 3 (the state) on, or undefined when it cannot be read
 * (gone, or no /proc here). Field 2 (the program's name, in parentheses) may hold spaces and
 * parentheses itself: the fields are counted from after its last ')', where field 3 begins.
 */
function statFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** When process `pid` started (ticks since boot, as /proc writes it), or undefined when unknown. */
export function processStart(pid: number): string | undefined {
  const start = statFields(pid)?.[22 - 3];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/**
 * Which of the process groups `pgids` a process runs in now: one that is not a zombie (dead, its
 * exit status not yet collected: a process whose parent died is collected by the namespace's init,
 * and an init that collects nothing leaves it so for ever). Read from every /proc/PID/stat (field
 * 5, the group) once for all of them: kill(-pgid, 0) counts zombies in, and a reading for each
 * group was one of every process of the machine for each. Empty where there is no /proc.
 */
export function runningGroups(pgids: ReadonlySet<number>): Set<number> {
  const running = new Set<number>();
  if (pgids.size === 0) return running;
  let pids: string[];
  try {
    pids = readdirSync('/proc');
  } catch {
    return running;
  }
  for (const name of pids) {
    if (!/^\d+$/.test(name)) continue;
    const fields = statFields(Number(name));
    if (!fields || fields[0] === 'Z' || fields[0] === 'X') continue;
    const group = Number(fields[5 - 3]);
    if (pgids.has(group)) running.add(group);
  }
  return running;
}

/** Whether a process of group `pgid` runs now, not a zombie (runningGroups). False where there is no /proc. */
export function processGroupRuns(pgid: number): boolean {
  return runningGroups(new Set([pgid])).has(pgid);
}

/**
 * This boot of the machine (Linux: a random id the kernel makes at every boot; in a container, the
 * host's), or undefined where there is none: a process recorded under another boot runs no more,
 * whatever now holds its id.
 */
export function bootId(): string | undefined {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return id.length > 0 && id.length <= 64 ? id : undefined;
  } catch {
    return undefined;
  }
}

/** This process, to be written where another process will look whether it still runs. */
export function thisProcess(): ProcessIdentity {
  return { pid: process.pid, start: processStart(process.pid) };
}

/**
 * Whether the process `p` names runs now: a process of that id runs (another user's too) and, where
 * both start times are known, it started when `p` says. One whose start time is not known (a file
 * written before it was recorded, no /proc) is judged by its id alone.
 */
export function identityRuns(p: ProcessIdentity): boolean {
  if (!processRuns(p.pid)) return false;
  if (p.start === undefined) return true;
  const now = processStart(p.pid);
  return now === undefined || now === p.start;
}
