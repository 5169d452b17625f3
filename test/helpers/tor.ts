/**
 * Test helpers for everything that crosses tor: the private network of this test run, client tors joined to
 * it, and a SOCKS dial that retries while an onion descriptor is not yet fetchable.
 *
 * `npm test` (test/run.ts) starts ONE network and passes its join info in env P2PMESS_TEST_NETWORK (a JSON
 * file); `npx ava test/x.test.ts` alone gets a network started for that test file, stopped when it exits.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { SocksClient } from 'socks'
import { startNetwork, type PrivateNetwork } from '../../relay/network.js'
import { InvalidArgumentError, SocksError } from '../../src/errors.js'
import { TorProcess, type NetworkJoin, type TorProcessOptions } from '../../src/tor/process.js'

/** Names the join file of the run's shared network (set by test/run.ts). */
export const NETWORK_ENV = 'P2PMESS_TEST_NETWORK'

let shared: Promise<NetworkJoin> | undefined
/** The network this test file started itself (only when run without test/run.ts). */
let own: PrivateNetwork | undefined

test.after.always('stop the private network this test file started', async () => {
  await own?.stop()
})

function parseJoin(text: string, path: string): NetworkJoin {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (cause) {
    throw new InvalidArgumentError(`${path} is not JSON`, { cause })
  }
  if (value === null || typeof value !== 'object' || !('torrcLines' in value) || !Array.isArray(value.torrcLines)) {
    throw new InvalidArgumentError(`${path} is not a network join file`)
  }
  const torrcLines = value.torrcLines.filter((l): l is string => typeof l === 'string')
  const relays = 'relays' in value && Array.isArray(value.relays) ? value.relays.filter((r): r is string => typeof r === 'string') : undefined
  return relays === undefined ? { torrcLines } : { torrcLines, relays }
}

/** The private network of this run: from $P2PMESS_TEST_NETWORK, else one started for this test file. */
export function testNetwork(): Promise<NetworkJoin> {
  shared ??= (async () => {
    const path = process.env[NETWORK_ENV]
    if (path !== undefined && path !== '') return parseJoin(await readFile(path, 'utf8'), path)
    // No shared network: start one for this test file; the after.always hook above stops it (and if the
    // worker dies first, the exit hooks of src/tor/process.ts and relay/network.ts clean up).
    own = await startNetwork()
    // ava stops a timed-out worker with SIGTERM, which skips 'exit' hooks unless we exit ourselves.
    process.once('SIGTERM', () => process.exit(143))
    return own.join
  })()
  return shared
}

/** A client tor joined to the test network, stopped (and its data dir removed) when the test ends. */
export async function startTestTor(t: ExecutionContext, options: Partial<TorProcessOptions> = {}): Promise<TorProcess> {
  const network = await testNetwork()
  const dataDir = await mkdtemp(join(tmpdir(), 'p2pmess-tor-'))
  let tor: TorProcess | undefined
  t.teardown(async () => {
    await tor?.stop()
    await rm(dataDir, { recursive: true, force: true })
  })
  tor = await TorProcess.start({ network, startTimeoutMs: 60_000, ...options, dataDir })
  return tor
}

/** tor's extended SOCKS5 replies that clear by themselves (descriptor not yet published / intro or rend timing). */
const RETRYABLE_REPLIES: ReadonlySet<number> = new Set([0xf0, 0xf2, 0xf7])

/**
 * SOCKS5 CONNECT to `host:port` through tor, retrying once a second on 0xF0/0xF2/0xF7 until `deadlineMs`.
 * The `socks` package drops tor's extended reply byte, so we read it off the raw stream (RFC 1928 §6).
 */
export async function connectThroughTor(
  socksPort: number,
  host: string,
  port: number,
  deadlineMs: number,
): Promise<{ socket: Socket; attempts: number; replies: number[] }> {
  const end = Date.now() + deadlineMs
  const replies: number[] = []
  for (let attempt = 1; ; attempt++) {
    const raw = connect({ host: '127.0.0.1', port: socksPort })
    let seen = Buffer.alloc(0)
    const sniff = (chunk: Buffer): void => {
      seen = Buffer.concat([seen, chunk])
    }
    raw.on('data', sniff)
    try {
      const { socket } = await SocksClient.createConnection({
        proxy: { host: '127.0.0.1', port: socksPort, type: 5 },
        command: 'connect',
        destination: { host, port },
        existing_socket: raw,
        timeout: Math.max(1_000, end - Date.now()),
      })
      raw.off('data', sniff)
      return { socket, attempts: attempt, replies }
    } catch (err) {
      raw.destroy()
      // Method selection reply: 2 bytes; then VER REP RSV ATYP ...
      const reply = seen.length >= 4 ? seen[3]! : undefined
      if (reply !== undefined) replies.push(reply)
      if (reply === undefined || !RETRYABLE_REPLIES.has(reply) || Date.now() + 1_000 > end) {
        throw new SocksError('ERR_CONNECT_TIMEOUT', `could not connect to ${host}:${port} through tor after ${attempt} attempts (replies: ${replies.map((r) => '0x' + r.toString(16)).join(', ')})`, { cause: err })
      }
      await new Promise((resolve) => setTimeout(resolve, 1_000))
    }
  }
}
