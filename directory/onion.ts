/**
 * The directory as a v3 onion service: `startDirectoryServer` on 127.0.0.1, plus a supervised tor (the same
 * TorSupervisor the client uses) publishing onion port 80 -> that local port. The onion key is created once and
 * kept in `<dataDir>/onion_key` (mode 0600, tor's control-port form `ED25519-V3:<base64>`), so the directory keeps
 * its address across restarts; tor's own state lives in `<dataDir>/tor`.
 */
import { randomBytes } from 'node:crypto'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InvalidArgumentError, StorageError, describeError } from '../src/errors.js'
import { wipe } from '../src/protocol/bytes.js'
import { onionServiceKeyFromSeed, parseTorOnionKeyBlob, torOnionKeyBlob } from '../src/protocol/onion.js'
import type { NetworkJoin } from '../src/tor/process.js'
import { TorSupervisor, type RestartPolicy, type SupervisorEvent } from '../src/tor/supervisor.js'
import { startDirectoryServer, type DirectoryServer } from './server.js'

export const ONION_KEY_FILE = 'onion_key'
/** Onion port the directory is served on: `http://<address>` with no port. */
export const ONION_VIRTUAL_PORT = 80

export interface OnionDirectoryOptions {
  /** Directory of the level database. */
  dbPath: string
  /** Local port of the HTTP server on 127.0.0.1; 0 (default) picks a free one. */
  port?: number
  /** Holds the onion key and tor's data directory (created 0700). */
  dataDir: string
  /** undefined = the real Tor network. */
  network?: NetworkJoin
  torPath?: string
  /** Human-readable start-up and supervision progress (no secrets). */
  onProgress?: (message: string) => void
  /** Per descriptor publication; default 60 s. */
  publishTimeoutMs?: number
  restart?: Partial<RestartPolicy>
  log?: (line: string) => void
}

export interface OnionDirectory {
  /** `<56>.onion` */
  address: string
  /** `http://<56>.onion`: what clients put in their directory list. */
  onionUrl: string
  /** `http://127.0.0.1:<port>`, for local checks. */
  localUrl: string
  supervisor: TorSupervisor
  /** Stops tor, then the HTTP server and its store. Idempotent. */
  close(): Promise<void>
}

/**
 * The directory's onion key (tor's 64-byte expanded secret key), created on first use. Throws StorageError
 * ERR_STORAGE_CORRUPT for a key file that does not hold exactly one valid key, ERR_STORAGE_IO when unreadable.
 */
export async function loadOrCreateOnionKey(dataDir: string): Promise<Uint8Array> {
  if (typeof dataDir !== 'string' || dataDir.length === 0) throw new InvalidArgumentError('dataDir must be a non-empty path')
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const path = join(dataDir, ONION_KEY_FILE)
  const seed = new Uint8Array(randomBytes(32))
  const fresh = onionServiceKeyFromSeed(seed)
  wipe(seed)
  try {
    // 'wx': never overwrite a key that exists (a second instance racing us keeps its key, we read it below).
    await writeFile(path, torOnionKeyBlob(fresh.expandedSecretKey) + '\n', { mode: 0o600, flag: 'wx' })
    return fresh.expandedSecretKey
  } catch (err) {
    wipe(fresh.expandedSecretKey)
    if (!(err instanceof Error && 'code' in err && err.code === 'EEXIST')) {
      throw new StorageError('ERR_STORAGE_IO', `cannot create the onion key file ${path}`, { cause: err })
    }
  }
  let text: string
  try {
    await chmod(path, 0o600)
    text = await readFile(path, 'utf8')
  } catch (cause) {
    throw new StorageError('ERR_STORAGE_IO', `cannot read the onion key file ${path}`, { cause })
  }
  try {
    return parseTorOnionKeyBlob(text.endsWith('\n') ? text.slice(0, -1) : text)
  } catch (cause) {
    throw new StorageError('ERR_STORAGE_CORRUPT', `the onion key file ${path} does not hold a valid ED25519-V3 key`, { cause })
  }
}

function progressLine(e: SupervisorEvent): string {
  switch (e.type) {
    case 'starting':
      return 'tor: starting'
    case 'bootstrap':
      return `tor: bootstrapped ${e.progress}% (${e.summary})`
    case 'ready':
      return `tor: ready (pid ${e.pid}, restarts ${e.restarts})`
    case 'restarting':
      return `tor: restarting, attempt ${e.attempt} in ${e.delayMs} ms: ${describeError(e.reason)}`
    case 'stopped':
      return 'tor: stopped'
    case 'failed':
      return `tor: failed: ${describeError(e.error)}`
  }
}

export async function startOnionDirectory(options: OnionDirectoryOptions): Promise<OnionDirectory> {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
  const { onProgress } = options
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new InvalidArgumentError('options.onProgress must be a function')
  const key = await loadOrCreateOnionKey(options.dataDir)
  let server: DirectoryServer | undefined
  let supervisor: TorSupervisor | undefined
  try {
    server = await startDirectoryServer({
      dbPath: options.dbPath,
      ...(options.port === undefined ? {} : { port: options.port }),
      ...(options.log === undefined ? {} : { log: options.log }),
    })
    onProgress?.(`directory: listening on ${server.url}`)
    supervisor = await TorSupervisor.start({
      dataDir: join(options.dataDir, 'tor'),
      ...(options.network === undefined ? {} : { network: options.network }),
      ...(options.torPath === undefined ? {} : { torPath: options.torPath }),
      ...(options.restart === undefined ? {} : { restart: options.restart }),
      ...(onProgress === undefined ? {} : { onEvent: (e: SupervisorEvent) => onProgress(progressLine(e)) }),
    })
    const { address } = await supervisor.addOnionService({
      expandedSecretKey: key,
      virtualPort: ONION_VIRTUAL_PORT,
      targetPort: server.port,
      ...(options.publishTimeoutMs === undefined ? {} : { timeoutMs: options.publishTimeoutMs }),
    })
    onProgress?.(`directory: published at http://${address}`)
    const [runningTor, runningServer] = [supervisor, server]
    let closing: Promise<void> | undefined
    return {
      address,
      onionUrl: `http://${address}`,
      localUrl: server.url,
      supervisor,
      close: () => (closing ??= closeBoth(runningTor, runningServer)),
    }
  } catch (err) {
    await closeBoth(supervisor, server)
    throw err
  } finally {
    wipe(key) // the supervisor keeps its own copy
  }
}

/** Stops tor first (no new visitors), then the server; both run even if one fails, the first error wins. */
async function closeBoth(supervisor: TorSupervisor | undefined, server: DirectoryServer | undefined): Promise<void> {
  const [tor, http] = [await settle(supervisor?.stop()), await settle(server?.close())]
  if (!tor.ok) throw tor.error
  if (!http.ok) throw http.error
}

async function settle(p: Promise<void> | undefined): Promise<{ ok: true } | { ok: false; error: unknown }> {
  try {
    await p
    return { ok: true }
  } catch (error) {
    return { ok: false, error }
  }
}
