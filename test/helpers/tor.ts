/**
 * Test helpers for everything that crosses tor: the private network of this test run, client tors joined to
 * it (for one test or for the whole test file), and the file-wide clean-up they share. Dial through tor with
 * the product dialer (`createTorDialer(...).dialWithRetry`).
 *
 * `npm test` (test/run.ts) starts ONE network and passes its join info in env P2PMESS_TEST_NETWORK (a JSON
 * file); `npx ava test/x.test.ts` alone gets a network started for that test file, stopped when it exits.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { startNetwork, type PrivateNetwork } from '../../relay/network.js'
import { InvalidArgumentError } from '../../src/errors.js'
import { TorProcess, type NetworkJoin, type TorProcessOptions } from '../../src/tor/process.js'

/** Names the join file of the run's shared network (set by test/run.ts). */
export const NETWORK_ENV = 'P2PMESS_TEST_NETWORK'

let shared: Promise<NetworkJoin> | undefined
/** The network this test file started itself (only when run without test/run.ts). */
let own: PrivateNetwork | undefined

/** What `atFileEnd` registered, run last first. */
const fileCleanups: Array<() => Promise<void> | void> = []

test.after.always('file clean-up, then stop the private network this test file started', async () => {
  let failure: unknown
  for (const fn of fileCleanups.splice(0).reverse()) {
    try {
      await fn()
    } catch (err) {
      failure ??= err
    }
  }
  await own?.stop()
  if (failure !== undefined) throw failure
})

/** Runs `fn` once every test of this file has finished (last registered first), before the network stops. */
export function atFileEnd(fn: () => Promise<void> | void): void {
  fileCleanups.push(fn)
}

/** A fresh temporary directory, removed when this test file ends. */
export async function fileTempDir(prefix = 'p2pmess-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  atFileEnd(() => rm(dir, { recursive: true, force: true }))
  return dir
}

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

/** A client tor joined to the test network for the whole test file: stopped, and its data dir removed, when the file ends. */
export async function startFileTor(options: Partial<TorProcessOptions> = {}): Promise<TorProcess> {
  const network = await testNetwork()
  const dataDir = await fileTempDir('p2pmess-tor-')
  const tor = await TorProcess.start({ network, startTimeoutMs: 60_000, ...options, dataDir })
  atFileEnd(() => tor.stop())
  return tor
}

/** Whether a process (e.g. a tor we stopped or killed) is still running. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
