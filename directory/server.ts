/**
 * Directory entry point: opens the level store, serves the app on a loopback address, sweeps expired records on
 * an unref'd interval and shuts down cleanly. `startDirectoryServer` is what the CLI and the tests use; running
 * this file directly (`node --import tsx directory/server.ts --db <dir> [--port <n>]`) serves until SIGINT/SIGTERM.
 *
 * For `--onion` mode the caller points a v3 onion service's virtual port 80 at the returned local `port`.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { InvalidArgumentError, describeError } from '../src/errors.js'
import { createDirectoryApp, type DirectoryAppOptions } from './app.js'
import { openLevelStore } from './store.js'

export interface DirectoryServerOptions {
  /** Directory of the level database (created if missing). */
  dbPath: string
  /** TCP port; 0 (default) picks a free one. */
  port?: number
  /** Loopback address to bind: 127.0.0.1 (default) or ::1. */
  host?: string
  /** How often expired records are swept, ms. Default 60 s. */
  sweepIntervalMs?: number
  now?: () => number
  limits?: DirectoryAppOptions['limits']
  bodyLimit?: number
  /** Records kept in the level store's read cache (see openLevelStore); 0 disables it. */
  cacheEntries?: number
  log?: (line: string) => void
}

export interface DirectoryServer {
  /** e.g. http://127.0.0.1:41234 */
  url: string
  host: string
  /** The local port: the target of the onion service's virtual port. */
  port: number
  /** Stops accepting, lets in-flight requests finish (bounded), then closes the store. Idempotent. */
  close(): Promise<void>
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1'])
/** How long close() waits for in-flight requests before cutting their connections. */
const CLOSE_GRACE_MS = 2000

export async function startDirectoryServer(options: DirectoryServerOptions): Promise<DirectoryServer> {
  const host = options.host ?? '127.0.0.1'
  const port = options.port ?? 0
  const sweepIntervalMs = options.sweepIntervalMs ?? 60_000
  if (!LOOPBACK_HOSTS.has(host)) throw new InvalidArgumentError('host must be a loopback address (127.0.0.1 or ::1)')
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError('port must be an integer in 0..65535')
  if (!Number.isInteger(sweepIntervalMs) || sweepIntervalMs < 1) {
    throw new InvalidArgumentError('sweepIntervalMs must be a positive integer')
  }
  const now = options.now ?? Date.now
  const log = options.log ?? (() => {})

  const store = await openLevelStore(options.dbPath, options.cacheEntries === undefined ? {} : { cacheEntries: options.cacheEntries })
  const app = createDirectoryApp({
    store,
    now,
    log,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
    ...(options.bodyLimit === undefined ? {} : { bodyLimit: options.bodyLimit }),
  })
  const server = createServer(app.callback())
  // Slow clients (everyone arrives through tor from 127.0.0.1) may not hold connections open indefinitely.
  server.headersTimeout = 10_000
  server.requestTimeout = 15_000
  // Idle kept-alive streams let a client's next lookup skip a stream setup over tor (src/tor/dialer.ts agent).
  server.keepAliveTimeout = 30_000
  try {
    await listen(server, port, host)
  } catch (cause) {
    await store.close()
    throw cause
  }
  const address = server.address() as AddressInfo

  let sweeping: Promise<void> = Promise.resolve()
  const sweepTimer = setInterval(() => {
    sweeping = store.sweep(now()).then(
      (removed) => {
        if (removed > 0) log(`directory: swept ${removed} expired record(s)`)
      },
      (err: unknown) => log(`directory: sweep failed: ${describeError(err)}`),
    )
  }, sweepIntervalMs)
  sweepTimer.unref()

  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= (async () => {
      clearInterval(sweepTimer)
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS)
      await stopped
      clearTimeout(grace)
      await sweeping
      await store.close()
    })()
    return closing
  }

  const urlHost = host.includes(':') ? `[${host}]` : host
  return { url: `http://${urlHost}:${address.port}`, host, port: address.port, close }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.off('listening', onListening)
      const message = err.code === 'EADDRINUSE' ? `port ${port} on ${host} is already in use` : `cannot listen on ${host}:${port}`
      reject(new InvalidArgumentError(message, { cause: err }))
    }
    const onListening = (): void => {
      server.off('error', onError)
      resolve()
    }
    server.once('error', onError).once('listening', onListening)
    server.listen(port, host)
  })
}

/** Closes `server` on the first SIGINT or SIGTERM, then lets the process exit. */
export function closeOnSignals(server: DirectoryServer, log: (line: string) => void): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal)
    log(`directory: ${signal}, shutting down`)
    server.close().then(
      () => log('directory: stopped'),
      (err: unknown) => {
        log(`directory: shutdown failed: ${describeError(err)}`)
        process.exitCode = 1
      },
    )
  }
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal)
}

function parseArgs(argv: string[]): { dbPath: string; port: number } {
  let dbPath: string | undefined
  let port = 0
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]]
    if (value === undefined) throw new InvalidArgumentError(`${flag} needs a value`)
    if (flag === '--db') dbPath = value
    else if (flag === '--port' && /^\d{1,5}$/.test(value)) port = Number(value)
    else throw new InvalidArgumentError(`unknown or invalid argument ${flag} ${value}`)
  }
  if (dbPath === undefined) throw new InvalidArgumentError('usage: directory/server.ts --db <dir> [--port <n>]')
  return { dbPath, port }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const log = (line: string): void => console.error(line)
  try {
    const server = await startDirectoryServer({ ...parseArgs(process.argv.slice(2)), log })
    closeOnSignals(server, log)
    log(`directory: listening on ${server.url}`)
  } catch (err) {
    log(`directory: ${describeError(err)}`)
    process.exitCode = 1
  }
}
