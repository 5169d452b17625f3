/**
 * The P2PMess session (pure): a Noise_IK_25519_ChaChaPoly_BLAKE2b handshake whose payloads bind each side's
 * identity key to its Noise static key, then a secure transport of framed, encrypted messages with periodic
 * rekeying. Bytes in, bytes out; the I/O layer owns the socket, timers and retries.
 *
 * Wire: every handshake message and every transport message is one frame (framing.ts), and one FrameDecoder
 * reads the connection from its first byte, so frames that follow the handshake in the same chunk are kept.
 * Methods that produce bytes return whole frames ready to write; methods that consume take one frame's body
 * as FrameDecoder.push returns it. Full rules: docs/PROTOCOL.md, "Session handshake" and "Transport framing
 * and rekeying".
 */
import { blake2b } from '@noble/hashes/blake2.js'
import { DecodeError, InvalidArgumentError, P2PMessError, SessionError } from '../errors.js'
import { assertBytes, concatBytes, equalBytes, toHex, utf8, wipe } from './bytes.js'
import { encodeFrame } from './framing.js'
import {
  identityFromSeed,
  isCanonicalPeerId,
  peerIdFromIdentityKey,
  PUBLIC_KEY_BYTES,
  SIGNATURE_BYTES,
  signWithIdentity,
  verifySignature,
  type Identity,
  type NoiseKeyPair,
} from './identity.js'
import { decodeMessage, encodeMessage, type Message } from './messages.js'
import { Handshake, NOBLE_DH, type DhBackend, type DhKeyPair, type NoiseCipherState } from './noise.js'
import { canonicalOnionAddress } from './onion.js'
import { MAX_RECORD_BYTES } from './record.js'

export const SESSION_PROTOCOL_NAME = 'Noise_IK_25519_ChaChaPoly_BLAKE2b'
/** Prologue = PROLOGUE_PREFIX || ASCII of the responder's canonical onion address ("<56 chars>.onion"). */
export const PROLOGUE_PREFIX = utf8('p2pmess/1\0')
/** Identity proof = Ed25519-sign(identity seed, NOISE_STATIC_DOMAIN || Noise static public key). */
export const NOISE_STATIC_DOMAIN = utf8('p2pmess-noise-static-v1\0')
const SESSION_ID_DOMAIN = utf8('p2pmess-session-id-v1\0')
const PAYLOAD_VERSION = 1
/** Each direction rekeys after this many frames (Noise spec §11.3). */
export const DEFAULT_REKEY_INTERVAL = 1000

/** Who is on the other end, as proven by the handshake. */
export interface AuthenticatedPeer {
  /** Canonical peer ID derived from `identityKey`. */
  peerId: string
  /** Ed25519 identity public key (32 bytes). */
  identityKey: Uint8Array
  /** X25519 Noise static public key the handshake actually used (32 bytes). */
  noiseKey: Uint8Array
  /**
   * The peer's directory record as it chose to send it (UTF-8 JSON), NOT verified here: check it with
   * record.ts `verifyRecord(…, { now, expectedId: peerId })` and compare its noiseKey before using it.
   */
  record: Uint8Array | undefined
}

export interface EstablishedSession {
  transport: SecureTransport
  peer: AuthenticatedPeer
  /** 16 hex digits derived from the handshake hash; the same on both sides. For display and logs. */
  sessionId: string
}

/**
 * This device's keys, checked once and ready for any number of handshakes (`prepareSessionKeys`): the Noise
 * static key pair in its DH backend, and the identity proof, signed once (Ed25519 is deterministic, so every
 * handshake would sign the same bytes).
 */
export interface SessionKeys {
  /** The DH backend of `noise`; the handshakes' ephemeral keys are made there too. */
  readonly dh: DhBackend
  readonly noise: DhKeyPair
  /** version ‖ identityKey ‖ signature: the fixed first 97 bytes of every payload we send. */
  readonly proof: Uint8Array
}

/**
 * Our side's keys for one handshake: either `keys` (prepared once; what the client uses) or `identity` and
 * `noiseStatic` (checked, and the proof signed, for this handshake alone), not both.
 */
export interface LocalKeyOptions {
  keys?: SessionKeys
  identity?: Identity
  noiseStatic?: NoiseKeyPair
}

export interface InitiatorOptions extends LocalKeyOptions {
  /** The responder's Noise static key, from its verified directory record. */
  remoteNoiseKey: Uint8Array
  /** The responder's onion address (any form onion.ts accepts). */
  remoteOnion: string
  /** The peer ID we mean to reach; the responder must prove exactly this identity. */
  expectedPeerId: string
  /** Our signed record (serialized), sent inside message 1 so the responder can call us back. */
  record?: Uint8Array
  rekeyInterval?: number
}

export interface ResponderOptions extends LocalKeyOptions {
  /** Our own onion address, the one callers dialed. */
  ownOnion: string
  record?: Uint8Array
  rekeyInterval?: number
}

// ---------------------------------------------------------------------------------------------- payloads

const PREPARED = new WeakSet<SessionKeys>()

/**
 * Checks `identity` (the public key belongs to the seed) and `noiseStatic` (likewise), brings the Noise key into
 * `dh` (default NOBLE_DH) and signs the identity proof. `keys.noise.destroy()` when done with them.
 */
export function prepareSessionKeys(identity: Identity, noiseStatic: NoiseKeyPair, dh: DhBackend = NOBLE_DH): SessionKeys {
  const { seed, publicKey } = checkIdentity(identity)
  const pair = checkNoiseKeyPair(noiseStatic)
  const noise = dh.fromPrivateKey(pair.secretKey)
  if (!equalBytes(noise.publicKey, pair.publicKey)) {
    noise.destroy()
    throw new InvalidArgumentError('noiseStatic.publicKey does not belong to noiseStatic.secretKey')
  }
  const sig = signWithIdentity(seed, concatBytes(NOISE_STATIC_DOMAIN, pair.publicKey))
  const keys: SessionKeys = Object.freeze({ dh, noise, proof: concatBytes(Uint8Array.of(PAYLOAD_VERSION), publicKey, sig) })
  PREPARED.add(keys)
  return keys
}

/** The keys of one handshake, and whether they were made for it alone (then the handshake destroys them). */
function localKeys(options: LocalKeyOptions): { keys: SessionKeys; owned: boolean } {
  if (options.keys !== undefined) {
    if (!PREPARED.has(options.keys)) throw new InvalidArgumentError('keys must come from prepareSessionKeys()')
    if (options.identity !== undefined || options.noiseStatic !== undefined) {
      throw new InvalidArgumentError('give either keys or identity and noiseStatic, not both')
    }
    return { keys: options.keys, owned: false }
  }
  return { keys: prepareSessionKeys(options.identity as Identity, options.noiseStatic as NoiseKeyPair), owned: true }
}

/**
 * Handshake payload (both messages):
 *   version u8 (=1) || identityKey (32) || signature (64) || recordLength u16 BE (0..2048) || record
 */
function encodeProof(keys: SessionKeys, record: Uint8Array | undefined): Uint8Array {
  const rec = record ?? new Uint8Array(0)
  return concatBytes(keys.proof, Uint8Array.of(rec.length >>> 8, rec.length & 0xff), rec)
}

/** Parses a payload and checks its signature over the Noise key the handshake actually used. */
function verifyProof(payload: Uint8Array, noiseKey: Uint8Array): AuthenticatedPeer {
  const fixed = 1 + PUBLIC_KEY_BYTES + SIGNATURE_BYTES + 2
  const malformed = (why: string): never => {
    throw new SessionError('ERR_SESSION_HANDSHAKE', `malformed handshake payload: ${why}`, { cause: new DecodeError('ERR_DECODE', why) })
  }
  if (payload.length < fixed) malformed(`${payload.length} bytes, at least ${fixed} needed`)
  if (payload[0] !== PAYLOAD_VERSION) malformed(`payload version ${payload[0]} is not supported`)
  const identityKey = payload.slice(1, 1 + PUBLIC_KEY_BYTES)
  const sig = payload.subarray(1 + PUBLIC_KEY_BYTES, fixed - 2)
  const recordLength = (payload[fixed - 2]! << 8) | payload[fixed - 1]!
  if (recordLength > MAX_RECORD_BYTES) malformed(`record of ${recordLength} bytes exceeds ${MAX_RECORD_BYTES}`)
  if (payload.length !== fixed + recordLength) malformed('record length does not match the payload')
  if (!verifySignature(sig, concatBytes(NOISE_STATIC_DOMAIN, noiseKey), identityKey)) {
    throw new SessionError('ERR_PEER_UNAUTHENTICATED', 'the peer did not prove that its identity key owns its Noise key')
  }
  return {
    peerId: peerIdFromIdentityKey(identityKey),
    identityKey,
    noiseKey: noiseKey.slice(),
    record: recordLength === 0 ? undefined : payload.slice(fixed),
  }
}

// ---------------------------------------------------------------------------------------------- options

function checkIdentity(identity: unknown): Identity {
  if (typeof identity !== 'object' || identity === null) throw new InvalidArgumentError('identity must be an object')
  const { seed, publicKey } = identity as Record<string, unknown>
  assertBytes(seed, 'identity.seed', 32)
  assertBytes(publicKey, 'identity.publicKey', PUBLIC_KEY_BYTES)
  if (!equalBytes(identityFromSeed(seed).publicKey, publicKey)) {
    throw new InvalidArgumentError('identity.publicKey does not belong to identity.seed')
  }
  return { seed, publicKey }
}

/** Shape only: whether the public key belongs to the secret is checked by prepareSessionKeys, in its backend. */
function checkNoiseKeyPair(pair: unknown): NoiseKeyPair {
  if (typeof pair !== 'object' || pair === null) throw new InvalidArgumentError('noiseStatic must be an object')
  const { secretKey, publicKey } = pair as Record<string, unknown>
  assertBytes(secretKey, 'noiseStatic.secretKey', 32)
  assertBytes(publicKey, 'noiseStatic.publicKey', 32)
  return { secretKey, publicKey }
}

function checkRecord(record: unknown): Uint8Array | undefined {
  if (record === undefined) return undefined
  assertBytes(record, 'record')
  if (record.length === 0 || record.length > MAX_RECORD_BYTES) {
    throw new InvalidArgumentError(`record must be 1..${MAX_RECORD_BYTES} bytes`)
  }
  return record
}

function prologueFor(onion: unknown, name: string): Uint8Array {
  if (typeof onion !== 'string') throw new InvalidArgumentError(`${name} must be a string`)
  try {
    return concatBytes(PROLOGUE_PREFIX, utf8(canonicalOnionAddress(onion)))
  } catch (cause) {
    throw new InvalidArgumentError(`${name} is not a valid onion address`, { cause })
  }
}

function sessionIdOf(handshake: Handshake): string {
  return toHex(blake2b(concatBytes(SESSION_ID_DOMAIN, handshake.handshakeHash), { dkLen: 8 }))
}

/** Any failure while reading a peer's handshake message becomes a SessionError (the original as `cause`). */
function asHandshakeError(err: unknown, what: string): SessionError {
  if (err instanceof SessionError) return err
  const code = err instanceof P2PMessError ? ` (${err.code})` : ''
  return new SessionError('ERR_SESSION_HANDSHAKE', `${what}${code}`, { cause: err })
}

// ---------------------------------------------------------------------------------------------- initiator

type InitiatorState =
  | { kind: 'ready' }
  | { kind: 'awaiting-response' }
  | { kind: 'established' }
  | { kind: 'failed'; error: SessionError }

/** The calling side: sends message 1, reads message 2. */
export class SessionInitiator {
  readonly #handshake: Handshake
  readonly #payload: Uint8Array
  readonly #remoteNoiseKey: Uint8Array
  readonly #expectedPeerId: string
  readonly #rekeyInterval: number | undefined
  /** Keys made for this handshake alone (destroyed when it ends), not lent by the caller. */
  readonly #ownedKeys: SessionKeys | undefined
  #state: InitiatorState = { kind: 'ready' }

  constructor(options: InitiatorOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
    assertBytes(options.remoteNoiseKey, 'remoteNoiseKey', 32)
    if (!isCanonicalPeerId(options.expectedPeerId)) {
      throw new InvalidArgumentError('expectedPeerId must be a canonical peer ID')
    }
    const prologue = prologueFor(options.remoteOnion, 'remoteOnion')
    const record = checkRecord(options.record)
    const rekeyInterval = checkRekeyInterval(options.rekeyInterval)
    const { keys, owned } = localKeys(options)
    this.#handshake = new Handshake({
      protocolName: SESSION_PROTOCOL_NAME,
      initiator: true,
      prologue,
      staticKey: keys.noise,
      dh: keys.dh,
      remoteStaticKey: options.remoteNoiseKey,
    })
    this.#ownedKeys = owned ? keys : undefined
    this.#payload = encodeProof(keys, record)
    this.#remoteNoiseKey = options.remoteNoiseKey.slice()
    this.#expectedPeerId = options.expectedPeerId
    this.#rekeyInterval = rekeyInterval
  }

  /** Message 1 (-> e, es, s, ss + our identity proof), framed. Call once. */
  firstMessage(): Uint8Array {
    if (this.#state.kind !== 'ready') throw this.#misuse('firstMessage() may be called once, first')
    const message = this.#handshake.writeMessage(this.#payload)
    this.#state = { kind: 'awaiting-response' }
    return encodeFrame(message)
  }

  /**
   * Reads message 2 (<- e, ee, se + the responder's identity proof). Fails with ERR_SESSION_HANDSHAKE
   * (undecryptable or malformed), ERR_PEER_UNAUTHENTICATED (bad proof) or ERR_SESSION_KEY_MISMATCH (a valid
   * proof for another peer ID). Any failure is final.
   */
  receiveResponse(frame: Uint8Array): EstablishedSession {
    assertBytes(frame, 'frame')
    if (this.#state.kind !== 'awaiting-response') throw this.#misuse('receiveResponse() needs firstMessage() first, once')
    try {
      let payload: Uint8Array
      try {
        payload = this.#handshake.readMessage(frame)
      } catch (err) {
        throw asHandshakeError(err, 'cannot decrypt the handshake response')
      }
      const peer = verifyProof(payload, this.#remoteNoiseKey)
      if (peer.peerId !== this.#expectedPeerId) {
        throw new SessionError('ERR_SESSION_KEY_MISMATCH', 'the responder proved a different identity than the peer ID we dialed', {
          details: { expected: this.#expectedPeerId, actual: peer.peerId },
        })
      }
      const sessionId = sessionIdOf(this.#handshake)
      const transport = new SecureTransport(this.#handshake.split(), { rekeyInterval: this.#rekeyInterval })
      this.#state = { kind: 'established' }
      return { transport, peer, sessionId }
    } catch (err) {
      const error = asHandshakeError(err, 'handshake failed')
      this.#state = { kind: 'failed', error }
      throw error
    } finally {
      this.#ownedKeys?.noise.destroy()
    }
  }

  #misuse(why: string): SessionError {
    return this.#state.kind === 'failed' ? this.#state.error : new SessionError('ERR_SESSION_PROTOCOL', why)
  }
}

// ---------------------------------------------------------------------------------------------- responder

type ResponderState =
  | { kind: 'awaiting-first' }
  | { kind: 'authenticated'; peer: AuthenticatedPeer }
  | { kind: 'responded' }
  | { kind: 'failed'; error: SessionError }

/** The called side: reads message 1, then (if it accepts the caller) writes message 2. */
export class SessionResponder {
  readonly #handshake: Handshake
  readonly #keys: SessionKeys
  /** Keys made for this handshake alone (destroyed when it ends), not lent by the caller. */
  readonly #ownedKeys: SessionKeys | undefined
  readonly #record: Uint8Array | undefined
  readonly #rekeyInterval: number | undefined
  #state: ResponderState = { kind: 'awaiting-first' }

  constructor(options: ResponderOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
    const prologue = prologueFor(options.ownOnion, 'ownOnion')
    this.#record = checkRecord(options.record)
    this.#rekeyInterval = checkRekeyInterval(options.rekeyInterval)
    const { keys, owned } = localKeys(options)
    this.#handshake = new Handshake({ protocolName: SESSION_PROTOCOL_NAME, initiator: false, prologue, staticKey: keys.noise, dh: keys.dh })
    this.#keys = keys
    this.#ownedKeys = owned ? keys : undefined
  }

  /**
   * Reads message 1 and returns the caller's proven identity. ERR_SESSION_HANDSHAKE when it cannot be
   * decrypted (a stale copy of our Noise key, another onion address in the prologue, or tampering): close the
   * connection without answering. ERR_PEER_UNAUTHENTICATED for a bad identity proof.
   * Message 1 can be replayed, so the caller is only known to be live once its first transport frame opens.
   */
  readFirstMessage(frame: Uint8Array): AuthenticatedPeer {
    assertBytes(frame, 'frame')
    if (this.#state.kind !== 'awaiting-first') throw this.#misuse('readFirstMessage() may be called once, first')
    try {
      let payload: Uint8Array
      try {
        payload = this.#handshake.readMessage(frame)
      } catch (err) {
        throw asHandshakeError(err, 'cannot decrypt the first handshake message (stale Noise key or tampering)')
      }
      const remote = this.#handshake.remoteStaticKey
      if (remote === undefined) throw new SessionError('ERR_SESSION_HANDSHAKE', 'handshake carried no static key')
      const peer = verifyProof(payload, remote)
      this.#state = { kind: 'authenticated', peer }
      return peer
    } catch (err) {
      const error = asHandshakeError(err, 'handshake failed')
      this.#state = { kind: 'failed', error }
      this.#ownedKeys?.noise.destroy()
      throw error
    }
  }

  /** Message 2 (framed) and the established session. Call once, after readFirstMessage() accepted the caller. */
  response(): { message: Uint8Array; session: EstablishedSession } {
    const state = this.#state
    if (state.kind !== 'authenticated') throw this.#misuse('response() needs a successful readFirstMessage() first, once')
    try {
      const message = encodeFrame(this.#handshake.writeMessage(encodeProof(this.#keys, this.#record)))
      const sessionId = sessionIdOf(this.#handshake)
      const transport = new SecureTransport(this.#handshake.split(), { rekeyInterval: this.#rekeyInterval })
      this.#state = { kind: 'responded' }
      return { message, session: { transport, peer: state.peer, sessionId } }
    } finally {
      this.#ownedKeys?.noise.destroy()
    }
  }

  #misuse(why: string): SessionError {
    return this.#state.kind === 'failed' ? this.#state.error : new SessionError('ERR_SESSION_PROTOCOL', why)
  }
}

export function initiateSession(options: InitiatorOptions): SessionInitiator {
  return new SessionInitiator(options)
}

export function respondSession(options: ResponderOptions): SessionResponder {
  return new SessionResponder(options)
}

// ---------------------------------------------------------------------------------------------- retry rule

/**
 * What the dialer does when the responder closed the connection (or let it time out) after message 1 without
 * answering: its copy of the responder's Noise key may be stale. Refetch the record; retry exactly once, and
 * only if the record now carries a different Noise key.
 */
export function staleKeyRetry(input: {
  usedNoiseKey: Uint8Array
  freshNoiseKey: Uint8Array | undefined
  attempt: number
}): { action: 'retry'; noiseKey: Uint8Array } | { action: 'give-up'; error: SessionError } {
  assertBytes(input.usedNoiseKey, 'usedNoiseKey', 32)
  if (input.freshNoiseKey !== undefined) assertBytes(input.freshNoiseKey, 'freshNoiseKey', 32)
  if (!Number.isInteger(input.attempt) || input.attempt < 1) throw new InvalidArgumentError('attempt must be an integer >= 1')
  const fresh = input.freshNoiseKey
  if (input.attempt === 1 && fresh !== undefined && !equalBytes(fresh, input.usedNoiseKey)) {
    return { action: 'retry', noiseKey: fresh.slice() }
  }
  return {
    action: 'give-up',
    error: new SessionError('ERR_SESSION_UNANSWERED', 'the peer dropped our handshake without answering', {
      details: { attempts: input.attempt, keyChanged: fresh !== undefined && !equalBytes(fresh, input.usedNoiseKey) },
    }),
  }
}

// ---------------------------------------------------------------------------------------------- transport

function checkRekeyInterval(value: unknown): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 2 ** 32) {
    throw new InvalidArgumentError('rekeyInterval must be an integer in 1..2^32')
  }
  return value
}

/** Per direction: the first message must be hello; after bye nothing more may follow. */
type Direction = 'awaiting-hello' | 'open' | 'ended'

type TransportState =
  | { kind: 'open'; send: NoiseCipherState; receive: NoiseCipherState; sending: Direction; receiving: Direction }
  | { kind: 'closed'; error: SessionError }

/**
 * Encrypted, framed messages in both directions. Each side rekeys its sending CipherState after every
 * `rekeyInterval` frames it sends and its receiving CipherState after as many frames received, so both ends
 * stay in lock step over the ordered stream. Any failure to open a frame (tampering, a malformed or
 * out-of-order message) is fatal: the keys are wiped and every later call throws ERR_SESSION_CLOSED.
 */
export class SecureTransport {
  readonly rekeyInterval: number
  #state: TransportState
  #sent = 0
  #received = 0

  constructor(ciphers: { send: NoiseCipherState; receive: NoiseCipherState }, options: { rekeyInterval?: number | undefined } = {}) {
    this.rekeyInterval = checkRekeyInterval(options.rekeyInterval) ?? DEFAULT_REKEY_INTERVAL
    this.#state = { kind: 'open', send: ciphers.send, receive: ciphers.receive, sending: 'awaiting-hello', receiving: 'awaiting-hello' }
  }

  get framesSent(): number {
    return this.#sent
  }

  get framesReceived(): number {
    return this.#received
  }

  get closed(): boolean {
    return this.#state.kind === 'closed'
  }

  /** Encodes, encrypts and frames one message. The first must be hello; nothing may follow a bye. */
  seal(message: Message): Uint8Array {
    const state = this.#open()
    if (state.sending === 'ended') throw new SessionError('ERR_SESSION_CLOSED', 'cannot send after bye')
    if ((state.sending === 'awaiting-hello') !== (message?.type === 'hello')) {
      throw new SessionError('ERR_SESSION_PROTOCOL', 'hello must be the first message, and only the first')
    }
    const plaintext = encodeMessage(message)
    const frame = encodeFrame(state.send.encrypt(plaintext))
    wipe(plaintext)
    if (++this.#sent % this.rekeyInterval === 0) state.send.rekey()
    state.sending = message.type === 'bye' ? 'ended' : 'open'
    this.#closeIfDone(state)
    return frame
  }

  /** Decrypts and decodes one frame body (as FrameDecoder.push returns it). Any failure closes the transport. */
  open(frame: Uint8Array): Message {
    assertBytes(frame, 'frame')
    const state = this.#open()
    try {
      const plaintext = state.receive.decrypt(frame)
      if (++this.#received % this.rekeyInterval === 0) state.receive.rekey()
      const message = decodeMessage(plaintext)
      if (state.receiving === 'ended') throw new SessionError('ERR_SESSION_PROTOCOL', 'the peer sent a message after bye')
      if ((state.receiving === 'awaiting-hello') !== (message.type === 'hello')) {
        throw new SessionError('ERR_SESSION_PROTOCOL', 'the peer must send hello first, and only once')
      }
      state.receiving = message.type === 'bye' ? 'ended' : 'open'
      this.#closeIfDone(state)
      return message
    } catch (err) {
      this.close(err)
      throw err
    }
  }

  /** Wipes the keys; every later seal/open throws ERR_SESSION_CLOSED (with `cause` when given). */
  close(cause?: unknown): void {
    const state = this.#state
    if (state.kind === 'closed') return
    state.send.destroy()
    state.receive.destroy()
    this.#state = {
      kind: 'closed',
      error: new SessionError('ERR_SESSION_CLOSED', 'the session is closed', cause === undefined ? {} : { cause }),
    }
  }

  #open(): Extract<TransportState, { kind: 'open' }> {
    if (this.#state.kind === 'closed') throw this.#state.error
    return this.#state
  }

  #closeIfDone(state: Extract<TransportState, { kind: 'open' }>): void {
    if (state.sending === 'ended' && state.receiving === 'ended') this.close()
  }
}
