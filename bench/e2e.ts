/**
 * End-to-end benchmark (`node --import tsx bench/e2e.ts`; part of `npm run bench`): the real client (src/client/client.ts)
 * on a private Tor network, each figure next to a bare-tor baseline measured in the same run, interleaved.
 *
 *   round trip     send → delivered ack on an open session  vs  a bare SOCKS echo over the SAME circuit
 *                  (the far peer's onion carries an echo port besides its session port; tor sends every stream
 *                  to one onion over one rendezvous circuit), on 3 circuits
 *   first message  add (directory lookup) + dial + handshake + hello + text + ack to a peer never dialled
 *                  vs  a bare connect to a fresh onion + one echo (descriptor fetch, intro, rendezvous)
 *   throughput     many 16 KiB texts through a session  vs  the same bytes down a bare stream, same circuit
 *   real peer      send → delivered to a real client (which stores before acking)  vs  the heartbeat ping/pong
 *                  round trip of that same session (client-measured, 1 ms resolution)
 *   dead peer      time for the client to mark a frozen (SIGSTOP) or killed (SIGKILL) real peer unreachable,
 *                  against the heartbeat interval H
 *   100 contacts   a headless client process with 100 sessions (heartbeats at the default H): node RSS, tor
 *                  RSS, CPU, against the same process with no contacts
 *
 * Who runs where: the measured client runs in this process (no IPC in its timings) for the first three, and as
 * a `p2pmess start --headless` child for the resource figures (so its RSS and CPU are its own). Far ends: light
 * peers (bench/e2e-peers.ts: the project's session code without a database, many per tor) for round trip,
 * throughput, first message and the 100 contacts; a real headless client (own tor) for the dead-peer figures.
 *
 * Flags: --quick (fewer samples), --contacts N (default 100), --only a,b (sections: rtt,first,bulk,dead,contacts;
 * 'dead' includes the real-peer round trip), --relays N (relays besides the 3 authorities, default 3). Env P2PMESS_BENCH_DEBUG=1 logs the steps of the first-message samples.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { ClientEvent, ClientHandle } from '../src/client/api.js'
import { startClient, type P2PMessClient } from '../src/client/client.js'
import { DEFAULT_HEARTBEAT_INTERVAL } from '../src/protocol/heartbeat.js'
import { InvalidArgumentError, SessionError, describeError } from '../src/errors.js'
import type { LogFields, Logger } from '../src/log.js'
import { MAX_TEXT_BYTES } from '../src/protocol/messages.js'
import { createTorDialer, type TorDialer } from '../src/tor/dialer.js'
import {
  HeadlessClient,
  cpuSeconds,
  makeAccount,
  presenceIs,
  rssBytes,
  startWorld,
  torChildren,
  waitUntil,
  type World,
} from './e2e-harness.js'
import { LightPeerHost, type LightPeer } from './e2e-peers.js'
import { seededRandom } from '../test/helpers/random.js'
import { ms, printTable, stats, times, type Stats } from './lib.js'

const ECHO_PORT = 7
const SINK_PORT = 9
const PASSPHRASE = 'bench passphrase (throwaway accounts)'

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    contacts: { type: 'string', default: '100' },
    only: { type: 'string' },
    relays: { type: 'string', default: '3' },
  },
})
const quick = flags.quick === true
const CONTACTS = Number(flags.contacts)
if (!Number.isInteger(CONTACTS) || CONTACTS < 1 || CONTACTS > 500) throw new InvalidArgumentError('--contacts must be 1-500')
// The network's size (relays besides the 3 authorities); docs/DECISIONS.md "Private Tor network" on 6 vs 10 vs 14 nodes.
const RELAYS = Number(flags.relays)
if (!Number.isInteger(RELAYS) || RELAYS < 1 || RELAYS > 29) throw new InvalidArgumentError('--relays must be 1-29')
const SECTIONS = new Set((flags.only ?? 'rtt,first,bulk,dead,contacts').split(','))
const RTT_SAMPLES = quick ? 60 : 200
const RTT_CIRCUITS = quick ? 1 : 3
const FIRST_SAMPLES = quick ? 4 : 30
const BULK_MESSAGES = quick ? 60 : 200
const BULK_ROUNDS = quick ? 2 : 3
const DEAD_SAMPLES = quick ? 2 : 5
const REAL_RTT_SAMPLES = quick ? 5 : 30
const HEARTBEAT_MS = 2_000
const RESOURCE_WINDOW_MS = quick ? 15_000 : 60_000
const WATCHDOG_MS = 45 * 60_000
const CONTACTS_ONLINE_TIMEOUT_MS = 300_000

const log = (line: string): void => void process.stderr.write(`[e2e] ${line}\n`)
const debug = (line: string): void => {
  if (process.env['P2PMESS_BENCH_DEBUG'] === '1') log(line)
}

// ---- local servers behind the onion ports ------------------------------------------------------------------

function listen(handler: (socket: Socket) => void): Promise<Server> {
  const server = createServer({ noDelay: true }, handler)
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

/** Echo: every byte straight back. */
const echoServer = (): Promise<Server> => listen((s) => {
  s.on('error', () => {})
  s.pipe(s)
})

/** Sink: reads an 8-byte big-endian length, then that many bytes, then answers one byte. */
const sinkServer = (): Promise<Server> =>
  listen((s) => {
    s.on('error', () => {})
    let header = Buffer.alloc(0)
    let expected: number | undefined
    let got = 0
    s.on('data', (chunk: Buffer) => {
      if (expected === undefined) {
        header = Buffer.concat([header, chunk])
        if (header.length < 8) return
        expected = Number(header.readBigUInt64BE(0))
        got = header.length - 8
      } else {
        got += chunk.length
      }
      if (got >= expected) s.write(Buffer.of(1))
    })
  })

const portOf = (server: Server): number => (server.address() as AddressInfo).port

/** Resolves with the next `n` bytes' arrival (the socket must be flowing). */
function readBytes(socket: Socket, n: number, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0
    const timer = setTimeout(() => done(new SessionError('ERR_SESSION_TIMEOUT', `no ${n}-byte answer within ${timeoutMs} ms`)), timeoutMs)
    const onData = (chunk: Buffer): void => {
      got += chunk.length
      if (got >= n) done()
    }
    const onClose = (): void => done(new SessionError('ERR_SESSION_CLOSED', 'the bare stream closed'))
    const done = (err?: Error): void => {
      clearTimeout(timer)
      socket.off('data', onData).off('close', onClose)
      if (err === undefined) resolve()
      else reject(err)
    }
    socket.on('data', onData).once('close', onClose)
  })
}

async function echoOnce(socket: Socket, payload: Buffer): Promise<number> {
  const t0 = performance.now()
  const answered = readBytes(socket, payload.length)
  socket.write(payload)
  await answered
  return performance.now() - t0
}

// ---- the in-process client, observed -------------------------------------------------------------------------

interface Timed<T> {
  at: number
  value: T
}

/** Records every event and log line of a client with its arrival time, and waits on them. */
class Observed {
  readonly events: Timed<ClientEvent>[] = []
  readonly logs: Timed<{ msg: string; fields: LogFields | undefined }>[] = []
  readonly #wakers = new Set<() => void>()
  readonly delivered = new Map<string, number>()

  readonly logger: Logger = {
    debug: (msg, fields) => this.#log(msg, fields),
    info: (msg, fields) => this.#log(msg, fields),
    warn: (msg, fields) => this.#log(msg, fields),
    error: (msg, fields) => this.#log(msg, fields),
  }

  readonly onEvent = (event: ClientEvent): void => {
    const at = performance.now()
    this.events.push({ at, value: event })
    if (event.type === 'delivered') this.delivered.set(event.id, at)
    this.#wake()
  }

  #log(msg: string, fields: LogFields | undefined): void {
    this.logs.push({ at: performance.now(), value: { msg, fields } })
    this.#wake()
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w()
  }

  readonly subscribe = (wake: () => void): (() => void) => {
    this.#wakers.add(wake)
    return () => this.#wakers.delete(wake)
  }

  /** The first event at index ≥ `from` that `pick` accepts, with its time. */
  waitFor<T>(pick: (e: ClientEvent) => T | undefined, timeoutMs: number, what: string, from = 0): Promise<Timed<T>> {
    let i = from
    return waitUntil(
      this.subscribe,
      () => {
        for (; i < this.events.length; i++) {
          const hit = pick(this.events[i]!.value)
          if (hit !== undefined) return { at: this.events[i]!.at, value: hit }
        }
        return undefined
      },
      timeoutMs,
      what,
    )
  }

  waitForLog(pick: (msg: string, fields: LogFields | undefined) => boolean, timeoutMs: number, what: string, from = 0): Promise<number> {
    let i = from
    return waitUntil(
      this.subscribe,
      () => {
        for (; i < this.logs.length; i++) if (pick(this.logs[i]!.value.msg, this.logs[i]!.value.fields)) return this.logs[i]!.at
        return undefined
      },
      timeoutMs,
      what,
    )
  }

  waitDelivered(id: string, timeoutMs: number): Promise<number> {
    return waitUntil(this.subscribe, () => this.delivered.get(id), timeoutMs, `delivery of ${id}`)
  }
}

async function send(client: ClientHandle, peerId: string, body: string): Promise<string> {
  const result = await client.dispatch({ cmd: 'send', peerId, body })
  if (!result.ok || result.id === undefined) throw new SessionError('ERR_SESSION_PROTOCOL', `send failed: ${result.ok ? 'no id' : `${result.code} ${result.message}`}`)
  return result.id
}

async function addContact(client: ClientHandle, peerId: string): Promise<void> {
  const result = await client.dispatch({ cmd: 'add', peerId })
  if (!result.ok) throw new SessionError('ERR_SESSION_PROTOCOL', `add failed: ${result.code} ${result.message}`)
}

// ---- report rows ---------------------------------------------------------------------------------------------

interface Row {
  name: string
  ours: Stats
  bare: Stats
  unit: 'ms' | 'MB/s'
  /** Ratio of medians, ours / bare (for MB/s: ours / bare as well, higher is better). */
  goal: string
  met: boolean
}

const rows: Row[] = []
const notes: string[] = []
const failures: string[] = []

function ratioRow(name: string, ours: number[], bare: number[], unit: Row['unit'], goal: { max?: number; min?: number }): Row {
  const o = stats(ours)
  const b = stats(bare)
  const r = o.median / b.median
  const met = goal.max !== undefined ? r <= goal.max : r >= (goal.min ?? 0)
  const row: Row = { name, ours: o, bare: b, unit, goal: goal.max !== undefined ? `≤ ${goal.max.toFixed(2)}×` : `≥ ${(goal.min ?? 0).toFixed(2)}×`, met }
  rows.push(row)
  return row
}

// ---- sections --------------------------------------------------------------------------------------------------

interface Ctx {
  world: World
  host: LightPeerHost
  client: P2PMessClient
  observed: Observed
  dialer: TorDialer
  echoPort: number
  sinkPort: number
}

async function connectLightPeer(ctx: Ctx, peer: LightPeer): Promise<void> {
  const from = ctx.observed.events.length
  await addContact(ctx.client, peer.peerId)
  await ctx.observed.waitFor(presenceIs(peer.peerId, 'online'), 180_000, `session with ${peer.peerId}`, from)
}

/**
 * Round trip on an open session vs a bare echo on the same circuit, interleaved one for one, on each of the given
 * peers' circuits (latency differs a lot between circuits of this network, so one circuit is not a sample).
 * One table row per circuit.
 */
async function roundTrip(ctx: Ctx, peers: readonly LightPeer[]): Promise<void> {
  const payload = Buffer.alloc(32, 0x61)
  const body = 'x'.repeat(32)
  const circuits: string[] = []
  for (const [c, peer] of peers.entries()) {
    const echo = await ctx.dialer.dialWithRetry(peer.onion, ECHO_PORT, { deadlineMs: 120_000 })
    echo.setNoDelay(true)
    echo.on('error', () => {})
    try {
      const one = async (): Promise<number> => {
        const t0 = performance.now()
        const id = await send(ctx.client, peer.peerId, body)
        return (await ctx.observed.waitDelivered(id, 60_000)) - t0
      }
      for (let i = 0; i < 10; i++) {
        await one()
        await echoOnce(echo, payload)
      }
      const o: number[] = []
      const b: number[] = []
      for (let i = 0; i < RTT_SAMPLES; i++) {
        o.push(await one())
        b.push(await echoOnce(echo, payload))
      }
      const row = ratioRow(`round trip, circuit ${c + 1}: send → delivered ack`, o, b, 'ms', { max: 1.1 })
      circuits.push(times(row.ours.median / row.bare.median))
      log(`round trip, circuit ${c + 1}: ours ${ms(row.ours.median)} vs bare echo ${ms(row.bare.median)} on the same circuit (${RTT_SAMPLES} each)`)
    } finally {
      echo.destroy()
    }
  }
  // Circuits of this network differ several-fold in latency, so each gets its own row; no pooled figure.
  notes.push(`round trip: ratio per circuit ${circuits.join(', ')} (${RTT_SAMPLES} + ${RTT_SAMPLES} samples each)`)
}

/** Many max-size texts through the session vs the same bytes down a bare stream on the same circuit. */
async function bulk(ctx: Ctx, peer: LightPeer): Promise<void> {
  const body = 'y'.repeat(MAX_TEXT_BYTES)
  const bytes = BULK_MESSAGES * MAX_TEXT_BYTES
  const ours: number[] = []
  const bare: number[] = []
  for (let round = 0; round < BULK_ROUNDS; round++) {
    const t0 = performance.now()
    const ids: string[] = []
    for (let i = 0; i < BULK_MESSAGES; i++) ids.push(await send(ctx.client, peer.peerId, body))
    await Promise.all(ids.map((id) => ctx.observed.waitDelivered(id, 600_000)))
    ours.push(bytes / 1e6 / ((performance.now() - t0) / 1000))

    const sink = await ctx.dialer.dialWithRetry(peer.onion, SINK_PORT, { deadlineMs: 120_000 })
    sink.on('error', () => {})
    try {
      const header = Buffer.alloc(8)
      header.writeBigUInt64BE(BigInt(bytes))
      const chunk = Buffer.alloc(MAX_TEXT_BYTES, 0x79)
      const s0 = performance.now()
      const answered = readBytes(sink, 1, 600_000)
      sink.write(header)
      for (let i = 0; i < BULK_MESSAGES; i++) {
        if (!sink.write(chunk)) await new Promise((resolve) => sink.once('drain', resolve))
      }
      await answered
      bare.push(bytes / 1e6 / ((performance.now() - s0) / 1000))
    } finally {
      sink.destroy()
    }
    log(`bulk round ${round + 1}: ours ${ours.at(-1)!.toFixed(2)} MB/s, bare ${bare.at(-1)!.toFixed(2)} MB/s`)
  }
  ratioRow(`throughput: ${BULK_MESSAGES} × 16 KiB texts`, ours, bare, 'MB/s', { min: 0.9 })
}

/** First delivered message to a never-dialled peer, with phases, vs a bare connect + echo to a fresh onion. */
async function firstMessage(ctx: Ctx): Promise<void> {
  const ours: number[] = []
  const bare: number[] = []
  const phases = { lookup: [] as number[], connect: [] as number[], handshake: [] as number[], hello: [] as number[], textAck: [] as number[] }
  const barePhases = { connect: [] as number[], echo: [] as number[] }
  const payload = Buffer.alloc(32, 0x62)
  const failedPairs: string[] = []
  for (let k = 0; k < FIRST_SAMPLES; k++) {
    // Both far ends are published before the clock starts; neither was ever dialled from this tor.
    const [peer, fresh] = await Promise.all([ctx.host.addPeer(), ctx.host.addService(ECHO_PORT, ctx.echoPort)])
    debug(`first message ${k + 1}: far ends published`)
    const oursOnce = async (): Promise<void> => {
      const from = ctx.observed.events.length
      const logFrom = ctx.observed.logs.length
      const t0 = performance.now()
      await addContact(ctx.client, peer.peerId)
      const tLookup = performance.now()
      debug(`first message ${k + 1}: added`)
      const id = await send(ctx.client, peer.peerId, 'first message')
      const delivered = await ctx.observed.waitDelivered(id, 120_000)
      const streamOpen = await ctx.observed.waitForLog((msg, f) => msg === 'tor stream open' && f?.['peerId'] === peer.peerId, 1, 'stream log', logFrom)
      const handshaken = await ctx.observed.waitForLog((msg, f) => msg === 'session handshaken' && f?.['peerId'] === peer.peerId, 1, 'handshake log', logFrom)
      const online = await ctx.observed.waitFor(presenceIs(peer.peerId, 'online'), 1, 'online', from)
      ours.push(delivered - t0)
      phases.lookup.push(tLookup - t0)
      phases.connect.push(streamOpen - tLookup)
      phases.handshake.push(handshaken - streamOpen)
      phases.hello.push(online.at - handshaken)
      phases.textAck.push(delivered - online.at)
      if (ours.at(-1)! > 1_000) {
        // A slow sample: the client's own account of it (its log lines since the add, times from the add).
        for (const { at, value } of ctx.observed.logs.slice(logFrom)) log(`  +${ms(at - t0, 0)} ${value.msg} ${JSON.stringify(value.fields ?? {})}`)
      }
    }
    const bareOnce = async (): Promise<void> => {
      const b0 = performance.now()
      const socket = await ctx.dialer.dialWithRetry(fresh, ECHO_PORT, { deadlineMs: 120_000 })
      const b1 = performance.now()
      socket.setNoDelay(true)
      socket.on('error', () => {})
      try {
        await echoOnce(socket, payload)
        const b2 = performance.now()
        bare.push(b2 - b0)
        barePhases.connect.push(b1 - b0)
        barePhases.echo.push(b2 - b1)
      } finally {
        socket.destroy()
      }
    }
    // Alternate which goes first: the second dial of a pair meets a tor that has just built circuits. A pair where
    // either side fails is left out and counted: on this small network tor sometimes never completes a
    // rendezvous (the service gives up building its circuit to the rendezvous point while the client waits on it).
    const n = { ours: ours.length, bare: bare.length }
    try {
      if (k % 2 === 0) {
        await oursOnce()
        await bareOnce()
      } else {
        await bareOnce()
        await oursOnce()
      }
    } catch (err) {
      const side = ours.length > n.ours ? 'bare' : bare.length > n.bare ? 'ours' : k % 2 === 0 ? 'ours' : 'bare'
      ours.length = n.ours
      bare.length = n.bare
      for (const xs of Object.values(phases)) xs.length = n.ours
      for (const xs of Object.values(barePhases)) xs.length = n.bare
      failedPairs.push(`pair ${k + 1}: ${side} failed: ${describeError(err)}`)
      log(`first message ${k + 1}: left out, ${side} failed: ${describeError(err)}`)
      continue
    }
    const last = (xs: number[]): string => ms(xs.at(-1)!, 0)
    log(
      `first message ${k + 1}: ours ${last(ours)} (lookup ${last(phases.lookup)}, tor connect ${last(phases.connect)}, handshake ${last(phases.handshake)}, ` +
        `hello ${last(phases.hello)}, text+ack ${last(phases.textAck)}); bare ${last(bare)} (tor connect ${last(barePhases.connect)}, echo ${last(barePhases.echo)})`,
    )
  }
  ratioRow('first message to a new contact', ours, bare, 'ms', { max: 1.25 })
  // The two halves of a pair ran back to back on the same tor: the median of their ratios is less exposed to
  // onion-to-onion connect variance than the ratio of the two medians (the goal's figure), so both are printed.
  const paired = stats(ours.map((o, i) => o / bare[i]!))
  notes.push(`first message: per-pair ratio ours/bare median ${times(paired.median)}, p95 ${times(paired.p95)} (${ours.length} pairs)`)
  for (const f of failedPairs) notes.push(`first message: ${f}`)
  const p = (name: string, xs: number[]): string => `${name} ${ms(stats(xs).median, 0)}`
  notes.push(
    `first message phases (medians): ours ${p('lookup', phases.lookup)}, ${p('tor connect', phases.connect)}, ${p('IK handshake', phases.handshake)}, ` +
      `${p('hello exchange', phases.hello)}, ${p('text+ack', phases.textAck)}; bare ${p('tor connect', barePhases.connect)}, ${p('echo', barePhases.echo)}`,
  )
}

/**
 * Round trip to a real client (it stores each text, fsync'd, before acking) vs the heartbeat ping/pong of the very
 * same session (tor circuit + Noise + framing, no database). Each round: the next ping/pong of our client, a text
 * sent right after it, then — once the session has been quiet for QUIET_MS — another text. The two ends ping in
 * anti-phase (the responder H/2 after the dialler, docs/PROTOCOL.md "Heartbeats"), so the ping/pong is one clean
 * round trip; a text sent right after it follows our ping within a round trip and shows what such back-to-back
 * frames cost (tor's links keep Nagle on: docs/DECISIONS.md).
 */
async function realRoundTrip(ctx: Ctx, peerId: string): Promise<void> {
  const QUIET_MS = 250
  const quiet: number[] = []
  const afterHeartbeat: number[] = []
  const pings: number[] = []
  const text = async (): Promise<number> => {
    const t0 = performance.now()
    const id = await send(ctx.client, peerId, 'x'.repeat(32))
    return (await ctx.observed.waitDelivered(id, 60_000)) - t0
  }
  for (let i = 0; i < REAL_RTT_SAMPLES; i++) {
    const mark = ctx.observed.events.length
    const ping = await ctx.observed.waitFor((e) => (e.type === 'presence' && e.peerId === peerId && e.rttMs !== undefined ? e.rttMs : undefined), 4 * HEARTBEAT_MS, 'a heartbeat round trip', mark)
    pings.push(ping.value)
    afterHeartbeat.push(await text())
    await new Promise((resolve) => setTimeout(resolve, QUIET_MS)) // a pause on purpose: the condition is "nothing sent lately"
    quiet.push(await text())
  }
  const row = ratioRow('round trip to a real client (quiet session) vs its heartbeat', quiet, pings, 'ms', { max: 1.1 })
  const after = stats(afterHeartbeat)
  log(`round trip to a real client: quiet ${ms(row.ours.median)}, right after a heartbeat ${ms(after.median)} vs ping/pong ${ms(row.bare.median)} on the same session (${REAL_RTT_SAMPLES} each)`)
  notes.push(`real client: a text sent right after a heartbeat exchange: p50 ${ms(after.median)}, p95 ${ms(after.p95)} = ${times(after.median / row.bare.median)} its ping/pong (${REAL_RTT_SAMPLES} samples)`)
}

/** A real peer (headless child, own tor) is frozen or killed; how long until the client marks it unreachable. */
async function deadPeer(ctx: Ctx): Promise<void> {
  const dataDir = join(ctx.world.root, 'dead-peer')
  await mkdir(dataDir, { recursive: true })
  const account = await makeAccount(dataDir, PASSPHRASE)
  const peerId = account.peerId
  account.wipe()
  const start = (): Promise<HeadlessClient> =>
    HeadlessClient.start({ dataDir, peerId, passphrase: PASSPHRASE, directories: [ctx.world.directoryUrl], joinFile: ctx.world.joinFile, heartbeatSeconds: HEARTBEAT_MS / 1000 })
  let peer = await start()
  try {
    const from = ctx.observed.events.length
    await peer.must({ cmd: 'add', peerId: ctx.client.peerId })
    await addContact(ctx.client, peer.peerId)
    await ctx.observed.waitFor(presenceIs(peer.peerId, 'online'), 180_000, 'session with the real peer', from)
    await realRoundTrip(ctx, peer.peerId).catch((err: unknown) => {
      failures.push(`real-peer round trip: ${describeError(err)}`)
    })
    const results: Record<'SIGSTOP' | 'SIGKILL', number[]> = { SIGSTOP: [], SIGKILL: [] }
    // Seeded, so a run's failure phases reproduce.
    const phase = seededRandom(0xdead).next
    for (let i = 0; i < DEAD_SAMPLES; i++) {
      for (const signal of ['SIGSTOP', 'SIGKILL'] as const) {
        // The failure strikes at a random point of the heartbeat cycle, not right after the session came up
        // (that would always be the worst case, 2H after the hello).
        await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS + phase() * HEARTBEAT_MS))
        const tors = await torChildren(peer.pid)
        const mark = ctx.observed.events.length
        const t0 = performance.now()
        if (signal === 'SIGSTOP') for (const pid of [peer.pid, ...tors]) process.kill(pid, 'SIGSTOP')
        else peer.kill('SIGKILL')
        const gone = await ctx.observed.waitFor((e) => (e.type === 'presence' && e.peerId === peer.peerId && e.presence !== 'online' ? true : undefined), 10 * HEARTBEAT_MS, 'presence change', mark)
        results[signal].push(gone.at - t0)
        log(`dead peer (${signal}): noticed after ${ms(gone.at - t0, 0)} (H = ${HEARTBEAT_MS} ms)`)
        const back = ctx.observed.events.length
        if (signal === 'SIGSTOP') {
          for (const pid of [peer.pid, ...tors]) process.kill(pid, 'SIGCONT')
        } else {
          await peer.exited
          peer = await start()
        }
        await ctx.observed.waitFor(presenceIs(peer.peerId, 'online'), 180_000, 'session back', back)
      }
    }
    for (const signal of ['SIGSTOP', 'SIGKILL'] as const) {
      const s = stats(results[signal])
      notes.push(
        `dead peer by ${signal}: noticed after median ${ms(s.median, 0)}, max ${ms(s.max, 0)} = ${times(s.median / HEARTBEAT_MS)} / ${times(s.max / HEARTBEAT_MS)} H ` +
          `(goal ≤ 2×; ${s.n} samples, H = ${HEARTBEAT_MS} ms)`,
      )
    }
    const worst = Math.max(...results.SIGSTOP, ...results.SIGKILL)
    const h = { n: 1, median: HEARTBEAT_MS, p95: HEARTBEAT_MS, min: HEARTBEAT_MS, max: HEARTBEAT_MS }
    rows.push({ name: 'dead peer noticed: frozen (SIGSTOP)', ours: stats(results.SIGSTOP), bare: h, unit: 'ms', goal: '≤ 2.00×', met: Math.max(...results.SIGSTOP) <= 2 * HEARTBEAT_MS })
    rows.push({ name: 'dead peer noticed: killed (SIGKILL)', ours: stats(results.SIGKILL), bare: h, unit: 'ms', goal: '≤ 2.00×', met: Math.max(...results.SIGKILL) <= 2 * HEARTBEAT_MS })
    if (worst > 2 * HEARTBEAT_MS) notes.push(`dead peer: the slowest detection exceeded 2H by ${(worst - 2 * HEARTBEAT_MS).toFixed(0)} ms (timer latency; the rule fires at exactly 2H after the last frame heard)`)
  } finally {
    await peer.stop()
  }
}

/** Resource use of a headless client process: idle, then with `CONTACTS` light peers online. */
async function contacts(ctx: Ctx): Promise<void> {
  const peers: LightPeer[] = []
  const t0 = performance.now()
  for (let i = 0; i < CONTACTS; i += 10) {
    peers.push(...(await Promise.all(Array.from({ length: Math.min(10, CONTACTS - i) }, () => ctx.host.addPeer([], { heartbeatIntervalMs: DEFAULT_HEARTBEAT_INTERVAL })))))
  }
  log(`${CONTACTS} light peers published in ${((performance.now() - t0) / 1000).toFixed(0)} s`)
  const dataDir = join(ctx.world.root, 'resource-client')
  await mkdir(dataDir, { recursive: true })
  const account = await makeAccount(dataDir, PASSPHRASE)
  const peerId = account.peerId
  account.wipe()
  const client = await HeadlessClient.start({ dataDir, peerId, passphrase: PASSPHRASE, directories: [ctx.world.directoryUrl], joinFile: ctx.world.joinFile })
  try {
    await client.waitFor((e) => (e.type === 'published' ? true : undefined), 120_000, 'published')
    const [tor] = await torChildren(client.pid)
    if (tor === undefined) throw new SessionError('ERR_SESSION_PROTOCOL', 'the headless client has no tor child')
    const window = async (label: string): Promise<string[]> => {
      const c0 = [await cpuSeconds(client.pid), await cpuSeconds(tor)]
      const w0 = performance.now()
      await new Promise<void>((resolve) => setTimeout(resolve, RESOURCE_WINDOW_MS).unref()) // the measurement window itself
      const seconds = (performance.now() - w0) / 1000
      const c1 = [await cpuSeconds(client.pid), await cpuSeconds(tor)]
      const cpu = (i: number): string => `${(((c1[i]! - c0[i]!) / seconds) * 100).toFixed(1)} %`
      return [label, `${((await rssBytes(client.pid)) / 2 ** 20).toFixed(0)} MiB`, `${((await rssBytes(tor)) / 2 ** 20).toFixed(0)} MiB`, cpu(0), cpu(1)]
    }
    const idle = await window('no contacts (idle)')
    const a0 = performance.now()
    for (const p of peers) await client.must({ cmd: 'add', peerId: p.peerId }, 180_000)
    // Online now, from the presence events so far (the last one per contact counts).
    const onlineNow = (): number => {
      const last = new Map<string, string>()
      for (const { event } of client.events) if (event.type === 'presence') last.set(event.peerId, event.presence)
      return peers.filter((p) => last.get(p.peerId) === 'online').length
    }
    const all = await waitUntil(client.subscribe, () => (onlineNow() === CONTACTS ? true : undefined), CONTACTS_ONLINE_TIMEOUT_MS, `${CONTACTS} sessions online`).catch(() => false)
    const reached = onlineNow()
    log(`${reached} of ${CONTACTS} contacts online ${all ? '' : 'at the deadline '}after ${((performance.now() - a0) / 1000).toFixed(0)} s`)
    if (!all) notes.push(`${CONTACTS} contacts: only ${reached} were online ${CONTACTS_ONLINE_TIMEOUT_MS / 1000} s after the adds (dials timing out under the burst; see the client log); resources measured with those`)
    const busy = await window(`${CONTACTS} contacts (${reached} online)`)
    const sessions = peers.reduce((n, p) => n + p.sessions, 0)
    const stillOnline = (await client.must({ cmd: 'contacts' })).contacts?.filter((c) => c.presence === 'online').length ?? 0
    resourceRows.push(idle, busy)
    if (stillOnline < CONTACTS) {
      // Sessions dropped during the window: the client's own account of it (its log, last lines).
      const lines = (await readFile(join(dataDir, 'client.log'), 'utf8').catch(() => '')).trimEnd().split('\n')
      const ends = lines.filter((l) => /"msg":"(session closed|dial failed|tor [a-z ]+)"/.test(l))
      log(`${CONTACTS - stillOnline} contacts dropped during the window; the client's log: ${lines.length} lines, ${ends.length} about sessions ending or tor, the last 40 of those:`)
      for (const line of ends.slice(-40)) log(`  ${line}`)
    }
    notes.push(
      `${CONTACTS} contacts: ${stillOnline} online at the end of a ${RESOURCE_WINDOW_MS / 1000} s window (${sessions} sessions open on the peer side), ` +
        `heartbeats at the default H = ${DEFAULT_HEARTBEAT_INTERVAL / 1000} s on both ends; peers: ${CONTACTS} light peers on one shared tor in the bench process`,
    )
  } finally {
    await client.stop()
  }
}

const resourceRows: string[][] = []

// ---- main ------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now()
  log('starting the private network and the onion directory')
  const world = await startWorld({ relays: RELAYS, onProgress: (m) => log(m) })
  let host: LightPeerHost | undefined
  let client: P2PMessClient | undefined
  const servers: Server[] = []
  try {
    const echo = await echoServer()
    const sink = await sinkServer()
    servers.push(echo, sink)
    const observed = new Observed()
    const clientDir = join(world.root, 'client')
    const peerTorDir = join(world.root, 'light-peers-tor')
    await mkdir(clientDir, { recursive: true })
    const account = await makeAccount(clientDir, PASSPHRASE)
    const [startedHost, startedClient] = await Promise.all([
      LightPeerHost.start({ dataDir: peerTorDir, network: world.join, directories: [world.directoryUrl], heartbeatIntervalMs: HEARTBEAT_MS }),
      startClient({
        dataDir: clientDir,
        account,
        directories: [world.directoryUrl],
        network: world.join,
        heartbeatIntervalMs: HEARTBEAT_MS,
        logger: observed.logger,
        onEvent: observed.onEvent,
      }),
    ])
    host = startedHost
    client = startedClient
    const ready = observed.events.find((e) => e.value.type === 'tor' && e.value.state === 'ready')?.value
    const socksPort = Number(/socks port (\d+)/.exec(ready?.type === 'tor' ? (ready.detail ?? '') : '')?.[1])
    if (!Number.isInteger(socksPort) || socksPort <= 0) throw new SessionError('ERR_SESSION_PROTOCOL', 'could not learn the client tor SOCKS port')
    const ctx: Ctx = { world, host, client, observed, dialer: createTorDialer({ socksPort }), echoPort: portOf(echo), sinkPort: portOf(sink) }
    log(`ready after ${((performance.now() - started) / 1000).toFixed(0)} s; client ${client.peerId}, tor SOCKS ${socksPort}`)

    // One section failing (a stuck dial, a tor that would not publish) is reported; the others still run.
    const section = async (name: string, run: () => Promise<void>): Promise<void> => {
      if (!SECTIONS.has(name)) return
      try {
        await run()
      } catch (err) {
        failures.push(`${name}: ${describeError(err)}`)
        log(`section ${name} failed: ${describeError(err)}`)
      }
    }
    // Round trip and bulk use the same near peers: each one's onion also serves the echo and sink ports.
    let near: Promise<LightPeer[]> | undefined
    const nearPeers = (): Promise<LightPeer[]> =>
      (near ??= (async () => {
        const ports = [
          { virtualPort: ECHO_PORT, targetPort: ctx.echoPort },
          { virtualPort: SINK_PORT, targetPort: ctx.sinkPort },
        ]
        const peers = await Promise.all(Array.from({ length: RTT_CIRCUITS }, () => ctx.host.addPeer(ports)))
        for (const peer of peers) await connectLightPeer(ctx, peer)
        return peers
      })())
    await section('rtt', async () => roundTrip(ctx, await nearPeers()))
    await section('bulk', async () => bulk(ctx, (await nearPeers())[0]!))
    await section('first', () => firstMessage(ctx))
    await section('dead', () => deadPeer(ctx))
    await section('contacts', () => contacts(ctx))
  } finally {
    await client?.stop().catch((err: unknown) => log(`client stop: ${describeError(err)}`))
    await host?.stop().catch((err: unknown) => log(`light peers stop: ${describeError(err)}`))
    for (const s of servers) s.close()
    await world.stop()
  }

  console.log(`\ne2e bench — node ${process.version}, ${quick ? 'quick' : 'full'} run, ${((performance.now() - started) / 1000).toFixed(0)} s`)
  const table = [['figure', 'ours p50', 'ours p95', 'baseline p50', 'baseline p95', 'ratio', 'goal', 'met']]
  for (const r of rows) {
    const f = (x: number): string => (r.unit === 'ms' ? ms(x) : `${x.toFixed(2)} MB/s`)
    table.push([r.name, f(r.ours.median), f(r.ours.p95), f(r.bare.median), r.bare.n === 1 ? '(H)' : f(r.bare.p95), times(r.ours.median / r.bare.median), r.goal, r.met ? 'yes' : 'NO'])
  }
  if (rows.length > 0) printTable(table)
  if (resourceRows.length > 0) {
    console.log('')
    printTable([['headless client', 'node RSS', 'tor RSS', 'node CPU', 'tor CPU'], ...resourceRows])
  }
  for (const n of notes) console.log(`- ${n}`)
  for (const f of failures) console.log(`- FAILED ${f}`)
  process.exitCode = failures.length === 0 ? 0 : 1
}

// A stuck tor or peer must not hang `npm run bench` forever.
const watchdog = setTimeout(() => {
  log(`watchdog: still running after ${WATCHDOG_MS / 60_000} min; giving up`)
  process.exit(1)
}, WATCHDOG_MS)
watchdog.unref()
await main()
