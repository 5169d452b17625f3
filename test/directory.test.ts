import test from 'ava'
import { request as httpRequest } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DirectoryError, InvalidArgumentError } from '../src/errors.js'
import { toBase64url } from '../src/protocol/bytes.js'
import type { DirectoryRecord } from '../src/protocol/record.js'
import { WriteLimiter, createDirectoryApp } from '../directory/app.js'
import { startDirectoryServer } from '../directory/server.js'
import { createMemoryStore, openLevelStore, type RecordStore } from '../directory/store.js'
import {
  FakeClock,
  HOUR_S,
  T0,
  errorCode,
  makePeer,
  makeRecord,
  putRecord,
  send,
  serveApp,
  shuffle,
} from './directory-helpers.js'
import { seededRandom } from './helpers/random.js'

const HIGH_LIMITS = { perId: { capacity: 1000, refillPerSecond: 1000 }, global: { capacity: 10_000, refillPerSecond: 10_000 } }

async function withApp(
  fn: (base: string, store: RecordStore, clock: FakeClock) => Promise<void>,
  options: { limits?: typeof HIGH_LIMITS; bodyLimit?: number } = {},
): Promise<void> {
  const clock = new FakeClock()
  const store = await createMemoryStore()
  const served = await serveApp({ store, now: clock.now, limits: options.limits ?? HIGH_LIMITS, ...(options.bodyLimit ? { bodyLimit: options.bodyLimit } : {}) })
  try {
    await fn(served.base, store, clock)
  } finally {
    await served.close()
    await store.close()
  }
}

async function tempDir(): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'p2pmess-directory-'))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

test('PUT stores (201), updates (200), GET serves it, health counts it', async (t) => {
  await withApp(async (base) => {
    const peer = makePeer()
    const first = makeRecord(peer, 1)
    const created = await putRecord(base, first)
    t.is(created.status, 201)
    t.deepEqual(created.json, first)
    t.deepEqual((await send(base, 'GET', `/v1/records/${peer.id}`)).json, first)

    const second = makeRecord(peer, 2)
    const updated = await putRecord(base, second)
    t.is(updated.status, 200)
    const got = await send(base, 'GET', `/v1/records/${peer.id}`)
    t.is(got.status, 200)
    t.regex(String(got.headers['content-type']), /^application\/json/)
    t.deepEqual(got.json, second)
    // The path ID may be typed the way people type it (case, no dashes); it names the same record.
    t.deepEqual((await send(base, 'GET', `/v1/records/${peer.id.toUpperCase().replaceAll('-', '')}`)).json, second)

    const health = await send(base, 'GET', '/v1/health')
    t.is(health.status, 200)
    t.deepEqual(health.json, { status: 'ok', records: 1 })
    t.is((await send(base, 'HEAD', '/v1/health')).status, 200)
  })
})

test('400: malformed JSON, invalid fields, unsupported version, malformed path id', async (t) => {
  await withApp(async (base) => {
    const peer = makePeer()
    const record = makeRecord(peer, 1)
    const path = `/v1/records/${peer.id}`
    const cases: [string, string | Uint8Array, string][] = [
      ['truncated JSON', '{"v":1,', 'malformed_json'],
      ['empty body', '', 'malformed_json'],
      ['non-UTF-8 bytes', new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 'malformed_json'],
      ['array', '[]', 'invalid_record'],
      ['missing sig', JSON.stringify({ ...record, sig: undefined }), 'invalid_record'],
      ['seq as string', JSON.stringify({ ...record, seq: '1' }), 'invalid_record'],
      ['extra field', JSON.stringify({ ...record, extra: 1 }), 'invalid_record'],
      ['version 2', JSON.stringify({ ...record, v: 2 }), 'unsupported_version'],
    ]
    for (const [name, body, code] of cases) {
      const reply = await send(base, 'PUT', path, { body })
      t.is(reply.status, 400, name)
      t.is(errorCode(reply), code, name)
    }
    for (const bad of ['not-a-peer-id', 'x'.repeat(300), '%00', peer.id.slice(0, -1) + (peer.id.endsWith('0') ? '1' : '0')]) {
      const got = await send(base, 'GET', `/v1/records/${bad}`)
      t.is(got.status, 400, bad)
      t.is(errorCode(got), 'invalid_id')
      const put = await putRecord(base, record, bad)
      t.is(put.status, 400, bad)
      t.is(errorCode(put), 'invalid_id')
    }
  })
})

test('404 unknown id and unknown route, 405 wrong method with Allow', async (t) => {
  await withApp(async (base) => {
    const missing = await send(base, 'GET', `/v1/records/${makePeer().id}`)
    t.is(missing.status, 404)
    t.is(errorCode(missing), 'not_found')
    for (const path of ['/', '/v1', '/v1/records', '/v1/records/a/b', '/v2/health', '/v1/health/']) {
      const reply = await send(base, 'GET', path)
      t.is(reply.status, 404, path)
      t.is(errorCode(reply), 'not_found', path)
    }
    const del = await send(base, 'DELETE', `/v1/records/${makePeer().id}`)
    t.is(del.status, 405)
    t.is(errorCode(del), 'method_not_allowed')
    t.is(del.headers['allow'], 'GET, PUT, HEAD')
    const post = await send(base, 'POST', '/v1/health', { body: '{}' })
    t.is(post.status, 405)
    t.is(post.headers['allow'], 'GET, HEAD')
  })
})

test('415 unless Content-Type is application/json (utf-8)', async (t) => {
  await withApp(async (base, store) => {
    const record = makeRecord(makePeer(), 1)
    const body = JSON.stringify(record)
    for (const contentType of [null, 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'application/jsonx']) {
      const reply = await send(base, 'PUT', `/v1/records/${record.id}`, { body, contentType })
      t.is(reply.status, 415, String(contentType))
      t.is(errorCode(reply), 'unsupported_media_type')
    }
    t.is(store.count(), 0)
    const ok = await send(base, 'PUT', `/v1/records/${record.id}`, { body, contentType: 'Application/JSON; charset=UTF-8' })
    t.is(ok.status, 201)
  })
})

test('413 from Content-Length up front, without the server waiting for the body', async (t) => {
  await withApp(async (base) => {
    const id = makePeer().id
    // Declares 1 MiB but sends only 10 bytes and never ends: the answer can only come from the header.
    const reply = await new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
      const req = httpRequest(new URL(`/v1/records/${id}`, base), {
        method: 'PUT',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': 1 << 20 },
      })
      req.on('response', (res) => {
        res.resume()
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection })
        req.destroy()
      })
      req.on('error', reject)
      req.write('{"v":1,"id"')
    })
    t.is(reply.status, 413)
    t.is(reply.connection, 'close')
  })
})

test('413 while streaming a chunked body: refused before it is all sent', async (t) => {
  await withApp(async (base) => {
    const id = makePeer().id
    const chunk = 'x'.repeat(1024)
    let sent = 0
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(new URL(`/v1/records/${id}`, base), {
        method: 'PUT',
        agent: false,
        headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      })
      let answered = false
      req.on('response', (res) => {
        answered = true
        res.resume()
        resolve(res.statusCode ?? 0)
        req.destroy()
      })
      req.on('error', (err) => (answered ? undefined : reject(err)))
      // Keep writing (up to 16 MiB) until the server answers; each write waits for the socket to drain.
      const pump = (): void => {
        while (!answered && sent < 16 << 20) {
          sent += chunk.length
          if (!req.write(chunk)) return void req.once('drain', pump)
        }
      }
      pump()
    })
    t.is(status, 413)
    t.true(sent < 16 << 20, `answered after ${sent} bytes`)
    t.log(`answered after ${sent} bytes were written`)
  })
})

test('422: bad signature, id not matching the key, path/body id mismatch, expired, expiry too far', async (t) => {
  await withApp(async (base, store, clock) => {
    const peer = makePeer()
    const other = makePeer()
    const record = makeRecord(peer, 1)
    const flipped = record.sig[0] === 'A' ? 'B' + record.sig.slice(1) : 'A' + record.sig.slice(1)
    const cases: [string, unknown, string, string][] = [
      ['flipped signature', { ...record, sig: flipped }, peer.id, 'bad_signature'],
      ["other peer's id in body", { ...record, id: other.id }, other.id, 'id_mismatch'],
      ['path names another peer', record, other.id, 'id_mismatch'],
      ['expired', makeRecord(peer, 2, { expires: Math.floor(clock.ms / 1000) }), peer.id, 'expired'],
      ['expiry too far', makeRecord(peer, 3, { expires: Math.floor(clock.ms / 1000) + 8 * 24 * HOUR_S }), peer.id, 'expiry_too_far'],
    ]
    for (const [name, body, pathId, code] of cases) {
      const reply = await putRecord(base, body, pathId)
      t.is(reply.status, 422, name)
      t.is(errorCode(reply), code, name)
    }
    t.is(store.count(), 0)
  })
})

test('a forged record (each field changed after signing) is refused and the stored record is unchanged', async (t) => {
  await withApp(async (base) => {
    const peer = makePeer()
    const other = makePeer()
    const stored = makeRecord(peer, 5)
    t.is((await putRecord(base, stored)).status, 201)
    const signed = makeRecord(peer, 6)
    const forgeries: Record<keyof DirectoryRecord, unknown> = {
      v: 2,
      id: other.id,
      identityKey: makeRecord(other, 6).identityKey,
      onion: other.onion,
      noiseKey: toBase64url(other.noiseKey),
      seq: 7,
      expires: signed.expires + 1,
      sig: makeRecord(peer, 7).sig,
    }
    for (const [field, value] of Object.entries(forgeries)) {
      const reply = await putRecord(base, { ...signed, [field]: value }, peer.id)
      t.true(reply.status >= 400 && reply.status < 500, `${field}: ${reply.status}`)
      t.not(reply.status, 409, field)
      t.deepEqual((await send(base, 'GET', `/v1/records/${peer.id}`)).json, stored, field)
    }
    t.is((await putRecord(base, signed)).status, 200, 'the unforged record is accepted')
  })
})

test('409: a replayed older or equal record is refused', async (t) => {
  await withApp(async (base) => {
    const peer = makePeer()
    const old = makeRecord(peer, 1)
    const current = makeRecord(peer, 2)
    t.is((await putRecord(base, old)).status, 201)
    t.is((await putRecord(base, current)).status, 200)
    for (const replay of [old, current]) {
      const reply = await putRecord(base, replay)
      t.is(reply.status, 409)
      t.is(errorCode(reply), 'stale_seq')
    }
    t.deepEqual((await send(base, 'GET', `/v1/records/${peer.id}`)).json, current)
  })
})

test('429 per-ID budget with Retry-After; refills with the injected clock', async (t) => {
  const limits = { perId: { capacity: 2, refillPerSecond: 1 / 60 }, global: { capacity: 1000, refillPerSecond: 1000 } }
  await withApp(
    async (base, _store, clock) => {
      const peer = makePeer()
      t.is((await putRecord(base, makeRecord(peer, 1))).status, 201)
      t.is((await putRecord(base, makeRecord(peer, 2))).status, 200)
      const limited = await putRecord(base, makeRecord(peer, 3))
      t.is(limited.status, 429)
      t.is(errorCode(limited), 'rate_limited')
      t.is(limited.headers['retry-after'], '60')
      t.is((await putRecord(base, makeRecord(makePeer(), 1))).status, 201, 'other peers keep their own budget')
      clock.advance(60_000)
      t.is((await putRecord(base, makeRecord(peer, 3))).status, 200)
    },
    { limits },
  )
})

test('forged writes and replays do not consume the victim’s budget', async (t) => {
  const limits = { perId: { capacity: 2, refillPerSecond: 1 / 3600 }, global: { capacity: 1000, refillPerSecond: 1000 } }
  await withApp(
    async (base) => {
      const victim = makePeer()
      const first = makeRecord(victim, 1)
      t.is((await putRecord(base, first)).status, 201)
      const forged = { ...makeRecord(victim, 50), seq: 51 }
      for (let i = 0; i < 10; i++) {
        t.is((await putRecord(base, forged)).status, 422)
        t.is((await putRecord(base, first)).status, 409)
      }
      t.is((await putRecord(base, makeRecord(victim, 2))).status, 200, 'the second token is still there')
      t.is((await putRecord(base, makeRecord(victim, 3))).status, 429)
    },
    { limits },
  )
})

test('429 global budget across IDs', async (t) => {
  const limits = { perId: { capacity: 100, refillPerSecond: 100 }, global: { capacity: 3, refillPerSecond: 1 } }
  await withApp(
    async (base, _store, clock) => {
      for (let i = 0; i < 3; i++) t.is((await putRecord(base, makeRecord(makePeer(), 1))).status, 201)
      const peer = makePeer()
      const limited = await putRecord(base, makeRecord(peer, 1))
      t.is(limited.status, 429)
      t.is(limited.headers['retry-after'], '1')
      clock.advance(1000)
      t.is((await putRecord(base, makeRecord(peer, 1))).status, 201)
    },
    { limits },
  )
})

test('WriteLimiter: a refusal by one bucket spends nothing from the other; bad configs are refused', (t) => {
  const clock = new FakeClock()
  const limiter = new WriteLimiter({
    perId: { capacity: 1, refillPerSecond: 1 },
    global: { capacity: 2, refillPerSecond: 1 },
    maxTrackedIds: 10,
    now: clock.now,
  })
  limiter.take('a')
  const error = t.throws(() => limiter.take('a'), { instanceOf: DirectoryError })
  t.is(error?.code, 'ERR_DIRECTORY_RATE_LIMITED')
  t.deepEqual(error?.details, { retryAfterSeconds: 1, scope: 'id' })
  limiter.take('b') // the refused write for 'a' did not spend the global token
  t.is(t.throws(() => limiter.take('c'), { instanceOf: DirectoryError })?.details?.['scope'], 'global')
  t.throws(() => new WriteLimiter({ perId: { capacity: 0, refillPerSecond: 1 }, global: { capacity: 1, refillPerSecond: 1 }, maxTrackedIds: 1, now: clock.now }), {
    instanceOf: InvalidArgumentError,
  })
  t.throws(() => new WriteLimiter({ perId: { capacity: 1, refillPerSecond: 1 }, global: { capacity: 1, refillPerSecond: Number.NaN }, maxTrackedIds: 1, now: clock.now }), {
    instanceOf: InvalidArgumentError,
  })
})

test('expired records are not served and the sweep removes them', async (t) => {
  await withApp(async (base, store, clock) => {
    const shortLived = makePeer()
    const longLived = makePeer()
    const nowS = Math.floor(clock.ms / 1000)
    t.is((await putRecord(base, makeRecord(shortLived, 1, { expires: nowS + 60 }))).status, 201)
    t.is((await putRecord(base, makeRecord(longLived, 1, { expires: nowS + HOUR_S }))).status, 201)
    clock.advance(60_000)
    t.is((await send(base, 'GET', `/v1/records/${shortLived.id}`)).status, 404)
    t.is((await send(base, 'GET', `/v1/records/${longLived.id}`)).status, 200)
    t.is(store.count(), 2, 'not yet swept')
    t.is(await store.sweep(clock.ms), 1)
    t.is(store.count(), 1)
    t.is(await store.get(shortLived.id), undefined)
    t.is(await store.sweep(clock.ms), 0)
    // An expired stored record counts as absent: a fresh one is a first store (201) whatever its seq.
    t.is((await putRecord(base, makeRecord(longLived, 0, { expires: nowS + 2 * HOUR_S }))).status, 409)
    clock.advance(HOUR_S * 1000)
    t.is((await putRecord(base, makeRecord(longLived, 0, { now: clock.ms }))).status, 201)
  })
})

test('the store serializes writes per ID: shuffled concurrent puts end at the highest seq', async (t) => {
  const store = await createMemoryStore()
  const peer = makePeer()
  const records = shuffle(
    Array.from({ length: 50 }, (_, i) => makeRecord(peer, i + 1)),
    seededRandom(7),
  )
  const results = await Promise.allSettled(records.map((r) => store.putIfNewer(r, { now: T0 })))
  t.is(results.filter((r) => r.status === 'fulfilled' && r.value === 'created').length, 1)
  for (const r of results) {
    if (r.status === 'rejected') t.is((r.reason as DirectoryError).code, 'ERR_DIRECTORY_STALE_SEQ')
  }
  t.is((await store.get(peer.id))?.seq, 50)
  t.is(store.count(), 1)
  await store.close()
  await t.throwsAsync(store.get(peer.id), { instanceOf: DirectoryError })
})

test('100 concurrent HTTP writes with increasing seq, shuffled, end at the highest (level store)', async (t) => {
  const dir = await tempDir()
  const server = await startDirectoryServer({ dbPath: dir.path, limits: HIGH_LIMITS })
  try {
    const peer = makePeer()
    const records = shuffle(
      Array.from({ length: 100 }, (_, i) => makeRecord(peer, i + 1, { now: Date.now() })),
      seededRandom(2026),
    )
    const replies = await Promise.all(records.map((r) => putRecord(server.url, r)))
    const statuses = replies.map((r) => r.status)
    t.is(statuses.filter((s) => s === 201).length, 1)
    t.true(statuses.every((s) => s === 200 || s === 201 || s === 409), String(statuses))
    const got = await send(server.url, 'GET', `/v1/records/${peer.id}`)
    t.is((got.json as DirectoryRecord).seq, 100)
  } finally {
    await server.close()
    await dir.remove()
  }
})

test('data survives a restart (level on disk)', async (t) => {
  const dir = await tempDir()
  try {
    const peer = makePeer()
    const record = makeRecord(peer, 3, { now: Date.now() })
    const first = await startDirectoryServer({ dbPath: dir.path })
    t.is((await putRecord(first.url, record)).status, 201)
    await first.close()
    await first.close() // idempotent

    const second = await startDirectoryServer({ dbPath: dir.path })
    try {
      t.deepEqual((await send(second.url, 'GET', `/v1/records/${peer.id}`)).json, record)
      t.deepEqual((await send(second.url, 'GET', '/v1/health')).json, { status: 'ok', records: 1 })
      t.is((await putRecord(second.url, record)).status, 409, 'the seq survived too')
    } finally {
      await second.close()
    }
  } finally {
    await dir.remove()
  }
})

test('level store: sweep and per-ID compare-and-set', async (t) => {
  const dir = await tempDir()
  try {
    const store = await openLevelStore(dir.path)
    const a = makePeer()
    const b = makePeer()
    t.is(await store.putIfNewer(makeRecord(a, 1, { expires: T0 / 1000 + 10 }), { now: T0 }), 'created')
    t.is(await store.putIfNewer(makeRecord(b, 1), { now: T0 }), 'created')
    t.is(await store.putIfNewer(makeRecord(b, 2), { now: T0 }), 'updated')
    await t.throwsAsync(store.putIfNewer(makeRecord(b, 2), { now: T0 }), { instanceOf: DirectoryError, message: /not newer/ })
    t.is(await store.sweep(T0 + 10_000), 1)
    t.is(store.count(), 1)
    await store.close()
    const reopened = await openLevelStore(dir.path)
    t.is(reopened.count(), 1)
    t.is((await reopened.get(b.id))?.seq, 2)
    await reopened.close()
  } finally {
    await dir.remove()
  }
})

test('unexpected failures are a bare 500 with no stack or internals, and are logged', async (t) => {
  const lines: string[] = []
  const broken: RecordStore = {
    get: () => Promise.reject(new TypeError('disk on fire at /secret/path')),
    putIfNewer: () => Promise.reject(new TypeError('disk on fire')),
    sweep: async () => 0,
    count: () => 0,
    close: async () => {},
  }
  const served = await serveApp({ store: broken, log: (l) => lines.push(l) })
  try {
    const reply = await send(served.base, 'GET', `/v1/records/${makePeer().id}`)
    t.is(reply.status, 500)
    t.deepEqual(reply.json, { error: { code: 'internal', message: 'internal error' } })
    t.notRegex(reply.text, /fire|secret|at /)
    t.is(lines.length, 1)
    t.regex(lines[0]!, /disk on fire/)
  } finally {
    await served.close()
  }
})

test('startDirectoryServer refuses non-loopback hosts and bad ports; app refuses a bad bodyLimit', async (t) => {
  await t.throwsAsync(startDirectoryServer({ dbPath: '/nonexistent', host: '0.0.0.0' }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(startDirectoryServer({ dbPath: '/nonexistent', port: 70000 }), { instanceOf: InvalidArgumentError })
  const store = await createMemoryStore()
  t.throws(() => createDirectoryApp({ store, bodyLimit: 0 }), { instanceOf: InvalidArgumentError })
})
