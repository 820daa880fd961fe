/**
 * A small seeded random number generator, so that a forest trained twice on the same rows with
 * the same seed is the same forest (and the evaluation gives the same figures on every run).
 *
 * mulberry32 (Tommy Ettinger): 32 bits of state, period 2^32, passes the usual statistical test
 * batteries well enough for choosing subsamples and split points; not for anything secret.
 */
export class Mulberry32 {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** uniform in [0, 1) */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** uniform integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** uniform in [a, b) */
  uniform(a: number, b: number): number {
    return a + (b - a) * this.next();
  }

  /** standard normal (Box-Muller; one of the pair is dropped, simplicity over speed) */
  normal(): number {
    let u = this.next();
    while (u === 0) u = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}

/** FNV-1a over the UTF-16 code units of `text`, mixed with `seed`: a per-device seed from a name. */
export function hash32(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // A final avalanche so seeds that differ in one bit give unrelated streams.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  return h >>> 0;
}
