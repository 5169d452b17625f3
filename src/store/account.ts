/**
 * The account in the data directory: `<dataDir>/account.json`, public fields in clear and the three secrets
 * (identity seed, device Noise key, onion-service seed) only inside a vault envelope (src/protocol/vault.ts).
 * Written atomically (temp file + fsync + rename/link + directory fsync), mode 0600 in a 0700 directory.
 * On load the public fields are re-derived from the decrypted secrets and must match, and a MAC keyed from
 * the identity seed covers all of them (so even createdAt and recordSeq cannot be edited unnoticed).
 * See docs/PROTOCOL.md, "Storage and secrets at rest".
 */
import { chmod, link, mkdir, open, rename, stat, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { x25519 } from '@noble/curves/ed25519.js'
import { blake2b } from '@noble/hashes/blake2.js'
import { randomBytes } from '@noble/hashes/utils.js'
import { InvalidArgumentError, P2PMessError, StorageError } from '../errors.js'
import { equalBytes, fromBase64url, fromUtf8, toBase64url, toHex, utf8, wipe } from '../protocol/bytes.js'
import { generateIdentity, generateNoiseKeyPair, identityFromSeed, isCanonicalPeerId, peerIdFromIdentityKey } from '../protocol/identity.js'
import { onionServiceKeyFromSeed } from '../protocol/onion.js'
import { openSecretsAsync, sealSecretsAsync, type KdfParams, type VaultEnvelope } from '../protocol/vault.js'
import { accountPath } from './paths.js'

const ACCOUNT_VERSION = 1
/** Secrets plaintext: layout tag ‖ identity seed ‖ Noise secret key ‖ onion-service seed. */
const SECRETS_LAYOUT = 1
const KEY_BYTES = 32
const SECRETS_BYTES = 1 + 3 * KEY_BYTES
const MAX_ACCOUNT_FILE_BYTES = 64 * 1024
const MAX_PASSPHRASE_FILE_BYTES = 64 * 1024
const MAC_KEY_LABEL = utf8('p2pmess account mac key v1')
const MAC_LABEL = 'p2pmess account v1'
const MAC_BYTES = 32

/** The JSON shape of account.json. */
export interface AccountFile {
  v: typeof ACCOUNT_VERSION
  peerId: string
  /** Ed25519 identity public key, base64url. */
  identityKey: string
  /** X25519 Noise static public key, base64url. */
  noiseKey: string
  /** `<56 chars>.onion` of the onion-service key. */
  onion: string
  /** Unix ms. */
  createdAt: number
  /** Last sequence number used for our own directory record (0: never published). */
  recordSeq: number
  secrets: VaultEnvelope
  /** BLAKE2b-256 MAC of all fields above except `secrets` (which authenticates itself), base64url. */
  mac: string
}

/** The MAC key: a BLAKE2b PRF of the identity seed, so the seed itself has only one use (Ed25519). */
function macKeyFromSeed(identitySeed: Uint8Array): Uint8Array {
  return blake2b(MAC_KEY_LABEL, { key: identitySeed, dkLen: 32 })
}

function publicMac(file: Omit<AccountFile, 'mac'>, macKey: Uint8Array): string {
  const fields = [MAC_LABEL, file.v, file.peerId, file.identityKey, file.noiseKey, file.onion, file.createdAt, file.recordSeq]
  return toBase64url(blake2b(utf8(JSON.stringify(fields)), { key: macKey, dkLen: MAC_BYTES }))
}

/** An unlocked account. The three secret fields are zeroed by `wipe()`. */
export class Account {
  readonly dataDir: string
  readonly peerId: string
  readonly identityKey: Uint8Array
  readonly noisePublic: Uint8Array
  readonly onionAddress: string
  readonly createdAt: number
  /** Secret: Ed25519 seed (RFC 8032 §5.1.5). */
  readonly identitySeed: Uint8Array
  /** Secret: X25519 static key for Noise. */
  readonly noiseSecret: Uint8Array
  /** Secret: Ed25519 seed of the onion-service key (expand with onionServiceKeyFromSeed). */
  readonly onionSeed: Uint8Array
  #recordSeq: number
  readonly #macKey: Uint8Array
  #seqChain: Promise<unknown> = Promise.resolve()
  #wiped = false

  /** @internal use createAccount / loadAccount. */
  constructor(dataDir: string, file: AccountFile, identitySeed: Uint8Array, noiseSecret: Uint8Array, onionSeed: Uint8Array) {
    this.dataDir = dataDir
    this.peerId = file.peerId
    this.identityKey = fromBase64url(file.identityKey, KEY_BYTES)
    this.noisePublic = fromBase64url(file.noiseKey, KEY_BYTES)
    this.onionAddress = file.onion
    this.createdAt = file.createdAt
    this.#recordSeq = file.recordSeq
    this.identitySeed = identitySeed
    this.noiseSecret = noiseSecret
    this.onionSeed = onionSeed
    this.#macKey = macKeyFromSeed(identitySeed)
  }

  /** The last record sequence number handed out (persisted in account.json). */
  get recordSeq(): number {
    return this.#recordSeq
  }

  /**
   * Reserves the next sequence number for our directory record and persists it before returning, so a
   * restart never reuses one. Calls are serialized. Needs no passphrase (the envelope is copied verbatim),
   * but does need the unwiped account, whose MAC key re-authenticates the rewritten public fields.
   */
  nextRecordSeq(): Promise<number> {
    const run = this.#seqChain.then(async () => {
      if (this.#wiped) throw new InvalidArgumentError('the account was wiped; load it again to publish')
      const path = accountPath(this.dataDir)
      const file = parseAccountFile(await readAccountFile(path))
      if (file.peerId !== this.peerId) {
        throw new StorageError('ERR_STORAGE_CORRUPT', `${path} now holds a different account`)
      }
      if (!equalBytes(fromBase64url(publicMac(file, this.#macKey)), fromBase64url(file.mac))) {
        throw new StorageError('ERR_STORAGE_CORRUPT', `${path} was modified outside this client (MAC mismatch)`)
      }
      const next = Math.max(file.recordSeq, this.#recordSeq) + 1
      const updated = { ...file, recordSeq: next }
      await writeFileAtomic(path, serialize({ ...updated, mac: publicMac(updated, this.#macKey) }), 'replace')
      this.#recordSeq = next
      return next
    })
    this.#seqChain = run.catch(() => undefined)
    return run
  }

  /** Zeroes the secrets in memory. The account is unusable for signing or handshakes afterwards. */
  wipe(): void {
    this.#wiped = true
    wipe(this.identitySeed, this.noiseSecret, this.onionSeed, this.#macKey)
  }
}

export interface CreateAccountOptions {
  dataDir: string
  passphrase: string
  /** Vault KDF parameters; default DEFAULT_KDF (tests pass cheap ones). */
  kdf?: KdfParams
  /** Unix ms for createdAt; default Date.now(). */
  now?: number
}

export interface LoadAccountOptions {
  dataDir: string
  passphrase: string
}

function assertDataDir(dataDir: unknown): asserts dataDir is string {
  if (typeof dataDir !== 'string' || dataDir === '' || dataDir.includes('\0')) {
    throw new InvalidArgumentError('dataDir must be a non-empty path')
  }
}

function ioError(action: string, path: string, cause: unknown): StorageError {
  const code = cause instanceof Error && 'code' in cause && typeof cause.code === 'string' ? ` (${cause.code})` : ''
  return new StorageError('ERR_STORAGE_IO', `cannot ${action} ${path}${code}`, { cause })
}

function errnoCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined
}

/** Creates the data directory (mode 0700) if needed and tightens its mode if it already exists. */
export async function ensureDataDir(dataDir: string): Promise<void> {
  assertDataDir(dataDir)
  try {
    await mkdir(dirname(dataDir), { recursive: true })
    await mkdir(dataDir, { mode: 0o700 }).catch((err: unknown) => {
      if (errnoCode(err) !== 'EEXIST') throw err
    })
    await chmod(dataDir, 0o700)
  } catch (cause) {
    throw ioError('create the data directory', dataDir, cause)
  }
}

/**
 * Writes `data` to `path` atomically: a 0600 temp file in the same directory, fsync, then rename over
 * (`replace`) or hard-link into place (`exclusive`: fails with EEXIST if `path` exists, without a race),
 * then fsync of the directory so the new name survives a crash.
 */
async function writeFileAtomic(path: string, data: string, mode: 'replace' | 'exclusive'): Promise<void> {
  const tmp = join(dirname(path), `.${toHex(randomBytes(8))}.tmp`)
  try {
    const fh = await open(tmp, 'wx', 0o600)
    try {
      await fh.chmod(0o600)
      await fh.writeFile(data, 'utf8')
      await fh.sync()
    } finally {
      await fh.close()
    }
    if (mode === 'replace') {
      await rename(tmp, path)
    } else {
      try {
        await link(tmp, path)
      } finally {
        await unlink(tmp)
      }
    }
    const dir = await open(dirname(path), 'r')
    try {
      await dir.sync()
    } finally {
      await dir.close()
    }
  } catch (cause) {
    await unlink(tmp).catch(() => undefined)
    if (mode === 'exclusive' && errnoCode(cause) === 'EEXIST') {
      throw new StorageError('ERR_ACCOUNT_EXISTS', `an account already exists in ${dirname(path)}`)
    }
    throw ioError('write', path, cause)
  }
}

function serialize(file: AccountFile): string {
  return JSON.stringify(file, null, 2) + '\n'
}

async function readAccountFile(path: string): Promise<Uint8Array> {
  try {
    const fh = await open(path, 'r')
    try {
      const { size } = await fh.stat()
      if (size > MAX_ACCOUNT_FILE_BYTES) throw new StorageError('ERR_STORAGE_CORRUPT', `${path} is too large to be an account file`)
      return await fh.readFile()
    } finally {
      await fh.close()
    }
  } catch (cause) {
    if (cause instanceof P2PMessError) throw cause
    if (errnoCode(cause) === 'ENOENT') {
      throw new StorageError('ERR_NO_ACCOUNT', `no account in ${dirname(path)} (create one first)`)
    }
    throw ioError('read', path, cause)
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const ACCOUNT_KEYS = ['v', 'peerId', 'identityKey', 'noiseKey', 'onion', 'createdAt', 'recordSeq', 'secrets', 'mac'] as const

/** Strict structural check of account.json; the envelope itself is checked by the vault. */
function parseAccountFile(raw: Uint8Array): AccountFile {
  const bad = (what: string, cause?: unknown): never => {
    throw new StorageError('ERR_STORAGE_CORRUPT', `account file is damaged: ${what}`, { cause })
  }
  let value: unknown
  try {
    value = JSON.parse(fromUtf8(raw))
  } catch (cause) {
    return bad('not valid JSON', cause)
  }
  if (!isRecord(value)) return bad('not a JSON object')
  if (value.v !== ACCOUNT_VERSION) return bad('unsupported version')
  const keys = Object.keys(value)
  if (keys.length !== ACCOUNT_KEYS.length || !ACCOUNT_KEYS.every((k) => Object.hasOwn(value, k))) {
    return bad('missing or unexpected fields')
  }
  const { peerId, identityKey, noiseKey, onion, createdAt, recordSeq, secrets, mac } = value
  if (!isCanonicalPeerId(peerId)) return bad('peerId is not a valid peer ID')
  for (const [name, field, length] of [['identityKey', identityKey, KEY_BYTES], ['noiseKey', noiseKey, KEY_BYTES], ['mac', mac, MAC_BYTES]] as const) {
    if (typeof field !== 'string') return bad(`${name} is not a string`)
    try {
      fromBase64url(field, length)
    } catch (cause) {
      return bad(`${name} is not ${length} bytes of base64url`, cause)
    }
  }
  if (typeof onion !== 'string') return bad('onion is not a string')
  for (const [name, n] of [['createdAt', createdAt], ['recordSeq', recordSeq]] as const) {
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) return bad(`${name} is not a non-negative integer`)
  }
  if (!isRecord(secrets)) return bad('secrets is not an object')
  return {
    v: ACCOUNT_VERSION,
    peerId,
    identityKey: identityKey as string,
    noiseKey: noiseKey as string,
    onion,
    createdAt: createdAt as number,
    recordSeq: recordSeq as number,
    secrets: secrets as unknown as VaultEnvelope,
    mac: mac as string,
  }
}

/** Public fields derived from the three secrets. */
function derivePublic(identitySeed: Uint8Array, noiseSecret: Uint8Array, onionSeed: Uint8Array) {
  const identityKey = identityFromSeed(identitySeed).publicKey
  const onionKey = onionServiceKeyFromSeed(onionSeed)
  wipe(onionKey.expandedSecretKey)
  return {
    peerId: peerIdFromIdentityKey(identityKey),
    identityKey,
    noiseKey: x25519.getPublicKey(noiseSecret),
    onion: onionKey.address,
  }
}

/** Creates a fresh account in `dataDir`. ERR_ACCOUNT_EXISTS if there already is one. */
export async function createAccount(options: CreateAccountOptions): Promise<Account> {
  if (!isRecord(options)) throw new InvalidArgumentError('createAccount needs { dataDir, passphrase }')
  const { dataDir, passphrase, kdf, now = Date.now() } = options
  assertDataDir(dataDir)
  if (!Number.isSafeInteger(now) || now < 0) throw new InvalidArgumentError('now must be a non-negative integer (Unix ms)')
  const path = accountPath(dataDir)
  await ensureDataDir(dataDir)
  const exists = await stat(path).then(
    () => true,
    (err: unknown) => (errnoCode(err) === 'ENOENT' ? false : Promise.reject(ioError('inspect', path, err))),
  )
  if (exists) throw new StorageError('ERR_ACCOUNT_EXISTS', `an account already exists in ${dataDir}`)

  const identity = generateIdentity()
  const noise = generateNoiseKeyPair()
  const onionSeed = randomBytes(KEY_BYTES)
  const plaintext = new Uint8Array(SECRETS_BYTES)
  plaintext[0] = SECRETS_LAYOUT
  plaintext.set(identity.seed, 1)
  plaintext.set(noise.secretKey, 1 + KEY_BYTES)
  plaintext.set(onionSeed, 1 + 2 * KEY_BYTES)
  try {
    const secrets = await sealSecretsAsync(plaintext, passphrase, kdf === undefined ? {} : { kdf })
    const pub = derivePublic(identity.seed, noise.secretKey, onionSeed)
    const unsigned: Omit<AccountFile, 'mac'> = {
      v: ACCOUNT_VERSION,
      peerId: pub.peerId,
      identityKey: toBase64url(pub.identityKey),
      noiseKey: toBase64url(pub.noiseKey),
      onion: pub.onion,
      createdAt: now,
      recordSeq: 0,
      secrets,
    }
    const macKey = macKeyFromSeed(identity.seed)
    const file: AccountFile = { ...unsigned, mac: publicMac(unsigned, macKey) }
    wipe(macKey)
    await writeFileAtomic(path, serialize(file), 'exclusive')
    return new Account(dataDir, file, identity.seed, noise.secretKey, onionSeed)
  } catch (err) {
    wipe(identity.seed, noise.secretKey, onionSeed)
    throw err
  } finally {
    wipe(plaintext)
  }
}

/**
 * Unlocks the account in `dataDir`. ERR_NO_ACCOUNT if there is none, ERR_WRONG_PASSPHRASE, or
 * ERR_STORAGE_CORRUPT for a truncated, garbled or edited file (including public fields that do not match
 * the secrets).
 */
export async function loadAccount(options: LoadAccountOptions): Promise<Account> {
  if (!isRecord(options)) throw new InvalidArgumentError('loadAccount needs { dataDir, passphrase }')
  const { dataDir, passphrase } = options
  assertDataDir(dataDir)
  const file = parseAccountFile(await readAccountFile(accountPath(dataDir)))
  const plaintext = await openSecretsAsync(file.secrets, passphrase)
  try {
    if (plaintext.length !== SECRETS_BYTES || plaintext[0] !== SECRETS_LAYOUT) {
      throw new StorageError('ERR_STORAGE_CORRUPT', 'account secrets have an unknown layout')
    }
    const identitySeed = plaintext.slice(1, 1 + KEY_BYTES)
    const noiseSecret = plaintext.slice(1 + KEY_BYTES, 1 + 2 * KEY_BYTES)
    const onionSeed = plaintext.slice(1 + 2 * KEY_BYTES)
    const pub = derivePublic(identitySeed, noiseSecret, onionSeed)
    const matches =
      pub.peerId === file.peerId &&
      toBase64url(pub.identityKey) === file.identityKey &&
      equalBytes(pub.noiseKey, fromBase64url(file.noiseKey, KEY_BYTES)) &&
      pub.onion === file.onion
    const macKey = macKeyFromSeed(identitySeed)
    const authentic = equalBytes(fromBase64url(publicMac(file, macKey)), fromBase64url(file.mac))
    wipe(macKey)
    if (!matches || !authentic) {
      wipe(identitySeed, noiseSecret, onionSeed)
      throw new StorageError(
        'ERR_STORAGE_CORRUPT',
        matches
          ? 'account file is damaged: its public fields were edited (MAC mismatch)'
          : 'account file is damaged: its public fields (peer ID, keys, onion address) do not match its secrets',
      )
    }
    return new Account(dataDir, file, identitySeed, noiseSecret, onionSeed)
  } finally {
    wipe(plaintext)
  }
}

export interface ResolvePassphraseOptions {
  /** Path of a file holding the passphrase; one trailing newline is removed. Takes precedence. */
  passphraseFile?: string
  /** The passphrase from the environment; defaults to process.env.P2PMESS_PASSPHRASE when the key is absent. */
  env?: string | undefined
  /** Asks the user (interactive terminals only). */
  prompt?: () => Promise<string>
}

/**
 * Finds the passphrase: `passphraseFile`, else `env` (P2PMESS_PASSPHRASE), else `prompt()`. Fails with
 * ERR_NO_PASSPHRASE when none is available (non-interactive and nothing configured) or it is empty.
 */
export async function resolvePassphrase(options: ResolvePassphraseOptions = {}): Promise<string> {
  if (!isRecord(options)) throw new InvalidArgumentError('resolvePassphrase options must be an object')
  const env = 'env' in options ? options.env : process.env.P2PMESS_PASSPHRASE
  const { passphraseFile, prompt } = options
  if (passphraseFile !== undefined) {
    if (typeof passphraseFile !== 'string' || passphraseFile === '') {
      throw new InvalidArgumentError('passphraseFile must be a non-empty path')
    }
    let raw: Uint8Array
    try {
      const fh = await open(passphraseFile, 'r')
      try {
        if ((await fh.stat()).size > MAX_PASSPHRASE_FILE_BYTES) {
          throw new StorageError('ERR_STORAGE_IO', `passphrase file ${passphraseFile} is too large`)
        }
        raw = await fh.readFile()
      } finally {
        await fh.close()
      }
    } catch (cause) {
      if (cause instanceof P2PMessError) throw cause
      throw ioError('read the passphrase file', passphraseFile, cause)
    }
    let text: string
    try {
      text = fromUtf8(raw)
    } catch (cause) {
      throw new StorageError('ERR_STORAGE_IO', `passphrase file ${passphraseFile} is not valid UTF-8`, { cause })
    } finally {
      wipe(raw)
    }
    const passphrase = text.replace(/\r?\n$/, '')
    if (passphrase === '') throw new StorageError('ERR_NO_PASSPHRASE', `passphrase file ${passphraseFile} is empty`)
    return passphrase
  }
  if (env !== undefined && env !== '') {
    if (typeof env !== 'string') throw new InvalidArgumentError('env must be a string')
    return env
  }
  if (prompt !== undefined) {
    if (typeof prompt !== 'function') throw new InvalidArgumentError('prompt must be a function')
    const answer: unknown = await prompt()
    if (typeof answer !== 'string' || answer === '') {
      throw new StorageError('ERR_NO_PASSPHRASE', 'no passphrase was entered')
    }
    return answer
  }
  throw new StorageError(
    'ERR_NO_PASSPHRASE',
    'no passphrase available: pass --passphrase-file <path>, set P2PMESS_PASSPHRASE, or run in an interactive terminal',
  )
}
