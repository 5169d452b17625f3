/**
 * Tor v3 onion addresses and onion service keys (docs/PROTOCOL.md "Onion addresses").
 *
 * Address encoding: rend-spec-v3 "Encoding onion addresses [ONIONADDRESS]":
 *   onion_address = base32(PUBKEY | CHECKSUM | VERSION) + ".onion"
 *   CHECKSUM = SHA3_256(".onion checksum" | PUBKEY | VERSION)[:2], VERSION = 0x03
 * Key blob: control-spec ADD_ONION "ED25519-V3:" + base64 (with padding) of tor's 64-byte expanded secret key.
 */
import { ed25519 } from '@noble/curves/ed25519.js'
import { bytesToNumberLE } from '@noble/curves/utils.js'
import { sha512 } from '@noble/hashes/sha2.js'
import { sha3_256 } from '@noble/hashes/sha3.js'
import { CryptoError, DecodeError } from '../errors.js'
import { assertBytes, concatBytes, equalBytes, fromBase64url, toBase64url, utf8 } from './bytes.js'

const ONION_VERSION = 3
const CHECKSUM_PREFIX = utf8('.onion checksum')
const SUFFIX = '.onion'
/** 35 bytes (key 32, checksum 2, version 1) = 280 bits = 56 base32 characters, no padding. */
const ONION_CHARS = 56
const ADDRESS_SYNTAX = /^([a-zA-Z2-7]{56})(\.[oO][nN][iI][oO][nN])?$/
const EXPANDED_KEY_BYTES = 64
const BLOB_PREFIX = 'ED25519-V3:'

const B32 = 'abcdefghijklmnopqrstuvwxyz234567'

/** RFC 4648 §6 base32, lowercase, for inputs whose bit length is a multiple of 5. */
function base32Encode(bytes: Uint8Array): string {
  let out = ''
  let acc = 0
  let bits = 0
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xfff
    bits += 8
    while (bits >= 5) {
      bits -= 5
      out += B32[(acc >> bits) & 31]
    }
  }
  return out
}

/** Inverse of base32Encode for text already checked against ADDRESS_SYNTAX (lowercased). */
function base32Decode(text: string): Uint8Array {
  const out = new Uint8Array((text.length * 5) >> 3)
  let acc = 0
  let bits = 0
  let o = 0
  for (let i = 0; i < text.length; i++) {
    acc = ((acc << 5) | B32.indexOf(text[i]!)) & 0xfff
    bits += 5
    if (bits >= 8) {
      bits -= 8
      out[o++] = (acc >> bits) & 0xff
    }
  }
  return out
}

function onionChecksum(pub: Uint8Array): Uint8Array {
  return sha3_256(concatBytes(CHECKSUM_PREFIX, pub, new Uint8Array([ONION_VERSION]))).subarray(0, 2)
}

function isUsableKey(pub: Uint8Array): boolean {
  try {
    return !ed25519.Point.fromBytes(pub, false).isSmallOrder()
  } catch {
    return false
  }
}

/** `<56 lowercase base32 chars>.onion` for a 32-byte Ed25519 public key. */
export function onionAddressFromPublicKey(pub: Uint8Array): string {
  assertBytes(pub, 'public key', 32)
  return base32Encode(concatBytes(pub, onionChecksum(pub), new Uint8Array([ONION_VERSION]))) + SUFFIX
}

/**
 * The service's Ed25519 public key. Accepts the address with or without ".onion", in any letter case;
 * checks syntax, version 3, the checksum and that the key is a usable Ed25519 point.
 */
export function publicKeyFromOnionAddress(addr: string): Uint8Array {
  const fail = (message: string): never => {
    throw new DecodeError('ERR_ONION_ADDRESS', message)
  }
  if (typeof addr !== 'string') return fail('onion address must be text')
  const m = addr.length <= ONION_CHARS + SUFFIX.length ? ADDRESS_SYNTAX.exec(addr) : null
  if (m === null) return fail(`onion address must be ${ONION_CHARS} base32 characters (a-z, 2-7), optionally followed by .onion`)
  const raw = base32Decode(m[1]!.toLowerCase())
  const pub = raw.subarray(0, 32)
  if (raw[34] !== ONION_VERSION) return fail(`onion address version ${raw[34]} is not supported (only v3)`)
  if (!equalBytes(raw.subarray(32, 34), onionChecksum(pub))) {
    return fail('onion address checksum mismatch — check for a typo')
  }
  if (!isUsableKey(pub)) return fail('onion address does not contain a valid Ed25519 public key')
  return pub.slice()
}

export function isValidOnionAddress(addr: unknown): boolean {
  if (typeof addr !== 'string') return false
  try {
    publicKeyFromOnionAddress(addr)
    return true
  } catch {
    return false
  }
}

/** The canonical form (lowercase, with ".onion") of any address publicKeyFromOnionAddress accepts. */
export function canonicalOnionAddress(addr: string): string {
  return onionAddressFromPublicKey(publicKeyFromOnionAddress(addr))
}

export interface OnionServiceKey {
  publicKey: Uint8Array
  /** tor's 64-byte expanded secret key: clamped scalar ‖ nonce prefix (RFC 8032 §5.1.5 steps 1-2). Secret. */
  expandedSecretKey: Uint8Array
  address: string
}

/** Expands a 32-byte Ed25519 seed into the key tor's ADD_ONION ED25519-V3 takes, plus its address. */
export function onionServiceKeyFromSeed(seed: Uint8Array): OnionServiceKey {
  assertBytes(seed, 'seed', 32)
  const expandedSecretKey = sha512(seed)
  // RFC 8032 §5.1.5 step 2: clear the low 3 bits and the top bit, set the second-highest bit.
  expandedSecretKey[0]! &= 248
  expandedSecretKey[31]! &= 127
  expandedSecretKey[31]! |= 64
  const publicKey = ed25519.getPublicKey(seed)
  return { publicKey, expandedSecretKey, address: onionAddressFromPublicKey(publicKey) }
}

function assertExpandedKey(key: unknown): asserts key is Uint8Array {
  assertBytes(key, 'expanded secret key', EXPANDED_KEY_BYTES)
  if ((key[0]! & 7) !== 0 || (key[31]! & 0xc0) !== 0x40) {
    throw new CryptoError('ERR_KEY_FORMAT', 'expanded secret key is not a clamped Ed25519 scalar')
  }
}

/** The public key for a 64-byte expanded secret key (A = s·B with s the clamped scalar). */
export function publicKeyFromExpandedSecretKey(expandedSecretKey: Uint8Array): Uint8Array {
  assertExpandedKey(expandedSecretKey)
  const s = bytesToNumberLE(expandedSecretKey.subarray(0, 32)) % ed25519.Point.CURVE().n
  return ed25519.Point.BASE.multiply(s).toBytes()
}

/** `ED25519-V3:<base64>` as ADD_ONION takes it (and as tor returns it for NEW:ED25519-V3). */
export function torOnionKeyBlob(expandedSecretKey: Uint8Array): string {
  assertExpandedKey(expandedSecretKey)
  const b64 = toBase64url(expandedSecretKey).replaceAll('-', '+').replaceAll('_', '/')
  return BLOB_PREFIX + b64 + '='.repeat((4 - (b64.length % 4)) % 4)
}

/** Inverse of torOnionKeyBlob: the 64-byte expanded secret key. Strict: one accepted spelling per key. */
export function parseTorOnionKeyBlob(blob: string): Uint8Array {
  if (typeof blob !== 'string' || !blob.startsWith(BLOB_PREFIX)) {
    throw new CryptoError('ERR_KEY_FORMAT', `onion key blob must start with ${BLOB_PREFIX}`)
  }
  const b64 = blob.slice(BLOB_PREFIX.length)
  // 64 bytes = 86 base64 characters + "==".
  if (b64.length !== 88 || !/^[A-Za-z0-9+/]{86}==$/.test(b64)) {
    throw new CryptoError('ERR_KEY_FORMAT', 'onion key blob must hold 64 bytes of padded standard base64')
  }
  let key: Uint8Array
  try {
    key = fromBase64url(b64.slice(0, 86).replaceAll('+', '-').replaceAll('/', '_'), EXPANDED_KEY_BYTES)
  } catch (cause) {
    throw new CryptoError('ERR_KEY_FORMAT', 'onion key blob is not canonical base64', { cause })
  }
  assertExpandedKey(key)
  return key
}
