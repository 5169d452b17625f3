import test, { type ExecutionContext } from 'ava'
import { once } from 'node:events'
import { createServer, connect, type Socket, type AddressInfo } from 'node:net'
import { CryptoError, DecodeError, P2PMessError, SessionError } from '../src/errors.js'
import { Connection, MAX_SESSION_FRAME, type CloseCause, type ConnectionHandler, type SessionMessage } from '../src/client/connection.js'
import { FrameDecoder } from '../src/protocol/framing.js'
import { generateIdentity, generateNoiseKeyPair, type Identity, type NoiseKeyPair, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import type { HelloMessage } from '../src/protocol/messages.js'
import { onionAddressFromPublicKey } from '../src/protocol/onion.js'
import { initiateSession, type SecureTransport } from '../src/protocol/session.js'

interface Peer {
  identity: Identity
  noise: NoiseKeyPair
  peerId: string
  onion: string
}

function peer(): Peer {
  const identity = generateIdentity()
  return {
    identity,
    noise: generateNoiseKeyPair(),
    peerId: peerIdFromIdentityKey(identity.publicKey),
    onion: onionAddressFromPublicKey(generateIdentity().publicKey),
  }
}

const HELLO: HelloMessage = { type: 'hello', clientName: 'test', clientVersion: '1', capabilities: ['ack'] }

/** A loopback socket pair: [client side, server side]. */
async function socketPair(t: ExecutionContext): Promise<[Socket, Socket]> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const accepted = once(server, 'connection') as Promise<[Socket]>
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1')
  const [[serverSide]] = await Promise.all([accepted, once(client, 'connect')])
  server.close()
  t.teardown(() => {
    client.destroy()
    serverSide.destroy()
  })
  return [client, serverSide]
}

/** Records what a connection hands its handler; `closed` resolves with the close cause. */
function recorder(): ConnectionHandler & { messages: SessionMessage[]; rtts: number[]; closedCause: Promise<CloseCause>; next(type: string): Promise<SessionMessage> } {
  let resolveClosed: (c: CloseCause) => void = () => {}
  const closedCause = new Promise<CloseCause>((r) => (resolveClosed = r))
  const messages: SessionMessage[] = []
  const waiters: Array<{ type: string; resolve: (m: SessionMessage) => void }> = []
  return {
    messages,
    rtts: [],
    closedCause,
    message(m) {
      messages.push(m)
      const i = waiters.findIndex((w) => w.type === m.type)
      if (i >= 0) waiters.splice(i, 1)[0]!.resolve(m)
    },
    rtt(ms) {
      this.rtts.push(ms)
    },
    closed: (c) => resolveClosed(c),
    next(type) {
      const seen = messages.find((m) => m.type === type && !(m as { taken?: boolean }).taken)
      if (seen !== undefined) {
        Object.assign(seen, { taken: true })
        return Promise.resolve(seen)
      }
      return new Promise((resolve) => waiters.push({ type, resolve: (m) => (Object.assign(m, { taken: true }), resolve(m)) }))
    },
  }
}

/** Bounds a promise: the test fails instead of hanging. */
function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SessionError('ERR_SESSION_TIMEOUT', `${what}: no result within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

async function connectedPair(t: ExecutionContext, heartbeatIntervalMs = 15_000): Promise<{ a: Connection; b: Connection; alice: Peer; bob: Peer }> {
  const [ca, sb] = await socketPair(t)
  const alice = peer()
  const bob = peer()
  const admitted: string[] = []
  const [a, b] = await Promise.all([
    Connection.initiate(ca, { identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId, heartbeatIntervalMs }),
    Connection.respond(sb, { identity: bob.identity, noiseStatic: bob.noise, ownOnion: bob.onion, heartbeatIntervalMs, admit: (p) => (admitted.push(p.peerId), true) }),
  ])
  t.deepEqual(admitted, [alice.peerId])
  return { a, b, alice, bob }
}

/** A hand-driven initiator on a raw socket: the test writes whatever bytes it likes after the handshake. */
async function rawCaller(t: ExecutionContext, handler = recorder(), options: { heartbeatIntervalMs?: number } = {}) {
  const [raw, sb] = await socketPair(t)
  const alice = peer()
  const bob = peer()
  const initiator = initiateSession({ identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId })
  raw.write(initiator.firstMessage())
  const decoder = new FrameDecoder()
  const frames: Uint8Array[] = []
  const collect = (chunk: Uint8Array): void => void frames.push(...decoder.push(chunk))
  raw.on('data', collect)
  // The responder holds message 2 until start() adds its hello: both arrive in one write.
  const b = await Connection.respond(sb, { identity: bob.identity, noiseStatic: bob.noise, ownOnion: bob.onion, admit: () => true, ...options })
  t.is(sb.writableCorked, 1, 'message 2 is held until start()')
  b.start(handler, HELLO)
  t.is(sb.writableCorked, 0, 'start() sends message 2 and the hello together')
  while (frames.length < 2) await within(5_000, once(raw, 'data'), 'message 2 and hello')
  raw.off('data', collect)
  const { transport } = initiator.receiveResponse(frames[0]!)
  t.is(transport.open(frames[1]!).type, 'hello')
  raw.write(transport.seal(HELLO))
  await within(5_000, handler.next('hello'), 'hello')
  return { raw, transport: transport as SecureTransport, b, handler }
}

test('hold() keeps frames in one write until released; release is idempotent and close flushes', async (t) => {
  const { a, b } = await connectedPair(t)
  const ha = recorder()
  const hb = recorder()
  b.start(hb, HELLO)
  const release = a.hold()
  a.start(ha, HELLO)
  t.true(a.sendText(new Uint8Array(16).fill(7), 'held with the hello', 1000))
  await within(5_000, ha.next('hello'), 'hello at a')
  t.is(hb.messages.length, 0, 'nothing of a reached b while held')
  release()
  release()
  await within(5_000, hb.next('text'), 'text at b')
  t.deepEqual(hb.messages.map((m) => m.type), ['hello', 'text'])

  a.hold()
  t.true(a.sendText(new Uint8Array(16).fill(8), 'flushed by close', 1001))
  await a.close('done')
  await within(5_000, hb.next('text'), 'second text at b')
  const closed = await within(5_000, hb.closedCause, 'close at b')
  t.is(closed.kind, 'bye')
})

test('handshake, hello, texts both ways and acks over a loopback pair', async (t) => {
  const { a, b, alice, bob } = await connectedPair(t)
  t.is(a.peer?.peerId, bob.peerId)
  t.is(b.peer?.peerId, alice.peerId)
  t.is(a.sessionId, b.sessionId)
  const ha = recorder()
  const hb = recorder()
  a.start(ha, HELLO)
  b.start(hb, { ...HELLO, capabilities: ['ack', 'accepts'] })
  t.deepEqual((await within(5_000, ha.next('hello'), 'hello at a')).type, 'hello')
  const helloAtA = ha.messages[0] as HelloMessage
  t.deepEqual(helloAtA.capabilities, ['ack', 'accepts'])
  await within(5_000, hb.next('hello'), 'hello at b')

  const id1 = new Uint8Array(16).fill(1)
  const id2 = new Uint8Array(16).fill(2)
  t.true(a.sendText(id1, 'hi bob', 1000))
  t.true(a.sendText(id2, 'second', 1001))
  const m1 = await within(5_000, hb.next('text'), 'text 1')
  const m2 = await within(5_000, hb.next('text'), 'text 2')
  t.like(m1, { type: 'text', body: 'hi bob', seq: 0, sentAt: 1000 })
  t.like(m2, { type: 'text', body: 'second', seq: 1 })
  t.true(b.sendAck([id1, id2]))
  const ack = await within(5_000, ha.next('ack'), 'ack')
  t.deepEqual(ack.type === 'ack' ? ack.ids : [], [id1, id2])

  t.true(b.sendText(new Uint8Array(16).fill(3), 'hi alice', 1002))
  t.like(await within(5_000, ha.next('text'), 'reply'), { body: 'hi alice', seq: 0 })

  // An ack of more than 64 IDs is split into several messages.
  t.true(a.sendAck(Array.from({ length: 70 }, (_, i) => new Uint8Array(16).fill(i))))
  const first = await within(5_000, hb.next('ack'), 'ack 1')
  const second = await within(5_000, hb.next('ack'), 'ack 2')
  t.is((first.type === 'ack' ? first.ids.length : 0) + (second.type === 'ack' ? second.ids.length : 0), 70)

  await a.close('done', 'test over')
  const [ca, cb] = await Promise.all([ha.closedCause, within(5_000, hb.closedCause, 'close at b')])
  t.deepEqual(ca, { kind: 'local', reason: 'done', detail: 'test over' })
  t.like(cb, { kind: 'bye', bye: { type: 'bye', reason: 'done', detail: 'test over' } })
  t.false(a.sendText(id1, 'too late', 1))
})

test('heartbeats: idle sessions ping, pong comes back, RTT is measured on both sides', async (t) => {
  const H = 250
  const { a, b } = await connectedPair(t, H)
  const ha = recorder()
  const hb = recorder()
  const twoEach = new Promise<void>((resolve) => {
    const check = (): void => {
      if (ha.rtts.length >= 2 && hb.rtts.length >= 2) resolve()
    }
    for (const h of [ha, hb]) {
      const rtt = h.rtt.bind(h)
      h.rtt = (ms) => {
        rtt(ms)
        check()
      }
    }
  })
  a.start(ha, HELLO)
  b.start(hb, HELLO)
  await within(20 * H, twoEach, 'two rtt samples on each side')
  // Both sides measure: a pong does not reset the answering side's own ping schedule.
  t.true([...ha.rtts, ...hb.rtts].every((ms) => ms >= 0 && ms < 2 * H))
  // Both sides are alive, so neither was declared dead in the meantime.
  t.true(a.open && b.open)
  await a.close('shutdown')
})

test('heartbeats in anti-phase: the dialler leads, the responder pings half a period later, pings never cross', async (t) => {
  const H = 250
  const { a, b } = await connectedPair(t, H)
  const ha = recorder()
  const hb = recorder()
  // When each side's pings left, from its rtt callback: the pong for our latest ping arrives now, RTT ms after it.
  const pings: { a: number[]; b: number[] } = { a: [], b: [] }
  const enough = 5
  const done = new Promise<void>((resolve) => {
    for (const [name, h] of [['a', ha], ['b', hb]] as const) {
      const rtt = h.rtt.bind(h)
      h.rtt = (ms) => {
        pings[name].push(performance.now() - ms)
        rtt(ms)
        if (pings.a.length >= enough && pings.b.length >= enough) resolve()
      }
    }
  })
  a.start(ha, HELLO)
  b.start(hb, HELLO)
  await within(20 * H, done, `${enough} rtt samples on each side`)
  t.true(a.open && b.open)
  await a.close('shutdown')
  t.true([...ha.rtts, ...hb.rtts].every((ms) => ms >= 0 && ms < H), `rtts ${ha.rtts} / ${hb.rtts}`)
  // After the first two periods, every ping is at least H/8 from the other side's nearest ping (H/2 by the rule).
  const nearest = (x: number, ys: readonly number[]): number => Math.min(...ys.map((y) => Math.abs(x - y)))
  const gaps = [...pings.a.slice(2).map((x) => nearest(x, pings.b)), ...pings.b.slice(2).map((x) => nearest(x, pings.a))]
  t.true(gaps.every((g) => g >= H / 8), `gaps ${gaps.map(Math.round)} ms`)
  t.log(`H = ${H} ms: nearest other-side ping ${gaps.map(Math.round).join(', ')} ms; rtts ${ha.rtts.join(', ')} / ${hb.rtts.join(', ')} ms`)
})

test('a silent peer is declared dead within 2H (ERR_SESSION_TIMEOUT)', async (t) => {
  const H = 300
  const { handler } = await rawCaller(t, recorder(), { heartbeatIntervalMs: H })
  // The raw caller never answers pings and sends nothing more.
  const started = performance.now()
  const cause = await within(10 * H, handler.closedCause, 'dead detection')
  const elapsed = performance.now() - started
  t.is(cause.kind, 'error')
  t.is(cause.kind === 'error' ? cause.error.code : '', 'ERR_SESSION_TIMEOUT')
  // Not early (the peer was heard just before `started`), and late only by timer latency.
  t.true(elapsed >= 1.5 * H && elapsed <= 2 * H + 250, `declared dead after ${Math.round(elapsed)} ms`)
  t.log(`silent peer declared dead after ${Math.round(elapsed)} ms (H = ${H} ms)`)
})

test('garbage after the handshake: typed error, connection closed', async (t) => {
  const { raw, handler } = await rawCaller(t)
  raw.write(Uint8Array.from([0x00, 0x20, ...new Uint8Array(32).fill(0xab)]))
  const cause = await within(5_000, handler.closedCause, 'close')
  t.is(cause.kind, 'error')
  t.true(cause.kind === 'error' && cause.error instanceof CryptoError && cause.error.code === 'ERR_NOISE_DECRYPT')
  await once(raw, 'close')
})

test('a tampered frame: typed error, connection closed', async (t) => {
  const { raw, transport, handler } = await rawCaller(t)
  const frame = transport.seal({ type: 'text', id: new Uint8Array(16), seq: 0, sentAt: 1, body: 'x' })
  frame[frame.length - 3]! ^= 0x01
  raw.write(frame)
  const cause = await within(5_000, handler.closedCause, 'close')
  t.true(cause.kind === 'error' && cause.error.code === 'ERR_NOISE_DECRYPT')
  t.deepEqual(handler.messages.map((m) => m.type), ['hello'])
})

test('an oversized frame is refused from its length alone', async (t) => {
  const { raw, handler } = await rawCaller(t)
  const n = MAX_SESSION_FRAME + 1
  raw.write(Uint8Array.of(n >>> 8, n & 0xff))
  const cause = await within(5_000, handler.closedCause, 'close')
  t.true(cause.kind === 'error' && cause.error instanceof DecodeError && cause.error.code === 'ERR_FRAME_TOO_LARGE')
})

test('peer closing mid-frame: ERR_SESSION_CLOSED, nothing delivered', async (t) => {
  const { raw, transport, handler } = await rawCaller(t)
  const frame = transport.seal({ type: 'text', id: new Uint8Array(16), seq: 0, sentAt: 1, body: 'half' })
  raw.end(frame.subarray(0, 10))
  const cause = await within(5_000, handler.closedCause, 'close')
  t.true(cause.kind === 'error' && cause.error instanceof SessionError && cause.error.code === 'ERR_SESSION_CLOSED')
  t.regex(cause.kind === 'error' ? cause.error.message : '', /middle of a frame/)
  t.deepEqual(handler.messages.map((m) => m.type), ['hello'])
})

test('peer closing without bye: ERR_SESSION_CLOSED', async (t) => {
  const { raw, handler } = await rawCaller(t)
  raw.end()
  const cause = await within(5_000, handler.closedCause, 'close')
  t.true(cause.kind === 'error' && cause.error.code === 'ERR_SESSION_CLOSED')
})

test('refused caller gets no answer; the caller sees the stream close', async (t) => {
  const [ca, sb] = await socketPair(t)
  const alice = peer()
  const bob = peer()
  const [a, b] = await Promise.allSettled([
    Connection.initiate(ca, { identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId }),
    Connection.respond(sb, { identity: bob.identity, noiseStatic: bob.noise, ownOnion: bob.onion, admit: () => false }),
  ])
  t.true(b.status === 'rejected' && b.reason instanceof SessionError && b.reason.code === 'ERR_PEER_REFUSED')
  t.true(a.status === 'rejected' && a.reason instanceof P2PMessError && a.reason.code === 'ERR_SESSION_CLOSED')
})

test('stale Noise key: the responder cannot decrypt and closes; the caller gets ERR_SESSION_CLOSED', async (t) => {
  const [ca, sb] = await socketPair(t)
  const alice = peer()
  const bob = peer()
  const [a, b] = await Promise.allSettled([
    Connection.initiate(ca, { identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: generateNoiseKeyPair().publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId }),
    Connection.respond(sb, { identity: bob.identity, noiseStatic: bob.noise, ownOnion: bob.onion, admit: () => true }),
  ])
  t.true(b.status === 'rejected' && b.reason instanceof P2PMessError && b.reason.code === 'ERR_SESSION_HANDSHAKE')
  t.true(a.status === 'rejected' && a.reason instanceof P2PMessError && a.reason.code === 'ERR_SESSION_CLOSED')
})

test('the responder proving another identity: ERR_SESSION_KEY_MISMATCH', async (t) => {
  const [ca, sb] = await socketPair(t)
  const alice = peer()
  const bob = peer()
  const mallory = peer()
  // Mallory's record carried Bob's peer ID? Impossible (signed); the closest attack is serving Mallory's keys.
  const [a] = await Promise.allSettled([
    Connection.initiate(ca, { identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: mallory.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId }),
    Connection.respond(sb, { identity: mallory.identity, noiseStatic: mallory.noise, ownOnion: bob.onion, admit: () => true }),
  ])
  t.true(a.status === 'rejected' && a.reason instanceof SessionError && a.reason.code === 'ERR_SESSION_KEY_MISMATCH')
})

test('a responder that never answers: ERR_SESSION_TIMEOUT at the handshake deadline', async (t) => {
  const [ca] = await socketPair(t)
  const alice = peer()
  const bob = peer()
  const started = performance.now()
  const error = await t.throwsAsync(
    Connection.initiate(ca, { identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId, handshakeTimeoutMs: 200 }),
  )
  t.true(error instanceof SessionError && error.code === 'ERR_SESSION_TIMEOUT')
  t.true(performance.now() - started < 2_000)
  t.true(ca.destroyed)
})

test('garbage instead of a handshake: typed error for the responder, no answer', async (t) => {
  const [ca, sb] = await socketPair(t)
  const bob = peer()
  const responding = Connection.respond(sb, { identity: bob.identity, noiseStatic: bob.noise, ownOnion: bob.onion, admit: () => true })
  ca.write(Uint8Array.from([0xff, 0xff, 1, 2, 3]))
  const error = await t.throwsAsync(responding)
  t.true(error instanceof DecodeError && error.code === 'ERR_FRAME_TOO_LARGE')
  await once(ca, 'close')
})
