import test from 'ava'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openLevelStore } from '../directory/store.js'
import { DirectoryError } from '../src/errors.js'
import type { DirectoryRecord } from '../src/protocol/record.js'
import { T0, makePeer, makeRecord, send } from './directory-helpers.js'
import { seededRandom } from './helpers/random.js'

async function withTempDir(fn: (path: string) => Promise<void>): Promise<void> {
  const path = await mkdtemp(join(tmpdir(), 'p2pmess-directory-'))
  try {
    await fn(path)
  } finally {
    await rm(path, { recursive: true, force: true })
  }
}

test('level read cache stays coherent under interleaved reads, writes and sweeps (seeded)', async (t) => {
  await withTempDir(async (path) => {
    // A cache smaller than the ID set, so hits, misses and evictions all happen.
    const store = await openLevelStore(path, { cacheEntries: 3 })
    const random = seededRandom(99)
    const peers = Array.from({ length: 6 }, () => makePeer())
    const latest = new Map<string, number>()
    const ops: Promise<unknown>[] = []
    let operations = 0
    for (let round = 1; round <= 40; round++) {
      for (const peer of peers) {
        if (random.next() < 0.5) {
          const seq = round
          latest.set(peer.id, seq)
          ops.push(store.putIfNewer(makeRecord(peer, seq), { now: T0 }))
        }
        ops.push(store.get(peer.id))
        operations += 2
      }
      if (round % 10 === 0) {
        ops.push(store.sweep(T0)) // nothing is expired at T0: must delete nothing
        await Promise.all(ops.splice(0))
        for (const peer of peers) t.is((await store.get(peer.id))?.seq, latest.get(peer.id), `round ${round}`)
      }
    }
    // Every record expires an hour after T0: the sweep removes them all, and the cache forgets them too.
    t.is(await store.sweep(T0 + 3600_000), latest.size)
    for (const peer of peers) t.is(await store.get(peer.id), undefined)
    t.is(store.count(), 0)
    t.log(`${operations} operations`)
    await store.close()
  })
})

test('running directory/server.ts serves until SIGTERM, then exits cleanly with the data on disk', async (t) => {
  await withTempDir(async (path) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'directory/server.ts', '--db', path, '--port', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    let stderr = ''
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk
        const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)
        if (match !== null) resolve(match[1]!)
      })
      void exited.then((code) => reject(new DirectoryError('ERR_DIRECTORY_UNREACHABLE', `server exited early (${code}): ${stderr}`)))
    })
    const record = makeRecord(makePeer(), 1, { now: Date.now() })
    t.is((await send(url, 'PUT', `/v1/records/${record.id}`, { body: JSON.stringify(record) })).status, 201)
    child.kill('SIGTERM')
    t.is(await exited, 0)
    t.regex(stderr, /SIGTERM, shutting down[\s\S]*stopped/)

    const store = await openLevelStore(path)
    t.deepEqual((await store.get(record.id)) as DirectoryRecord, record)
    await store.close()
  })
})

test('running directory/server.ts without --db fails with a usage message', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'directory/server.ts'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  t.is(code, 1)
  t.regex(stderr, /usage: directory\/server\.ts --db <dir>/)
})
