import test from 'ava'
import { ed25519 } from '@noble/curves/ed25519.js'
import { sha3_256 } from '@noble/hashes/sha3.js'
import { CryptoError, DecodeError, InvalidArgumentError, hasCode } from '../src/errors.js'
import { concatBytes, fromHex, utf8 } from '../src/protocol/bytes.js'
import {
  canonicalOnionAddress,
  isValidOnionAddress,
  onionAddressFromPublicKey,
  onionServiceKeyFromSeed,
  parseTorOnionKeyBlob,
  publicKeyFromExpandedSecretKey,
  publicKeyFromOnionAddress,
  torOnionKeyBlob,
} from '../src/protocol/onion.js'
import { seededRandom } from './helpers/random.js'

// rend-spec-v3 [ONIONADDRESS] example addresses.
const SPEC_EXAMPLES = [
  'pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion',
  'sp3k262uwy4r2k3ycr5awluarykdpag6a7y33jxop4cs2lu5uz5sseqd.onion',
  'xa4r2iadxm55fbnqgwwi5mymqdcofiu3w6rpbtqn7b2dyn7mgwj64jyd.onion',
]

/** Independent RFC 4648 base32 encoder (BigInt) to cross-check the module. */
function referenceAddress(pub: Uint8Array, version = 3, checksum?: Uint8Array): string {
  const sum = checksum ?? sha3_256(concatBytes(utf8('.onion checksum'), pub, new Uint8Array([version]))).subarray(0, 2)
  const raw = concatBytes(pub, sum, new Uint8Array([version]))
  let n = 0n
  for (const b of raw) n = (n << 8n) | BigInt(b)
  let out = ''
  for (let i = 55; i >= 0; i--) out += 'abcdefghijklmnopqrstuvwxyz234567'[Number((n >> BigInt(i * 5)) & 31n)]
  return out + '.onion'
}

function onionError(t: import('ava').ExecutionContext, addr: unknown, re: RegExp): void {
  const err = t.throws(() => publicKeyFromOnionAddress(addr as string), { instanceOf: DecodeError })
  t.true(hasCode(err, 'ERR_ONION_ADDRESS'))
  t.regex(err?.message ?? '', re, String(addr))
  t.false(isValidOnionAddress(addr))
}

test('rend-spec-v3 example addresses decode and re-encode exactly', (t) => {
  for (const addr of SPEC_EXAMPLES) {
    const pub = publicKeyFromOnionAddress(addr)
    t.is(pub.length, 32)
    t.is(onionAddressFromPublicKey(pub), addr)
    t.is(referenceAddress(pub), addr)
    t.true(isValidOnionAddress(addr))
    t.deepEqual(publicKeyFromOnionAddress(addr.toUpperCase()), pub)
    t.deepEqual(publicKeyFromOnionAddress(addr.slice(0, 56)), pub)
    t.is(canonicalOnionAddress(addr.slice(0, 56).toUpperCase()), addr)
  }
})

test('addresses round-trip for seeded random keys and match an independent encoder', (t) => {
  const rand = seededRandom(1)
  for (let i = 0; i < 200; i++) {
    const pub = ed25519.getPublicKey(rand.bytes(32))
    const addr = onionAddressFromPublicKey(pub)
    t.regex(addr, /^[a-z2-7]{55}d\.onion$/) // version 3 makes the last character 'd'
    t.is(addr, referenceAddress(pub))
    t.deepEqual(publicKeyFromOnionAddress(addr), pub)
  }
  t.throws(() => onionAddressFromPublicKey(new Uint8Array(31)), { instanceOf: InvalidArgumentError })
})

test('bad addresses fail with a clear ERR_ONION_ADDRESS', (t) => {
  const good = SPEC_EXAMPLES[0]!
  const pub = publicKeyFromOnionAddress(good)
  // Every single-character change either breaks the checksum or the version byte.
  let changed = 0
  for (let i = 0; i < 56; i++) {
    const c = good[i] === 'a' ? 'b' : 'a'
    t.false(isValidOnionAddress(good.slice(0, i) + c + good.slice(i + 1)))
    changed++
  }
  t.log(`${changed} single-character changes rejected`)
  onionError(t, good.slice(0, 10) + (good[10] === 'a' ? 'b' : 'a') + good.slice(11), /checksum mismatch/)
  onionError(t, referenceAddress(pub, 2), /version 2 is not supported/)
  onionError(t, referenceAddress(pub, 3, new Uint8Array([0, 0])), /checksum/)
  onionError(t, good.slice(1), /56 base32/)
  onionError(t, 'a' + good, /56 base32/)
  onionError(t, good.replace('p', '1'), /56 base32/)
  onionError(t, good + '.onion', /56 base32/)
  onionError(t, good.replace('.onion', '.com'), /56 base32/)
  onionError(t, ` ${good}`, /56 base32/)
  onionError(t, good.replace('k', '\u212a'), /56 base32/) // Kelvin sign lowercases to 'k'
  onionError(t, 'x'.repeat(100_000), /56 base32/)
  onionError(t, 42, /text/)
  onionError(t, null, /text/)
  // A small-order point with a valid checksum and version is still not a usable service key.
  onionError(t, referenceAddress(fromHex('01' + '00'.repeat(31))), /valid Ed25519/)
  // y = p (non-canonical encoding of y = 0).
  onionError(t, referenceAddress(fromHex('edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f')), /valid Ed25519/)
})

test('onion service key from a seed: tor expanded key, address, and consistency with RFC 8032', (t) => {
  const rand = seededRandom(2)
  for (let i = 0; i < 50; i++) {
    const seed = rand.bytes(32)
    const key = onionServiceKeyFromSeed(seed)
    t.is(key.expandedSecretKey.length, 64)
    t.deepEqual(key.publicKey, ed25519.getPublicKey(seed))
    t.deepEqual(publicKeyFromExpandedSecretKey(key.expandedSecretKey), key.publicKey)
    const ext = ed25519.utils.getExtendedPublicKey(seed)
    t.deepEqual(key.expandedSecretKey, concatBytes(ext.head, ext.prefix))
    t.is(key.expandedSecretKey[0]! & 7, 0)
    t.is(key.expandedSecretKey[31]! & 0xc0, 0x40)
    t.is(key.address, onionAddressFromPublicKey(key.publicKey))
  }
  t.throws(() => onionServiceKeyFromSeed(new Uint8Array(64)), { instanceOf: InvalidArgumentError })
})

test('ADD_ONION key blob: ED25519-V3 + padded standard base64, strict inverse', (t) => {
  const rand = seededRandom(3)
  for (let i = 0; i < 50; i++) {
    const { expandedSecretKey } = onionServiceKeyFromSeed(rand.bytes(32))
    const blob = torOnionKeyBlob(expandedSecretKey)
    t.regex(blob, /^ED25519-V3:[A-Za-z0-9+/]{86}==$/)
    t.is(blob, 'ED25519-V3:' + Buffer.from(expandedSecretKey).toString('base64'))
    t.deepEqual(parseTorOnionKeyBlob(blob), expandedSecretKey)
  }
  const blob = torOnionKeyBlob(onionServiceKeyFromSeed(new Uint8Array(32)).expandedSecretKey)
  const b64 = blob.slice('ED25519-V3:'.length)
  const bad = (text: unknown, re: RegExp) => {
    const err = t.throws(() => parseTorOnionKeyBlob(text as string), { instanceOf: CryptoError })
    t.true(hasCode(err, 'ERR_KEY_FORMAT'))
    t.regex(err?.message ?? '', re)
  }
  bad(b64, /must start with ED25519-V3:/)
  bad('RSA1024:' + b64, /must start/)
  bad('ed25519-v3:' + b64, /must start/)
  bad('ED25519-V3:' + b64.slice(0, 86), /64 bytes/)
  bad('ED25519-V3:' + b64 + '=', /64 bytes/)
  bad('ED25519-V3:' + b64.slice(0, 85) + '-==', /64 bytes/)
  bad('ED25519-V3:' + b64.slice(0, 86) + '\n==', /64 bytes/)
  bad(undefined, /must start/)
  // The last character carries 2 spare bits: a non-zero tail is a second spelling of the same key.
  const last = b64[85]!
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  const twin = alphabet[alphabet.indexOf(last) ^ 1]!
  bad('ED25519-V3:' + b64.slice(0, 85) + twin + '==', /canonical/)
  // An unclamped scalar is not something tor would ever produce.
  const unclamped = parseTorOnionKeyBlob(blob)
  unclamped[0]! |= 1
  bad('ED25519-V3:' + Buffer.from(unclamped).toString('base64'), /clamped/)
  t.throws(() => torOnionKeyBlob(unclamped), { instanceOf: CryptoError })
  t.throws(() => torOnionKeyBlob(new Uint8Array(32)), { instanceOf: InvalidArgumentError })
})

test('known answers produced by tor 0.4.9 itself', (t) => {
  // tor generated this service key in a HiddenServiceDir (hs_ed25519_secret_key minus its 32-byte header) and
  // wrote the hostname next to it.
  const torBlob =
    'ED25519-V3:cOJ6svHEAp8zLJEQQeGTrbrq8kc3R2cXAcymB7aZ+3cbUQSGUUgapxNYU7iJax59xDZ1N5c7e73wY2sVqI0OmQ=='
  const key = parseTorOnionKeyBlob(torBlob)
  t.is(onionAddressFromPublicKey(publicKeyFromExpandedSecretKey(key)), 'g6wkprdxcxhpim6qwbhfayn4v3fskpvqoqlxq2neqlabeccfnvz6rwad.onion')
  t.is(torOnionKeyBlob(key), torBlob)
  // The other way: tor, given the expanded key we derive from seed 0x2a×32, published this hostname.
  t.is(onionServiceKeyFromSeed(new Uint8Array(32).fill(42)).address, 'df7wwi7bnsctfrvlza4pvtk6u6e34ddwwkjagnadtp5iwpjwrvq5bpad.onion')
})
