import test, { type ExecutionContext } from 'ava'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { blake2b } from '@noble/hashes/blake2.js'
import { CryptoError, DecodeError, type ErrorCode, InvalidArgumentError, P2PMessError, SessionError } from '../src/errors.js'
import { concatBytes, toHex, utf8 } from '../src/protocol/bytes.js'
import { FrameDecoder } from '../src/protocol/framing.js'
import {
  generateIdentity,
  generateNoiseKeyPair,
  type Identity,
  type NoiseKeyPair,
  peerIdFromIdentityKey,
  signWithIdentity,
  verifySignature,
} from '../src/protocol/identity.js'
import { decodeMessage, encodeMessage, type Message, newMessageId } from '../src/protocol/messages.js'
import { NODE_DH } from '../src/crypto/node-dh.js'
import { Handshake, NOBLE_DH, NoiseCipherState } from '../src/protocol/noise.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import {
  type EstablishedSession,
  initiateSession,
  prepareSessionKeys,
  NOISE_STATIC_DOMAIN,
  PROLOGUE_PREFIX,
  respondSession,
  SecureTransport,
  SESSION_PROTOCOL_NAME,
  type SessionInitiator,
  staleKeyRetry,
} from '../src/protocol/session.js'
import { seededRandom } from './helpers/random.js'

interface Party {
  identity: Identity
  noise: NoiseKeyPair
  onion: string
  peerId: string
}
function party(): Party {
  const identity = generateIdentity()
  return {
    identity,
    noise: generateNoiseKeyPair(),
    onion: onionServiceKeyFromSeed(generateIdentity().seed).address,
    peerId: peerIdFromIdentityKey(identity.publicKey),
  }
}
const alice = party()
const bob = party()

/** The single body of a framed handshake message. */
function body(frame: Uint8Array): Uint8Array {
  const frames = new FrameDecoder().push(frame)
  if (frames.length !== 1) throw new Error('expected exactly one frame')
  return frames[0]!
}

function initiator(from: Party, to: Party, extra: { remoteNoiseKey?: Uint8Array; remoteOnion?: string; rekeyInterval?: number; record?: Uint8Array } = {}): SessionInitiator {
  return initiateSession({
    identity: from.identity,
    noiseStatic: from.noise,
    remoteNoiseKey: extra.remoteNoiseKey ?? to.noise.publicKey,
    remoteOnion: extra.remoteOnion ?? to.onion,
    expectedPeerId: to.peerId,
    ...(extra.record === undefined ? {} : { record: extra.record }),
    ...(extra.rekeyInterval === undefined ? {} : { rekeyInterval: extra.rekeyInterval }),
  })
}
function responder(self: Party, rekeyInterval?: number) {
  return respondSession({ identity: self.identity, noiseStatic: self.noise, ownOnion: self.onion, ...(rekeyInterval === undefined ? {} : { rekeyInterval }) })
}

function handshake(rekeyInterval?: number): { a: EstablishedSession; b: EstablishedSession; msg1: Uint8Array; msg2: Uint8Array } {
  const i = initiator(alice, bob, rekeyInterval === undefined ? {} : { rekeyInterval })
  const r = responder(bob, rekeyInterval)
  const msg1 = i.firstMessage()
  r.readFirstMessage(body(msg1))
  const { message: msg2, session: b } = r.response()
  const a = i.receiveResponse(body(msg2))
  return { a, b, msg1, msg2 }
}

const hello = (name: string): Message => ({ type: 'hello', clientName: name, clientVersion: '0.1.0', capabilities: ['ack'] })
const text = (seq: number, body: string): Message => ({ type: 'text', id: newMessageId(), seq, sentAt: 1764000000000 + seq, body })

/** Asserts that `fn` throws an error of class `cls` with the given code; returns it. */
function expectError<T extends P2PMessError>(
  t: ExecutionContext,
  fn: () => unknown,
  cls: new (code: never, message: string) => T,
  code: ErrorCode,
  label?: string,
): T | undefined {
  let caught: unknown
  try {
    fn()
  } catch (err) {
    caught = err
  }
  t.true(caught instanceof cls, `${label ?? ''}: expected ${cls.name}, got ${String(caught)}`)
  t.is((caught as P2PMessError | undefined)?.code, code, label)
  return caught instanceof cls ? caught : undefined
}

// ----------------------------------------------------------------------------------------------- handshake

test('full handshake: both sides learn each other, share a session id, and talk', (t) => {
  const record = utf8('{"v":1}')
  const i = initiator(alice, bob, { record })
  const r = responder(bob)
  const msg1 = i.firstMessage()
  const seen = r.readFirstMessage(body(msg1))
  t.is(seen.peerId, alice.peerId)
  t.deepEqual(seen.identityKey, alice.identity.publicKey)
  t.deepEqual(seen.noiseKey, alice.noise.publicKey)
  t.deepEqual(seen.record, record)
  const { message: msg2, session: b } = r.response()
  const a = i.receiveResponse(body(msg2))
  t.is(a.peer.peerId, bob.peerId)
  t.deepEqual(a.peer.identityKey, bob.identity.publicKey)
  t.deepEqual(a.peer.noiseKey, bob.noise.publicKey)
  t.is(a.peer.record, undefined)
  t.regex(a.sessionId, /^[0-9a-f]{16}$/)
  t.is(a.sessionId, b.sessionId)
  t.not(handshake().a.sessionId, a.sessionId)

  t.deepEqual(b.transport.open(body(a.transport.seal(hello('alice')))), hello('alice'))
  t.deepEqual(a.transport.open(body(b.transport.seal(hello('bob')))), hello('bob'))
  const m = text(0, 'hi bob')
  t.deepEqual(b.transport.open(body(a.transport.seal(m))), m)
})

test('messages both ways across many rekey boundaries, in lock step', (t) => {
  const { a, b } = handshake(3)
  t.is(a.transport.rekeyInterval, 3)
  let count = 0
  for (const [from, to] of [[a, b], [b, a]] as const) to.transport.open(body(from.transport.seal(hello('x'))))
  for (let seq = 0; seq < 40; seq++) {
    // uneven interleaving so the two directions cross their boundaries at different times
    const m1 = text(seq, `a→b ${seq}`)
    t.deepEqual(b.transport.open(body(a.transport.seal(m1))), m1)
    count++
    if (seq % 3 !== 0) {
      const m2 = text(seq, `b→a ${seq}`)
      t.deepEqual(a.transport.open(body(b.transport.seal(m2))), m2)
      count++
    }
  }
  t.is(a.transport.framesSent, 41)
  t.is(b.transport.framesReceived, 41)
  t.is(b.transport.framesSent, a.transport.framesReceived)
  t.log(`${count} messages across ${Math.floor(41 / 3)} rekeys a→b`)
})

test('rekeying really changes the keys: sides with different intervals fail exactly at the first boundary', (t) => {
  const send = NoiseCipherState.fromKey(new Uint8Array(32).fill(1))
  const recv = NoiseCipherState.fromKey(new Uint8Array(32).fill(1))
  const dummy = (): NoiseCipherState => NoiseCipherState.fromKey(new Uint8Array(32).fill(2))
  const sender = new SecureTransport({ send, receive: dummy() }, { rekeyInterval: 4 })
  const receiver = new SecureTransport({ send: dummy(), receive: recv }, { rekeyInterval: 5 })
  receiver.open(body(sender.seal(hello('s'))))
  for (let seq = 0; seq < 3; seq++) receiver.open(body(sender.seal(text(seq, 'ok'))))
  // frame 5 is under the sender's rekeyed key, while the receiver still uses the old one
  expectError(t, () => receiver.open(body(sender.seal(text(3, 'boom')))), CryptoError, 'ERR_NOISE_DECRYPT')
  t.true(receiver.closed)
})

test('any chunking of the whole conversation decodes with one FrameDecoder per direction (seeded)', (t) => {
  const rng = seededRandom(0xc4a7)
  let runs = 0
  for (let run = 0; run < 30; run++) {
    const i = initiator(alice, bob, { rekeyInterval: 2 })
    const r = responder(bob, 2)
    // alice → bob: msg1, then (after the response) hello and texts; bob → alice: msg2, hello and texts at once
    const upstream = [i.firstMessage()]
    const bobDecoder = new FrameDecoder()
    const aliceDecoder = new FrameDecoder()
    const cut = (bytes: Uint8Array): Uint8Array[] => {
      const mode = run % 3
      const chunks: Uint8Array[] = []
      for (let pos = 0; pos < bytes.length; ) {
        const n = mode === 0 ? 1 : mode === 1 ? bytes.length : 1 + rng.int(50)
        chunks.push(bytes.subarray(pos, pos + n))
        pos += n
      }
      return chunks
    }
    const bobFrames: Uint8Array[] = []
    for (const c of cut(concatBytes(...upstream))) bobFrames.push(...bobDecoder.push(c))
    t.is(bobFrames.length, 1)
    r.readFirstMessage(bobFrames[0]!)
    const { message: msg2, session: b } = r.response()
    const bobSays: Message[] = [hello('bob'), ...Array.from({ length: 5 }, (_, k) => text(k, `b${k} ${'é'.repeat(k * 50)}`))]
    const downstream = concatBytes(msg2, ...bobSays.map((m) => b.transport.seal(m)))
    const aliceFrames: Uint8Array[] = []
    for (const c of cut(downstream)) aliceFrames.push(...aliceDecoder.push(c))
    t.is(aliceFrames.length, 1 + bobSays.length)
    const a = i.receiveResponse(aliceFrames[0]!)
    t.deepEqual(aliceFrames.slice(1).map((f) => a.transport.open(f)), bobSays)
    const aliceSays: Message[] = [hello('alice'), text(0, 'x'), { type: 'bye', reason: 'done', detail: '' }]
    const got: Message[] = []
    for (const c of cut(concatBytes(...aliceSays.map((m) => a.transport.seal(m))))) for (const f of bobDecoder.push(c)) got.push(b.transport.open(f))
    t.deepEqual(got, aliceSays)
    t.true(bobDecoder.idle && aliceDecoder.idle)
    runs++
  }
  t.is(runs, 30)
})

// ----------------------------------------------------------------------------------------------- tampering

test('tampering with any bit position of message 1 is rejected by the responder', (t) => {
  const rng = seededRandom(1)
  const msg1 = body(initiator(alice, bob).firstMessage())
  for (let pos = 0; pos < msg1.length; pos++) {
    const bad = msg1.slice()
    bad[pos] = bad[pos]! ^ (1 << rng.int(8))
    const r = responder(bob)
    expectError(t, () => r.readFirstMessage(bad), SessionError, 'ERR_SESSION_HANDSHAKE', `byte ${pos}`)
    // the failure is final
    expectError(t, () => r.readFirstMessage(msg1), SessionError, 'ERR_SESSION_HANDSHAKE')
    expectError(t, () => r.response(), SessionError, 'ERR_SESSION_HANDSHAKE')
  }
  expectError(t, () => responder(bob).readFirstMessage(msg1.subarray(0, msg1.length - 1)), SessionError, 'ERR_SESSION_HANDSHAKE')
  expectError(t, () => responder(bob).readFirstMessage(concatBytes(msg1, Uint8Array.of(0))), SessionError, 'ERR_SESSION_HANDSHAKE')
  t.log(`${msg1.length} tampered positions of message 1`)
})

test('tampering with any bit position of message 2 is rejected by the initiator', (t) => {
  const rng = seededRandom(2)
  let positions = 0
  for (let pos = 0; ; pos++) {
    const i = initiator(alice, bob)
    const r = responder(bob)
    r.readFirstMessage(body(i.firstMessage()))
    const msg2 = body(r.response().message)
    if (pos >= msg2.length) break
    const bad = msg2.slice()
    bad[pos] = bad[pos]! ^ (1 << rng.int(8))
    expectError(t, () => i.receiveResponse(bad), SessionError, 'ERR_SESSION_HANDSHAKE', `byte ${pos}`)
    expectError(t, () => i.receiveResponse(msg2), SessionError, 'ERR_SESSION_HANDSHAKE', 'failure is final')
    positions++
  }
  t.log(`${positions} tampered positions of message 2`)
})

test('tampering with any byte of a transport frame (prefix included) never yields a message, and closes the transport', (t) => {
  const { a, b } = handshake()
  b.transport.open(body(a.transport.seal(hello('a'))))
  const rng = seededRandom(3)
  const key = new Uint8Array(32).fill(9)
  const fresh = (): { tx: SecureTransport; rx: SecureTransport } => ({
    tx: new SecureTransport({ send: NoiseCipherState.fromKey(key), receive: NoiseCipherState.fromKey(key) }),
    rx: new SecureTransport({ send: NoiseCipherState.fromKey(key), receive: NoiseCipherState.fromKey(key) }),
  })
  const frameLength = fresh().tx.seal(hello('h')).length
  const outcomes = { decoder: 0, decrypt: 0, incomplete: 0 }
  for (let pos = 0; pos < frameLength; pos++) {
    const { tx, rx } = fresh()
    const wire = tx.seal(hello('h'))
    const bad = wire.slice()
    bad[pos] = bad[pos]! ^ (1 << rng.int(8))
    const d = new FrameDecoder()
    let frames: Uint8Array[]
    try {
      frames = d.push(bad)
    } catch (err) {
      t.true(err instanceof DecodeError)
      outcomes.decoder++
      continue
    }
    if (frames.length === 0) {
      outcomes.incomplete++ // the length grew: the decoder waits for bytes that never come
      continue
    }
    expectError(t, () => rx.open(frames[0]!), CryptoError, 'ERR_NOISE_DECRYPT', `byte ${pos}`)
    expectError(t, () => rx.open(body(wire)), SessionError, 'ERR_SESSION_CLOSED')
    expectError(t, () => rx.seal(hello('x')), SessionError, 'ERR_SESSION_CLOSED')
    outcomes.decrypt++
  }
  // And on a real session: one bad frame kills it for good.
  const frame = body(a.transport.seal(text(0, 'real')))
  frame[5] = frame[5]! ^ 1
  expectError(t, () => b.transport.open(frame), CryptoError, 'ERR_NOISE_DECRYPT')
  t.true(b.transport.closed)
  t.log(`${frameLength} positions: ${JSON.stringify(outcomes)}`)
  t.is(outcomes.decoder + outcomes.decrypt + outcomes.incomplete, frameLength)
})

// ----------------------------------------------------------------------------------------------- wrong keys

test('stale responder key: the responder cannot read message 1; the dialer refetches and retries once', (t) => {
  const oldNoise = bob.noise
  const rotated: Party = { ...bob, noise: generateNoiseKeyPair() }
  const i = initiator(alice, rotated, { remoteNoiseKey: oldNoise.publicKey })
  expectError(t, () => responder(rotated).readFirstMessage(body(i.firstMessage())), SessionError, 'ERR_SESSION_HANDSHAKE')

  const decision = staleKeyRetry({ usedNoiseKey: oldNoise.publicKey, freshNoiseKey: rotated.noise.publicKey, attempt: 1 })
  t.is(decision.action, 'retry')
  if (decision.action !== 'retry') return
  const retry = initiator(alice, rotated, { remoteNoiseKey: decision.noiseKey })
  const r = responder(rotated)
  r.readFirstMessage(body(retry.firstMessage()))
  t.is(retry.receiveResponse(body(r.response().message)).peer.peerId, bob.peerId)

  for (const input of [
    { usedNoiseKey: oldNoise.publicKey, freshNoiseKey: oldNoise.publicKey, attempt: 1 }, // record unchanged
    { usedNoiseKey: oldNoise.publicKey, freshNoiseKey: undefined, attempt: 1 }, // record gone
    { usedNoiseKey: oldNoise.publicKey, freshNoiseKey: rotated.noise.publicKey, attempt: 2 }, // already retried
  ]) {
    const d = staleKeyRetry(input)
    t.is(d.action, 'give-up')
    if (d.action === 'give-up') t.is(d.error.code, 'ERR_SESSION_UNANSWERED')
  }
  t.throws(() => staleKeyRetry({ usedNoiseKey: new Uint8Array(3), freshNoiseKey: undefined, attempt: 1 }), { instanceOf: InvalidArgumentError })
  t.throws(() => staleKeyRetry({ usedNoiseKey: oldNoise.publicKey, freshNoiseKey: undefined, attempt: 0 }), { instanceOf: InvalidArgumentError })
})

test('the prologue binds the onion address: dialing bob under another onion fails the handshake', (t) => {
  const i = initiator(alice, bob, { remoteOnion: alice.onion })
  expectError(t, () => responder(bob).readFirstMessage(body(i.firstMessage())), SessionError, 'ERR_SESSION_HANDSHAKE')
  // while any accepted spelling of the right address works
  const j = initiator(alice, bob, { remoteOnion: bob.onion.toUpperCase().replace('.ONION', '') })
  const r = responder(bob)
  r.readFirstMessage(body(j.firstMessage()))
  t.is(j.receiveResponse(body(r.response().message)).peer.peerId, bob.peerId)
})

/** A hand-driven Noise party that sends any payload it likes. */
function rogueInitiator(noise: NoiseKeyPair, to: Party): Handshake {
  return new Handshake({
    protocolName: SESSION_PROTOCOL_NAME,
    initiator: true,
    prologue: concatBytes(PROLOGUE_PREFIX, utf8(to.onion)),
    staticKey: noise.secretKey,
    remoteStaticKey: to.noise.publicKey,
  })
}
function proof(identity: Identity, noisePublicKey: Uint8Array, sig?: Uint8Array, record: Uint8Array = new Uint8Array(0)): Uint8Array {
  const s = sig ?? signWithIdentity(identity.seed, concatBytes(NOISE_STATIC_DOMAIN, noisePublicKey))
  return concatBytes(Uint8Array.of(1), identity.publicKey, s, Uint8Array.of(record.length >> 8, record.length & 0xff), record)
}

test('bad identity proofs in message 1 are ERR_PEER_UNAUTHENTICATED; malformed payloads ERR_SESSION_HANDSHAKE', (t) => {
  const mallory = party()
  // sanity: the hand-built payload is what the real code sends
  const ok = responder(bob).readFirstMessage(rogueInitiator(mallory.noise, bob).writeMessage(proof(mallory.identity, mallory.noise.publicKey)))
  t.is(ok.peerId, mallory.peerId)

  const unauthenticated: [string, Uint8Array][] = [
    // alice's proof is for alice's Noise key, not the one mallory handshakes with
    ['claims alice with a proof for alice’s own Noise key', proof(alice.identity, alice.noise.publicKey)],
    ['signature over another Noise key', proof(mallory.identity, alice.noise.publicKey)],
    ['random signature', proof(mallory.identity, mallory.noise.publicKey, new Uint8Array(64).fill(7))],
    ['signature without the domain prefix', proof(mallory.identity, mallory.noise.publicKey, signWithIdentity(mallory.identity.seed, mallory.noise.publicKey))],
    ['small-order identity key', concatBytes(Uint8Array.of(1), new Uint8Array(32), new Uint8Array(64), Uint8Array.of(0, 0))],
  ]
  for (const [why, payload] of unauthenticated) {
    const msg = rogueInitiator(mallory.noise, bob).writeMessage(payload)
    expectError(t, () => responder(bob).readFirstMessage(msg), SessionError, 'ERR_PEER_UNAUTHENTICATED', why)
  }
  const good = proof(mallory.identity, mallory.noise.publicKey)
  const malformed: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['truncated', good.subarray(0, good.length - 1)],
    ['trailing byte', concatBytes(good, Uint8Array.of(0))],
    ['version 2', concatBytes(Uint8Array.of(2), good.subarray(1))],
    ['record longer than allowed', proof(mallory.identity, mallory.noise.publicKey, undefined, new Uint8Array(2049))],
  ]
  for (const [why, payload] of malformed) {
    const msg = rogueInitiator(mallory.noise, bob).writeMessage(payload)
    expectError(t, () => responder(bob).readFirstMessage(msg), SessionError, 'ERR_SESSION_HANDSHAKE', why)
  }
})

test('message 2: a valid proof for another identity is ERR_SESSION_KEY_MISMATCH; a bad proof ERR_PEER_UNAUTHENTICATED', (t) => {
  const mallory = party()
  // mallory holds bob's onion and Noise key (e.g. stole the device key) but not bob's identity key
  const rogueResponse = (payload: () => Uint8Array): { i: SessionInitiator; msg2: Uint8Array } => {
    const i = initiator(alice, bob)
    const hs = new Handshake({ protocolName: SESSION_PROTOCOL_NAME, initiator: false, prologue: concatBytes(PROLOGUE_PREFIX, utf8(bob.onion)), staticKey: bob.noise.secretKey })
    hs.readMessage(body(i.firstMessage()))
    return { i, msg2: hs.writeMessage(payload()) }
  }
  const mismatch = rogueResponse(() => proof(mallory.identity, bob.noise.publicKey))
  const err = expectError(t, () => mismatch.i.receiveResponse(mismatch.msg2), SessionError, 'ERR_SESSION_KEY_MISMATCH')
  t.deepEqual(err?.details, { expected: bob.peerId, actual: mallory.peerId })
  expectError(t, () => mismatch.i.receiveResponse(mismatch.msg2), SessionError, 'ERR_SESSION_KEY_MISMATCH', 'final')

  const forged = rogueResponse(() => proof(bob.identity, bob.noise.publicKey, new Uint8Array(64)))
  expectError(t, () => forged.i.receiveResponse(forged.msg2), SessionError, 'ERR_PEER_UNAUTHENTICATED')
  const otherKey = rogueResponse(() => proof(bob.identity, mallory.noise.publicKey))
  expectError(t, () => otherKey.i.receiveResponse(otherKey.msg2), SessionError, 'ERR_PEER_UNAUTHENTICATED')
  const malformed = rogueResponse(() => new Uint8Array(10))
  expectError(t, () => malformed.i.receiveResponse(malformed.msg2), SessionError, 'ERR_SESSION_HANDSHAKE')
})

test('replayed message 1: a fresh responder answers, but nobody can use that session', (t) => {
  const { a, msg1, msg2 } = handshake()
  const r2 = responder(bob)
  t.is(r2.readFirstMessage(body(msg1)).peerId, alice.peerId) // IK message 1 is replayable (Noise §7.7)
  const { message: replayResponse, session: b2 } = r2.response()
  t.notDeepEqual(replayResponse, msg2) // new responder ephemeral
  // The real alice is done; a new alice (new ephemeral) cannot read the replay's answer either.
  const fresh = initiator(alice, bob)
  fresh.firstMessage()
  expectError(t, () => fresh.receiveResponse(body(replayResponse)), SessionError, 'ERR_SESSION_HANDSHAKE')
  // The attacker can only replay alice's real transport frames, which are under other keys.
  expectError(t, () => b2.transport.open(body(a.transport.seal(hello('alice')))), CryptoError, 'ERR_NOISE_DECRYPT')
  t.true(b2.transport.closed)
})

// ----------------------------------------------------------------------------------------------- transport rules

test('hello must come first and once; bye ends a direction; both byes close the transport', (t) => {
  const { a, b } = handshake()
  expectError(t, () => a.transport.seal(text(0, 'too early')), SessionError, 'ERR_SESSION_PROTOCOL')
  t.false(a.transport.closed) // our own misuse is not fatal
  b.transport.open(body(a.transport.seal(hello('a'))))
  expectError(t, () => a.transport.seal(hello('again')), SessionError, 'ERR_SESSION_PROTOCOL')
  a.transport.open(body(b.transport.seal(hello('b'))))
  b.transport.open(body(a.transport.seal({ type: 'bye', reason: 'done', detail: 'see you' })))
  expectError(t, () => a.transport.seal(text(0, 'after bye')), SessionError, 'ERR_SESSION_CLOSED')
  t.false(a.transport.closed)
  const m = text(0, 'last words')
  t.deepEqual(a.transport.open(body(b.transport.seal(m))), m)
  a.transport.open(body(b.transport.seal({ type: 'bye', reason: 'shutdown', detail: '' })))
  t.true(a.transport.closed)
  t.true(b.transport.closed)
  expectError(t, () => b.transport.seal(text(1, 'x')), SessionError, 'ERR_SESSION_CLOSED')
})

test('a peer that breaks the message rules (text before hello, second hello, after bye) kills the session', (t) => {
  const key = new Uint8Array(32).fill(4)
  const scenario = (plaintexts: Uint8Array[]): unknown => {
    const raw = NoiseCipherState.fromKey(key)
    const rx = new SecureTransport({ send: NoiseCipherState.fromKey(key), receive: NoiseCipherState.fromKey(key) })
    try {
      for (const p of plaintexts) rx.open(raw.encrypt(p))
      return undefined
    } catch (err) {
      t.true(rx.closed)
      return err
    }
  }
  const h = encodeMessage(hello('p'))
  const x = encodeMessage(text(0, 'x'))
  const bye = encodeMessage({ type: 'bye', reason: 'done', detail: '' })
  for (const [why, seq] of [
    ['text first', [x]],
    ['two hellos', [h, h]],
    ['text after bye', [h, bye, x]],
  ] as const) {
    const err = scenario([...seq])
    t.true(err instanceof SessionError && err.code === 'ERR_SESSION_PROTOCOL', why)
  }
  const undecodable = scenario([h, Uint8Array.of(1, 99)])
  t.true(undecodable instanceof DecodeError && undecodable.code === 'ERR_UNKNOWN_MESSAGE_TYPE')
  t.is(scenario([h, x, bye]), undefined)
})

// ----------------------------------------------------------------------------------------------- misuse

test('out-of-order calls and bad options are typed errors', (t) => {
  const i = initiator(alice, bob)
  expectError(t, () => i.receiveResponse(new Uint8Array(64)), SessionError, 'ERR_SESSION_PROTOCOL')
  i.firstMessage()
  expectError(t, () => i.firstMessage(), SessionError, 'ERR_SESSION_PROTOCOL')
  expectError(t, () => responder(bob).response(), SessionError, 'ERR_SESSION_PROTOCOL')
  const base = { identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId }
  const bad: unknown[] = [
    null,
    { ...base, identity: { seed: alice.identity.seed, publicKey: bob.identity.publicKey } },
    { ...base, identity: { seed: new Uint8Array(31), publicKey: alice.identity.publicKey } },
    { ...base, noiseStatic: { secretKey: alice.noise.secretKey, publicKey: bob.noise.publicKey } },
    { ...base, remoteNoiseKey: new Uint8Array(33) },
    { ...base, remoteOnion: 'example.com' },
    { ...base, remoteOnion: 42 },
    { ...base, expectedPeerId: bob.peerId.toUpperCase() },
    { ...base, record: new Uint8Array(0) },
    { ...base, record: new Uint8Array(2049) },
    { ...base, rekeyInterval: 0 },
    { ...base, rekeyInterval: 1.5 },
  ]
  for (const options of bad) {
    t.throws(() => initiateSession(options as Parameters<typeof initiateSession>[0]), { instanceOf: InvalidArgumentError })
  }
  t.throws(() => respondSession({ identity: bob.identity, noiseStatic: bob.noise, ownOnion: 'nope' }), { instanceOf: InvalidArgumentError })
  t.throws(() => responder(bob).readFirstMessage('x' as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
})

test('prepared keys: one check and one signature for many handshakes, on either DH backend, same wire as per-handshake keys', (t) => {
  for (const dh of [NOBLE_DH, NODE_DH]) {
    const aliceKeys = prepareSessionKeys(alice.identity, alice.noise, dh)
    const bobKeys = prepareSessionKeys(bob.identity, bob.noise, dh)
    t.deepEqual(aliceKeys.noise.publicKey, alice.noise.publicKey)
    // The proof is the fixed head of every payload: version, identity key, signature over the Noise key.
    t.is(aliceKeys.proof.length, 1 + 32 + 64)
    t.true(verifySignature(aliceKeys.proof.subarray(33), concatBytes(NOISE_STATIC_DOMAIN, alice.noise.publicKey), alice.identity.publicKey))
    for (let n = 0; n < 3; n++) {
      // Prepared on one side, per-handshake keys on the other: the two forms interoperate.
      const i = initiateSession({ keys: aliceKeys, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId })
      const r = n === 1 ? responder(bob) : respondSession({ keys: bobKeys, ownOnion: bob.onion })
      t.is(r.readFirstMessage(body(i.firstMessage())).peerId, alice.peerId)
      const { message, session: b } = r.response()
      const a = i.receiveResponse(body(message))
      t.is(a.sessionId, b.sessionId)
      t.is(b.transport.open(body(a.transport.seal({ type: 'hello', clientName: 'x', clientVersion: '1', capabilities: [] }))).type, 'hello')
    }
    // The sessions did not use up the lent keys.
    t.notThrows(() => aliceKeys.noise.dh(bob.noise.publicKey))
    aliceKeys.noise.destroy()
    bobKeys.noise.destroy()
  }
})

test('prepared keys are checked once, up front, and only genuine ones are taken', (t) => {
  t.throws(() => prepareSessionKeys({ seed: alice.identity.seed, publicKey: bob.identity.publicKey }, alice.noise), { instanceOf: InvalidArgumentError })
  for (const dh of [NOBLE_DH, NODE_DH]) {
    const err = t.throws(() => prepareSessionKeys(alice.identity, { secretKey: alice.noise.secretKey, publicKey: bob.noise.publicKey }, dh), { instanceOf: InvalidArgumentError })
    t.regex(err?.message ?? '', /does not belong/)
  }
  const keys = prepareSessionKeys(alice.identity, alice.noise)
  const common = { remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId }
  // A look-alike object (e.g. someone else's proof with our key pair) is not prepared keys.
  t.throws(() => initiateSession({ ...common, keys: { ...keys } }), { instanceOf: InvalidArgumentError })
  t.throws(() => initiateSession({ ...common, keys, identity: alice.identity }), { instanceOf: InvalidArgumentError })
  t.throws(() => respondSession({ keys, noiseStatic: alice.noise, ownOnion: alice.onion }), { instanceOf: InvalidArgumentError })
  t.throws(() => initiateSession(common), { instanceOf: InvalidArgumentError })
})

// ----------------------------------------------------------------------------------------------- fuzz

test('seeded garbage to every session decoder yields only typed errors', (t) => {
  const rng = seededRandom(0xbadc0de)
  const counts = { message1: 0, message2: 0, payload: 0, frames: 0, plaintexts: 0 }
  const isTyped = (err: unknown, ...classes: (abstract new (...a: never[]) => P2PMessError)[]): boolean =>
    classes.some((c) => err instanceof c)
  const msg1Len = body(initiator(alice, bob).firstMessage()).length
  for (let n = 0; n < 2000; n++) {
    const garbage = rng.bytes(rng.next() < 0.5 ? msg1Len : rng.int(400))
    try {
      responder(bob).readFirstMessage(garbage)
      t.fail('garbage message 1 accepted')
    } catch (err) {
      t.true(isTyped(err, SessionError))
    }
    counts.message1++
  }
  for (let n = 0; n < 500; n++) {
    const i = initiator(alice, bob)
    i.firstMessage()
    try {
      i.receiveResponse(rng.bytes(rng.int(300)))
      t.fail('garbage message 2 accepted')
    } catch (err) {
      t.true(isTyped(err, SessionError))
    }
    counts.message2++
  }
  // Correctly encrypted but random payloads reach the proof parser.
  const mallory = party()
  for (let n = 0; n < 500; n++) {
    const len = rng.next() < 0.5 ? 99 + rng.int(20) : rng.int(300)
    const payload = rng.bytes(len)
    if (rng.next() < 0.5 && len > 0) payload[0] = 1
    try {
      responder(bob).readFirstMessage(rogueInitiator(mallory.noise, bob).writeMessage(payload))
      t.fail('random payload accepted')
    } catch (err) {
      t.true(err instanceof SessionError && ['ERR_SESSION_HANDSHAKE', 'ERR_PEER_UNAUTHENTICATED'].includes(err.code))
    }
    counts.payload++
  }
  const key = new Uint8Array(32).fill(6)
  for (let n = 0; n < 3000; n++) {
    const rx = new SecureTransport({ send: NoiseCipherState.fromKey(key), receive: NoiseCipherState.fromKey(key) })
    try {
      rx.open(rng.bytes(16 + rng.int(200)))
      t.fail('garbage frame accepted')
    } catch (err) {
      t.true(isTyped(err, CryptoError))
    }
    counts.frames++
  }
  // Authenticated frames carrying random plaintexts reach the message decoder and the rules.
  for (let n = 0; n < 3000; n++) {
    const raw = NoiseCipherState.fromKey(key)
    const rx = new SecureTransport({ send: NoiseCipherState.fromKey(key), receive: NoiseCipherState.fromKey(key) })
    const plain = rng.next() < 0.5 ? rng.bytes(rng.int(80)) : concatBytes(Uint8Array.of(1, 1 + rng.int(6)), rng.bytes(rng.int(60)))
    try {
      rx.open(raw.encrypt(concatBytes(encodeMessage(hello('h')))))
      const m = rx.open(raw.encrypt(plain))
      t.deepEqual(encodeMessage(m), plain) // anything accepted is a canonical, legal message
    } catch (err) {
      t.true(isTyped(err, DecodeError, SessionError), String(err))
      t.true(rx.closed)
    }
    counts.plaintexts++
  }
  t.log(`hostile inputs: ${JSON.stringify(counts)}`)
  t.is(Object.values(counts).reduce((x, y) => x + y, 0), 9000)
})

test('the transport frames messages that fit the Noise limit and wipes keys on close', (t) => {
  const { a, b } = handshake()
  b.transport.open(body(a.transport.seal(hello('a'))))
  const big = text(0, 'x'.repeat(16384))
  const frame = a.transport.seal(big)
  t.is(frame.length, 2 + encodeMessage(big).length + 16)
  t.deepEqual(b.transport.open(body(frame)), big)
  a.transport.close()
  a.transport.close() // idempotent
  expectError(t, () => a.transport.seal(text(1, 'x')), SessionError, 'ERR_SESSION_CLOSED')
})

// ----------------------------------------------------------------------------------------------- oracle

/**
 * docs/PROTOCOL.md "Session handshake" pinned against an independent Noise implementation (noise-c.wasm):
 * a responder written only from the document (prologue, payload layout, statement, session id) talks to ours.
 */
interface OracleCipher {
  EncryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array
  DecryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array
}
interface OracleHandshake {
  Initialize(prologue: Uint8Array | null, s: Uint8Array | null, rs: Uint8Array | null): void
  WriteMessage(payload: Uint8Array | null): Uint8Array
  ReadMessage(message: Uint8Array, payloadNeeded: boolean): Uint8Array
  GetRemotePublicKey(): Uint8Array
  GetHandshakeHash(): Uint8Array
  Split(): [OracleCipher, OracleCipher]
}
interface OracleNoise {
  constants: { NOISE_ROLE_RESPONDER: number }
  HandshakeState(protocolName: string, role: number): OracleHandshake
}

test('interop: a responder built from the document on noise-c.wasm completes a session with ours', async (t) => {
  const require = createRequire(import.meta.url)
  const nc = await new Promise<OracleNoise>((resolve) => {
    const create = require('noise-c.wasm') as (o: { wasmBinary: Uint8Array }, cb: (n: OracleNoise) => void) => void
    create({ wasmBinary: readFileSync(require.resolve('noise-c.wasm/src/noise-c.wasm')) }, resolve)
  })
  const i = initiator(alice, bob)
  const msg1 = body(i.firstMessage())
  t.is(msg1.length, 195)

  const hs = nc.HandshakeState('Noise_IK_25519_ChaChaPoly_BLAKE2b', nc.constants.NOISE_ROLE_RESPONDER)
  hs.Initialize(concatBytes(utf8('p2pmess/1'), Uint8Array.of(0), utf8(bob.onion)), bob.noise.secretKey, null)
  const payload = hs.ReadMessage(msg1, true)
  const rs = hs.GetRemotePublicKey()
  t.deepEqual(rs, alice.noise.publicKey)
  // payload = 01 ‖ identityKey ‖ sig ‖ u16be(0)
  t.is(payload.length, 99)
  t.is(payload[0], 1)
  t.deepEqual(payload.subarray(1, 33), alice.identity.publicKey)
  t.true(verifySignature(payload.subarray(33, 97), concatBytes(utf8('p2pmess-noise-static-v1'), Uint8Array.of(0), rs), payload.subarray(1, 33)))
  t.deepEqual([...payload.subarray(97)], [0, 0])

  const bobSig = signWithIdentity(bob.identity.seed, concatBytes(utf8('p2pmess-noise-static-v1'), Uint8Array.of(0), bob.noise.publicKey))
  const msg2 = hs.WriteMessage(concatBytes(Uint8Array.of(1), bob.identity.publicKey, bobSig, Uint8Array.of(0, 0)))
  t.is(msg2.length, 147)
  const a = i.receiveResponse(msg2)
  t.is(a.peer.peerId, bob.peerId)
  t.is(a.sessionId, toHex(blake2b(concatBytes(utf8('p2pmess-session-id-v1'), Uint8Array.of(0), hs.GetHandshakeHash()), { dkLen: 8 })))

  // noise-c's Split() returns this role's [send, receive] (the responder sends with Noise's second key).
  const [toInitiator, fromInitiator] = hs.Split()
  const none = new Uint8Array(0)
  t.deepEqual(decodeMessage(fromInitiator.DecryptWithAd(none, body(a.transport.seal(hello('alice'))))), hello('alice'))
  const reply = hello('oracle')
  t.deepEqual(a.transport.open(toInitiator.EncryptWithAd(none, encodeMessage(reply))), reply)
})
