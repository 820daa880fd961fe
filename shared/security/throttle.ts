import { isIPv4, isIPv6 } from 'node:net';
import { LIMITS } from '../limits.ts';

/**
 * The source a failure budget is kept for, from a client's address: an IPv4 address as it is (an
 * IPv4-mapped IPv6 address, `::ffff:a.b.c.d`, as that IPv4 address), an IPv6 address as its
 * network of `prefixBits` (`2001:db8:1:2::/64`): one host holds a whole /64, so a budget per IPv6
 * address bounded nothing. Anything else (not an address) is kept as it came.
 */
export function throttleSource(address: string, prefixBits: number = LIMITS.tokenFailureIpv6PrefixBits): string {
  const bare = address.replace(/^\[(.*)\]$/, '$1').split('%')[0] ?? '';
  if (isIPv4(bare)) return bare;
  if (!isIPv6(bare)) return address;
  const words = ipv6Words(bare);
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    const [hi = 0, lo = 0] = words.slice(6);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return `${words.slice(0, prefixBits / 16).map((w) => w.toString(16)).join(':')}::/${prefixBits}`;
}

/** The prefix of a key kept for an IPv6 site (throttleKeys), whose budget is larger. */
const SITE = 'site:';

/**
 * The keys of the budgets an address counts against: its source (throttleSource), and for an IPv6
 * address its site too, the network of LIMITS.tokenFailureSitePrefixBits (`site:2001:db8:7::/48`),
 * whose budget is LIMITS.tokenFailureSiteFactor sources' (TokenThrottle). An IPv4 address has no
 * site: one address is what a site behind NAT has.
 */
export function throttleKeys(address: string): string[] {
  const source = throttleSource(address);
  if (!source.endsWith(`/${LIMITS.tokenFailureIpv6PrefixBits}`)) return [`addr:${source}`];
  return [`addr:${source}`, `${SITE}${throttleSource(address, LIMITS.tokenFailureSitePrefixBits)}`];
}

/** The eight 16-bit words of a valid IPv6 address (net.isIPv6), `::` and a dotted IPv4 tail expanded. */
function ipv6Words(address: string): number[] {
  let rest = address;
  const tail: number[] = [];
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(rest);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    tail.push((a << 8) | b, (c << 8) | d);
    rest = rest.slice(0, -v4[0].length);
    if (rest.endsWith(':') && !rest.endsWith('::')) rest = rest.slice(0, -1);
  }
  const words = (part: string) => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const gap = rest.indexOf('::');
  if (gap < 0) return [...words(rest), ...tail];
  const head = words(rest.slice(0, gap));
  const after = words(rest.slice(gap + 2));
  return [...head, ...new Array<number>(8 - tail.length - head.length - after.length).fill(0), ...after, ...tail];
}

/**
 * A failure budget for bearer tokens: at most `maxFailures` failed tokens per key (a source
 * address) within `windowMs`; past it, the key is refused without checking anything
 * until its oldest counted failure leaves the window. Guessing is then bounded per key, and a
 * refused guess costs nothing to check. Used by the gateway for device tokens
 * (dmz/gateway/device-tokens.ts) and by the console's management API for role tokens
 * (internal-network/console/manage/routes.ts).
 *
 * The window is fixed from a key's first counted failure, and a success never starts it afresh:
 * a guesser holding one valid token cannot slip it between guesses to reset the count. Nothing is
 * kept per device or role: a budget for the identity a token names is spent by whoever names it,
 * and would refuse its holder's right token (see DeviceTokens.verify).
 *
 * A site's key (throttleKeys: `site:…`) has LIMITS.tokenFailureSiteFactor times the budget.
 *
 * Memory is bounded: at most `maxKeys` keys; when full, the key written longest ago is forgotten
 * (a Map iterates in insertion order, and a key is moved to the end on every failure).
 */
export class TokenThrottle {
  private readonly failures = new Map<string, { count: number; first: number }>();

  constructor(
    private readonly maxFailures: number,
    private readonly windowMs: number,
    private readonly maxKeys: number = LIMITS.tokenFailureTrackedKeys,
  ) {}

  /** Whether any of the keys has spent its budget. */
  blocked(keys: readonly string[], now = Date.now()): boolean {
    return keys.some((k) => this.spent(k, now));
  }

  /** Milliseconds until none of the keys is blocked any more (0: none is). */
  retryAfterMs(keys: readonly string[], now = Date.now()): number {
    let ms = 0;
    for (const k of keys) {
      const f = this.failures.get(k);
      if (f && this.spent(k, now)) ms = Math.max(ms, f.first + this.windowMs - now);
    }
    return ms;
  }

  fail(keys: readonly string[], now = Date.now()): void {
    for (const k of keys) {
      const f = this.failures.get(k);
      const next = f && now - f.first < this.windowMs ? { count: f.count + 1, first: f.first } : { count: 1, first: now };
      this.failures.delete(k);
      this.failures.set(k, next);
      if (this.failures.size > this.maxKeys) {
        const oldest = this.failures.keys().next();
        if (!oldest.done) this.failures.delete(oldest.value);
      }
    }
  }

  /** Takes back one failure charged in advance (see DeviceTokens.verify). */
  refund(keys: readonly string[]): void {
    for (const k of keys) {
      const f = this.failures.get(k);
      if (!f) continue;
      if (f.count <= 1) this.failures.delete(k);
      else f.count--;
    }
  }

  get size(): number {
    return this.failures.size;
  }

  /** Whether the key has spent its budget; a record whose window has passed is forgotten. */
  private spent(k: string, now: number): boolean {
    const f = this.failures.get(k);
    if (!f) return false;
    if (now - f.first >= this.windowMs) {
      this.failures.delete(k);
      return false;
    }
    return f.count >= (k.startsWith(SITE) ? this.maxFailures * LIMITS.tokenFailureSiteFactor : this.maxFailures);
  }
}
