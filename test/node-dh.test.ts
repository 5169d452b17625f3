/**
 * The node:crypto DH backend computes exactly noble's X25519: RFC 7748 vectors, seeded random keys and public
 * values (top bit set or not, non-canonical u), low-order points, and whole Noise handshakes across backends.
 */
import test from 'ava'
import { NODE_DH } from '../src/crypto/node-dh.js'
import { CryptoError, InvalidArgumentError } from '../src/errors.js'
import { fromHex, toHex } from '../src/protocol/bytes.js'
import { Handshake, NOBLE_DH, type DhBackend } from '../src/protocol/noise.js'
import { seededRandom } from './helpers/random.js'
import { LOW_ORDER } from './helpers/x25519.js'

const BACKENDS: readonly DhBackend[] = [NOBLE_DH, NODE_DH]

/** RFC 7748 §6.1. */
const ALICE = { sk: '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', pk: '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a' }
const BOB = { sk: '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb', pk: 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f' }
const SHARED = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'

for (const backend of BACKENDS) {
  test(`${backend.name}: RFC 7748 §6.1 key agreement`, (t) => {
    const alice = backend.fromPrivateKey(fromHex(ALICE.sk))
    const bob = backend.fromPrivateKey(fromHex(BOB.sk))
    t.is(toHex(alice.publicKey), ALICE.pk)
    t.is(toHex(bob.publicKey), BOB.pk)
    t.is(toHex(alice.dh(bob.publicKey)), SHARED)
    t.is(toHex(bob.dh(alice.publicKey)), SHARED)
  })

  test(`${backend.name}: every low-order point is ERR_LOW_ORDER_KEY; bad lengths and destroyed keys are typed errors`, (t) => {
    const pair = backend.generate()
    for (const bad of LOW_ORDER) {
      const err = t.throws(() => pair.dh(bad), { instanceOf: CryptoError }, toHex(bad))
      t.is(err?.code, 'ERR_LOW_ORDER_KEY')
    }
    t.throws(() => pair.dh(new Uint8Array(31)), { instanceOf: InvalidArgumentError })
    t.throws(() => backend.fromPrivateKey(new Uint8Array(33)), { instanceOf: InvalidArgumentError })
    pair.destroy()
    t.is(t.throws(() => pair.dh(fromHex(BOB.pk)), { instanceOf: CryptoError })?.code, 'ERR_NOISE_STATE')
  })
}

test('node:crypto and noble agree on seeded random private keys and arbitrary 32-byte public values', (t) => {
  const rand = seededRandom(0xd11e)
  let cases = 0
  for (let i = 0; i < 400; i++) {
    const sk = rand.bytes(32)
    const remote = rand.bytes(32)
    // Half of the public values get the top bit set (RFC 7748 §5: ignored); a tenth are the non-canonical
    // u = p + k, k < 18 (reduced mod p to a small u, some of low order).
    if (i % 10 === 0) {
      remote.fill(0xff)
      remote[0] = 0xed + rand.int(18)
      remote[31] = 0x7f
    }
    if (i % 2 === 0) remote[31]! |= 0x80
    const [a, b] = BACKENDS.map((backend) => backend.fromPrivateKey(sk)) as [ReturnType<DhBackend['fromPrivateKey']>, ReturnType<DhBackend['fromPrivateKey']>]
    t.is(toHex(a.publicKey), toHex(b.publicKey))
    const outcome = (pair: typeof a): string => {
      try {
        return toHex(pair.dh(remote))
      } catch (err) {
        return err instanceof CryptoError ? err.code : 'untyped'
      }
    }
    t.is(outcome(a), outcome(b), `sk ${toHex(sk)} remote ${toHex(remote)}`)
    cases++
  }
  t.log(`${cases} key agreements identical across backends`)
})

test('a Noise IK handshake completes across backends, and fixed ephemerals give byte-identical messages', (t) => {
  const rand = seededRandom(0x1c)
  const [si, sr, ei, er] = [rand.bytes(32), rand.bytes(32), rand.bytes(32), rand.bytes(32)]
  const transcript = (initiatorDh: DhBackend, responderDh: DhBackend): string[] => {
    const responderStatic = responderDh.fromPrivateKey(sr)
    const init = new Handshake({ protocolName: 'Noise_IK_25519_ChaChaPoly_BLAKE2b', initiator: true, staticKey: si, remoteStaticKey: responderStatic.publicKey, ephemeralKey: ei, dh: initiatorDh })
    const resp = new Handshake({ protocolName: 'Noise_IK_25519_ChaChaPoly_BLAKE2b', initiator: false, staticKey: responderStatic, ephemeralKey: er, dh: responderDh })
    const m1 = init.writeMessage(Uint8Array.of(1, 2, 3))
    t.deepEqual(resp.readMessage(m1), Uint8Array.of(1, 2, 3))
    const m2 = resp.writeMessage()
    init.readMessage(m2)
    t.is(toHex(init.handshakeHash), toHex(resp.handshakeHash))
    // A lent static key pair is not destroyed by the handshake that used it.
    t.notThrows(() => responderStatic.dh(responderStatic.publicKey))
    return [toHex(m1), toHex(m2), toHex(init.handshakeHash)]
  }
  const reference = transcript(NOBLE_DH, NOBLE_DH)
  t.deepEqual(transcript(NODE_DH, NODE_DH), reference)
  t.deepEqual(transcript(NODE_DH, NOBLE_DH), reference)
  t.deepEqual(transcript(NOBLE_DH, NODE_DH), reference)
  // Random ephemerals across backends still agree on the handshake hash.
  const responderStatic = NODE_DH.fromPrivateKey(sr)
  const init = new Handshake({ protocolName: 'Noise_IK_25519_ChaChaPoly_BLAKE2b', initiator: true, staticKey: si, remoteStaticKey: responderStatic.publicKey })
  const resp = new Handshake({ protocolName: 'Noise_IK_25519_ChaChaPoly_BLAKE2b', initiator: false, staticKey: responderStatic, dh: NODE_DH })
  resp.readMessage(init.writeMessage())
  init.readMessage(resp.writeMessage())
  t.is(toHex(init.handshakeHash), toHex(resp.handshakeHash))
})
