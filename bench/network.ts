/**
 * `npm run bench:network [-- --runs N]`: for each run, a fresh private network (new directory and ports;
 * only the cached node keys are reused) and two client tors, measuring
 *   - time to a formed network, and each client's time to ready (Bootstrapped 100% + full consensus),
 *   - an onion service: ADD_ONION → descriptor uploaded (HS_DESC UPLOADED) → first successful connect,
 *   - a second stream to the same onion (reuses the circuit),
 *   - round trips of 32-byte echoes on one stream (median and p95 of 200),
 *   - with --connects N: N more onions, each fresh (every HSDir upload answered first), one connect each (no
 *     retry, 20 s cap), then 20 echoes on it: connect p50/p95/max, failures, and how many circuits had a median
 *     round trip over 50 ms (a circuit that crosses one link twice in the same direction pays a delayed ACK on
 *     each round trip: ~90 ms instead of 8-16 ms).
 * --relays N sets the relays besides the 3 authorities (default: the network's default).
 * Stream latency on this network is bimodal per circuit, so compare figures from the same circuit only; nothing
 * here is a pass/fail threshold.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startNetwork } from '../relay/network.js'
import { describeError } from '../src/errors.js'
import { wipe } from '../src/protocol/bytes.js'
import { onionServiceKeyFromSeed, torOnionKeyBlob } from '../src/protocol/onion.js'
import { createTorDialer, type TorDialer } from '../src/tor/dialer.js'
import { TorProcess } from '../src/tor/process.js'
import { allUploadsAnswered } from './e2e-peers.js'

interface ConnectsResult {
  connectMs: number[]
  failures: number
  circuitRtts: number[]
}

interface RunResult {
  connects: ConnectsResult | undefined
  formedMs: number
  clientMs: number[]
  uploadedMs: number
  reachableMs: number
  attempts: number
  secondStreamMs: number
  rttMedianMs: number
  rttP95Ms: number
}

const ECHOES = 200

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

/** Sends `n` 32-byte messages one at a time, each after the previous echo came back; returns each round trip. */
async function roundTrips(socket: Socket, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const msg = Buffer.alloc(32, i & 0xff)
    const t0 = performance.now()
    await new Promise<void>((resolve, reject) => {
      let got = 0
      const onData = (chunk: Buffer): void => {
        got += chunk.length
        if (got >= msg.length) {
          socket.off('data', onData)
          socket.off('error', reject)
          resolve()
        }
      }
      socket.on('data', onData)
      socket.once('error', reject)
      socket.write(msg)
    })
    out.push(performance.now() - t0)
  }
  return out
}

/** `n` fresh onions on `service`, each connected once from `dialer` once published, then 20 echoes on it. */
async function connects(service: TorProcess, dialer: TorDialer, local: number, n: number): Promise<ConnectsResult> {
  const result: ConnectsResult = { connectMs: [], failures: 0, circuitRtts: [] }
  for (let i = 0; i < n; i++) {
    const seed = new Uint8Array(randomBytes(32))
    const key = onionServiceKeyFromSeed(seed)
    wipe(seed)
    const address = key.address.slice(0, -'.onion'.length)
    const uploaded = allUploadsAnswered(service.controller, address, 60_000)
    await service.controller.addOnion({
      key: { type: 'ed25519-v3', blob: torOnionKeyBlob(key.expandedSecretKey).slice('ED25519-V3:'.length) },
      ports: [{ virtualPort: 80, target: `127.0.0.1:${local}` }],
    })
    wipe(key.expandedSecretKey)
    await uploaded
    const c0 = performance.now()
    try {
      const socket = await dialer.dial(`${address}.onion`, 80, { timeoutMs: 20_000 })
      result.connectMs.push(performance.now() - c0)
      const rtts = (await roundTrips(socket, 20)).sort((x, y) => x - y)
      result.circuitRtts.push(quantile(rtts, 0.5))
      socket.destroy()
    } catch {
      result.failures++
    }
    await service.controller.delOnion(address)
  }
  return result
}

async function oneRun(options: { relays: number | undefined; connects: number }): Promise<RunResult> {
  const t0 = performance.now()
  const network = await startNetwork(options.relays === undefined ? {} : { relays: options.relays })
  const formedMs = performance.now() - t0
  const dirs: string[] = []
  const tors: TorProcess[] = []
  const server = createServer((s) => s.pipe(s))
  try {
    const clientMs = await Promise.all(
      [0, 1].map(async () => {
        const dataDir = await mkdtemp(join(tmpdir(), 'p2pmess-bench-tor-'))
        dirs.push(dataDir)
        const c0 = performance.now()
        tors.push(await TorProcess.start({ dataDir, network: network.join }))
        return performance.now() - c0
      }),
    )
    const [service, visitor] = tors as [TorProcess, TorProcess]
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const local = (server.address() as AddressInfo).port

    await service.controller.setEvents(['HS_DESC'])
    const a0 = performance.now()
    const onion = await service.controller.addOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: `127.0.0.1:${local}` }], flags: ['DiscardPK'] })
    const uploaded = service.controller
      .waitForEvent((e) => (e.type === 'hs_desc' && e.action === 'UPLOADED' && e.address === onion.serviceId ? true : undefined), 60_000, 'descriptor upload')
      .then(() => performance.now() - a0)
    const dialer = createTorDialer({ socksPort: visitor.socksPort })
    let attempts = 1
    const host = `${onion.serviceId}.onion`
    const first = await dialer.dialWithRetry(host, 80, { deadlineMs: 60_000, onRetry: () => attempts++ })
    const reachableMs = performance.now() - a0
    const uploadedMs = await uploaded
    const s0 = performance.now()
    const second = await dialer.dial(host, 80, { timeoutMs: 30_000 })
    const secondStreamMs = performance.now() - s0
    second.destroy()
    const rtts = (await roundTrips(first, ECHOES)).sort((x, y) => x - y)
    first.destroy()
    const more = options.connects > 0 ? await connects(service, dialer, local, options.connects) : undefined
    return { connects: more, formedMs, clientMs, uploadedMs, reachableMs, attempts, secondStreamMs, rttMedianMs: quantile(rtts, 0.5), rttP95Ms: quantile(rtts, 0.95) }
  } finally {
    server.close()
    await Promise.all(tors.map((t) => t.stop()))
    await network.stop()
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
  }
}

const { values } = parseArgs({ options: { runs: { type: 'string', default: '1' }, relays: { type: 'string' }, connects: { type: 'string', default: '0' } } })
const whole = (value: string | undefined, name: string, min: number, max: number): number => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`--${name} must be a whole number from ${min} to ${max}\n`)
    process.exit(2)
  }
  return n
}
const runs = whole(values.runs, 'runs', 1, 100)
const relays = values.relays === undefined ? undefined : whole(values.relays, 'relays', 1, 29)
const connectCount = whole(values.connects, 'connects', 0, 1000)

const s = (ms: number): string => (ms / 1000).toFixed(1).padStart(6)
const m = (ms: number): string => ms.toFixed(1).padStart(7)
process.stdout.write('run  formed(s)  clients(s)     desc up(s)  onion(s) tries  2nd stream(ms)  rtt p50(ms)  rtt p95(ms)\n')
const ok: RunResult[] = []
for (let i = 1; i <= runs; i++) {
  try {
    const r = await oneRun({ relays, connects: connectCount })
    ok.push(r)
    process.stdout.write(
      `${String(i).padStart(3)}  ${s(r.formedMs)}     ${r.clientMs.map(s).join(' ')}  ${s(r.uploadedMs)}    ${s(r.reachableMs)} ${String(r.attempts).padStart(5)}  ${m(r.secondStreamMs)}         ${m(r.rttMedianMs)}      ${m(r.rttP95Ms)}\n`,
    )
    if (r.connects !== undefined) {
      const c = [...r.connects.connectMs].sort((x, y) => x - y)
      const slow = r.connects.circuitRtts.filter((x) => x > 50).length
      process.stdout.write(
        `     ${connectCount} fresh onions: connect p50 ${c.length ? m(quantile(c, 0.5)).trim() : '-'} ms, p95 ${c.length ? m(quantile(c, 0.95)).trim() : '-'} ms, ` +
          `max ${c.length ? m(c.at(-1)!).trim() : '-'} ms, ${r.connects.failures} failed; ${slow} of ${r.connects.circuitRtts.length} circuits with round trips over 50 ms\n`,
      )
    }
  } catch (err) {
    process.stdout.write(`${String(i).padStart(3)}  FAILED: ${describeError(err)}\n`)
  }
}
if (runs > 1 && ok.length > 0) {
  const formed = ok.map((r) => r.formedMs).sort((x, y) => x - y)
  const ready = ok.map((r) => r.formedMs + Math.max(...r.clientMs)).sort((x, y) => x - y)
  process.stdout.write(
    `${ok.length}/${runs} runs succeeded; formed: min ${s(formed[0]!).trim()} s, median ${s(quantile(formed, 0.5)).trim()} s, max ${s(formed.at(-1)!).trim()} s; ` +
      `network + clients ready: median ${s(quantile(ready, 0.5)).trim()} s, max ${s(ready.at(-1)!).trim()} s\n`,
  )
}
process.exitCode = ok.length === runs ? 0 : 1
