/**
 * Launching one tor: torrc building, spawn (never through a shell), stdout log parsing, listener ports,
 * exit detection and stop. `TorProcess.start()` gives a client-style tor (control port + SOCKS port) that is
 * ready to use: bootstrapped to 100% and, on a private network, holding a consensus that lists every relay.
 *
 * Every tor started here is owned by this Node process twice over: `__OwningControllerProcess` (tor polls our
 * PID) and TAKEOWNERSHIP on the control connection (tor exits as soon as that connection closes, e.g. when we
 * die). An 'exit' hook also SIGKILLs whatever is still running, so a crash or Ctrl-C leaves no tor behind.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InvalidArgumentError, TorError } from '../errors.js'
import { parseBootstrapPhase, type TorEvent } from './control-protocol.js'
import { TorController } from './controller.js'

/** What a tor needs to join a private network. JSON-serialisable. */
export interface NetworkJoin {
  /** torrc lines: `TestingTorNetwork 1`, one `DirAuthority` per authority, and the other testing options. */
  torrcLines: string[]
  /** Identity fingerprints (40 upper-case hex) of every relay; a client is ready once its consensus lists them all. */
  relays?: string[]
}

export interface TorProcessOptions {
  /** Default: env P2PMESS_TOR_PATH, else 'tor' from PATH. */
  torPath?: string
  /** tor's DataDirectory (created 0700). */
  dataDir: string
  /** undefined = the real Tor network. */
  network?: NetworkJoin
  /** Default 'auto' (tor picks a free port; read back from its log). */
  socksPort?: number | 'auto'
  extraTorrc?: string[]
  /** Default 60 s on a private network, 120 s on the real one. */
  startTimeoutMs?: number
  onBootstrap?: (p: { progress: number; summary: string }) => void
}

export interface TorExit {
  code: number | null
  signal: string | null
}

export type TorLogSeverity = 'debug' | 'info' | 'notice' | 'warn' | 'err'
export interface TorLogLine {
  severity: TorLogSeverity
  message: string
}

const SEVERITIES: ReadonlySet<string> = new Set(['debug', 'info', 'notice', 'warn', 'err'])
const KEEP_WARNINGS = 20
const STOP_GRACE_MS = 5_000

/** One stdout line of `Log notice stdout`: `Nov 25 17:54:11.040 [notice] message`. */
export function parseLogLine(line: string): TorLogLine | undefined {
  const m = /^\w{3} +\d{1,2} [\d:.]+ \[(\w+)\] (.*)$/.exec(line)
  if (m === null || !SEVERITIES.has(m[1]!)) return undefined
  return { severity: m[1] as TorLogSeverity, message: m[2]! }
}

/** `Opened Socks listener connection (ready) on 127.0.0.1:44675` → { kind: 'Socks', port: 44675 }. */
export function parseListenerOpened(message: string): { kind: string; port: number } | undefined {
  const m = /^Opened (\w+) listener connection \(ready\) on [\d.]+:(\d{1,5})$/.exec(message)
  if (m === null) return undefined
  return { kind: m[1]!, port: Number(m[2]) }
}

/** `Could not bind to 127.0.0.1:5000: Address already in use. ...` → 5000. */
export function parsePortInUse(message: string): number | undefined {
  const m = /^Could not bind to [\d.]+:(\d{1,5}): Address already in use/.exec(message)
  return m === null ? undefined : Number(m[1])
}

/** Start-up warnings every test tor prints; they would only crowd out the real reason in error messages. */
const BOILERPLATE_WARNINGS = [
  /^You have used DirAuthority/,
  /^TestingTorNetwork is set/,
  /^You are running Tor as root/,
]

function torrcValue(name: string, value: string): string {
  if (/[\r\n]/.test(value)) throw new InvalidArgumentError(`torrc option ${name}: value must be a single line`)
  return `${name} ${value}`
}

/**
 * tor's `HashedControlPassword` form of `password` (what `tor --hash-password` prints): OpenPGP iterated and
 * salted S2K with SHA-1 (RFC 4880 §3.7.1.3), count byte 96 = 65536 bytes hashed, as `16:` + hex(salt, 96, digest).
 */
export function hashControlPassword(password: string, salt: Uint8Array = randomBytes(8)): string {
  if (typeof password !== 'string' || password.length === 0) throw new InvalidArgumentError('password must be a non-empty string')
  if (!(salt instanceof Uint8Array) || salt.length !== 8) throw new InvalidArgumentError('salt must be 8 bytes')
  const COUNT_BYTE = 96
  const count = (16 + (COUNT_BYTE & 15)) << ((COUNT_BYTE >> 4) + 6)
  const block = Buffer.concat([salt, Buffer.from(password, 'utf8')])
  const sha1 = createHash('sha1')
  let left = count
  while (left > block.length) {
    sha1.update(block)
    left -= block.length
  }
  sha1.update(block.subarray(0, left))
  return '16:' + Buffer.concat([salt, Buffer.from([COUNT_BYTE]), sha1.digest()]).toString('hex').toUpperCase()
}

/**
 * The torrc every tor started here shares: its data dir, a control port guarded by a per-launch password
 * (a cookie file is written only after the listener opens, which would race), logs on stdout.
 */
export function baseTorrc(dataDir: string, ownerPid: number): string[] {
  return [
    torrcValue('DataDirectory', dataDir),
    'ControlPort 127.0.0.1:auto',
    'Log notice stdout',
    'GeoIPFile /dev/null',
    'GeoIPv6File /dev/null',
    `__OwningControllerProcess ${ownerPid}`,
  ]
}

/** torrc of a client tor (`TorProcess.start`). */
export function clientTorrc(options: TorProcessOptions): string[] {
  const socks = options.socksPort ?? 'auto'
  return [
    ...baseTorrc(options.dataDir, process.pid),
    // ExtendedErrors: onion failures come back as 0xF0-0xF7 instead of a generic 0x04 (tor manual, SocksPort).
    `SocksPort 127.0.0.1:${socks} ExtendedErrors`,
    ...(options.network?.torrcLines ?? []),
    ...(options.extraTorrc ?? []),
  ]
}

/** Every tor still running; the 'exit' hook kills them so nothing outlives us. */
const live = new Set<ChildProcess>()
let exitHookInstalled = false
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const c of live) if (c.pid !== undefined) killQuietly(c.pid, 'SIGKILL')
    })
  }
  live.add(child)
  child.once('close', () => live.delete(child))
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // ESRCH: it is already gone, which is what we wanted.
  }
}

export interface LaunchSpec {
  /** Names the tor in errors and progress messages (e.g. 'auth0', 'client'). */
  name: string
  torPath?: string
  dataDir: string
  torrc: string[]
  /** Listener kinds (as tor logs them: 'Control', 'Socks', 'OR', 'Directory') to wait for. 'Control' is implied. */
  listeners?: string[]
  timeoutMs: number
}

export function resolveTorPath(torPath: string | undefined): string {
  const path = torPath ?? process.env['P2PMESS_TOR_PATH'] ?? 'tor'
  if (typeof path !== 'string' || path.length === 0) throw new InvalidArgumentError('torPath must be a non-empty string')
  return path
}

interface TorProcessInit {
  name: string
  child: ChildProcess
  pid: number
  dataDir: string
  ports: ReadonlyMap<string, number>
  controller: TorController
  exited: Promise<TorExit>
  warnings: string[]
}

/**
 * A running tor started by this process. Obtain one with `TorProcess.start()` (client, waits for bootstrap)
 * or `launchTor()` (any role, resolves once its listeners are open and the control port is authenticated).
 */
export class TorProcess {
  readonly name: string
  readonly pid: number
  readonly dataDir: string
  /** Ports of the listeners tor opened, by kind ('Control', 'Socks', 'OR', 'Directory'). */
  readonly ports: ReadonlyMap<string, number>
  readonly controller: TorController
  readonly exited: Promise<TorExit>
  readonly #child: ChildProcess
  readonly #warnings: string[]
  #stopping: Promise<void> | undefined

  private constructor(init: TorProcessInit) {
    this.name = init.name
    this.#child = init.child
    this.pid = init.pid
    this.dataDir = init.dataDir
    this.ports = init.ports
    this.controller = init.controller
    this.exited = init.exited
    this.#warnings = init.warnings
  }

  get socksPort(): number {
    return this.ports.get('Socks') ?? 0
  }

  get controlPort(): number {
    return this.ports.get('Control') ?? 0
  }

  /** Recent `[warn]` / `[err]` lines, oldest first. */
  lastWarnings(): string[] {
    return [...this.#warnings]
  }

  /** SIGTERM, wait, SIGKILL after a grace period. Idempotent; resolves once the process is gone. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const child = this.#child
      let timer: NodeJS.Timeout | undefined
      if (child.exitCode === null && child.signalCode === null) {
        killQuietly(this.pid, 'SIGTERM')
        timer = setTimeout(() => killQuietly(this.pid, 'SIGKILL'), STOP_GRACE_MS)
      }
      await this.exited
      clearTimeout(timer)
      await this.controller.close()
    })()
    return this.#stopping
  }

  /** Starts a client tor and resolves once it is ready to dial (see the module comment). */
  static async start(options: TorProcessOptions): Promise<TorProcess> {
    if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
    if (typeof options.dataDir !== 'string' || options.dataDir.length === 0) {
      throw new InvalidArgumentError('options.dataDir must be a non-empty path')
    }
    const socks = options.socksPort ?? 'auto'
    if (socks !== 'auto' && !(Number.isInteger(socks) && socks > 0 && socks < 65536)) {
      throw new InvalidArgumentError("options.socksPort must be 'auto' or a port number 1-65535")
    }
    if (options.network !== undefined) checkJoin(options.network, 'options.network')
    if (options.extraTorrc !== undefined && !isLines(options.extraTorrc)) {
      throw new InvalidArgumentError('options.extraTorrc must be an array of single-line strings')
    }
    const timeoutMs = options.startTimeoutMs ?? (options.network === undefined ? 120_000 : 60_000)
    checkTimeout(timeoutMs, 'options.startTimeoutMs')
    const deadline = Date.now() + timeoutMs
    const tor = await launchTor({
      name: 'client',
      torPath: options.torPath,
      dataDir: options.dataDir,
      torrc: clientTorrc(options),
      listeners: ['Socks'],
      timeoutMs,
    })
    try {
      await tor.waitForBootstrap(Math.max(1, deadline - Date.now()), options.onBootstrap)
      const relays = options.network?.relays
      if (relays !== undefined) await tor.waitForRelays(relays, Math.max(1, deadline - Date.now()))
      await tor.controller.setEvents([])
      return tor
    } catch (err) {
      await tor.stop()
      throw err
    }
  }

  /** Resolves at `Bootstrapped 100%`, re-checked on each STATUS_CLIENT bootstrap event (control-spec §4.1.10). */
  async waitForBootstrap(timeoutMs: number, onBootstrap?: (p: { progress: number; summary: string }) => void): Promise<void> {
    let last = -1
    await this.#until(
      ['STATUS_CLIENT'],
      (e) => e.type === 'bootstrap',
      async () => {
        const info = await this.controller.getInfo(['status/bootstrap-phase'])
        const phase = parseBootstrapPhase(info.get('status/bootstrap-phase') ?? '')
        if (phase.progress !== last) onBootstrap?.({ progress: phase.progress, summary: phase.summary })
        last = phase.progress
        return phase.progress === 100
      },
      () => `reach Bootstrapped 100% (at ${last}%)`,
      timeoutMs,
    )
  }

  /** The fingerprints in `relays` that this tor's current consensus does not list. */
  async missingRelays(relays: readonly string[]): Promise<string[]> {
    const ns = await this.controller.getInfo(['ns/all'])
    const listed = consensusFingerprints(ns.get('ns/all') ?? '')
    return relays.filter((fp) => !listed.has(fp))
  }

  /** Resolves once this tor's consensus lists every fingerprint in `relays`, re-checked on each NEWCONSENSUS. */
  async waitForRelays(relays: readonly string[], timeoutMs: number): Promise<void> {
    let missing = [...relays]
    await this.#until(
      ['NEWCONSENSUS'],
      (e) => e.type === 'unknown' && e.name === 'NEWCONSENSUS',
      async () => {
        missing = await this.missingRelays(relays)
        return missing.length === 0
      },
      () => `see all ${relays.length} relays in its consensus (missing ${missing.join(', ')})`,
      timeoutMs,
    )
  }

  /**
   * Resolves when `check()` holds, running it once now and again after every event matching `trigger`.
   * Fails with ERR_TOR_START_TIMEOUT after `timeoutMs`, or ERR_TOR_EXITED as soon as tor dies.
   */
  async #until(
    events: string[],
    trigger: (e: TorEvent) => boolean,
    check: () => Promise<boolean>,
    what: () => string,
    timeoutMs: number,
  ): Promise<void> {
    checkTimeout(timeoutMs, 'timeoutMs')
    let wake: () => void = () => {}
    const off = this.controller.onEvent((e) => {
      if (trigger(e)) wake()
    })
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#failure('ERR_TOR_START_TIMEOUT', what(), timeoutMs)), timeoutMs)
    })
    const died = this.exited.then((exit): never => {
      throw exitError(this.name, exit, this.#warnings)
    })
    timedOut.catch(() => {})
    died.catch(() => {})
    try {
      await Promise.race([this.controller.setEvents(events), timedOut, died])
      for (;;) {
        const woke = new Promise<void>((resolve) => (wake = resolve))
        if (await Promise.race([check(), timedOut, died])) return
        await Promise.race([woke, timedOut, died])
      }
    } finally {
      off()
      clearTimeout(timer)
    }
  }

  #failure(code: 'ERR_TOR_START_TIMEOUT' | 'ERR_NETWORK_TIMEOUT', what: string, timeoutMs: number, cause?: unknown): TorError {
    return new TorError(code, `tor ${this.name} (pid ${this.pid}) did not ${what} within ${timeoutMs} ms${warningsSuffix(this.#warnings)}`, {
      cause,
      details: { node: this.name, waitingFor: what, lastWarnings: this.lastWarnings() },
    })
  }

  /** Wraps a tor that `launchTor` has spawned and authenticated; not for general use. */
  static attach(init: TorProcessInit): TorProcess {
    return new TorProcess(init)
  }
}

/** `ns/all` (dir-spec §3.4.1 "r" lines): the set of relay identity fingerprints, upper-case hex. */
export function consensusFingerprints(nsAll: string): Set<string> {
  const out = new Set<string>()
  for (const line of nsAll.split('\n')) {
    const m = /^r \S+ ([A-Za-z0-9+/]{27})=? /.exec(line)
    if (m === null) continue
    out.add(base64ToHex(m[1]!))
  }
  return out
}

function base64ToHex(b64: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  let bits = 0
  let acc = 0
  let hex = ''
  for (const ch of b64) {
    acc = (acc << 6) | alphabet.indexOf(ch)
    bits += 6
    if (bits >= 8) {
      bits -= 8
      hex += ((acc >> bits) & 0xff).toString(16).padStart(2, '0')
    }
  }
  return hex.toUpperCase()
}

function isLines(value: unknown): boolean {
  return Array.isArray(value) && value.every((l) => typeof l === 'string' && !/[\r\n]/.test(l))
}

function checkJoin(join: NetworkJoin, name: string): void {
  if (join === null || typeof join !== 'object' || !isLines(join.torrcLines)) {
    throw new InvalidArgumentError(`${name}.torrcLines must be an array of single-line strings`)
  }
  if (join.relays !== undefined && (!Array.isArray(join.relays) || !join.relays.every((r) => typeof r === 'string' && /^[0-9A-F]{40}$/.test(r)))) {
    throw new InvalidArgumentError(`${name}.relays must be an array of 40-hex-digit fingerprints`)
  }
}

function checkTimeout(ms: number, name: string): void {
  if (!Number.isFinite(ms) || ms <= 0) throw new InvalidArgumentError(`${name} must be a positive number of milliseconds`)
}

function warningsSuffix(warnings: readonly string[]): string {
  return warnings.length === 0 ? '' : `; tor's last warnings: ${warnings.slice(-3).join(' | ')}`
}

function exitError(name: string, exit: TorExit, warnings: readonly string[]): TorError {
  const how = exit.signal !== null ? `signal ${exit.signal}` : `code ${exit.code}`
  const port = warnings.map((w) => parsePortInUse(w.replace(/^\[\w+\] /, ''))).find((p) => p !== undefined)
  if (port !== undefined) {
    return new TorError('ERR_TOR_PORT_IN_USE', `tor ${name} could not listen on 127.0.0.1:${port}: address already in use`, {
      details: { node: name, port, exit, lastWarnings: [...warnings] },
    })
  }
  return new TorError('ERR_TOR_EXITED', `tor ${name} exited during start-up (${how})${warningsSuffix(warnings)}`, {
    details: { node: name, exit, lastWarnings: [...warnings] },
  })
}

/**
 * Spawns tor with `torrc` (written to `<dataDir>/torrc`, defaults from /dev/null), waits until its listeners
 * are open, connects and authenticates to its control port (per-launch password) and takes ownership of it.
 */
export async function launchTor(spec: LaunchSpec): Promise<TorProcess> {
  const torPath = resolveTorPath(spec.torPath)
  checkTimeout(spec.timeoutMs, 'timeoutMs')
  const deadline = Date.now() + spec.timeoutMs
  const torrcPath = join(spec.dataDir, 'torrc')
  try {
    await mkdir(spec.dataDir, { recursive: true, mode: 0o700 })
    await chmod(spec.dataDir, 0o700)
    await writeFile(torrcPath, spec.torrc.join('\n') + '\n', { mode: 0o600 })
  } catch (err) {
    // e.g. EACCES (not writable), ENOTDIR (a file in the way), EROFS: name the path, not just the errno.
    const errno: NodeJS.ErrnoException | undefined = err instanceof Error ? err : undefined
    const path = errno?.path ?? spec.dataDir
    throw new TorError('ERR_TOR_CONFIG', `cannot prepare the data directory ${spec.dataDir} of tor ${spec.name}: ${errno?.message ?? String(err)}`, {
      cause: err,
      details: { node: spec.name, path, dataDir: spec.dataDir },
    })
  }
  const password = randomBytes(32).toString('hex')
  const args = ['-f', torrcPath, '--defaults-torrc', '/dev/null', '--HashedControlPassword', hashControlPassword(password)]

  const child = spawn(torPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const warnings: string[] = []
  const ports = new Map<string, number>()
  const wanted = new Set(['Control', ...(spec.listeners ?? [])])
  let listenersOpen: () => void = () => {}
  const opened = new Promise<void>((resolve) => (listenersOpen = resolve))

  let spawnError: TorError | undefined
  const exited = new Promise<TorExit>((resolve) => {
    // 'close', not 'exit': it comes after stdout is drained, so tor's last log lines are already parsed.
    child.once('close', (code, signal) => resolve({ code, signal }))
    child.once('error', (err: NodeJS.ErrnoException) => {
      spawnError =
        err.code === 'ENOENT' || err.code === 'EACCES'
          ? new TorError('ERR_TOR_NOT_FOUND', `tor binary not found or not executable: ${torPath} (install it with \`apt-get install tor\`, or set P2PMESS_TOR_PATH)`, { cause: err })
          : new TorError('ERR_TOR_EXITED', `could not start tor ${spec.name}: ${err.message}`, { cause: err })
      resolve({ code: null, signal: null })
    })
  })
  if (child.pid !== undefined) track(child)

  let pending = ''
  const onLine = (raw: string): void => {
    const line = parseLogLine(raw)
    if (line === undefined) return
    if ((line.severity === 'warn' || line.severity === 'err') && !BOILERPLATE_WARNINGS.some((re) => re.test(line.message))) {
      warnings.push(`[${line.severity}] ${line.message}`)
      if (warnings.length > KEEP_WARNINGS) warnings.shift()
    }
    const listener = parseListenerOpened(line.message)
    if (listener !== undefined) {
      ports.set(listener.kind, listener.port)
      if ([...wanted].every((k) => ports.has(k))) listenersOpen()
    }
  }
  child.stdout?.setEncoding('utf8')
  child.stdout?.on('data', (chunk: string) => {
    pending += chunk
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const l of lines) onLine(l)
  })
  // tor writes to stderr only before logging is configured (e.g. a torrc it cannot parse).
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    for (const l of chunk.split('\n')) if (l.trim() !== '') warnings.push(`[stderr] ${l.trim()}`)
    while (warnings.length > KEEP_WARNINGS) warnings.shift()
  })

  const pid = child.pid
  const fail = async (err: unknown): Promise<never> => {
    if (pid !== undefined) {
      killQuietly(pid, 'SIGKILL')
      await exited
    }
    throw err
  }
  const timeout = (what: string): Promise<never> =>
    new Promise<never>((_, reject) => {
      const timer = setTimeout(
        () => reject(new TorError('ERR_TOR_START_TIMEOUT', `tor ${spec.name} did not ${what} within ${spec.timeoutMs} ms${warningsSuffix(warnings)}`, {
          details: { node: spec.name, waitingFor: what, lastWarnings: [...warnings] },
        })),
        Math.max(1, deadline - Date.now()),
      )
      void exited.then(() => clearTimeout(timer))
      void opened.then(() => clearTimeout(timer))
    })
  const died = exited.then((exit): never => {
    throw spawnError ?? exitError(spec.name, exit, warnings)
  })
  died.catch(() => {})

  try {
    await Promise.race([opened, died, timeout(`open its ${[...wanted].join(' and ')} listeners`)])
  } catch (err) {
    return fail(err)
  }
  if (pid === undefined) return fail(new TorError('ERR_TOR_EXITED', `tor ${spec.name} has no pid`))

  let controller: TorController | undefined
  try {
    controller = await Promise.race([
      TorController.connect({ port: ports.get('Control')! }),
      died,
    ])
    await Promise.race([controller.authenticate({ password }), died])
    await Promise.race([controller.takeOwnership(), died])
  } catch (err) {
    await controller?.close()
    return fail(err)
  }
  return TorProcess.attach({ name: spec.name, child, pid, dataDir: spec.dataDir, ports, controller, exited, warnings })
}
