import test from 'ava'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { CryptoError, DecodeError, InvalidArgumentError, hasCode } from '../src/errors.js'
import { blake2b } from '@noble/hashes/blake2.js'
import { concatBytes, fromHex, toHex, utf8 } from '../src/protocol/bytes.js'
import {
  PEER_ID_LENGTH,
  fingerprint,
  generateIdentity,
  generateNoiseKeyPair,
  identityFromSeed,
  isCanonicalPeerId,
  isValidIdentityKey,
  parsePeerId,
  peerIdFromIdentityKey,
  peerIdMatchesKey,
  safetyNumber,
  signWithIdentity,
  verifySignature,
} from '../src/protocol/identity.js'
import { seededRandom } from './helpers/random.js'

const CROCKFORD = '0123456789abcdefghjkmnpqrstvwxyz'
// RFC 8032 §7.1 TEST 1.
const RFC_SEED = fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60')
const RFC_PUB = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a'
const RFC_SIG =
  'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b'
// Encoding of the identity point (0, 1): small order.
const IDENTITY_POINT = fromHex('0100000000000000000000000000000000000000000000000000000000000000')

test('identity keys follow RFC 8032 (test vector 1) and sign/verify', (t) => {
  const id = identityFromSeed(RFC_SEED)
  t.is(toHex(id.publicKey), RFC_PUB)
  t.is(toHex(signWithIdentity(RFC_SEED, new Uint8Array(0))), RFC_SIG)
  t.true(verifySignature(fromHex(RFC_SIG), new Uint8Array(0), id.publicKey))
  const fresh = generateIdentity()
  t.is(fresh.seed.length, 32)
  t.deepEqual(identityFromSeed(fresh.seed).publicKey, fresh.publicKey)
  t.throws(() => identityFromSeed(new Uint8Array(31)), { instanceOf: InvalidArgumentError })
  t.throws(() => signWithIdentity(RFC_SEED, 'text' as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
})

test('noise key pairs are X25519 pairs', (t) => {
  const kp = generateNoiseKeyPair()
  t.deepEqual(x25519.getPublicKey(kp.secretKey), kp.publicKey)
  t.notDeepEqual(generateNoiseKeyPair().publicKey, kp.publicKey)
})

test('verifySignature returns false, never throws, on hostile input', (t) => {
  const id = identityFromSeed(RFC_SEED)
  const msg = new Uint8Array([1, 2, 3])
  const sig = signWithIdentity(RFC_SEED, msg)
  t.true(verifySignature(sig, msg, id.publicKey))
  t.false(verifySignature(sig, new Uint8Array([1, 2, 4]), id.publicKey))
  for (let i = 0; i < 64; i++) {
    const bad = sig.slice()
    bad[i]! ^= 1 << (i % 8)
    t.false(verifySignature(bad, msg, id.publicKey), `bit flip in byte ${i}`)
  }
  // S + L is the same scalar mod L but a second encoding: strict verification refuses it.
  const L = ed25519.Point.CURVE().n
  let s = 0n
  for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i]!)
  s += L
  const malleable = sig.slice()
  for (let i = 32; i < 64; i++, s >>= 8n) malleable[i] = Number(s & 0xffn)
  t.false(verifySignature(malleable, msg, id.publicKey))
  // Under a small-order key, R = identity and S = 0 "verifies" every message; such keys are refused.
  const forged = new Uint8Array(64)
  forged.set(IDENTITY_POINT)
  t.false(isValidIdentityKey(IDENTITY_POINT))
  t.false(verifySignature(forged, msg, IDENTITY_POINT))
  const junk: unknown[] = [undefined, null, 'sig', 42, [], {}, new Uint8Array(63), new Uint8Array(65), new Uint16Array(32)]
  for (const j of junk) {
    t.false(verifySignature(j, msg, id.publicKey))
    t.false(verifySignature(sig, j, id.publicKey))
    t.false(verifySignature(sig, msg, j))
  }
  const rand = seededRandom(7)
  let cases = 0
  for (let i = 0; i < 300; i++, cases++) {
    t.false(verifySignature(rand.bytes(64), msg, rand.bytes(32)))
  }
  t.log(`${cases} random signature/key pairs rejected`)
})

test('peer IDs: canonical shape, deterministic, pinned vector', (t) => {
  const pub = identityFromSeed(RFC_SEED).publicKey
  const id = peerIdFromIdentityKey(pub)
  t.is(id.length, PEER_ID_LENGTH)
  t.regex(id, /^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){6}$/)
  t.is(peerIdFromIdentityKey(pub), id)
  t.true(isCanonicalPeerId(id))
  // Regression pin: changing the hash, domain, alphabet or checksum changes every peer ID in the world.
  t.is(id, 'g3vm-51sv-3w4s-rfqw-rjew-dh91-jm1b')
  // Independent re-derivation of the 26 hash symbols: top 130 bits of BLAKE2b-256(domain ‖ key), base32.
  const hash = blake2b(concatBytes(utf8('p2pmess peer-id v1\0'), pub), { dkLen: 32 })
  const top130 = BigInt('0x' + toHex(hash)) >> 126n
  t.is(id.replaceAll('-', '').slice(0, 26), top130.toString(32).padStart(26, '0').replace(/[0-9a-v]/g, (c) => CROCKFORD[parseInt(c, 32)]!))
  t.throws(() => peerIdFromIdentityKey(new Uint8Array(31)), { instanceOf: InvalidArgumentError })
  t.throws(() => peerIdFromIdentityKey(IDENTITY_POINT), { instanceOf: CryptoError })
})

test('parsePeerId tolerates case, spaces, separators and Crockford aliases, nothing else', (t) => {
  const id = peerIdFromIdentityKey(generateIdentity().publicKey)
  const bare = id.replaceAll('-', '')
  t.is(parsePeerId(id.toUpperCase()), id)
  t.is(parsePeerId(bare), id)
  t.is(parsePeerId(`  ${bare.match(/.{1,7}/g)!.join(' ')}\t`), id)
  t.is(parsePeerId(id.replaceAll('0', 'O').replaceAll('1', 'l')), id)
  t.is(parsePeerId(id.replaceAll('1', 'I')), id)
  const format = (text: unknown, re: RegExp) => {
    const err = t.throws(() => parsePeerId(text as string), { instanceOf: DecodeError })
    t.true(hasCode(err, 'ERR_PEER_ID_FORMAT'), String(text))
    t.regex(err?.message ?? '', re)
  }
  format(bare.slice(1), /must have 28 letters and digits, got 27/)
  format(bare + '0', /got 29/)
  format('', /got 0/)
  format(`u${bare.slice(1)}`, /'u'/)
  format(`${bare.slice(0, 5)}.${bare.slice(5)}`, /'\.'/)
  format(`${bare.slice(0, 5)}\u00e9${bare.slice(6)}`, /U\+00E9/)
  format(`${bare.slice(0, 5)}\u212a${bare.slice(6)}`, /U\+212A/) // Kelvin sign, lowercases to 'k'
  format(`${bare.slice(0, 5)}\n${bare.slice(5)}`, /U\+000A/)
  format('x'.repeat(1000), /too long/)
  format(42, /text/)
  t.false(isCanonicalPeerId(id.toUpperCase()))
  t.false(isCanonicalPeerId(bare))
})

test('the checksum catches every single substitution and every adjacent transposition', (t) => {
  const rand = seededRandom(0x5eed)
  let substitutions = 0
  let transpositions = 0
  for (let n = 0; n < 40; n++) {
    const seed = rand.bytes(32)
    const symbols = peerIdFromIdentityKey(identityFromSeed(seed).publicKey).replaceAll('-', '')
    for (let i = 0; i < symbols.length; i++) {
      for (const c of CROCKFORD) {
        if (c === symbols[i]) continue
        const typo = symbols.slice(0, i) + c + symbols.slice(i + 1)
        const err = t.throws(() => parsePeerId(typo), undefined, typo)
        if (!hasCode(err, 'ERR_PEER_ID_CHECKSUM')) t.fail(`substitution not caught: ${typo}`)
        substitutions++
      }
      if (i + 1 < symbols.length && symbols[i] !== symbols[i + 1]) {
        const typo = symbols.slice(0, i) + symbols[i + 1] + symbols[i] + symbols.slice(i + 2)
        const err = t.throws(() => parsePeerId(typo), undefined, typo)
        t.true(hasCode(err, 'ERR_PEER_ID_CHECKSUM'))
        t.is(err?.message, 'peer ID checksum mismatch — check for a typo')
        transpositions++
      }
    }
  }
  t.log(`${substitutions} substitutions and ${transpositions} transpositions over 40 seeded IDs, all caught`)
  t.true(substitutions === 40 * 28 * 31 && transpositions > 40 * 20)
})

test('random strings pass the checksum about 1 time in 1024 (10 check bits)', (t) => {
  const rand = seededRandom(99)
  const trials = 100_000
  let passed = 0
  for (let n = 0; n < trials; n++) {
    let s = ''
    for (let i = 0; i < 28; i++) s += CROCKFORD[rand.int(32)]
    try {
      parsePeerId(s)
      passed++
    } catch (err) {
      if (!hasCode(err, 'ERR_PEER_ID_CHECKSUM')) throw err
    }
  }
  t.log(`${passed} of ${trials} random strings passed (expected ~${Math.round(trials / 1024)})`)
  t.true(passed > 50 && passed < 150)
})

test('peerIdMatchesKey never throws', (t) => {
  const a = generateIdentity().publicKey
  const b = generateIdentity().publicKey
  const idA = peerIdFromIdentityKey(a)
  t.true(peerIdMatchesKey(idA, a))
  t.true(peerIdMatchesKey(idA.toUpperCase().replaceAll('-', ' '), a))
  t.false(peerIdMatchesKey(idA, b))
  t.false(peerIdMatchesKey(peerIdFromIdentityKey(b), a))
  for (const junk of [undefined, null, 42, '', 'nope', {}, new Uint8Array(32), IDENTITY_POINT]) {
    t.false(peerIdMatchesKey(junk, a))
    t.false(peerIdMatchesKey(idA, junk))
  }
})

test('safety numbers are symmetric 12×5 digit groups made of both fingerprints', (t) => {
  const a = generateIdentity().publicKey
  const b = generateIdentity().publicKey
  const c = generateIdentity().publicKey
  const ab = safetyNumber(a, b)
  t.is(ab, safetyNumber(b, a))
  t.regex(ab, /^\d{5}( \d{5}){11}$/)
  t.regex(fingerprint(a), /^\d{5}( \d{5}){5}$/)
  t.true(ab === `${fingerprint(a)} ${fingerprint(b)}` || ab === `${fingerprint(b)} ${fingerprint(a)}`)
  t.not(safetyNumber(a, c), ab)
  t.not(safetyNumber(c, b), ab)
  t.regex(safetyNumber(a, a), /^\d{5}( \d{5}){11}$/)
  t.is(
    safetyNumber(identityFromSeed(RFC_SEED).publicKey, identityFromSeed(new Uint8Array(32)).publicKey),
    '41455 11756 50007 27528 06351 74800 19751 66983 68411 66411 67798 23172',
  )
  t.throws(() => safetyNumber(a, new Uint8Array(3)), { instanceOf: InvalidArgumentError, message: /keyB/ })
  t.throws(() => safetyNumber(IDENTITY_POINT, a), { instanceOf: CryptoError, message: /keyA/ })
  t.throws(() => fingerprint('x' as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
})
