/**
 * The directory's HTTP application (koa). `createDirectoryApp` takes its store and returns a koa app; callers
 * listen (`directory/server.ts`) or drive `app.callback()` directly (tests). The API is documented in
 * docs/PROTOCOL.md, "Directory HTTP API".
 */
import type { IncomingMessage } from 'node:http'
import Koa from 'koa'
import { DirectoryError, InvalidArgumentError, P2PMessError, describeError, type DirectoryCode } from '../src/errors.js'
import { concatBytes, fromUtf8 } from '../src/protocol/bytes.js'
import { parsePeerId } from '../src/protocol/identity.js'
import { verifyRecord, type RecordRejectReason } from '../src/protocol/record.js'
import { isExpired, type RecordStore } from './store.js'

/** The stable `error.code` values of the HTTP API, with their status and the internal code behind them. */
export const API_ERRORS = {
  malformed_json: { status: 400, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  invalid_record: { status: 400, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  unsupported_version: { status: 400, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  invalid_id: { status: 400, internal: 'ERR_DIRECTORY_REJECTED' },
  not_found: { status: 404, internal: 'ERR_DIRECTORY_NOT_FOUND' },
  method_not_allowed: { status: 405, internal: 'ERR_DIRECTORY_REJECTED' },
  stale_seq: { status: 409, internal: 'ERR_DIRECTORY_STALE_SEQ' },
  too_large: { status: 413, internal: 'ERR_DIRECTORY_REJECTED' },
  unsupported_media_type: { status: 415, internal: 'ERR_DIRECTORY_REJECTED' },
  bad_signature: { status: 422, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  id_mismatch: { status: 422, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  expired: { status: 422, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  expiry_too_far: { status: 422, internal: 'ERR_DIRECTORY_INVALID_RECORD' },
  rate_limited: { status: 429, internal: 'ERR_DIRECTORY_RATE_LIMITED' },
  internal: { status: 500, internal: 'ERR_DIRECTORY_STORE' },
} as const satisfies Record<string, { status: number; internal: DirectoryCode }>

export type ApiErrorCode = keyof typeof API_ERRORS

/** Which API code each verifyRecord rejection becomes. */
const REJECTIONS: { readonly [R in RecordRejectReason]: ApiErrorCode } = {
  malformed: 'invalid_record',
  too_large: 'too_large',
  unsupported_version: 'unsupported_version',
  bad_signature: 'bad_signature',
  id_mismatch: 'id_mismatch',
  expired: 'expired',
  expiry_too_far: 'expiry_too_far',
}

/** A refusal with its HTTP API code; its message is shown to the client (it never holds secrets). */
export class DirectoryHttpError extends DirectoryError {
  readonly api: ApiErrorCode
  readonly status: number
  readonly retryAfterSeconds: number | undefined

  constructor(api: ApiErrorCode, message: string, options: { retryAfterSeconds?: number; cause?: unknown } = {}) {
    super(API_ERRORS[api].internal, message, options.cause === undefined ? {} : { cause: options.cause })
    this.api = api
    this.status = API_ERRORS[api].status
    this.retryAfterSeconds = options.retryAfterSeconds
  }
}

export interface BucketConfig {
  /** Most tokens the bucket holds (the burst). */
  capacity: number
  /** Tokens added per second. */
  refillPerSecond: number
}

export interface DirectoryAppOptions {
  store: RecordStore
  /** Clock, Unix ms; injected so expiry and rate limits are deterministic in tests. Default Date.now. */
  now?: () => number
  /** Largest accepted request body in bytes. Default 4096. */
  bodyLimit?: number
  /** Write budgets: one bucket per peer ID and one global bucket. */
  limits?: { perId?: BucketConfig; global?: BucketConfig; maxTrackedIds?: number }
  /** Where unexpected (500) errors are reported. Default: nowhere. */
  log?: (line: string) => void
}

export const DEFAULT_BODY_LIMIT = 4096
export const DEFAULT_LIMITS = {
  perId: { capacity: 5, refillPerSecond: 1 / 60 },
  global: { capacity: 200, refillPerSecond: 50 },
  maxTrackedIds: 100_000,
} as const

interface Bucket {
  tokens: number
  at: number
}

/**
 * Token buckets with an injected clock (no timers). `take(id)` spends one token from the ID's bucket and one from
 * the global bucket, or neither: a write refused by one budget does not drain the other.
 */
export class WriteLimiter {
  readonly #perId: BucketConfig
  readonly #global: BucketConfig
  readonly #maxIds: number
  readonly #now: () => number
  readonly #buckets = new Map<string, Bucket>()
  #globalBucket: Bucket

  constructor(options: { perId: BucketConfig; global: BucketConfig; maxTrackedIds: number; now: () => number }) {
    for (const [name, b] of [['perId', options.perId], ['global', options.global]] as const) {
      if (!(b.capacity >= 1) || !(b.refillPerSecond > 0) || !Number.isFinite(b.capacity + b.refillPerSecond)) {
        throw new InvalidArgumentError(`limits.${name} needs capacity >= 1 and a finite refillPerSecond > 0`)
      }
    }
    if (!Number.isSafeInteger(options.maxTrackedIds) || options.maxTrackedIds < 1) {
      throw new InvalidArgumentError('limits.maxTrackedIds must be a positive integer')
    }
    this.#perId = options.perId
    this.#global = options.global
    this.#maxIds = options.maxTrackedIds
    this.#now = options.now
    this.#globalBucket = { tokens: options.global.capacity, at: options.now() }
  }

  take(id: string): void {
    const now = this.#now()
    const own = refill(this.#buckets.get(id) ?? { tokens: this.#perId.capacity, at: now }, this.#perId, now)
    this.#globalBucket = refill(this.#globalBucket, this.#global, now)
    const global = this.#globalBucket
    const short = own.tokens < 1 ? { scope: 'id', bucket: own, config: this.#perId }
      : global.tokens < 1 ? { scope: 'global', bucket: global, config: this.#global }
      : undefined
    // Re-insert so the map stays in least-recently-used order for eviction.
    this.#buckets.delete(id)
    this.#buckets.set(id, own)
    if (this.#buckets.size > this.#maxIds) {
      const oldest = this.#buckets.keys().next()
      if (oldest.done !== true) this.#buckets.delete(oldest.value)
    }
    if (short !== undefined) {
      const seconds = Math.max(1, Math.ceil((1 - short.bucket.tokens) / short.config.refillPerSecond))
      throw new DirectoryError('ERR_DIRECTORY_RATE_LIMITED', 'write budget exhausted, retry later', {
        details: { retryAfterSeconds: seconds, scope: short.scope },
      })
    }
    own.tokens -= 1
    global.tokens -= 1
  }
}

function refill(bucket: Bucket, config: BucketConfig, now: number): Bucket {
  const elapsed = Math.max(0, now - bucket.at) / 1000
  return { tokens: Math.min(config.capacity, bucket.tokens + elapsed * config.refillPerSecond), at: Math.max(now, bucket.at) }
}

/** Reads the body, refusing it as soon as it grows past `limit` (nothing past the limit is buffered). */
function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = []
    let size = 0
    const finish = (error: DirectoryHttpError | undefined): void => {
      req.off('data', onData).off('end', onEnd).off('error', onAbort).off('close', onAbort)
      if (error === undefined) resolve(concatBytes(...chunks))
      else {
        req.pause()
        reject(error)
      }
    }
    const onData = (chunk: Uint8Array): void => {
      size += chunk.length
      if (size > limit) finish(new DirectoryHttpError('too_large', `request body exceeds ${limit} bytes`))
      else chunks.push(chunk)
    }
    const onEnd = (): void => finish(undefined)
    const onAbort = (): void => finish(new DirectoryHttpError('malformed_json', 'request body was cut off'))
    req.on('data', onData).on('end', onEnd).on('error', onAbort).on('close', onAbort)
  })
}

/** Content-Type must be application/json, with no charset or charset=utf-8 (RFC 8259 §8.1). */
function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false
  const [type, ...params] = header.split(';').map((p) => p.trim().toLowerCase())
  if (type !== 'application/json') return false
  return params.every((p) => !p.startsWith('charset=') || p === 'charset=utf-8' || p === 'charset="utf-8"')
}

/** The canonical form of the path's peer ID (parsePeerId also accepts the forms people type). */
function checkPeerId(text: string): string {
  try {
    return parsePeerId(text)
  } catch (cause) {
    if (cause instanceof P2PMessError) throw new DirectoryHttpError('invalid_id', 'the path does not hold a valid peer ID', { cause })
    throw cause
  }
}

/** Maps anything thrown inside a request to the API's error. Unknown errors become a bare 500. */
function toHttpError(err: unknown): DirectoryHttpError {
  if (err instanceof DirectoryHttpError) return err
  if (err instanceof DirectoryError && err.code === 'ERR_DIRECTORY_STALE_SEQ') {
    return new DirectoryHttpError('stale_seq', err.message, { cause: err })
  }
  if (err instanceof DirectoryError && err.code === 'ERR_DIRECTORY_RATE_LIMITED') {
    const seconds = err.details?.['retryAfterSeconds']
    return new DirectoryHttpError('rate_limited', err.message, {
      cause: err,
      ...(typeof seconds === 'number' ? { retryAfterSeconds: seconds } : {}),
    })
  }
  return new DirectoryHttpError('internal', 'internal error', { cause: err })
}

type Handler = (ctx: Koa.Context, params: string[]) => Promise<void>

export function createDirectoryApp(options: DirectoryAppOptions): Koa {
  const { store } = options
  const now = options.now ?? Date.now
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT
  const log = options.log ?? (() => {})
  if (!Number.isSafeInteger(bodyLimit) || bodyLimit < 1) throw new InvalidArgumentError('bodyLimit must be a positive integer')
  const limiter = new WriteLimiter({
    perId: options.limits?.perId ?? DEFAULT_LIMITS.perId,
    global: options.limits?.global ?? DEFAULT_LIMITS.global,
    maxTrackedIds: options.limits?.maxTrackedIds ?? DEFAULT_LIMITS.maxTrackedIds,
    now,
  })

  const health: Handler = async (ctx) => {
    ctx.body = { status: 'ok', records: store.count() }
  }

  const getRecord: Handler = async (ctx, [raw]) => {
    const id = checkPeerId(raw!)
    const record = await store.get(id)
    if (record === undefined || isExpired(record, now())) throw new DirectoryHttpError('not_found', 'no record for this peer ID')
    ctx.body = record
  }

  const putRecord: Handler = async (ctx, [raw]) => {
    const id = checkPeerId(raw!)
    if (!isJsonContentType(ctx.get('Content-Type') || undefined)) {
      throw new DirectoryHttpError('unsupported_media_type', 'Content-Type must be application/json')
    }
    const declared = ctx.request.length
    if (declared !== undefined && declared > bodyLimit) {
      throw new DirectoryHttpError('too_large', `request body exceeds ${bodyLimit} bytes`)
    }
    let input: unknown
    try {
      input = JSON.parse(fromUtf8(await readBody(ctx.req, bodyLimit)))
    } catch (cause) {
      if (cause instanceof DirectoryHttpError) throw cause
      throw new DirectoryHttpError('malformed_json', 'the body is not valid UTF-8 JSON', { cause })
    }
    const verified = verifyRecord(input, { now: now(), expectedId: id })
    if (!verified.ok) throw new DirectoryHttpError(REJECTIONS[verified.reason], verified.message)
    // The budget is spent only for a verified record that is newer than the stored one, inside the per-ID lock:
    // forged writes fail above and replays fail the newness check, so neither can drain someone else's budget.
    const result = await store.putIfNewer(verified.record, { now: now(), admit: () => limiter.take(id) })
    ctx.status = result === 'created' ? 201 : 200
    ctx.body = verified.record
  }

  const routes: { pattern: RegExp; methods: ReadonlyMap<string, Handler> }[] = [
    { pattern: /^\/v1\/health$/, methods: new Map([['GET', health]]) },
    { pattern: /^\/v1\/records\/([^/]+)$/, methods: new Map([['GET', getRecord], ['PUT', putRecord]]) },
  ]

  const app = new Koa()
  app.silent = true
  app.on('error', (err: unknown) => log(`directory: ${describeError(err)}`))

  app.use(async (ctx, next) => {
    try {
      await next()
    } catch (err) {
      const problem = toHttpError(err)
      if (problem.api === 'internal') log(`directory: ${ctx.method} ${ctx.path} failed: ${describeError(err)}`)
      // An unread body would otherwise be drained on a kept-alive connection; close it instead.
      if (!ctx.req.complete) ctx.set('Connection', 'close')
      if (problem.retryAfterSeconds !== undefined) ctx.set('Retry-After', String(problem.retryAfterSeconds))
      ctx.status = problem.status
      ctx.body = { error: { code: problem.api, message: problem.message } }
    }
  })

  app.use(async (ctx) => {
    ctx.set('Cache-Control', 'no-store')
    for (const route of routes) {
      const match = route.pattern.exec(ctx.path)
      if (match === null) continue
      const method = ctx.method === 'HEAD' ? 'GET' : ctx.method
      const handler = route.methods.get(method)
      if (handler === undefined) {
        ctx.set('Allow', [...route.methods.keys(), ...(route.methods.has('GET') ? ['HEAD'] : [])].join(', '))
        throw new DirectoryHttpError('method_not_allowed', `${ctx.method} is not allowed here`)
      }
      return handler(ctx, match.slice(1))
    }
    throw new DirectoryHttpError('not_found', 'no such route')
  })

  return app
}
