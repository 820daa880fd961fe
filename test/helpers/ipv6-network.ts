import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * Real IPv6 source addresses for budgets kept per source: one end of a veth pair (veth(4)) in this
 * namespace holding addresses of two /64 networks of a random unique local prefix (RFC 4193), so
 * that a test binds its clients to several addresses of one network, and to one of another.
 * Traffic between addresses of this host goes through the loopback, as any local traffic does.
 * Root only (ip-link(8)); `close` deletes the pair and the addresses with it.
 */
export interface Ipv6Networks {
  /** the server's address, in the first /64 */
  server: string;
  /** further addresses of the server's /64: one host's many addresses */
  sameNetwork: [string, string, string];
  /** an address of another /64 */
  otherNetwork: string;
  close(): void;
}

/** Why IPv6 networks cannot be made here, or undefined when they can. */
export function ipv6NetworksUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'adding addresses needs root (ip link add)';
  return undefined;
}

export function ipv6Networks(): Ipv6Networks {
  const id = randomBytes(3).toString('hex');
  const link = `fs6-${id}`;
  // fd00::/8 with a random 40-bit global id: two runs, or another network here, do not collide.
  // Each group written as the kernel writes it back (RFC 5952: no leading zeros), so that an
  // address compares equal to the remoteAddress a server sees.
  const g = randomBytes(5);
  const hex = (n: number) => n.toString(16);
  const prefix = (subnet: number) => `${hex(0xfd00 | (g[0] ?? 0))}:${hex(g.readUInt16BE(1))}:${hex(g.readUInt16BE(3))}:${hex(subnet)}`;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  ip('link', 'add', link, 'type', 'veth', 'peer', 'name', `${link}p`);
  try {
    ip('link', 'set', link, 'up');
    ip('link', 'set', `${link}p`, 'up');
    const server = `${prefix(1)}::1`;
    const sameNetwork: [string, string, string] = [`${prefix(1)}::a`, `${prefix(1)}:8000::b`, `${prefix(1)}:ffff:ffff:ffff:ffff`];
    const otherNetwork = `${prefix(2)}::1`;
    // nodad: usable at once, not tentative for a second of duplicate detection (RFC 4862).
    for (const a of [server, ...sameNetwork, otherNetwork]) ip('-6', 'addr', 'add', `${a}/64`, 'dev', link, 'nodad');
    // A veth's carrier comes up a moment after both ends are up: until then a connection to these
    // addresses fails with EHOSTUNREACH (seen once in a full run). Waited for, at most 5 s.
    const until = Date.now() + 5_000;
    while (readFileSync(`/sys/class/net/${link}/carrier`, 'utf8').trim() !== '1' || /tentative/.test(ip('-6', 'addr', 'show', 'dev', link).toString())) {
      if (Date.now() > until) throw new Error(`${link}: no carrier, or addresses still tentative, after 5 s`);
      execFileSync('sleep', ['0.05']);
    }
    return { server, sameNetwork, otherNetwork, close: () => void ip('link', 'del', link) };
  } catch (err) {
    ip('link', 'del', link);
    throw err;
  }
}
