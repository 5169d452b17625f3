/**
 * Behaviour of src/protocol/noise.ts: protocol-name selection, option validation, message order, limits,
 * low-order keys, nonces, rekey, tampering and garbage. Byte-exact agreement with independent
 * implementations is in noise-oracle.test.ts.
 */
import test, { type ExecutionContext } from 'ava'
import { createCipheriv } from 'node:crypto'
import { CryptoError, InvalidArgumentError, P2PMessError, type CryptoCode } from '../src/errors.js'
import { toHex } from '../src/protocol/bytes.js'
import {
  Handshake,
  MAX_MESSAGE_LENGTH,
  NoiseCipherState,
  generateKeyPair,
  x25519PublicKey,
  type HandshakeOptions,
} from '../src/protocol/noise.js'
import { seededRandom } from './helpers/random.js'
import { LOW_ORDER } from './helpers/x25519.js'

const IK = 'Noise_IK_25519_ChaChaPoly_BLAKE2b'
const XX = 'Noise_XX_25519_ChaChaPoly_BLAKE2s'
const NN = 'Noise_NN_25519_ChaChaPoly_SHA256'
const NK = 'Noise_NK_25519_ChaChaPoly_BLAKE2b'

const rand0 = seededRandom(0x5eed)
const alice = rand0.bytes(32)
const bob = rand0.bytes(32)
const bobPub = x25519PublicKey(bob)

function throwsCrypto(t: ExecutionContext, fn: () => unknown, code: CryptoCode, message?: string): void {
  t.throws(fn, { instanceOf: CryptoError, code }, message)
}

function xxPair(): [Handshake, Handshake] {
  return [new Handshake({ protocolName: XX, initiator: true, staticKey: alice }), new Handshake({ protocolName: XX, initiator: false, staticKey: bob })]
}

function ikPair(extra: Partial<HandshakeOptions> = {}): [Handshake, Handshake] {
  const init = new Handshake({ protocolName: IK, initiator: true, staticKey: alice, remoteStaticKey: bobPub, ...extra })
  const resp = new Handshake({ protocolName: IK, initiator: false, staticKey: bob, ...extra })
  return [init, resp]
}

/** Completes a handshake that was driven up to message `from`, checking payloads and the transports. */
function finishAndCheck(t: ExecutionContext, init: Handshake, resp: Handshake, from: number): void {
  for (let i = from; !init.complete; i++) {
    const [w, r] = i % 2 === 0 ? [init, resp] : [resp, init]
    const payload = Uint8Array.of(i, 1, 2, 3)
    t.deepEqual(r.readMessage(w.writeMessage(payload)), payload)
  }
  t.true(resp.complete)
  t.deepEqual(init.handshakeHash, resp.handshakeHash)
  const a = init.split()
  const b = resp.split()
  const m = Uint8Array.of(42)
  t.deepEqual(b.receive.decrypt(a.send.encrypt(m)), m)
  t.deepEqual(a.receive.decrypt(b.send.encrypt(m)), m)
}

// ---- protocol names and options --------------------------------------------------------------------------

test('every fundamental pattern × hash is accepted by name', (t) => {
  for (const p of ['N', 'K', 'X', 'NN', 'NK', 'NX', 'KN', 'KK', 'KX', 'XN', 'XK', 'XX', 'IN', 'IK', 'IX']) {
    for (const h of ['BLAKE2s', 'BLAKE2b', 'SHA256']) {
      const name = `Noise_${p}_25519_ChaChaPoly_${h}`
      const needsS = p !== 'N' && p[0] !== 'N'
      const needsRs = p.length === 1 || p[1] === 'K'
      const hs = new Handshake({
        protocolName: name,
        initiator: true,
        staticKey: needsS ? alice : undefined,
        remoteStaticKey: needsRs ? bobPub : undefined,
      })
      t.is(hs.protocolName, name)
    }
  }
})

test('unsupported protocol names are ERR_NOISE_PROTOCOL_NAME with the reason', (t) => {
  const cases: [string, RegExp][] = [
    ['Noise_XX_25519_AESGCM_SHA256', /cipher 'AESGCM'/],
    ['Noise_XX_448_ChaChaPoly_BLAKE2b', /DH '448'/],
    ['Noise_XX_25519_ChaChaPoly_SHA512', /hash 'SHA512'/],
    ['Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s', /modifiers/],
    ['Noise_XXfallback_25519_ChaChaPoly_BLAKE2s', /modifiers/],
    ['Noise_ZZ_25519_ChaChaPoly_BLAKE2s', /unknown pattern 'ZZ'/],
    ['Noise_X1X_25519_ChaChaPoly_BLAKE2s', /unknown pattern 'X1X'/],
    ['Noise_constructor_25519_ChaChaPoly_BLAKE2s', /pattern/],
    ['Noise_XX_25519_ChaChaPoly_toString', /hash 'toString'/],
    ['Noise_XX_25519_ChaChaPoly_BLAKE2s_extra', /expected Noise_/],
    ['noise_XX_25519_ChaChaPoly_BLAKE2s', /expected Noise_/],
    ['', /expected Noise_/],
  ]
  for (const [name, reason] of cases) {
    const err = t.throws(() => new Handshake({ protocolName: name, initiator: true, staticKey: alice }), {
      instanceOf: CryptoError,
      code: 'ERR_NOISE_PROTOCOL_NAME',
    })
    t.regex(err?.message ?? '', reason, name)
  }
})

test('malformed options are InvalidArgumentError naming the option', (t) => {
  const bad: [unknown, RegExp][] = [
    [null, /options/],
    [{ protocolName: 7, initiator: true }, /protocolName/],
    [{ protocolName: NN, initiator: 'yes' }, /initiator/],
    [{ protocolName: NN, initiator: true, prologue: 'p' }, /prologue/],
    [{ protocolName: XX, initiator: true, staticKey: alice.subarray(1) }, /staticKey must be 32 bytes/],
    [{ protocolName: XX, initiator: true, staticKey: Array.from(alice) }, /staticKey/],
    [{ protocolName: IK, initiator: true, staticKey: alice, remoteStaticKey: new Uint8Array(33) }, /remoteStaticKey/],
    [{ protocolName: NN, initiator: true, ephemeralKey: new Uint8Array(31) }, /ephemeralKey/],
    [{ protocolName: XX, initiator: true, staticKey: alice, remoteStaticKey: bobPub }, /remoteStaticKey is not used/],
    [{ protocolName: NN, initiator: true, staticKey: alice }, /staticKey is not used/],
  ]
  for (const [options, message] of bad) {
    t.throws(() => new Handshake(options as HandshakeOptions), { instanceOf: InvalidArgumentError, message })
  }
})

test('keys the pattern needs but that are missing are ERR_NOISE_MISSING_KEY', (t) => {
  const missing: HandshakeOptions[] = [
    { protocolName: IK, initiator: true, staticKey: alice },
    { protocolName: IK, initiator: true, remoteStaticKey: bobPub },
    { protocolName: IK, initiator: false },
    { protocolName: XX, initiator: true },
    { protocolName: XX, initiator: false },
    { protocolName: NK, initiator: true },
    { protocolName: 'Noise_KK_25519_ChaChaPoly_BLAKE2s', initiator: false, staticKey: bob },
    { protocolName: 'Noise_N_25519_ChaChaPoly_BLAKE2s', initiator: false },
  ]
  for (const options of missing) throwsCrypto(t, () => new Handshake(options), 'ERR_NOISE_MISSING_KEY', JSON.stringify(options.protocolName))
})

// ---- the happy path --------------------------------------------------------------------------------------

test('IK: two messages, payloads, identities, handshake hash, transport both ways', (t) => {
  const [init, resp] = ikPair({ prologue: Uint8Array.of(1, 2, 3) })
  t.false(init.complete)
  const m1 = init.writeMessage(Uint8Array.of(1))
  t.is(m1.length, 32 + 48 + 1 + 16)
  t.deepEqual(resp.readMessage(m1), Uint8Array.of(1))
  t.deepEqual(resp.remoteStaticKey, x25519PublicKey(alice))
  t.deepEqual(init.remoteStaticKey, bobPub)
  const m2 = resp.writeMessage()
  t.is(m2.length, 32 + 16)
  t.deepEqual(init.readMessage(m2), new Uint8Array(0))
  t.true(init.complete && resp.complete)
  t.deepEqual(init.handshakeHash, resp.handshakeHash)
  t.is(init.handshakeHash.length, 64)
  const a = init.split()
  const b = resp.split()
  for (let i = 0; i < 5; i++) {
    const m = rand0.bytes(i * 30)
    t.deepEqual(b.receive.decrypt(a.send.encrypt(m, Uint8Array.of(9)), Uint8Array.of(9)), m)
    t.deepEqual(a.receive.decrypt(b.send.encrypt(m)), m)
  }
  // The caller's key buffers are copied, never wiped or modified.
  t.is(toHex(alice), toHex(seededRandom(0x5eed).bytes(32)))
})

test('XX: the responder and initiator learn each other from the handshake', (t) => {
  const [init, resp] = xxPair()
  t.is(init.remoteStaticKey, undefined)
  resp.readMessage(init.writeMessage())
  init.readMessage(resp.writeMessage())
  t.deepEqual(init.remoteStaticKey, bobPub)
  resp.readMessage(init.writeMessage())
  t.deepEqual(resp.remoteStaticKey, x25519PublicKey(alice))
  t.true(init.complete && resp.complete)
  t.is(init.handshakeHash.length, 32)
})

test('fresh ephemerals differ; generateKeyPair is consistent with x25519PublicKey', (t) => {
  const a = new Handshake({ protocolName: NN, initiator: true }).writeMessage()
  const b = new Handshake({ protocolName: NN, initiator: true }).writeMessage()
  t.notDeepEqual(a, b)
  const kp = generateKeyPair()
  t.deepEqual(x25519PublicKey(kp.privateKey), kp.publicKey)
  t.throws(() => x25519PublicKey(new Uint8Array(31)), { instanceOf: InvalidArgumentError })
})

test('one-way patterns: only the initiator sends transport messages (§7.4)', (t) => {
  for (const p of ['N', 'K', 'X']) {
    const name = `Noise_${p}_25519_ChaChaPoly_BLAKE2s`
    const init = new Handshake({ protocolName: name, initiator: true, staticKey: p === 'N' ? undefined : alice, remoteStaticKey: bobPub })
    const resp = new Handshake({ protocolName: name, initiator: false, staticKey: bob, remoteStaticKey: p === 'K' ? x25519PublicKey(alice) : undefined })
    t.deepEqual(resp.readMessage(init.writeMessage(Uint8Array.of(1))), Uint8Array.of(1))
    t.true(init.complete && resp.complete)
    const a = init.split()
    const b = resp.split()
    t.deepEqual(b.receive.decrypt(a.send.encrypt(Uint8Array.of(2))), Uint8Array.of(2))
    throwsCrypto(t, () => b.send.encrypt(Uint8Array.of(3)), 'ERR_NOISE_STATE', `${p} responder send`)
    throwsCrypto(t, () => a.receive.decrypt(new Uint8Array(17)), 'ERR_NOISE_STATE', `${p} initiator receive`)
    throwsCrypto(t, () => b.send.rekey(), 'ERR_NOISE_STATE')
  }
})

// ---- message order ---------------------------------------------------------------------------------------

test('out-of-turn, after-complete and early split/hash are ERR_NOISE_STATE', (t) => {
  const [init, resp] = ikPair()
  throwsCrypto(t, () => resp.writeMessage(), 'ERR_NOISE_STATE')
  throwsCrypto(t, () => init.readMessage(new Uint8Array(48)), 'ERR_NOISE_STATE')
  throwsCrypto(t, () => init.split(), 'ERR_NOISE_STATE')
  throwsCrypto(t, () => init.handshakeHash, 'ERR_NOISE_STATE')
  const m1 = init.writeMessage()
  throwsCrypto(t, () => init.writeMessage(), 'ERR_NOISE_STATE')
  resp.readMessage(m1)
  throwsCrypto(t, () => resp.readMessage(m1), 'ERR_NOISE_STATE')
  init.readMessage(resp.writeMessage())
  for (const hs of [init, resp]) {
    throwsCrypto(t, () => hs.writeMessage(), 'ERR_NOISE_STATE')
    throwsCrypto(t, () => hs.readMessage(m1), 'ERR_NOISE_STATE')
    hs.split()
    throwsCrypto(t, () => hs.split(), 'ERR_NOISE_STATE', 'split is one-shot')
    t.is(hs.handshakeHash.length, 64, 'the hash stays readable after split')
  }
})

test('non-bytes arguments are InvalidArgumentError', (t) => {
  const [init] = ikPair()
  t.throws(() => init.writeMessage('hi' as unknown as Uint8Array), { instanceOf: InvalidArgumentError, message: /payload/ })
  t.throws(() => init.readMessage(null as unknown as Uint8Array), { instanceOf: InvalidArgumentError, message: /message/ })
  const cs = NoiseCipherState.fromKey(new Uint8Array(32))
  t.throws(() => cs.encrypt([1] as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
  t.throws(() => cs.decrypt(new Uint8Array(20), 'ad' as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
  t.throws(() => NoiseCipherState.fromKey(new Uint8Array(16)), { instanceOf: InvalidArgumentError })
  for (const n of [-1n, 1n << 64n, 5 as unknown as bigint]) t.throws(() => cs.setNonce(n), { instanceOf: InvalidArgumentError })
})

// ---- sizes -----------------------------------------------------------------------------------------------

test('oversized messages are ERR_NOISE_MESSAGE and leave the handshake usable', (t) => {
  const [init, resp] = ikPair()
  const overhead = 32 + 48 + 16
  throwsCrypto(t, () => init.writeMessage(new Uint8Array(MAX_MESSAGE_LENGTH - overhead + 1)), 'ERR_NOISE_MESSAGE')
  const biggest = init.writeMessage(new Uint8Array(MAX_MESSAGE_LENGTH - overhead))
  t.is(biggest.length, MAX_MESSAGE_LENGTH)
  throwsCrypto(t, () => resp.readMessage(new Uint8Array(MAX_MESSAGE_LENGTH + 1)), 'ERR_NOISE_MESSAGE')
  t.is(resp.readMessage(biggest).length, MAX_MESSAGE_LENGTH - overhead)
  finishAndCheck(t, init, resp, 1)

  const cs = NoiseCipherState.fromKey(new Uint8Array(32))
  throwsCrypto(t, () => cs.encrypt(new Uint8Array(MAX_MESSAGE_LENGTH - 16 + 1)), 'ERR_NOISE_MESSAGE')
  t.is(cs.nonce, 0n)
  t.is(cs.encrypt(new Uint8Array(MAX_MESSAGE_LENGTH - 16)).length, MAX_MESSAGE_LENGTH)
  throwsCrypto(t, () => cs.decrypt(new Uint8Array(MAX_MESSAGE_LENGTH + 1)), 'ERR_NOISE_MESSAGE')
  throwsCrypto(t, () => cs.decrypt(new Uint8Array(15)), 'ERR_NOISE_MESSAGE')
})

test('every truncation of IK and XX messages is rejected and the full message still works', (t) => {
  const scenarios: [string, () => [Handshake, Handshake]][] = [
    [IK, () => ikPair()],
    [XX, xxPair],
  ]
  for (const [name, make] of scenarios) {
    const [init, resp] = make()
    for (let i = 0; !init.complete; i++) {
      const [w, r] = i % 2 === 0 ? [init, resp] : [resp, init]
      const message = w.writeMessage(Uint8Array.of(7, 7))
      // A first XX message is an unauthenticated ephemeral key: only lengths below 32 can be detected.
      const detectable = name === XX && i === 0 ? 32 : message.length
      for (let len = 0; len < detectable; len++) {
        const err = t.throws(() => r.readMessage(message.subarray(0, len)), { instanceOf: CryptoError })
        t.true(err?.code === 'ERR_NOISE_MESSAGE' || err?.code === 'ERR_NOISE_DECRYPT', `${name} msg ${i} len ${len}: ${err?.code}`)
      }
      t.deepEqual(r.readMessage(message), Uint8Array.of(7, 7))
    }
    finishAndCheck(t, init, resp, 99)
  }
})

// ---- tampering -------------------------------------------------------------------------------------------

test('every single-bit flip of authenticated handshake messages is ERR_NOISE_DECRYPT; state survives', (t) => {
  let flips = 0
  const scenarios: [string, () => [Handshake, Handshake], number[]][] = [
    // [name, make, indexes of messages whose every byte is authenticated on arrival]
    ['IK', () => ikPair(), [0, 1]],
    ['XX', xxPair, [1, 2]],
    ['NK', () => [new Handshake({ protocolName: NK, initiator: true, remoteStaticKey: bobPub }), new Handshake({ protocolName: NK, initiator: false, staticKey: bob })], [0, 1]],
  ]
  for (const [name, make, authenticated] of scenarios) {
    const [init, resp] = make()
    for (let i = 0; !init.complete; i++) {
      const [w, r] = i % 2 === 0 ? [init, resp] : [resp, init]
      const payload = Uint8Array.of(1, 2, 3, 4, 5)
      const message = w.writeMessage(payload)
      if (authenticated.includes(i)) {
        for (let bit = 0; bit < message.length * 8; bit++) {
          const bad = message.slice()
          bad[bit >> 3]! ^= 1 << (bit & 7)
          throwsCrypto(t, () => r.readMessage(bad), 'ERR_NOISE_DECRYPT', `${name} msg ${i} bit ${bit}`)
          flips++
        }
      }
      t.deepEqual(r.readMessage(message), payload, `${name} msg ${i} accepted after the tampered copies`)
    }
    finishAndCheck(t, init, resp, 99)
  }
  t.log(`${flips} tampered handshake messages rejected`)
  t.true(flips > 3000)
})

test('tampering the unauthenticated first NN message is caught by the next message', (t) => {
  for (let bit = 0; bit < 32 * 8; bit += 7) {
    const init = new Handshake({ protocolName: NN, initiator: true })
    const resp = new Handshake({ protocolName: NN, initiator: false })
    const m1 = init.writeMessage()
    m1[bit >> 3]! ^= 1 << (bit & 7)
    resp.readMessage(m1) // §7.7: payload of the first NN message has no authentication
    const m2 = resp.writeMessage()
    throwsCrypto(t, () => init.readMessage(m2), 'ERR_NOISE_DECRYPT')
  }
})

// ---- low-order keys --------------------------------------------------------------------------------------

test('a low-order remote static key is ERR_LOW_ORDER_KEY when first used', (t) => {
  for (const bad of LOW_ORDER) {
    const init = new Handshake({ protocolName: NK, initiator: true, remoteStaticKey: bad })
    throwsCrypto(t, () => init.writeMessage(), 'ERR_LOW_ORDER_KEY', toHex(bad))
  }
})

test('a low-order ephemeral or static key in a received message is ERR_LOW_ORDER_KEY; state survives', (t) => {
  const [init, resp] = ikPair()
  const m1 = init.writeMessage()
  for (const bad of LOW_ORDER) {
    const forged = m1.slice()
    forged.set(bad, 0)
    throwsCrypto(t, () => resp.readMessage(forged), 'ERR_LOW_ORDER_KEY', toHex(bad))
  }
  t.deepEqual(resp.readMessage(m1), new Uint8Array(0))
  // The responder's own ephemeral answer: a low-order `e` makes the initiator's ee fail.
  const m2 = resp.writeMessage()
  const forged = m2.slice()
  forged.set(LOW_ORDER[0]!, 0)
  throwsCrypto(t, () => init.readMessage(forged), 'ERR_LOW_ORDER_KEY')
  t.deepEqual(init.readMessage(m2), new Uint8Array(0))

})

// ---- CipherState: nonces, failures, rekey, independent ChaCha20-Poly1305 check ----------------------------

/** node:crypto (OpenSSL) ChaCha20-Poly1305 with the §12.3 nonce, as an independent reference. */
function opensslSeal(key: Uint8Array, n: bigint, ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(12)
  new DataView(nonce.buffer).setBigUint64(4, n, true)
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 })
  c.setAAD(ad, { plaintextLength: plaintext.length })
  return new Uint8Array(Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]))
}

test('transport ciphertexts match OpenSSL ChaCha20-Poly1305 with 4 zero bytes + LE64 nonce', (t) => {
  const key = rand0.bytes(32)
  const cs = NoiseCipherState.fromKey(key)
  for (const n of [0n, 1n, 255n, 256n, 0x0102030405060708n, (1n << 64n) - 2n]) {
    cs.setNonce(n)
    const pt = rand0.bytes(50)
    const ad = rand0.bytes(7)
    t.is(toHex(cs.encrypt(pt, ad)), toHex(opensslSeal(key, n, ad, pt)), `n=${n}`)
    t.is(cs.nonce, n + 1n)
  }
})

test('nonce 2^64-1 is reserved: encrypt and decrypt there are ERR_NOISE_NONCE_EXHAUSTED', (t) => {
  const key = rand0.bytes(32)
  const tx = NoiseCipherState.fromKey(key)
  const rx = NoiseCipherState.fromKey(key)
  tx.setNonce((1n << 64n) - 2n)
  rx.setNonce((1n << 64n) - 2n)
  const last = tx.encrypt(Uint8Array.of(1))
  t.deepEqual(rx.decrypt(last), Uint8Array.of(1))
  throwsCrypto(t, () => tx.encrypt(Uint8Array.of(2)), 'ERR_NOISE_NONCE_EXHAUSTED')
  throwsCrypto(t, () => rx.decrypt(last), 'ERR_NOISE_NONCE_EXHAUSTED')
  t.is(tx.nonce, (1n << 64n) - 1n)
})

test('a failed decrypt does not advance the nonce', (t) => {
  const key = rand0.bytes(32)
  const tx = NoiseCipherState.fromKey(key)
  const rx = NoiseCipherState.fromKey(key)
  const c0 = tx.encrypt(Uint8Array.of(0), Uint8Array.of(1))
  const c1 = tx.encrypt(Uint8Array.of(1))
  throwsCrypto(t, () => rx.decrypt(c1), 'ERR_NOISE_DECRYPT', 'out of order')
  throwsCrypto(t, () => rx.decrypt(c0), 'ERR_NOISE_DECRYPT', 'wrong ad')
  const flipped = c0.slice()
  flipped[c0.length - 1]! ^= 1
  throwsCrypto(t, () => rx.decrypt(flipped, Uint8Array.of(1)), 'ERR_NOISE_DECRYPT', 'bad tag')
  t.is(rx.nonce, 0n)
  t.deepEqual(rx.decrypt(c0, Uint8Array.of(1)), Uint8Array.of(0))
  t.deepEqual(rx.decrypt(c1), Uint8Array.of(1))
})

test('rekey follows §4.2 (OpenSSL reference), keeps n, and both sides stay in step', (t) => {
  const key = rand0.bytes(32)
  const tx = NoiseCipherState.fromKey(key)
  const rx = NoiseCipherState.fromKey(key)
  t.deepEqual(rx.decrypt(tx.encrypt(Uint8Array.of(1))), Uint8Array.of(1))
  tx.rekey()
  rx.rekey()
  t.is(tx.nonce, 1n)
  const expectedKey = opensslSeal(key, (1n << 64n) - 1n, new Uint8Array(0), new Uint8Array(32)).subarray(0, 32)
  const pt = Uint8Array.of(5, 6, 7)
  const ct = tx.encrypt(pt)
  t.is(toHex(ct), toHex(opensslSeal(expectedKey, 1n, new Uint8Array(0), pt)))
  t.deepEqual(rx.decrypt(ct), pt)
  const stale = NoiseCipherState.fromKey(key)
  stale.setNonce(2n)
  throwsCrypto(t, () => stale.decrypt(tx.encrypt(pt)), 'ERR_NOISE_DECRYPT')
  throwsCrypto(t, () => new NoiseCipherState().rekey(), 'ERR_NOISE_STATE')
})

test('a CipherState without a key passes data through (§5.1)', (t) => {
  const cs = new NoiseCipherState()
  t.false(cs.hasKey())
  t.deepEqual(cs.encrypt(Uint8Array.of(1, 2)), Uint8Array.of(1, 2))
  t.deepEqual(cs.decrypt(Uint8Array.of(3)), Uint8Array.of(3))
})

// ---- seeded garbage --------------------------------------------------------------------------------------

test('seeded random garbage into handshakes and transports yields typed errors only', (t) => {
  const rand = seededRandom(0xdecaf)
  const makers: (() => Handshake)[] = [
    () => new Handshake({ protocolName: IK, initiator: false, staticKey: bob }),
    () => new Handshake({ protocolName: XX, initiator: false, staticKey: bob }),
    () => new Handshake({ protocolName: NK, initiator: false, staticKey: bob }),
    () => new Handshake({ protocolName: 'Noise_XK_25519_ChaChaPoly_SHA256', initiator: false, staticKey: bob }),
    () => new Handshake({ protocolName: NN, initiator: false }),
    () => {
      // an IK initiator awaiting the second message
      const [init] = ikPair()
      init.writeMessage()
      return init
    },
  ]
  const transport = NoiseCipherState.fromKey(rand.bytes(32))
  let cases = 0
  let accepted = 0
  const untyped: string[] = []
  const tryIt = (fn: () => unknown): void => {
    cases++
    try {
      fn()
      accepted++
    } catch (err) {
      if (!(err instanceof P2PMessError)) untyped.push(String(err))
    }
  }
  for (let i = 0; i < 3000; i++) {
    const len = rand.next() < 0.05 ? rand.int(70000) : rand.int(200)
    const garbage = rand.bytes(len)
    const hs = makers[i % makers.length]!()
    tryIt(() => hs.readMessage(garbage))
    tryIt(() => transport.decrypt(garbage, rand.bytes(rand.int(4))))
  }
  t.deepEqual(untyped, [])
  t.is(transport.nonce, 0n)
  t.log(`${cases} garbage inputs, ${accepted} accepted (only unauthenticated first NN/XX messages can be)`)
  t.is(cases, 6000)
})
