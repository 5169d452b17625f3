/**
 * Two real clients in one process on the private Tor network, with the directory as an onion service and a
 * lying directory next to it: add by peer ID, accept, messages both ways with delivered events, presence when a
 * peer leaves, 20 messages queued while the peer is down delivered exactly once and in order after it restarts,
 * and forged records that cannot steer Alice anywhere but to Bob.
 */
import test from 'ava'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startOnionDirectory } from '../directory/onion.js'
import type { ClientEvent } from '../src/client/api.js'
import { startClient, type P2PMessClient, type StartClientOptions } from '../src/client/client.js'
import { Connection, SESSION_PORT, type CloseCause } from '../src/client/connection.js'
import { SessionError } from '../src/errors.js'
import { randomBytes } from '@noble/hashes/utils.js'
import { generateIdentity, generateNoiseKeyPair, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import { createRecord, serializeRecord, type DirectoryRecord } from '../src/protocol/record.js'
import { createAccount } from '../src/store/account.js'
import { testNetwork } from './helpers/tor.js'
import type { LogFields, Logger } from '../src/log.js'

const H = 2_500
const CHEAP = { name: 'scrypt', N: 2 ** 10, r: 8, p: 1 } as const

/** Every event of one client, with a way to wait for one that matches. */
class Events {
  readonly all: Array<{ at: number; event: ClientEvent }> = []
  readonly #waiters = new Set<() => void>()
  readonly push = (event: ClientEvent): void => {
    this.all.push({ at: performance.now(), event })
    for (const w of [...this.#waiters]) w()
  }
  /** Re-checks the waiters without an event. */
  readonly poke = (): void => {
    for (const w of [...this.#waiters]) w()
  }
  of<T extends ClientEvent['type']>(type: T): Array<Extract<ClientEvent, { type: T }>> {
    return this.all.map((e) => e.event).filter((e): e is Extract<ClientEvent, { type: T }> => e.type === type)
  }
  /** Resolves once `check` returns a value (checked now and after each event); rejects after `timeoutMs`. */
  until<T>(what: string, timeoutMs: number, check: () => T | undefined): Promise<T> {
    return new Promise((resolve, reject) => {
      const tryNow = (): boolean => {
        const value = check()
        if (value === undefined) return false
        cleanup()
        resolve(value)
        return true
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new SessionError('ERR_SESSION_TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}`))
      }, timeoutMs)
      const waiter = (): void => void tryNow()
      const cleanup = (): void => {
        clearTimeout(timer)
        this.#waiters.delete(waiter)
      }
      if (!tryNow()) this.#waiters.add(waiter)
    })
  }
}

/** A Logger that keeps lines in memory (facts only: the client never logs secrets or bodies). */
class MemoryLog implements Logger {
  readonly lines: Array<{ msg: string; fields: LogFields }> = []
  /** Called after each line (lets an Events re-check its waiters on log facts too). */
  tap: () => void = () => {}
  readonly #add = (msg: string, fields: LogFields = {}): void => {
    this.lines.push({ msg, fields })
    this.tap()
  }
  debug = this.#add
  info = this.#add
  warn = this.#add
  error = this.#add
  count(msg: string): number {
    return this.lines.filter((l) => l.msg === msg).length
  }
  closedAs(how: string): number {
    return this.lines.filter((l) => l.msg === 'session closed' && l.fields.how === how).length
  }
  openSessions(): string[] {
    const ids = (msg: string): string[] => this.lines.filter((l) => l.msg === msg).map((l) => String(l.fields.session))
    const closed = ids('session closed')
    return ids('session handshaken').filter((id) => !closed.includes(id))
  }
}

/**
 * The lying directory: accepts every PUT, and answers GETs with forgeries — Bob's genuine record re-pointed at
 * Mallory's onion and Noise key with a much higher seq (signature no longer matches), and for Carol (who never
 * published) Mallory's own valid record relabelled with Carol's ID.
 */
async function startEvilDirectory(realLocalUrl: string, carolId: string) {
  const mallory = generateIdentity()
  const malloryRecord = createRecord({
    identitySeed: mallory.seed,
    onion: onionServiceKeyFromSeed(randomBytes(32)).address,
    noiseKey: generateNoiseKeyPair().publicKey,
    seq: 1,
    expires: Math.floor(Date.now() / 1000) + 3600,
  })
  const served: string[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const id = decodeURIComponent((req.url ?? '').replace(/^\/v1\/records\//, ''))
      if (req.method === 'PUT') {
        req.resume()
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
        return
      }
      let forged: DirectoryRecord | undefined
      if (id === carolId) forged = { ...malloryRecord, id: carolId }
      else {
        const real = await fetch(`${realLocalUrl}/v1/records/${id}`)
        if (real.ok) {
          const genuine = (await real.json()) as DirectoryRecord
          forged = { ...genuine, onion: malloryRecord.onion, noiseKey: malloryRecord.noiseKey, seq: genuine.seq + 1000 }
        }
      }
      if (forged === undefined) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"not_found","message":"no record"}}')
        return
      }
      served.push(id)
      res.writeHead(200, { 'content-type': 'application/json' }).end(serializeRecord(forged))
    })().catch(() => res.destroy())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { server, port: (server.address() as AddressInfo).port, served }
}

const carolId = peerIdFromIdentityKey(generateIdentity().publicKey)

/** One onion directory and one lying directory for the whole file (their tor is the directory's). */
const shared = (async () => {
  const network = await testNetwork()
  const root = await mkdtemp(join(tmpdir(), 'p2pmess-client-tor-'))
  const directory = await startOnionDirectory({ dbPath: join(root, 'dir', 'db'), dataDir: join(root, 'dir'), network })
  const evil = await startEvilDirectory(directory.localUrl, carolId)
  const evilKey = onionServiceKeyFromSeed(randomBytes(32))
  const { address: evilOnion } = await directory.supervisor.addOnionService({ expandedSecretKey: evilKey.expandedSecretKey, virtualPort: 80, targetPort: evil.port })
  return { network, root, directory, evil, evilOnion }
})()

test.after.always(async () => {
  const { root, directory, evil } = await shared
  await directory.close()
  await new Promise((resolve) => evil.server.close(resolve))
  await rm(root, { recursive: true, force: true })
})

test.serial('two clients over tor: add, accept, chat, presence, outbox across a restart, lying directory', async (t) => {
  t.timeout(600_000)
  const { network, root, directory, evil, evilOnion } = await shared
  const cleanups: Array<() => Promise<unknown>> = []
  t.teardown(async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined)
  })
  t.log(`directory ${directory.onionUrl}, lying directory http://${evilOnion}`)

  const aliceAccount = await createAccount({ dataDir: join(root, 'alice'), passphrase: 'alice pass', kdf: CHEAP })
  const bobAccount = await createAccount({ dataDir: join(root, 'bob'), passphrase: 'bob pass', kdf: CHEAP })
  const common: Omit<StartClientOptions, 'dataDir' | 'directories'> = {
    network,
    heartbeatIntervalMs: H,
    backoff: { baseMs: 1_000, maxMs: 4_000 },
    dialTimeoutMs: 60_000,
    publishWaitMs: 120_000,
  }
  const aliceEvents = new Events()
  let bobEvents = new Events()
  const started = performance.now()
  const [alice, firstBob] = await Promise.all([
    startClient({ ...common, dataDir: join(root, 'alice'), account: aliceAccount, directories: [directory.onionUrl, `http://${evilOnion}`], onEvent: aliceEvents.push }),
    startClient({ ...common, dataDir: join(root, 'bob'), account: bobAccount, directories: [directory.onionUrl], onEvent: bobEvents.push }),
  ])
  let bob: P2PMessClient = firstBob
  cleanups.push(() => alice.stop())
  cleanups.push(() => bob.stop())
  t.is(alice.peerId, aliceAccount.peerId)
  t.is(bob.onion, bobAccount.onionAddress)
  await aliceEvents.until('alice published', 60_000, () => aliceEvents.of('published')[0])
  await bobEvents.until('bob published', 60_000, () => bobEvents.of('published')[0])
  t.truthy(aliceEvents.of('ready').find((e) => e.peerId === alice.peerId && e.onion === aliceAccount.onionAddress))
  t.log(`both clients up and published after ${((performance.now() - started) / 1000).toFixed(1)} s`)

  // Alice adds Bob by peer ID; the lying directory's forged (higher-seq) record for Bob is ignored.
  t.deepEqual(await alice.dispatch({ cmd: 'add', peerId: bob.peerId, name: 'bob' }), { ok: true })
  t.true(evil.served.includes(bob.peerId), 'the lying directory was asked and served a forgery')
  t.like(alice.contacts()[0], { peerId: bob.peerId, name: 'bob', state: 'pending' })

  // Bob sees a request, accepts; both become accepted and online.
  await bobEvents.until('request at bob', 120_000, () => bobEvents.of('request').find((e) => e.peerId === alice.peerId))
  t.like(bob.contacts()[0], { peerId: alice.peerId, state: 'request' })
  t.deepEqual(await bob.dispatch({ cmd: 'accept', peerId: alice.peerId }), { ok: true })
  await aliceEvents.until('bob accepted at alice', 120_000, () => alice.contacts().find((c) => c.peerId === bob.peerId && c.state === 'accepted' && c.presence === 'online'))
  await bobEvents.until('alice online at bob', 120_000, () => bob.contacts().find((c) => c.peerId === alice.peerId && c.presence === 'online'))
  t.is(alice.contacts()[0]!.safetyNumber, bob.contacts()[0]!.safetyNumber)

  // Messages both ways, each with a delivered event at its sender.
  const sent1 = await alice.dispatch({ cmd: 'send', peerId: bob.peerId, body: 'hi bob' })
  t.true(sent1.ok)
  const toBob = await bobEvents.until('message at bob', 60_000, () => bobEvents.of('message').find((e) => e.message.direction === 'in'))
  t.like(toBob.message, { peerId: alice.peerId, body: 'hi bob', direction: 'in', status: 'received', id: sent1.ok ? sent1.id : '' })
  await aliceEvents.until('delivered at alice', 60_000, () => aliceEvents.of('delivered').find((e) => sent1.ok && e.id === sent1.id))
  const sent2 = await bob.dispatch({ cmd: 'send', peerId: alice.peerId, body: 'hi alice' })
  await aliceEvents.until('message at alice', 60_000, () => aliceEvents.of('message').find((e) => e.message.direction === 'in' && e.message.body === 'hi alice'))
  await bobEvents.until('delivered at bob', 60_000, () => bobEvents.of('delivered').find((e) => sent2.ok && e.id === sent2.id))
  // Idle sessions ping every H; both sides measure an RTT.
  const [rttA, rttB] = await Promise.all([
    aliceEvents.until('an rtt at alice', 3 * H, () => aliceEvents.of('presence').find((e) => e.rttMs !== undefined)),
    bobEvents.until('an rtt at bob', 3 * H, () => bobEvents.of('presence').find((e) => e.rttMs !== undefined)),
  ])
  t.like(alice.contacts()[0], { presence: 'online' })
  t.log(`heartbeat RTT over onion services: alice ${rttA.rttMs} ms, bob ${rttB.rttMs} ms`)

  // The lying directory cannot introduce a contact either: only forgeries for Carol -> typed error, no contact.
  const carol = await alice.dispatch({ cmd: 'add', peerId: carolId })
  t.like(carol, { ok: false, code: 'ERR_DIRECTORY_INVALID_RECORD' })
  t.deepEqual(alice.contacts().map((c) => c.peerId), [bob.peerId])

  // Bob stops: Alice sees him leave 'online' within 2H.
  const stopAt = performance.now()
  await bob.stop()
  const left = await aliceEvents.until('bob leaving online', 2 * H + 1_000, () =>
    aliceEvents.all.find((e) => e.at >= stopAt && e.event.type === 'presence' && e.event.peerId === bob.peerId && e.event.presence !== 'online'),
  )
  t.true(left.at - stopAt <= 2 * H, `left online after ${Math.round(left.at - stopAt)} ms`)
  t.log(`Alice saw Bob leave 'online' ${Math.round(left.at - stopAt)} ms after he stopped`)

  // 20 messages while Bob is down: queued.
  const ids: string[] = []
  for (let i = 0; i < 20; i++) {
    const r = await alice.dispatch({ cmd: 'send', peerId: bob.peerId, body: `queued ${i}` })
    if (!r.ok || r.id === undefined) return t.fail(`send ${i} failed: ${JSON.stringify(r)}`)
    ids.push(r.id)
  }
  t.is(alice.contacts()[0]!.queued, 20)

  // Bob restarts from the same data dir: all 20 arrive exactly once, in order; Alice gets 20 delivered.
  const restartAt = performance.now()
  bobEvents = new Events()
  const restarted = bobEvents
  bob = await startClient({ ...common, dataDir: join(root, 'bob'), account: bobAccount, directories: [directory.onionUrl], onEvent: restarted.push })
  t.is(bob.onion, bobAccount.onionAddress)
  await aliceEvents.until('20 delivered', 240_000, () => (ids.every((id) => aliceEvents.of('delivered').some((d) => d.id === id)) ? true : undefined))
  t.log(`20 queued messages delivered ${((performance.now() - restartAt) / 1000).toFixed(1)} s after Bob's restart began`)
  const incoming = restarted.of('message').filter((e) => e.message.direction === 'in').map((e) => e.message)
  t.deepEqual(incoming.map((m) => m.id), ids)
  t.deepEqual(incoming.map((m) => m.body), ids.map((_, i) => `queued ${i}`))
  const history = await bob.dispatch({ cmd: 'history', peerId: alice.peerId, limit: 100 })
  const inHistory = history.ok ? (history.messages ?? []).filter((m) => m.direction === 'in') : []
  t.deepEqual(inHistory.map((m) => m.body), ['hi bob', ...ids.map((_, i) => `queued ${i}`)])
  t.is(alice.contacts()[0]!.queued, 0)
  t.is(aliceEvents.of('delivered').filter((d) => ids.includes(d.id)).length, 20)
  const aliceHistory = await alice.dispatch({ cmd: 'history', peerId: bob.peerId, limit: 100 })
  t.true(aliceHistory.ok && (aliceHistory.messages ?? []).filter((m) => m.direction === 'out').every((m) => m.status === 'delivered'))

  // Nothing from the lying directory ever reached Alice as a session partner: no alarming errors about Bob.
  t.deepEqual(aliceEvents.of('error').filter((e) => e.peerId === bob.peerId && e.code === 'ERR_SESSION_KEY_MISMATCH'), [])
  t.log(`forged records of Bob served by the lying directory: ${evil.served.filter((id) => id === bob.peerId).length}`)

  await Promise.all([alice.stop(), bob.stop()])
})

test.serial('simultaneous adds, simultaneous restarts and a forced duplicate session: one survives, messages arrive once', async (t) => {
  t.timeout(600_000)
  const { network, root, directory } = await shared
  const cleanups: Array<() => Promise<unknown>> = []
  t.teardown(async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined)
  })
  const names = ['dave', 'erin'] as const
  const accounts = await Promise.all(names.map((n) => createAccount({ dataDir: join(root, n), passphrase: n, kdf: CHEAP })))
  const startBoth = async (): Promise<{ clients: P2PMessClient[]; events: Events[]; logs: MemoryLog[] }> => {
    const events = [new Events(), new Events()]
    const logs = [new MemoryLog(), new MemoryLog()]
    logs.forEach((l, i) => (l.tap = events[i]!.poke))
    const clients = await Promise.all(
      accounts.map((account, i) =>
        startClient({
          dataDir: join(root, names[i]!),
          account,
          directories: [directory.onionUrl],
          network,
          heartbeatIntervalMs: H,
          backoff: { baseMs: 1_000, maxMs: 4_000 },
          publishWaitMs: 120_000,
          onEvent: events[i]!.push,
          logger: logs[i]!,
        }),
      ),
    )
    for (const c of clients) cleanups.push(() => c.stop())
    await Promise.all(events.map((e, i) => e.until(`published ${i}`, 60_000, () => e.of('published')[0])))
    return { clients, events, logs }
  }
  const idsOf = (rs: Array<{ ok: boolean; id?: string }>): string[] => rs.map((r) => (r.ok && r.id !== undefined ? r.id : ''))
  const bodies = (e: Events): string[] => e.of('message').filter((m) => m.message.direction === 'in').map((m) => m.message.body)
  /** Both send three texts at once; each side gets the other's three exactly once, in order, and 3 delivered. */
  const exchange = async (clients: P2PMessClient[], events: Events[], tag: string): Promise<void> => {
    const [a, b] = [clients[0]!, clients[1]!]
    const [fromA, fromB] = await Promise.all([
      Promise.all([1, 2, 3].map((i) => a.dispatch({ cmd: 'send', peerId: b.peerId, body: `${tag}a${i}` }))),
      Promise.all([1, 2, 3].map((i) => b.dispatch({ cmd: 'send', peerId: a.peerId, body: `${tag}b${i}` }))),
    ])
    const ids = [idsOf(fromA), idsOf(fromB)]
    await Promise.all(
      events.map((e, i) => e.until(`${tag}: 3 delivered at ${i}`, 180_000, () => (ids[i]!.every((id) => e.of('delivered').some((d) => d.id === id)) ? true : undefined))),
    )
    t.deepEqual(bodies(events[1]!).filter((b) => b.startsWith(tag)), [`${tag}a1`, `${tag}a2`, `${tag}a3`])
    t.deepEqual(bodies(events[0]!).filter((b) => b.startsWith(tag)), [`${tag}b1`, `${tag}b2`, `${tag}b3`])
  }
  /** Settled: both online over one and the same session, with heartbeats answered and no flapping. */
  const settled = async (clients: P2PMessClient[], events: Events[], logs: MemoryLog[]): Promise<void> => {
    const from = performance.now()
    await Promise.all(events.map((e, i) => e.until(`rtt ${i}`, 4 * H, () => e.all.find((x) => x.at > from && x.event.type === 'presence' && x.event.rttMs !== undefined))))
    for (const c of clients) t.like(c.contacts()[0], { state: 'accepted', presence: 'online', queued: 0 })
    t.deepEqual(events.map((e) => e.all.filter((x) => x.at > from && x.event.type === 'presence' && x.event.presence !== 'online').length), [0, 0])
    const open = logs.map((l) => l.openSessions())
    t.is(open[0]!.length, 1)
    t.deepEqual(open[0], open[1])
    t.log(`sessions handshaken: ${logs.map((l) => l.count('session handshaken')).join(' / ')}, closed as duplicate: ${logs.map((l) => l.closedAs('local duplicate')).join(' / ')}`)
  }

  // Round 1: both add each other at once, and write before any session is up (the texts wait in the outbox).
  const first = await startBoth()
  const [dave, erin] = [first.clients[0]!, first.clients[1]!]
  t.deepEqual(await Promise.all([dave.dispatch({ cmd: 'add', peerId: erin.peerId }), erin.dispatch({ cmd: 'add', peerId: dave.peerId })]), [{ ok: true }, { ok: true }])
  await exchange(first.clients, first.events, 'r1')
  await settled(first.clients, first.events, first.logs)

  // Round 2: both stop and start again at once; each dials the other as soon as it is up.
  await Promise.all(first.clients.map((c) => c.stop()))
  const second = await startBoth()
  await Promise.all(second.events.map((e, i) => e.until(`online ${i}`, 120_000, () => second.clients[i]!.contacts().find((c) => c.presence === 'online'))))
  await exchange(second.clients, second.events, 'r2')
  await settled(second.clients, second.events, second.logs)

  // Round 3, a duplicate session for real: the test opens a second session to T as F (with F's own keys, through
  // the directory's tor), where F is the side that dialed the live session. At T both sessions were dialed by F,
  // so the newer one (ours) survives and T closes the real one with bye "duplicate". A text T sends now goes to our
  // session, which never acks it. Real F redials; at T that session is newer again, so ours is closed as the
  // duplicate, and the unacked text is written again on the survivor: real F gets it exactly once.
  const [openSession] = second.logs[0]!.openSessions()
  const dialedBy = second.logs.findIndex((l) => l.lines.some((x) => x.msg === 'session handshaken' && x.fields.session === openSession && x.fields.initiator === 'local'))
  t.true(dialedBy === 0 || dialedBy === 1)
  const [f, target] = [dialedBy, 1 - dialedBy]
  const fAccount = accounts[f]!
  const tClient = second.clients[target]!
  const tLog = second.logs[target]!
  const socket = await directory.supervisor.dialer.dialWithRetry(tClient.onion, SESSION_PORT, { deadlineMs: 60_000 })
  const fake = await Connection.initiate(socket, {
    identity: { seed: fAccount.identitySeed, publicKey: fAccount.identityKey },
    noiseStatic: { secretKey: fAccount.noiseSecret, publicKey: fAccount.noisePublic },
    remoteNoiseKey: accounts[target]!.noisePublic,
    remoteOnion: tClient.onion,
    expectedPeerId: tClient.peerId,
    heartbeatIntervalMs: H,
  })
  const fakeTexts: string[] = []
  let fakeClosed: ((c: CloseCause) => void) | undefined
  const fakeEnd = new Promise<CloseCause>((resolve) => (fakeClosed = resolve))
  const fakeEvents = new Events()
  fake.start(
    {
      message: (m) => {
        if (m.type === 'text') fakeTexts.push(m.body)
        fakeEvents.push({ type: 'error', code: 'test', message: m.type })
      },
      rtt: () => {},
      closed: (c) => fakeClosed?.(c),
    },
    { type: 'hello', clientName: 'test', clientVersion: '1', capabilities: ['ack', 'accepts'] },
  )
  cleanups.push(() => fake.close('shutdown'))
  await second.events[target]!.until('the real session closed as duplicate', 30_000, () => (tLog.closedAs('local duplicate') >= 1 ? true : undefined))
  const r3 = await tClient.dispatch({ cmd: 'send', peerId: second.clients[f]!.peerId, body: 'r3 once' })
  t.true(r3.ok)
  await fakeEvents.until('r3 at the fake session', 30_000, () => (fakeTexts.includes('r3 once') ? true : undefined))
  const end = await within(60_000, fakeEnd)
  t.like(end, { kind: 'bye', bye: { reason: 'done', detail: 'duplicate' } })
  const fEvents = second.events[f]!
  await second.events[target]!.until('r3 delivered', 60_000, () => second.events[target]!.of('delivered').find((d) => r3.ok && d.id === r3.id))
  t.deepEqual(bodies(fEvents).filter((b) => b === 'r3 once'), ['r3 once'])
  // At least the real session and ours; a redial racing the resolution can add one more, never a lost message.
  t.true(tLog.closedAs('local duplicate') >= 2)
  t.log(`duplicate sessions resolved at T: ${tLog.closedAs('local duplicate')} closed as duplicate; r3 written on the loser, delivered once on the survivor`)
})

function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new SessionError('ERR_SESSION_TIMEOUT', `no result within ${ms} ms`)), ms)
  })
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}
