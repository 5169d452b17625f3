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
  /** When we last wrote a frame to the peer other than a pong (hello, text, ack, ping, bye). */
  lastSent: number
  /** When we last received any authenticated frame from the peer (or when the session opened). */
  lastReceived: number
  /** H: the idle interval after which we ping. The peer is dead after 2H of silence. */
  interval: number
  /**
   * Which side of the anti-phase pair we are: the dialler leads, the responder follows. Default 'lead', which is
   * the rule as it was before `phase` existed (both sides leading is the symmetric rule).
   */
  phase?: HeartbeatPhase | undefined
  /** When the peer's latest ping arrived; undefined if none has yet. Only 'follow' uses it. */
  peerPingAt?: number | undefined
}

export type HeartbeatPhase = 'lead' | 'follow'

export type HeartbeatDecision =
  | { action: 'ping' }
  | { action: 'wait'; nextCheckAt: number }
  | { action: 'dead' }

/**
 * The whole rule (docs/PROTOCOL.md, "Heartbeats and presence"), in priority order:
 *   1. dead  when now - lastReceived >= 2H (both phases);
 *   2. ping  when now >= pingAt, where
 *              lead:   pingAt = lastSent + H;
 *              follow: pingAt = peerPingAt + H/2   if the peer pinged at or after our lastSent,
 *                      pingAt = lastSent + 3H/4    otherwise;
 *   3. wait  until min(pingAt, lastReceived + 2H).
 *
 * Since `nextCheckAt` never passes lastReceived + 2H, a caller that re-checks at `nextCheckAt` (and right after
 * each ping it sends) declares a silent peer dead at exactly lastReceived + 2H, plus its own timer latency.
 * Sending (lastSent) and receiving (lastReceived) only move the due time later, so a planned check is never too
 * late; but with 'follow' a ping ARRIVING can move pingAt earlier (peerPingAt + H/2 < lastSent + 3H/4), so a
 * follower must re-check after each ping it receives. That re-check never pings at once (pingAt = now + H/2).
 *
 * Why follow this way: the follower pings half a period after the leader's ping reached it, so in steady state
 * the two sides' pings are ~H/2 apart and do not cross. Every side still pings on its own schedule, so neither
 * loses margin against a stalled path: a follower writes some frame at least every 3H/4 (within 3H/4 of a
 * non-pong, its own ping or a pong; within H/2 of a pong, its own ping), and its non-pong frames are at most 5H/4
 * apart while the leader's pings reach it at least H/2 apart. A leader pings at lastSent + H, as both sides did
 * under the symmetric rule (both leading).
 */
export function heartbeatDecision(input: HeartbeatInput): HeartbeatDecision {
  const { now, lastSent, lastReceived, interval, phase = 'lead', peerPingAt } = checkInput(input)
  const deadAt = lastReceived + 2 * interval
  if (now >= deadAt) return { action: 'dead' }
  let pingAt: number
  if (phase === 'lead') pingAt = lastSent + interval
  else if (peerPingAt !== undefined && peerPingAt >= lastSent) pingAt = peerPingAt + interval / 2
  else pingAt = lastSent + (3 * interval) / 4
  if (now >= pingAt) return { action: 'ping' }
  return { action: 'wait', nextCheckAt: Math.min(pingAt, deadAt) }
}

function checkInput(input: HeartbeatInput): HeartbeatInput {
  if (typeof input !== 'object' || input === null) throw new InvalidArgumentError('heartbeat input must be an object')
  for (const key of ['now', 'lastSent', 'lastReceived', 'interval', 'peerPingAt'] as const) {
    const v = input[key]
    if (key === 'peerPingAt' && v === undefined) continue
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(`${key} must be a finite, non-negative number`)
    }
  }
  if (input.interval === 0) throw new InvalidArgumentError('interval must be positive')
  if (input.lastSent > input.now || input.lastReceived > input.now || (input.peerPingAt ?? 0) > input.now) {
    throw new InvalidArgumentError('lastSent, lastReceived and peerPingAt must not be later than now (use a monotonic clock)')
  }
  if (input.phase !== undefined && input.phase !== 'lead' && input.phase !== 'follow') {
    throw new InvalidArgumentError(`phase must be 'lead' or 'follow'`)
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
