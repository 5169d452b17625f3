/**
 * Protocol benchmark (`npm run bench:protocol`): the Noise layer and the noble primitives under it, each
 * primitive next to node:crypto (OpenSSL) measured in the same run.
 *
 *   Noise IK handshake   full 2-message Noise_IK_25519_ChaChaPoly_BLAKE2b handshake + split, both sides
 *   session handshake    the P2PMess handshake (session.ts: IK + identity proofs), both sides: keys given per
 *                        handshake with noble DH (checked and signed each time) vs what the client does now —
 *                        keys prepared once (prepareSessionKeys) with DH on node:crypto (src/crypto/node-dh.ts)
 *   Noise transport      encrypt + decrypt of one message, 100 B and 65519 B (the largest 64 KiB message)
 *   X25519               one DH: noble getSharedSecret vs crypto.diffieHellman on KeyObjects
 *   ChaCha20-Poly1305    seal of 1 KiB: noble vs createCipheriv('chacha20-poly1305')
 *   Ed25519              sign / verify of 64 B: noble vs crypto.sign / crypto.verify on KeyObjects
 *   directory record     createRecord / verifyRecord (src/protocol/record.ts)
 *
 * To add a figure, append a Case to CASES. Each case runs for DURATION_MS after a short warm-up.
 */
import { createCipheriv, createDecipheriv, diffieHellman, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto'
import { cpus } from 'node:os'
import { pathToFileURL } from 'node:url'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { NODE_DH } from '../src/crypto/node-dh.js'
import { generateIdentity, generateNoiseKeyPair, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { Handshake, NoiseCipherState, generateKeyPair } from '../src/protocol/noise.js'
import { initiateSession, prepareSessionKeys, respondSession, type LocalKeyOptions } from '../src/protocol/session.js'
import { onionAddressFromPublicKey } from '../src/protocol/onion.js'
import { createRecord, verifyRecord } from '../src/protocol/record.js'
import { printTable } from './lib.js'

const DURATION_MS = 1000
const WARMUP_MS = 200

/** One side of a comparison: `run()` does one operation that moves `bytes` bytes (for MB/s) or none. */
interface Side {
  run(): void
  bytes?: number
}
interface Case {
  name: string
  ours: Side
  node?: Side
}

/** Operations per second of `fn`, measured over DURATION_MS in batches so timer reads don't dominate. */
function opsPerSecond(fn: () => void): number {
  const until = (ms: number, count: (n: number) => void): void => {
    const start = performance.now()
    let batch = 1
    while (performance.now() - start < ms) {
      for (let i = 0; i < batch; i++) fn()
      count(batch)
      if (batch < 1024) batch *= 2
    }
  }
  until(WARMUP_MS, () => {})
  let ops = 0
  const start = performance.now()
  until(DURATION_MS, (n) => (ops += n))
  return ops / ((performance.now() - start) / 1000)
}

// ---- inputs ----------------------------------------------------------------------------------------------

const IK = 'Noise_IK_25519_ChaChaPoly_BLAKE2b'
const initiatorStatic = generateKeyPair()
const responderStatic = generateKeyPair()

function ikHandshake(): void {
  const init = new Handshake({ protocolName: IK, initiator: true, staticKey: initiatorStatic.privateKey, remoteStaticKey: responderStatic.publicKey })
  const resp = new Handshake({ protocolName: IK, initiator: false, staticKey: responderStatic.privateKey })
  resp.readMessage(init.writeMessage())
  init.readMessage(resp.writeMessage())
  init.split()
  resp.split()
}

const ONION_A = onionAddressFromPublicKey(ed25519.keygen().publicKey)
const sessionSides = [generateIdentity(), generateIdentity()].map((identity) => ({ identity, noiseStatic: generateNoiseKeyPair() }))

/** One P2PMess session handshake, both sides, with the keys in the form `keys` gives them. */
function sessionHandshake(keys: (side: 0 | 1) => LocalKeyOptions): void {
  const [a, b] = sessionSides as [(typeof sessionSides)[0], (typeof sessionSides)[0]]
  const init = initiateSession({ ...keys(0), remoteNoiseKey: b.noiseStatic.publicKey, remoteOnion: ONION_A, expectedPeerId: peerIdFromIdentityKey(b.identity.publicKey) })
  const resp = respondSession({ ...keys(1), ownOnion: ONION_A })
  resp.readFirstMessage(init.firstMessage().subarray(2))
  init.receiveResponse(resp.response().message.subarray(2))
}
const preparedKeys = sessionSides.map((side) => prepareSessionKeys(side.identity, side.noiseStatic, NODE_DH))

function noiseTransport(size: number): Side {
  const key = randomBytes(32)
  const tx = NoiseCipherState.fromKey(key)
  const rx = NoiseCipherState.fromKey(key)
  const message = new Uint8Array(randomBytes(size))
  return { run: () => void rx.decrypt(tx.encrypt(message)), bytes: size }
}

/** node:crypto ChaCha20-Poly1305 with the Noise nonce layout, encrypt + decrypt (the same work as above). */
function nodeTransport(size: number, decryptToo: boolean): Side {
  const key = randomBytes(32)
  const message = randomBytes(size)
  const nonce = Buffer.alloc(12)
  let n = 0n
  return {
    bytes: size,
    run: () => {
      nonce.writeBigUInt64LE(n++, 4)
      const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 })
      const ct = Buffer.concat([c.update(message), c.final()])
      const tag = c.getAuthTag()
      if (!decryptToo) return
      const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 })
      d.setAuthTag(tag)
      d.update(ct)
      d.final()
    },
  }
}

const nodeX = generateKeyPairSync('x25519')
const nodeXPeer = generateKeyPairSync('x25519')
const nodeEd = generateKeyPairSync('ed25519')
const nobleEd = ed25519.keygen()
const edMessage = new Uint8Array(randomBytes(64))
const nobleSig = ed25519.sign(edMessage, nobleEd.secretKey)
const nodeSig = sign(null, edMessage, nodeEd.privateKey)
const chachaKey = new Uint8Array(randomBytes(32))
const chachaNonce = new Uint8Array(12)
const kib = new Uint8Array(randomBytes(1024))

const identity = generateIdentity()
const recordParams = {
  identitySeed: identity.seed,
  onion: onionAddressFromPublicKey(ed25519.keygen().publicKey),
  noiseKey: responderStatic.publicKey,
  seq: 1,
  expires: Math.floor(Date.now() / 1000) + 24 * 3600,
}
const record = createRecord(recordParams)
const recordNow = Date.now()

const CASES: Case[] = [
  { name: 'Noise IK BLAKE2b handshake+split', ours: { run: ikHandshake } },
  {
    name: 'session handshake: per-handshake keys, noble | prepared keys, node:crypto DH',
    ours: { run: () => sessionHandshake((side) => sessionSides[side]!) },
    node: { run: () => sessionHandshake((side) => ({ keys: preparedKeys[side]! })) },
  },
  { name: 'Noise transport 100 B enc+dec', ours: noiseTransport(100), node: nodeTransport(100, true) },
  { name: 'Noise transport 65519 B enc+dec', ours: noiseTransport(65519), node: nodeTransport(65519, true) },
  {
    name: 'X25519 DH',
    ours: { run: () => void x25519.getSharedSecret(initiatorStatic.privateKey, responderStatic.publicKey) },
    node: { run: () => void diffieHellman({ privateKey: nodeX.privateKey, publicKey: nodeXPeer.publicKey }) },
  },
  {
    name: 'ChaCha20-Poly1305 seal 1 KiB',
    ours: { run: () => void chacha20poly1305(chachaKey, chachaNonce).encrypt(kib), bytes: 1024 },
    node: nodeTransport(1024, false),
  },
  {
    name: 'Ed25519 sign 64 B',
    ours: { run: () => void ed25519.sign(edMessage, nobleEd.secretKey) },
    node: { run: () => void sign(null, edMessage, nodeEd.privateKey) },
  },
  {
    name: 'Ed25519 verify 64 B',
    ours: { run: () => void ed25519.verify(nobleSig, edMessage, nobleEd.publicKey) },
    node: { run: () => void verify(null, edMessage, nodeEd.publicKey, nodeSig) },
  },
  { name: 'directory record create (sign)', ours: { run: () => void createRecord(recordParams) } },
  {
    name: 'directory record verify',
    ours: {
      run: () => {
        if (!verifyRecord(record, { now: recordNow }).ok) throw new TypeError('benchmark record does not verify')
      },
    },
  },
]

// ---- report ----------------------------------------------------------------------------------------------

function figure(side: Side): { text: string; value: number } {
  const ops = opsPerSecond(side.run)
  if (side.bytes === undefined) return { text: `${Math.round(ops).toLocaleString('en-US')} op/s`, value: ops }
  const mbps = (ops * side.bytes) / 1e6
  return { text: `${mbps.toFixed(1)} MB/s`, value: mbps }
}

export function runProtocolBench(): void {
  console.log(`protocol bench — node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ${DURATION_MS} ms per figure`)
  const rows = [['benchmark', 'ours (noble)', 'node:crypto', 'ours/node']]
  for (const c of CASES) {
    const ours = figure(c.ours)
    const node = c.node === undefined ? undefined : figure(c.node)
    rows.push([c.name, ours.text, node?.text ?? '—', node === undefined ? '' : `${(ours.value / node.value).toFixed(2)}×`])
  }
  printTable(rows)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) runProtocolBench()
