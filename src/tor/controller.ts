/**
 * A small typed client for tor's control port (control-spec.txt). Framing and parsing live in the pure
 * ./control-protocol.ts; this layer owns the socket, the FIFO of commands, timeouts, events and auth.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createConnection, type Socket } from 'node:net'
import { InvalidArgumentError, TorError } from '../errors.js'
import { concatBytes, toHex, wipe } from '../protocol/bytes.js'
import {
  type AddOnionOptions,
  type AddOnionResult,
  type ControlReply,
  type SignalName,
  type TorEvent,
  ReplyReader,
  assertOk,
  buildAddOnion,
  buildAuthChallenge,
  buildAuthenticate,
  buildDelOnion,
  buildGetConf,
  buildGetInfo,
  buildOnionClientAuthAdd,
  buildOnionClientAuthRemove,
  buildSetConf,
  buildSetEvents,
  buildSignal,
  parseAddOnion,
  parseAuthChallenge,
  parseEvent,
  parseGetConf,
  parseGetInfo,
  parseProtocolInfo,
} from './control-protocol.js'

export interface ControllerOptions {
  /** Only loopback is allowed. */
  host?: '127.0.0.1'
  port: number
  /** Per command (and for connecting); default 10 s. */
  timeoutMs?: number
}

export type ControllerAuth = { password: string } | { cookieFile: string } | { auto: true }

// §3.24: the fixed HMAC keys of SAFECOOKIE.
const SAFECOOKIE_SERVER_KEY = 'Tor safe cookie authentication server-to-controller hash'
const SAFECOOKIE_CLIENT_KEY = 'Tor safe cookie authentication controller-to-server hash'
const COOKIE_LENGTH = 32
const MAX_COMMAND_LENGTH = 64 * 1024

interface Job {
  line: string
  resolve: (reply: ControlReply) => void
  reject: (err: unknown) => void
}

function verbOf(line: string): string {
  return line.split(' ', 1)[0] ?? ''
}

function checkTimeout(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 3_600_000) {
    throw new InvalidArgumentError(`${name} must be an integer number of milliseconds (1..3600000)`)
  }
  return value
}

function checkOptions(options: ControllerOptions): { port: number; timeoutMs: number } {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
  if (options.host !== undefined && options.host !== '127.0.0.1') {
    throw new InvalidArgumentError('host must be 127.0.0.1 (the control port is loopback only)')
  }
  const { port } = options
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError('port must be an integer 1-65535')
  }
  return { port, timeoutMs: checkTimeout(options.timeoutMs ?? 10_000, 'timeoutMs') }
}

export class TorController {
  readonly #socket: Socket
  readonly #timeoutMs: number
  readonly #reader = new ReplyReader()
  readonly #queue: Job[] = []
  readonly #listeners = new Set<(e: TorEvent) => void>()
  #inFlight: { job: Job; timer: NodeJS.Timeout } | undefined
  /** Replies still owed to commands that timed out; tor answers in order, so they are dropped as they come. */
  #orphans = 0
  #failure: TorError | undefined
  #socketError: unknown
  readonly closed: Promise<void>

  private constructor(socket: Socket, timeoutMs: number) {
    this.#socket = socket
    this.#timeoutMs = timeoutMs
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => this.#onData(chunk))
    socket.on('error', (err) => {
      this.#socketError = err
    })
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.#fail(
          new TorError('ERR_CONTROL_CLOSED', 'tor control connection closed', this.#socketError === undefined ? {} : { cause: this.#socketError }),
        )
        resolve()
      })
    })
  }

  static async connect(options: ControllerOptions): Promise<TorController> {
    const { port, timeoutMs } = checkOptions(options)
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: '127.0.0.1', port })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new TorError('ERR_CONTROL_TIMEOUT', `could not reach tor's control port 127.0.0.1:${port} within ${timeoutMs} ms`))
      }, timeoutMs)
      const onError = (cause: Error): void => {
        clearTimeout(timer)
        reject(new TorError('ERR_CONTROL_CLOSED', `could not connect to tor's control port 127.0.0.1:${port}`, { cause }))
      }
      socket.once('error', onError)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.off('error', onError)
        resolve(new TorController(socket, timeoutMs))
      })
    })
  }

  // ---- raw commands ------------------------------------------------------------------------------------

  /**
   * Sends one command line (without CRLF) and resolves with its reply. Commands go out one at a time in
   * call order; 4xx/5xx replies reject with ERR_CONTROL_FAILED (status and tor's text in `details`).
   */
  command(line: string): Promise<ControlReply> {
    if (typeof line !== 'string' || line.length === 0 || line.length > MAX_COMMAND_LENGTH || /[\r\n\0]/.test(line)) {
      return Promise.reject(new InvalidArgumentError('command must be one non-empty line without CR, LF or NUL'))
    }
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    return new Promise((resolve, reject) => {
      this.#queue.push({ line, resolve, reject })
      this.#pump()
    })
  }

  #pump(): void {
    if (this.#inFlight !== undefined || this.#failure !== undefined) return
    const job = this.#queue.shift()
    if (job === undefined) return
    const timer = setTimeout(() => {
      this.#inFlight = undefined
      this.#orphans++
      job.reject(new TorError('ERR_CONTROL_TIMEOUT', `tor did not answer ${verbOf(job.line)} within ${this.#timeoutMs} ms`))
      this.#pump()
    }, this.#timeoutMs)
    this.#inFlight = { job, timer }
    this.#socket.write(`${job.line}\r\n`)
  }

  #onData(chunk: string): void {
    let replies: ControlReply[]
    try {
      replies = this.#reader.push(chunk)
    } catch (err) {
      this.#fail(err instanceof TorError ? err : new TorError('ERR_CONTROL_PROTOCOL', 'control reader failed', { cause: err }))
      return
    }
    for (const reply of replies) {
      if (this.#failure !== undefined) return
      if (reply.isEvent) this.#emit(reply)
      else this.#onReply(reply)
    }
  }

  #onReply(reply: ControlReply): void {
    if (this.#orphans > 0) {
      this.#orphans--
      return
    }
    const inFlight = this.#inFlight
    if (inFlight === undefined) {
      this.#fail(new TorError('ERR_CONTROL_PROTOCOL', `unsolicited ${reply.status} reply from tor`))
      return
    }
    clearTimeout(inFlight.timer)
    this.#inFlight = undefined
    try {
      assertOk(reply, verbOf(inFlight.job.line))
      inFlight.job.resolve(reply)
    } catch (err) {
      inFlight.job.reject(err)
    }
    this.#pump()
  }

  #fail(err: TorError): void {
    if (this.#failure !== undefined) return
    this.#failure = err
    const jobs = this.#queue.splice(0)
    if (this.#inFlight !== undefined) {
      clearTimeout(this.#inFlight.timer)
      jobs.unshift(this.#inFlight.job)
      this.#inFlight = undefined
    }
    for (const job of jobs) job.reject(err)
    this.#socket.destroy()
  }

  // ---- events -------------------------------------------------------------------------------------------

  #emit(reply: ControlReply): void {
    let event: TorEvent
    try {
      event = parseEvent(reply)
    } catch {
      // A known event we could not parse is still delivered, untyped, rather than killing the connection.
      const raw = reply.lines.map((l) => l.text).join('\n')
      event = { type: 'unknown', name: raw.split(' ', 1)[0] ?? '', raw }
    }
    for (const listener of [...this.#listeners]) {
      try {
        listener(event)
      } catch {
        // A listener's bug must not break the reader or the other listeners.
      }
    }
  }

  /** Subscribes to every async event; returns the unsubscribe function. */
  onEvent(listener: (e: TorEvent) => void): () => void {
    if (typeof listener !== 'function') throw new InvalidArgumentError('listener must be a function')
    const wrapped = (e: TorEvent): void => listener(e)
    this.#listeners.add(wrapped)
    return () => {
      this.#listeners.delete(wrapped)
    }
  }

  /**
   * Resolves with the first non-undefined value `predicate` returns for an incoming event. Rejects with
   * ERR_CONTROL_TIMEOUT naming `what`, with ERR_CONTROL_CLOSED if the connection ends, or with whatever the
   * predicate throws.
   */
  waitForEvent<T>(predicate: (e: TorEvent) => T | undefined, timeoutMs: number, what: string): Promise<T> {
    if (typeof predicate !== 'function') return Promise.reject(new InvalidArgumentError('predicate must be a function'))
    if (typeof what !== 'string' || what.length === 0) return Promise.reject(new InvalidArgumentError('what must be a non-empty string'))
    try {
      checkTimeout(timeoutMs, 'timeoutMs')
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    return new Promise<T>((resolve, reject) => {
      let settled = false
      const finish = (fn: () => void): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        unsubscribe()
        fn()
      }
      const timer = setTimeout(
        () => finish(() => reject(new TorError('ERR_CONTROL_TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}`))),
        timeoutMs,
      )
      const unsubscribe = this.onEvent((e) => {
        let value: T | undefined
        try {
          value = predicate(e)
        } catch (err) {
          finish(() => reject(err))
          return
        }
        if (value !== undefined) finish(() => resolve(value))
      })
      void this.closed.then(() =>
        finish(() => reject(new TorError('ERR_CONTROL_CLOSED', `control connection closed while waiting for ${what}`, { cause: this.#failure }))),
      )
    })
  }

  async setEvents(names: string[]): Promise<void> {
    await this.command(buildSetEvents(names))
  }

  // ---- authentication (§3.5, §3.21, §3.24) --------------------------------------------------------------

  async authenticate(auth: ControllerAuth): Promise<void> {
    if (auth === null || typeof auth !== 'object') throw new InvalidArgumentError('auth must be an object')
    if ('password' in auth) {
      await this.#authStep(() => this.command(buildAuthenticate({ password: auth.password })))
      return
    }
    if ('cookieFile' in auth) return this.#safeCookie(await this.#readCookie(auth.cookieFile))
    if (!('auto' in auth) || auth.auto !== true) throw new InvalidArgumentError('auth must give password, cookieFile or auto: true')
    const info = await this.#authStep(async () => parseProtocolInfo(await this.command('PROTOCOLINFO 1')))
    if (info.authMethods.includes('NULL')) {
      await this.#authStep(() => this.command(buildAuthenticate({ none: true })))
      return
    }
    if (info.authMethods.includes('SAFECOOKIE') && info.cookieFile !== undefined) {
      return this.#safeCookie(await this.#readCookie(info.cookieFile))
    }
    throw new TorError('ERR_CONTROL_AUTH', `no usable authentication method (tor offers ${info.authMethods.join(',')}); pass a password`)
  }

  async #authStep<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step()
    } catch (cause) {
      if (cause instanceof TorError && cause.code === 'ERR_CONTROL_FAILED') {
        throw new TorError('ERR_CONTROL_AUTH', 'tor refused authentication', { cause, details: cause.details })
      }
      throw cause
    }
  }

  async #readCookie(path: string): Promise<Uint8Array> {
    if (typeof path !== 'string' || path.length === 0) throw new InvalidArgumentError('cookieFile must be a path')
    let cookie: Uint8Array
    try {
      cookie = await readFile(path)
    } catch (cause) {
      throw new TorError('ERR_CONTROL_AUTH', 'could not read tor\'s control auth cookie file', { cause, details: { path } })
    }
    if (cookie.length !== COOKIE_LENGTH) {
      wipe(cookie)
      throw new TorError('ERR_CONTROL_AUTH', `control auth cookie must be ${COOKIE_LENGTH} bytes`, { details: { path } })
    }
    return cookie
  }

  /** SAFECOOKIE (§3.24): proves we know the cookie and checks that tor does too, without sending it. */
  async #safeCookie(cookie: Uint8Array): Promise<void> {
    const clientNonce = new Uint8Array(randomBytes(32))
    let clientHash: Uint8Array | undefined
    try {
      const challenge = await this.#authStep(async () => parseAuthChallenge(await this.command(buildAuthChallenge(toHex(clientNonce)))))
      const message = concatBytes(cookie, clientNonce, challenge.serverNonce)
      const expected = createHmac('sha256', SAFECOOKIE_SERVER_KEY).update(message).digest()
      const ok = timingSafeEqual(expected, challenge.serverHash)
      if (!ok) throw new TorError('ERR_CONTROL_AUTH', "tor's SAFECOOKIE server hash is wrong (wrong cookie file, or not our tor)")
      clientHash = new Uint8Array(createHmac('sha256', SAFECOOKIE_CLIENT_KEY).update(message).digest())
      wipe(message)
      const hex = toHex(clientHash)
      await this.#authStep(() => this.command(buildAuthenticate({ hex })))
    } finally {
      wipe(cookie, clientHash)
    }
  }

  // ---- typed commands -----------------------------------------------------------------------------------

  async getInfo(keys: string[]): Promise<Map<string, string>> {
    const values = parseGetInfo(await this.command(buildGetInfo(keys)))
    for (const k of keys) {
      if (!values.has(k)) throw new TorError('ERR_CONTROL_PROTOCOL', `GETINFO reply lacks ${k}`)
    }
    return values
  }

  async getConf(keys: string[]): Promise<Map<string, string[]>> {
    return parseGetConf(await this.command(buildGetConf(keys)))
  }

  async setConf(entries: Record<string, string>): Promise<void> {
    await this.command(buildSetConf(entries))
  }

  async signal(name: SignalName): Promise<void> {
    await this.command(buildSignal(name))
  }

  /** TAKEOWNERSHIP (§3.23): tor exits when this control connection closes. */
  async takeOwnership(): Promise<void> {
    await this.command('TAKEOWNERSHIP')
  }

  async addOnion(opts: AddOnionOptions): Promise<AddOnionResult> {
    return parseAddOnion(await this.command(buildAddOnion(opts)))
  }

  async delOnion(serviceId: string): Promise<void> {
    await this.command(buildDelOnion(serviceId))
  }

  async onionClientAuthAdd(address: string, x25519PrivBase64: string): Promise<void> {
    await this.command(buildOnionClientAuthAdd(address, x25519PrivBase64))
  }

  async onionClientAuthRemove(address: string): Promise<void> {
    await this.command(buildOnionClientAuthRemove(address))
  }

  /** Closes the connection; pending commands reject with ERR_CONTROL_CLOSED. */
  async close(): Promise<void> {
    this.#socket.destroy()
    await this.closed
  }
}
