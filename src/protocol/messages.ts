/**
 * The P2PMess message codec (pure). One message is the whole plaintext of one transport frame:
 *
 *   version (u8, = 1) || type (u8) || fields of that type
 *
 * Every field has a fixed size or an explicit length prefix; integers are big-endian; the encoding is
 * canonical (each message has exactly one accepted byte string), so `encode(decode(b))` equals `b` for every
 * accepted `b`. The byte-by-byte layout is in docs/PROTOCOL.md, "Messages".
 */
import { randomBytes } from '@noble/hashes/utils.js'
import { DecodeError, InvalidArgumentError } from '../errors.js'
import { assertBytes, concatBytes, fromUtf8, utf8 } from './bytes.js'

export const MESSAGE_VERSION = 1
export const MESSAGE_ID_LENGTH = 16
export const MAX_CLIENT_NAME_BYTES = 64
export const MAX_CLIENT_VERSION_BYTES = 32
export const MAX_CAPABILITIES = 16
export const MAX_CAPABILITY_BYTES = 32
export const MAX_TEXT_BYTES = 16384
export const MAX_ACK_IDS = 64
export const MAX_BYE_DETAIL_BYTES = 200
/** Timestamps are milliseconds since the Unix epoch, carried as u64 but limited to exact JS integers. */
const MAX_U64_NUMBER = Number.MAX_SAFE_INTEGER

export type ByeReason = 'done' | 'shutdown' | 'protocol-error' | 'timeout'

export interface HelloMessage {
  type: 'hello'
  clientName: string
  clientVersion: string
  /** Feature tokens, e.g. "ack"; lower-case ASCII `[a-z0-9][a-z0-9._-]*`, no duplicates. */
  capabilities: readonly string[]
}
export interface TextMessage {
  type: 'text'
  /** Random 128-bit ID (see `newMessageId`); acknowledged by `ack`. */
  id: Uint8Array
  /** Per-session, per-direction counter: 0 for the first text a side sends in a session, then +1. */
  seq: number
  /** Sender's wall clock, ms since the Unix epoch. */
  sentAt: number
  body: string
}
export interface AckMessage {
  type: 'ack'
  ids: readonly Uint8Array[]
}
export interface PingMessage {
  type: 'ping'
  nonce: number
  /** Sender's clock in ms (any clock; the pong echoes it back so RTT needs only the sender's clock). */
  sentAt: number
}
export interface PongMessage {
  type: 'pong'
  /** The ping's nonce. */
  nonce: number
  /** The ping's `sentAt`, echoed: RTT = now - pingSentAt on the pinging side. */
  pingSentAt: number
  sentAt: number
}
export interface ByeMessage {
  type: 'bye'
  reason: ByeReason
  detail: string
}
export type Message = HelloMessage | TextMessage | AckMessage | PingMessage | PongMessage | ByeMessage
export type MessageType = Message['type']

/** Wire type codes. */
const TYPE_CODES: Readonly<Record<MessageType, number>> = { hello: 1, text: 2, ack: 3, ping: 4, pong: 5, bye: 6 }
const TYPE_BY_CODE = new Map<number, MessageType>(
  Object.entries(TYPE_CODES).map(([type, code]) => [code, type as MessageType]),
)
const BYE_REASONS: readonly ByeReason[] = ['done', 'shutdown', 'protocol-error', 'timeout']

/** One-line display fields: no C0/C1 controls or DEL (they could drive the peer's terminal). */
const LINE_CONTROL = /[\u0000-\u001f\u007f-\u009f]/
/** Text bodies may also hold TAB and LF. */
const BODY_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
const CAPABILITY = /^[a-z0-9][a-z0-9._-]*$/

/** A fresh random 128-bit message ID. `random` is injectable for tests. */
export function newMessageId(random: (length: number) => Uint8Array = randomBytes): Uint8Array {
  const id = random(MESSAGE_ID_LENGTH)
  assertBytes(id, 'random(16)', MESSAGE_ID_LENGTH)
  return id
}

// ---------------------------------------------------------------------------------------------- encoding

class Writer {
  readonly #parts: Uint8Array[] = []
  u8(n: number): void {
    this.#parts.push(Uint8Array.of(n))
  }
  u16(n: number): void {
    this.#parts.push(Uint8Array.of(n >>> 8, n & 0xff))
  }
  u32(n: number): void {
    this.#parts.push(Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff))
  }
  u64(n: number): void {
    this.u32(Math.floor(n / 2 ** 32))
    this.u32(n >>> 0)
  }
  bytes(b: Uint8Array): void {
    this.#parts.push(b)
  }
  finish(): Uint8Array {
    return concatBytes(...this.#parts)
  }
}

function checkInt(value: unknown, name: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer in 0..${max}`)
  }
  return value
}

/** Validates a string field and returns its UTF-8 bytes. */
function checkText(value: unknown, name: string, min: number, max: number, control: RegExp): Uint8Array {
  if (typeof value !== 'string') throw new InvalidArgumentError(`${name} must be a string`)
  if (LONE_SURROGATE.test(value)) throw new InvalidArgumentError(`${name} is not well-formed Unicode`)
  if (control.test(value)) throw new InvalidArgumentError(`${name} contains control characters`)
  const bytes = utf8(value)
  if (bytes.length < min || bytes.length > max) {
    throw new InvalidArgumentError(`${name} must be ${min}..${max} UTF-8 bytes, got ${bytes.length}`)
  }
  return bytes
}

function checkCapabilities(value: unknown): string[] {
  if (!Array.isArray(value) || value.length > MAX_CAPABILITIES) {
    throw new InvalidArgumentError(`capabilities must be an array of at most ${MAX_CAPABILITIES} tokens`)
  }
  const seen = new Set<string>()
  for (const cap of value) {
    if (typeof cap !== 'string' || cap.length > MAX_CAPABILITY_BYTES || !CAPABILITY.test(cap) || seen.has(cap)) {
      throw new InvalidArgumentError(`capabilities must be distinct tokens matching ${CAPABILITY} of at most ${MAX_CAPABILITY_BYTES} bytes`)
    }
    seen.add(cap)
  }
  return [...seen]
}

/** Encodes a message; throws InvalidArgumentError naming the first bad field. */
export function encodeMessage(m: Message): Uint8Array {
  if (typeof m !== 'object' || m === null) throw new InvalidArgumentError('message must be an object')
  const w = new Writer()
  w.u8(MESSAGE_VERSION)
  switch (m.type) {
    case 'hello': {
      const name = checkText(m.clientName, 'clientName', 1, MAX_CLIENT_NAME_BYTES, LINE_CONTROL)
      const version = checkText(m.clientVersion, 'clientVersion', 1, MAX_CLIENT_VERSION_BYTES, LINE_CONTROL)
      const caps = checkCapabilities(m.capabilities)
      w.u8(TYPE_CODES.hello)
      w.u8(name.length)
      w.bytes(name)
      w.u8(version.length)
      w.bytes(version)
      w.u8(caps.length)
      for (const cap of caps) {
        w.u8(cap.length)
        w.bytes(utf8(cap))
      }
      break
    }
    case 'text': {
      assertBytes(m.id, 'id', MESSAGE_ID_LENGTH)
      const body = checkText(m.body, 'body', 1, MAX_TEXT_BYTES, BODY_CONTROL)
      w.u8(TYPE_CODES.text)
      w.bytes(m.id)
      w.u32(checkInt(m.seq, 'seq', 0xffffffff))
      w.u64(checkInt(m.sentAt, 'sentAt', MAX_U64_NUMBER))
      w.u16(body.length)
      w.bytes(body)
      break
    }
    case 'ack': {
      if (!Array.isArray(m.ids) || m.ids.length < 1 || m.ids.length > MAX_ACK_IDS) {
        throw new InvalidArgumentError(`ids must be an array of 1..${MAX_ACK_IDS} message IDs`)
      }
      w.u8(TYPE_CODES.ack)
      w.u8(m.ids.length)
      m.ids.forEach((id, i) => {
        assertBytes(id, `ids[${i}]`, MESSAGE_ID_LENGTH)
        w.bytes(id)
      })
      break
    }
    case 'ping':
      w.u8(TYPE_CODES.ping)
      w.u32(checkInt(m.nonce, 'nonce', 0xffffffff))
      w.u64(checkInt(m.sentAt, 'sentAt', MAX_U64_NUMBER))
      break
    case 'pong':
      w.u8(TYPE_CODES.pong)
      w.u32(checkInt(m.nonce, 'nonce', 0xffffffff))
      w.u64(checkInt(m.pingSentAt, 'pingSentAt', MAX_U64_NUMBER))
      w.u64(checkInt(m.sentAt, 'sentAt', MAX_U64_NUMBER))
      break
    case 'bye': {
      const reason = BYE_REASONS.indexOf(m.reason)
      if (reason < 0) throw new InvalidArgumentError(`reason must be one of ${BYE_REASONS.join(', ')}`)
      const detail = checkText(m.detail, 'detail', 0, MAX_BYE_DETAIL_BYTES, LINE_CONTROL)
      w.u8(TYPE_CODES.bye)
      w.u8(reason)
      w.u8(detail.length)
      w.bytes(detail)
      break
    }
    default:
      throw new InvalidArgumentError(`unknown message type ${String((m as { type: unknown }).type)}`)
  }
  return w.finish()
}

// ---------------------------------------------------------------------------------------------- decoding

class Reader {
  #pos = 0
  constructor(readonly bytes: Uint8Array) {}

  #take(n: number, field: string): Uint8Array {
    if (this.#pos + n > this.bytes.length) throw new DecodeError('ERR_DECODE', `message truncated in ${field}`)
    const out = this.bytes.subarray(this.#pos, this.#pos + n)
    this.#pos += n
    return out
  }
  u8(field: string): number {
    return this.#take(1, field)[0]!
  }
  u16(field: string): number {
    const b = this.#take(2, field)
    return (b[0]! << 8) | b[1]!
  }
  u32(field: string): number {
    const b = this.#take(4, field)
    return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0
  }
  /** u64 restricted to exact JS integers (timestamps). */
  u64(field: string): number {
    const hi = this.u32(field)
    const lo = this.u32(field)
    const value = hi * 2 ** 32 + lo
    if (value > MAX_U64_NUMBER) throw new DecodeError('ERR_DECODE', `${field} is out of range`)
    return value
  }
  /** A fresh copy, so decoded IDs never alias the frame buffer. */
  copy(n: number, field: string): Uint8Array {
    return this.#take(n, field).slice()
  }
  /** A length-checked, well-formed, control-free string of `length` bytes. */
  text(length: number, field: string, min: number, max: number, control: RegExp): string {
    if (length > max) throw new DecodeError('ERR_TOO_LARGE', `${field} is ${length} bytes, at most ${max} allowed`)
    if (length < min) throw new DecodeError('ERR_DECODE', `${field} must be at least ${min} bytes`)
    const value = fromUtf8(this.#take(length, field))
    if (control.test(value)) throw new DecodeError('ERR_DECODE', `${field} contains control characters`)
    return value
  }
  end(): void {
    if (this.#pos !== this.bytes.length) {
      throw new DecodeError('ERR_DECODE', `${this.bytes.length - this.#pos} trailing bytes after the message`)
    }
  }
}

/** Decodes one message from a frame's plaintext. Hostile input only ever yields a DecodeError. */
export function decodeMessage(bytes: Uint8Array): Message {
  assertBytes(bytes, 'bytes')
  const r = new Reader(bytes)
  const version = r.u8('version')
  if (version !== MESSAGE_VERSION) {
    throw new DecodeError('ERR_UNSUPPORTED_VERSION', `message version ${version} is not supported (expected ${MESSAGE_VERSION})`)
  }
  const code = r.u8('type')
  const type = TYPE_BY_CODE.get(code)
  if (type === undefined) throw new DecodeError('ERR_UNKNOWN_MESSAGE_TYPE', `unknown message type ${code}`)
  const m = decodeBody(type, r)
  r.end()
  return m
}

function decodeBody(type: MessageType, r: Reader): Message {
  switch (type) {
    case 'hello': {
      const clientName = r.text(r.u8('clientName length'), 'clientName', 1, MAX_CLIENT_NAME_BYTES, LINE_CONTROL)
      const clientVersion = r.text(r.u8('clientVersion length'), 'clientVersion', 1, MAX_CLIENT_VERSION_BYTES, LINE_CONTROL)
      const count = r.u8('capability count')
      if (count > MAX_CAPABILITIES) throw new DecodeError('ERR_TOO_LARGE', `${count} capabilities, at most ${MAX_CAPABILITIES} allowed`)
      const capabilities: string[] = []
      for (let i = 0; i < count; i++) {
        const cap = r.text(r.u8('capability length'), 'capability', 1, MAX_CAPABILITY_BYTES, LINE_CONTROL)
        if (!CAPABILITY.test(cap) || capabilities.includes(cap)) {
          throw new DecodeError('ERR_DECODE', 'capabilities must be distinct lower-case tokens')
        }
        capabilities.push(cap)
      }
      return { type, clientName, clientVersion, capabilities }
    }
    case 'text': {
      const id = r.copy(MESSAGE_ID_LENGTH, 'id')
      const seq = r.u32('seq')
      const sentAt = r.u64('sentAt')
      const body = r.text(r.u16('body length'), 'body', 1, MAX_TEXT_BYTES, BODY_CONTROL)
      return { type, id, seq, sentAt, body }
    }
    case 'ack': {
      const count = r.u8('id count')
      if (count > MAX_ACK_IDS) throw new DecodeError('ERR_TOO_LARGE', `${count} acknowledged IDs, at most ${MAX_ACK_IDS} allowed`)
      if (count === 0) throw new DecodeError('ERR_DECODE', 'an ack must name at least one message ID')
      const ids: Uint8Array[] = []
      for (let i = 0; i < count; i++) ids.push(r.copy(MESSAGE_ID_LENGTH, 'ids'))
      return { type, ids }
    }
    case 'ping':
      return { type, nonce: r.u32('nonce'), sentAt: r.u64('sentAt') }
    case 'pong':
      return { type, nonce: r.u32('nonce'), pingSentAt: r.u64('pingSentAt'), sentAt: r.u64('sentAt') }
    case 'bye': {
      const code = r.u8('reason')
      const reason = BYE_REASONS[code]
      if (reason === undefined) throw new DecodeError('ERR_DECODE', `unknown bye reason ${code}`)
      const detail = r.text(r.u8('detail length'), 'detail', 0, MAX_BYE_DETAIL_BYTES, LINE_CONTROL)
      return { type, reason, detail }
    }
  }
}
