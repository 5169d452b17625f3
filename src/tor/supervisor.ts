/**
 * Keeps one client tor running for the life of the app: starts it (TorProcess.start), notices at once when it
 * dies without being asked to (its process exit), restarts it with bounded exponential backoff, publishes every
 * registered onion service again (same key, so the same address), and reports each step as a typed event.
 *
 * The SOCKS port is pinned after the first start and reused on every restart (tor binds its listeners with
 * SO_REUSEADDR, so the port of a killed tor can be bound again at once). `dialer` is therefore one TorDialer for the
 * supervisor's whole life, and an http.Agent taken from it stays valid across restarts. A restart that cannot
 * bind the port (someone else took it) fails like any other attempt and is retried.
 */
import { InvalidArgumentError, P2PMessError, TorError, describeError, hasCode } from '../errors.js'
import type { Logger } from '../log.js'
import { wipe } from '../protocol/bytes.js'
import { canonicalOnionAddress } from '../protocol/onion.js'
import type { TorController } from './controller.js'
import { createTorDialer, type TorDialer } from './dialer.js'
import {
  checkOnionServiceSpec,
  checkTimeoutMs,
  publishOnionService,
  removeOnionService,
  type OnionServiceSpec,
  type PublishedOnion,
} from './onion-service.js'
import { TorProcess, type NetworkJoin, type TorExit } from './process.js'

export interface RestartPolicy {
  /** Consecutive failed restart attempts before giving up ('failed'). Default 5. */
  maxAttempts: number
  /** Wait before the first attempt; doubled per further attempt. Default 250 ms. */
  baseDelayMs: number
  /** Upper bound of the wait. Default 30 s. */
  maxDelayMs: number
}

export type SupervisorState = 'starting' | 'ready' | 'restarting' | 'stopped' | 'failed'

export type SupervisorEvent =
  | { type: 'starting' }
  | { type: 'bootstrap'; progress: number; summary: string }
  | { type: 'ready'; pid: number; socksPort: number; restarts: number }
  /** Before restart attempt `attempt` (from 1); `reason` is why tor is down: its exit, or the last attempt's error. */
  | { type: 'restarting'; attempt: number; delayMs: number; reason: P2PMessError }
  | { type: 'stopped' }
  | { type: 'failed'; error: P2PMessError }

export type SupervisorListener = (event: SupervisorEvent) => void

export interface SupervisorOptions {
  /** tor's DataDirectory, kept across restarts (a cached consensus makes a restart quick). */
  dataDir: string
  /** undefined = the real Tor network. */
  network?: NetworkJoin
  torPath?: string
  /** SOCKS port of the first start; default 'auto'. Every restart reuses the port the first start got. */
  socksPort?: number | 'auto'
  /** Per start (bootstrap included); TorProcess's default when absent. */
  startTimeoutMs?: number
  logger?: Logger
  /** Subscribed before anything starts, so it sees the first bootstrap progress. */
  onEvent?: SupervisorListener
  restart?: Partial<RestartPolicy>
}

export interface AddOnionServiceOptions extends OnionServiceSpec {
  /** Per publication (also when restored after a restart). Default 60 s. */
  timeoutMs?: number
}

interface Registered {
  readonly expandedSecretKey: Uint8Array
  readonly virtualPort: number
  readonly targetPort: number
  readonly timeoutMs: number
  /** The tor that has it published, if any. */
  publishedOn: TorProcess | undefined
}

interface Resolved {
  dataDir: string
  network: NetworkJoin | undefined
  torPath: string | undefined
  startTimeoutMs: number | undefined
  logger: Logger | undefined
  restart: RestartPolicy
}

const DEFAULT_RESTART: RestartPolicy = { maxAttempts: 5, baseDelayMs: 250, maxDelayMs: 30_000 }
const DEFAULT_PUBLISH_TIMEOUT_MS = 60_000
const MAX_ATTEMPTS = 1000

function checkOptions(options: SupervisorOptions): Resolved {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
  if (typeof options.dataDir !== 'string' || options.dataDir.length === 0) throw new InvalidArgumentError('options.dataDir must be a non-empty path')
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function') throw new InvalidArgumentError('options.onEvent must be a function')
  const r = { ...DEFAULT_RESTART, ...options.restart }
  if (!Number.isInteger(r.maxAttempts) || r.maxAttempts < 1 || r.maxAttempts > MAX_ATTEMPTS) {
    throw new InvalidArgumentError(`options.restart.maxAttempts must be an integer 1-${MAX_ATTEMPTS}`)
  }
  if (!Number.isInteger(r.baseDelayMs) || r.baseDelayMs < 0) throw new InvalidArgumentError('options.restart.baseDelayMs must be an integer ≥ 0')
  if (!Number.isInteger(r.maxDelayMs) || r.maxDelayMs < r.baseDelayMs || r.maxDelayMs > 2 ** 31 - 1) {
    throw new InvalidArgumentError('options.restart.maxDelayMs must be an integer ≥ baseDelayMs')
  }
  return {
    dataDir: options.dataDir,
    network: options.network,
    torPath: options.torPath,
    startTimeoutMs: options.startTimeoutMs,
    logger: options.logger,
    restart: { maxAttempts: r.maxAttempts, baseDelayMs: r.baseDelayMs, maxDelayMs: r.maxDelayMs },
  }
}

function stoppedError(): TorError {
  return new TorError('ERR_TOR_STOPPED', 'tor was stopped')
}

/** Start-up can also fail below tor (e.g. the data dir cannot be written); such errors are wrapped. */
function asTyped(err: unknown): P2PMessError {
  return err instanceof P2PMessError ? err : new TorError('ERR_TOR_EXITED', `could not start tor: ${describeError(err)}`, { cause: err })
}

function unexpectedExit(tor: TorProcess, exit: TorExit): TorError {
  const how = exit.signal !== null ? `signal ${exit.signal}` : `code ${exit.code}`
  const warnings = tor.lastWarnings()
  const told = warnings.length === 0 ? '' : `; tor's last warnings: ${warnings.slice(-3).join(' | ')}`
  return new TorError('ERR_TOR_EXITED', `tor (pid ${tor.pid}) exited unexpectedly (${how})${told}`, {
    details: { pid: tor.pid, exit, lastWarnings: warnings },
  })
}

export class TorSupervisor {
  readonly #options: Resolved
  readonly #listeners = new Set<SupervisorListener>()
  /** Canonical address -> what it takes to publish it again. Keys are our copies, wiped on removal and stop. */
  readonly #services = new Map<string, Registered>()
  readonly #waiters = new Set<{ resolve: (tor: TorProcess) => void; reject: (err: P2PMessError) => void }>()
  #state: SupervisorState = 'starting'
  #tor: TorProcess | undefined
  #socksPort: number | 'auto'
  #dialer: TorDialer | undefined
  #restarts = 0
  #failure: P2PMessError | undefined
  /** The restart loop in progress, if any. */
  #recovering: Promise<void> | undefined
  /** Ends the current backoff wait early (stop()). */
  #wake: (() => void) | undefined
  #stopping: Promise<void> | undefined

  private constructor(options: Resolved, socksPort: number | 'auto') {
    this.#options = options
    this.#socksPort = socksPort
  }

  /** Starts tor and resolves once it is bootstrapped. A failed first start rejects at once (no retries). */
  static async start(options: SupervisorOptions): Promise<TorSupervisor> {
    const resolved = checkOptions(options)
    const supervisor = new TorSupervisor(resolved, options.socksPort ?? 'auto')
    if (options.onEvent !== undefined) supervisor.onEvent(options.onEvent)
    supervisor.#setState({ type: 'starting' })
    try {
      await supervisor.#launch(0)
    } catch (err) {
      const typed = asTyped(err)
      supervisor.#fail(typed)
      throw typed
    }
    return supervisor
  }

  get state(): SupervisorState {
    return this.#state
  }

  /** The SOCKS port (the same across restarts once the first start has picked it). */
  get socksPort(): number {
    return this.#socksPort === 'auto' ? 0 : this.#socksPort
  }

  /** One dialer on the pinned SOCKS port for the supervisor's whole life. */
  get dialer(): TorDialer {
    if (this.#dialer === undefined) throw stoppedError()
    return this.#dialer
  }

  /** The running tor's controller. Throws ERR_TOR_STOPPED while none runs (restarting, failed, stopped). */
  get controller(): TorController {
    return this.#current().controller
  }

  /** The running tor's pid. Throws ERR_TOR_STOPPED while none runs. */
  get pid(): number {
    return this.#current().pid
  }

  /** tor's recent [warn]/[err] lines, oldest first (empty while none runs). */
  lastWarnings(): string[] {
    return this.#tor?.lastWarnings() ?? []
  }

  /** Subscribes to every event; returns the unsubscribe function. */
  onEvent(listener: SupervisorListener): () => void {
    if (typeof listener !== 'function') throw new InvalidArgumentError('listener must be a function')
    const wrapped: SupervisorListener = (e) => listener(e)
    this.#listeners.add(wrapped)
    return () => {
      this.#listeners.delete(wrapped)
    }
  }

  /** Resolves when tor is ready (at once if it is); rejects with the typed error on 'failed' or 'stopped'. */
  async ready(): Promise<void> {
    await this.#whenReady()
  }

  /**
   * Publishes an onion service on the running tor (waiting for a restart in progress) and remembers it, so every
   * restart publishes it again. Resolves with its address once tor reports the descriptor uploaded.
   */
  async addOnionService(options: AddOnionServiceOptions): Promise<PublishedOnion> {
    const spec = checkOnionServiceSpec(options)
    const timeoutMs = checkTimeoutMs(options.timeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS, 'options.timeoutMs')
    const { address } = spec
    if (this.#services.has(address)) throw new InvalidArgumentError(`onion service ${address} is already registered`)
    const entry: Registered = {
      expandedSecretKey: spec.expandedSecretKey.slice(),
      virtualPort: spec.virtualPort,
      targetPort: spec.targetPort,
      timeoutMs,
      publishedOn: undefined,
    }
    this.#services.set(address, entry)
    try {
      for (;;) {
        const tor = await this.#whenReady()
        // A restart that began after registration has published it already.
        if (entry.publishedOn === tor) return { address }
        try {
          await this.#publish(tor, entry)
          return { address }
        } catch (err) {
          if (this.#stopping !== undefined) throw stoppedError()
          if (!hasCode(err, 'ERR_CONTROL_CLOSED')) throw err
          // tor died while publishing: the restart publishes every registered service before it is 'ready'.
          await tor.exited
        }
      }
    } catch (err) {
      if (this.#services.get(address) === entry) this.#services.delete(address)
      wipe(entry.expandedSecretKey)
      throw err
    }
  }

  /**
   * Makes tor forget what it cached about onion services (descriptors, intro-point failures) via SIGNAL NEWNYM,
   * which runs hs_client_purge_state() (and also retires dirty circuits for new streams; open streams go on).
   * For a dial that timed out: after a contact restarts, tor may hold their old descriptor, whose intro points
   * are gone, and each request stalls until tor refetches; purging makes the next attempt fetch the new one.
   * tor rate-limits NEWNYM and defers a too-early one, which is fine here.
   */
  async forgetOnionDescriptors(): Promise<void> {
    await this.controller.signal('NEWNYM')
  }

  /** Stops serving `address` and forgets it (no longer restored after restarts). */
  async removeOnionService(address: string): Promise<void> {
    const canonical = canonicalOnionAddress(address)
    const entry = this.#services.get(canonical)
    if (entry === undefined) throw new InvalidArgumentError(`onion service ${canonical} is not registered`)
    this.#services.delete(canonical)
    wipe(entry.expandedSecretKey)
    const tor = this.#tor
    if (tor !== undefined && entry.publishedOn === tor) await removeOnionService(tor.controller, canonical)
  }

  /** Stops tor and any restart in progress; nothing is left running afterwards. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#wake?.()
      await this.#recovering
      const tor = this.#tor
      this.#tor = undefined
      await tor?.stop()
      this.#forgetServices()
      this.#settleWaiters(stoppedError())
      this.#setState({ type: 'stopped' })
    })()
    return this.#stopping
  }

  // ---- internals --------------------------------------------------------------------------------------

  #current(): TorProcess {
    if (this.#tor === undefined) throw this.#failure ?? new TorError('ERR_TOR_STOPPED', `tor is not running (${this.#state})`)
    return this.#tor
  }

  #emit(event: SupervisorEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event)
      } catch {
        // A listener's bug must not break supervision or the other listeners.
      }
    }
  }

  #setState(event: Extract<SupervisorEvent, { type: SupervisorState }>): void {
    this.#state = event.type
    const log = this.#options.logger
    if (event.type === 'restarting') {
      log?.warn('tor restarting', { attempt: event.attempt, delayMs: event.delayMs, reason: describeError(event.reason) })
    } else if (event.type === 'failed') {
      log?.error('tor failed', { reason: describeError(event.error) })
    } else if (event.type === 'ready') {
      log?.info('tor ready', { pid: event.pid, socksPort: event.socksPort, restarts: event.restarts })
    } else {
      log?.info(`tor ${event.type}`)
    }
    this.#emit(event)
  }

  #whenReady(): Promise<TorProcess> {
    if (this.#stopping !== undefined) return Promise.reject(stoppedError())
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    if (this.#state === 'ready' && this.#tor !== undefined) return Promise.resolve(this.#tor)
    return new Promise((resolve, reject) => this.#waiters.add({ resolve, reject }))
  }

  #settleWaiters(outcome: TorProcess | P2PMessError): void {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const w of waiters) {
      if (outcome instanceof TorProcess) w.resolve(outcome)
      else w.reject(outcome)
    }
  }

  async #publish(tor: TorProcess, entry: Registered): Promise<void> {
    await publishOnionService(tor.controller, {
      expandedSecretKey: entry.expandedSecretKey,
      virtualPort: entry.virtualPort,
      targetPort: entry.targetPort,
      timeoutMs: entry.timeoutMs,
      lastWarnings: () => tor.lastWarnings(),
    })
    entry.publishedOn = tor
  }

  /**
   * One start (`restarts` = how many restarts this one makes): tor bootstrapped, every registered service
   * published, exit watched. Leaves nothing running on failure.
   */
  async #launch(restarts: number): Promise<void> {
    const tor = await TorProcess.start({
      dataDir: this.#options.dataDir,
      socksPort: this.#socksPort,
      ...(this.#options.network === undefined ? {} : { network: this.#options.network }),
      ...(this.#options.torPath === undefined ? {} : { torPath: this.#options.torPath }),
      ...(this.#options.startTimeoutMs === undefined ? {} : { startTimeoutMs: this.#options.startTimeoutMs }),
      onBootstrap: (p) => this.#emit({ type: 'bootstrap', progress: p.progress, summary: p.summary }),
    })
    try {
      if (this.#stopping !== undefined) throw stoppedError()
      const restoring = [...this.#services]
      await Promise.all(restoring.map(([, entry]) => this.#publish(tor, entry)))
      // Services removed while they were being restored must not stay served.
      for (const [address, entry] of restoring) {
        if (this.#services.get(address) !== entry) await removeOnionService(tor.controller, address)
      }
      if (this.#stopping !== undefined) throw stoppedError()
    } catch (err) {
      await tor.stop()
      throw err
    }
    this.#tor = tor
    this.#restarts = restarts
    this.#socksPort = tor.socksPort
    this.#dialer ??= createTorDialer({ socksPort: tor.socksPort })
    void tor.exited.then((exit) => this.#onExit(tor, exit))
    this.#setState({ type: 'ready', pid: tor.pid, socksPort: tor.socksPort, restarts: this.#restarts })
    this.#settleWaiters(tor)
  }

  #onExit(tor: TorProcess, exit: TorExit): void {
    if (tor !== this.#tor || this.#stopping !== undefined) return
    this.#tor = undefined
    const reason = unexpectedExit(tor, exit)
    this.#recovering = (async () => {
      await tor.stop() // already gone; this closes its control connection
      await this.#recover(reason)
    })()
  }

  async #recover(reason: P2PMessError): Promise<void> {
    const { maxAttempts, baseDelayMs, maxDelayMs } = this.#options.restart
    let last = reason
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const delayMs = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1))
      this.#setState({ type: 'restarting', attempt, delayMs, reason: last })
      await this.#sleep(delayMs)
      if (this.#stopping !== undefined) return
      try {
        await this.#launch(this.#restarts + 1)
        return
      } catch (err) {
        if (this.#stopping !== undefined) return
        last = asTyped(err)
      }
    }
    this.#fail(
      new TorError('ERR_TOR_RESTART_FAILED', `tor could not be restarted after ${maxAttempts} attempt(s): ${describeError(last)}`, {
        cause: last,
        details: { attempts: maxAttempts, lastError: last.code },
      }),
    )
  }

  #fail(error: P2PMessError): void {
    this.#failure = error
    this.#forgetServices()
    this.#setState({ type: 'failed', error })
    this.#settleWaiters(error)
  }

  #forgetServices(): void {
    for (const entry of this.#services.values()) wipe(entry.expandedSecretKey)
    this.#services.clear()
  }

  /** Backoff wait: unref'd (never keeps the process alive), ended early by stop(). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.#wake = undefined
        resolve()
      }
      const timer = setTimeout(done, ms)
      timer.unref()
      this.#wake = done
    })
  }
}
