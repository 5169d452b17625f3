/**
 * Secrets at rest: a small byte string sealed under a user passphrase.
 *
 * scrypt (RFC 7914) stretches the normalized passphrase into 64 bytes: the first 32 are the
 * XChaCha20-Poly1305 key (draft-irtf-cfrg-xchacha §2), the last 32 key a BLAKE2b "check" tag that lets
 * `openSecrets` tell a wrong passphrase (check mismatch) from a damaged envelope (check matches, AEAD
 * tag does not). Every header field (version, KDF and its parameters, salt, nonce, check) is bound as
 * associated data. KDF parameters come from the envelope, so they can be raised later; they are bounded
 * BEFORE any work is done, so a hostile envelope cannot make us hang or allocate gigabytes.
 *
 * Pure: imports only @noble/* and sibling protocol modules. See docs/PROTOCOL.md, "Storage and secrets
 * at rest".
 */
import { blake2b } from '@noble/hashes/blake2.js'
import { scrypt, scryptAsync } from '@noble/hashes/scrypt.js'
import { randomBytes } from '@noble/hashes/utils.js'
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js'
import { InvalidArgumentError, P2PMessError, StorageError } from '../errors.js'
import { equalBytes, fromBase64url, fromUtf8, toBase64url, utf8, wipe } from './bytes.js'

export const VAULT_VERSION = 1

/** KDF description stored in the envelope. A discriminated union so other KDFs can be added later. */
export type KdfParams = { name: 'scrypt'; N: number; r: number; p: number }

/** The sealed form, a plain JSON object; binary fields are unpadded base64url. */
export interface VaultEnvelope {
  v: typeof VAULT_VERSION
  kdf: KdfParams
  salt: string
  nonce: string
  check: string
  ciphertext: string
}

/** ~0.54 s and 128 MiB on the reference machine (2-core x86-64, Node 20); see docs/PROTOCOL.md. */
export const DEFAULT_KDF: Readonly<KdfParams> = Object.freeze({ name: 'scrypt', N: 2 ** 17, r: 8, p: 1 })

/**
 * Bounds checked before running the KDF (on seal and on open). Memory is 128·N·r bytes; work ~ N·r·p.
 * The minimum exists so test envelopes stay cheap but nothing trivially weak is accepted.
 */
export const KDF_BOUNDS = Object.freeze({
  minLogN: 10,
  maxLogN: 20,
  maxR: 32,
  maxP: 16,
  /** 256 MiB of scrypt working memory. */
  maxMemory: 2 ** 28,
  /** N·r·p: 4× the default cost. */
  maxWork: 2 ** 22,
})

export const MAX_SECRET_BYTES = 64 * 1024
const MAX_ENVELOPE_CHARS = 4 * MAX_SECRET_BYTES
const MAX_PASSPHRASE_BYTES = 1024
const SALT_BYTES = 16
const NONCE_BYTES = 24
const CHECK_BYTES = 16
const TAG_BYTES = 16
const CHECK_LABEL = utf8('p2pmess vault passphrase check v1')
const AAD_LABEL = 'p2pmess vault v1'

export interface SealOptions {
  kdf?: KdfParams
  /** Source of the salt and nonce; defaults to the platform CSPRNG. */
  random?: (n: number) => Uint8Array
}

/**
 * Passphrase normalization, after RFC 8265 §4.2 (OpaqueString): non-ASCII spaces become U+0020, then
 * Unicode NFC. NFC (not NFKC) keeps compatibility characters distinct, as RFC 8265 recommends for
 * passwords. Empty passphrases, control characters and unpaired surrogates are refused. Leading and
 * trailing spaces are kept (they are part of the passphrase).
 */
export function normalizePassphrase(passphrase: unknown): Uint8Array {
  if (typeof passphrase !== 'string') throw new InvalidArgumentError('passphrase must be a string')
  const tooLong = `passphrase must be at most ${MAX_PASSPHRASE_BYTES} bytes of UTF-8`
  if (passphrase.length > MAX_PASSPHRASE_BYTES) throw new InvalidArgumentError(tooLong)
  const text = passphrase.replace(/[\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]/g, ' ').normalize('NFC')
  if (text.length === 0) throw new InvalidArgumentError('passphrase must not be empty')
  if (/[\u0000-\u001F\u007F-\u009F]/.test(text)) {
    throw new InvalidArgumentError('passphrase must not contain control characters (newline, tab, ...)')
  }
  const bytes = utf8(text)
  let roundTrip: string
  try {
    roundTrip = fromUtf8(bytes)
  } catch {
    roundTrip = ''
  }
  const problem =
    roundTrip !== text ? 'passphrase contains an unpaired UTF-16 surrogate' : bytes.length > MAX_PASSPHRASE_BYTES ? tooLong : undefined
  if (problem !== undefined) {
    wipe(bytes)
    throw new InvalidArgumentError(problem)
  }
  return bytes
}

/** Returns why `kdf` is out of bounds, or undefined when it is acceptable. */
function kdfProblem(kdf: KdfParams): string | undefined {
  const { N, r, p } = kdf
  if (!Number.isSafeInteger(N) || !Number.isSafeInteger(r) || !Number.isSafeInteger(p)) {
    return 'scrypt N, r and p must be integers'
  }
  if (N < 2 ** KDF_BOUNDS.minLogN || N > 2 ** KDF_BOUNDS.maxLogN || (N & (N - 1)) !== 0) {
    return `scrypt N must be a power of two in [2^${KDF_BOUNDS.minLogN}, 2^${KDF_BOUNDS.maxLogN}]`
  }
  if (r < 1 || r > KDF_BOUNDS.maxR) return `scrypt r must be in [1, ${KDF_BOUNDS.maxR}]`
  if (p < 1 || p > KDF_BOUNDS.maxP) return `scrypt p must be in [1, ${KDF_BOUNDS.maxP}]`
  if (128 * N * r > KDF_BOUNDS.maxMemory) return 'scrypt memory 128·N·r exceeds 256 MiB'
  if (N * r * p > KDF_BOUNDS.maxWork) return 'scrypt cost N·r·p exceeds 2^22'
  return undefined
}

function checkSealKdf(kdf: unknown): KdfParams {
  const parsed = parseKdf(kdf)
  if (parsed === undefined) throw new InvalidArgumentError('options.kdf must be { name: "scrypt", N, r, p }')
  const problem = kdfProblem(parsed)
  if (problem !== undefined) throw new InvalidArgumentError(`options.kdf: ${problem}`)
  return parsed
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
}

function hasExactKeys(obj: Record<string, unknown>, keys: readonly string[]): boolean {
  const own = Object.keys(obj)
  return own.length === keys.length && keys.every((k) => Object.hasOwn(obj, k))
}

function parseKdf(value: unknown): KdfParams | undefined {
  if (!isRecord(value) || !hasExactKeys(value, ['name', 'N', 'r', 'p'])) return undefined
  const { name, N, r, p } = value
  if (name !== 'scrypt' || typeof N !== 'number' || typeof r !== 'number' || typeof p !== 'number') return undefined
  return { name, N, r, p }
}

function corrupt(message: string, cause?: unknown, details?: Record<string, unknown>): StorageError {
  return new StorageError('ERR_STORAGE_CORRUPT', message, { cause, details })
}

/** Decoded envelope, bounds already checked. */
interface Parsed {
  kdf: KdfParams
  salt: Uint8Array
  nonce: Uint8Array
  check: Uint8Array
  ciphertext: Uint8Array
  aad: Uint8Array
}

function parseEnvelope(input: unknown): Parsed {
  let value = input
  if (value instanceof Uint8Array) {
    if (value.length > MAX_ENVELOPE_CHARS) throw corrupt('secrets envelope is too large')
    try {
      value = fromUtf8(value)
    } catch (cause) {
      throw corrupt('secrets envelope is not valid UTF-8', cause)
    }
  }
  if (typeof value === 'string') {
    if (value.length > MAX_ENVELOPE_CHARS) throw corrupt('secrets envelope is too large')
    try {
      value = JSON.parse(value)
    } catch (cause) {
      throw corrupt('secrets envelope is not valid JSON', cause)
    }
  }
  if (!isRecord(value)) throw corrupt('secrets envelope must be a JSON object')
  if (value.v !== VAULT_VERSION) {
    throw corrupt('secrets envelope has a missing or unsupported version', undefined, { v: String(value.v) })
  }
  if (!hasExactKeys(value, ['v', 'kdf', 'salt', 'nonce', 'check', 'ciphertext'])) {
    throw corrupt('secrets envelope has missing or unexpected fields')
  }
  const kdf = parseKdf(value.kdf)
  if (kdf === undefined) throw corrupt('secrets envelope has a malformed kdf description')
  const problem = kdfProblem(kdf)
  if (problem !== undefined) throw corrupt(`secrets envelope KDF parameters are out of bounds: ${problem}`)
  const { salt, nonce, check, ciphertext } = value
  if (typeof salt !== 'string' || typeof nonce !== 'string' || typeof check !== 'string' || typeof ciphertext !== 'string') {
    throw corrupt('secrets envelope fields salt, nonce, check, ciphertext must be strings')
  }
  let bytes: [Uint8Array, Uint8Array, Uint8Array, Uint8Array]
  try {
    bytes = [
      fromBase64url(salt, SALT_BYTES),
      fromBase64url(nonce, NONCE_BYTES),
      fromBase64url(check, CHECK_BYTES),
      fromBase64url(ciphertext),
    ]
  } catch (cause) {
    throw corrupt('secrets envelope has a malformed binary field', cause)
  }
  const ct = bytes[3]
  if (ct.length < TAG_BYTES || ct.length > MAX_SECRET_BYTES + TAG_BYTES) {
    throw corrupt('secrets envelope ciphertext has an impossible length')
  }
  return { kdf, salt: bytes[0], nonce: bytes[1], check: bytes[2], ciphertext: ct, aad: headerAad(kdf, salt, nonce, check) }
}

/** Canonical associated data: every header field; base64url is canonical, so re-encoding is exact. */
function headerAad(kdf: KdfParams, salt: string, nonce: string, check: string): Uint8Array {
  return utf8(JSON.stringify([AAD_LABEL, VAULT_VERSION, kdf.name, kdf.N, kdf.r, kdf.p, salt, nonce, check]))
}

function scryptOpts(kdf: KdfParams) {
  return { N: kdf.N, r: kdf.r, p: kdf.p, dkLen: 64, maxmem: KDF_BOUNDS.maxMemory + 2 ** 20 }
}

function checkTag(dk: Uint8Array): Uint8Array {
  return blake2b(CHECK_LABEL, { key: dk.subarray(32, 64), dkLen: CHECK_BYTES })
}

function isRandomSource(value: unknown): value is (n: number) => unknown {
  return typeof value === 'function'
}

function drawRandom(random: (n: number) => unknown, n: number): Uint8Array {
  const out = random(n)
  if (!(out instanceof Uint8Array) || out.length !== n) {
    throw new InvalidArgumentError(`options.random must return a Uint8Array of ${n} bytes`)
  }
  return out
}

interface SealPlan {
  kdf: KdfParams
  pass: Uint8Array
  salt: Uint8Array
  nonce: Uint8Array
  plaintext: Uint8Array
}

function planSeal(plaintext: unknown, passphrase: unknown, options: SealOptions | undefined): SealPlan {
  if (!(plaintext instanceof Uint8Array)) throw new InvalidArgumentError('plaintext must be a Uint8Array')
  if (plaintext.length > MAX_SECRET_BYTES) {
    throw new InvalidArgumentError(`plaintext must be at most ${MAX_SECRET_BYTES} bytes`)
  }
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new InvalidArgumentError('options must be an object')
  }
  const kdf = checkSealKdf(options?.kdf === undefined ? DEFAULT_KDF : options.kdf)
  const random: unknown = options?.random ?? randomBytes
  if (!isRandomSource(random)) throw new InvalidArgumentError('options.random must be a function')
  const pass = normalizePassphrase(passphrase)
  return { kdf, pass, salt: drawRandom(random, SALT_BYTES), nonce: drawRandom(random, NONCE_BYTES), plaintext }
}

function finishSeal(plan: SealPlan, dk: Uint8Array): VaultEnvelope {
  try {
    const check = checkTag(dk)
    const salt = toBase64url(plan.salt)
    const nonce = toBase64url(plan.nonce)
    const checkText = toBase64url(check)
    const aad = headerAad(plan.kdf, salt, nonce, checkText)
    const ciphertext = xchacha20poly1305(dk.subarray(0, 32), plan.nonce, aad).encrypt(plan.plaintext)
    return { v: VAULT_VERSION, kdf: { ...plan.kdf }, salt, nonce, check: checkText, ciphertext: toBase64url(ciphertext) }
  } finally {
    wipe(dk, plan.pass)
  }
}

function finishOpen(parsed: Parsed, dk: Uint8Array): Uint8Array {
  try {
    if (!equalBytes(checkTag(dk), parsed.check)) {
      throw new StorageError(
        'ERR_WRONG_PASSPHRASE',
        'wrong passphrase: it does not unlock these secrets (or the envelope salt/KDF parameters were altered)',
      )
    }
    try {
      return xchacha20poly1305(dk.subarray(0, 32), parsed.nonce, parsed.aad).decrypt(parsed.ciphertext)
    } catch (cause) {
      throw corrupt('secrets envelope failed authentication: the file was modified or damaged', cause)
    }
  } finally {
    wipe(dk)
  }
}

/** Runs the KDF, mapping anything noble throws (should not happen after bounds checks) to a typed error. */
function kdfFailure(cause: unknown): P2PMessError {
  return cause instanceof P2PMessError ? cause : new StorageError('ERR_STORAGE_CORRUPT', 'key derivation failed', { cause })
}

/** Seals `plaintext` under `passphrase`. Blocks for the KDF time (~0.5 s with defaults). */
export function sealSecrets(plaintext: Uint8Array, passphrase: string, options?: SealOptions): VaultEnvelope {
  const plan = planSeal(plaintext, passphrase, options)
  let dk: Uint8Array
  try {
    dk = scrypt(plan.pass, plan.salt, scryptOpts(plan.kdf))
  } catch (cause) {
    wipe(plan.pass)
    throw kdfFailure(cause)
  }
  return finishSeal(plan, dk)
}

/** Like `sealSecrets`, but the KDF yields to the event loop. */
export async function sealSecretsAsync(plaintext: Uint8Array, passphrase: string, options?: SealOptions): Promise<VaultEnvelope> {
  const plan = planSeal(plaintext, passphrase, options)
  let dk: Uint8Array
  try {
    dk = await scryptAsync(plan.pass, plan.salt, scryptOpts(plan.kdf))
  } catch (cause) {
    wipe(plan.pass)
    throw kdfFailure(cause)
  }
  return finishSeal(plan, dk)
}

/**
 * Opens an envelope (the object, its JSON text, or that text as UTF-8 bytes). Wrong passphrase:
 * StorageError ERR_WRONG_PASSPHRASE. Malformed, out-of-bounds or tampered envelope: ERR_STORAGE_CORRUPT.
 * The caller owns (and should wipe) the returned bytes.
 */
export function openSecrets(envelope: unknown, passphrase: string): Uint8Array {
  const parsed = parseEnvelope(envelope)
  const pass = normalizePassphrase(passphrase)
  let dk: Uint8Array
  try {
    dk = scrypt(pass, parsed.salt, scryptOpts(parsed.kdf))
  } catch (cause) {
    throw kdfFailure(cause)
  } finally {
    wipe(pass)
  }
  return finishOpen(parsed, dk)
}

/** Like `openSecrets`, but the KDF yields to the event loop. */
export async function openSecretsAsync(envelope: unknown, passphrase: string): Promise<Uint8Array> {
  const parsed = parseEnvelope(envelope)
  const pass = normalizePassphrase(passphrase)
  let dk: Uint8Array
  try {
    dk = await scryptAsync(pass, parsed.salt, scryptOpts(parsed.kdf))
  } catch (cause) {
    throw kdfFailure(cause)
  } finally {
    wipe(pass)
  }
  return finishOpen(parsed, dk)
}
