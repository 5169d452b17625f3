import test from 'ava'
import type { ExecutionContext } from 'ava'
import { InvalidArgumentError, StorageError } from '../src/errors.js'
import { utf8 } from '../src/protocol/bytes.js'
import {
  DEFAULT_KDF,
  normalizePassphrase,
  openSecrets,
  openSecretsAsync,
  sealSecrets,
  sealSecretsAsync,
  type KdfParams,
  type VaultEnvelope,
} from '../src/protocol/vault.js'
import { seededRandom } from './helpers/random.js'

/** The cheapest parameters the vault accepts, so tests stay fast. */
const CHEAP: KdfParams = { name: 'scrypt', N: 2 ** 10, r: 8, p: 1 }
const PASS = 'correct horse battery staple'

/** A seeded `random` option for the vault: its salt and nonce then repeat. */
const seededBytes = (seed: number): ((n: number) => Uint8Array) => seededRandom(seed).bytes

const secret = Uint8Array.from({ length: 96 }, (_, i) => (i * 131 + 7) & 0xff)

function storageCode(t: ExecutionContext, fn: () => unknown, label: string): string {
  const err = t.throws(fn, { instanceOf: StorageError }, label)
  return err?.code ?? 'none'
}

test('seal/open round trip (sync and async, several sizes)', async (t) => {
  for (const n of [0, 1, 32, 96, 1000]) {
    const pt = Uint8Array.from({ length: n }, (_, i) => (i * 7) & 0xff)
    const env = sealSecrets(pt, PASS, { kdf: CHEAP })
    t.deepEqual(openSecrets(env, PASS), pt)
    t.deepEqual(openSecrets(JSON.stringify(env), PASS), pt)
    t.deepEqual(openSecrets(utf8(JSON.stringify(env)), PASS), pt)
    t.deepEqual(await openSecretsAsync(env, PASS), pt)
    const envAsync = await sealSecretsAsync(pt, PASS, { kdf: CHEAP })
    t.deepEqual(openSecrets(envAsync, PASS), pt)
  }
})

test('envelope carries version, KDF params, fresh salt and nonce; the plaintext never appears', (t) => {
  const a = sealSecrets(secret, PASS, { kdf: CHEAP })
  const b = sealSecrets(secret, PASS, { kdf: CHEAP })
  t.deepEqual(Object.keys(a).sort(), ['check', 'ciphertext', 'kdf', 'nonce', 'salt', 'v'])
  t.is(a.v, 1)
  t.deepEqual(a.kdf, CHEAP)
  t.not(a.salt, b.salt)
  t.not(a.nonce, b.nonce)
  t.not(a.ciphertext, b.ciphertext)
  t.false(JSON.stringify(a).includes(Buffer.from(secret).toString('base64url')))
  t.false(JSON.stringify(a).includes(Buffer.from(secret).toString('hex')))
})

test('a deterministic random source gives a deterministic envelope; bad sources are refused', (t) => {
  const a = sealSecrets(secret, PASS, { kdf: CHEAP, random: seededBytes(1) })
  const b = sealSecrets(secret, PASS, { kdf: CHEAP, random: seededBytes(1) })
  t.deepEqual(a, b)
  t.throws(() => sealSecrets(secret, PASS, { kdf: CHEAP, random: () => new Uint8Array(3) }), {
    instanceOf: InvalidArgumentError,
  })
})

test('default KDF parameters take roughly 0.5-1 s here and round-trip', (t) => {
  const t0 = performance.now()
  const env = sealSecrets(secret, PASS)
  const sealMs = performance.now() - t0
  t.deepEqual(env.kdf, DEFAULT_KDF)
  const t1 = performance.now()
  t.deepEqual(openSecrets(env, PASS), secret)
  const openMs = performance.now() - t1
  t.log(`scrypt N=2^17 r=8 p=1: seal ${sealMs.toFixed(0)} ms, open ${openMs.toFixed(0)} ms`)
  t.true(sealMs > 100, 'the default KDF must not be trivially cheap')
})

test('wrong passphrase gives ERR_WRONG_PASSPHRASE with a clear message that does not echo it', async (t) => {
  const env = sealSecrets(secret, PASS, { kdf: CHEAP })
  for (const wrong of ['correct horse battery stapl', 'Correct horse battery staple', ' ' + PASS]) {
    const err = t.throws(() => openSecrets(env, wrong), { instanceOf: StorageError })
    t.is(err?.code, 'ERR_WRONG_PASSPHRASE')
    t.regex(err?.message ?? '', /wrong passphrase/)
    t.false((err?.message ?? '').includes(wrong))
  }
  await t.throwsAsync(openSecretsAsync(env, 'nope'), { instanceOf: StorageError, code: 'ERR_WRONG_PASSPHRASE' })
})

test('passphrase normalization: NFC and non-ASCII spaces; empty and control characters refused', (t) => {
  const nfc = 'caf\u00e9 na\u00efve'
  const nfd = 'cafe\u0301 nai\u0308ve'
  const env = sealSecrets(secret, nfc, { kdf: CHEAP })
  t.deepEqual(openSecrets(env, nfd), secret)
  t.deepEqual(openSecrets(env, 'caf\u00e9\u00a0na\u00efve'), secret)
  // NFC, not NFKC: the fullwidth form is a different passphrase.
  t.deepEqual(normalizePassphrase('\uff41'), utf8('\uff41'))
  for (const bad of ['', 'a\nb', 'tab\there', 'x\u0000', 'lone \ud800 surrogate', 'x'.repeat(1025)]) {
    t.throws(() => sealSecrets(secret, bad, { kdf: CHEAP }), { instanceOf: InvalidArgumentError }, JSON.stringify(bad))
  }
  t.throws(() => normalizePassphrase(42), { instanceOf: InvalidArgumentError })
})

test('tampering with any character of the envelope gives a typed error, never plaintext', (t) => {
  const env = sealSecrets(secret, PASS, { kdf: CHEAP })
  const text = JSON.stringify(env)
  const ctStart = text.indexOf(env.ciphertext)
  const nonceStart = text.indexOf(env.nonce)
  let cases = 0
  const codes = new Map<string, number>()
  for (let i = 0; i < text.length; i++) {
    for (const replacement of [String.fromCharCode(text.charCodeAt(i) ^ 1), 'A', '"', '9']) {
      if (replacement === text[i]) continue
      const tampered = text.slice(0, i) + replacement + text.slice(i + 1)
      cases++
      const code = storageCode(t, () => openSecrets(tampered, PASS), `position ${i} -> ${replacement}`)
      codes.set(code, (codes.get(code) ?? 0) + 1)
      t.true(code === 'ERR_STORAGE_CORRUPT' || code === 'ERR_WRONG_PASSPHRASE', code)
      const inCiphertext = i >= ctStart && i < ctStart + env.ciphertext.length
      const inNonce = i >= nonceStart && i < nonceStart + env.nonce.length
      if (inCiphertext || inNonce) t.is(code, 'ERR_STORAGE_CORRUPT', `position ${i}`)
    }
  }
  t.log(`${cases} single-character tamperings: ${JSON.stringify(Object.fromEntries(codes))}`)
})

test('tampering with any bit of the decoded ciphertext or nonce is ERR_STORAGE_CORRUPT', (t) => {
  const env = sealSecrets(secret, PASS, { kdf: CHEAP })
  let cases = 0
  for (const field of ['ciphertext', 'nonce'] as const) {
    const raw = Buffer.from(env[field], 'base64url')
    for (let bit = 0; bit < raw.length * 8; bit += 3) {
      const copy = Uint8Array.from(raw)
      copy[bit >> 3]! ^= 1 << (bit & 7)
      const tampered: VaultEnvelope = { ...env, [field]: Buffer.from(copy).toString('base64url') }
      t.is(storageCode(t, () => openSecrets(tampered, PASS), `${field} bit ${bit}`), 'ERR_STORAGE_CORRUPT')
      cases++
    }
  }
  t.log(`${cases} bit flips`)
})

test('absurd KDF parameters are rejected before any work', (t) => {
  const env = sealSecrets(secret, PASS, { kdf: CHEAP })
  const hostile: unknown[] = [
    { name: 'scrypt', N: 2 ** 40, r: 8, p: 1 },
    { name: 'scrypt', N: 2 ** 21, r: 8, p: 1 },
    { name: 'scrypt', N: 2 ** 20, r: 8, p: 1 }, // 1 GiB
    { name: 'scrypt', N: 2 ** 17, r: 1e9, p: 1 },
    { name: 'scrypt', N: 2 ** 17, r: 8, p: 2 ** 30 },
    { name: 'scrypt', N: 2 ** 17, r: 8, p: 16 }, // within p bound, but work 16x the default
    { name: 'scrypt', N: 1000, r: 8, p: 1 },
    { name: 'scrypt', N: 2 ** 9, r: 8, p: 1 },
    { name: 'scrypt', N: 2 ** 17, r: 0, p: 1 },
    { name: 'scrypt', N: 2 ** 17, r: 8.5, p: 1 },
    { name: 'scrypt', N: -(2 ** 17), r: 8, p: 1 },
    { name: 'scrypt', N: Number.NaN, r: 8, p: 1 },
    { name: 'scrypt', N: Number.POSITIVE_INFINITY, r: 8, p: 1 },
    { name: 'scrypt', N: '131072', r: 8, p: 1 },
    { name: 'argon2id', N: 2 ** 17, r: 8, p: 1 },
    { name: 'scrypt', N: 2 ** 17, r: 8 },
    { name: 'scrypt', N: 2 ** 17, r: 8, p: 1, maxmem: 1 },
    null,
  ]
  for (const kdf of hostile) {
    const t0 = performance.now()
    t.is(storageCode(t, () => openSecrets({ ...env, kdf }, PASS), JSON.stringify(kdf)), 'ERR_STORAGE_CORRUPT')
    t.true(performance.now() - t0 < 200, `rejected quickly: ${JSON.stringify(kdf)}`)
    t.throws(() => sealSecrets(secret, PASS, { kdf: kdf as KdfParams }), { instanceOf: InvalidArgumentError })
  }
})

test('malformed envelopes are ERR_STORAGE_CORRUPT', (t) => {
  const env = sealSecrets(secret, PASS, { kdf: CHEAP })
  const bad: unknown[] = [
    null,
    undefined,
    42,
    'not json',
    '[]',
    [],
    new Uint8Array([0xff, 0xfe]),
    { ...env, v: 2 },
    { ...env, v: '1' },
    { ...env, extra: 1 },
    { ...env, salt: undefined },
    { ...env, salt: env.salt + 'A' },
    { ...env, salt: env.salt + '=' },
    { ...env, nonce: env.nonce.slice(4) },
    { ...env, check: 7 },
    { ...env, ciphertext: '' },
    { ...env, ciphertext: env.ciphertext.slice(0, 20) },
    { ...env, ciphertext: 'A'.repeat(200_000) },
    'x'.repeat(300_000),
  ]
  for (const b of bad) t.is(storageCode(t, () => openSecrets(b, PASS), String(b)), 'ERR_STORAGE_CORRUPT')
})

test('seeded fuzz: random edits of the JSON text either open to the same secret or fail typed', (t) => {
  const env = sealSecrets(secret, PASS, { kdf: CHEAP, random: seededBytes(7) })
  const text = JSON.stringify(env)
  const random = seededRandom(0x5eed)
  const alphabet = ' {}[]":,0123456789-_abcdefABCDEFxyz\\\u00e9'
  const CASES = 600
  let opened = 0
  for (let c = 0; c < CASES; c++) {
    let s = text
    const edits = 1 + random.int(3)
    for (let e = 0; e < edits; e++) {
      const at = random.int(s.length + 1)
      const ch = alphabet[random.int(alphabet.length)]!
      const op = random.int(3)
      s = op === 0 ? s.slice(0, at) + ch + s.slice(at) : op === 1 ? s.slice(0, at) + s.slice(at + 1) : s.slice(0, at) + ch + s.slice(at + 1)
    }
    try {
      t.deepEqual(openSecrets(s, PASS), secret, `case ${c}`)
      opened++
    } catch (err) {
      t.true(err instanceof StorageError, `case ${c}: ${String(err)}`)
    }
  }
  t.log(`${CASES} fuzz cases (seed 0x5eed), ${opened} still valid (whitespace or no-op edits)`)
})

test('argument validation on seal', (t) => {
  t.throws(() => sealSecrets('text' as unknown as Uint8Array, PASS, { kdf: CHEAP }), { instanceOf: InvalidArgumentError })
  t.throws(() => sealSecrets(new Uint8Array(65 * 1024), PASS, { kdf: CHEAP }), { instanceOf: InvalidArgumentError })
  t.throws(() => sealSecrets(secret, PASS, 'fast' as unknown as { kdf: KdfParams }), { instanceOf: InvalidArgumentError })
})
