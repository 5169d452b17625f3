/**
 * THE dialer: every outbound connection of the client goes through tor's SOCKS port from here.
 *
 * - `dial()` opens one SOCKS5 CONNECT (RFC 1928 §4) to a destination given by name (ATYP 0x03), so tor
 *   resolves it — nothing is resolved locally and nothing connects directly.
 * - `dialWithRetry()` repeats `dial()` while the failure is transient (see socks-errors.ts), e.g. a contact whose
 *   onion descriptor is not published yet.
 * - `agent()` is the http.Agent for the directory client; its connections also go through `dial()`.
 *
 * The `socks` package reports a refused CONNECT only as a message ("Socks5 proxy rejected connection - <name>"),
 * and for tor's extended codes 0xF0–0xF7 the name is `undefined`: the REP byte is lost. So the dialer opens the
 * TCP connection to the proxy itself, hands it to `socks` as `existing_socket`, and reads the REP byte off the
 * raw reply stream (method selection: 2 bytes, RFC 1928 §3; then VER REP RSV ATYP…, §6).
 *
 * This module and the tor process/controller (which talk to tor's own loopback ports) are the only modules in
 * src/ that open sockets; test/dialer.test.ts enforces it.
 */
import type * as http from 'node:http'
import * as net from 'node:net'
import * as tls from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { SocksClient } from 'socks'
import { SocksProxyAgent } from 'socks-proxy-agent'
import { InvalidArgumentError, P2PMessError, SocksError } from '../errors.js'
import { isTransientSocksError, socksReplyError } from './socks-errors.js'

export interface TorDialerOptions {
  socksPort: number
  /** Must be a loopback address; default 127.0.0.1. */
  socksHost?: string
}

export interface DialOptions {
  /** Upper bound for the whole SOCKS handshake (tor builds circuits inside it). */
  timeoutMs: number
  signal?: AbortSignal
}

export interface RetryInfo {
  /** The attempt that just failed, from 1. */
  attempt: number
  error: SocksError
  /** How long we wait before the next attempt. */
  delayMs: number
}

export interface DialWithRetryOptions {
  /** Total budget in ms, measured from the call; attempts and waits all fit inside it. */
  deadlineMs: number
  /** Pause between attempts; default 1000. */
  retryIntervalMs?: number
  /**
   * Longest one attempt may take; default 30 000. A SOCKS request can hang inside tor for up to its SocksTimeout
   * (e.g. on a cached descriptor whose intro points died with a restarted service); a fresh request then gets a
   * fresh try, so an attempt that hangs is abandoned and retried while the deadline allows.
   */
  attemptTimeoutMs?: number
  signal?: AbortSignal
  onRetry?: (info: RetryInfo) => void
}

export interface TorDialer {
  readonly socksHost: string
  readonly socksPort: number
  /**
   * One SOCKS5 CONNECT through tor. Resolves with the connected socket (Nagle off), paused until the next
   * macrotask: attach your 'data' and 'error' listeners right after `await`. Rejects with a SocksError (reply codes,
   * ERR_CONNECT_TIMEOUT, ERR_SOCKS_PROXY_UNREACHABLE, ERR_DIAL_ABORTED) or InvalidArgumentError.
   */
  dial(host: string, port: number, options: DialOptions): Promise<net.Socket>
  /** `dial()` again after transient failures until `deadlineMs`; rejects with the last typed error. */
  dialWithRetry(host: string, port: number, options: DialWithRetryOptions): Promise<net.Socket>
  /** The http.Agent (socks5h semantics) whose every connection is a `dial()`; the same instance on each call. */
  agent(): http.Agent
}

const MAX_TIMER_MS = 2 ** 31 - 1
const DEFAULT_AGENT_CONNECT_TIMEOUT_MS = 120_000
/** Default cap on one attempt of dialWithRetry (see DialWithRetryOptions.attemptTimeoutMs). */
const DEFAULT_ATTEMPT_TIMEOUT_MS = 30_000
const torAgents = new WeakSet<object>()

/** True for agents made by a TorDialer: a client of the agent can insist it is not handed a direct one. */
export function isTorAgent(value: unknown): value is http.Agent {
  return typeof value === 'object' && value !== null && torAgents.has(value)
}

export function createTorDialer(options: TorDialerOptions): TorDialer {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
  const socksPort = options.socksPort
  assertPort(socksPort, 'socksPort')
  const socksHost = options.socksHost ?? '127.0.0.1'
  if (!isLoopback(socksHost)) {
    throw new InvalidArgumentError(`socksHost must be a loopback address (127.0.0.0/8 or ::1), got ${JSON.stringify(socksHost)}`)
  }
  const where = `${socksHost.includes(':') ? `[${socksHost}]` : socksHost}:${socksPort}`

  async function dial(host: string, port: number, dialOptions: DialOptions): Promise<net.Socket> {
    assertHost(host)
    assertPort(port, 'port')
    if (typeof dialOptions !== 'object' || dialOptions === null) throw new InvalidArgumentError('options must be an object')
    const { timeoutMs, signal } = dialOptions
    assertDuration(timeoutMs, 'timeoutMs')
    assertSignal(signal)
    if (signal?.aborted) throw abortedError(signal)

    return new Promise<net.Socket>((resolve, reject) => {
      const details = { host, port, proxy: where }
      const tap = new ReplyTap()
      let settled = false
      let connected = false
      const socket = net.connect({ host: socksHost, port: socksPort })

      const settle = (err: P2PMessError | undefined): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        socket.removeListener('data', tap.onData)
        socket.removeListener('error', onSocketError)
        if (err === undefined) {
          // Session frames are small and latency-bound: no Nagle coalescing behind a delayed ACK (the listener
          // side sets the same).
          socket.setNoDelay(true)
          resolve(socket)
        } else {
          socket.destroy()
          reject(err)
        }
      }
      const onAbort = (): void => settle(abortedError(signal))
      const onSocketError = (cause: Error): void => {
        // Errors after 'connect' reach `socks` too and come back through its rejection, with the reply bytes.
        if (!connected) {
          settle(new SocksError('ERR_SOCKS_PROXY_UNREACHABLE', `Cannot reach tor's SOCKS port at ${where} — is tor running?`, { cause, details }))
        }
      }
      const timer = setTimeout(() => {
        settle(new SocksError('ERR_CONNECT_TIMEOUT', `Connecting to ${host}:${port} through tor took longer than ${timeoutMs} ms.`, { details }))
      }, timeoutMs)

      signal?.addEventListener('abort', onAbort, { once: true })
      socket.on('error', onSocketError)
      socket.once('connect', () => {
        if (settled) return
        connected = true
        // Registered before `socks` attaches its own listener (synchronously, below), so no byte is missed.
        socket.on('data', tap.onData)
        SocksClient.createConnection({
          proxy: { host: socksHost, port: socksPort, type: 5 },
          destination: { host, port },
          command: 'connect',
          existing_socket: socket,
          timeout: timeoutMs,
        }).then(
          () => settle(undefined),
          (cause: unknown) => settle(handshakeError(tap, cause, where, timeoutMs, details)),
        )
      })
    })
  }

  async function dialWithRetry(host: string, port: number, retryOptions: DialWithRetryOptions): Promise<net.Socket> {
    if (typeof retryOptions !== 'object' || retryOptions === null) throw new InvalidArgumentError('options must be an object')
    const { deadlineMs, retryIntervalMs = 1000, attemptTimeoutMs = DEFAULT_ATTEMPT_TIMEOUT_MS, signal, onRetry } = retryOptions
    assertDuration(deadlineMs, 'deadlineMs')
    assertDuration(retryIntervalMs, 'retryIntervalMs')
    assertDuration(attemptTimeoutMs, 'attemptTimeoutMs')
    assertSignal(signal)
    if (onRetry !== undefined && typeof onRetry !== 'function') throw new InvalidArgumentError('onRetry must be a function')
    const end = performance.now() + deadlineMs
    for (let attempt = 1; ; attempt++) {
      try {
        const timeoutMs = Math.max(1, Math.ceil(Math.min(attemptTimeoutMs, end - performance.now())))
        return await dial(host, port, { timeoutMs, signal })
      } catch (err) {
        // Give up when the failure is permanent, or when the next attempt would start at or after the deadline.
        // A timed-out attempt is worth repeating (see attemptTimeoutMs); the deadline check below bounds it.
        const retryable = isTransientSocksError(err) || (err instanceof SocksError && err.code === 'ERR_CONNECT_TIMEOUT')
        if (!retryable) throw err
        if (performance.now() + retryIntervalMs >= end) throw err
        onRetry?.({ attempt, error: err, delayMs: retryIntervalMs })
        try {
          await sleep(retryIntervalMs, undefined, signal === undefined ? undefined : { signal })
        } catch {
          throw abortedError(signal) // the only way this timer fails; the signal's reason becomes the cause
        }
      }
    }
  }

  let torAgent: http.Agent | undefined
  function agent(): http.Agent {
    torAgent ??= createAgent(dial, where)
    return torAgent
  }

  return { socksHost, socksPort, dial, dialWithRetry, agent }
}

type ConnectOptions = Parameters<SocksProxyAgent['connect']>[1]
type Dial = (host: string, port: number, options: DialOptions) => Promise<net.Socket>

/**
 * socks-proxy-agent gives the http.Agent plumbing (pooling, https endpoint detection, socks5h URL); its
 * `connect()` is replaced so that the connection is our `dial()` — same typed errors, same single path.
 */
function createAgent(dial: Dial, where: string): http.Agent {
  class TorAgent extends SocksProxyAgent {
    override async connect(req: http.ClientRequest, opts: ConnectOptions): Promise<net.Socket> {
      const host = opts.host
      if (typeof host !== 'string') throw new InvalidArgumentError('the request has no host')
      const controller = new AbortController()
      const onClose = (): void => controller.abort()
      req.once('close', onClose)
      try {
        const port = opts.port === undefined ? (opts.secureEndpoint ? 443 : 80) : Number(opts.port)
        const socket = await dial(host, port, { timeoutMs: DEFAULT_AGENT_CONNECT_TIMEOUT_MS, signal: controller.signal })
        if (!opts.secureEndpoint) return socket
        // https: TLS runs inside the tor stream, end to end with the destination.
        const { host: _h, port: _p, path: _path, ...tlsOptions } = opts
        return tls.connect({ ...tlsOptions, socket, servername: tlsOptions.servername ?? (net.isIP(host) === 0 ? host : undefined) })
      } finally {
        req.removeListener('close', onClose)
      }
    }
  }
  // Kept-alive streams spare the next request a stream setup (a RELAY_BEGIN round trip on the circuit). Node
  // retires an idle one before the server's announced Keep-Alive timeout; the directory client retries a
  // request whose reused stream the server closed anyway.
  const torAgent = new TorAgent(`socks5h://${where}`, { keepAlive: true })
  torAgents.add(torAgent)
  return torAgent
}

/** Watches the first bytes from the proxy: method selection (2 bytes), then VER REP of the CONNECT reply. */
class ReplyTap {
  private readonly head = new Uint8Array(4)
  private seen = 0
  readonly onData = (chunk: Uint8Array): void => {
    for (let i = 0; i < chunk.length && this.seen < 4; i++) this.head[this.seen++] = chunk[i]!
  }
  /** The proxy accepted our greeting with "no authentication" (RFC 1928 §3). */
  greeted(): boolean {
    return this.seen >= 2 && this.head[0] === 0x05 && this.head[1] === 0x00
  }
  /** The REP byte of the CONNECT reply (RFC 1928 §6), once seen. */
  reply(): number | undefined {
    return this.greeted() && this.seen >= 4 && this.head[2] === 0x05 ? this.head[3] : undefined
  }
}

function handshakeError(
  tap: ReplyTap,
  cause: unknown,
  where: string,
  timeoutMs: number,
  details: Readonly<Record<string, unknown>>,
): SocksError {
  const reply = tap.reply()
  if (reply !== undefined && reply !== 0x00) return socksReplyError(reply, details)
  const reason = cause instanceof Error ? cause.message : String(cause)
  if (reason === 'Proxy connection timed out') {
    return new SocksError('ERR_CONNECT_TIMEOUT', `Connecting to ${String(details.host)}:${String(details.port)} through tor took longer than ${timeoutMs} ms.`, { cause, details })
  }
  if (!tap.greeted()) {
    return new SocksError('ERR_SOCKS_PROXY_UNREACHABLE', `The service at ${where} did not answer as tor's SOCKS5 port.`, { cause, details: { ...details, reason } })
  }
  return new SocksError('ERR_SOCKS_GENERAL', 'Tor closed the connection before answering the connect request.', { cause, details: { ...details, reason } })
}

function abortedError(signal: AbortSignal | undefined): SocksError {
  return new SocksError('ERR_DIAL_ABORTED', 'The connection attempt was cancelled.', { cause: signal?.reason })
}

function isLoopback(host: unknown): host is string {
  if (host === '::1') return true
  if (typeof host !== 'string') return false
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host)
  return m !== null && m.slice(1).every((octet) => Number(octet) <= 255 && String(Number(octet)) === octet)
}

/**
 * A destination as tor takes it: a DNS name (letters, digits, '-', dots; ≤ 255 bytes, labels ≤ 63, RFC 1035 §2.3.4)
 * or an IP literal. ASCII only — the SOCKS5 DOMAINNAME field is a length-prefixed byte string (RFC 1928 §5).
 */
function assertHost(host: unknown): asserts host is string {
  if (typeof host !== 'string') throw new InvalidArgumentError('host must be a string')
  if (net.isIP(host) !== 0) return
  const ok = host.length > 0 && host.length <= 255 && host.split('.').every((label, i, all) =>
    /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label) || (label === '' && i === all.length - 1 && i > 0))
  if (!ok) throw new InvalidArgumentError(`host must be a DNS name or IP literal, got ${JSON.stringify(host.slice(0, 300))}`)
}

function assertPort(port: unknown, name: string): asserts port is number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError(`${name} must be an integer 1–65535, got ${String(port)}`)
  }
}

function assertDuration(ms: unknown, name: string): asserts ms is number {
  if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 1 || ms > MAX_TIMER_MS) {
    throw new InvalidArgumentError(`${name} must be an integer number of milliseconds ≥ 1, got ${String(ms)}`)
  }
}

function assertSignal(signal: unknown): asserts signal is AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal')
}
