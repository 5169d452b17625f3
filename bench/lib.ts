/**
 * Shared helpers for the benchmarks: sample statistics (median, nearest-rank percentiles) and a compact
 * aligned table. Nothing here measures anything itself.
 */
import { InvalidArgumentError } from '../src/errors.js'

export interface Stats {
  n: number
  median: number
  p95: number
  min: number
  max: number
}

/** Nearest-rank percentile `p` (0 < p <= 100) of `samples`. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) throw new InvalidArgumentError('samples must not be empty')
  if (!(p > 0 && p <= 100)) throw new InvalidArgumentError('p must be in (0, 100]')
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/** Median (mean of the two middle samples for an even count). */
export function median(samples: readonly number[]): number {
  if (samples.length === 0) throw new InvalidArgumentError('samples must not be empty')
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function stats(samples: readonly number[]): Stats {
  return {
    n: samples.length,
    median: median(samples),
    p95: percentile(samples, 95),
    min: Math.min(...samples),
    max: Math.max(...samples),
  }
}

/** `x` with `digits` decimals, e.g. ms(12.345) = "12.3 ms". */
export function ms(x: number, digits = 1): string {
  return `${x.toFixed(digits)} ms`
}

/** "1.07×" */
export function times(x: number): string {
  return `${x.toFixed(2)}×`
}

/** Prints rows as a table: the first column left-aligned, the others right-aligned; row 0 is the header. */
export function printTable(rows: readonly (readonly string[])[], print: (line: string) => void = console.log): void {
  if (rows.length === 0) return
  const columns = Math.max(...rows.map((r) => r.length))
  const widths = Array.from({ length: columns }, (_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  for (const r of rows) {
    print(
      widths
        .map((w, i) => (i === 0 ? (r[i] ?? '').padEnd(w) : (r[i] ?? '').padStart(w)))
        .join('  ')
        .trimEnd(),
    )
  }
}
