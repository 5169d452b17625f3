import test from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { InvalidArgumentError, SessionError, StorageError } from '../src/errors.js'
import { toBase64url } from '../src/protocol/bytes.js'
import { generateIdentity, generateNoiseKeyPair, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import { createRecord } from '../src/protocol/record.js'
import { ClientDb, type Contact } from '../src/store/db.js'
import { seededRandom } from './helpers/random.js'

const roots: string[] = []
async function tempDb(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'p2pmess-db-'))
  roots.push(root)
  return join(root, 'db')
}
test.after.always(async () => {
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })))
})

function idSource(seed: number): () => string {
  const random = seededRandom(seed)
  return () => toBase64url(random.bytes(16))
}

function newPeer(state: Contact['state'] = 'accepted', name?: string) {
  const identity = generateIdentity()
  const contact: Contact = {
    peerId: peerIdFromIdentityKey(identity.publicKey),
    identityKey: toBase64url(identity.publicKey),
    state,
    addedAt: 1_700_000_000_000,
    ...(name === undefined ? {} : { name }),
  }
  return { identity, contact }
}

async function withContact(path: string, state: Contact['state'] = 'accepted') {
  const db = await ClientDb.open(path)
  const { contact, identity } = newPeer(state)
  await db.putContact(contact)
  return { db, peerId: contact.peerId, contact, identity }
}

test('contacts: put, get, list in peer-ID order, update, remove', async (t) => {
  const db = await ClientDb.open(await tempDb())
  const peers = [newPeer('pending', 'Alice'), newPeer('request'), newPeer('accepted', 'Carol')]
  for (const p of peers) await db.putContact(p.contact)
  t.deepEqual(await db.getContact(peers[0]!.contact.peerId), peers[0]!.contact)
  const listed = await db.listContacts()
  t.deepEqual(listed.map((c) => c.peerId), peers.map((p) => p.contact.peerId).sort())
  await db.putContact({ ...peers[1]!.contact, state: 'accepted', name: 'Bob' })
  t.is((await db.getContact(peers[1]!.contact.peerId))?.name, 'Bob')
  t.true(await db.removeContact(peers[2]!.contact.peerId))
  t.false(await db.removeContact(peers[2]!.contact.peerId))
  t.is(await db.getContact(peers[2]!.contact.peerId), undefined)
  t.is((await db.listContacts()).length, 2)
  await db.close()
})

test('contacts keep a verified lastRecord; a record for another peer or key is refused', async (t) => {
  const db = await ClientDb.open(await tempDb())
  const { identity, contact } = newPeer()
  const onion = onionServiceKeyFromSeed(new Uint8Array(32).fill(9)).address
  const record = createRecord({ identitySeed: identity.seed, onion, noiseKey: generateNoiseKeyPair().publicKey, seq: 3, expires: 1_800_000_000 })
  await db.putContact({ ...contact, lastRecord: record })
  t.deepEqual((await db.getContact(contact.peerId))?.lastRecord, record)
  const other = newPeer()
  const foreign = createRecord({ identitySeed: other.identity.seed, onion, noiseKey: generateNoiseKeyPair().publicKey, seq: 1, expires: 1_800_000_000 })
  await t.throwsAsync(() => db.putContact({ ...contact, lastRecord: foreign }), { instanceOf: InvalidArgumentError })
  await db.close()
})

test('pinning: a different identity key for a known peer ID is refused', async (t) => {
  const { db, peerId, contact, identity } = await withContact(await tempDb())
  const intruder = generateIdentity()
  // The key must match the self-certifying peer ID ...
  await t.throwsAsync(() => db.putContact({ ...contact, identityKey: toBase64url(intruder.publicKey) }), {
    instanceOf: SessionError,
    code: 'ERR_SESSION_KEY_MISMATCH',
  })
  // ... and the pinned key.
  t.is((await db.pinContactKey(peerId, identity.publicKey)).peerId, peerId)
  t.is((await db.pinContactKey(peerId, contact.identityKey)).peerId, peerId)
  await t.throwsAsync(() => db.pinContactKey(peerId, intruder.publicKey), { instanceOf: SessionError, code: 'ERR_SESSION_KEY_MISMATCH' })
  await t.throwsAsync(() => db.pinContactKey(peerId, 'not base64!'), { instanceOf: SessionError, code: 'ERR_SESSION_KEY_MISMATCH' })
  const stranger = newPeer().contact.peerId
  await t.throwsAsync(() => db.pinContactKey(stranger, identity.publicKey), { instanceOf: SessionError, code: 'ERR_UNKNOWN_CONTACT' })
  t.is((await db.getContact(peerId))?.identityKey, contact.identityKey)
  await db.close()
})

test('outbox: ordered, survives reopen, delivered exactly once, sequence numbers never reused', async (t) => {
  const path = await tempDb()
  let { db, peerId } = await withContact(path)
  const nextId = idSource(1)
  const ids = Array.from({ length: 20 }, nextId)
  for (const [i, id] of ids.entries()) await db.enqueue(peerId, { id, body: `message ${i}`, createdAt: 1000 + i })
  await db.close()

  db = await ClientDb.open(path)
  const pending = await db.pending(peerId)
  t.deepEqual(pending.map((e) => e.id), ids)
  t.deepEqual(pending.map((e) => e.seq), ids.map((_, i) => i + 1))
  for (const id of ids.slice(0, 10)) t.true(await db.markDelivered(peerId, id))
  t.false(await db.markDelivered(peerId, ids[0]!))
  await db.close()

  db = await ClientDb.open(path)
  t.deepEqual((await db.pending(peerId)).map((e) => e.id), ids.slice(10))
  for (const id of ids.slice(0, 10)) t.false(await db.markDelivered(peerId, id))
  for (const id of ids.slice(10)) t.true(await db.markDelivered(peerId, id))
  t.deepEqual(await db.pending(peerId), [])
  const later = await db.enqueue(peerId, { id: nextId(), body: 'after', createdAt: 5000 })
  t.is(later.seq, 21)
  const history = await db.history(peerId, { limit: 1000 })
  t.deepEqual(history.map((h) => h.status), [...ids.map(() => 'delivered'), 'queued'])
  t.true(history.every((h) => h.direction === 'out'))
  await db.close()
})

test('outbox: enqueue leaves the fsync to a sync barrier that settled() and close() wait for', async (t) => {
  const path = await tempDb()
  const db = await ClientDb.open(path)
  const { contact } = newPeer()
  await db.putContact(contact)
  const nextId = idSource(7)
  const ids = Array.from({ length: 40 }, () => nextId())
  // Concurrent enqueues: each is written (in the OS) when it resolves; barriers in flight are shared.
  await Promise.all(ids.map((id, i) => db.enqueue(contact.peerId, { id, body: `m${i}`, createdAt: 1 })))
  await db.settled()
  await db.settled() // nothing in flight: resolves at once
  const last = nextId()
  await db.enqueue(contact.peerId, { id: last, body: 'last', createdAt: 2 })
  await db.close() // waits for the last barrier
  const raw = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
  await raw.open()
  try {
    t.truthy(await raw.get('s!sync-barrier'))
    t.is((await raw.keys({ gt: `o!${contact.peerId}!`, lt: `o!${contact.peerId}!~` }).all()).length, 41)
  } finally {
    await raw.close()
  }
  const again = await ClientDb.open(path)
  t.deepEqual((await again.pending(contact.peerId)).map((e) => e.id), [...ids, last])
  await again.close()
})

test('outbox: pending({ afterSeq }) lists only the entries queued after that seq, in order', async (t) => {
  const { db, peerId } = await withContact(await tempDb())
  const nextId = idSource(7)
  const ids = Array.from({ length: 6 }, nextId)
  for (const [i, id] of ids.entries()) await db.enqueue(peerId, { id, body: `m${i}`, createdAt: i })
  t.deepEqual((await db.pending(peerId, { afterSeq: 0 })).map((e) => e.id), ids)
  t.deepEqual((await db.pending(peerId, { afterSeq: 4 })).map((e) => e.seq), [5, 6])
  t.deepEqual(await db.pending(peerId, { afterSeq: 6 }), [])
  t.deepEqual(await db.pending(peerId, { afterSeq: 1e15 }), [])
  // Delivered entries are gone from both forms.
  t.true(await db.markDelivered(peerId, ids[4]!))
  t.deepEqual((await db.pending(peerId, { afterSeq: 3 })).map((e) => e.seq), [4, 6])
  t.deepEqual((await db.pending(peerId)).map((e) => e.seq), [1, 2, 3, 4, 6])
  for (const bad of [-1, 1.5, Number.NaN, '2', null]) {
    await t.throwsAsync(() => db.pending(peerId, { afterSeq: bad as number }), { instanceOf: InvalidArgumentError }, String(bad))
  }
  await t.throwsAsync(() => db.pending(peerId, null as unknown as { afterSeq?: number }), { instanceOf: InvalidArgumentError })
  await db.close()
})

test('outbox: markSent, idempotent enqueue of the same ID, refused after delivery', async (t) => {
  const { db, peerId } = await withContact(await tempDb())
  const nextId = idSource(2)
  const id = nextId()
  const first = await db.enqueue(peerId, { id, body: 'hi', createdAt: 1 })
  t.deepEqual(await db.enqueue(peerId, { id, body: 'hi', createdAt: 1 }), first)
  t.is((await db.pending(peerId)).length, 1)
  t.true(await db.markSent(peerId, id))
  t.false(await db.markSent(peerId, id))
  t.is((await db.history(peerId))[0]?.status, 'sent')
  t.true(await db.markDelivered(peerId, id))
  t.is((await db.history(peerId))[0]?.status, 'delivered')
  await t.throwsAsync(() => db.enqueue(peerId, { id, body: 'hi', createdAt: 1 }), { instanceOf: InvalidArgumentError })
  t.false(await db.markSent(peerId, nextId()))
  t.false(await db.markDelivered(peerId, nextId()))
  await db.close()
})

test('concurrent enqueues keep call order, per contact, across two contacts', async (t) => {
  const path = await tempDb()
  const { db, peerId } = await withContact(path)
  const second = newPeer().contact
  await db.putContact(second)
  const nextId = idSource(3)
  const calls = Array.from({ length: 100 }, (_, i) => ({ peer: i % 3 === 0 ? second.peerId : peerId, id: nextId(), i }))
  const results = await Promise.all(calls.map((c) => db.enqueue(c.peer, { id: c.id, body: String(c.i), createdAt: 0 })))
  t.is(results.length, 100)
  for (const peer of [peerId, second.peerId]) {
    const expected = calls.filter((c) => c.peer === peer).map((c) => c.id)
    const pending = await db.pending(peer)
    t.deepEqual(pending.map((e) => e.id), expected)
    t.deepEqual(pending.map((e) => e.seq), expected.map((_, i) => i + 1))
    t.deepEqual((await db.history(peer, { limit: 1000 })).map((h) => h.id), expected)
  }
  // Concurrent deliveries of the same message: exactly one wins.
  const target = calls[1]!.id
  const outcomes = await Promise.all(Array.from({ length: 8 }, () => db.markDelivered(peerId, target)))
  t.is(outcomes.filter(Boolean).length, 1)
  await db.close()
})

test('incoming dedup: a message received twice is stored once, also concurrently and after reopen', async (t) => {
  const path = await tempDb()
  let { db, peerId } = await withContact(path)
  const nextId = idSource(4)
  const id = nextId()
  t.false(await db.hasReceived(peerId, id))
  t.true(await db.recordIncoming(peerId, { id, body: 'hello', at: 10 }))
  t.false(await db.recordIncoming(peerId, { id, body: 'hello again', at: 11 }))
  t.true(await db.hasReceived(peerId, id))
  const racing = nextId()
  const outcomes = await Promise.all(Array.from({ length: 10 }, () => db.recordIncoming(peerId, { id: racing, body: 'x', at: 12 })))
  t.is(outcomes.filter(Boolean).length, 1)
  await db.close()

  db = await ClientDb.open(path)
  t.false(await db.recordIncoming(peerId, { id, body: 'hello', at: 10 }))
  const history = await db.history(peerId)
  t.deepEqual(history.map((h) => [h.id, h.body, h.status, h.direction]), [
    [id, 'hello', 'received', 'in'],
    [racing, 'x', 'received', 'in'],
  ])
  // An incoming message that reuses one of our outgoing IDs is still a new incoming message.
  const out = nextId()
  await db.enqueue(peerId, { id: out, body: 'mine', createdAt: 13 })
  t.false(await db.hasReceived(peerId, out))
  t.true(await db.recordIncoming(peerId, { id: out, body: 'theirs', at: 14 }))
  await db.close()
})

test('history: appendHistory, paging with limit and before', async (t) => {
  const { db, peerId } = await withContact(await tempDb())
  const nextId = idSource(5)
  for (let i = 0; i < 25; i++) {
    const entry = i % 2 === 0
      ? { id: nextId(), direction: 'in' as const, body: `m${i}`, at: i, status: 'received' as const }
      : { id: nextId(), direction: 'out' as const, body: `m${i}`, at: i, status: 'sent' as const }
    t.is((await db.appendHistory(peerId, entry)).seq, i + 1)
  }
  const last10 = await db.history(peerId, { limit: 10 })
  t.deepEqual(last10.map((h) => h.body), Array.from({ length: 10 }, (_, i) => `m${15 + i}`))
  const before = await db.history(peerId, { limit: 10, before: last10[0]!.seq })
  t.deepEqual(before.map((h) => h.body), Array.from({ length: 10 }, (_, i) => `m${5 + i}`))
  t.deepEqual((await db.history(peerId, { limit: 10, before: before[0]!.seq })).map((h) => h.body), ['m0', 'm1', 'm2', 'm3', 'm4'])
  t.deepEqual(await db.history(peerId, { before: 1 }), [])
  const dup = last10[0]!
  await t.throwsAsync(() => db.appendHistory(peerId, { id: dup.id, direction: dup.direction, body: 'x', at: 0, status: dup.status }), {
    instanceOf: InvalidArgumentError,
  })
  await t.throwsAsync(() => db.appendHistory(peerId, { id: nextId(), direction: 'in', body: 'x', at: 0, status: 'sent' }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.history(peerId, { limit: 0 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.history(peerId, { limit: 5000 }), { instanceOf: InvalidArgumentError })
  await db.close()
})

test('removeContact forgets outbox and history; a re-added contact starts fresh', async (t) => {
  const { db, peerId, contact } = await withContact(await tempDb())
  const keep = newPeer().contact
  await db.putContact(keep)
  const nextId = idSource(6)
  await db.enqueue(peerId, { id: nextId(), body: 'a', createdAt: 0 })
  await db.recordIncoming(peerId, { id: nextId(), body: 'b', at: 0 })
  await db.enqueue(keep.peerId, { id: nextId(), body: 'kept', createdAt: 0 })
  t.true(await db.removeContact(peerId))
  await t.throwsAsync(() => db.enqueue(peerId, { id: nextId(), body: 'c', createdAt: 0 }), { instanceOf: SessionError, code: 'ERR_UNKNOWN_CONTACT' })
  await db.putContact(contact)
  t.deepEqual(await db.pending(peerId), [])
  t.deepEqual(await db.history(peerId), [])
  t.is((await db.enqueue(peerId, { id: nextId(), body: 'd', createdAt: 0 })).seq, 1)
  t.is((await db.pending(keep.peerId)).length, 1)
  await db.close()
})

test('own state kv survives reopen', async (t) => {
  const path = await tempDb()
  let db = await ClientDb.open(path)
  t.is(await db.getState('directory.urls'), undefined)
  await db.putState('directory.urls', ['http://a.onion', 'http://b.onion'])
  await db.putState('last-publish', { at: 5, seq: 2 })
  await db.close()
  db = await ClientDb.open(path)
  t.deepEqual(await db.getState('directory.urls'), ['http://a.onion', 'http://b.onion'])
  t.deepEqual(await db.getState('last-publish'), { at: 5, seq: 2 })
  await t.throwsAsync(() => db.putState('Bad Key!', 1), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.putState('k', undefined), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.putState('k', 10n), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.putState('k', 'x'.repeat(70_000)), { instanceOf: InvalidArgumentError })
  await db.close()
})

test('hostile arguments are typed errors', async (t) => {
  const { db, peerId, contact } = await withContact(await tempDb())
  const id = idSource(7)()
  const unknown = (v: unknown) => v as never
  await t.throwsAsync(() => db.getContact(unknown('nope')), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.getContact(unknown(peerId.toUpperCase())), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.enqueue(peerId, unknown(null)), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.enqueue(peerId, { id: 'short', body: 'x', createdAt: 0 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.enqueue(peerId, { id, body: unknown(5), createdAt: 0 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.enqueue(peerId, { id, body: 'x'.repeat(20_000), createdAt: 0 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.enqueue(peerId, { id, body: 'x', createdAt: -1 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.recordIncoming(peerId, unknown(undefined)), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.recordIncoming(peerId, { id, body: 'x', at: 1.5 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.putContact(unknown({ ...contact, state: 'friend' })), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.putContact(unknown({ ...contact, extra: 1 })), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.putContact(unknown({ ...contact, identityKey: 'AAAA' })), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.markDelivered(peerId, unknown(42)), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(() => db.recordIncoming(newPeer().contact.peerId, { id, body: 'x', at: 1 }), { instanceOf: SessionError, code: 'ERR_UNKNOWN_CONTACT' })
  await db.close()
  await t.throwsAsync(() => db.pending(peerId), { instanceOf: StorageError, code: 'ERR_STORAGE_IO' })
})

test('damaged values in the database are ERR_STORAGE_CORRUPT, not crashes', async (t) => {
  const path = await tempDb()
  const { db, peerId } = await withContact(path)
  await db.enqueue(peerId, { id: idSource(8)(), body: 'x', createdAt: 0 })
  await db.close()
  const raw = new Level<string, string>(path)
  await raw.put(`c!${peerId}`, '{"peerId":')
  await raw.put(`o!${peerId}!0000000000000001`, JSON.stringify({ seq: 1, id: 'bad', body: 'x', createdAt: 0 }))
  await raw.put(`h!${peerId}!0000000000000001`, JSON.stringify({ seq: 1, id: 'AAAAAAAAAAAAAAAAAAAAAA', direction: 'in', body: 'x', at: 0, status: 'queued' }))
  await raw.put('s!k', 'nope')
  await raw.close()
  const reopened = await ClientDb.open(path)
  for (const op of [() => reopened.getContact(peerId), () => reopened.listContacts(), () => reopened.pending(peerId), () => reopened.history(peerId), () => reopened.getState('k')]) {
    await t.throwsAsync(op(), { instanceOf: StorageError, code: 'ERR_STORAGE_CORRUPT' })
  }
  await reopened.close()
})

test('a database already open elsewhere is a clear ERR_STORAGE_IO', async (t) => {
  const path = await tempDb()
  const db = await ClientDb.open(path)
  const err = await t.throwsAsync(ClientDb.open(path), { instanceOf: StorageError })
  t.is(err?.code, 'ERR_STORAGE_IO')
  t.log(err?.message)
  await db.close()
  await (await ClientDb.open(path)).close()
})

test('seeded model check: random enqueue/deliver/receive/reopen sequences match an in-memory model', async (t) => {
  const path = await tempDb()
  let { db, peerId } = await withContact(path)
  const SEED = 0xc0ffee
  const STEPS = 300
  const random = seededRandom(SEED)
  const nextId = idSource(SEED)
  const model = { outbox: [] as string[], received: new Set<string>(), history: [] as string[], delivered: new Set<string>() }
  let reopens = 0
  for (let step = 0; step < STEPS; step++) {
    const r = random.next()
    if (r < 0.35) {
      const id = nextId()
      await db.enqueue(peerId, { id, body: `s${step}`, createdAt: step })
      model.outbox.push(id)
      model.history.push(id)
    } else if (r < 0.6 && model.outbox.length > 0) {
      const id = model.outbox[random.int(model.outbox.length)]!
      t.true(await db.markDelivered(peerId, id))
      t.false(await db.markDelivered(peerId, id))
      model.outbox = model.outbox.filter((x) => x !== id)
      model.delivered.add(id)
    } else if (r < 0.9) {
      const pool = [...model.received]
      const id = pool.length > 0 && random.next() < 0.4 ? pool[random.int(pool.length)]! : nextId()
      const fresh = !model.received.has(id)
      t.is(await db.recordIncoming(peerId, { id, body: `r${step}`, at: step }), fresh)
      if (fresh) {
        model.received.add(id)
        model.history.push(id)
      }
    } else {
      await db.close()
      db = await ClientDb.open(path)
      reopens++
    }
    if (step % 25 === 0 || step === STEPS - 1) {
      t.deepEqual((await db.pending(peerId)).map((e) => e.id), model.outbox, `step ${step}`)
      const history = await db.history(peerId, { limit: 1000 })
      t.deepEqual(history.map((h) => h.id), model.history, `step ${step}`)
      for (const h of history) {
        const expected = h.direction === 'in' ? 'received' : model.delivered.has(h.id) ? 'delivered' : 'queued'
        t.is(h.status, expected)
      }
    }
  }
  t.log(`${STEPS} steps (seed ${SEED.toString(16)}), ${reopens} reopens, ${model.history.length} history entries`)
  await db.close()
})
