/**
 * X25519 (RFC 7748) on node:crypto (OpenSSL) as a Noise DH backend (src/protocol/noise.ts `DhBackend`).
 *
 * Why: noble's pure-JS X25519 costs ~1 ms per DH and an IK handshake does eight of them plus two key generations
 * on its critical path; OpenSSL takes ~0.15 ms per DH (measured in `npm run bench:protocol`). The function is the
 * same (test/node-dh.test.ts compares both backends on random, edge-case and low-order inputs), so nothing about
 * which handshakes succeed depends on the backend — unlike Ed25519, whose verification rules differ between the
 * two and which therefore stays on noble (docs/DECISIONS.md "Crypto").
 *
 * Keys cross into OpenSSL as DER: a private key as PKCS#8 OneAsymmetricKey and a public key as
 * SubjectPublicKeyInfo, both with the id-X25519 algorithm (RFC 8410 §4, §7). Importing a private key makes
 * OpenSSL derive its public key (~0.45 ms), so a static key is imported once (`fromPrivateKey`) and the key pair
 * reused; ephemeral keys are generated inside OpenSSL and never exist as JS bytes. A KeyObject cannot be zeroed
 * from JS: `destroy()` drops our reference and the memory goes with the object.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { CryptoError } from '../errors.js'
import { assertBytes, concatBytes, fromHex } from '../protocol/bytes.js'
import { lowOrderKeyError, type DhBackend, type DhKeyPair } from '../protocol/noise.js'

const KEY_BYTES = 32
/** SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.110 }, OCTET STRING { OCTET STRING (32) } } — RFC 8410 §7. */
const PKCS8_PREFIX = fromHex('302e020100300506032b656e04220420')
/** SEQUENCE { SEQUENCE { OID 1.3.101.110 }, BIT STRING (32 bytes) } — RFC 8410 §4. */
const SPKI_PREFIX = fromHex('302a300506032b656e032100')

function rawPublicKey(key: KeyObject): Uint8Array {
  const der = key.export({ format: 'der', type: 'spki' })
  return new Uint8Array(der.subarray(SPKI_PREFIX.length))
}

function keyPair(privateKey: KeyObject, publicKeyObject: KeyObject): DhKeyPair {
  let key: KeyObject | undefined = privateKey
  return {
    publicKey: rawPublicKey(publicKeyObject),
    dh(publicKey) {
      assertBytes(publicKey, 'publicKey', KEY_BYTES)
      if (key === undefined) throw new CryptoError('ERR_NOISE_STATE', 'the key pair was destroyed')
      let remote: KeyObject
      try {
        remote = createPublicKey({ key: Buffer.from(concatBytes(SPKI_PREFIX, publicKey)), format: 'der', type: 'spki' })
      } catch (cause) {
        // Not seen for any 32 bytes (test/node-dh.test.ts), but an import failure must not pass for a low-order key.
        throw new CryptoError('ERR_KEY_FORMAT', 'OpenSSL refused the X25519 public key', { cause })
      }
      let shared: Buffer
      try {
        shared = diffieHellman({ privateKey: key, publicKey: remote })
      } catch (cause) {
        // With both keys imported, OpenSSL's X25519 derivation fails only on an all-zero result (RFC 7748 §6.1).
        throw lowOrderKeyError(cause)
      }
      const out = new Uint8Array(shared)
      shared.fill(0)
      return out
    },
    destroy() {
      key = undefined
    },
  }
}

export const NODE_DH: DhBackend = {
  name: 'node:crypto',
  generate() {
    const { privateKey, publicKey } = generateKeyPairSync('x25519')
    return keyPair(privateKey, publicKey)
  },
  fromPrivateKey(privateKey) {
    assertBytes(privateKey, 'privateKey', KEY_BYTES)
    const der = Buffer.alloc(PKCS8_PREFIX.length + KEY_BYTES)
    der.set(PKCS8_PREFIX)
    der.set(privateKey, PKCS8_PREFIX.length)
    const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
    der.fill(0)
    return keyPair(key, createPublicKey(key))
  },
}
