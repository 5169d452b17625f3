import test from 'ava'
import { ed25519 } from '@noble/curves/ed25519.js'
import { DecodeError, InvalidArgumentError } from '../src/errors.js'
import { concatBytes, fromBase64url, toBase64url, utf8 } from '../src/protocol/bytes.js'
import { generateNoiseKeyPair, identityFromSeed, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import {
  MAX_RECORD_BYTES,
  MAX_RECORD_LIFETIME_MS,
  RECORD_VERSION,
  createRecord,
  isNewerRecord,
  serializeRecord,
  verifyRecord,
  type DirectoryRecord,
  type RecordRejectReason,
  type VerifyResult,
} from '../src/protocol/record.js'
import { seededRandom } from './helpers/random.js'

const NOW = 1_800_000_000_000 // fixed clock (ms)
const EXPIRES = NOW / 1000 + 3600
const SEED_A = new Uint8Array(32).fill(1)
const SEED_B = new Uint8Array(32).fill(2)
const ONION_A = onionServiceKeyFromSeed(new Uint8Array(32).fill(3)).address
const ONION_B = onionServiceKeyFromSeed(new Uint8Array(32).fill(4)).address
const NOISE_A = new Uint8Array(32).fill(5)
const NOISE_B = new Uint8Array(32).fill(6)

function make(over: Partial<{ seed: Uint8Array; onion: string; noiseKey: Uint8Array; seq: number; expires: number }> = {}): DirectoryRecord {
  return createRecord({
    identitySeed: over.seed ?? SEED_A,
    onion: over.onion ?? ONION_A,
    noiseKey: over.noiseKey ?? NOISE_A,
    seq: over.seq ?? 7,
    expires: over.expires ?? EXPIRES,
  })
}

function expectReject(t: import('ava').ExecutionContext, result: VerifyResult, reason: RecordRejectReason, note = ''): void {
  if (result.ok) {
    t.fail(`expected ${reason}, got ok ${note}`)
    return
  }
  t.is(result.reason, reason, `${result.message} ${note}`)
  t.true(result.message.length > 0)
}

const good = make()
const goodText = serializeRecord(good)

test('round trip: create, serialize, verify from text and from parsed JSON', (t) => {
  t.is(good.v, RECORD_VERSION)
  t.is(good.id, peerIdFromIdentityKey(identityFromSeed(SEED_A).publicKey))
  t.is(good.onion, ONION_A)
  t.is(good.noiseKey, toBase64url(NOISE_A))
  t.deepEqual(JSON.parse(goodText), good)
  t.deepEqual(Object.keys(JSON.parse(goodText)), ['v', 'id', 'identityKey', 'onion', 'noiseKey', 'seq', 'expires', 'sig'])
  t.true(goodText.length < 400, `typical record is ${goodText.length} bytes`)
  t.log(`serialized record: ${goodText.length} bytes`)
  for (const input of [goodText, JSON.parse(goodText) as unknown, { ...good }]) {
    const r = verifyRecord(input, { now: NOW, expectedId: good.id })
    if (!r.ok) return t.fail(r.message)
    t.deepEqual(r.record, good)
    t.deepEqual(r.identityKey, identityFromSeed(SEED_A).publicKey)
    t.deepEqual(r.noiseKey, NOISE_A)
    t.deepEqual(r.onionPublicKey, onionServiceKeyFromSeed(new Uint8Array(32).fill(3)).publicKey)
    t.is(serializeRecord(r.record), goodText)
  }
  // Whitespace and key order in the text are irrelevant; the parsed values are what is signed.
  const reordered = JSON.stringify(Object.fromEntries(Object.entries(good).reverse()), null, 2)
  t.true(verifyRecord(reordered, { now: NOW }).ok)
  // Tolerant expectedId: as the user typed it.
  t.true(verifyRecord(good, { now: NOW, expectedId: good.id.toUpperCase().replaceAll('-', ' ') }).ok)
  // Object.create(null) objects are plain too.
  t.true(verifyRecord(Object.assign(Object.create(null) as object, good), { now: NOW }).ok)
})

test('the signature covers the documented byte encoding', (t) => {
  const u16 = (n: number) => new Uint8Array([n >> 8, n & 0xff])
  const u64 = (n: number) => {
    const out = new Uint8Array(8)
    let x = BigInt(n)
    for (let i = 7; i >= 0; i--, x >>= 8n) out[i] = Number(x & 0xffn)
    return out
  }
  const field = (b: Uint8Array) => concatBytes(u16(b.length), b)
  const message = concatBytes(
    utf8('p2pmess-record-v1\0'),
    field(new Uint8Array([1])),
    field(utf8(good.id)),
    field(fromBase64url(good.identityKey)),
    field(utf8(good.onion)),
    field(fromBase64url(good.noiseKey)),
    field(u64(good.seq)),
    field(u64(good.expires)),
  )
  t.is(message.length, 18 + 7 * 2 + 1 + 34 + 32 + 62 + 32 + 8 + 8)
  t.true(ed25519.verify(fromBase64url(good.sig), message, fromBase64url(good.identityKey), { zip215: false }))
  const big = make({ seq: Number.MAX_SAFE_INTEGER })
  const bigMessage = concatBytes(message.subarray(0, message.length - 20), field(u64(big.seq)), field(u64(big.expires)))
  t.true(ed25519.verify(fromBase64url(big.sig), bigMessage, fromBase64url(big.identityKey)))
})

test('every field changed after signing is caught with the right reason', (t) => {
  const other = make({ seed: SEED_B })
  const check = (patch: Partial<Record<keyof DirectoryRecord, unknown>>, reason: RecordRejectReason) => {
    expectReject(t, verifyRecord({ ...good, ...patch }, { now: NOW }), reason, JSON.stringify(patch))
  }
  check({ v: 2 }, 'unsupported_version')
  check({ id: other.id }, 'id_mismatch')
  check({ identityKey: other.identityKey }, 'id_mismatch')
  check({ identityKey: other.identityKey, id: other.id }, 'bad_signature')
  check({ onion: ONION_B }, 'bad_signature')
  check({ noiseKey: toBase64url(NOISE_B) }, 'bad_signature')
  check({ seq: good.seq + 1 }, 'bad_signature')
  check({ seq: 0 }, 'bad_signature')
  check({ expires: good.expires + 1 }, 'bad_signature')
  check({ expires: good.expires - 1 }, 'bad_signature')
  check({ sig: other.sig }, 'bad_signature')
  check({ sig: make({ seq: 8 }).sig }, 'bad_signature')
  // Transplanting another peer's signed payload under our key cannot work either.
  check({ ...other, id: good.id, identityKey: good.identityKey }, 'bad_signature')
  const sig = fromBase64url(good.sig)
  for (let i = 0; i < 64; i += 7) {
    const flipped = sig.slice()
    flipped[i]! ^= 0x10
    check({ sig: toBase64url(flipped) }, 'bad_signature')
  }
})

test('each reject reason', (t) => {
  const v = (input: unknown, reason: RecordRejectReason, options: { now: number; expectedId?: string } = { now: NOW }) =>
    expectReject(t, verifyRecord(input, options), reason, typeof input === 'string' ? input.slice(0, 60) : JSON.stringify(input)?.slice(0, 60))
  // too_large: raw text and parsed values alike.
  v(' '.repeat(MAX_RECORD_BYTES + 1), 'too_large')
  v(goodText + ' '.repeat(MAX_RECORD_BYTES - goodText.length + 1), 'too_large')
  v(goodText.replace('"v":1', `"v":1${' '.repeat(2000)}`), 'too_large')
  v({ ...good, id: 'x'.repeat(MAX_RECORD_BYTES) }, 'too_large')
  v(goodText.replace(good.id, '\u00e9'.repeat(1000)), 'too_large') // 1000 chars, 2000 UTF-8 bytes
  t.true(verifyRecord(goodText + ' '.repeat(MAX_RECORD_BYTES - goodText.length), { now: NOW }).ok)
  // unsupported_version
  v({ ...good, v: 2 }, 'unsupported_version')
  v({ v: 3, whatever: true }, 'unsupported_version')
  // expired / expiry_too_far, at the exact boundaries.
  const exp = good.expires * 1000
  v(good, 'expired', { now: exp })
  t.true(verifyRecord(good, { now: exp - 1 }).ok)
  t.true(verifyRecord(good, { now: exp - MAX_RECORD_LIFETIME_MS }).ok)
  v(good, 'expiry_too_far', { now: exp - MAX_RECORD_LIFETIME_MS - 1 })
  // id_mismatch through expectedId.
  const other = make({ seed: SEED_B })
  v(good, 'id_mismatch', { now: NOW, expectedId: other.id })
  v(good, 'id_mismatch', { now: NOW, expectedId: 'not a peer id' })
  // malformed
  const malformed: unknown[] = [
    undefined, null, 0, 1.5, true, '', 'null', '[]', '{', '"x"', '{"v":1}', [], [good], new Date(), new Uint8Array(8), () => good,
    { ...good, extra: 1 },
    { ...good, v: '1' }, { ...good, v: 0 }, { ...good, v: 1.5 }, { ...good, v: null },
    { ...good, id: good.id.toUpperCase() }, { ...good, id: good.id.replaceAll('-', '') }, { ...good, id: 5 },
    { ...good, identityKey: good.identityKey + '=' }, { ...good, identityKey: good.identityKey.slice(1) },
    { ...good, identityKey: toBase64url(new Uint8Array(32)) }, // y = 0: not a point
    { ...good, identityKey: toBase64url(Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? 1 : 0))) }, // small order
    { ...good, onion: good.onion.toUpperCase() }, { ...good, onion: good.onion.slice(0, 56) },
    { ...good, onion: good.onion.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')) }, // checksum
    { ...good, noiseKey: good.noiseKey.slice(0, 42) + 'B' }, // 43 chars but non-zero trailing bits
    { ...good, noiseKey: Buffer.from(NOISE_A).toString('base64') },
    { ...good, seq: -1 }, { ...good, seq: 1.5 }, { ...good, seq: 2 ** 53 }, { ...good, seq: '7' }, { ...good, seq: NaN },
    { ...good, expires: 0 }, { ...good, expires: -5 }, { ...good, expires: EXPIRES + 0.5 }, { ...good, expires: Infinity },
    { ...good, sig: good.sig.slice(1) }, { ...good, sig: good.sig + 'A' }, { ...good, sig: null },
    { ...good, sig: good.sig.slice(0, 85) + 'B' }, // non-canonical tail
    { ...good, seq: { valueOf: () => 7 } }, { ...good, seq: [7] },
  ]
  for (const m of malformed) v(m, 'malformed')
  for (const key of Object.keys(good)) {
    const missing: Record<string, unknown> = { ...good }
    delete missing[key]
    v(missing, 'malformed')
  }
  v(good, 'malformed', { now: NaN })
})

test('hostile shapes: __proto__, getters, proxies, class instances, deep nesting', (t) => {
  const polluted = goodText.replace('{', '{"__proto__":{"polluted":true},')
  expectReject(t, verifyRecord(polluted, { now: NOW }), 'malformed')
  t.is(({} as Record<string, unknown>).polluted, undefined)
  expectReject(t, verifyRecord(JSON.parse(polluted), { now: NOW }), 'malformed')
  expectReject(t, verifyRecord(goodText.replace('{', '{"constructor":{"prototype":{}},'), { now: NOW }), 'malformed')
  let getterRan = false
  const withGetter = { ...good }
  Object.defineProperty(withGetter, 'seq', { enumerable: true, get: () => ((getterRan = true), 7) })
  expectReject(t, verifyRecord(withGetter, { now: NOW }), 'malformed')
  t.false(getterRan)
  const throwingProxy = new Proxy(
    {},
    {
      ownKeys: () => {
        throw new DecodeError('ERR_DECODE', 'trap')
      },
    },
  )
  expectReject(t, verifyRecord(throwingProxy, { now: NOW }), 'malformed')
  class Fake {
    v = 1
  }
  expectReject(t, verifyRecord(Object.assign(new Fake(), good), { now: NOW }), 'malformed')
  expectReject(t, verifyRecord({ ...good, [Symbol('x')]: 1 }, { now: NOW }), 'malformed')
  let deep: unknown = good
  for (let i = 0; i < 200_000; i++) deep = [deep]
  expectReject(t, verifyRecord(deep, { now: NOW }), 'malformed')
  expectReject(t, verifyRecord({ ...good, seq: deep }, { now: NOW }), 'malformed')
  expectReject(t, verifyRecord('['.repeat(1000) + ']'.repeat(1000), { now: NOW }), 'malformed')
  const cyclic: Record<string, unknown> = { ...good }
  cyclic.sig = cyclic
  expectReject(t, verifyRecord(cyclic, { now: NOW }), 'malformed')
  expectReject(t, verifyRecord({ ...good, seq: 10n }, { now: NOW }), 'malformed')
  expectReject(t, verifyRecord(good, null as unknown as { now: number }), 'malformed')
})

test('seeded fuzz: random and mutated inputs never throw, and nothing but the original verifies', (t) => {
  const rand = seededRandom(0xc0ffee)
  const pick = <T>(xs: readonly T[]): T => xs[rand.int(xs.length)]!
  const randomValue = (depth: number): unknown => {
    switch (rand.int(depth > 3 ? 5 : 7)) {
      case 0: return rand.int(2 ** 40) - 2 ** 39
      case 1: return pick([0, -0, 1, NaN, Infinity, 1.5, 2 ** 53, null, true, false])
      case 2: return Array.from(rand.bytes(rand.int(40)), (b) => String.fromCharCode(b)).join('')
      case 3: return pick(Object.values(good))
      case 4: return toBase64url(rand.bytes(pick([31, 32, 33, 64])))
      case 5: return Array.from({ length: rand.int(4) }, () => randomValue(depth + 1))
      default: {
        const o: Record<string, unknown> = {}
        for (let i = rand.int(9); i > 0; i--) o[pick([...Object.keys(good), '__proto__', 'x', ''])] = randomValue(depth + 1)
        return o
      }
    }
  }
  let cases = 0
  let accepted = 0
  const run = (input: unknown) => {
    const r = verifyRecord(input, { now: NOW })
    cases++
    if (r.ok) {
      accepted++
      t.is(serializeRecord(r.record), goodText, 'a mutated input verified as a different record')
    } else if (r.message === 'record could not be read') {
      // verifyRecord's last-resort catch is for exotic in-process values only; plain data must never reach it.
      t.fail(`internal exception on ${JSON.stringify(input)?.slice(0, 200)}`)
    }
  }
  // 1. random JSON-ish values, as objects and as text.
  for (let i = 0; i < 3000; i++) {
    const value = randomValue(0)
    run(value)
    run(JSON.stringify(value))
  }
  // 2. byte-level mutations of the valid text: flips, inserts, deletes, truncation, splices.
  for (let i = 0; i < 4000; i++) {
    let s = goodText
    for (let k = 1 + rand.int(3); k > 0; k--) {
      const at = rand.int(s.length)
      switch (rand.int(5)) {
        case 0: s = s.slice(0, at) + String.fromCharCode(s.charCodeAt(at) ^ (1 << rand.int(7))) + s.slice(at + 1); break
        case 1: s = s.slice(0, at) + pick(['"', '{', '}', ',', ':', '0', '-', '\\', ' ', '\u0000', 'e9']) + s.slice(at); break
        case 2: s = s.slice(0, at) + s.slice(at + 1 + rand.int(4)); break
        case 3: s = s.slice(0, at); break
        default: s = s.slice(0, at) + goodText.slice(rand.int(goodText.length)); break
      }
    }
    run(s)
  }
  // 3. field-level mutations of the parsed record.
  const keys = Object.keys(good) as (keyof DirectoryRecord)[]
  for (let i = 0; i < 3000; i++) {
    const o: Record<string, unknown> = { ...good }
    const key = pick(keys)
    const current = o[key]
    o[key] =
      typeof current === 'string' && rand.next() < 0.6
        ? (() => {
            const at = rand.int(current.length)
            return current.slice(0, at) + pick([...'abcdefghijklmnopqrstuvwxyz234567ABCDEF-_=01']) + current.slice(at + 1)
          })()
        : typeof current === 'number' && rand.next() < 0.6
          ? current + pick([-1, 1, 2 ** 32, -(2 ** 32), 0.5])
          : randomValue(2)
    run(o)
  }
  t.log(`${cases} fuzz cases, ${accepted} accepted (each identical to the original record)`)
  t.true(cases >= 13_000)
})

test('isNewerRecord orders by seq within one peer', (t) => {
  const r7 = make({ seq: 7 })
  const r8 = make({ seq: 8, expires: EXPIRES - 100 })
  t.true(isNewerRecord(r7, undefined))
  t.true(isNewerRecord(r8, r7))
  t.false(isNewerRecord(r7, r8))
  t.false(isNewerRecord(r7, make({ seq: 7, onion: ONION_B })))
  t.throws(() => isNewerRecord(make({ seed: SEED_B, seq: 9 }), r7), { instanceOf: InvalidArgumentError })
})

test('createRecord validates its parameters with typed errors', (t) => {
  const base = { identitySeed: SEED_A, onion: ONION_A, noiseKey: NOISE_A, seq: 1, expires: EXPIRES }
  for (const patch of [
    { identitySeed: new Uint8Array(31) }, { noiseKey: new Uint8Array(33) }, { noiseKey: 'key' },
    { seq: -1 }, { seq: 1.5 }, { seq: 2 ** 53 }, { expires: 0 }, { expires: 1.5 }, { expires: NaN },
  ]) {
    t.throws(() => createRecord({ ...base, ...patch } as typeof base), { instanceOf: InvalidArgumentError }, JSON.stringify(patch))
  }
  t.throws(() => createRecord({ ...base, onion: 'example.com' }), { instanceOf: DecodeError })
  t.throws(() => createRecord(null as unknown as typeof base), { instanceOf: InvalidArgumentError })
  // A non-canonical but valid address is stored canonically.
  t.is(createRecord({ ...base, onion: ONION_A.slice(0, 56).toUpperCase() }).onion, ONION_A)
  const noise = generateNoiseKeyPair().publicKey
  t.is(createRecord({ ...base, noiseKey: noise }).noiseKey, toBase64url(noise))
})
