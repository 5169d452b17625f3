/**
 * Signed directory records (docs/PROTOCOL.md "Directory records"): what a peer publishes so others can find
 * its onion service and Noise key from its peer ID. Self-certifying: the record carries the identity key, the
 * peer ID is derived from it, and the identity key signs a canonical byte encoding of every other field.
 */
import { InvalidArgumentError } from '../errors.js'
import { assertBytes, concatBytes, fromBase64url, toBase64url, utf8, wipe } from './bytes.js'
import {
  identityFromSeed,
  isCanonicalPeerId,
  isValidIdentityKey,
  parsePeerId,
  peerIdFromIdentityKey,
  signWithIdentity,
  verifySignature,
} from './identity.js'
import { canonicalOnionAddress, onionAddressFromPublicKey, publicKeyFromOnionAddress } from './onion.js'

export const RECORD_VERSION = 1
/** A valid record serializes to about 330 bytes; the limit leaves room without inviting abuse. */
export const MAX_RECORD_BYTES = 2048
export const MAX_RECORD_LIFETIME_MS = 7 * 24 * 3600 * 1000

export interface DirectoryRecord {
  v: 1
  /** Peer ID (canonical form), derived from identityKey. */
  id: string
  /** base64url, 32-byte Ed25519 public key. */
  identityKey: string
  /** '<56>.onion', canonical lowercase. */
  onion: string
  /** base64url, 32-byte X25519 public key. */
  noiseKey: string
  /** Non-negative safe integer, strictly increasing per id. */
  seq: number
  /** Unix time in seconds. */
  expires: number
  /** base64url Ed25519 signature over recordSigningBytes(all other fields). */
  sig: string
}

export interface CreateRecordParams {
  identitySeed: Uint8Array
  onion: string
  noiseKey: Uint8Array
  seq: number
  expires: number
}

export type RecordRejectReason =
  | 'malformed'
  | 'too_large'
  | 'unsupported_version'
  | 'bad_signature'
  | 'id_mismatch'
  | 'expired'
  | 'expiry_too_far'

export interface VerifiedRecord {
  record: DirectoryRecord
  identityKey: Uint8Array
  noiseKey: Uint8Array
  onionPublicKey: Uint8Array
}

export type VerifyResult = ({ ok: true } & VerifiedRecord) | { ok: false; reason: RecordRejectReason; message: string }

/** Field order of the JSON form and of the signed encoding. */
const FIELDS = ['v', 'id', 'identityKey', 'onion', 'noiseKey', 'seq', 'expires', 'sig'] as const
type Field = (typeof FIELDS)[number]
const SIGNING_DOMAIN = utf8('p2pmess-record-v1\0')

function u16(n: number): Uint8Array {
  return new Uint8Array([n >>> 8, n & 0xff])
}

/** 8-byte big-endian encoding of a safe non-negative integer. */
function u64(n: number): Uint8Array {
  const hi = Math.floor(n / 2 ** 32)
  const lo = n % 2 ** 32
  return new Uint8Array([hi >>> 24, (hi >>> 16) & 0xff, (hi >>> 8) & 0xff, hi & 0xff, lo >>> 24, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff])
}

/**
 * The bytes the identity key signs: domain ‖ field(v) ‖ field(id) ‖ field(identityKey) ‖ field(onion) ‖
 * field(noiseKey) ‖ field(seq) ‖ field(expires), each field = u16 big-endian length ‖ value, where v is one
 * byte, id and onion are their ASCII text, the keys are their raw 32 bytes, seq and expires are u64 big-endian.
 */
function recordSigningBytes(f: { id: string; identityKey: Uint8Array; onion: string; noiseKey: Uint8Array; seq: number; expires: number }): Uint8Array {
  const parts = [new Uint8Array([RECORD_VERSION]), utf8(f.id), f.identityKey, utf8(f.onion), f.noiseKey, u64(f.seq), u64(f.expires)]
  return concatBytes(SIGNING_DOMAIN, ...parts.flatMap((p) => [u16(p.length), p]))
}

function isSeq(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0
}

function isExpires(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0
}

export function createRecord(p: CreateRecordParams): DirectoryRecord {
  if (typeof p !== 'object' || p === null) throw new InvalidArgumentError('record parameters must be an object')
  assertBytes(p.identitySeed, 'identitySeed', 32)
  assertBytes(p.noiseKey, 'noiseKey', 32)
  if (!isSeq(p.seq)) throw new InvalidArgumentError('seq must be a non-negative safe integer')
  if (!isExpires(p.expires)) throw new InvalidArgumentError('expires must be a positive integer (Unix seconds)')
  const onion = canonicalOnionAddress(p.onion)
  const identity = identityFromSeed(p.identitySeed)
  const fields = {
    id: peerIdFromIdentityKey(identity.publicKey),
    identityKey: identity.publicKey,
    onion,
    noiseKey: p.noiseKey,
    seq: p.seq,
    expires: p.expires,
  }
  const sig = signWithIdentity(identity.seed, recordSigningBytes(fields))
  wipe(identity.seed)
  return {
    v: RECORD_VERSION,
    id: fields.id,
    identityKey: toBase64url(identity.publicKey),
    onion,
    noiseKey: toBase64url(p.noiseKey),
    seq: p.seq,
    expires: p.expires,
    sig: toBase64url(sig),
  }
}

/** Canonical JSON text: the fields in FIELDS order, no whitespace. */
export function serializeRecord(r: DirectoryRecord): string {
  return JSON.stringify({
    v: r.v,
    id: r.id,
    identityKey: r.identityKey,
    onion: r.onion,
    noiseKey: r.noiseKey,
    seq: r.seq,
    expires: r.expires,
    sig: r.sig,
  })
}

/** Newer means a strictly greater seq; both records must be for the same peer. */
export function isNewerRecord(candidate: DirectoryRecord, current: DirectoryRecord | undefined): boolean {
  if (current === undefined) return true
  if (candidate.id !== current.id) throw new InvalidArgumentError('isNewerRecord compares records of one peer ID')
  return candidate.seq > current.seq
}

type Reject = { ok: false; reason: RecordRejectReason; message: string }
const reject = (reason: RecordRejectReason, message: string): Reject => ({ ok: false, reason, message })

/**
 * Reads the own data properties of a plain object, without running getters or trusting the prototype.
 * Returns undefined for anything else (arrays, class instances, proxies' odd answers are caught by the caller).
 */
function ownDataProperties(value: unknown): Map<string, unknown> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const proto: unknown = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return undefined
  const keys = Reflect.ownKeys(value)
  if (keys.length > FIELDS.length) return undefined
  const props = new Map<string, unknown>()
  for (const key of keys) {
    const d = Reflect.getOwnPropertyDescriptor(value, key)
    if (typeof key !== 'string' || d === undefined || !('value' in d)) return undefined
    props.set(key, d.value)
  }
  return props
}

function decodeKey(text: unknown): Uint8Array | undefined {
  if (typeof text !== 'string' || text.length !== 43) return undefined
  try {
    return fromBase64url(text, 32)
  } catch {
    return undefined
  }
}

function verifyUnsafe(input: unknown, options: { now: number; expectedId?: string }): VerifyResult {
  const { now, expectedId } = options
  if (typeof now !== 'number' || !Number.isFinite(now)) return reject('malformed', 'options.now must be a finite Unix time in ms')
  let value = input
  if (typeof input === 'string') {
    if (input.length > MAX_RECORD_BYTES || utf8(input).length > MAX_RECORD_BYTES) {
      return reject('too_large', `record is larger than ${MAX_RECORD_BYTES} bytes`)
    }
    try {
      value = JSON.parse(input)
    } catch {
      return reject('malformed', 'record is not valid JSON')
    }
  }
  const props = ownDataProperties(value)
  if (props === undefined) return reject('malformed', 'record must be a JSON object with the record fields only')
  const v = props.get('v')
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v !== RECORD_VERSION) {
    return reject('unsupported_version', `record version ${v} is not supported (only ${RECORD_VERSION})`)
  }
  for (const key of props.keys()) {
    if (!(FIELDS as readonly string[]).includes(key)) return reject('malformed', `record has an unknown field ${JSON.stringify(key.slice(0, 32))}`)
  }
  const r: Partial<Record<Field, unknown>> = {}
  for (const key of FIELDS) {
    if (!props.has(key)) return reject('malformed', `record is missing the field ${key}`)
    const x = props.get(key)
    if (typeof x !== 'string' && typeof x !== 'number') return reject('malformed', `record field ${key} must be a string or number`)
    r[key] = x
  }
  // Every value is now a string or number, so this cannot recurse or throw.
  if (utf8(JSON.stringify(r)).length > MAX_RECORD_BYTES) return reject('too_large', `record is larger than ${MAX_RECORD_BYTES} bytes`)
  if (r.v !== RECORD_VERSION) return reject('malformed', `record field v must be ${RECORD_VERSION}`)
  if (!isCanonicalPeerId(r.id)) return reject('malformed', 'record field id is not a canonical peer ID')
  const identityKeyText = r.identityKey
  const identityKey = decodeKey(identityKeyText)
  if (typeof identityKeyText !== 'string' || identityKey === undefined || !isValidIdentityKey(identityKey)) {
    return reject('malformed', 'record field identityKey is not a canonical base64url Ed25519 public key')
  }
  if (typeof r.onion !== 'string' || r.onion.length !== 62) return reject('malformed', 'record field onion is not a v3 onion address')
  let onionPublicKey: Uint8Array
  try {
    onionPublicKey = publicKeyFromOnionAddress(r.onion)
  } catch {
    return reject('malformed', 'record field onion is not a valid v3 onion address')
  }
  if (onionAddressFromPublicKey(onionPublicKey) !== r.onion) return reject('malformed', 'record field onion is not in canonical lowercase form')
  const noiseKeyText = r.noiseKey
  const noiseKey = decodeKey(noiseKeyText)
  if (typeof noiseKeyText !== 'string' || noiseKey === undefined) return reject('malformed', 'record field noiseKey is not a canonical base64url 32-byte key')
  if (!isSeq(r.seq)) return reject('malformed', 'record field seq must be a non-negative safe integer')
  if (!isExpires(r.expires)) return reject('malformed', 'record field expires must be a positive integer (Unix seconds)')
  if (typeof r.sig !== 'string' || r.sig.length !== 86) return reject('malformed', 'record field sig is not a base64url 64-byte signature')
  let sig: Uint8Array
  try {
    sig = fromBase64url(r.sig, 64)
  } catch {
    return reject('malformed', 'record field sig is not canonical base64url')
  }

  if (r.id !== peerIdFromIdentityKey(identityKey)) return reject('id_mismatch', 'record id is not the peer ID of its identity key')
  if (expectedId !== undefined) {
    let expected: string
    try {
      expected = parsePeerId(expectedId)
    } catch {
      return reject('id_mismatch', 'the expected peer ID is not a valid peer ID')
    }
    if (r.id !== expected) return reject('id_mismatch', 'record is for a different peer ID than requested')
  }
  const expiresMs = r.expires * 1000
  if (expiresMs <= now) return reject('expired', 'record has expired')
  if (expiresMs > now + MAX_RECORD_LIFETIME_MS) {
    return reject('expiry_too_far', `record expires more than ${MAX_RECORD_LIFETIME_MS / 86_400_000} days from now`)
  }
  const record: DirectoryRecord = {
    v: RECORD_VERSION,
    id: r.id,
    identityKey: identityKeyText,
    onion: r.onion,
    noiseKey: noiseKeyText,
    seq: r.seq,
    expires: r.expires,
    sig: r.sig,
  }
  if (!verifySignature(sig, recordSigningBytes({ ...record, identityKey, noiseKey }), identityKey)) {
    return reject('bad_signature', 'record signature does not verify')
  }
  return { ok: true, record, identityKey, noiseKey, onionPublicKey }
}

/**
 * Checks a record received from outside: the parsed JSON value or its raw text. Never throws. Checks run
 * cheapest first (size, shape, field syntax, id, expiry) and the signature last; see PROTOCOL.md.
 */
export function verifyRecord(input: unknown, options: { now: number; expectedId?: string }): VerifyResult {
  try {
    if (typeof options !== 'object' || options === null) return reject('malformed', 'options must be an object')
    return verifyUnsafe(input, options)
  } catch {
    // Only exotic in-process values (e.g. a Proxy whose traps throw) can get here.
    return reject('malformed', 'record could not be read')
  }
}
