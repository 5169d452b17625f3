/**
 * Fault suite: real clients (`p2pmess start --headless` child processes, each with its own tor) on the private
 * test network with an onion directory, under the failures a messenger must survive:
 *   - a peer killed (SIGKILL) in the middle of a transfer and restarted: nothing lost, nothing duplicated;
 *   - a client's tor killed: the supervisor restarts it and the session comes back;
 *   - the directory stopped and restarted: clients keep working from cached records meanwhile, and every
 *     record is still there afterwards;
 *   - secrets (identity seed, Noise secret, onion seed, passphrase) never reach the log or the data dir in any
 *     common encoding;
 *   - with every non-loopback destination refused inside the client (test/faults-guard.ts), it still works, and
 *     every TCP/UDP socket of its node and tor processes points at 127.0.0.1.
 * Serial (2 cores); every wait is on an event or a condition with a deadline.
 */
import { spawn } from 'node:child_process'
import { readFile, readdir, stat, mkdir, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import type { ClientEvent, MessageView } from '../src/client/api.js'
import { toBase64url, toHex } from '../src/protocol/bytes.js'
import { onionServiceKeyFromSeed, torOnionKeyBlob } from '../src/protocol/onion.js'
import { atFileEnd, testNetwork } from './helpers/tor.js'
import {
  HeadlessClient,
  REPO,
  childPids,
  isLoopbackOrUnspecified,
  makeAccount,
  presenceIs,
  socketsOf,
  startWorld,
  torChildren,
  waitUntil,
  type World,
} from '../bench/e2e-harness.js'

const PASSPHRASE = 'faults suite passphrase (throwaway)'
const HEARTBEAT_S = 2

let world: World | undefined
let counter = 0

test.before(async () => {
  world = await startWorld({ network: await testNetwork() })
  // Before the test network itself stops (its own file-end hook).
  atFileEnd(() => world?.stop())
})

function theWorld(): World {
  if (world === undefined) throw new TypeError('the world did not start')
  return world
}

interface Started {
  client: HeadlessClient
  dataDir: string
  peerId: string
  publicKey: Uint8Array
  secrets: { identitySeed: Uint8Array; noiseSecret: Uint8Array; onionSeed: Uint8Array }
}

/** A fresh account and its headless client; stopped (SIGKILL fallback) when the test ends. */
async function startPeer(t: ExecutionContext, name: string, extra: { nodeArgs?: string[]; env?: Record<string, string> } = {}): Promise<Started> {
  const w = theWorld()
  const dataDir = join(w.root, `${name}-${++counter}`)
  await mkdir(dataDir, { recursive: true })
  const account = await makeAccount(dataDir, PASSPHRASE)
  const secrets = { identitySeed: account.identitySeed.slice(), noiseSecret: account.noiseSecret.slice(), onionSeed: account.onionSeed.slice() }
  const peerId = account.peerId
  account.wipe()
  const publicKey = account.identityKey.slice()
  const client = await restart(t, dataDir, peerId, extra)
  return { client, dataDir, peerId, publicKey, secrets }
}

async function restart(t: ExecutionContext, dataDir: string, peerId: string, extra: { nodeArgs?: string[]; env?: Record<string, string> } = {}): Promise<HeadlessClient> {
  const w = theWorld()
  const client = await HeadlessClient.start({
    dataDir,
    peerId,
    passphrase: PASSPHRASE,
    directories: [w.directoryUrl],
    joinFile: w.joinFile,
    heartbeatSeconds: HEARTBEAT_S,
    ...extra,
  })
  t.teardown(() => client.stop())
  return client
}

/** Both add each other and wait until each sees the other online and accepted. */
async function befriend(a: HeadlessClient, b: HeadlessClient): Promise<void> {
  const fromA = a.events.length
  const fromB = b.events.length
  await b.must({ cmd: 'add', peerId: a.peerId }, 180_000)
  await a.must({ cmd: 'add', peerId: b.peerId }, 180_000)
  const accepted = (other: string) => (e: ClientEvent) =>
    e.type === 'contact' && e.contact.peerId === other && e.contact.state === 'accepted' ? true : undefined
  await Promise.all([
    a.waitFor(presenceIs(b.peerId, 'online'), 180_000, 'a sees b online', fromA),
    b.waitFor(presenceIs(a.peerId, 'online'), 180_000, 'b sees a online', fromB),
    a.waitFor(accepted(b.peerId), 180_000, 'a accepted b', fromA),
    b.waitFor(accepted(a.peerId), 180_000, 'b accepted a', fromB),
  ])
}

function incoming(events: readonly { event: ClientEvent }[], from: string): MessageView[] {
  return events.flatMap(({ event }) => (event.type === 'message' && event.message.direction === 'in' && event.message.peerId === from ? [event.message] : []))
}

function deliveredIds(client: HeadlessClient): Set<string> {
  return new Set(client.events.flatMap(({ event }) => (event.type === 'delivered' ? [event.id] : [])))
}

async function history(client: HeadlessClient, peerId: string): Promise<MessageView[]> {
  return (await client.must({ cmd: 'history', peerId, limit: 10_000 })).messages ?? []
}

test.serial('a peer killed mid-transfer and restarted: every message arrives exactly once', async (t) => {
  t.timeout(600_000)
  const a = await startPeer(t, 'sender')
  const b = await startPeer(t, 'receiver')
  await befriend(a.client, b.client)

  const N = 40
  const bodies = Array.from({ length: N }, (_, i) => `message ${i} ${'.'.repeat(2000 + i)}`)
  const ids: string[] = []
  // Kill the receiver once it has stored a few; keep sending into the outage.
  const killed = b.client.waitFor((e) => (incoming([{ event: e }], a.peerId).length > 0 ? true : undefined), 120_000, 'first message at b')
  for (const [i, body] of bodies.entries()) {
    const r = await a.client.must({ cmd: 'send', peerId: b.peerId, body })
    ids.push(r.id!)
    if (i === 4) {
      await killed
      await waitUntil(b.client.subscribe, () => (incoming(b.client.events, a.peerId).length >= 3 ? true : undefined), 120_000, 'three messages at b')
      b.client.kill('SIGKILL')
    }
  }
  await b.client.exited
  const beforeKill = incoming(b.client.events, a.peerId)
  t.log(`b stored ${beforeKill.length} of ${N} before SIGKILL; a had ${deliveredIds(a.client).size} acks`)
  t.true(beforeKill.length < N, 'the kill happened mid-transfer')

  const b2 = await restart(t, b.dataDir, b.peerId)
  await waitUntil(a.client.subscribe, () => (ids.every((id) => deliveredIds(a.client).has(id)) ? true : undefined), 300_000, `all ${N} delivered`)

  const seen = [...beforeKill, ...incoming(b2.events, a.peerId)]
  const count = new Map<string, number>()
  for (const m of seen) count.set(m.id, (count.get(m.id) ?? 0) + 1)
  t.deepEqual([...count.values()].filter((n) => n > 1), [], 'no message shown twice')
  t.deepEqual(new Set(count.keys()), new Set(ids), 'every message shown once')
  const stored = (await history(b2, a.peerId)).filter((m) => m.direction === 'in')
  t.is(stored.length, N, 'b stores each message once')
  t.deepEqual(stored.map((m) => m.body).sort(), [...bodies].sort())
  const sent = (await history(a.client, b.peerId)).filter((m) => m.direction === 'out')
  t.true(sent.length === N && sent.every((m) => m.status === 'delivered'), 'a shows all as delivered')
})

test.serial("a client's tor killed: it is restarted and the session comes back", async (t) => {
  t.timeout(600_000)
  const a = await startPeer(t, 'torkill-a')
  const b = await startPeer(t, 'torkill-b')
  await befriend(a.client, b.client)
  const [tor] = await torChildren(a.client.pid)
  t.truthy(tor, 'the client runs a tor child')
  const mark = a.client.events.length
  const t0 = performance.now()
  process.kill(tor!, 'SIGKILL')
  await a.client.waitFor((e) => (e.type === 'tor' && e.state === 'restarting' ? true : undefined), 60_000, 'tor restarting', mark)
  await a.client.waitFor((e) => (e.type === 'tor' && e.state === 'ready' ? true : undefined), 120_000, 'tor ready again', mark)
  const newTor = await torChildren(a.client.pid)
  t.true(newTor.length === 1 && newTor[0] !== tor, 'a new tor process runs')
  await a.client.waitFor(presenceIs(b.peerId, 'online'), 180_000, 'b online again', mark)
  t.log(`tor restarted and session back after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
  const r = await a.client.must({ cmd: 'send', peerId: b.peerId, body: 'after the tor restart' })
  await a.client.waitFor((e) => (e.type === 'delivered' && e.id === r.id ? true : undefined), 120_000, 'delivery after restart')
  const back = await b.client.must({ cmd: 'send', peerId: a.peerId, body: 'and back' })
  await b.client.waitFor((e) => (e.type === 'delivered' && e.id === back.id ? true : undefined), 120_000, 'delivery the other way')
  t.true(deliveredIds(b.client).has(back.id!))
})

/** GET a record from the directory's local HTTP port (a check from outside the clients; nothing dials it). */
function getRecord(base: string, peerId: string): Promise<{ status: number; seq: number | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(`/v1/records/${peerId}`, base), { agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => (text += c))
      res.on('end', () => {
        let seq: number | undefined
        try {
          const v: unknown = JSON.parse(text)
          seq = typeof v === 'object' && v !== null && 'seq' in v && typeof v.seq === 'number' ? v.seq : undefined
        } catch {
          seq = undefined
        }
        resolve({ status: res.statusCode ?? 0, seq })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

test.serial('the directory restarted: records persist, clients keep working from cache meanwhile', async (t) => {
  t.timeout(600_000)
  const w = theWorld()
  const a = await startPeer(t, 'dir-a')
  const b = await startPeer(t, 'dir-b')
  await befriend(a.client, b.client)
  const before = await Promise.all([a.peerId, b.peerId].map((id) => getRecord(w.directory.localUrl, id)))
  t.deepEqual(before.map((r) => r.status), [200, 200])

  await w.stopDirectory()
  // While it is down: b crashes and comes back; a must redial it from its cached record, b reaches a from its db.
  const mark = a.client.events.length
  b.client.kill('SIGKILL')
  await b.client.exited
  await a.client.waitFor((e) => (e.type === 'presence' && e.peerId === b.peerId && e.presence !== 'online' ? true : undefined), 60_000, 'b gone', mark)
  const b2 = await restart(t, b.dataDir, b.peerId)
  await a.client.waitFor(presenceIs(b.peerId, 'online'), 180_000, 'b online again with the directory down', mark)
  const r = await a.client.must({ cmd: 'send', peerId: b.peerId, body: 'sent while the directory is down' })
  await a.client.waitFor((e) => (e.type === 'delivered' && e.id === r.id ? true : undefined), 120_000, 'delivery with the directory down')
  const back = await b2.must({ cmd: 'send', peerId: a.peerId, body: 'answered while the directory is down' })
  await b2.waitFor((e) => (e.type === 'delivered' && e.id === back.id ? true : undefined), 120_000, 'answer with the directory down')

  await w.startDirectory()
  t.is(w.directory.onionUrl, w.directoryUrl, 'same onion address after the restart')
  const after = await Promise.all([a.peerId, b.peerId].map((id) => getRecord(w.directory.localUrl, id)))
  t.deepEqual(after.map((x) => x.status), [200, 200], 'both records survived the restart')
  for (const [i, rec] of after.entries()) t.true((rec.seq ?? 0) >= (before[i]!.seq ?? Infinity), 'no record went back in seq')
})

/** Every file under `dir`, recursively (symlinks not followed). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await filesUnder(path)))
    else if (entry.isFile()) out.push(path)
  }
  return out
}

test.serial('secrets never appear in the log or anywhere in the data dir', async (t) => {
  t.timeout(600_000)
  const a = await startPeer(t, 'secrets-a')
  const b = await startPeer(t, 'secrets-b')
  await befriend(a.client, b.client)
  const r = await a.client.must({ cmd: 'send', peerId: b.peerId, body: 'a message so every code path ran' })
  await a.client.waitFor((e) => (e.type === 'delivered' && e.id === r.id ? true : undefined), 120_000, 'delivery')
  await a.client.stop()

  const { identitySeed, noiseSecret, onionSeed } = a.secrets
  const expanded = onionServiceKeyFromSeed(onionSeed).expandedSecretKey
  const secrets: [string, Uint8Array][] = [
    ['identity seed', identitySeed],
    ['noise secret', noiseSecret],
    ['onion seed', onionSeed],
    ['expanded onion key', expanded],
  ]
  const needles: [string, Buffer][] = [['passphrase', Buffer.from(PASSPHRASE)]]
  for (const [name, key] of secrets) {
    const b64 = Buffer.from(key).toString('base64')
    needles.push(
      [`${name} raw`, Buffer.from(key)],
      [`${name} hex`, Buffer.from(toHex(key))],
      [`${name} HEX`, Buffer.from(toHex(key).toUpperCase())],
      [`${name} base64`, Buffer.from(b64.replace(/=+$/, ''))],
      [`${name} base64url`, Buffer.from(toBase64url(key))],
    )
  }
  needles.push(['tor ADD_ONION key blob', Buffer.from(torOnionKeyBlob(expanded).slice('ED25519-V3:'.length, -2))])
  const files = await filesUnder(a.dataDir)
  t.true(files.some((f) => f.endsWith('client.log')), 'the client wrote a log')
  let bytes = 0
  for (const file of files) {
    const content = await readFile(file)
    bytes += content.length
    for (const [name, needle] of needles) t.false(content.includes(needle), `${name} found in ${file.slice(a.dataDir.length)}`)
  }
  t.log(`searched ${files.length} files (${(bytes / 1024).toFixed(0)} KiB) for ${needles.length} encodings of the secrets: ${files.map((f) => f.slice(a.dataDir.length + 1)).join(', ')}`)
  // Positive control: the public identity key is stored (base64url) in account.json, so the search does see it.
  const publicKey = Buffer.from(toBase64url(a.publicKey))
  t.true((await readFile(join(a.dataDir, 'account.json'))).includes(publicKey), 'the search finds what is there')
  t.true((await stat(join(a.dataDir, 'client.log'))).size > 0)
})

test.serial('no connection bypasses tor: works with non-loopback refused, and every socket is on 127.0.0.1', async (t) => {
  t.timeout(600_000)
  const w = theWorld()
  const guardLog = join(w.root, `guard-${++counter}.jsonl`)
  await writeFile(guardLog, '')
  const guard = { nodeArgs: ['--import', join(REPO, 'test/faults-guard.ts')], env: { P2PMESS_GUARD_LOG: guardLog } }
  const a = await startPeer(t, 'guarded-a', guard)
  const b = await startPeer(t, 'guarded-b', guard)
  await befriend(a.client, b.client)
  const r = await a.client.must({ cmd: 'send', peerId: b.peerId, body: 'through tor only' })
  await a.client.waitFor((e) => (e.type === 'delivered' && e.id === r.id ? true : undefined), 120_000, 'delivery under the guard')

  let sockets = 0
  for (const client of [a.client, b.client]) {
    const pids = [client.pid, ...(await childPids(client.pid))]
    t.true(pids.length >= 2, 'a node process and its tor')
    for (const pid of pids) {
      for (const s of await socketsOf(pid)) {
        sockets++
        t.true(isLoopbackOrUnspecified(s.remoteHost), `pid ${pid} ${s.proto} ${s.local} -> ${s.remote}`)
        if (s.listening) t.true(s.local.startsWith('127.') || s.local.startsWith('::1'), `listener on loopback: ${s.local}`)
      }
    }
  }
  t.true(sockets > 4, `observed ${sockets} sockets`)
  t.log(`${sockets} TCP/UDP sockets in 2 clients (node + tor), all on loopback`)
  const attempts = (await readFile(guardLog, 'utf8')).trim()
  t.is(attempts, '', `refused attempts: ${attempts.slice(0, 300)}`)

  // Positive control: the guard does refuse. 255.255.255.255 is safe to try: the kernel refuses a TCP connect to
  // the broadcast address without sending anything, so even a broken guard would put no packet on a wire.
  const probeLog = join(w.root, `guard-probe-${++counter}.jsonl`)
  await writeFile(probeLog, '')
  const probe = spawn(process.execPath, ['--import', 'tsx', ...guard.nodeArgs, '-e', "require('node:net').connect(9, '255.255.255.255').on('error', (e) => { console.log(e.message); })"], {
    cwd: REPO,
    env: { ...process.env, P2PMESS_GUARD_LOG: probeLog },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  probe.stdout.setEncoding('utf8').on('data', (c: string) => (out += c))
  await new Promise((resolve) => probe.once('exit', resolve))
  t.regex(out, /refused by faults-guard/)
  t.regex(await readFile(probeLog, 'utf8'), /"kind":"tcp","target":"255\.255\.255\.255"/)
})
