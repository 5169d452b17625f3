/**
 * Identities, peer IDs and safety numbers (docs/PROTOCOL.md "Identities and peer IDs").
 *
 * An identity is an Ed25519 key pair whose secret is the 32-byte RFC 8032 seed. A peer ID is a short,
 * self-certifying name for an identity public key: 130 bits of a domain-separated BLAKE2b hash of the key,
 * written in Crockford base32 with two Reed-Solomon check symbols, grouped 4 by 4.
 */
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { blake2b } from '@noble/hashes/blake2.js'
import { CryptoError, DecodeError } from '../errors.js'
import { assertBytes, concatBytes, utf8 } from './bytes.js'

export const IDENTITY_SEED_BYTES = 32
export const PUBLIC_KEY_BYTES = 32
export const SIGNATURE_BYTES = 64

export interface Identity {
  /** 32-byte Ed25519 seed (RFC 8032 §5.1.5 private key). Secret. */
  seed: Uint8Array
  publicKey: Uint8Array
}

export interface NoiseKeyPair {
  /** 32-byte X25519 secret key. Secret. */
  secretKey: Uint8Array
  publicKey: Uint8Array
}

export function generateIdentity(): Identity {
  const { secretKey, publicKey } = ed25519.keygen()
  return { seed: secretKey, publicKey }
}

export function identityFromSeed(seed: Uint8Array): Identity {
  assertBytes(seed, 'seed', IDENTITY_SEED_BYTES)
  return { seed: seed.slice(), publicKey: ed25519.getPublicKey(seed) }
}

/** X25519 key pair for a device's Noise static key. */
export function generateNoiseKeyPair(): NoiseKeyPair {
  const { secretKey, publicKey } = x25519.keygen()
  return { secretKey, publicKey }
}

/**
 * True for a canonically encoded Ed25519 point that is not of small order. Small-order keys are rejected
 * because anyone can forge signatures that verify under them.
 */
export function isValidIdentityKey(pub: unknown): pub is Uint8Array {
  if (!(pub instanceof Uint8Array) || pub.length !== PUBLIC_KEY_BYTES) return false
  try {
    return !ed25519.Point.fromBytes(pub, false).isSmallOrder()
  } catch {
    return false
  }
}

function assertIdentityKey(pub: unknown, name: string): asserts pub is Uint8Array {
  assertBytes(pub, name, PUBLIC_KEY_BYTES)
  if (!isValidIdentityKey(pub)) throw new CryptoError('ERR_KEY_FORMAT', `${name} is not a valid Ed25519 public key`)
}

export function signWithIdentity(seed: Uint8Array, message: Uint8Array): Uint8Array {
  assertBytes(seed, 'seed', IDENTITY_SEED_BYTES)
  assertBytes(message, 'message')
  return ed25519.sign(message, seed)
}

/**
 * Strict RFC 8032 verification (canonical R, A and S < L; no ZIP-215 leniency), so a signature has one
 * accepted encoding. Returns false, never throws, on any malformed or hostile argument.
 */
export function verifySignature(sig: unknown, message: unknown, pub: unknown): boolean {
  if (!(sig instanceof Uint8Array) || sig.length !== SIGNATURE_BYTES) return false
  if (!(message instanceof Uint8Array) || !isValidIdentityKey(pub)) return false
  try {
    return ed25519.verify(sig, message, pub, { zip215: false })
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------------------------------------
// Peer IDs

/** Crockford base32 (https://www.crockford.com/base32.html), lowercase: no i, l, o, u. */
const CROCKFORD = '0123456789abcdefghjkmnpqrstvwxyz'
const CROCKFORD_INDEX = new Int8Array(128).fill(-1)
for (let i = 0; i < 32; i++) {
  CROCKFORD_INDEX[CROCKFORD.charCodeAt(i)] = i
  CROCKFORD_INDEX[CROCKFORD.toUpperCase().charCodeAt(i)] = i
}
// Crockford's decoding aliases: the letters people confuse with digits read as those digits.
for (const [alias, digit] of [['o', 0], ['O', 0], ['i', 1], ['I', 1], ['l', 1], ['L', 1]] as const) {
  CROCKFORD_INDEX[alias.charCodeAt(0)] = digit
}

const PEER_ID_DOMAIN = utf8('p2pmess peer-id v1\0')
/** 26 symbols × 5 bits = 130 hash bits. */
const PEER_ID_HASH_SYMBOLS = 26
const PEER_ID_CHECK_SYMBOLS = 2
export const PEER_ID_SYMBOLS = PEER_ID_HASH_SYMBOLS + PEER_ID_CHECK_SYMBOLS
const PEER_ID_GROUP = 4
/** Canonical text length: 7 groups of 4 joined by '-'. */
export const PEER_ID_LENGTH = PEER_ID_SYMBOLS + PEER_ID_SYMBOLS / PEER_ID_GROUP - 1
/** Anything longer than this is not a mistyped peer ID, and is not worth scanning. */
const PEER_ID_MAX_INPUT = 128
const CANONICAL_PEER_ID = /^[0-9a-hjkmnp-tv-z]{4}(?:-[0-9a-hjkmnp-tv-z]{4}){6}$/

// GF(32) = GF(2)[x] / (x^5 + x^2 + 1); α = x is primitive, so α^i for i < 31 lists every non-zero element.
const GF_EXP = new Uint8Array(62)
const GF_LOG = new Uint8Array(32)
for (let i = 0, v = 1; i < 31; i++) {
  GF_EXP[i] = GF_EXP[i + 31] = v
  GF_LOG[v] = i
  v <<= 1
  if (v & 32) v ^= 0b100101
}
function gfMul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : GF_EXP[GF_LOG[a]! + GF_LOG[b]!]!
}
// Generator g(x) = (x - α)(x - α²) = x² + (α + α²)x + α³.
const G1 = GF_EXP[1]! ^ GF_EXP[2]!
const G0 = GF_EXP[3]!

/**
 * Two Reed-Solomon check symbols over GF(32): the remainder of data(x)·x² mod g(x). The code has minimum
 * distance 3 for lengths up to 31, so any change to at most two symbols — every single substitution and
 * every transposition — is detected.
 */
function rsCheckSymbols(data: ArrayLike<number>): [number, number] {
  let r1 = 0
  let r0 = 0
  for (let i = 0; i < data.length; i++) {
    const f = data[i]! ^ r1
    r1 = r0 ^ gfMul(f, G1)
    r0 = gfMul(f, G0)
  }
  return [r1, r0]
}

/** A codeword is valid iff it vanishes at both roots of g: c(α) = c(α²) = 0. */
function rsValid(code: ArrayLike<number>): boolean {
  let s1 = 0
  let s2 = 0
  for (let i = 0; i < code.length; i++) {
    s1 = gfMul(s1, GF_EXP[1]!) ^ code[i]!
    s2 = gfMul(s2, GF_EXP[2]!) ^ code[i]!
  }
  return s1 === 0 && s2 === 0
}

function formatPeerId(symbols: ArrayLike<number>): string {
  let out = ''
  for (let i = 0; i < symbols.length; i++) {
    if (i > 0 && i % PEER_ID_GROUP === 0) out += '-'
    out += CROCKFORD[symbols[i]!]
  }
  return out
}

/** The canonical peer ID of an identity public key, e.g. `7k2q-…-x9md` (7 groups of 4). */
export function peerIdFromIdentityKey(pub: Uint8Array): string {
  assertIdentityKey(pub, 'identity key')
  const hash = blake2b(concatBytes(PEER_ID_DOMAIN, pub), { dkLen: 32 })
  const symbols: number[] = []
  // Big-endian bit order: symbol i is hash bits 5i .. 5i+4, counting from the top bit of byte 0.
  for (let i = 0; i < PEER_ID_HASH_SYMBOLS; i++) {
    const bit = i * 5
    const word = (hash[bit >> 3]! << 8) | hash[(bit >> 3) + 1]!
    symbols.push((word >> (11 - (bit & 7))) & 31)
  }
  symbols.push(...rsCheckSymbols(symbols))
  return formatPeerId(symbols)
}

/**
 * Parses a peer ID as a person typed it: ignores case, spaces and '-', reads o as 0 and i/l as 1
 * (Crockford), rejects anything else. Returns the canonical form.
 */
export function parsePeerId(text: string): string {
  if (typeof text !== 'string') throw new DecodeError('ERR_PEER_ID_FORMAT', 'peer ID must be text')
  if (text.length > PEER_ID_MAX_INPUT) throw new DecodeError('ERR_PEER_ID_FORMAT', 'peer ID is far too long')
  const symbols: number[] = []
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x2d || c === 0x20 || c === 0x09) continue
    const v = c < 128 ? CROCKFORD_INDEX[c]! : -1
    if (v < 0) {
      const shown = c >= 0x21 && c < 0x7f ? `'${text[i]}'` : `U+${c.toString(16).toUpperCase().padStart(4, '0')}`
      throw new DecodeError('ERR_PEER_ID_FORMAT', `peer ID contains ${shown}, which is not a valid character`)
    }
    symbols.push(v)
  }
  if (symbols.length !== PEER_ID_SYMBOLS) {
    throw new DecodeError(
      'ERR_PEER_ID_FORMAT',
      `peer ID must have ${PEER_ID_SYMBOLS} letters and digits, got ${symbols.length}`,
    )
  }
  if (!rsValid(symbols)) throw new DecodeError('ERR_PEER_ID_CHECKSUM', 'peer ID checksum mismatch — check for a typo')
  return formatPeerId(symbols)
}

/** True iff `peerId` is exactly the canonical form (what records carry). */
export function isCanonicalPeerId(peerId: unknown): peerId is string {
  if (typeof peerId !== 'string' || !CANONICAL_PEER_ID.test(peerId)) return false
  try {
    return parsePeerId(peerId) === peerId
  } catch {
    return false
  }
}

/** True iff `peerId` (in any form parsePeerId accepts) names `pub`. Never throws. */
export function peerIdMatchesKey(peerId: unknown, pub: unknown): boolean {
  if (typeof peerId !== 'string' || !isValidIdentityKey(pub)) return false
  try {
    return parsePeerId(peerId) === peerIdFromIdentityKey(pub)
  } catch {
    return false
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fingerprints and safety numbers

const FINGERPRINT_DOMAIN = utf8('p2pmess fingerprint v1\0')
const FINGERPRINT_GROUPS = 6

/**
 * 30 decimal digits (6 groups of 5) for one identity key: each group is a 40-bit big-endian chunk of
 * BLAKE2b(domain ‖ key) reduced mod 100000 (bias < 2^-23).
 */
export function fingerprint(pub: Uint8Array): string {
  assertIdentityKey(pub, 'identity key')
  const hash = blake2b(concatBytes(FINGERPRINT_DOMAIN, pub), { dkLen: FINGERPRINT_GROUPS * 5 })
  const groups: string[] = []
  for (let g = 0; g < FINGERPRINT_GROUPS; g++) {
    let n = 0
    for (let j = 0; j < 5; j++) n = n * 256 + hash[g * 5 + j]!
    groups.push(String(n % 100000).padStart(5, '0'))
  }
  return groups.join(' ')
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length && i < b.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return a.length - b.length
}

/**
 * The safety number two people compare to rule out a man in the middle: 60 digits in 12 groups of 5, the
 * fingerprints of both keys in byte order of the keys, so both sides compute the same string.
 */
export function safetyNumber(keyA: Uint8Array, keyB: Uint8Array): string {
  assertIdentityKey(keyA, 'keyA')
  assertIdentityKey(keyB, 'keyB')
  const [first, second] = compareBytes(keyA, keyB) <= 0 ? [keyA, keyB] : [keyB, keyA]
  return `${fingerprint(first)} ${fingerprint(second)}`
}
