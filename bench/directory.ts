/**
 * Directory benchmark (`npm run bench:directory`): autocannon against a directory server on loopback, each
 * figure next to a bare koa route measured in the same run.
 *
 *   lookups        GET /v1/records/:id over many stored IDs (level store)   vs  GET of a constant record
 *   registrations  PUT /v1/records/:id, each a valid signed update          vs  PUT that only parses the JSON
 *
 * The servers run in a child process so autocannon does not share their event loop. Each pair is measured in
 * alternating rounds and the median round is reported, so load from other processes hits both sides alike.
 * The level stores live in temp dirs that are removed at the end.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import autocannon from 'autocannon'
import Koa from 'koa'
import { startDirectoryServer } from '../directory/server.js'
import { DirectoryError } from '../src/errors.js'
import { generateIdentity } from '../src/protocol/identity.js'
import { onionAddressFromPublicKey } from '../src/protocol/onion.js'
import { createRecord, serializeRecord, type DirectoryRecord } from '../src/protocol/record.js'

const LOOKUP_IDS = 1000
const REGISTRATION_IDS = 500
const REGISTRATIONS = 3600
const ROUNDS = 3
const ROUND_S = 3
const CONNECTIONS = 10
const JSON_HEADERS = { 'content-type': 'application/json' }

interface Ports {
  directory: string
  uncached: string
  bare: string
}

/** Child: the directory server (level store, no write limits), the same without read cache, a bare koa app. */
async function serve(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-bench-directory-'))
  const limits = { perId: { capacity: 1e9, refillPerSecond: 1e9 }, global: { capacity: 1e9, refillPerSecond: 1e9 } }
  const directory = await startDirectoryServer({ dbPath: join(dir, 'cached'), limits })
  const uncached = await startDirectoryServer({ dbPath: join(dir, 'uncached'), limits, cacheEntries: 0 })
  const sample = sampleRecord()
  const bare = new Koa()
  bare.use(async (ctx) => {
    if (ctx.method === 'GET') {
      ctx.body = sample
      return
    }
    const chunks: Uint8Array[] = []
    for await (const chunk of ctx.req) chunks.push(chunk as Uint8Array)
    ctx.body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
  })
  const bareServer = createServer(bare.callback())
  await new Promise<void>((resolve) => bareServer.listen(0, '127.0.0.1', resolve))
  const ports: Ports = { directory: directory.url, uncached: uncached.url, bare: `http://127.0.0.1:${(bareServer.address() as AddressInfo).port}` }
  process.send?.(ports)
  process.once('message', async () => {
    bareServer.closeAllConnections()
    bareServer.close()
    await directory.close()
    await uncached.close()
    await rm(dir, { recursive: true, force: true })
    process.disconnect?.()
  })
}

function sampleRecord(seq = 1, identitySeed = generateIdentity().seed): DirectoryRecord {
  return createRecord({
    identitySeed,
    onion: onionAddressFromPublicKey(ed25519.keygen().publicKey),
    noiseKey: x25519.keygen().publicKey,
    seq,
    expires: Math.floor(Date.now() / 1000) + 24 * 3600,
  })
}

interface Row {
  name: string
  reqPerSec: number
  p99: number
  bad: number
}

async function run(name: string, options: autocannon.Options): Promise<Row> {
  const result = await autocannon({ connections: CONNECTIONS, ...options })
  const total = result['2xx'] + result.non2xx
  return { name, reqPerSec: total / result.duration, p99: result.latency.p99, bad: result.non2xx + result.errors }
}

/** Alternates the runs for ROUNDS rounds; per route, the round with the median req/s (non-2xx summed). */
async function rounds(runs: [string, () => autocannon.Options][]): Promise<Row[]> {
  const all: Row[][] = runs.map(() => [])
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, [name, options]] of runs.entries()) all[i]!.push(await run(name, options()))
  }
  return all.map((rows) => {
    const median = [...rows].sort((a, b) => a.reqPerSec - b.reqPerSec)[rows.length >> 1]!
    return { ...median, bad: rows.reduce((n, row) => n + row.bad, 0) }
  })
}

async function main(): Promise<void> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--serve'], { execArgv: ['--import', 'tsx'] })
  const ports = await new Promise<Ports>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Ports))
    child.once('exit', (code) => reject(new DirectoryError('ERR_DIRECTORY_UNREACHABLE', `bench server exited with ${code}`)))
  })
  try {
    // Seed the lookup IDs through the API itself, into both directory servers.
    const lookupIds: string[] = []
    for (let i = 0; i < LOOKUP_IDS; i += 50) {
      const batch = Array.from({ length: 50 }, () => sampleRecord())
      await Promise.all(
        batch.flatMap((r) => {
          lookupIds.push(r.id)
          return [ports.directory, ports.uncached].map(async (base) => {
            const res = await fetch(`${base}/v1/records/${r.id}`, { method: 'PUT', headers: JSON_HEADERS, body: serializeRecord(r) })
            if (res.status !== 201) throw new DirectoryError('ERR_DIRECTORY_REJECTED', `seeding failed: ${res.status}`)
          })
        }),
      )
    }

    // Registrations: seq s for ID i sits at position s * REGISTRATION_IDS + i, so requests in flight at the same
    // time are for different IDs and every PUT is a valid update of the one before it.
    const started = performance.now()
    const seeds = Array.from({ length: REGISTRATION_IDS }, () => generateIdentity())
    const updates: { path: string; body: string }[] = []
    for (let s = 1; updates.length < REGISTRATIONS; s++) {
      for (const { seed } of seeds) {
        const r = sampleRecord(s, seed)
        updates.push({ path: `/v1/records/${r.id}`, body: serializeRecord(r) })
      }
    }
    console.error(`pre-signed ${updates.length} records in ${((performance.now() - started) / 1000).toFixed(1)} s`)

    const lookups = lookupIds.map((id) => ({ method: 'GET' as const, path: `/v1/records/${id}` }))
    let next = 0
    const putNext = (request: autocannon.Request): autocannon.Request => {
      const u = updates[next++ % updates.length]!
      return { ...request, method: 'PUT', path: u.path, body: u.body, headers: JSON_HEADERS }
    }
    let bareNext = 0
    const bareBody = (request: autocannon.Request): autocannon.Request => ({ ...request, body: updates[bareNext++ % updates.length]!.body })

    await run('warm-up', { url: `${ports.directory}/v1/health`, duration: 1 })
    const rows = [
      ...(await rounds([
        ['lookup  GET /v1/records/:id', () => ({ url: ports.directory, duration: ROUND_S, requests: lookups })],
        ['bare    GET (constant record)', () => ({ url: `${ports.bare}/bare`, duration: ROUND_S })],
        ['lookup  GET, level read cache off', () => ({ url: ports.uncached, duration: ROUND_S, requests: lookups })],
      ])),
      ...(await rounds([
        ['register PUT /v1/records/:id', () => ({ url: ports.directory, amount: REGISTRATIONS / ROUNDS, requests: [{ setupRequest: putNext }] })],
        ['bare    PUT (JSON.parse only)', () => ({ url: `${ports.bare}/bare`, duration: ROUND_S, requests: [{ method: 'PUT', headers: JSON_HEADERS, setupRequest: bareBody }] })],
      ])),
    ]
    console.log(`\nmedian of ${ROUNDS} alternating rounds, ${CONNECTIONS} connections`)
    console.log(`${'route'.padEnd(36)}${'req/s'.padStart(10)}${'p99 ms'.padStart(9)}${'non-2xx'.padStart(9)}`)
    for (const r of rows) {
      console.log(`${r.name.padEnd(36)}${r.reqPerSec.toFixed(0).padStart(10)}${r.p99.toFixed(1).padStart(9)}${String(r.bad).padStart(9)}`)
    }
    const [lookup, bareGet, uncachedLookup, register, barePut] = rows as [Row, Row, Row, Row, Row]
    console.log(`\nlookups / bare GET = ${(lookup.reqPerSec / bareGet.reqPerSec).toFixed(2)} (goal ≥ 0.70); read cache off: ${(uncachedLookup.reqPerSec / bareGet.reqPerSec).toFixed(2)}`)
    console.log(`registrations / bare PUT = ${(register.reqPerSec / barePut.reqPerSec).toFixed(2)} (Ed25519 verify bound)`)
  } finally {
    child.send('stop')
    await new Promise((resolve) => child.once('exit', resolve))
  }
}

if (process.argv.includes('--serve')) await serve()
else await main()
