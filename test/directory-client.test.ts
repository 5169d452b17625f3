import test from 'ava'
import { once } from 'node:events'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createDirectoryApp } from '../directory/app.js'
import { createMemoryStore } from '../directory/store.js'
import { assertPublished, DirectoryClient, MAX_RESPONSE_BYTES } from '../src/directory-client.js'
import { DecodeError, DirectoryError, InvalidArgumentError, P2PMessError, SocksError } from '../src/errors.js'
import { identityFromSeed } from '../src/protocol/identity.js'
import { onionAddressFromPublicKey } from '../src/protocol/onion.js'
import { createRecord, serializeRecord, type DirectoryRecord } from '../src/protocol/record.js'
import { createTorDialer } from '../src/tor/dialer.js'
import { startFakeSocks, type Plan } from './dialer-fake-socks.js'

const NOW = 1_800_000_000_000
const HOUR = 3600

function seed(n: number): Uint8Array {
  return new Uint8Array(32).fill(n)
}
const onionOf = (n: number): string => onionAddressFromPublicKey(identityFromSeed(seed(100 + n)).publicKey)

/** A validly signed record of identity `who`. */
function record(who: number, seq: number, expires = NOW / 1000 + HOUR, onion = onionOf(who)): DirectoryRecord {
  return createRecord({ identitySeed: seed(who), onion, noiseKey: new Uint8Array(32).fill(seq), seq, expires })
}

interface Reply {
  status: number
  body?: string | Uint8Array
  type?: string
  /** Send the body in chunks without Content-Length. */
  chunked?: boolean
  /** Never answer. */
  hang?: boolean
  /** Drop the connection without answering (a kept-alive stream closed just as it was reused). */
  drop?: boolean
}

interface Double {
  port: number
  hits: { method: string; url: string; body: string }[]
  reply: (req: http.IncomingMessage) => Reply
}

async function startDouble(t: { teardown: (fn: () => void) => void }, reply: (req: http.IncomingMessage) => Reply): Promise<Double> {
  const double: Double = { port: 0, hits: [], reply }
  const server = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8').on('data', (c: string) => (body += c))
    req.on('end', () => {
      double.hits.push({ method: req.method ?? '', url: req.url ?? '', body })
      const r = double.reply(req)
      if (r.hang === true) return
      if (r.drop === true) return void req.socket.destroy()
      res.statusCode = r.status
      res.setHeader('content-type', r.type ?? 'application/json')
      const payload = typeof r.body === 'string' ? Buffer.from(r.body) : Buffer.from(r.body ?? new Uint8Array(0))
      if (r.chunked === true) {
        for (let i = 0; i < payload.length; i += 1024) res.write(payload.subarray(i, i + 1024))
        res.end()
      } else {
        res.setHeader('content-length', payload.length)
        res.end(payload)
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  double.port = (server.address() as AddressInfo).port
  t.teardown(() => server.closeAllConnections())
  t.teardown(() => server.close())
  return double
}

const json = (status: number, value: unknown): Reply => ({ status, body: JSON.stringify(value) })
const serve = (r: DirectoryRecord): Reply => ({ status: 200, body: serializeRecord(r) })
const notFound: Reply = json(404, { error: { code: 'not_found', message: 'no record for this peer ID' } })

/**
 * A fake tor: names in `hosts` are forwarded to local servers, everything else gets 0xF0 (onion not found).
 * Returns a dialer agent wired to it and the proxy (to check what names it was asked for).
 */
async function fakeTor(t: { teardown: (fn: () => Promise<void>) => void }, hosts: Record<string, number>) {
  const socks = await startFakeSocks({
    plan: (req): Plan => {
      const port = hosts[req.host]
      return port === undefined ? { kind: 'reply', code: 0xf0 } : { kind: 'forward', port }
    },
  })
  t.teardown(() => socks.close())
  return { socks, agent: createTorDialer({ socksPort: socks.port }).agent() }
}

const A = 'http://dir-a.example'
const B = 'http://dir-b.example:8080'
const ONION_DIR = `http://${onionOf(9)}`

test('lookup: asks every directory by name through tor; the newest valid seq wins', async (t) => {
  const older = record(1, 3)
  const newer = record(1, 5)
  const a = await startDouble(t, () => serve(older))
  const b = await startDouble(t, () => serve(newer))
  const c = await startDouble(t, () => notFound)
  const { socks, agent } = await fakeTor(t, { 'dir-a.example': a.port, 'dir-b.example': b.port, [onionOf(9)]: c.port })
  const client = new DirectoryClient({ urls: [A, B, ONION_DIR], agent, now: () => NOW })
  const got = await client.lookup(older.id)
  t.is(got.record.seq, 5)
  t.deepEqual(got.record, newer)
  t.is(got.noiseKey.length, 32)
  t.deepEqual(a.hits, [{ method: 'GET', url: `/v1/records/${older.id}`, body: '' }])
  t.deepEqual(
    socks.requests.map((r) => [r.atyp, r.host, r.port]).sort(),
    [[0x03, 'dir-a.example', 80], [0x03, 'dir-b.example', 8080], [0x03, onionOf(9), 80]].sort(),
  )
})

test('lookup: a kept-alive stream is reused; one dropped as it is reused is retried once on a fresh stream', async (t) => {
  const r = record(1, 3)
  let requests = 0
  const a = await startDouble(t, () => (++requests === 3 ? { status: 0, drop: true } : serve(r)))
  const { socks, agent } = await fakeTor(t, { 'dir-a.example': a.port })
  const client = new DirectoryClient({ urls: [A], agent, now: () => NOW })
  await client.lookup(r.id, { fresh: true })
  await client.lookup(r.id, { fresh: true })
  t.is(socks.requests.length, 1, 'the second lookup went down the same tor stream')
  const got = await client.lookup(r.id, { fresh: true })
  t.deepEqual(got.record, r)
  t.is(a.hits.length, 4, 'the dropped request was sent again')
  t.is(socks.requests.length, 2, 'on a new stream')
})

test('lookup: forged, foreign and expired records are ignored; alone they give ERR_DIRECTORY_INVALID_RECORD', async (t) => {
  const good = record(1, 1)
  const forged = { ...record(1, 9), onion: onionOf(7) } // higher seq, but the signature no longer matches
  const foreign = record(2, 50) // validly signed, for another peer
  const expired = record(1, 60, NOW / 1000 - 1)
  const liar = { reply: serve(forged) }
  const a = await startDouble(t, () => liar.reply)
  const b = await startDouble(t, () => serve(good))
  const { agent } = await fakeTor(t, { 'dir-a.example': a.port, 'dir-b.example': b.port })

  for (const bad of [forged, foreign, expired]) {
    liar.reply = serve(bad)
    const both = new DirectoryClient({ urls: [A, B], agent, now: () => NOW })
    t.is((await both.lookup(good.id)).record.seq, 1, 'the valid record wins over any invalid one')

    const onlyLiar = new DirectoryClient({ urls: [A], agent, now: () => NOW })
    const err = await t.throwsAsync(onlyLiar.lookup(good.id), { instanceOf: DirectoryError })
    t.is(err?.code, 'ERR_DIRECTORY_INVALID_RECORD')
    t.true(err?.cause instanceof DirectoryError)
  }
  const reasons = []
  for (const bad of [forged, foreign, expired]) {
    liar.reply = serve(bad)
    const err = await t.throwsAsync(new DirectoryClient({ urls: [A], agent, now: () => NOW }).lookup(good.id))
    reasons.push((err?.cause as DirectoryError).details?.['reason'])
  }
  t.deepEqual(reasons, ['bad_signature', 'id_mismatch', 'expired'])

  // Not JSON, wrong content type, an array: all invalid.
  for (const reply of [{ status: 200, body: 'hello' }, { status: 200, body: serializeRecord(good), type: 'text/html' }, json(200, [good])]) {
    liar.reply = reply
    const err = await t.throwsAsync(new DirectoryClient({ urls: [A], agent, now: () => NOW }).lookup(good.id), { instanceOf: DirectoryError })
    t.is(err?.code, 'ERR_DIRECTORY_INVALID_RECORD')
  }
})

test('lookup: one directory down and one good -> works; all down -> ERR_DIRECTORY_UNREACHABLE with the tor error inside', async (t) => {
  const good = record(1, 2)
  const b = await startDouble(t, () => serve(good))
  const { agent } = await fakeTor(t, { 'dir-b.example': b.port })
  const client = new DirectoryClient({ urls: [A, B], agent, now: () => NOW })
  t.is((await client.lookup(good.id)).record.seq, 2)

  const down = new DirectoryClient({ urls: [A, ONION_DIR], agent, now: () => NOW })
  const err = await t.throwsAsync(down.lookup(good.id), { instanceOf: DirectoryError })
  t.is(err?.code, 'ERR_DIRECTORY_UNREACHABLE')
  const inner = err?.cause
  t.true(inner instanceof DirectoryError && inner.cause instanceof SocksError)
  t.is(((inner as DirectoryError).cause as SocksError).code, 'ERR_ONION_NOT_FOUND')
  t.deepEqual(err?.details?.['results'], [
    { url: A, result: 'failed', code: 'ERR_DIRECTORY_UNREACHABLE' },
    { url: ONION_DIR, result: 'failed', code: 'ERR_DIRECTORY_UNREACHABLE' },
  ])
})

test('lookup: all 404 -> ERR_DIRECTORY_NOT_FOUND; only 5xx -> ERR_DIRECTORY_RESPONSE', async (t) => {
  const a = await startDouble(t, () => notFound)
  const b = await startDouble(t, () => json(500, { error: { code: 'internal', message: 'internal error' } }))
  const { agent } = await fakeTor(t, { 'dir-a.example': a.port, 'dir-b.example': b.port })
  const id = record(1, 1).id
  const nf = await t.throwsAsync(new DirectoryClient({ urls: [A], agent, now: () => NOW }).lookup(id), { instanceOf: DirectoryError })
  t.is(nf?.code, 'ERR_DIRECTORY_NOT_FOUND')
  const bad = await t.throwsAsync(new DirectoryClient({ urls: [B], agent, now: () => NOW }).lookup(id), { instanceOf: DirectoryError })
  t.is(bad?.code, 'ERR_DIRECTORY_RESPONSE')
  // 404 from one, no answer from the other: the one that answered has nothing.
  const mixed = await t.throwsAsync(new DirectoryClient({ urls: [A, ONION_DIR], agent, now: () => NOW }).lookup(id), { instanceOf: DirectoryError })
  t.is(mixed?.code, 'ERR_DIRECTORY_NOT_FOUND')
})

test('lookup: oversize responses are cut off and rejected (declared or streamed)', async (t) => {
  const good = record(1, 1)
  const padded = JSON.stringify({ ...JSON.parse(serializeRecord(good)), pad: 'x'.repeat(MAX_RESPONSE_BYTES) })
  const a = await startDouble(t, () => ({ status: 200, body: padded }))
  const b = await startDouble(t, () => ({ status: 200, body: padded, chunked: true }))
  const { agent } = await fakeTor(t, { 'dir-a.example': a.port, 'dir-b.example': b.port })
  for (const url of [A, B]) {
    const err = await t.throwsAsync(new DirectoryClient({ urls: [url], agent, now: () => NOW }).lookup(good.id), { instanceOf: DirectoryError })
    t.is(err?.code, 'ERR_DIRECTORY_INVALID_RECORD')
    const cause = (err?.cause as DirectoryError).cause
    t.true(cause instanceof DecodeError && cause.code === 'ERR_TOO_LARGE', url)
  }
})

test('lookup: a directory that never answers times out in bounded time', async (t) => {
  const a = await startDouble(t, () => ({ status: 200, hang: true }))
  const { agent } = await fakeTor(t, { 'dir-a.example': a.port })
  const started = performance.now()
  const err = await t.throwsAsync(new DirectoryClient({ urls: [A], agent, timeoutMs: 300, now: () => NOW }).lookup(record(1, 1).id), { instanceOf: DirectoryError })
  const elapsed = performance.now() - started
  t.is(err?.code, 'ERR_DIRECTORY_UNREACHABLE')
  t.true(elapsed >= 290 && elapsed < 3000, `took ${elapsed.toFixed(0)} ms`)
})

test('cache: honours record expiry, fresh bypasses it, and a directory cannot roll a record back', async (t) => {
  let clock = NOW
  const first = record(1, 4, NOW / 1000 + 60)
  const directory = { reply: serve(first) }
  const a = await startDouble(t, () => directory.reply)
  const { agent } = await fakeTor(t, { 'dir-a.example': a.port })
  const client = new DirectoryClient({ urls: [A], agent, now: () => clock })

  t.is(client.cached(first.id), undefined)
  t.is((await client.lookup(first.id)).record.seq, 4)
  t.is((await client.lookup(first.id)).record.seq, 4)
  t.is(a.hits.length, 1, 'second lookup served from the cache')
  t.is(client.cached(first.id)?.record.seq, 4)

  // A caller wiping its copy does not touch the cache.
  client.cached(first.id)?.noiseKey.fill(0)
  t.deepEqual(client.cached(first.id)?.noiseKey, new Uint8Array(32).fill(4))

  // fresh: asks again; an older record replayed by the directory does not replace the newer one we hold.
  directory.reply = serve(record(1, 2, NOW / 1000 + 3000))
  t.is((await client.lookup(first.id, { fresh: true })).record.seq, 4)
  t.is(a.hits.length, 2)
  // ...but a newer one does.
  directory.reply = serve(record(1, 7, NOW / 1000 + 3000))
  t.is((await client.lookup(first.id, { fresh: true })).record.seq, 7)
  t.is(a.hits.length, 3)

  // The seq-7 record expires at NOW+3000 s: until then, cached; after, gone and fetched again.
  clock = NOW + 2999_000
  t.is(client.cached(first.id)?.record.seq, 7)
  clock = NOW + 3000_000
  t.is(client.cached(first.id), undefined)
  directory.reply = serve(record(1, 8, NOW / 1000 + 9000))
  t.is((await client.lookup(first.id)).record.seq, 8)
  t.is(a.hits.length, 4)
  // While directories are down, the cache still answers.
  directory.reply = { status: 200, hang: true }
  t.is(client.cached(first.id)?.record.seq, 8)
})

test('publish: PUTs to every directory; per-directory results; 409 stale seq reported distinctly', async (t) => {
  const mine = record(1, 3)
  const accepted = await startDouble(t, () => json(201, mine))
  const stale = await startDouble(t, () => json(409, { error: { code: 'stale_seq', message: 'seq must increase' } }))
  const limited = await startDouble(t, () => json(429, { error: { code: 'rate_limited', message: 'slow down' } }))
  const { agent } = await fakeTor(t, { 'dir-a.example': accepted.port, 'dir-b.example': stale.port, 'dir-c.example': limited.port })
  const C = 'http://dir-c.example/'
  const client = new DirectoryClient({ urls: [A, B, C, ONION_DIR], agent, now: () => NOW })
  const results = await client.publish(mine)
  t.deepEqual(
    results.map((r) => [r.url, r.ok, r.status, r.error?.code]),
    [
      [A, true, 201, undefined],
      [B, false, 409, 'ERR_DIRECTORY_STALE_SEQ'],
      ['http://dir-c.example', false, 429, 'ERR_DIRECTORY_RATE_LIMITED'],
      [ONION_DIR, false, undefined, 'ERR_DIRECTORY_UNREACHABLE'],
    ],
  )
  t.deepEqual(accepted.hits, [{ method: 'PUT', url: `/v1/records/${mine.id}`, body: serializeRecord(mine) }])
  t.notThrows(() => assertPublished(results))

  const failures = results.slice(1)
  t.is(t.throws(() => assertPublished(failures), { instanceOf: DirectoryError })?.code, 'ERR_DIRECTORY_STALE_SEQ')
  t.is(t.throws(() => assertPublished(failures.slice(1)), { instanceOf: DirectoryError })?.code, 'ERR_DIRECTORY_REJECTED')
  t.is(t.throws(() => assertPublished(failures.slice(2)), { instanceOf: DirectoryError })?.code, 'ERR_DIRECTORY_UNREACHABLE')

  // An invalid record is refused before anything is sent.
  await t.throwsAsync(client.publish({ ...mine, seq: 4 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(client.publish(record(1, 1, NOW / 1000 - 5)), { instanceOf: InvalidArgumentError })
  t.is(accepted.hits.length, 1)
})

test('end to end with the real directory app: publish, look up, stale seq', async (t) => {
  const app = createDirectoryApp({ store: await createMemoryStore(), now: () => NOW })
  const server = http.createServer(app.callback())
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const { agent } = await fakeTor(t, { [onionOf(9)]: (server.address() as AddressInfo).port })
  const client = new DirectoryClient({ urls: [ONION_DIR], agent, now: () => NOW })

  const v1 = record(3, 1)
  t.deepEqual((await client.publish(v1)).map((r) => [r.ok, r.status]), [[true, 201]])
  t.deepEqual((await client.publish(record(3, 2))).map((r) => [r.ok, r.status]), [[true, 200]])
  const replay = await client.publish(v1)
  t.is(replay[0]?.status, 409)
  t.is(replay[0]?.error?.code, 'ERR_DIRECTORY_STALE_SEQ')
  t.is(replay[0]?.error?.details?.['apiCode'], 'stale_seq')
  t.is(t.throws(() => assertPublished(replay), { instanceOf: DirectoryError })?.code, 'ERR_DIRECTORY_STALE_SEQ')
  t.is((await client.lookup(v1.id)).record.seq, 2)
  const missing = await t.throwsAsync(client.lookup(record(4, 1).id), { instanceOf: DirectoryError })
  t.is(missing?.code, 'ERR_DIRECTORY_NOT_FOUND')
})

test('constructor and arguments are validated', async (t) => {
  const { agent } = await fakeTor(t, {})
  const bad: unknown[] = [
    { urls: [], agent },
    { urls: 'http://a.example', agent },
    { urls: ['ftp://a.example'], agent },
    { urls: ['http://user:pw@a.example'], agent },
    { urls: ['http://a.example/?q=1'], agent },
    { urls: ['not a url'], agent },
    { urls: [A], agent: new http.Agent() },
    { urls: [A], agent: undefined },
    { urls: [A], agent, timeoutMs: 0 },
    { urls: [A], agent, now: 5 },
    null,
  ]
  for (const options of bad) {
    t.throws(() => new DirectoryClient(options as never), { instanceOf: InvalidArgumentError }, JSON.stringify(options))
  }
  const client = new DirectoryClient({ urls: [A, `${A}/`], agent })
  t.deepEqual(client.urls, [A])
  for (const id of ['', 'nope', 'x'.repeat(500)]) {
    const err = await t.throwsAsync(client.lookup(id))
    t.true(err instanceof P2PMessError)
  }
  t.throws(() => client.cached('nope'), { instanceOf: P2PMessError })
})
