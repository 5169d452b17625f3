/**
 * Record storage for the directory: a small interface, a `level` implementation (embedded, on disk, the default)
 * and an in-memory one for tests. Both share the same write discipline: every write for one peer ID runs inside a
 * per-ID lock, and the "is the candidate newer than what is stored?" check happens inside that lock
 * (compare-and-set), so concurrent writes for one ID always end with the highest `seq` stored.
 *
 * The store trusts its callers to have verified records (the app verifies every record before `putIfNewer`).
 */
import { Level } from 'level'
import { DirectoryError, InvalidArgumentError } from '../src/errors.js'
import { isNewerRecord, serializeRecord, type DirectoryRecord } from '../src/protocol/record.js'

export type PutResult = 'created' | 'updated'

export interface RecordStore {
  /** The stored record for `id`, or undefined. Expired records are returned too; callers decide (see `isExpired`). */
  get(id: string): Promise<DirectoryRecord | undefined>
  /**
   * Stores `record` under `record.id` if it is newer than the stored one (an expired stored record counts as
   * absent). Inside the per-ID lock, after the newness check and before the write, `admit` runs: it may throw
   * (e.g. a rate limit) to refuse the write. Throws DirectoryError ERR_DIRECTORY_STALE_SEQ when not newer.
   */
  putIfNewer(record: DirectoryRecord, options: { now: number; admit?: () => void }): Promise<PutResult>
  /** Deletes every record expired at `now` (Unix ms); returns how many were removed. */
  sweep(now: number): Promise<number>
  /** Number of stored records (expired ones not yet swept included). */
  count(): number
  close(): Promise<void>
}

/** A record is expired once its `expires` second has been reached (`expires` is Unix seconds, `now` Unix ms). */
export function isExpired(record: DirectoryRecord, now: number): boolean {
  return record.expires * 1000 <= now
}

/** The raw key-value operations a backend provides; values are serialized records. */
interface Backend {
  get(id: string): Promise<string | undefined>
  put(id: string, value: string): Promise<void>
  del(id: string): Promise<void>
  entries(): AsyncIterable<[string, string]>
  close(): Promise<void>
}

/** A bounded least-recently-used map of parsed records (0 entries disables it). Cached records are frozen. */
class RecordCache {
  readonly #map = new Map<string, DirectoryRecord>()
  constructor(readonly maxEntries: number) {}

  get(id: string): DirectoryRecord | undefined {
    const record = this.#map.get(id)
    if (record !== undefined) {
      this.#map.delete(id)
      this.#map.set(id, record)
    }
    return record
  }

  set(id: string, record: DirectoryRecord): void {
    if (this.maxEntries === 0) return
    this.#map.delete(id)
    this.#map.set(id, Object.freeze(record))
    if (this.#map.size > this.maxEntries) this.#map.delete(this.#map.keys().next().value!)
  }

  delete(id: string): void {
    this.#map.delete(id)
  }
}

/** Runs async sections one at a time per key, in arrival order. Keys with nothing queued hold no memory. */
class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>()

  async run<T>(key: string, section: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key)
    let release!: () => void
    const mine = new Promise<void>((resolve) => (release = resolve))
    const tail = previous === undefined ? mine : previous.then(() => mine)
    this.#tails.set(key, tail)
    if (previous !== undefined) await previous
    try {
      return await section()
    } finally {
      release()
      if (this.#tails.get(key) === tail) this.#tails.delete(key)
    }
  }

  /** Resolves once every section queued so far has finished. */
  async idle(): Promise<void> {
    await Promise.all([...this.#tails.values()])
  }
}

function parseStored(id: string, value: string): DirectoryRecord {
  try {
    // The store only ever holds records the app verified and serialized; this parse guards against disk damage.
    const parsed: unknown = JSON.parse(value)
    if (typeof parsed === 'object' && parsed !== null && 'id' in parsed && parsed.id === id) {
      return parsed as DirectoryRecord
    }
  } catch (cause) {
    throw new DirectoryError('ERR_DIRECTORY_STORE', `stored record for ${id} is corrupt`, { cause })
  }
  throw new DirectoryError('ERR_DIRECTORY_STORE', `stored record for ${id} is corrupt`)
}

async function createStore(backend: Backend, cacheEntries: number): Promise<RecordStore> {
  const lock = new KeyedLock()
  const cache = new RecordCache(cacheEntries)
  let count = 0
  for await (const _ of backend.entries()) count++
  let closed = false
  // Bumped when a write or delete completes: a read that overlapped one may hold the old value, so it is not cached.
  let epoch = 0

  const read = async (id: string): Promise<DirectoryRecord | undefined> => {
    const cached = cache.get(id)
    if (cached !== undefined) return cached
    const startEpoch = epoch
    const value = await backend.get(id)
    if (value === undefined) return undefined
    const record = parseStored(id, value)
    if (epoch === startEpoch) cache.set(id, record)
    return record
  }
  const assertOpen = (): void => {
    if (closed) throw new DirectoryError('ERR_DIRECTORY_STORE', 'the record store is closed')
  }

  return {
    async get(id) {
      assertOpen()
      return read(id)
    },

    putIfNewer(record, { now, admit }) {
      assertOpen()
      return lock.run(record.id, async () => {
        const stored = await read(record.id)
        const current = stored !== undefined && !isExpired(stored, now) ? stored : undefined
        if (!isNewerRecord(record, current)) {
          throw new DirectoryError('ERR_DIRECTORY_STALE_SEQ', `seq ${record.seq} is not newer than the stored seq`, {
            details: { storedSeq: current?.seq },
          })
        }
        admit?.()
        await backend.put(record.id, serializeRecord(record))
        epoch++
        cache.set(record.id, { ...record })
        if (stored === undefined) count++
        return current === undefined ? 'created' : 'updated'
      })
    },

    async sweep(now) {
      assertOpen()
      const candidates: string[] = []
      for await (const [id, value] of backend.entries()) {
        if (isExpired(parseStored(id, value), now)) candidates.push(id)
      }
      let removed = 0
      for (const id of candidates) {
        // Re-check inside the lock: a fresh record may have replaced the expired one since the scan.
        await lock.run(id, async () => {
          const stored = await read(id)
          if (stored !== undefined && isExpired(stored, now)) {
            await backend.del(id)
            epoch++
            cache.delete(id)
            count--
            removed++
          }
        })
      }
      return removed
    },

    count: () => count,

    async close() {
      if (closed) return
      closed = true
      await lock.idle()
      await backend.close()
    },
  }
}

/** An in-memory store (tests). */
export function createMemoryStore(): Promise<RecordStore> {
  const map = new Map<string, string>()
  return createStore({
    get: async (id) => map.get(id),
    put: async (id, value) => void map.set(id, value),
    del: async (id) => void map.delete(id),
    entries: async function* () {
      yield* [...map.entries()]
    },
    close: async () => {},
  }, 0)
}

export const DEFAULT_CACHE_ENTRIES = 10_000

/**
 * Opens (creating if needed) a `level` store in the directory `path`. Reads go through a write-through cache of
 * `cacheEntries` records (default 10 000, about 4 MB); the store must be the only writer of the database, which
 * level enforces with its lock file.
 */
export async function openLevelStore(path: string, options: { cacheEntries?: number } = {}): Promise<RecordStore> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new InvalidArgumentError('the store path must be a non-empty string')
  }
  const cacheEntries = options.cacheEntries ?? DEFAULT_CACHE_ENTRIES
  if (!Number.isSafeInteger(cacheEntries) || cacheEntries < 0) {
    throw new InvalidArgumentError('cacheEntries must be a non-negative integer')
  }
  const db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
  try {
    await db.open()
  } catch (cause) {
    throw new DirectoryError('ERR_DIRECTORY_STORE', `cannot open the record store at ${path}`, { cause })
  }
  return createStore({
    get: (id) => db.get(id),
    put: (id, value) => db.put(id, value),
    del: (id) => db.del(id),
    entries: () => db.iterator(),
    close: () => db.close(),
  }, cacheEntries)
}
