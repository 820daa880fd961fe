import { readdirSync, readFileSync } from 'node:fs';

/** Linux reports process CPU time in clock ticks; 100 per second on every kernel we run on (getconf CLK_TCK). */
const TICKS_PER_SECOND = 100;

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat (proc(5), fields 14 and 15). */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/**
 * System calls that read and that wrote (read, readv, recvmsg…; write, writev, sendmsg…) a process
 * has made so far, from /proc/PID/io's syscr and syscw (proc(5)). Counts, not time: a figure that
 * does not move with the host's speed, so that a change in how often a process writes shows in one
 * run. They are the whole process's, all its threads (and the children it has reaped). `self`:
 * this process.
 */
export function processIoCalls(pid: number | 'self'): { reads: number; writes: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { reads: Number(/^syscr: (\d+)$/m.exec(io)?.[1]), writes: Number(/^syscw: (\d+)$/m.exec(io)?.[1]) };
}

/** A process and its children (a PostgreSQL server: the postmaster and one backend per connection), from /proc/PID/stat's ppid (field 4). */
export function withChildren(pid: number): number[] {
  const pids = [pid];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) pids.push(Number(name));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

export interface HostCpuTicks {
  busy: number;
  /** iowait included */
  idle: number;
  /** idle with a disk request outstanding (part of `idle`) */
  iowait: number;
  /** taken by the hypervisor for other machines */
  steal: number;
}

/** The machine's CPU time so far, in ticks, from the first line of /proc/stat (proc(5)). */
export function hostCpuTicks(): HostCpuTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user already)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { busy: (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0), idle: (idle ?? 0) + (iowait ?? 0), iowait: iowait ?? 0, steal: steal ?? 0 };
}

/**
 * The machine's CPU between two readings of hostCpuTicks, in % of all its cores' time: busy, stolen,
 * and idle waiting for the disk (a stall on fsync shows as iowait while the CPU is not busy).
 */
export function hostCpuShare(before: HostCpuTicks, after: HostCpuTicks): { busyPercent: number; stealPercent: number; iowaitPercent: number } {
  const busy = after.busy - before.busy;
  const steal = after.steal - before.steal;
  const all = Math.max(1, busy + (after.idle - before.idle) + steal);
  return { busyPercent: Math.round((100 * busy) / all), stealPercent: Math.round((100 * steal) / all), iowaitPercent: Math.round((100 * (after.iowait - before.iowait)) / all) };
}

/**
 * A process's resident memory in bytes, split as /proc/PID/status does (proc(5)): `anon` is what
 * the process itself holds (heap, stacks, buffers: what a leak grows), `file` the pages of files it
 * maps (its code, a database's memory-mapped data files), which the kernel may drop and read again.
 */
export interface ResidentMemory {
  rss: number;
  anon: number;
  file: number;
}

export function residentMemory(pid: number): ResidentMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kB = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
    if (!m) throw new Error(`no ${field} for process ${pid}`);
    return Number(m[1]) * 1024;
  };
  return { rss: kB('VmRSS'), anon: kB('RssAnon'), file: kB('RssFile') };
}

/**
 * A process's resident memory by the kind of mapping that holds it (bytes, from /proc/PID/smaps):
 * `mallocHeap` glibc's main heap (`[heap]`: what C and C++ code allocate, OpenSSL's and Node's
 * native objects among it); `smallAnon` anonymous mappings of at most 512 KiB (V8 keeps its heap in
 * pages of 256 KiB); `otherAnon` larger anonymous mappings (other malloc arenas, large buffers,
 * stacks); `files` mapped files. The four add up to the process's resident memory.
 */
export interface MemoryByMapping {
  mallocHeap: number;
  smallAnon: number;
  otherAnon: number;
  files: number;
}

/** KiB: the largest anonymous mapping counted as `smallAnon` */
const SMALL_ANON_KIB = 512;

export function memoryByMapping(pid: number): MemoryByMapping {
  const out: MemoryByMapping = { mallocHeap: 0, smallAnon: 0, otherAnon: 0, files: 0 };
  let kind: keyof MemoryByMapping = 'files';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    // A mapping's header: "start-end perms offset dev inode [name]" (proc(5)).
    const header = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (header) {
      const kib = (parseInt(header[2] as string, 16) - parseInt(header[1] as string, 16)) / 1024;
      const inode = header[3] as string;
      const name = header[4] as string;
      if (name === '[heap]') kind = 'mallocHeap';
      else if (inode !== '0') kind = 'files';
      else if (name === '' && kib <= SMALL_ANON_KIB) kind = 'smallAnon';
      else kind = 'otherAnon';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB$/.exec(line);
    if (rss) out[kind] += Number(rss[1]) * 1024;
  }
  return out;
}

/**
 * The malloc a process runs on, from the libraries it maps (/proc/PID/maps): one preloaded in place
 * of glibc's (`--set LD_PRELOAD=…`: jemalloc, mimalloc, tcmalloc), else glibc. Such an allocator
 * keeps its memory in anonymous mappings of its own, not in `[heap]`, so a report that splits
 * memory by mapping says which one it measured.
 */
export function mallocOf(pid: number): string {
  return mallocIn(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

/** mallocOf, from the text of a maps file. */
export function mallocIn(maps: string): string {
  for (const line of maps.split('\n')) {
    const lib = /\/lib(jemalloc|mimalloc|tcmalloc)[^/]*\.so[^/]*$/.exec(line);
    if (lib) return lib[1] as string;
  }
  return 'glibc';
}

/** Resident memory of a process in bytes (VmRSS). */
export function residentBytes(pid: number): number {
  return residentMemory(pid).rss;
}

/** An interval of the monotonic clock, in microseconds. */
export interface MonotonicWindow {
  fromUs: number;
  toUs: number;
}

/** Now on the monotonic clock (CLOCK_MONOTONIC, as V8's profiles stamp their samples), in microseconds. */
export const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

export interface CpuShare {
  component: string;
  /** CPU seconds used during the measured interval */
  cpuSeconds: number;
  /** system calls that read, and that wrote, during the interval (processIoCalls) */
  readCalls?: number;
  writeCalls?: number;
}

type Usage = { cpuSeconds: number; reads: number; writes: number };

/**
 * CPU time per component over an interval: where a scenario's work went. `self` is this process
 * (the simulated field clients), measured with process.cpuUsage().
 */
export class CpuMeter {
  private start = new Map<string, Usage>();
  private beganUs = 0;
  /**
   * The last interval measured (begin to end), in microseconds of the monotonic clock: the clock of
   * V8's CPU profiles (their startTime and timeDeltas), in every process of this machine.
   */
  window: MonotonicWindow | undefined;

  /** each component's process, or processes (their times added up) */
  constructor(private readonly components: () => Record<string, number | readonly number[] | undefined>) {}

  private read(): Map<string, Usage> {
    const now = new Map<string, Usage>();
    const add = (name: string, cpuSeconds: number, pid: number | 'self') => {
      const u = now.get(name) ?? { cpuSeconds: 0, reads: 0, writes: 0 };
      const calls = processIoCalls(pid);
      now.set(name, { cpuSeconds: u.cpuSeconds + cpuSeconds, reads: u.reads + calls.reads, writes: u.writes + calls.writes });
    };
    for (const [name, pids] of Object.entries(this.components())) {
      if (pids === undefined) continue;
      for (const pid of typeof pids === 'number' ? [pids] : pids) {
        try {
          add(name, processCpuSeconds(pid), pid);
        } catch {
          /* the process is gone */
        }
      }
    }
    const self = process.cpuUsage();
    add('field clients (bench process)', (self.user + self.system) / 1e6, 'self');
    return now;
  }

  begin(): void {
    this.start = this.read();
    this.beganUs = monotonicUs();
  }

  end(): CpuShare[] {
    const now = this.read();
    this.window = { fromUs: this.beganUs, toUs: monotonicUs() };
    return [...now.entries()]
      .map(([component, u]) => {
        const s = this.start.get(component) ?? u;
        return { component, cpuSeconds: Math.round((u.cpuSeconds - s.cpuSeconds) * 100) / 100, readCalls: u.reads - s.reads, writeCalls: u.writes - s.writes };
      })
      .sort((a, b) => b.cpuSeconds - a.cpuSeconds);
  }
}
