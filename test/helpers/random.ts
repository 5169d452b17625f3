/**
 * The one seeded PRNG of the test suite, so property and fuzz runs reproduce from the seed they print.
 *
 * The generator is mulberry32 (32-bit state); tests that report exact counts depend on its sequence, so it must not
 * change: `int` and `bytes` are defined on `next` exactly as the copies they replace were.
 */

/** Plain functions (no `this`), so each can be handed on alone, e.g. `next` wherever a `() => number` is expected. */
export interface SeededRandom {
  /** The next number in [0, 1). */
  readonly next: () => number
  /** An integer in [0, n): `Math.floor(next() * n)`. */
  readonly int: (n: number) => number
  /** `n` bytes, each `int(256)`, drawn in order. */
  readonly bytes: (n: number) => Uint8Array
}

export function seededRandom(seed: number): SeededRandom {
  let a = seed >>> 0
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), a | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  const int = (n: number): number => Math.floor(next() * n)
  return { next, int, bytes: (n) => Uint8Array.from({ length: n }, () => int(256)) }
}
