/**
 * The Noise Protocol Framework, revision 34 (https://noiseprotocol.org/noise.html), for
 * `Noise_<PATTERN>_25519_ChaChaPoly_<BLAKE2s|BLAKE2b|SHA256>` with the fundamental patterns of §7.4/§7.5.
 *
 * Layers follow the spec: crypto functions (§4, §12) → CipherState (§5.1) → SymmetricState (§5.2) →
 * HandshakeState (§5.3). Patterns are a data table walked by one generic writer and one generic reader.
 * Failures never corrupt state: a handshake message either applies completely or not at all, and a failed
 * decrypt does not advance the nonce.
 */
import { x25519 } from '@noble/curves/ed25519.js'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { blake2b, blake2s } from '@noble/hashes/blake2.js'
import { hmac } from '@noble/hashes/hmac.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { CryptoError, InvalidArgumentError } from '../errors.js'
import { assertBytes, concatBytes, utf8, wipe } from './bytes.js'

/** §3: every Noise message, handshake or transport, is at most 65535 bytes. */
export const MAX_MESSAGE_LENGTH = 65535
/** §4.1 DHLEN for 25519 and §4.2 tag length of ChaChaPoly. */
const DHLEN = 32
const TAGLEN = 16
/** §5.1: nonce 2^64-1 is reserved (used only by REKEY). */
const MAX_NONCE = (1n << 64n) - 1n

// ---------------------------------------------------------------------------------------------------------
// Crypto functions (§4, §12)

/** §4.3 / §12.5, §12.7, §12.8: HASH plus HMAC over it (noble's HMAC uses the hash's own BLOCKLEN). */
interface HashFunction {
  readonly name: 'BLAKE2s' | 'BLAKE2b' | 'SHA256'
  readonly hashLen: 32 | 64
  hash(data: Uint8Array): Uint8Array
  mac(key: Uint8Array, data: Uint8Array): Uint8Array
}

const HASHES: Readonly<Record<string, HashFunction>> = {
  BLAKE2s: { name: 'BLAKE2s', hashLen: 32, hash: (d) => blake2s(d), mac: (k, d) => hmac(blake2s, k, d) },
  BLAKE2b: { name: 'BLAKE2b', hashLen: 64, hash: (d) => blake2b(d), mac: (k, d) => hmac(blake2b, k, d) },
  SHA256: { name: 'SHA256', hashLen: 32, hash: (d) => sha256(d), mac: (k, d) => hmac(sha256, k, d) },
}

/** §4.3 HKDF(chaining_key, input_key_material, num_outputs) with num_outputs = 2. */
function hkdf2(h: HashFunction, ck: Uint8Array, ikm: Uint8Array): [Uint8Array, Uint8Array] {
  const tempKey = h.mac(ck, ikm)
  const out1 = h.mac(tempKey, Uint8Array.of(0x01))
  const out2 = h.mac(tempKey, concatBytes(out1, Uint8Array.of(0x02)))
  wipe(tempKey)
  return [out1, out2]
}

/** §12.3: 96-bit nonce = 32 bits of zeros followed by the little-endian 64-bit n. */
function chachaNonce(n: bigint): Uint8Array {
  const nonce = new Uint8Array(12)
  new DataView(nonce.buffer).setBigUint64(4, n, true)
  return nonce
}

/** The error both DH backends give for an all-zero shared secret (a low-order remote public key, §12.1). */
export function lowOrderKeyError(cause?: unknown): CryptoError {
  return new CryptoError('ERR_LOW_ORDER_KEY', 'remote X25519 public key is of low order (all-zero shared secret)', { cause })
}

/**
 * A 25519 key pair (§4.1) whose private half stays inside its backend: the handshake only ever asks it for DH.
 * So a backend may keep the private key as bytes (noble, wiped on destroy) or as a native key object.
 */
export interface DhKeyPair {
  readonly publicKey: Uint8Array
  /** §4.1 DH(key_pair, public_key): 32 bytes; CryptoError ERR_LOW_ORDER_KEY for an all-zero result. */
  dh(publicKey: Uint8Array): Uint8Array
  /** Forgets the private key; dh() fails afterwards (ERR_NOISE_STATE). */
  destroy(): void
}

/**
 * Where X25519 (RFC 7748) runs. Both backends compute the same function — the pure-JS default here, and
 * node:crypto (src/crypto/node-dh.ts) for the client, where OpenSSL's X25519 takes ~0.15 ms instead of ~1 ms;
 * test/node-dh.test.ts checks they agree on every input, low-order keys included.
 */
export interface DhBackend {
  readonly name: string
  /** §4.1 GENERATE_KEYPAIR(). */
  generate(): DhKeyPair
  /** The key pair of a 32-byte private key (the bytes are copied, not kept). */
  fromPrivateKey(privateKey: Uint8Array): DhKeyPair
}

function nobleKeyPair(privateKey: Uint8Array): DhKeyPair {
  let secret: Uint8Array | undefined = privateKey.slice()
  return {
    publicKey: x25519.getPublicKey(secret),
    dh(publicKey) {
      assertBytes(publicKey, 'publicKey', DHLEN)
      if (secret === undefined) throw new CryptoError('ERR_NOISE_STATE', 'the key pair was destroyed')
      try {
        return x25519.getSharedSecret(secret, publicKey)
      } catch (cause) {
        // noble throws only for an all-zero shared secret once lengths are valid.
        throw lowOrderKeyError(cause)
      }
    },
    destroy() {
      wipe(secret)
      secret = undefined
    },
  }
}

/** The pure-JS backend (noble): the default of every handshake. */
export const NOBLE_DH: DhBackend = {
  name: 'noble',
  generate() {
    const privateKey = x25519.utils.randomSecretKey()
    const pair = nobleKeyPair(privateKey)
    wipe(privateKey)
    return pair
  },
  fromPrivateKey(privateKey) {
    assertBytes(privateKey, 'privateKey', DHLEN)
    return nobleKeyPair(privateKey)
  },
}

/** True for an object shaped like a DhKeyPair (a 32-byte public key and the two methods). */
function isDhKeyPair(value: unknown): value is DhKeyPair {
  if (typeof value !== 'object' || value === null) return false
  const { publicKey, dh, destroy } = value as Record<string, unknown>
  return publicKey instanceof Uint8Array && publicKey.length === DHLEN && typeof dh === 'function' && typeof destroy === 'function'
}

/** Derives the X25519 public key of a 32-byte private key (§12.1). */
export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  assertBytes(privateKey, 'privateKey', DHLEN)
  return x25519.getPublicKey(privateKey)
}

/** §4.1 GENERATE_KEYPAIR() for 25519, as bytes (for keys that are stored). */
export function generateKeyPair(): { privateKey: Uint8Array; publicKey: Uint8Array } {
  const privateKey = x25519.utils.randomSecretKey()
  return { privateKey, publicKey: x25519.getPublicKey(privateKey) }
}

// ---------------------------------------------------------------------------------------------------------
// CipherState (§5.1)

export interface CipherState {
  encrypt(plaintext: Uint8Array, ad?: Uint8Array): Uint8Array
  /** Throws CryptoError 'ERR_NOISE_DECRYPT' on a bad tag; the nonce is not advanced then. */
  decrypt(ciphertext: Uint8Array, ad?: Uint8Array): Uint8Array
  rekey(): void
}

const EMPTY = new Uint8Array(0)

/** §7.4: after a one-way handshake the second CipherState of Split() is discarded; these refuse all use. */
const DISCARDED = new WeakSet<NoiseCipherState>()

function assertUsable(cs: NoiseCipherState): void {
  if (DISCARDED.has(cs)) {
    throw new CryptoError('ERR_NOISE_STATE', 'one-way pattern: only the initiator may send transport messages (§7.4)')
  }
}

/** §5.1 CipherState: key k (or none) and 64-bit nonce n. */
export class NoiseCipherState implements CipherState {
  #k: Uint8Array | undefined
  #n = 0n

  /** A keyed CipherState with n = 0 (as Split() produces). `key` is copied. */
  static fromKey(key: Uint8Array): NoiseCipherState {
    assertBytes(key, 'key', 32)
    const cs = new NoiseCipherState()
    cs.initializeKey(key.slice())
    return cs
  }

  /** §5.1 InitializeKey(key); takes ownership of `key`. */
  initializeKey(key: Uint8Array | undefined): void {
    wipe(this.#k)
    this.#k = key
    this.#n = 0n
  }

  hasKey(): boolean {
    return this.#k !== undefined
  }

  get nonce(): bigint {
    return this.#n
  }

  /**
   * §5.1 SetNonce(nonce). Meant for tests and for transports with out-of-order delivery; reusing a nonce
   * with the same key breaks confidentiality.
   */
  setNonce(nonce: bigint): void {
    if (typeof nonce !== 'bigint' || nonce < 0n || nonce > MAX_NONCE) {
      throw new InvalidArgumentError('nonce must be a bigint in [0, 2^64-1]')
    }
    this.#n = nonce
  }

  /** §5.1 EncryptWithAd(ad, plaintext); without a key, returns a copy of the plaintext. */
  encrypt(plaintext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    assertBytes(plaintext, 'plaintext')
    assertBytes(ad, 'ad')
    assertUsable(this)
    if (this.#k === undefined) return plaintext.slice()
    if (plaintext.length + TAGLEN > MAX_MESSAGE_LENGTH) {
      throw new CryptoError('ERR_NOISE_MESSAGE', `ciphertext would exceed ${MAX_MESSAGE_LENGTH} bytes`)
    }
    this.#checkNonce()
    const out = chacha20poly1305(this.#k, chachaNonce(this.#n), ad).encrypt(plaintext)
    this.#n++
    return out
  }

  /** §5.1 DecryptWithAd(ad, ciphertext); without a key, returns a copy of the ciphertext. */
  decrypt(ciphertext: Uint8Array, ad: Uint8Array = EMPTY): Uint8Array {
    assertBytes(ciphertext, 'ciphertext')
    assertBytes(ad, 'ad')
    assertUsable(this)
    if (this.#k === undefined) return ciphertext.slice()
    if (ciphertext.length < TAGLEN || ciphertext.length > MAX_MESSAGE_LENGTH) {
      throw new CryptoError('ERR_NOISE_MESSAGE', `ciphertext must be ${TAGLEN}..${MAX_MESSAGE_LENGTH} bytes, got ${ciphertext.length}`)
    }
    this.#checkNonce()
    let out: Uint8Array
    try {
      out = chacha20poly1305(this.#k, chachaNonce(this.#n), ad).decrypt(ciphertext)
    } catch (cause) {
      throw new CryptoError('ERR_NOISE_DECRYPT', 'authentication tag mismatch', { cause })
    }
    this.#n++
    return out
  }

  /** §4.2 REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, zeros[32]); n is unchanged (§5.1). */
  rekey(): void {
    assertUsable(this)
    if (this.#k === undefined) throw new CryptoError('ERR_NOISE_STATE', 'cannot rekey a CipherState without a key')
    const next = chacha20poly1305(this.#k, chachaNonce(MAX_NONCE), EMPTY).encrypt(new Uint8Array(32))
    wipe(this.#k)
    this.#k = next.slice(0, 32)
    wipe(next)
  }

  /** Copies key and nonce (used to make handshake messages all-or-nothing). */
  clone(): NoiseCipherState {
    const cs = new NoiseCipherState()
    cs.#k = this.#k?.slice()
    cs.#n = this.#n
    return cs
  }

  /** Forgets the key. */
  destroy(): void {
    this.initializeKey(undefined)
  }

  #checkNonce(): void {
    if (this.#n >= MAX_NONCE) {
      throw new CryptoError('ERR_NOISE_NONCE_EXHAUSTED', 'nonce exhausted (2^64-1 is reserved); rekey or start a new session')
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// SymmetricState (§5.2)

class SymmetricState {
  readonly hash: HashFunction
  readonly cipher: NoiseCipherState
  ck: Uint8Array
  h: Uint8Array

  constructor(hash: HashFunction, ck: Uint8Array, h: Uint8Array, cipher: NoiseCipherState) {
    this.hash = hash
    this.ck = ck
    this.h = h
    this.cipher = cipher
  }

  /** §5.2 InitializeSymmetric(protocol_name). */
  static initialize(hash: HashFunction, protocolName: Uint8Array): SymmetricState {
    let h: Uint8Array
    if (protocolName.length <= hash.hashLen) {
      h = new Uint8Array(hash.hashLen)
      h.set(protocolName)
    } else {
      h = hash.hash(protocolName)
    }
    return new SymmetricState(hash, h.slice(), h, new NoiseCipherState())
  }

  clone(): SymmetricState {
    return new SymmetricState(this.hash, this.ck.slice(), this.h.slice(), this.cipher.clone())
  }

  /** §5.2 MixKey(input_key_material); temp_k is truncated to 32 bytes when HASHLEN is 64. */
  mixKey(ikm: Uint8Array): void {
    const [ck, tempK] = hkdf2(this.hash, this.ck, ikm)
    wipe(this.ck)
    this.ck = ck
    this.cipher.initializeKey(tempK.slice(0, 32))
    wipe(tempK)
  }

  /** §5.2 MixHash(data). */
  mixHash(data: Uint8Array): void {
    this.h = this.hash.hash(concatBytes(this.h, data))
  }

  /** §5.2 EncryptAndHash(plaintext). */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipher.encrypt(plaintext, this.h)
    this.mixHash(ciphertext)
    return ciphertext
  }

  /** §5.2 DecryptAndHash(ciphertext). */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipher.decrypt(ciphertext, this.h)
    this.mixHash(ciphertext)
    return plaintext
  }

  /** §5.2 Split(): two CipherStates keyed from HKDF(ck, zerolen), keys truncated to 32 bytes. */
  split(): [NoiseCipherState, NoiseCipherState] {
    const [k1, k2] = hkdf2(this.hash, this.ck, EMPTY)
    const c1 = new NoiseCipherState()
    const c2 = new NoiseCipherState()
    c1.initializeKey(k1.slice(0, 32))
    c2.initializeKey(k2.slice(0, 32))
    wipe(k1, k2)
    return [c1, c2]
  }

  destroy(): void {
    wipe(this.ck)
    this.cipher.destroy()
  }
}

// ---------------------------------------------------------------------------------------------------------
// Handshake patterns (§7.4 one-way, §7.5 interactive fundamental) as data

type Token = 'e' | 's' | 'ee' | 'es' | 'se' | 'ss'

interface Pattern {
  /** Pre-message keys of the initiator and of the responder (§7.1); none of these patterns pre-share `e`. */
  readonly preInitiator: readonly 's'[]
  readonly preResponder: readonly 's'[]
  /** Messages alternate initiator → responder → initiator …, starting with the initiator. */
  readonly messages: readonly (readonly Token[])[]
}

const PATTERNS: Readonly<Record<string, Pattern>> = {
  // §7.4 one-way patterns
  N: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es']] },
  K: { preInitiator: ['s'], preResponder: ['s'], messages: [['e', 'es', 'ss']] },
  X: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es', 's', 'ss']] },
  // §7.5 interactive fundamental patterns
  NN: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee']] },
  NK: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es'], ['e', 'ee']] },
  NX: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee', 's', 'es']] },
  KN: { preInitiator: ['s'], preResponder: [], messages: [['e'], ['e', 'ee', 'se']] },
  KK: { preInitiator: ['s'], preResponder: ['s'], messages: [['e', 'es', 'ss'], ['e', 'ee', 'se']] },
  KX: { preInitiator: ['s'], preResponder: [], messages: [['e'], ['e', 'ee', 'se', 's', 'es']] },
  XN: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee'], ['s', 'se']] },
  XK: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es'], ['e', 'ee'], ['s', 'se']] },
  XX: { preInitiator: [], preResponder: [], messages: [['e'], ['e', 'ee', 's', 'es'], ['s', 'se']] },
  IN: { preInitiator: [], preResponder: [], messages: [['e', 's'], ['e', 'ee', 'se']] },
  IK: { preInitiator: [], preResponder: ['s'], messages: [['e', 'es', 's', 'ss'], ['e', 'ee', 'se']] },
  IX: { preInitiator: [], preResponder: [], messages: [['e', 's'], ['e', 'ee', 'se', 's', 'es']] },
}

/** Pattern names supported by this module, e.g. for listing every supported protocol name. */
export const SUPPORTED_PATTERNS: readonly string[] = Object.keys(PATTERNS)
export const SUPPORTED_HASHES: readonly string[] = Object.keys(HASHES)

/** §8: parses `Noise_<PATTERN>_25519_ChaChaPoly_<HASH>`; anything else is 'ERR_NOISE_PROTOCOL_NAME'. */
function parseProtocolName(name: string): { pattern: Pattern; patternName: string; hash: HashFunction } {
  const fail = (why: string): never => {
    throw new CryptoError('ERR_NOISE_PROTOCOL_NAME', `unsupported Noise protocol name ${JSON.stringify(name.slice(0, 100))}: ${why}`)
  }
  const parts = name.split('_')
  if (parts.length !== 5 || parts[0] !== 'Noise') fail('expected Noise_<PATTERN>_<DH>_<CIPHER>_<HASH>')
  const [, patternName = '', dhName, cipherName, hashName = ''] = parts
  if (dhName !== '25519') fail(`DH '${dhName}' is not supported (only 25519)`)
  if (cipherName !== 'ChaChaPoly') fail(`cipher '${cipherName}' is not supported (only ChaChaPoly)`)
  const hash = Object.hasOwn(HASHES, hashName) ? HASHES[hashName] : undefined
  if (hash === undefined) return fail(`hash '${hashName}' is not supported (only ${SUPPORTED_HASHES.join(', ')})`)
  const pattern = Object.hasOwn(PATTERNS, patternName) ? PATTERNS[patternName] : undefined
  if (pattern === undefined) {
    return fail(
      /^[A-Z]+[a-z]/.test(patternName)
        ? `pattern modifiers (psk, fallback, …) are not supported in '${patternName}'`
        : `unknown pattern '${patternName}' (supported: ${SUPPORTED_PATTERNS.join(', ')})`,
    )
  }
  return { pattern, patternName, hash }
}

// ---------------------------------------------------------------------------------------------------------
// HandshakeState (§5.3)

export interface HandshakeOptions {
  /** e.g. 'Noise_IK_25519_ChaChaPoly_BLAKE2b' */
  protocolName: string
  initiator: boolean
  prologue?: Uint8Array
  /**
   * This side's static key: 32 private-key bytes (copied, wiped when the handshake completes), or a key pair the
   * caller owns and reuses across handshakes (never destroyed here).
   */
  staticKey?: Uint8Array | DhKeyPair
  /** 32-byte X25519 public key, for patterns that pre-know it */
  remoteStaticKey?: Uint8Array
  /** 32-byte X25519 private key; only for deterministic tests */
  ephemeralKey?: Uint8Array
  /** Where DH runs (default NOBLE_DH): ephemeral keys, and a static key given as bytes. */
  dh?: DhBackend
}

/** Everything a handshake message mutates, so a failed message can be undone. */
interface Mutable {
  symmetric: SymmetricState
  e: DhKeyPair | undefined
  re: Uint8Array | undefined
  rs: Uint8Array | undefined
  index: number
}

type Phase = 'handshake' | 'complete' | 'split'

function optionalKey(value: unknown, name: string): Uint8Array | undefined {
  if (value === undefined) return undefined
  assertBytes(value, `options.${name}`, DHLEN)
  return value
}

export class Handshake {
  readonly protocolName: string
  readonly initiator: boolean
  readonly #pattern: Pattern
  readonly #patternName: string
  readonly #s: DhKeyPair | undefined
  /** The static key pair was made here from bytes (so it is destroyed here), not lent by the caller. */
  readonly #ownsStatic: boolean
  readonly #dh: DhBackend
  #fixedEphemeral: Uint8Array | undefined
  #state: Mutable
  #phase: Phase = 'handshake'

  /** §5.3 Initialize(handshake_pattern, initiator, prologue, s, e, rs, re). */
  constructor(options: HandshakeOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
    const { protocolName, initiator } = options
    if (typeof protocolName !== 'string') throw new InvalidArgumentError('options.protocolName must be a string')
    if (typeof initiator !== 'boolean') throw new InvalidArgumentError('options.initiator must be a boolean')
    const prologue = options.prologue ?? EMPTY
    assertBytes(prologue, 'options.prologue')
    const dhBackend = options.dh ?? NOBLE_DH
    if (typeof dhBackend !== 'object' || dhBackend === null || typeof dhBackend.generate !== 'function' || typeof dhBackend.fromPrivateKey !== 'function') {
      throw new InvalidArgumentError('options.dh must be a DhBackend')
    }
    const staticKey = isDhKeyPair(options.staticKey) ? options.staticKey : optionalKey(options.staticKey, 'staticKey')
    const remoteStaticKey = optionalKey(options.remoteStaticKey, 'remoteStaticKey')
    const ephemeralKey = optionalKey(options.ephemeralKey, 'ephemeralKey')
    const { pattern, patternName, hash } = parseProtocolName(protocolName)

    // Which keys the pattern needs: ours if we send or pre-share `s`, theirs if they pre-share `s`.
    const [ownPre, remotePre] = initiator
      ? [pattern.preInitiator, pattern.preResponder]
      : [pattern.preResponder, pattern.preInitiator]
    const sendsS = pattern.messages.some((m, i) => (i % 2 === 0) === initiator && m.includes('s'))
    const needsS = ownPre.includes('s') || sendsS
    const needsRs = remotePre.includes('s')
    if (needsS && staticKey === undefined) {
      throw new CryptoError('ERR_NOISE_MISSING_KEY', `${patternName} needs this side's staticKey`)
    }
    if (needsRs && remoteStaticKey === undefined) {
      throw new CryptoError('ERR_NOISE_MISSING_KEY', `${patternName} needs the remoteStaticKey to be known in advance`)
    }
    if (!needsS && staticKey !== undefined) {
      throw new InvalidArgumentError(`options.staticKey is not used by ${patternName} on this side`)
    }
    if (!needsRs && remoteStaticKey !== undefined) {
      throw new InvalidArgumentError(`options.remoteStaticKey is not used by ${patternName} (it is not pre-known)`)
    }

    this.protocolName = protocolName
    this.initiator = initiator
    this.#pattern = pattern
    this.#patternName = patternName
    this.#dh = dhBackend
    this.#ownsStatic = staticKey instanceof Uint8Array
    this.#s = staticKey instanceof Uint8Array ? dhBackend.fromPrivateKey(staticKey) : staticKey
    this.#fixedEphemeral = ephemeralKey?.slice()
    const symmetric = SymmetricState.initialize(hash, utf8(protocolName))
    symmetric.mixHash(prologue)
    const rs = remoteStaticKey?.slice()
    // §5.3: pre-message public keys are hashed, the initiator's first (presence was checked above).
    const ownS = this.#s?.publicKey
    for (const key of [
      ...pattern.preInitiator.map(() => (initiator ? ownS : rs)),
      ...pattern.preResponder.map(() => (initiator ? rs : ownS)),
    ]) {
      if (key !== undefined) symmetric.mixHash(key)
    }
    this.#state = { symmetric, e: undefined, re: undefined, rs, index: 0 }
  }

  get complete(): boolean {
    return this.#phase !== 'handshake'
  }

  /** §5.2 GetHandshakeHash(): the channel-binding value h, available once the handshake is complete. */
  get handshakeHash(): Uint8Array {
    if (this.#phase === 'handshake') throw new CryptoError('ERR_NOISE_STATE', 'handshake hash is only final once the handshake is complete')
    return this.#state.symmetric.h.slice()
  }

  /** The remote static public key, once pre-known or received. */
  get remoteStaticKey(): Uint8Array | undefined {
    return this.#state.rs?.slice()
  }

  /** §5.3 WriteMessage(payload, message_buffer). */
  writeMessage(payload: Uint8Array = EMPTY): Uint8Array {
    assertBytes(payload, 'payload')
    const tokens = this.#nextTokens('write')
    return this.#transaction((st) => {
      const parts: Uint8Array[] = []
      for (const token of tokens) {
        if (token === 'e') {
          st.e = this.#newEphemeral()
          parts.push(st.e.publicKey)
          st.symmetric.mixHash(st.e.publicKey)
        } else if (token === 's') {
          parts.push(st.symmetric.encryptAndHash(this.#staticPair().publicKey))
        } else {
          this.#mixDh(st, token)
        }
      }
      const overhead = parts.reduce((n, p) => n + p.length, 0) + (st.symmetric.cipher.hasKey() ? TAGLEN : 0)
      if (overhead + payload.length > MAX_MESSAGE_LENGTH) {
        throw new CryptoError('ERR_NOISE_MESSAGE', `handshake message would exceed ${MAX_MESSAGE_LENGTH} bytes`)
      }
      parts.push(st.symmetric.encryptAndHash(payload))
      return concatBytes(...parts)
    })
  }

  /** §5.3 ReadMessage(message, payload_buffer); returns the payload. */
  readMessage(message: Uint8Array): Uint8Array {
    assertBytes(message, 'message')
    const tokens = this.#nextTokens('read')
    if (message.length > MAX_MESSAGE_LENGTH) {
      throw new CryptoError('ERR_NOISE_MESSAGE', `handshake message is ${message.length} bytes (max ${MAX_MESSAGE_LENGTH})`)
    }
    return this.#transaction((st) => {
      let offset = 0
      const take = (n: number, what: string): Uint8Array => {
        if (message.length - offset < n) {
          throw new CryptoError('ERR_NOISE_MESSAGE', `handshake message truncated: missing ${what}`)
        }
        const out = message.subarray(offset, offset + n)
        offset += n
        return out
      }
      for (const token of tokens) {
        if (token === 'e') {
          st.re = take(DHLEN, 'ephemeral key').slice()
          st.symmetric.mixHash(st.re)
        } else if (token === 's') {
          const len = DHLEN + (st.symmetric.cipher.hasKey() ? TAGLEN : 0)
          st.rs = st.symmetric.decryptAndHash(take(len, 'static key'))
        } else {
          this.#mixDh(st, token)
        }
      }
      if (st.symmetric.cipher.hasKey() && message.length - offset < TAGLEN) {
        throw new CryptoError('ERR_NOISE_MESSAGE', 'handshake message truncated: missing payload tag')
      }
      return st.symmetric.decryptAndHash(message.subarray(offset))
    })
  }

  /**
   * §5.2 Split(): this side's transport CipherStates. The initiator sends with the first key, the
   * responder with the second. After a one-way pattern (§7.4) the second is discarded: the initiator's
   * `receive` and the responder's `send` throw 'ERR_NOISE_STATE'. One-shot: the chaining key is wiped.
   */
  split(): { send: NoiseCipherState; receive: NoiseCipherState } {
    if (this.#phase !== 'complete') {
      throw new CryptoError('ERR_NOISE_STATE', this.#phase === 'split' ? 'split() was already called' : 'handshake is not complete')
    }
    const [c1, c2] = this.#state.symmetric.split()
    if (this.#pattern.messages.length === 1) {
      c2.destroy()
      DISCARDED.add(c2)
    }
    this.#state.symmetric.destroy()
    this.#phase = 'split'
    return this.initiator ? { send: c1, receive: c2 } : { send: c2, receive: c1 }
  }

  #nextTokens(op: 'write' | 'read'): readonly Token[] {
    if (this.#phase !== 'handshake') throw new CryptoError('ERR_NOISE_STATE', `cannot ${op}: the handshake is complete`)
    const index = this.#state.index
    const initiatorTurn = index % 2 === 0
    if ((op === 'write') !== (initiatorTurn === this.initiator)) {
      throw new CryptoError('ERR_NOISE_STATE', `cannot ${op} handshake message ${index + 1} of ${this.#patternName}: it is the ${op === 'write' ? 'peer' : 'local side'}'s turn to send`)
    }
    return this.#pattern.messages[index]!
  }

  /** Runs one message against a copy of the state; commits only on success. */
  #transaction<T>(step: (st: Mutable) => T): T {
    const st: Mutable = { ...this.#state, symmetric: this.#state.symmetric.clone() }
    let result: T
    try {
      result = step(st)
    } catch (err) {
      st.symmetric.destroy()
      if (st.e !== this.#state.e) st.e?.destroy()
      throw err
    }
    this.#state.symmetric.destroy()
    st.index++
    this.#state = st
    if (st.index === this.#pattern.messages.length) this.#finish()
    return result
  }

  #finish(): void {
    this.#phase = 'complete'
    this.#state.e?.destroy()
    if (this.#ownsStatic) this.#s?.destroy()
    wipe(this.#fixedEphemeral)
  }

  #staticPair(): DhKeyPair {
    if (this.#s === undefined) throw new CryptoError('ERR_NOISE_MISSING_KEY', `${this.#patternName} needs this side's staticKey`)
    return this.#s
  }

  #newEphemeral(): DhKeyPair {
    return this.#fixedEphemeral !== undefined ? this.#dh.fromPrivateKey(this.#fixedEphemeral) : this.#dh.generate()
  }

  /** §5.3 DH tokens: ee, es, se, ss (the first letter is the initiator's key, the second the responder's). */
  #mixDh(st: Mutable, token: Exclude<Token, 'e' | 's'>): void {
    const initiatorKey = token[0] as 'e' | 's'
    const responderKey = token[1] as 'e' | 's'
    const [localKind, remoteKind] = this.initiator ? [initiatorKey, responderKey] : [responderKey, initiatorKey]
    const local = localKind === 'e' ? st.e : this.#staticPair()
    const remote = remoteKind === 'e' ? st.re : st.rs
    if (local === undefined || remote === undefined) {
      throw new CryptoError('ERR_NOISE_MISSING_KEY', `${this.#patternName}: no key for token '${token}'`)
    }
    const shared = local.dh(remote)
    st.symmetric.mixKey(shared)
    wipe(shared)
  }
}
