/**
 * Pure rules of the client (no clock, no randomness of their own): when to redial a contact, and which of two
 * live sessions with the same peer survives. See docs/PROTOCOL.md, "Client behaviour".
 */
import { InvalidArgumentError } from '../errors.js'

export interface BackoffPolicy {
  /** Delay before the first redial after a failure. */
  baseMs: number
  /** Cap on the un-jittered delay. */
  maxMs: number
  /** Growth per failed attempt (> 1). */
  factor: number
  /** Fraction of the delay that is randomized, 0..1: the delay is drawn from [d·(1 − jitter), d]. */
  jitter: number
}

export const DEFAULT_BACKOFF: Readonly<BackoffPolicy> = { baseMs: 2_000, maxMs: 5 * 60_000, factor: 2, jitter: 0.5 }

/**
 * Capped exponential backoff with jitter: d = min(maxMs, baseMs · factor^(attempt − 1)), returned as
 * d · (1 − jitter · random), rounded up to a whole millisecond. `attempt` counts failures from 1; `random` is a
 * uniform draw in [0, 1) from the caller (injected, so tests are exact).
 */
export function redialDelay(attempt: number, random: number, policy: Readonly<BackoffPolicy> = DEFAULT_BACKOFF): number {
  if (!Number.isSafeInteger(attempt) || attempt < 1) throw new InvalidArgumentError('attempt must be an integer >= 1')
  if (typeof random !== 'number' || !(random >= 0 && random < 1)) throw new InvalidArgumentError('random must be a number in [0, 1)')
  checkPolicy(policy)
  // factor^(attempt-1) overflows to Infinity for huge attempts; min() then picks the cap, which is what we want.
  const capped = Math.min(policy.maxMs, policy.baseMs * policy.factor ** (attempt - 1))
  return Math.ceil(capped * (1 - policy.jitter * random))
}

function checkPolicy(policy: Readonly<BackoffPolicy>): void {
  if (typeof policy !== 'object' || policy === null) throw new InvalidArgumentError('policy must be an object')
  const { baseMs, maxMs, factor, jitter } = policy
  if (!Number.isFinite(baseMs) || baseMs <= 0) throw new InvalidArgumentError('policy.baseMs must be a positive number')
  if (!Number.isFinite(maxMs) || maxMs < baseMs) throw new InvalidArgumentError('policy.maxMs must be a number >= baseMs')
  if (!Number.isFinite(factor) || factor < 1) throw new InvalidArgumentError('policy.factor must be a number >= 1')
  if (!Number.isFinite(jitter) || jitter < 0 || jitter > 1) throw new InvalidArgumentError('policy.jitter must be in 0..1')
}

/** Which side dialed a session, from the local point of view. */
export type Initiator = 'local' | 'remote'

/**
 * The simultaneous-dial rule. Two sessions with one peer are live; which one stays? Sessions dialed by different
 * sides: the one dialed by the peer whose ID sorts lower (plain code-unit order of the canonical IDs). Both
 * sides label the same session with mirrored initiators, so both keep the same one. Sessions dialed by the same
 * side: the newer one, since that side only dials again after it lost (or gave up on) the older one.
 */
export function survivingSession(input: {
  localPeerId: string
  remotePeerId: string
  existing: Initiator
  newer: Initiator
}): 'existing' | 'newer' {
  const { localPeerId, remotePeerId, existing, newer } = input
  if (typeof localPeerId !== 'string' || typeof remotePeerId !== 'string' || localPeerId === remotePeerId) {
    throw new InvalidArgumentError('localPeerId and remotePeerId must be two different peer IDs')
  }
  if (!isInitiator(existing) || !isInitiator(newer)) throw new InvalidArgumentError("initiators must be 'local' or 'remote'")
  if (existing === newer) return 'newer'
  const lowerDialer: Initiator = localPeerId < remotePeerId ? 'local' : 'remote'
  return existing === lowerDialer ? 'existing' : 'newer'
}

function isInitiator(value: unknown): value is Initiator {
  return value === 'local' || value === 'remote'
}
