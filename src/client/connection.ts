/**
 * One live peer session on one stream (an onion-service stream in production, any Duplex in tests): the IK
 * handshake I/O, 2-byte framing from the first byte, ping/pong heartbeats, and an orderly bye. What the
 * messages mean (hello flags, texts, acks, the outbox) is the client's business (client.ts).
 *
 * Rules: docs/PROTOCOL.md, "Session handshake", "Transport framing and rekeying", "Heartbeats and presence" and
 * "Client behaviour". Every wait has a deadline; every failure ends as one typed `closed` callback.
 */
import type { Duplex } from 'node:stream'
import { InvalidArgumentError, P2PMessError, SessionError } from '../errors.js'
import { AEAD_TAG_LENGTH, FrameDecoder } from '../protocol/framing.js'
import { DEFAULT_HEARTBEAT_INTERVAL, heartbeatDecision } from '../protocol/heartbeat.js'
import {
  MAX_TEXT_BYTES,
  MESSAGE_ID_LENGTH,
  type AckMessage,
  type ByeMessage,
  type ByeReason,
  type HelloMessage,
  type Message,
  type TextMessage,
} from '../protocol/messages.js'
import {
  initiateSession,
  respondSession,
  type AuthenticatedPeer,
  type EstablishedSession,
  type InitiatorOptions,
  type ResponderOptions,
  type SecureTransport,
} from '../protocol/session.js'

/** The onion-service virtual port every client listens on. */
export const SESSION_PORT = 7700
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 60_000
/** Largest frame a session accepts: a text of MAX_TEXT_BYTES (version, type, id, seq, sentAt, length, body) + tag. */
export const MAX_SESSION_FRAME = 2 + MESSAGE_ID_LENGTH + 4 + 8 + 2 + MAX_TEXT_BYTES + AEAD_TAG_LENGTH
/** Frames a peer may send ahead of the handshake's end (kept until start()); more is abuse. */
const MAX_EARLY_FRAMES = 32
/** After we send bye, how long the peer has to close its side before we cut the stream. */
const CLOSE_GRACE_MS = 2_000

/** How a connection ended. */
export type CloseCause =
  /** We closed it with a bye. */
  | { kind: 'local'; reason: ByeReason; detail: string }
  /** The peer closed it with a bye. */
  | { kind: 'bye'; bye: ByeMessage }
  /** Anything else: heartbeat timeout, tampered or oversized frame, socket error, stream ended without bye. */
  | { kind: 'error'; error: P2PMessError }

/** Messages the client handles; ping, pong and bye are handled here. */
export type SessionMessage = HelloMessage | TextMessage | AckMessage

export interface ConnectionHandler {
  message(message: SessionMessage): void
  /** A heartbeat round trip, in ms. */
  rtt(ms: number): void
  /** Called exactly once, after which the connection is dead. */
  closed(cause: CloseCause): void
}

export interface ConnectionOptions {
  /** H of the heartbeat rule, ms (default 15 000). */
  heartbeatIntervalMs?: number
  /** Bound on the whole handshake, ms. */
  handshakeTimeoutMs?: number
  /** Monotonic clock in ms (default performance.now). */
  clock?: () => number
  rekeyInterval?: number
}

/** The session layer's options plus this connection's; passed through to `initiateSession` as they are. */
export interface InitiateOptions extends ConnectionOptions, InitiatorOptions {}

export interface RespondOptions extends ConnectionOptions, ResponderOptions {
  /** Decides on the proven caller before we answer; false closes the stream without a reply (ERR_PEER_REFUSED). */
  admit: (peer: AuthenticatedPeer) => boolean | Promise<boolean>
}

type State =
  | { kind: 'handshake' }
  | { kind: 'ready'; transport: SecureTransport }
  | { kind: 'open'; transport: SecureTransport; handler: ConnectionHandler; timer: NodeJS.Timeout | undefined }
  | { kind: 'closed'; cause: CloseCause }

type Waiter = (result: { frame: Uint8Array } | { error: P2PMessError }) => void

function asP2P(err: unknown, fallback: string): P2PMessError {
  return err instanceof P2PMessError ? err : new SessionError('ERR_SESSION_CLOSED', fallback, { cause: err })
}

function checkOptions(options: ConnectionOptions): { interval: number; handshakeTimeout: number; clock: () => number } {
  const { heartbeatIntervalMs = DEFAULT_HEARTBEAT_INTERVAL, handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS, clock = () => performance.now() } = options
  for (const [name, v] of [['heartbeatIntervalMs', heartbeatIntervalMs], ['handshakeTimeoutMs', handshakeTimeoutMs]] as const) {
    if (!Number.isSafeInteger(v) || v < 1 || v > 2 ** 30) throw new InvalidArgumentError(`${name} must be an integer number of ms in 1..2^30`)
  }
  if (typeof clock !== 'function') throw new InvalidArgumentError('clock must be a function')
  return { interval: heartbeatIntervalMs, handshakeTimeout: handshakeTimeoutMs, clock }
}

function checkSocket(socket: unknown): asserts socket is Duplex {
  if (typeof socket !== 'object' || socket === null || typeof (socket as Duplex).write !== 'function' || typeof (socket as Duplex).on !== 'function') {
    throw new InvalidArgumentError('socket must be a connected Duplex stream')
  }
}

export class Connection {
  readonly role: 'initiator' | 'responder'
  /** Set once the handshake is done. */
  peer: AuthenticatedPeer | undefined
  sessionId = ''
  readonly #socket: Duplex
  readonly #decoder = new FrameDecoder({ maxLength: MAX_SESSION_FRAME })
  readonly #interval: number
  readonly #clock: () => number
  /** Frames read before the handler was attached (the handshake response, frames that followed it). */
  readonly #queue: Uint8Array[] = []
  #waiter: Waiter | undefined
  /** The stream failed or ended before start(): reported once the queue is drained. */
  #failure: P2PMessError | undefined
  #state: State = { kind: 'handshake' }
  #lastSent = 0
  /** Set by respond(): releases message 2, held so that start() can add our hello to the same write. */
  #unholdOnStart: (() => void) | undefined
  #lastReceived = 0
  #textSeq = 0
  #ping: { nonce: number; at: number } | undefined
  /** When the peer's latest ping arrived: the follower's anchor (docs/PROTOCOL.md, "Heartbeats and presence"). */
  #lastPeerPing: number | undefined
  #nextNonce = 1
  #closedSocket: Promise<void>

  private constructor(socket: Duplex, role: 'initiator' | 'responder', options: ConnectionOptions) {
    const { interval, clock } = checkOptions(options)
    this.role = role
    this.#socket = socket
    this.#interval = interval
    this.#clock = clock
    this.#closedSocket = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('data', (chunk: Uint8Array) => this.#onData(chunk))
    socket.on('error', (err: unknown) => this.#fail(new SessionError('ERR_SESSION_CLOSED', 'the connection failed', { cause: err })))
    socket.on('close', () => {
      const midFrame = !this.#decoder.idle && !this.#decoder.failed
      this.#fail(new SessionError('ERR_SESSION_CLOSED', midFrame ? 'the peer closed the connection in the middle of a frame' : 'the peer closed the connection'))
    })
  }

  /**
   * Runs the initiator side of the IK handshake on a fresh stream (message 1 out, message 2 in). Resolves once
   * the responder proved `expectedPeerId`; call `start()` next. On failure the stream is destroyed and the
   * typed error thrown: ERR_SESSION_CLOSED / ERR_SESSION_TIMEOUT when no answer came (stale key? see
   * staleKeyRetry), or the handshake's own errors (ERR_SESSION_HANDSHAKE, ERR_PEER_UNAUTHENTICATED,
   * ERR_SESSION_KEY_MISMATCH).
   */
  static async initiate(socket: Duplex, options: InitiateOptions): Promise<Connection> {
    checkSocket(socket)
    const { handshakeTimeout } = checkOptions(options)
    let conn: Connection | undefined
    try {
      const initiator = initiateSession(options)
      conn = new Connection(socket, 'initiator', options)
      const deadline = conn.#clock() + handshakeTimeout
      conn.#write(initiator.firstMessage())
      const session = initiator.receiveResponse(await conn.#nextFrame(deadline))
      conn.#established(session)
      return conn
    } catch (err) {
      throw Connection.#handshakeFailed(socket, conn, err)
    }
  }

  /**
   * Runs the responder side: reads message 1, asks `admit`, answers with message 2. A refused caller
   * (ERR_PEER_REFUSED) and an undecryptable message 1 get no answer: the stream is just closed.
   */
  static async respond(socket: Duplex, options: RespondOptions): Promise<Connection> {
    checkSocket(socket)
    const { handshakeTimeout } = checkOptions(options)
    if (typeof options.admit !== 'function') throw new InvalidArgumentError('admit must be a function')
    let conn: Connection | undefined
    try {
      const responder = respondSession(options)
      conn = new Connection(socket, 'responder', options)
      const deadline = conn.#clock() + handshakeTimeout
      const peer = responder.readFirstMessage(await conn.#nextFrame(deadline))
      if (!(await options.admit(peer))) {
        throw new SessionError('ERR_PEER_REFUSED', 'the caller is not admitted', { details: { peerId: peer.peerId } })
      }
      if (conn.#failure !== undefined) throw conn.#failure
      const { message, session } = responder.response()
      // Message 2 and our hello leave in one write when start() follows in the same turn of the event loop (it
      // releases the hold; see hold()); otherwise message 2 leaves at the end of this turn.
      const unhold = conn.hold()
      conn.#unholdOnStart = unhold
      setImmediate(unhold)
      conn.#write(message)
      conn.#established(session)
      return conn
    } catch (err) {
      throw Connection.#handshakeFailed(socket, conn, err)
    }
  }

  /** A handshake that failed: the stream is destroyed; returns the typed error to throw. */
  static #handshakeFailed(socket: Duplex, conn: Connection | undefined, err: unknown): P2PMessError {
    const error = asP2P(err, 'handshake failed')
    if (conn === undefined) socket.destroy()
    else conn.#abort(error)
    return error
  }

  get open(): boolean {
    return this.#state.kind === 'open'
  }

  /**
   * Attaches the handler, sends our hello, then delivers whatever already arrived and arms the heartbeat.
   * If the stream died meanwhile, `handler.closed` is called before this returns.
   */
  start(handler: ConnectionHandler, hello: HelloMessage): void {
    const state = this.#state
    if (state.kind !== 'ready') throw new SessionError('ERR_SESSION_PROTOCOL', 'start() needs a finished handshake, once')
    this.#state = { kind: 'open', transport: state.transport, handler, timer: undefined }
    this.#send(hello)
    this.#unholdOnStart?.()
    this.#unholdOnStart = undefined
    for (const frame of this.#queue.splice(0)) {
      if (this.#state.kind !== 'open') return
      this.#receive(frame)
    }
    if (this.#failure !== undefined) return this.#fail(this.#failure)
    this.#heartbeat()
  }

  /**
   * Holds our outgoing frames in the stream's buffer until the returned function is called (idempotent; closing
   * the connection flushes them too), so frames produced apart in time leave in one write. Why it matters: tor
   * relays bytes written apart as separate cells, and its links do not disable Nagle, so a second small write
   * that follows the first within a round trip can wait for a delayed ACK (~40 ms on Linux) on some link
   * (docs/DECISIONS.md "Coalescing writes").
   */
  hold(): () => void {
    this.#socket.cork()
    let held = true
    return () => {
      if (!held) return
      held = false
      this.#socket.uncork()
    }
  }

  /** Sends a text with the next per-session seq. False if the connection is not open. */
  sendText(id: Uint8Array, body: string, sentAt: number): boolean {
    if (this.#state.kind !== 'open') return false
    this.#send({ type: 'text', id, seq: this.#textSeq, sentAt, body })
    this.#textSeq++
    return true
  }

  /** Acknowledges received message IDs (any number; split into acks of at most 64). */
  sendAck(ids: readonly Uint8Array[]): boolean {
    if (this.#state.kind !== 'open') return false
    for (let i = 0; i < ids.length; i += 64) this.#send({ type: 'ack', ids: ids.slice(i, i + 64) })
    return true
  }

  /** Says bye (when open) and closes; resolves once the stream is closed (at most CLOSE_GRACE_MS later). */
  close(reason: ByeReason, detail = ''): Promise<void> {
    const state = this.#state
    if (state.kind === 'closed') return this.#closedSocket
    if (state.kind === 'open') {
      try {
        this.#write(state.transport.seal({ type: 'bye', reason, detail }))
      } catch {
        // transport already failed: nothing more to say
      }
    }
    this.#finish({ kind: 'local', reason, detail })
    if (state.kind === 'open') {
      this.#socket.end()
      const grace = setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS)
      grace.unref()
      void this.#closedSocket.then(() => clearTimeout(grace))
    } else {
      this.#socket.destroy()
    }
    return this.#closedSocket
  }

  // ------------------------------------------------------------------------------------------ internals

  #onData(chunk: Uint8Array): void {
    if (this.#state.kind === 'closed') return
    let frames: Uint8Array[]
    try {
      frames = this.#decoder.push(chunk)
    } catch (err) {
      return this.#fail(asP2P(err, 'bad frame'))
    }
    for (const frame of frames) {
      const kind = this.#kind()
      if (kind === 'closed') return
      if (kind === 'open') this.#receive(frame)
      else if (this.#waiter !== undefined) {
        const wake = this.#waiter
        this.#waiter = undefined
        wake({ frame })
      } else if (this.#queue.length < MAX_EARLY_FRAMES) this.#queue.push(frame)
      else return this.#fail(new SessionError('ERR_SESSION_PROTOCOL', `more than ${MAX_EARLY_FRAMES} frames before the session started`))
    }
  }

  /** The current state (a call, so TypeScript does not carry narrowing across callbacks that change it). */
  #kind(): State['kind'] {
    return this.#state.kind
  }

  #nextFrame(deadline: number): Promise<Uint8Array> {
    const queued = this.#queue.shift()
    if (queued !== undefined) return Promise.resolve(queued)
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined
        reject(new SessionError('ERR_SESSION_TIMEOUT', 'the handshake timed out'))
      }, Math.max(0, deadline - this.#clock()))
      this.#waiter = (result) => {
        clearTimeout(timer)
        if ('frame' in result) resolve(result.frame)
        else reject(result.error)
      }
    })
  }

  #established(session: EstablishedSession): void {
    this.peer = session.peer
    this.sessionId = session.sessionId
    this.#state = { kind: 'ready', transport: session.transport }
    this.#lastReceived = this.#lastSent = this.#clock()
  }

  #receive(frame: Uint8Array): void {
    const state = this.#state
    if (state.kind !== 'open') return
    let message: Message
    try {
      message = state.transport.open(frame)
    } catch (err) {
      return this.#fail(asP2P(err, 'bad frame'))
    }
    this.#lastReceived = this.#clock()
    switch (message.type) {
      case 'ping':
        this.#lastPeerPing = this.#lastReceived
        this.#send({ type: 'pong', nonce: message.nonce, pingSentAt: message.sentAt, sentAt: Math.floor(this.#clock()) })
        // A follower's next ping is due H/2 after this one arrived, which may be earlier than the check already
        // planned: re-plan (it never pings at once). Nothing else moves a check earlier.
        if (this.role === 'responder') this.#heartbeat()
        break
      case 'pong': {
        const ping = this.#ping
        if (ping !== undefined && ping.nonce === message.nonce) {
          this.#ping = undefined
          state.handler.rtt(Math.max(0, Math.round(this.#clock() - ping.at)))
        }
        break
      }
      case 'bye':
        this.#finish({ kind: 'bye', bye: message })
        this.#socket.end()
        break
      default:
        state.handler.message(message)
    }
  }

  /**
   * One heartbeat step (docs/PROTOCOL.md, "Heartbeats and presence"); re-arms its own unref'd timer. The dialler
   * leads, the responder follows half a period behind it, so the two sides' pings do not cross.
   */
  #heartbeat(): void {
    const state = this.#state
    if (state.kind !== 'open') return
    clearTimeout(state.timer)
    const now = this.#clock()
    const decision = heartbeatDecision({
      now,
      lastSent: this.#lastSent,
      lastReceived: this.#lastReceived,
      interval: this.#interval,
      phase: this.role === 'initiator' ? 'lead' : 'follow',
      peerPingAt: this.#lastPeerPing,
    })
    switch (decision.action) {
      case 'dead':
        return this.#fail(new SessionError('ERR_SESSION_TIMEOUT', `no frame from the peer for ${2 * this.#interval} ms`))
      case 'ping': {
        const nonce = this.#nextNonce
        this.#nextNonce = (this.#nextNonce % 0xffffffff) + 1
        this.#ping = { nonce, at: now }
        this.#send({ type: 'ping', nonce, sentAt: Math.floor(now) })
        return this.#heartbeat()
      }
      case 'wait':
        state.timer = setTimeout(() => this.#heartbeat(), Math.max(1, Math.ceil(decision.nextCheckAt - now)))
        state.timer.unref()
    }
  }

  #send(message: Message): void {
    const state = this.#state
    if (state.kind !== 'open' && state.kind !== 'ready') return
    // A pong does not move our own ping schedule: otherwise the side that pings first keeps the other side's
    // lastSent fresh with pongs, and only one side ever measures an RTT. Liveness is unaffected (2H on lastReceived).
    this.#write(state.transport.seal(message), message.type !== 'pong')
  }

  #write(bytes: Uint8Array, counts = true): void {
    if (this.#socket.destroyed || !this.#socket.writable) return
    this.#socket.write(bytes)
    if (counts) this.#lastSent = this.#clock()
  }

  /** A failure: before start() it is kept for the handshake / start(); afterwards the connection closes. */
  #fail(error: P2PMessError): void {
    const state = this.#state
    if (state.kind === 'closed') return
    if (state.kind !== 'open') {
      this.#failure ??= error
      this.#socket.destroy()
      const wake = this.#waiter
      this.#waiter = undefined
      wake?.({ error })
      return
    }
    this.#finish({ kind: 'error', error })
    this.#socket.destroy()
  }

  /** During a failed handshake: destroy without a handler to tell. */
  #abort(error: P2PMessError): void {
    this.#failure ??= error
    this.#state = { kind: 'closed', cause: { kind: 'error', error } }
    this.#socket.destroy()
  }

  #finish(cause: CloseCause): void {
    const state = this.#state
    if (state.kind === 'closed') return
    this.#state = { kind: 'closed', cause }
    if (state.kind === 'open') {
      clearTimeout(state.timer)
      state.transport.close()
      state.handler.closed(cause)
    } else if (state.kind === 'ready') {
      state.transport.close()
    }
    this.#queue.length = 0
  }
}
