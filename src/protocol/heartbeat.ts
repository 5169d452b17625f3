/**
 * Heartbeat rules and peer presence (pure). Times are milliseconds on one monotonic clock chosen by the caller;
 * nothing here reads a clock. The exact rules are in docs/PROTOCOL.md, "Heartbeats and presence".
 */
import { InvalidArgumentError } from '../errors.js'

/** Default H (the issue asks for 15 s): a silent peer is declared dead within 30 s. Configurable per client. */
export const DEFAULT_HEARTBEAT_INTERVAL = 15_000

export interface HeartbeatInput {
  /** Current time. */
  now: number
  /** When we last wrote any frame to the peer. */
  lastSent: number
  /** When we last received any authenticated frame from the peer (or when the session opened). */
  lastReceived: number
  /** H: the idle interval after which we ping. The peer is dead after 2H of silence. */
  interval: number
}

export type HeartbeatDecision =
  | { action: 'ping' }
  | { action: 'wait'; nextCheckAt: number }
  | { action: 'dead' }

/**
 * The whole rule, in priority order:
 *   1. dead  when now - lastReceived >= 2H;
 *   2. ping  when now - lastSent >= H;
 *   3. wait  until min(lastSent + H, lastReceived + 2H).
 * Since `nextCheckAt` never passes lastReceived + 2H, a caller that re-checks at `nextCheckAt` (and right after
 * each ping it sends) declares a silent peer dead at exactly lastReceived + 2H, plus its own timer latency.
 */
export function heartbeatDecision(input: HeartbeatInput): HeartbeatDecision {
  const { now, lastSent, lastReceived, interval } = checkInput(input)
  const deadAt = lastReceived + 2 * interval
  if (now >= deadAt) return { action: 'dead' }
  const pingAt = lastSent + interval
  if (now >= pingAt) return { action: 'ping' }
  return { action: 'wait', nextCheckAt: Math.min(pingAt, deadAt) }
}

function checkInput(input: HeartbeatInput): HeartbeatInput {
  if (typeof input !== 'object' || input === null) throw new InvalidArgumentError('heartbeat input must be an object')
  for (const key of ['now', 'lastSent', 'lastReceived', 'interval'] as const) {
    const v = input[key]
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(`${key} must be a finite, non-negative number`)
    }
  }
  if (input.interval === 0) throw new InvalidArgumentError('interval must be positive')
  if (input.lastSent > input.now || input.lastReceived > input.now) {
    throw new InvalidArgumentError('lastSent and lastReceived must not be later than now (use a monotonic clock)')
  }
  return input
}

/**
 * What the UI shows for a contact.
 *   online       an authenticated session is open and the peer was heard within 2H;
 *   unreachable  the peer has a valid directory record but we cannot talk to it right now
 *                (dial failed, heartbeat declared it dead, connection dropped without a bye);
 *   offline      the peer said bye, or it has no valid (unexpired) directory record, or we never reached it.
 */
export type Presence = 'online' | 'unreachable' | 'offline'

export type PresenceEvent =
  | { type: 'session-opened' }
  | { type: 'heartbeat-dead' }
  | { type: 'connection-lost' }
  | { type: 'dial-failed' }
  | { type: 'bye-received' }
  | { type: 'record-missing' }

/**
 * Presence transitions. An open session is the strongest evidence, so while `online` only the session's own
 * end (dead heartbeat, lost connection, bye) moves the state; a failed extra dial or a missing record does not.
 */
export function presenceReducer(state: Presence, event: PresenceEvent): Presence {
  switch (event.type) {
    case 'session-opened':
      return 'online'
    case 'heartbeat-dead':
    case 'connection-lost':
      return state === 'online' ? 'unreachable' : state
    case 'dial-failed':
      return state === 'online' ? 'online' : 'unreachable'
    case 'bye-received':
      return 'offline'
    case 'record-missing':
      return state === 'online' ? 'online' : 'offline'
  }
}
