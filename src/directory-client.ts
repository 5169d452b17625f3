/**
 * The directory client: publishes our signed record to every configured directory and looks peers up, all over
 * tor. Requests are node:http(s) `request()` with the dialer's agent (socks5h semantics: tor resolves names, onion
 * and clearnet alike); the constructor refuses any other agent, so this module cannot open a direct connection.
 *
 * Directories are not trusted: every record fetched is verified (signature, peer-ID derivation, expiry) with
 * `verifyRecord` before use, the newest valid `seq` across directories wins, and a directory cannot roll a
 * cached record back to an older one while it is unexpired. Directory HTTP API: docs/PROTOCOL.md, "Directory HTTP
 * API" (PUT/GET /v1/records/:id, errors as `{ "error": { "code", "message" } }`).
 */
import * as http from 'node:http'
import * as https from 'node:https'
import { DecodeError, DirectoryError, InvalidArgumentError, P2PMessError, type DirectoryCode } from './errors.js'
import { concatBytes, fromUtf8, utf8 } from './protocol/bytes.js'
import { parsePeerId } from './protocol/identity.js'
import { serializeRecord, verifyRecord, type DirectoryRecord, type VerifiedRecord } from './protocol/record.js'
import { isTorAgent } from './tor/dialer.js'

export const DEFAULT_DIRECTORY_TIMEOUT_MS = 60_000
/** Largest response body read from a directory; a record is ~330 bytes, an error object less. */
export const MAX_RESPONSE_BYTES = 16 * 1024
const MAX_DIRECTORIES = 16
const MAX_CACHE_ENTRIES = 1024
const MAX_TIMER_MS = 2 ** 31 - 1

export interface DirectoryClientOptions {
  /** Base URLs (http: or https:, clearnet or .onion), e.g. `http://<56>.onion` or `https://dir.example/p2p`. */
  urls: string[]
  /** From `TorDialer.agent()`; nothing else is accepted. */
  agent: http.Agent
  /** Per request, connection through tor included. Default 60 s. */
  timeoutMs?: number
  /** Clock, Unix ms (record expiry, cache). Default Date.now. */
  now?: () => number
}

export interface PublishResult {
  url: string
  ok: boolean
  status?: number
  /**
   * Why this directory did not take the record: ERR_DIRECTORY_STALE_SEQ (409 — it holds this seq or a newer one;
   * bump seq), ERR_DIRECTORY_RATE_LIMITED (429), ERR_DIRECTORY_REJECTED (other 4xx), ERR_DIRECTORY_RESPONSE
   * (5xx or unexpected), ERR_DIRECTORY_UNREACHABLE (no answer; `cause` holds the SocksError or timeout).
   */
  error?: P2PMessError
}

/** One directory's answer to a lookup. */
type Outcome =
  | { kind: 'found'; url: string; verified: VerifiedRecord }
  | { kind: 'missing'; url: string }
  /** Answered 200 with something that is not a valid record for the ID: a broken or lying directory. */
  | { kind: 'invalid'; url: string; error: P2PMessError }
  /** No usable answer: unreachable, timed out, or an unexpected status. */
  | { kind: 'failed'; url: string; error: P2PMessError }

interface HttpResponse {
  status: number
  contentType: string | undefined
  /** undefined when the body was larger than MAX_RESPONSE_BYTES (and was not read). */
  body: Uint8Array | undefined
  retryAfter: string | undefined
}

export class DirectoryClient {
  readonly urls: readonly string[]
  readonly #agent: http.Agent
  readonly #timeoutMs: number
  readonly #now: () => number
  /** Canonical peer ID -> newest verified record seen; entries die at `record.expires`. */
  readonly #cache = new Map<string, VerifiedRecord>()

  constructor(options: DirectoryClientOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
    const { urls, agent, timeoutMs = DEFAULT_DIRECTORY_TIMEOUT_MS, now = Date.now } = options
    if (!Array.isArray(urls) || urls.length === 0 || urls.length > MAX_DIRECTORIES) {
      throw new InvalidArgumentError(`urls must be an array of 1–${MAX_DIRECTORIES} directory URLs`)
    }
    this.urls = [...new Set(urls.map(normalizeBaseUrl))]
    if (!isTorAgent(agent)) throw new InvalidArgumentError('agent must come from TorDialer.agent(): directory traffic goes through tor only')
    if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMER_MS) {
      throw new InvalidArgumentError(`timeoutMs must be an integer number of milliseconds ≥ 1, got ${String(timeoutMs)}`)
    }
    if (typeof now !== 'function') throw new InvalidArgumentError('now must be a function returning Unix ms')
    this.#agent = agent
    this.#timeoutMs = timeoutMs
    this.#now = now
  }

  /** PUTs `record` to every directory in parallel. Results are in `urls` order; see `assertPublished`. */
  async publish(record: DirectoryRecord): Promise<PublishResult[]> {
    const check = verifyRecord(record, { now: this.#clock() })
    if (!check.ok) throw new InvalidArgumentError(`record is not publishable: ${check.message}`, { details: { reason: check.reason } })
    const body = utf8(serializeRecord(check.record))
    const path = `/v1/records/${check.record.id}`
    return Promise.all(this.urls.map((url) => this.#publishTo(url, path, body)))
  }

  /**
   * The peer's newest valid record. Served from the cache while unexpired unless `fresh` (e.g. to redial after
   * the peer's keys changed); otherwise all directories are asked in parallel. Throws DirectoryError:
   * ERR_DIRECTORY_INVALID_RECORD (only invalid records came back), ERR_DIRECTORY_NOT_FOUND (directories that
   * answered have none), ERR_DIRECTORY_RESPONSE (only unusable answers), ERR_DIRECTORY_UNREACHABLE (none answered).
   */
  async lookup(id: string, options: { fresh?: boolean } = {}): Promise<VerifiedRecord> {
    const peerId = parsePeerId(id)
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
    if (options.fresh !== true) {
      const hit = this.cached(peerId)
      if (hit !== undefined) return hit
    }
    const outcomes = await Promise.all(this.urls.map((url) => this.#lookupAt(url, peerId)))
    let best: VerifiedRecord | undefined
    for (const o of outcomes) {
      if (o.kind === 'found' && (best === undefined || o.verified.record.seq > best.record.seq)) best = o.verified
    }
    if (best === undefined) throw lookupError(peerId, outcomes)
    // A directory may replay an older (still validly signed) record; never go back behind what we have seen.
    const known = this.#fresh(peerId)
    if (known !== undefined && known.record.seq > best.record.seq) return copy(known)
    this.#remember(peerId, best)
    return copy(best)
  }

  /** The cached record for `id` if it has not expired: lets the client keep working while directories are down. */
  cached(id: string): VerifiedRecord | undefined {
    const hit = this.#fresh(parsePeerId(id))
    return hit === undefined ? undefined : copy(hit)
  }

  #fresh(peerId: string): VerifiedRecord | undefined {
    const hit = this.#cache.get(peerId)
    if (hit === undefined) return undefined
    if (hit.record.expires * 1000 > this.#clock()) return hit
    this.#cache.delete(peerId)
    return undefined
  }

  #remember(peerId: string, verified: VerifiedRecord): void {
    this.#cache.delete(peerId)
    this.#cache.set(peerId, verified)
    if (this.#cache.size > MAX_CACHE_ENTRIES) {
      const oldest = this.#cache.keys().next()
      if (oldest.done !== true) this.#cache.delete(oldest.value)
    }
  }

  #clock(): number {
    const t = this.#now()
    if (typeof t !== 'number' || !Number.isFinite(t)) throw new InvalidArgumentError('now() must return a finite Unix time in ms')
    return t
  }

  async #publishTo(url: string, path: string, body: Uint8Array): Promise<PublishResult> {
    let res: HttpResponse
    try {
      res = await this.#exchange(url, 'PUT', path, body)
    } catch (error) {
      return { url, ok: false, error: asP2PMessError(error) }
    }
    const { status } = res
    if (status === 200 || status === 201) return { url, ok: true, status }
    const api = apiError(res)
    const details = { url, status, ...api }
    const said = api.apiCode === undefined ? `HTTP ${status}` : `HTTP ${status}, ${api.apiCode}`
    let error: DirectoryError
    if (status === 409) {
      error = new DirectoryError('ERR_DIRECTORY_STALE_SEQ', `Directory ${url} already has this record's seq or a newer one — publish with a higher seq.`, { details })
    } else if (status === 429) {
      error = new DirectoryError('ERR_DIRECTORY_RATE_LIMITED', `Directory ${url} asks us to publish less often (${said}).`, { details: { ...details, retryAfter: res.retryAfter } })
    } else if (status >= 400 && status < 500) {
      error = new DirectoryError('ERR_DIRECTORY_REJECTED', `Directory ${url} refused the record (${said}).`, { details })
    } else {
      error = new DirectoryError('ERR_DIRECTORY_RESPONSE', `Directory ${url} failed to store the record (${said}).`, { details })
    }
    return { url, ok: false, status, error }
  }

  async #lookupAt(url: string, peerId: string): Promise<Outcome> {
    let res: HttpResponse
    try {
      res = await this.#exchange(url, 'GET', `/v1/records/${peerId}`)
    } catch (error) {
      return { kind: 'failed', url, error: asP2PMessError(error) }
    }
    const details = { url, status: res.status }
    if (res.status === 404) return { kind: 'missing', url }
    if (res.status !== 200) {
      return { kind: 'failed', url, error: new DirectoryError('ERR_DIRECTORY_RESPONSE', `Directory ${url} answered HTTP ${res.status}.`, { details }) }
    }
    const invalid = (message: string, extra: Record<string, unknown> = {}, cause?: unknown): Outcome => ({
      kind: 'invalid',
      url,
      error: new DirectoryError('ERR_DIRECTORY_INVALID_RECORD', `Directory ${url} served an invalid record: ${message}`, { cause, details: { ...details, ...extra } }),
    })
    if (res.body === undefined) {
      return invalid(`the response is larger than ${MAX_RESPONSE_BYTES} bytes`, {}, new DecodeError('ERR_TOO_LARGE', `response larger than ${MAX_RESPONSE_BYTES} bytes`))
    }
    if (!isJsonContentType(res.contentType)) return invalid('the response is not application/json', { contentType: res.contentType })
    let text: string
    try {
      text = fromUtf8(res.body)
    } catch (cause) {
      return invalid('the response is not UTF-8', {}, cause)
    }
    const verified = verifyRecord(text, { now: this.#clock(), expectedId: peerId })
    if (!verified.ok) return invalid(verified.message, { reason: verified.reason })
    const { record, identityKey, noiseKey, onionPublicKey } = verified
    return { kind: 'found', url, verified: { record, identityKey, noiseKey, onionPublicKey } }
  }

  /** Closes the streams the agent keeps alive between requests. */
  close(): void {
    this.#agent.destroy()
  }

  /**
   * One HTTP exchange through the tor agent, bounded in time and in response size. The agent keeps streams alive
   * between requests; a kept-alive stream the directory closed just as we reused it (the request failed before
   * any answer, RFC 9110 §9.2.2) is retried once on a fresh stream.
   */
  async #exchange(base: string, method: 'GET' | 'PUT', path: string, body?: Uint8Array): Promise<HttpResponse> {
    const first = await this.#exchangeOnce(base, method, path, body, true)
    if (first !== STALE_STREAM) return first
    const second = await this.#exchangeOnce(base, method, path, body, false)
    if (second === STALE_STREAM) throw new DirectoryError('ERR_DIRECTORY_UNREACHABLE', `Directory ${base} closed the connection.`, { details: { url: base } })
    return second
  }

  #exchangeOnce(base: string, method: 'GET' | 'PUT', path: string, body: Uint8Array | undefined, mayRetry: boolean): Promise<HttpResponse | typeof STALE_STREAM> {
    const url = new URL(base + path)
    const client = url.protocol === 'https:' ? https : http
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json' }
    if (body !== undefined) {
      headers['content-type'] = 'application/json'
      headers['content-length'] = body.length
    }
    return new Promise((resolve, reject) => {
      let done = false
      let answered = false
      let timer: NodeJS.Timeout | undefined
      const finish = (result: HttpResponse | P2PMessError | typeof STALE_STREAM): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        if (result instanceof P2PMessError) {
          req.destroy()
          reject(result)
        } else {
          resolve(result)
        }
      }
      const unreachable = (message: string, cause?: unknown): DirectoryError =>
        new DirectoryError('ERR_DIRECTORY_UNREACHABLE', `Directory ${base} ${message}`, { cause, details: { url: base, ...(cause instanceof P2PMessError ? { reason: cause.code } : {}) } })

      const req = client.request(url, { method, headers, agent: this.#agent }, (res) => {
        answered = true
        const status = res.statusCode ?? 0
        const contentType = res.headers['content-type']
        const retryAfter = res.headers['retry-after']
        const tooLarge = (): void => {
          res.destroy()
          finish({ status, contentType, body: undefined, retryAfter })
        }
        const declared = Number(res.headers['content-length'])
        if (Number.isFinite(declared) && declared > MAX_RESPONSE_BYTES) return tooLarge()
        const chunks: Uint8Array[] = []
        let size = 0
        res.on('data', (chunk: Uint8Array) => {
          size += chunk.length
          if (size > MAX_RESPONSE_BYTES) tooLarge()
          else chunks.push(chunk)
        })
        res.on('end', () => finish({ status, contentType, body: concatBytes(...chunks), retryAfter }))
        res.on('error', (cause) => finish(unreachable('broke off its answer.', cause)))
        res.on('close', () => finish(unreachable('broke off its answer.')))
      })
      req.on('error', (cause) => {
        if (mayRetry && req.reusedSocket && !answered) return finish(STALE_STREAM)
        finish(unreachable(cause instanceof P2PMessError ? `is unreachable: ${cause.message}` : 'is unreachable.', cause))
      })
      timer = setTimeout(() => finish(unreachable(`did not answer within ${this.#timeoutMs} ms.`)), this.#timeoutMs)
      req.end(body)
    })
  }
}

/** #exchangeOnce's answer when a reused kept-alive stream failed before any response: try a fresh one. */
const STALE_STREAM = Symbol('stale kept-alive stream')

/**
 * Succeeds when at least one directory took the record. Otherwise throws DirectoryError, most actionable first:
 * ERR_DIRECTORY_STALE_SEQ (some directory has this seq or newer: bump seq and publish again),
 * ERR_DIRECTORY_REJECTED (some directory refused it), ERR_DIRECTORY_UNREACHABLE (none took it for other reasons).
 */
export function assertPublished(results: readonly PublishResult[]): void {
  if (!Array.isArray(results)) throw new InvalidArgumentError('results must be the array publish() returned')
  if (results.some((r) => r.ok)) return
  const codes = results.map((r) => r.error?.code)
  const details = { results: results.map((r) => ({ url: r.url, status: r.status, code: r.error?.code })) }
  const cause = results.find((r) => r.error !== undefined)?.error
  if (codes.includes('ERR_DIRECTORY_STALE_SEQ')) {
    throw new DirectoryError('ERR_DIRECTORY_STALE_SEQ', 'A directory already has a record with this seq or a newer one; publish again with a higher seq.', { cause, details })
  }
  if (codes.includes('ERR_DIRECTORY_REJECTED') || codes.includes('ERR_DIRECTORY_RATE_LIMITED')) {
    throw new DirectoryError('ERR_DIRECTORY_REJECTED', 'No directory accepted our record.', { cause, details })
  }
  throw new DirectoryError('ERR_DIRECTORY_UNREACHABLE', 'No directory could be reached to publish our record.', { cause, details })
}

function lookupError(peerId: string, outcomes: readonly Outcome[]): DirectoryError {
  const details = {
    id: peerId,
    results: outcomes.map((o) => ({ url: o.url, result: o.kind, code: 'error' in o ? o.error.code : undefined })),
  }
  const first = (kind: Outcome['kind']): P2PMessError | undefined => {
    const o = outcomes.find((x) => x.kind === kind)
    return o !== undefined && 'error' in o ? o.error : undefined
  }
  const fail = (code: DirectoryCode, message: string, cause?: P2PMessError): DirectoryError => new DirectoryError(code, message, { cause, details })
  if (outcomes.some((o) => o.kind === 'invalid')) {
    return fail('ERR_DIRECTORY_INVALID_RECORD', "The directories returned no valid record for this contact (a directory may be lying).", first('invalid'))
  }
  if (outcomes.some((o) => o.kind === 'missing')) {
    return fail('ERR_DIRECTORY_NOT_FOUND', "The directories have no record for this contact — they may never have published one.")
  }
  const failed = outcomes.filter((o): o is Extract<Outcome, { kind: 'failed' }> => o.kind === 'failed')
  if (failed.some((o) => o.error.code === 'ERR_DIRECTORY_RESPONSE')) {
    return fail('ERR_DIRECTORY_RESPONSE', 'The directories gave no usable answer.', first('failed'))
  }
  return fail('ERR_DIRECTORY_UNREACHABLE', 'No directory could be reached through tor.', first('failed'))
}

/** Status, and the API's `{ error: { code } }` if the body is the documented JSON error (else nothing). */
function apiError(res: HttpResponse): { apiCode?: string } {
  if (res.body === undefined || !isJsonContentType(res.contentType)) return {}
  try {
    const parsed: unknown = JSON.parse(fromUtf8(res.body))
    if (typeof parsed !== 'object' || parsed === null) return {}
    const error: unknown = Reflect.get(parsed, 'error')
    if (typeof error !== 'object' || error === null) return {}
    const code: unknown = Reflect.get(error, 'code')
    return typeof code === 'string' && /^[a-z_]{1,40}$/.test(code) ? { apiCode: code } : {}
  } catch {
    return {}
  }
}

/** application/json, optionally with charset=utf-8 (RFC 8259 §8.1). */
function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false
  const [type, ...params] = header.split(';').map((p) => p.trim().toLowerCase())
  return type === 'application/json' && params.every((p) => !p.startsWith('charset=') || p === 'charset=utf-8' || p === 'charset="utf-8"')
}

function normalizeBaseUrl(text: unknown): string {
  if (typeof text !== 'string' || text.length > 2048) throw new InvalidArgumentError('each directory URL must be a string')
  let url: URL
  try {
    url = new URL(text)
  } catch (cause) {
    throw new InvalidArgumentError(`not a URL: ${JSON.stringify(text.slice(0, 100))}`, { cause })
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidArgumentError(`directory URL must be http: or https:, got ${url.protocol}`)
  if (url.username !== '' || url.password !== '') throw new InvalidArgumentError('directory URL must not carry credentials')
  if (url.search !== '' || url.hash !== '') throw new InvalidArgumentError('directory URL must not have a query or fragment')
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`
}

function asP2PMessError(err: unknown): P2PMessError {
  return err instanceof P2PMessError ? err : new DirectoryError('ERR_DIRECTORY_UNREACHABLE', 'The directory request failed.', { cause: err })
}

/** Callers get their own key buffers: wiping one must not corrupt the cache. */
function copy(v: VerifiedRecord): VerifiedRecord {
  return { record: { ...v.record }, identityKey: v.identityKey.slice(), noiseKey: v.noiseKey.slice(), onionPublicKey: v.onionPublicKey.slice() }
}
