import test from 'ava'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_BACKOFF, redialDelay, survivingSession, type Initiator } from '../src/client/backoff.js'
import { startClient, type StartClientOptions } from '../src/client/client.js'
import { InvalidArgumentError } from '../src/errors.js'
import { generateIdentity, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { seededRandom } from './helpers/random.js'

test('redialDelay: exact values for the default policy', (t) => {
  // random = 0 gives the full delay, random -> 1 takes off up to jitter (50 %).
  t.is(redialDelay(1, 0), 2_000)
  t.is(redialDelay(2, 0), 4_000)
  t.is(redialDelay(3, 0), 8_000)
  t.is(redialDelay(1, 0.5), 1_500)
  t.is(redialDelay(8, 0), 256_000)
  t.is(redialDelay(9, 0), 300_000) // capped
  t.is(redialDelay(1_000_000, 0), 300_000) // factor ** huge = Infinity, still the cap
  t.is(redialDelay(3, 0.999_999, { baseMs: 100, maxMs: 1_000, factor: 3, jitter: 0 }), 900)
})

test('redialDelay: seeded property run — bounded, within the jitter band, never decreasing in expectation', (t) => {
  const random = seededRandom(0x5eed)
  const cases = 10_000
  for (let i = 0; i < cases; i++) {
    const attempt = 1 + random.int(40)
    const r = random.next()
    const d = redialDelay(attempt, r)
    const full = Math.min(DEFAULT_BACKOFF.maxMs, DEFAULT_BACKOFF.baseMs * 2 ** (attempt - 1))
    if (!(d <= full && d >= Math.floor(full * (1 - DEFAULT_BACKOFF.jitter)) && Number.isInteger(d))) {
      t.fail(`attempt ${attempt}, random ${r}: delay ${d} outside [${full / 2}, ${full}]`)
      return
    }
    // The un-jittered delay never shrinks as attempts grow.
    t.true(redialDelay(attempt + 1, 0) >= redialDelay(attempt, 0) || t.fail(`attempt ${attempt}`))
  }
  t.log(`${cases} seeded cases`)
})

test('redialDelay: bad input is a typed error', (t) => {
  for (const attempt of [0, -1, 1.5, Number.NaN]) t.throws(() => redialDelay(attempt, 0), { instanceOf: InvalidArgumentError })
  for (const r of [-0.1, 1, Number.NaN, 2]) t.throws(() => redialDelay(1, r), { instanceOf: InvalidArgumentError })
  t.throws(() => redialDelay(1, 0, { ...DEFAULT_BACKOFF, baseMs: 0 }), { instanceOf: InvalidArgumentError })
  t.throws(() => redialDelay(1, 0, { ...DEFAULT_BACKOFF, maxMs: 1 }), { instanceOf: InvalidArgumentError })
  t.throws(() => redialDelay(1, 0, { ...DEFAULT_BACKOFF, factor: 0.5 }), { instanceOf: InvalidArgumentError })
  t.throws(() => redialDelay(1, 0, { ...DEFAULT_BACKOFF, jitter: 1.5 }), { instanceOf: InvalidArgumentError })
})

const mirror = (i: Initiator): Initiator => (i === 'local' ? 'remote' : 'local')

test('survivingSession: the session dialed by the lower peer ID survives, on both sides', (t) => {
  const ids = Array.from({ length: 2 }, () => peerIdFromIdentityKey(generateIdentity().publicKey)).sort()
  const [low, high] = [ids[0]!, ids[1]!]
  // At the low peer: its own dial is 'local'.
  t.is(survivingSession({ localPeerId: low, remotePeerId: high, existing: 'local', newer: 'remote' }), 'existing')
  t.is(survivingSession({ localPeerId: low, remotePeerId: high, existing: 'remote', newer: 'local' }), 'newer')
  // At the high peer: the low peer's dial is 'remote'.
  t.is(survivingSession({ localPeerId: high, remotePeerId: low, existing: 'remote', newer: 'local' }), 'existing')
  t.is(survivingSession({ localPeerId: high, remotePeerId: low, existing: 'local', newer: 'remote' }), 'newer')
  // Same dialer twice: the newer one (the older is a remnant).
  t.is(survivingSession({ localPeerId: low, remotePeerId: high, existing: 'local', newer: 'local' }), 'newer')
  t.is(survivingSession({ localPeerId: high, remotePeerId: low, existing: 'remote', newer: 'remote' }), 'newer')
})

test('survivingSession: seeded property run — both sides always keep the same session', (t) => {
  const random = seededRandom(42)
  const ids = Array.from({ length: 16 }, () => peerIdFromIdentityKey(generateIdentity().publicKey))
  const cases = 2_000
  for (let i = 0; i < cases; i++) {
    const a = ids[random.int(ids.length)]!
    let b = ids[random.int(ids.length)]!
    if (a === b) b = ids[(ids.indexOf(a) + 1) % ids.length]!
    const existing: Initiator = random.next() < 0.5 ? 'local' : 'remote'
    const newer: Initiator = random.next() < 0.5 ? 'local' : 'remote'
    // The same two sessions, seen from the other side: initiators mirrored. Order of arrival may differ too.
    const atA = survivingSession({ localPeerId: a, remotePeerId: b, existing, newer })
    const keptAtA = atA === 'existing' ? existing : newer
    if (existing !== newer) {
      const atB = survivingSession({ localPeerId: b, remotePeerId: a, existing: mirror(newer), newer: mirror(existing) })
      const keptAtB = atB === 'existing' ? mirror(newer) : mirror(existing)
      t.is(mirror(keptAtB), keptAtA)
      // The survivor is the dial of the lower ID.
      t.is(keptAtA, a < b ? 'local' : 'remote')
    }
  }
  t.log(`${cases} seeded cases`)
})

test('survivingSession: bad input is a typed error', (t) => {
  const id = peerIdFromIdentityKey(generateIdentity().publicKey)
  t.throws(() => survivingSession({ localPeerId: id, remotePeerId: id, existing: 'local', newer: 'remote' }), { instanceOf: InvalidArgumentError })
  t.throws(() => survivingSession({ localPeerId: id, remotePeerId: 'x', existing: 'x' as Initiator, newer: 'remote' }), { instanceOf: InvalidArgumentError })
})

test('startClient validates its options before starting anything', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-client-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const base: StartClientOptions = { dataDir: dir, passphrase: 'x', directories: ['http://example.onion'] }
  const bad: Array<Record<string, unknown>> = [
    { dataDir: '' },
    { passphrase: undefined },
    { directories: [] },
    { heartbeatIntervalMs: 0 },
    { heartbeatIntervalMs: 1.5 },
    { dialTimeoutMs: -1 },
    { recordLifetimeMs: 1000 },
    { now: 5 },
  ]
  for (const patch of bad) {
    await t.throwsAsync(startClient({ ...base, ...patch } as unknown as StartClientOptions), { instanceOf: InvalidArgumentError }, JSON.stringify(patch))
  }
  // Nothing was created in the data directory.
  t.deepEqual(await readdir(dir), [])
})
