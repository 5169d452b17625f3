/**
 * Byte-exact agreement of src/protocol/noise.ts with two independent Noise implementations, used here only as
 * test oracles, with fixed static and ephemeral keys:
 *   - noise-c.wasm (rweather/noise-c compiled to wasm): every supported protocol name (15 patterns × BLAKE2s,
 *     BLAKE2b, SHA256). Fixed ephemerals go through noise-c's own test hook
 *     noise_handshakestate_get_fixed_ephemeral_dh().
 *   - noise-protocol (emilbayes, libsodium): the 15 patterns with BLAKE2b (the only hash it has). Fixed
 *     ephemerals go through its documented extension point createHandshake({ dh, … }) with a dh whose
 *     generateKeypair() hands out the test's key.
 * For each name and oracle: every handshake message, the handshake hash and transport messages in each
 * allowed direction are compared byte for byte, then both cross pairings (ours ↔ oracle) interoperate.
 */
import test from 'ava'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Handshake, SUPPORTED_HASHES, SUPPORTED_PATTERNS, x25519PublicKey } from '../src/protocol/noise.js'
import { toHex } from '../src/protocol/bytes.js'
import { seededRandom } from './helpers/random.js'

const require = createRequire(import.meta.url)

// ---- a side of a Noise session, implementation-agnostic -------------------------------------------------

interface Transport {
  send(plaintext: Uint8Array): Uint8Array
  receive(ciphertext: Uint8Array): Uint8Array
}
interface Party {
  write(payload: Uint8Array): Uint8Array
  read(message: Uint8Array): Uint8Array
  /** Valid once the last handshake message was written or read. */
  handshakeHash(): Uint8Array
  split(): Transport
}
interface Keys {
  prologue: Uint8Array
  initStatic: Uint8Array
  respStatic: Uint8Array
  initEphemeral: Uint8Array
  respEphemeral: Uint8Array
}
type PartyFactory = (protocolName: string, initiator: boolean, keys: Keys) => Party

/**
 * Which static keys a pattern uses, from its name (§7.4/§7.5 naming: the first letter is the initiator's
 * static N/K/X/I, the second the responder's N/K/X; one-way patterns always pre-know the responder's).
 */
function keyUse(pattern: string, initiator: boolean): { s: boolean; rs: boolean } {
  const [first = '', second = ''] = pattern.length === 1 ? [pattern, 'K'] : [pattern[0], pattern[1]]
  return initiator ? { s: first !== 'N', rs: second === 'K' } : { s: second !== 'N', rs: first === 'K' }
}

const ours: PartyFactory = (protocolName, initiator, keys) => {
  const use = keyUse(protocolName.split('_')[1]!, initiator)
  const hs = new Handshake({
    protocolName,
    initiator,
    prologue: keys.prologue,
    staticKey: use.s ? (initiator ? keys.initStatic : keys.respStatic) : undefined,
    remoteStaticKey: use.rs ? x25519PublicKey(initiator ? keys.respStatic : keys.initStatic) : undefined,
    ephemeralKey: initiator ? keys.initEphemeral : keys.respEphemeral,
  })
  return {
    write: (p) => hs.writeMessage(p),
    read: (m) => hs.readMessage(m),
    handshakeHash: () => hs.handshakeHash,
    split: () => {
      const { send, receive } = hs.split()
      return { send: (p) => send.encrypt(p), receive: (c) => receive.decrypt(c) }
    },
  }
}

// ---- noise-c.wasm ----------------------------------------------------------------------------------------

interface WasmBytes {
  readonly length: number
  free(): void
}
interface NoiseCLib {
  allocateBytes(size: number, data: Uint8Array): WasmBytes
  _noise_handshakestate_get_fixed_ephemeral_dh(state: number): number
  _noise_dhstate_set_keypair_private(dh: number, key: WasmBytes, length: number): number
}
interface NoiseCCipher {
  EncryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array
  DecryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array
}
interface NoiseCHandshake {
  readonly _state: number
  Initialize(prologue: Uint8Array | null, s: Uint8Array | null, rs: Uint8Array | null): void
  WriteMessage(payload: Uint8Array | null): Uint8Array
  ReadMessage(message: Uint8Array, payloadNeeded: boolean): Uint8Array
  GetHandshakeHash(): Uint8Array
  Split(): [NoiseCCipher, NoiseCCipher]
}
interface NoiseC {
  constants: { NOISE_ROLE_INITIATOR: number; NOISE_ROLE_RESPONDER: number; NOISE_ERROR_NONE: number }
  HandshakeState(protocolName: string, role: number): NoiseCHandshake
  _lib_internal: NoiseCLib
}
type NoiseCFactory = (options: { wasmBinary: Uint8Array }, callback: (noise: NoiseC) => void) => void

const noiseC: Promise<NoiseC> = new Promise((resolve) => {
  const create: NoiseCFactory = require('noise-c.wasm')
  // Handing the wasm bytes over avoids emscripten's fetch() attempt (and its console noise) under Node.
  create({ wasmBinary: readFileSync(require.resolve('noise-c.wasm/src/noise-c.wasm')) }, resolve)
})

function noiseCFactory(nc: NoiseC): PartyFactory {
  return (protocolName, initiator, keys) => {
    const use = keyUse(protocolName.split('_')[1]!, initiator)
    const hs = nc.HandshakeState(protocolName, initiator ? nc.constants.NOISE_ROLE_INITIATOR : nc.constants.NOISE_ROLE_RESPONDER)
    const lib = nc._lib_internal
    // 0 means this side has no ephemeral at all (the responder of a one-way pattern).
    const fixed = lib._noise_handshakestate_get_fixed_ephemeral_dh(hs._state)
    if (fixed !== 0) {
      const eph = lib.allocateBytes(0, initiator ? keys.initEphemeral : keys.respEphemeral)
      const rc = lib._noise_dhstate_set_keypair_private(fixed, eph, eph.length)
      eph.free()
      if (rc !== nc.constants.NOISE_ERROR_NONE) throw new TypeError(`noise-c set_keypair_private: ${rc}`)
    }
    hs.Initialize(
      keys.prologue,
      use.s ? (initiator ? keys.initStatic : keys.respStatic) : null,
      use.rs ? x25519PublicKey(initiator ? keys.respStatic : keys.initStatic) : null,
    )
    return {
      write: (p) => hs.WriteMessage(p),
      read: (m) => hs.ReadMessage(m, true),
      handshakeHash: () => hs.GetHandshakeHash(),
      split: () => {
        const [send, receive] = hs.Split()
        const empty = new Uint8Array(0)
        return { send: (p) => send.EncryptWithAd(empty, p), receive: (c) => receive.DecryptWithAd(empty, c) }
      },
    }
  }
}

// ---- noise-protocol (libsodium) --------------------------------------------------------------------------

interface NpKeyPair {
  publicKey: Uint8Array
  secretKey: Uint8Array
}
interface NpDh {
  PKLEN: number
  generateKeypair(pk: Uint8Array, sk: Uint8Array): void
  dh(out: Uint8Array, sk: Uint8Array, pk: Uint8Array): void
}
interface NpSplit {
  tx: Uint8Array
  rx: Uint8Array
}
interface NpHandshakeState {
  symmetricState: Uint8Array
}
interface NpWrite {
  (state: NpHandshakeState, payload: Uint8Array, out: Uint8Array): NpSplit | undefined
  bytes: number
}
interface NpApi {
  initialize(pattern: string, initiator: boolean, prologue: Uint8Array, s?: NpKeyPair | null, e?: null, rs?: Uint8Array | null): NpHandshakeState
  writeMessage: NpWrite
  readMessage: NpWrite
}
interface NpCipherStateFn {
  (state: Uint8Array, out: Uint8Array, ad: Uint8Array, input: Uint8Array): void
  bytesWritten: number
}
type Module<T> = (deps: Record<string, unknown>) => T

const npBaseDh = (require('noise-protocol/dh.js') as Module<NpDh>)({})
/** The ephemeral private key the next generateKeypair() call hands out. */
let npNextEphemeral: Uint8Array | undefined
function npPublicKey(secretKey: Uint8Array): Uint8Array {
  const basepoint = new Uint8Array(32)
  basepoint[0] = 9 // RFC 7748 §4.1: u = 9
  const pk = new Uint8Array(32)
  npBaseDh.dh(pk, secretKey, basepoint) // the oracle's own X25519, not ours
  return pk
}
const npDh: NpDh = {
  ...npBaseDh,
  generateKeypair(pk, sk) {
    if (npNextEphemeral === undefined) throw new TypeError('test did not provide an ephemeral key')
    sk.set(npNextEphemeral)
    pk.set(npPublicKey(npNextEphemeral))
    npNextEphemeral = undefined
  },
}
const npHash = (require('noise-protocol/hash.js') as Module<{ HASHLEN: number }>)({ dh: npDh })
const npCipher = (require('noise-protocol/cipher.js') as Module<unknown>)({})
const npCipherState = (require('noise-protocol/cipher-state.js') as Module<{ encryptWithAd: NpCipherStateFn; decryptWithAd: NpCipherStateFn }>)({ cipher: npCipher })
const npSymmetricState = (require('noise-protocol/symmetric-state.js') as Module<{ getHandshakeHash(state: Uint8Array, out: Uint8Array): void }>)({ hash: npHash, cipherState: npCipherState })
const np = (require('noise-protocol/handshake-state.js') as Module<NpApi>)({
  dh: npDh,
  hash: npHash,
  cipher: npCipher,
  cipherState: npCipherState,
  symmetricState: npSymmetricState,
})

const noiseProtocol: PartyFactory = (protocolName, initiator, keys) => {
  const pattern = protocolName.split('_')[1]!
  const use = keyUse(pattern, initiator)
  const sk = initiator ? keys.initStatic : keys.respStatic
  const state = np.initialize(
    pattern,
    initiator,
    keys.prologue,
    // Always given: noise-protocol asserts a local static keypair on *both* sides whenever the initiator
    // sends `s` (e.g. an XN responder); an unused key changes no byte.
    { publicKey: npPublicKey(sk), secretKey: sk.slice() },
    null,
    use.rs ? npPublicKey(initiator ? keys.respStatic : keys.initStatic) : null,
  )
  const ephemeral = initiator ? keys.initEphemeral : keys.respEphemeral
  let split: NpSplit | undefined
  let hash: Uint8Array | undefined
  const done = (result: NpSplit | undefined, out: Uint8Array, bytes: number, wrote: boolean): Uint8Array => {
    if (result !== undefined) {
      // noise-protocol 3.0.2 gives the first Split() key (§5.2 c1, initiator → responder) to whichever side
      // wrote the last handshake message, so for 2-message patterns its tx/rx are the spec's swapped.
      // Map back to the spec's c1/c2 so its bytes can be compared with the spec-conformant directions.
      const [c1, c2] = wrote ? [result.tx, result.rx] : [result.rx, result.tx]
      split = initiator ? { tx: c1, rx: c2 } : { tx: c2, rx: c1 }
      hash = new Uint8Array(npHash.HASHLEN)
      npSymmetricState.getHandshakeHash(state.symmetricState, hash)
    }
    return out.subarray(0, bytes).slice()
  }
  return {
    write: (p) => {
      npNextEphemeral = ephemeral
      const out = new Uint8Array(65535)
      return done(np.writeMessage(state, p, out), out, np.writeMessage.bytes, true)
    },
    read: (m) => {
      const out = new Uint8Array(65535)
      return done(np.readMessage(state, m, out), out, np.readMessage.bytes, false)
    },
    handshakeHash: () => {
      if (hash === undefined) throw new TypeError('handshake not complete')
      return hash
    },
    split: () => {
      if (split === undefined) throw new TypeError('handshake not complete')
      const { tx, rx } = split
      const run = (fn: NpCipherStateFn, cs: Uint8Array, input: Uint8Array, outLen: number): Uint8Array => {
        const out = new Uint8Array(outLen)
        fn(cs, out, new Uint8Array(0), input)
        return out.subarray(0, fn.bytesWritten).slice()
      }
      return {
        send: (p) => run(npCipherState.encryptWithAd, tx, p, p.length + 16),
        receive: (c) => run(npCipherState.decryptWithAd, rx, c, c.length),
      }
    },
  }
}

// ---- deterministic inputs ----------------------------------------------------------------------------

function seedOf(text: string): number {
  let h = 2166136261
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619)
  return h >>> 0
}

interface Transcript {
  messages: string[]
  handshakeHash: string
  transport: string[]
}

/** Runs a whole session (handshake + transport) and records every wire byte. */
function runSession(protocolName: string, makeInit: PartyFactory, makeResp: PartyFactory, t: { is(a: unknown, b: unknown, m?: string): void }): Transcript {
  const rand = seededRandom(seedOf(protocolName))
  const keys: Keys = {
    prologue: rand.bytes(rand.int(3) * 20),
    initStatic: rand.bytes(32),
    respStatic: rand.bytes(32),
    initEphemeral: rand.bytes(32),
    respEphemeral: rand.bytes(32),
  }
  const pattern = protocolName.split('_')[1]!
  const oneWay = pattern.length === 1
  const count = oneWay ? 1 : ['XN', 'XK', 'XX'].includes(pattern) ? 3 : 2
  const init = makeInit(protocolName, true, keys)
  const resp = makeResp(protocolName, false, keys)
  const messages: string[] = []
  for (let i = 0; i < count; i++) {
    const [w, r] = i % 2 === 0 ? [init, resp] : [resp, init]
    const payload = rand.bytes(rand.int(40))
    const message = w.write(payload)
    t.is(toHex(r.read(message)), toHex(payload), `${protocolName} payload ${i}`)
    messages.push(toHex(message))
  }
  const handshakeHash = toHex(init.handshakeHash())
  t.is(toHex(resp.handshakeHash()), handshakeHash, `${protocolName} handshake hash`)
  const [ti, tr] = [init.split(), resp.split()]
  const transport: string[] = []
  for (let i = 0; i < 6; i++) {
    const [w, r] = oneWay || i % 2 === 0 ? [ti, tr] : [tr, ti]
    const payload = rand.bytes([0, 1, 100, 1000][i % 4]!)
    const ct = w.send(payload)
    t.is(toHex(r.receive(ct)), toHex(payload), `${protocolName} transport ${i}`)
    transport.push(toHex(ct))
  }
  return { messages, handshakeHash, transport }
}

const ALL_NAMES = SUPPORTED_PATTERNS.flatMap((p) => SUPPORTED_HASHES.map((h) => `Noise_${p}_25519_ChaChaPoly_${h}`))

test('the supported set is the 15 fundamental patterns × 3 hashes', (t) => {
  t.is(ALL_NAMES.length, 45)
})

test('noise-c.wasm: byte-exact transcripts and interop for every supported protocol name', async (t) => {
  const oracle = noiseCFactory(await noiseC)
  for (const name of ALL_NAMES) {
    const mine = runSession(name, ours, ours, t)
    const theirs = runSession(name, oracle, oracle, t)
    t.deepEqual(mine, theirs, name)
    t.deepEqual(runSession(name, ours, oracle, t), mine, `${name} ours→noise-c`)
    t.deepEqual(runSession(name, oracle, ours, t), mine, `${name} noise-c→ours`)
  }
})

test('noise-protocol (libsodium): byte-exact transcripts and interop for every BLAKE2b name', (t) => {
  const names = ALL_NAMES.filter((n) => n.endsWith('_BLAKE2b'))
  t.is(names.length, 15)
  for (const name of names) {
    const mine = runSession(name, ours, ours, t)
    t.deepEqual(runSession(name, noiseProtocol, noiseProtocol, t), mine, name)
    t.deepEqual(runSession(name, ours, noiseProtocol, t), mine, `${name} ours→noise-protocol`)
    t.deepEqual(runSession(name, noiseProtocol, ours, t), mine, `${name} noise-protocol→ours`)
  }
})
