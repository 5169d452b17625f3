/**
 * The client's level database: contacts (with pinned identity keys), a persistent per-contact outbox,
 * message history with dedup of incoming messages, and a small key-value store for our own state.
 *
 * Keys are ASCII and built for ordered iteration ('!' separates parts and sorts below every character of a
 * peer ID or message ID; sequence numbers are zero-padded to 16 digits):
 *
 *   c!<peer>                 Contact
 *   o!<peer>!<seq>           OutboxEntry              (outbox, in enqueue order)
 *   oi!<peer>!<id>           <seq>                    (outbox index by message ID)
 *   h!<peer>!<seq>           HistoryEntry             (history, in local arrival order)
 *   hi!<peer>!<in|out>!<id>  <seq>                    (history index by direction and message ID)
 *   n!<peer>!<o|h>           last seq handed out      (counters never go back, even when the outbox empties)
 *   s!<key>                  JSON value               (own state)
 *
 * Every operation runs in call order under one in-process lock (so a read sees every earlier write), and
 * every write commits as one atomic level batch, written with fsync so it survives a crash, except markDelivered
 * (a lost mark only causes a resend the receiver drops). Values are JSON, re-validated when read back.
 * See docs/PROTOCOL.md, "Storage and secrets at rest".
 */
import { mkdir } from 'node:fs/promises'
import { Level } from 'level'
import type { ContactState, MessageStatus } from '../client/api.js'
import { InvalidArgumentError, P2PMessError, SessionError, StorageError } from '../errors.js'
import { equalBytes, fromBase64url, toBase64url, utf8 } from '../protocol/bytes.js'
import { isCanonicalPeerId, peerIdMatchesKey } from '../protocol/identity.js'
import { MAX_TEXT_BYTES, MESSAGE_ID_LENGTH } from '../protocol/messages.js'
import type { DirectoryRecord } from '../protocol/record.js'

export interface Contact {
  peerId: string
  name?: string
  /** Pinned Ed25519 identity key, base64url. Never changes once stored. */
  identityKey: string
  state: ContactState
  /** Latest verified directory record seen for this peer. */
  lastRecord?: DirectoryRecord
  /** Unix ms. */
  addedAt: number
}

export interface OutboxEntry {
  /** Per-contact, strictly increasing, never reused. */
  seq: number
  /** base64url 128-bit message ID. */
  id: string
  body: string
  createdAt: number
}

export interface HistoryEntry {
  /** Per-contact, strictly increasing: local order of arrival/creation. */
  seq: number
  id: string
  direction: 'in' | 'out'
  body: string
  /** Unix ms: when the author wrote it. */
  at: number
  status: MessageStatus
}

export type NewHistoryEntry = Omit<HistoryEntry, 'seq'>
export interface IncomingMessage {
  id: string
  body: string
  at: number
}
export interface OutgoingMessage {
  id: string
  body: string
  createdAt: number
}

const CONTACT_STATES: readonly ContactState[] = ['pending', 'accepted', 'request', 'refused']
const MESSAGE_STATUSES: readonly MessageStatus[] = ['queued', 'sent', 'delivered', 'received']
const MAX_NAME_CHARS = 128
const MAX_STATE_BYTES = 64 * 1024
const STATE_KEY = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** The own-state key the sync barrier writes (its value, a time, is never read). */
const SYNC_BARRIER_KEY = 'sync-barrier'
const DEFAULT_HISTORY_LIMIT = 50
const MAX_HISTORY_LIMIT = 1000
/** Sorts above every character used inside keys. */
const HIGH = '~'

const pad = (n: number): string => String(n).padStart(16, '0')
const keys = {
  contact: (peer: string) => `c!${peer}`,
  contacts: { gt: 'c!', lt: `c!${HIGH}` },
  outbox: (peer: string, seq: number) => `o!${peer}!${pad(seq)}`,
  outboxRange: (peer: string) => ({ gt: `o!${peer}!`, lt: `o!${peer}!${HIGH}` }),
  outboxId: (peer: string, id: string) => `oi!${peer}!${id}`,
  history: (peer: string, seq: number) => `h!${peer}!${pad(seq)}`,
  historyPrefix: (peer: string) => `h!${peer}!`,
  historyId: (peer: string, direction: 'in' | 'out', id: string) => `hi!${peer}!${direction}!${id}`,
  counter: (peer: string, which: 'o' | 'h') => `n!${peer}!${which}`,
  state: (key: string) => `s!${key}`,
  /** Every key belonging to one peer, for removeContact. */
  peerRanges: (peer: string) =>
    ['o', 'oi', 'h', 'hi', 'n'].map((p) => ({ gt: `${p}!${peer}!`, lt: `${p}!${peer}!${HIGH}` })),
}

type Problem = string | undefined

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}
function isMessageId(value: unknown): value is string {
  if (typeof value !== 'string') return false
  try {
    fromBase64url(value, MESSAGE_ID_LENGTH)
    return true
  } catch {
    return false
  }
}
function bodyProblem(body: unknown): Problem {
  if (typeof body !== 'string') return 'body must be a string'
  if (utf8(body).length > MAX_TEXT_BYTES) return `body must be at most ${MAX_TEXT_BYTES} bytes of UTF-8`
  return undefined
}
function onlyKeys(obj: Record<string, unknown>, allowed: readonly string[]): Problem {
  const extra = Object.keys(obj).find((k) => !allowed.includes(k))
  return extra === undefined ? undefined : `unexpected field ${JSON.stringify(extra)}`
}

function contactProblem(c: unknown): Problem {
  if (!isRecord(c)) return 'contact must be an object'
  const { peerId, name, identityKey, state, lastRecord, addedAt } = c
  if (!isCanonicalPeerId(peerId)) return 'contact.peerId must be a canonical peer ID'
  if (name !== undefined && (typeof name !== 'string' || name.length === 0 || name.length > MAX_NAME_CHARS)) {
    return `contact.name must be 1-${MAX_NAME_CHARS} characters`
  }
  if (typeof identityKey !== 'string' || decodeKeyOrUndefined(identityKey) === undefined) {
    return 'contact.identityKey must be 32 bytes of base64url'
  }
  if (!CONTACT_STATES.includes(state as ContactState)) return `contact.state must be one of ${CONTACT_STATES.join(', ')}`
  if (!isTime(addedAt)) return 'contact.addedAt must be a non-negative integer (Unix ms)'
  if (lastRecord !== undefined) {
    if (!isRecord(lastRecord) || lastRecord.id !== peerId || lastRecord.identityKey !== identityKey) {
      return 'contact.lastRecord must be a record for this peer ID and pinned key'
    }
  }
  return onlyKeys(c, ['peerId', 'name', 'identityKey', 'state', 'lastRecord', 'addedAt'])
}

function outboxProblem(e: unknown): Problem {
  if (!isRecord(e)) return 'outbox entry must be an object'
  if (!isMessageId(e.id)) return 'message id must be 128 bits of base64url'
  if (!isTime(e.createdAt)) return 'createdAt must be a non-negative integer (Unix ms)'
  return bodyProblem(e.body) ?? onlyKeys(e, ['seq', 'id', 'body', 'createdAt'])
}

function historyProblem(e: unknown): Problem {
  if (!isRecord(e)) return 'history entry must be an object'
  const { id, direction, at, status } = e
  if (!isMessageId(id)) return 'message id must be 128 bits of base64url'
  if (direction !== 'in' && direction !== 'out') return "direction must be 'in' or 'out'"
  if (!isTime(at)) return 'at must be a non-negative integer (Unix ms)'
  if (!MESSAGE_STATUSES.includes(status as MessageStatus)) return `status must be one of ${MESSAGE_STATUSES.join(', ')}`
  if ((direction === 'in') !== (status === 'received')) return "status 'received' goes with direction 'in', and only with it"
  return bodyProblem(e.body) ?? onlyKeys(e, ['seq', 'id', 'direction', 'body', 'at', 'status'])
}

function hasSeq(e: Record<string, unknown>): boolean {
  return isTime(e.seq) && (e.seq as number) > 0
}

function argument(problem: Problem): void {
  if (problem !== undefined) throw new InvalidArgumentError(problem)
}

function assertPeerId(peerId: unknown): asserts peerId is string {
  if (!isCanonicalPeerId(peerId)) throw new InvalidArgumentError('peerId must be a canonical peer ID')
}

function identityKeyText(key: unknown): string {
  if (key instanceof Uint8Array) return toBase64url(key)
  if (typeof key === 'string') return key
  throw new InvalidArgumentError('identityKey must be a Uint8Array or base64url string')
}

function keyMismatch(peerId: string): SessionError {
  return new SessionError('ERR_SESSION_KEY_MISMATCH', `identity key for ${peerId} does not match the pinned key`, {
    details: { peerId },
  })
}

function corrupt(key: string, what: string, cause?: unknown): StorageError {
  return new StorageError('ERR_STORAGE_CORRUPT', `database entry ${key} is damaged: ${what}`, { cause })
}

function decode<T>(key: string, raw: string, problem: (v: unknown) => Problem, needSeq: boolean): T {
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch (cause) {
    throw corrupt(key, 'not valid JSON', cause)
  }
  const p = problem(value) ?? (needSeq && isRecord(value) && !hasSeq(value) ? 'missing sequence number' : undefined)
  if (p !== undefined) throw corrupt(key, p)
  return value as T
}

function decodeContact(key: string, raw: string): Contact {
  const contact = decode<Contact>(key, raw, contactProblem, false)
  if (key !== keys.contact(contact.peerId)) throw corrupt(key, 'stored under another peer ID')
  return contact
}

/** The next number after a counter read at `key` (none yet: 1). */
function seqAfter(key: string, raw: string | undefined): number {
  return (raw === undefined ? 0 : decodeSeq(key, raw)) + 1
}

function requireContact(peerId: string, raw: string | undefined): Contact {
  if (raw === undefined) throw new SessionError('ERR_UNKNOWN_CONTACT', `${peerId} is not a contact`, { details: { peerId } })
  return decodeContact(keys.contact(peerId), raw)
}

function decodeSeq(key: string, raw: string): number {
  const n = Number(raw)
  if (!/^[1-9][0-9]{0,15}$/.test(raw) || !Number.isSafeInteger(n)) throw corrupt(key, 'not a sequence number')
  return n
}

type Op = { type: 'put'; key: string; value: string } | { type: 'del'; key: string }

export class ClientDb {
  readonly #db: Level<string, string>
  #chain: Promise<unknown> = Promise.resolve()
  #closed = false
  /** The sync barrier in flight (see #syncSoon), and whether another one is wanted after it. */
  #barrier: Promise<void> | undefined
  #barrierAgain = false
  /** A failed barrier: the disk cannot make writes durable, so every later operation fails with it. */
  #syncFailure: StorageError | undefined

  private constructor(db: Level<string, string>) {
    this.#db = db
  }

  /** Opens (creating if needed, mode 0700) the database at `path`. Fails if another process has it open. */
  static async open(path: string): Promise<ClientDb> {
    if (typeof path !== 'string' || path === '') throw new InvalidArgumentError('database path must be a non-empty string')
    const db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
    try {
      await mkdir(path, { recursive: true, mode: 0o700 })
      await db.open()
    } catch (cause) {
      const locked = cause instanceof Error && cause.cause instanceof Error && 'code' in cause.cause && cause.cause.code === 'LEVEL_LOCKED'
      throw new StorageError(
        'ERR_STORAGE_IO',
        locked ? `database ${path} is already open (is another client running on this data directory?)` : `cannot open database ${path}`,
        { cause },
      )
    }
    return new ClientDb(db)
  }

  /** Lets operations already called finish (and their writes become durable), then closes. Later calls fail with ERR_STORAGE_IO. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#chain
    await this.settled().catch(() => undefined)
    await this.#db.close()
  }

  /**
   * Resolves once every write made so far is on disk (fsync'd): writes that `enqueue` left to its sync barrier
   * included. Rejects with ERR_STORAGE_IO if the disk failed to sync.
   */
  async settled(): Promise<void> {
    while (this.#barrier !== undefined) await this.#barrier
    if (this.#syncFailure !== undefined) throw this.#syncFailure
  }

  // ------------------------------------------------------------------------------------------ plumbing

  /** Runs `fn` after every earlier operation, mapping level errors to typed ones. */
  #run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new StorageError('ERR_STORAGE_IO', 'database is closed'))
    if (this.#syncFailure !== undefined) return Promise.reject(this.#syncFailure)
    const run = this.#chain.then(async () => {
      try {
        return await fn()
      } catch (cause) {
        if (cause instanceof P2PMessError) throw cause
        throw new StorageError('ERR_STORAGE_IO', 'database operation failed', { cause })
      }
    })
    this.#chain = run.catch(() => undefined)
    return run
  }

  async #get(key: string): Promise<string | undefined> {
    const value: string | undefined = await this.#db.get(key)
    return value
  }

  /** Several independent reads in one round trip to level's thread pool (~0.1 ms, as one get). */
  async #getMany(list: string[]): Promise<(string | undefined)[]> {
    const values: (string | undefined)[] = await this.#db.getMany(list)
    return values
  }

  /**
   * Makes every write so far durable without anyone waiting for it: one synced put, since LevelDB syncs its log
   * up to and including that write, and writes issued later queue behind it. Issued after the write it covers
   * has completed, so the order is LevelDB's, not the thread pool's. Enqueues that come while one is in flight
   * share the next one.
   */
  #syncSoon(): void {
    if (this.#barrier !== undefined) {
      this.#barrierAgain = true
      return
    }
    this.#barrier = this.#db.put(keys.state(SYNC_BARRIER_KEY), String(Date.now()), { sync: true }).then(
      () => {
        this.#barrier = undefined
        if (this.#barrierAgain) {
          this.#barrierAgain = false
          this.#syncSoon()
        }
      },
      (cause: unknown) => {
        this.#barrier = undefined
        this.#syncFailure ??= new StorageError('ERR_STORAGE_IO', 'the database could not sync its writes to disk', { cause })
      },
    )
  }

  /** One atomic batch; fsync'd unless `sync` is false (only where losing it in a crash is harmless). */
  #write(ops: Op[], sync = true): Promise<void> {
    return this.#db.batch(ops, { sync })
  }

  async #nextSeq(peerId: string, which: 'o' | 'h'): Promise<number> {
    const key = keys.counter(peerId, which)
    return seqAfter(key, await this.#get(key))
  }

  async #getContact(peerId: string): Promise<Contact | undefined> {
    const key = keys.contact(peerId)
    const raw = await this.#get(key)
    return raw === undefined ? undefined : decodeContact(key, raw)
  }

  async #requireContact(peerId: string): Promise<Contact> {
    return requireContact(peerId, await this.#get(keys.contact(peerId)))
  }

  async #historyAt(peerId: string, indexKey: string): Promise<HistoryEntry | undefined> {
    const raw = await this.#get(indexKey)
    return raw === undefined ? undefined : this.#historyEntry(peerId, indexKey, raw)
  }

  /** The history entry a history index value (`raw`, read at `indexKey`) points at. */
  async #historyEntry(peerId: string, indexKey: string, raw: string): Promise<HistoryEntry> {
    const key = keys.history(peerId, decodeSeq(indexKey, raw))
    const entry = await this.#get(key)
    if (entry === undefined) throw corrupt(indexKey, 'points at a missing history entry')
    return decode<HistoryEntry>(key, entry, historyProblem, true)
  }

  /**
   * Ops appending one history entry as number `seq` (the history counter + 1); the caller holds the lock and has
   * checked for duplicates.
   */
  #appendOps(peerId: string, seq: number, entry: NewHistoryEntry): { ops: Op[]; stored: HistoryEntry } {
    const stored: HistoryEntry = { seq, id: entry.id, direction: entry.direction, body: entry.body, at: entry.at, status: entry.status }
    return {
      stored,
      ops: [
        { type: 'put', key: keys.history(peerId, seq), value: JSON.stringify(stored) },
        { type: 'put', key: keys.historyId(peerId, entry.direction, entry.id), value: String(seq) },
        { type: 'put', key: keys.counter(peerId, 'h'), value: String(seq) },
      ],
    }
  }

  // ------------------------------------------------------------------------------------------ contacts

  /**
   * Adds or updates a contact. The identity key must match the peer ID (peer IDs are self-certifying) and,
   * for an existing contact, the key pinned earlier: otherwise SessionError ERR_SESSION_KEY_MISMATCH.
   */
  async putContact(contact: Contact): Promise<void> {
    argument(contactProblem(contact))
    const c: Contact = {
      peerId: contact.peerId,
      ...(contact.name === undefined ? {} : { name: contact.name }),
      identityKey: contact.identityKey,
      state: contact.state,
      ...(contact.lastRecord === undefined ? {} : { lastRecord: contact.lastRecord }),
      addedAt: contact.addedAt,
    }
    if (!peerIdMatchesKey(c.peerId, decodeKey(c.identityKey))) throw keyMismatch(c.peerId)
    return this.#run(async () => {
      const existing = await this.#getContact(c.peerId)
      if (existing !== undefined && existing.identityKey !== c.identityKey) throw keyMismatch(c.peerId)
      await this.#write([{ type: 'put', key: keys.contact(c.peerId), value: JSON.stringify(c) }])
    })
  }

  async getContact(peerId: string): Promise<Contact | undefined> {
    assertPeerId(peerId)
    return this.#run(() => this.#getContact(peerId))
  }

  /** All contacts, ordered by peer ID. */
  async listContacts(): Promise<Contact[]> {
    return this.#run(async () => {
      const entries = await this.#db.iterator(keys.contacts).all()
      return entries.map(([key, raw]) => decodeContact(key, raw))
    })
  }

  /**
   * Checks `identityKey` against the key pinned for `peerId` and returns the contact. Unknown peer:
   * SessionError ERR_UNKNOWN_CONTACT; a different key: ERR_SESSION_KEY_MISMATCH.
   */
  async pinContactKey(peerId: string, identityKey: Uint8Array | string): Promise<Contact> {
    assertPeerId(peerId)
    const offered = identityKeyText(identityKey)
    return this.#run(async () => {
      const contact = await this.#requireContact(peerId)
      const a = decodeKey(contact.identityKey)
      const b = decodeKeyOrUndefined(offered)
      if (b === undefined || !equalBytes(a, b) || !peerIdMatchesKey(peerId, b)) throw keyMismatch(peerId)
      return contact
    })
  }

  /** Forgets a contact with its outbox and history. Returns false if there was no such contact. */
  async removeContact(peerId: string): Promise<boolean> {
    assertPeerId(peerId)
    return this.#run(async () => {
      const existed = (await this.#get(keys.contact(peerId))) !== undefined
      const ops: Op[] = [{ type: 'del', key: keys.contact(peerId) }]
      for (const range of keys.peerRanges(peerId)) {
        for (const key of await this.#db.keys(range).all()) ops.push({ type: 'del', key })
      }
      await this.#write(ops)
      return existed
    })
  }

  // ------------------------------------------------------------------------------------------ outbox

  /**
   * Queues an outgoing message for a contact and records it in history as 'queued', atomically. The entry
   * gets the contact's next outbox sequence number; concurrent calls are ordered by call order. Enqueueing
   * an ID that is already known for this contact is a no-op returning the existing entry (exactly once).
   * Resolves once the batch is in the OS; its fsync follows by the sync barrier (`settled()`).
   */
  async enqueue(peerId: string, message: OutgoingMessage): Promise<OutboxEntry> {
    assertPeerId(peerId)
    argument(outboxProblem(message))
    const { id, body, createdAt } = message
    return this.#run(async () => {
      const read = [keys.contact(peerId), keys.outboxId(peerId, id), keys.historyId(peerId, 'out', id), keys.counter(peerId, 'o'), keys.counter(peerId, 'h')]
      const [contact, queuedSeq, sentSeq, outboxCounter, historyCounter] = await this.#getMany(read)
      requireContact(peerId, contact)
      if (queuedSeq !== undefined) {
        const key = keys.outbox(peerId, decodeSeq(keys.outboxId(peerId, id), queuedSeq))
        const raw = await this.#get(key)
        if (raw === undefined) throw corrupt(keys.outboxId(peerId, id), 'points at a missing outbox entry')
        return decode<OutboxEntry>(key, raw, outboxProblem, true)
      }
      if (sentSeq !== undefined) throw new InvalidArgumentError(`message ${id} was already sent to ${peerId}`)
      const seq = seqAfter(read[3]!, outboxCounter)
      const entry: OutboxEntry = { seq, id, body, createdAt }
      const { ops } = this.#appendOps(peerId, seqAfter(read[4]!, historyCounter), { id, direction: 'out', body, at: createdAt, status: 'queued' })
      // In the OS when this resolves (a crash of this process loses nothing), on disk ~0.4 ms later: the fsync
      // runs while the message travels (docs/PROTOCOL.md "Client database").
      await this.#write(
        [
          ...ops,
          { type: 'put', key: keys.outbox(peerId, seq), value: JSON.stringify(entry) },
          { type: 'put', key: keys.outboxId(peerId, id), value: String(seq) },
          { type: 'put', key: keys.counter(peerId, 'o'), value: String(seq) },
        ],
        false,
      )
      this.#syncSoon()
      return entry
    })
  }

  /** The contact's undelivered messages, oldest first; with `afterSeq`, only those queued after that outbox seq. */
  async pending(peerId: string, options: { afterSeq?: number } = {}): Promise<OutboxEntry[]> {
    assertPeerId(peerId)
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
    const { afterSeq } = options
    if (afterSeq !== undefined && (!Number.isSafeInteger(afterSeq) || afterSeq < 0)) {
      throw new InvalidArgumentError('afterSeq must be a non-negative integer')
    }
    const range = keys.outboxRange(peerId)
    return this.#run(async () => {
      const entries = await this.#db.iterator(afterSeq === undefined ? range : { ...range, gt: keys.outbox(peerId, afterSeq) }).all()
      return entries.map(([key, raw]) => decode<OutboxEntry>(key, raw, outboxProblem, true))
    })
  }

  /** Marks a queued message as written to a session ('sent'); it stays in the outbox until acknowledged. */
  async markSent(peerId: string, id: string): Promise<boolean> {
    assertPeerId(peerId)
    if (!isMessageId(id)) throw new InvalidArgumentError('message id must be 128 bits of base64url')
    return this.#run(async () => {
      const entry = await this.#historyAt(peerId, keys.historyId(peerId, 'out', id))
      if (entry === undefined || entry.status !== 'queued') return false
      // Not fsync'd: on a fast circuit the ack arrives while this write is still in flight, and the delivered
      // mark queues behind it. A crash may undo it; the entry is still in the outbox, so it is sent again.
      await this.#write([{ type: 'put', key: keys.history(peerId, entry.seq), value: JSON.stringify({ ...entry, status: 'sent' }) }], false)
      return true
    })
  }

  /**
   * Removes an acknowledged message from the outbox and sets its history status to 'delivered', in one
   * batch. Returns false (and changes nothing) if it is not in the outbox, e.g. a repeated acknowledgement.
   * The batch is not fsync'd (it is on the path from ack to `delivered`): a crash may undo it, and the message is
   * then sent again on the next session and dropped by the receiver's dedup (docs/PROTOCOL.md, "Client database").
   */
  async markDelivered(peerId: string, id: string): Promise<boolean> {
    assertPeerId(peerId)
    if (!isMessageId(id)) throw new InvalidArgumentError('message id must be 128 bits of base64url')
    return this.#run(async () => {
      const indexKey = keys.outboxId(peerId, id)
      const historyIndexKey = keys.historyId(peerId, 'out', id)
      const [raw, historySeq] = await this.#getMany([indexKey, historyIndexKey])
      if (raw === undefined) return false
      const ops: Op[] = [
        { type: 'del', key: keys.outbox(peerId, decodeSeq(indexKey, raw)) },
        { type: 'del', key: indexKey },
      ]
      const entry = historySeq === undefined ? undefined : await this.#historyEntry(peerId, historyIndexKey, historySeq)
      if (entry !== undefined) {
        ops.push({ type: 'put', key: keys.history(peerId, entry.seq), value: JSON.stringify({ ...entry, status: 'delivered' }) })
      }
      await this.#write(ops, false)
      return true
    })
  }

  // ------------------------------------------------------------------------------------------ history

  /** Appends an entry. A message ID already in this contact's history (same direction) is refused. */
  async appendHistory(peerId: string, entry: NewHistoryEntry): Promise<HistoryEntry> {
    assertPeerId(peerId)
    argument(historyProblem(entry))
    if (isRecord(entry) && 'seq' in entry) throw new InvalidArgumentError('history entries get their seq from the database')
    return this.#run(async () => {
      await this.#requireContact(peerId)
      if ((await this.#get(keys.historyId(peerId, entry.direction, entry.id))) !== undefined) {
        throw new InvalidArgumentError(`message ${entry.id} is already in the history of ${peerId}`)
      }
      const { ops, stored } = this.#appendOps(peerId, await this.#nextSeq(peerId, 'h'), entry)
      await this.#write(ops)
      return stored
    })
  }

  /**
   * The latest `limit` entries (default 50, at most 1000) with seq below `before` (exclusive; default: no
   * bound), oldest first. Pass the first entry's seq as `before` to page back.
   */
  async history(peerId: string, options: { limit?: number; before?: number } = {}): Promise<HistoryEntry[]> {
    assertPeerId(peerId)
    const { limit = DEFAULT_HISTORY_LIMIT, before } = options
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT) {
      throw new InvalidArgumentError(`limit must be an integer in [1, ${MAX_HISTORY_LIMIT}]`)
    }
    if (before !== undefined && !isTime(before)) throw new InvalidArgumentError('before must be a non-negative integer (a history seq)')
    const prefix = keys.historyPrefix(peerId)
    const lt = before === undefined ? prefix + HIGH : keys.history(peerId, before)
    return this.#run(async () => {
      const entries = await this.#db.iterator({ gt: prefix, lt, reverse: true, limit }).all()
      return entries.reverse().map(([key, raw]) => decode<HistoryEntry>(key, raw, historyProblem, true))
    })
  }

  /** True if an incoming message with this ID from this contact was already recorded. */
  async hasReceived(peerId: string, id: string): Promise<boolean> {
    assertPeerId(peerId)
    if (!isMessageId(id)) throw new InvalidArgumentError('message id must be 128 bits of base64url')
    return this.#run(async () => (await this.#get(keys.historyId(peerId, 'in', id))) !== undefined)
  }

  /**
   * Stores an incoming message as 'received' unless this ID was already received from this contact.
   * Check and insert are atomic. Returns false for a duplicate (nothing stored).
   */
  async recordIncoming(peerId: string, message: IncomingMessage): Promise<boolean> {
    assertPeerId(peerId)
    if (!isRecord(message)) throw new InvalidArgumentError('message must be an object')
    const entry: NewHistoryEntry = { id: message.id, direction: 'in', body: message.body, at: message.at, status: 'received' }
    argument(historyProblem(entry))
    return this.#run(async () => {
      const counterKey = keys.counter(peerId, 'h')
      const [contact, known, counter] = await this.#getMany([keys.contact(peerId), keys.historyId(peerId, 'in', entry.id), counterKey])
      requireContact(peerId, contact)
      if (known !== undefined) return false
      // Synced before we ack: the sender deletes its copy on our ack.
      await this.#write(this.#appendOps(peerId, seqAfter(counterKey, counter), entry).ops)
      return true
    })
  }

  // ------------------------------------------------------------------------------------------ own state

  async getState(key: string): Promise<unknown> {
    if (typeof key !== 'string' || !STATE_KEY.test(key)) throw new InvalidArgumentError('state key must match [a-z0-9][a-z0-9._-]{0,63}')
    return this.#run(async () => {
      const raw = await this.#get(keys.state(key))
      if (raw === undefined) return undefined
      try {
        return JSON.parse(raw) as unknown
      } catch (cause) {
        throw corrupt(keys.state(key), 'not valid JSON', cause)
      }
    })
  }

  async putState(key: string, value: unknown): Promise<void> {
    if (typeof key !== 'string' || !STATE_KEY.test(key)) throw new InvalidArgumentError('state key must match [a-z0-9][a-z0-9._-]{0,63}')
    let raw: string | undefined
    try {
      raw = JSON.stringify(value)
    } catch (cause) {
      throw new InvalidArgumentError('state value must be JSON-serializable', { cause })
    }
    if (raw === undefined) throw new InvalidArgumentError('state value must be JSON-serializable')
    if (raw.length > MAX_STATE_BYTES) throw new InvalidArgumentError(`state value must be at most ${MAX_STATE_BYTES} bytes of JSON`)
    const text = raw
    return this.#run(() => this.#write([{ type: 'put', key: keys.state(key), value: text }]))
  }
}

function decodeKeyOrUndefined(text: string): Uint8Array | undefined {
  try {
    return fromBase64url(text, 32)
  } catch {
    return undefined
  }
}

function decodeKey(text: string): Uint8Array {
  const key = decodeKeyOrUndefined(text)
  if (key === undefined) throw new InvalidArgumentError('identityKey must be 32 bytes of base64url')
  return key
}
