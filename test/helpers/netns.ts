import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

/**
 * Several "machines" on one box: Linux network namespaces joined by veth links, so that what
 * crosses a network, and what a firewall drops, is real (ip-netns(8), veth(4)).
 *
 * The lab's topology (addresses in 10.N.0.0/16, N random so two runs do not collide):
 *
 *   field (10.N.0.10) ─┐
 *   dmz1  (10.N.0.21) ─┤  switch: a bridge in a namespace of its own, "the DMZ segment"
 *   dmz2  (10.N.0.22) ─┤
 *   router(10.N.0.1)  ─┘  the corporate egress: forwards and masquerades the internal network
 *     └─ 10.N.1.1 ── internal (10.N.1.2)      the corporate network
 *   operator (the test process, root namespace) 10.N.2.1 ── internal (10.N.2.2)  the operators' network
 *
 * The DMZ segment has a route to the corporate network through the router, so that the internal
 * machine refusing connections from the DMZ is proved by its firewall, not by a missing route.
 */
export type Machine = 'field' | 'dmz1' | 'dmz2' | 'router' | 'internal';

export interface LabAddresses {
  field: string;
  dmz1: string;
  dmz2: string;
  /** the router's address on the DMZ segment: what the internal network's traffic leaves from */
  corpEgress: string;
  routerInside: string;
  internal: string;
  /** the test process's address on the operators' network, and the internal machine's there */
  operator: string;
  internalOperatorSide: string;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Why namespaces cannot be used here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)';
  const probe = `fs-probe-${randomBytes(3).toString('hex')}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch (err) {
    return `this machine does not allow network namespaces: ${(err as Error).message.split('\n')[0]}`;
  }
  for (const tool of ['nft', 'bash', 'timeout']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'pipe' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  return undefined;
}

export class NetnsLab {
  readonly id = randomBytes(3).toString('hex');
  readonly addr: LabAddresses;
  private readonly created: string[] = [];
  private readonly hostsDirs: string[] = [];
  private readonly rootLinks: string[] = [];

  constructor() {
    const n = 100 + Math.floor(Math.random() * 150);
    this.addr = {
      field: `10.${n}.0.10`,
      dmz1: `10.${n}.0.21`,
      dmz2: `10.${n}.0.22`,
      corpEgress: `10.${n}.0.1`,
      routerInside: `10.${n}.1.1`,
      internal: `10.${n}.1.2`,
      operator: `10.${n}.2.1`,
      internalOperatorSide: `10.${n}.2.2`,
    };
  }

  /** The namespace name of a machine. */
  ns(machine: Machine | 'switch'): string {
    return `fs-${this.id}-${machine}`;
  }

  /** /24 of an address */
  static net(address: string): string {
    return `${address.split('.').slice(0, 3).join('.')}.0/24`;
  }

  build(): void {
    const a = this.addr;
    for (const m of ['switch', 'field', 'dmz1', 'dmz2', 'router', 'internal'] as const) {
      ip('netns', 'add', this.ns(m));
      this.created.push(this.ns(m));
      nsIp(this.ns(m), 'link', 'set', 'lo', 'up');
    }
    nsIp(this.ns('switch'), 'link', 'add', 'br0', 'type', 'bridge');
    nsIp(this.ns('switch'), 'link', 'set', 'br0', 'up');
    const segment: [Machine, string][] = [['field', a.field], ['dmz1', a.dmz1], ['dmz2', a.dmz2], ['router', a.corpEgress]];
    for (const [i, [m, address]] of segment.entries()) {
      // veth names are per namespace once moved; create them with unique names in the root namespace first.
      const outer = `v${this.id}s${i}`;
      const inner = `v${this.id}m${i}`;
      ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
      ip('link', 'set', outer, 'netns', this.ns('switch'));
      ip('link', 'set', inner, 'netns', this.ns(m));
      nsIp(this.ns('switch'), 'link', 'set', outer, 'master', 'br0');
      nsIp(this.ns('switch'), 'link', 'set', outer, 'up');
      nsIp(this.ns(m), 'link', 'set', inner, 'name', 'eth0');
      nsIp(this.ns(m), 'addr', 'add', `${address}/24`, 'dev', 'eth0');
      nsIp(this.ns(m), 'link', 'set', 'eth0', 'up');
    }
    // router <-> internal: the corporate network
    const ri = `v${this.id}rti`;
    const ir = `v${this.id}irt`;
    ip('link', 'add', ri, 'type', 'veth', 'peer', 'name', ir);
    ip('link', 'set', ri, 'netns', this.ns('router'));
    ip('link', 'set', ir, 'netns', this.ns('internal'));
    nsIp(this.ns('router'), 'link', 'set', ri, 'name', 'eth1');
    nsIp(this.ns('router'), 'addr', 'add', `${a.routerInside}/24`, 'dev', 'eth1');
    nsIp(this.ns('router'), 'link', 'set', 'eth1', 'up');
    nsIp(this.ns('internal'), 'link', 'set', ir, 'name', 'eth0');
    nsIp(this.ns('internal'), 'addr', 'add', `${a.internal}/24`, 'dev', 'eth0');
    nsIp(this.ns('internal'), 'link', 'set', 'eth0', 'up');
    nsIp(this.ns('internal'), 'route', 'add', 'default', 'via', a.routerInside);
    // The router forwards, and everything the corporate network sends to the DMZ segment leaves
    // with the egress address (source NAT), as a corporate firewall's outbound NAT does.
    execFileSync('ip', ['netns', 'exec', this.ns('router'), 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { stdio: 'pipe' });
    nsExec(this.ns('router'), 'nft', '-f', '-', {
      input: `table ip corp-egress {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr ${NetnsLab.net(a.internal)} oifname "eth0" masquerade\n  }\n}\n`,
    });
    for (const m of ['field', 'dmz1', 'dmz2'] as const) nsIp(this.ns(m), 'route', 'add', NetnsLab.net(a.internal), 'via', a.corpEgress);
    // The operators' network: the test process (root namespace) reaches the internal machine's
    // operator ports here, as an operator's workstation would.
    const op = `v${this.id}op`;
    const opIn = `v${this.id}opi`;
    ip('link', 'add', op, 'type', 'veth', 'peer', 'name', opIn);
    this.rootLinks.push(op);
    ip('link', 'set', opIn, 'netns', this.ns('internal'));
    ip('addr', 'add', `${a.operator}/24`, 'dev', op);
    ip('link', 'set', op, 'up');
    nsIp(this.ns('internal'), 'link', 'set', opIn, 'name', 'eth1');
    nsIp(this.ns('internal'), 'addr', 'add', `${a.internalOperatorSide}/24`, 'dev', 'eth1');
    nsIp(this.ns('internal'), 'link', 'set', 'eth1', 'up');
  }

  /**
   * Names a machine resolves (ip-netns(8): /etc/netns/NAME/hosts is bind-mounted over /etc/hosts
   * for processes started with `ip netns exec`).
   */
  hosts(machine: Machine, entries: Record<string, string>): void {
    const dir = join('/etc/netns', this.ns(machine));
    mkdirSync(dir, { recursive: true });
    this.hostsDirs.push(dir);
    const lines = ['127.0.0.1 localhost', ...Object.entries(entries).map(([name, address]) => `${address} ${name}`)];
    writeFileSync(join(dir, 'hosts'), lines.join('\n') + '\n');
  }

  /** Runs a command inside a machine and resolves with its exit code and output (never rejects on a non-zero exit). */
  exec(machine: Machine, command: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    return new Promise((resolve) => {
      const child = execFile('ip', ['netns', 'exec', this.ns(machine), command, ...args], { env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
      );
      if (opts.input !== undefined) child.stdin?.end(opts.input);
    });
  }

  /**
   * Whether a TCP connection from `machine` to host:port is accepted: 'open', 'refused' (RST, or
   * ICMP unreachable from a reject rule) or 'timeout' (dropped). bash's /dev/tcp under timeout(1).
   */
  async probe(machine: Machine, host: string, port: number, timeoutS = 2): Promise<'open' | 'refused' | 'timeout'> {
    const r = await this.exec(machine, 'timeout', [String(timeoutS), 'bash', '-c', 'exec 3<>"/dev/tcp/$0/$1"', host, String(port)]);
    if (r.code === 0) return 'open';
    return r.code === 124 ? 'timeout' : 'refused';
  }

  /** TCP ports something listens on inside a machine, on any address but its loopback. */
  async listening(machine: Machine): Promise<number[]> {
    const r = await this.exec(machine, 'ss', ['-Hltn']);
    const ports = new Set<number>();
    for (const line of r.stdout.split('\n')) {
      const local = line.trim().split(/\s+/)[3];
      if (!local || local.startsWith('127.') || local.startsWith('[::1]')) continue;
      const port = Number(local.slice(local.lastIndexOf(':') + 1));
      if (Number.isInteger(port)) ports.add(port);
    }
    return [...ports].sort((x, y) => x - y);
  }

  /** Cuts a machine off the network (its links down), as when a server dies entirely. */
  unplug(machine: Machine): void {
    for (const dev of ['eth0', 'eth1']) {
      try {
        nsIp(this.ns(machine), 'link', 'set', dev, 'down');
      } catch {
        /* a machine with one link */
      }
    }
  }

  plug(machine: Machine): void {
    for (const dev of ['eth0', 'eth1']) {
      try {
        nsIp(this.ns(machine), 'link', 'set', dev, 'up');
      } catch {
        /* a machine with one link */
      }
    }
  }

  /** Kills whatever still runs in the lab's namespaces and deletes them, their links and hosts files. */
  cleanup(): void {
    for (const ns of this.created.reverse()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { stdio: 'pipe' }).toString().split(/\s+/).filter(Boolean);
        for (const pid of pids) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' });
      } catch {
        /* already gone */
      }
    }
    for (const link of this.rootLinks) {
      try {
        ip('link', 'del', link);
      } catch {
        /* deleted with its peer's namespace */
      }
    }
    for (const dir of this.hostsDirs) rmSync(dir, { recursive: true, force: true });
  }
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

function nsIp(ns: string, ...args: string[]): void {
  execFileSync('ip', ['-n', ns, ...args], { stdio: 'pipe' });
}

function nsExec(ns: string, command: string, ...rest: [...string[], { input: string }]): void {
  const opts = rest.pop() as { input: string };
  execFileSync('ip', ['netns', 'exec', ns, command, ...(rest as string[])], { stdio: ['pipe', 'pipe', 'pipe'], input: opts.input });
}
