/**
 * The world the end-to-end benchmark (bench/e2e.ts) and the fault suite (test/faults.test.ts) run in: a private
 * Tor network on 127.0.0.1, an onion directory on its own tor, accounts made with cheap KDF parameters, and
 * real clients driven as `p2pmess start --headless` child processes over the JSON-lines protocol
 * (docs/HEADLESS.md). Nothing here talks to the real Tor network, and nothing waits on a fixed sleep: every wait is
 * on an event or a condition with a deadline.
 *
 * Also here: /proc readers for the process tree (a client's tor), memory and CPU, and every TCP/UDP socket a
 * process holds with its remote address.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile, readdir, readlink, writeFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startOnionDirectory, type OnionDirectory } from '../directory/onion.js'
import { startNetwork, type PrivateNetwork } from '../relay/network.js'
import type { NetworkJoin } from '../src/tor/process.js'
import type { ClientEvent, ClientIntent, IntentResult } from '../src/client/api.js'
import { InvalidArgumentError, SessionError, TorError } from '../src/errors.js'
import { createAccount, type Account } from '../src/store/account.js'

export const REPO = resolve(fileURLToPath(new URL('..', import.meta.url)))
const CLI = join(REPO, 'src/cli/main.ts')
/** The cheapest scrypt the vault accepts (KDF_BOUNDS.minLogN): accounts here are throwaway. */
export const CHEAP_KDF = { name: 'scrypt', N: 2 ** 10, r: 8, p: 1 } as const

// ---- waiting ----------------------------------------------------------------------------------------------

/** Resolves when `check()` returns a value (re-checked whenever `subscribe` signals), or fails after `timeoutMs`. */
export function waitUntil<T>(
  subscribe: (wake: () => void) => () => void,
  check: () => T | undefined,
  timeoutMs: number,
  what: string,
): Promise<T> {
  return new Promise((resolvePromise, reject) => {
    const first = check()
    if (first !== undefined) return resolvePromise(first)
    const timer = setTimeout(() => {
      off()
      reject(new SessionError('ERR_SESSION_TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    const off = subscribe(() => {
      const value = check()
      if (value === undefined) return
      clearTimeout(timer)
      off()
      resolvePromise(value)
    })
  })
}

// ---- the world: network + onion directory ----------------------------------------------------------------

export interface World {
  root: string
  /** The network's join info. */
  join: NetworkJoin
  /** The network's join info as a file, for `--network`. */
  joinFile: string
  directory: OnionDirectory
  /** `http://<56>.onion` */
  directoryUrl: string
  /** Stops the directory (keeping its database and key) and starts it again: same address, same records. */
  restartDirectory(): Promise<void>
  stopDirectory(): Promise<void>
  startDirectory(): Promise<void>
  stop(): Promise<void>
}

/**
 * Starts the directory on `network` (a running network's join info, e.g. the test run's), or first a private
 * network of its own with `relays` relays besides the 3 authorities (stopped by `stop()`).
 */
export async function startWorld(options: { network?: NetworkJoin; relays?: number; onProgress?: (message: string) => void } = {}): Promise<World> {
  const progress = options.onProgress ?? (() => {})
  const root = await mkdtemp(join(tmpdir(), 'p2pmess-e2e-'))
  let network: PrivateNetwork | undefined
  let directory: OnionDirectory | undefined
  try {
    if (options.network === undefined) {
      network = await startNetwork({ baseDir: root, ...(options.relays === undefined ? {} : { relays: options.relays }), onProgress: (m) => progress(`network: ${m}`) })
    }
    const networkJoin = options.network ?? network!.join
    const joinFile = join(root, 'join.json')
    await writeFile(joinFile, JSON.stringify(networkJoin))
    const own = network
    const openDirectory = (): Promise<OnionDirectory> =>
      startOnionDirectory({ dbPath: join(root, 'directory-db'), dataDir: join(root, 'directory'), network: networkJoin })
    directory = await openDirectory()
    progress(`directory published at ${directory.onionUrl}`)
    let current: OnionDirectory | undefined = directory
    const world: World = {
      root,
      join: networkJoin,
      joinFile,
      get directory(): OnionDirectory {
        if (current === undefined) throw new InvalidArgumentError('the directory is stopped')
        return current
      },
      directoryUrl: directory.onionUrl,
      async stopDirectory() {
        await current?.close()
        current = undefined
      },
      async startDirectory() {
        if (current === undefined) current = await openDirectory()
      },
      async restartDirectory() {
        await world.stopDirectory()
        await world.startDirectory()
      },
      async stop() {
        await current?.close().catch(() => undefined)
        current = undefined
        await own?.stop()
        await rm(root, { recursive: true, force: true })
      },
    }
    return world
  } catch (err) {
    await directory?.close().catch(() => undefined)
    await network?.stop()
    await rm(root, { recursive: true, force: true })
    throw err
  }
}

/** A fresh account in `dataDir` with cheap KDF parameters. The caller wipes it (or keeps its secrets for a test). */
export function makeAccount(dataDir: string, passphrase: string): Promise<Account> {
  return createAccount({ dataDir, passphrase, kdf: { ...CHEAP_KDF } })
}

// ---- a headless client in a child process -----------------------------------------------------------------

export interface TimedEvent {
  at: number
  event: ClientEvent
}

export interface HeadlessOptions {
  dataDir: string
  /** The account's peer ID (the caller made the account). */
  peerId: string
  passphrase: string
  directories: string[]
  joinFile: string
  /** --heartbeat, in seconds. */
  heartbeatSeconds?: number
  /** Extra node flags after `--import tsx`, before the CLI, e.g. ['--import', guardFile]. */
  nodeArgs?: string[]
  env?: Record<string, string>
  /** Until the client answers its first command (tor bootstrap, onion publication, first upload). Default 120 s. */
  readyTimeoutMs?: number
}

type Line = { type: 'result'; ref: number; result: IntentResult } | { type: 'event'; event: ClientEvent }

function parseLine(text: string): Line | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null || !('type' in value)) return undefined
  if (value.type === 'result' && 'ref' in value && typeof value.ref === 'number') {
    const { type: _t, ref, ...rest } = value as { type: string; ref: number } & Record<string, unknown>
    return { type: 'result', ref, result: rest as unknown as IntentResult }
  }
  // An error line carrying a ref answers a command too (a line the client could not parse).
  if (value.type === 'error' && 'ref' in value && typeof value.ref === 'number') {
    const v = value as { ref: number; code?: unknown; message?: unknown }
    return { type: 'result', ref: v.ref, result: { ok: false, code: String(v.code), message: String(v.message) } }
  }
  return { type: 'event', event: value as ClientEvent }
}

/**
 * `p2pmess start --headless` as a child process. Every stdout line is either the result of a command (matched by
 * `ref`) or an event, recorded with the time it was read. stderr is kept (bounded) for error messages.
 */
export class HeadlessClient {
  readonly child: ChildProcess
  readonly events: TimedEvent[] = []
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly peerId: string
  #stderr = ''
  #buffer = ''
  #nextRef = 1
  readonly #pending = new Map<number, (r: IntentResult) => void>()
  readonly #wakers = new Set<() => void>()
  #gone = false

  private constructor(child: ChildProcess, peerId: string) {
    this.child = child
    this.peerId = peerId
    this.exited = new Promise((resolvePromise) => child.once('exit', (code, signal) => resolvePromise({ code, signal })))
    void this.exited.then(() => {
      this.#gone = true
      for (const [, answer] of this.#pending) answer({ ok: false, code: 'ERR_SESSION_CLOSED', message: 'the client process exited' })
      this.#pending.clear()
      this.#wake()
    })
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => this.#onData(chunk))
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-8000)
    })
    child.stdin!.on('error', () => {})
  }

  get pid(): number {
    return this.child.pid ?? 0
  }

  get alive(): boolean {
    return !this.#gone
  }

  stderr(): string {
    return this.#stderr
  }

  /** Starts the client and resolves once it answers commands (its onion service is published by then). */
  static async start(options: HeadlessOptions): Promise<HeadlessClient> {
    const args = [
      '--import',
      'tsx',
      ...(options.nodeArgs ?? []),
      CLI,
      'start',
      '--headless',
      '--data-dir',
      options.dataDir,
      '--network',
      options.joinFile,
      ...options.directories.flatMap((d) => ['--directory', d]),
      ...(options.heartbeatSeconds === undefined ? [] : ['--heartbeat', String(options.heartbeatSeconds)]),
    ]
    const child = spawn(process.execPath, args, {
      cwd: REPO,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env, P2PMESS_PASSPHRASE: options.passphrase },
    })
    const client = new HeadlessClient(child, options.peerId)
    // Commands are read once the client is up (start.ts subscribes to events only then, so 'ready' itself is
    // never printed): the first command's result is the readiness signal.
    const result = await client.command({ cmd: 'contacts' }, options.readyTimeoutMs ?? 120_000)
    if (!result.ok) {
      client.child.kill('SIGKILL')
      await client.exited
      throw new TorError('ERR_TOR_START_TIMEOUT', `headless client did not come up: ${result.code} ${result.message}; stderr: ${client.stderr().slice(-600)}`)
    }
    return client
  }

  #onData(chunk: string): void {
    this.#buffer += chunk
    let nl: number
    while ((nl = this.#buffer.indexOf('\n')) >= 0) {
      const text = this.#buffer.slice(0, nl)
      this.#buffer = this.#buffer.slice(nl + 1)
      const line = parseLine(text)
      if (line === undefined) continue
      if (line.type === 'result') {
        this.#pending.get(line.ref)?.(line.result)
        this.#pending.delete(line.ref)
      } else {
        this.events.push({ at: performance.now(), event: line.event })
      }
    }
    this.#wake()
  }

  #wake(): void {
    for (const w of [...this.#wakers]) w()
  }

  /** Subscribes to "something arrived" (a line, or the process exit). */
  subscribe = (wake: () => void): (() => void) => {
    this.#wakers.add(wake)
    return () => this.#wakers.delete(wake)
  }

  /** Sends one command line and resolves with its result. */
  command(intent: ClientIntent, timeoutMs = 60_000): Promise<IntentResult> {
    if (this.#gone) return Promise.resolve({ ok: false, code: 'ERR_SESSION_CLOSED', message: 'the client process exited' })
    const ref = this.#nextRef++
    return new Promise((resolvePromise) => {
      const timer = setTimeout(() => {
        this.#pending.delete(ref)
        resolvePromise({ ok: false, code: 'ERR_SESSION_TIMEOUT', message: `no result for ${intent.cmd} within ${timeoutMs} ms` })
      }, timeoutMs)
      this.#pending.set(ref, (r) => {
        clearTimeout(timer)
        resolvePromise(r)
      })
      this.child.stdin!.write(JSON.stringify({ ...intent, ref }) + '\n')
    })
  }

  /** Like command(), but a refused intent throws. */
  async must(intent: ClientIntent, timeoutMs?: number): Promise<Extract<IntentResult, { ok: true }>> {
    const result = await this.command(intent, timeoutMs)
    if (!result.ok) throw new SessionError('ERR_SESSION_PROTOCOL', `${intent.cmd} failed: ${result.code} ${result.message}`)
    return result
  }

  /** The first event from index `from` on for which `pick` returns a value. Fails early if the process exits. */
  waitFor<T>(pick: (e: ClientEvent) => T | undefined, timeoutMs: number, what: string, from = 0): Promise<T> {
    let scanned = from
    return waitUntil(
      this.subscribe,
      () => {
        for (; scanned < this.events.length; scanned++) {
          const hit = pick(this.events[scanned]!.event)
          if (hit !== undefined) return hit
        }
        if (this.#gone) throw new SessionError('ERR_SESSION_CLOSED', `client exited while waiting for ${what}; stderr: ${this.#stderr.slice(-600)}`)
        return undefined
      },
      timeoutMs,
      what,
    )
  }

  /** Like waitFor, also giving the event's arrival time (performance.now of this process). */
  waitForTimed<T>(pick: (e: ClientEvent) => T | undefined, timeoutMs: number, what: string, from = 0): Promise<{ value: T; at: number }> {
    let scanned = from
    return waitUntil(
      this.subscribe,
      () => {
        for (; scanned < this.events.length; scanned++) {
          const entry = this.events[scanned]!
          const hit = pick(entry.event)
          if (hit !== undefined) return { value: hit, at: entry.at }
        }
        if (this.#gone) throw new SessionError('ERR_SESSION_CLOSED', `client exited while waiting for ${what}`)
        return undefined
      },
      timeoutMs,
      what,
    )
  }

  /** `quit`, then the process exit; SIGKILL if it does not exit within `timeoutMs`. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (this.#gone) return
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs)
    void this.command({ cmd: 'quit' }, timeoutMs)
    this.child.stdin!.end()
    await this.exited
    clearTimeout(timer)
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child.kill(signal)
  }
}

/** Events matching presence `presence` for `peerId`. */
export function presenceIs(peerId: string, presence: string): (e: ClientEvent) => true | undefined {
  return (e) => (e.type === 'presence' && e.peerId === peerId && e.presence === presence ? true : undefined)
}

// ---- /proc ------------------------------------------------------------------------------------------------

/** Direct children of `pid` (all its threads'). */
export async function childPids(pid: number): Promise<number[]> {
  const out: number[] = []
  for (const task of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    const text = await readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')
    for (const p of text.trim().split(/\s+/)) if (p !== '') out.push(Number(p))
  }
  return out
}

/** The `tor` processes among the children of `pid`. */
export async function torChildren(pid: number): Promise<number[]> {
  const out: number[] = []
  for (const child of await childPids(pid)) {
    const comm = await readFile(`/proc/${child}/comm`, 'utf8').catch(() => '')
    if (comm.trim() === 'tor') out.push(child)
  }
  return out
}

/** Resident set size in bytes (VmRSS). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
  if (kb === undefined) throw new InvalidArgumentError(`no VmRSS for pid ${pid}`)
  return Number(kb) * 1024
}

/** User + system CPU time of `pid` in seconds (utime + stime, clock ticks of 1/100 s on Linux). */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // Fields after the ")" that ends comm: state is field 3; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

export interface SocketInfo {
  proto: 'tcp' | 'tcp6' | 'udp' | 'udp6'
  local: string
  remote: string
  /** The remote address alone, e.g. '127.0.0.1', '0.0.0.0', '::'. */
  remoteHost: string
  listening: boolean
}

function ipv4(hex: string): string {
  const n = Number.parseInt(hex, 16)
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.')
}

/** /proc/net/tcp6 addresses: four little-endian 32-bit words. A v4-mapped address is shown as IPv4. */
function ipv6(hex: string): string {
  const words = [0, 1, 2, 3].map((i) => hex.slice(i * 8, i * 8 + 8))
  const bytes = words.flatMap((w) => [w.slice(6, 8), w.slice(4, 6), w.slice(2, 4), w.slice(0, 2)].map((b) => Number.parseInt(b, 16)))
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return bytes.slice(12).join('.')
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16))
  const text = groups.join(':')
  return text === '0:0:0:0:0:0:0:0' ? '::' : text === '0:0:0:0:0:0:0:1' ? '::1' : text
}

/** Every TCP/UDP socket `pid` holds (matched by inode from /proc/<pid>/fd to /proc/<pid>/net/*). */
export async function socketsOf(pid: number): Promise<SocketInfo[]> {
  const inodes = new Set<string>()
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [])) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const m = /^socket:\[(\d+)\]$/.exec(link)
    if (m !== null) inodes.add(m[1]!)
  }
  const out: SocketInfo[] = []
  for (const proto of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    const table = await readFile(`/proc/${pid}/net/${proto}`, 'utf8').catch(() => '')
    for (const line of table.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 10 || !inodes.has(f[9]!)) continue
      const [lh, lp] = f[1]!.split(':') as [string, string]
      const [rh, rp] = f[2]!.split(':') as [string, string]
      const host = proto.endsWith('6') ? ipv6 : ipv4
      const remoteHost = host(rh)
      out.push({
        proto,
        local: `${host(lh)}:${Number.parseInt(lp, 16)}`,
        remote: `${remoteHost}:${Number.parseInt(rp, 16)}`,
        remoteHost,
        // TCP state 0A is LISTEN; an unconnected UDP socket has remote 0.0.0.0:0.
        listening: (proto.startsWith('tcp') && f[3] === '0A') || (proto.startsWith('udp') && Number.parseInt(rp, 16) === 0),
      })
    }
  }
  return out
}

/** Loopback or unspecified (a listener's remote side). */
export function isLoopbackOrUnspecified(host: string): boolean {
  return host.startsWith('127.') || host === '::1' || host === '0.0.0.0' || host === '::'
}
