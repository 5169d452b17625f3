/**
 * The peer client: one account on its own supervised tor, an onion service for incoming sessions, a signed
 * record in the directories, contacts with pinned identity keys, one encrypted session per contact (connection.ts)
 * with heartbeats, and a persistent outbox delivered exactly once, in order. It implements ClientHandle; the UI,
 * the headless mode and the tests see nothing else.
 *
 * Behaviour (sessions, hello flags, dedup, outbox, presence, redial): docs/PROTOCOL.md, "Client behaviour".
 */
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { assertPublished, DirectoryClient } from '../directory-client.js'
import { describeError, DirectoryError, hasCode, InvalidArgumentError, P2PMessError, SessionError, StorageError } from '../errors.js'
import { NODE_DH } from '../crypto/node-dh.js'
import { silentLogger, type Logger } from '../log.js'
import { fromBase64url, fromUtf8, toBase64url, utf8, wipe } from '../protocol/bytes.js'
import { DEFAULT_HEARTBEAT_INTERVAL } from '../protocol/heartbeat.js'
import { parsePeerId, safetyNumber } from '../protocol/identity.js'
import { encodeMessage, newMessageId, type HelloMessage, type TextMessage } from '../protocol/messages.js'
import { onionServiceKeyFromSeed } from '../protocol/onion.js'
import { createRecord, serializeRecord, verifyRecord, type DirectoryRecord, type VerifiedRecord } from '../protocol/record.js'
import { prepareSessionKeys, staleKeyRetry, type AuthenticatedPeer, type SessionKeys } from '../protocol/session.js'
import { createAccount, loadAccount, type Account } from '../store/account.js'
import { ClientDb, type Contact, type OutboxEntry } from '../store/db.js'
import { databasePath } from '../store/paths.js'
import type { NetworkJoin } from '../tor/process.js'
import { TorSupervisor, type SupervisorEvent } from '../tor/supervisor.js'
import type { ClientEvent, ClientHandle, ClientIntent, ContactView, IntentResult, MessageView, Presence } from './api.js'
import { DEFAULT_BACKOFF, redialDelay, survivingSession, type BackoffPolicy, type Initiator } from './backoff.js'
import { Connection, SESSION_PORT, type CloseCause, type SessionMessage } from './connection.js'

export const CLIENT_NAME = 'p2pmess'
export const CLIENT_VERSION = '0.1.0'
/** Hello capability: "I have accepted you as a contact" (we added you, or accepted your request). */
export const CAPABILITY_ACCEPTS = 'accepts'
export const CAPABILITY_ACK = 'ack'
export const DEFAULT_RECORD_LIFETIME_MS = 24 * 3600 * 1000
const DEFAULT_DIAL_TIMEOUT_MS = 120_000
const DEFAULT_PUBLISH_WAIT_MS = 30_000
/** Incoming streams (handshaking or live) held at once; more are cut at once. */
const MAX_INCOMING = 64
/** Longest our hello waits for the peer's on a session we dialled (see #attach). */
const HELLO_HOLD_MS = 500
const RECORD_SEQ_KEY = 'record-seq'
/** The most history entries ClientDb.history returns at once. */
const MAX_HISTORY = 1000

export interface StartClientOptions {
  dataDir: string
  /** Unlocks the account in dataDir (created there if there is none). Ignored when `account` is given. */
  passphrase?: string
  /** An unlocked account; the caller keeps ownership (it is not wiped by stop()). */
  account?: Account
  /** Directory base URLs, e.g. `http://<56>.onion`. */
  directories: string[]
  /** The private test network to join; undefined = the real Tor network. */
  network?: NetworkJoin
  torPath?: string
  /** H of the heartbeat rule (default 15 s): a dead peer is noticed within 2H. */
  heartbeatIntervalMs?: number
  logger?: Logger
  /** Subscribed before anything starts (sees bootstrap progress and 'ready'). */
  onEvent?: (event: ClientEvent) => void
  /** Wall clock, Unix ms (records, message times). Default Date.now. */
  now?: () => number
  /** Uniform [0, 1) for backoff jitter. Default Math.random. */
  random?: () => number
  backoff?: Partial<BackoffPolicy>
  /** Budget of one dial through tor (descriptor fetch, rendezvous, retries). Default 120 s. */
  dialTimeoutMs?: number
  handshakeTimeoutMs?: number
  /** Lifetime of our directory record; it is refreshed at half-life. Default 24 h. */
  recordLifetimeMs?: number
  /** How long startClient waits for the first directory upload before resolving anyway. Default 30 s. */
  publishWaitMs?: number
}

/** A running client. */
export interface P2PMessClient extends ClientHandle {
  readonly onion: string
}

/** One session with a contact, from our side. */
interface Session {
  readonly conn: Connection
  readonly initiator: Initiator
  readonly peer: AuthenticatedPeer
  /** The peer's hello arrived: it is live (docs/PROTOCOL.md "Session handshake", Replay). */
  hello: boolean
  /** The peer's hello said it accepts us. */
  peerAccepts: boolean
  /** Our hello said we accept them. */
  readonly weAccept: boolean
  /**
   * Highest outbox seq written on this session; undefined until the first flush. The outbox is in seq order, so
   * each flush writes only the entries after it: each entry at most once per session, in order.
   */
  written: number | undefined
  closed: boolean
  /** Releases our held hello (sessions we dialled: see #attach); idempotent. */
  release: () => void
}

type Dial = { kind: 'idle' } | { kind: 'dialing'; abort: AbortController } | { kind: 'waiting'; timer: NodeJS.Timeout }

interface Peer {
  contact: Contact
  presence: Presence
  rttMs: number | undefined
  queued: number
  live: Session | undefined
  dial: Dial
  /** Failed connection attempts since the last live session. */
  failures: number
  /** Code of the last error event about this peer's sessions; the same failure is reported once, not per redial. */
  reported: string | undefined
  /**
   * The safety number shown with every contact event, kept with the pinned key it was computed for: computing it
   * validates both Ed25519 points (~0.7 ms), which sat on the path of every send.
   */
  safety: { identityKey: string; text: string } | undefined
}

function newPeer(contact: Contact, queued: number): Peer {
  return { contact, presence: 'offline', rttMs: undefined, queued, live: undefined, dial: { kind: 'idle' }, failures: 0, reported: undefined, safety: undefined }
}

function wantsSession(contact: Contact): boolean {
  return contact.state === 'pending' || contact.state === 'accepted'
}

/** The `seq` of a record's JSON text, nothing checked; NaN when it has none (such a text fails verification anyway). */
function recordSeqOf(text: string): number {
  try {
    const value: unknown = JSON.parse(text)
    const seq = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)['seq'] : undefined
    return typeof seq === 'number' ? seq : Number.NaN
  } catch {
    return Number.NaN
  }
}

function asP2P(err: unknown): P2PMessError {
  return err instanceof P2PMessError ? err : new SessionError('ERR_SESSION_CLOSED', describeError(err), { cause: err })
}

/**
 * Dial failures the user must hear about: someone may be impersonating the contact, a directory is lying, or
 * the contact's onion answered but dropped our handshake (its Noise key is not the one in its signed record,
 * even after a fresh lookup; or it refused us).
 */
const ALARMING = new Set([
  'ERR_SESSION_KEY_MISMATCH',
  'ERR_PEER_UNAUTHENTICATED',
  'ERR_DIRECTORY_INVALID_RECORD',
  'ERR_SESSION_HANDSHAKE',
  'ERR_SESSION_UNANSWERED',
])

function checkOptions(options: StartClientOptions): void {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object')
  if (typeof options.dataDir !== 'string' || options.dataDir === '') throw new InvalidArgumentError('dataDir must be a non-empty path')
  if (options.account === undefined && typeof options.passphrase !== 'string') {
    throw new InvalidArgumentError('either account or passphrase is required')
  }
  if (!Array.isArray(options.directories) || options.directories.length === 0) {
    throw new InvalidArgumentError('directories must be a non-empty array of directory URLs')
  }
  const ms = (name: string, value: unknown, min: number): void => {
    if (value !== undefined && (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > 2 ** 30)) {
      throw new InvalidArgumentError(`${name} must be an integer number of ms in ${min}..2^30`)
    }
  }
  ms('heartbeatIntervalMs', options.heartbeatIntervalMs, 1)
  ms('dialTimeoutMs', options.dialTimeoutMs, 1)
  ms('handshakeTimeoutMs', options.handshakeTimeoutMs, 1)
  ms('recordLifetimeMs', options.recordLifetimeMs, 120_000)
  ms('publishWaitMs', options.publishWaitMs, 0)
  for (const f of ['now', 'random', 'onEvent'] as const) {
    if (options[f] !== undefined && typeof options[f] !== 'function') throw new InvalidArgumentError(`${f} must be a function`)
  }
}

/**
 * Starts a client: db, local listener, tor, onion service (the same address every start), then the signed record
 * in the directories (awaited up to `publishWaitMs`, retried in the background after that), then sessions with
 * every contact that has something to say.
 */
export async function startClient(options: StartClientOptions): Promise<P2PMessClient> {
  checkOptions(options)
  const ownsAccount = options.account === undefined
  const account = options.account ?? (await openAccount(options.dataDir, options.passphrase ?? ''))
  const client = new Client(options, account, ownsAccount)
  try {
    await client.start()
  } catch (err) {
    await client.stop()
    throw err
  }
  return client
}

async function openAccount(dataDir: string, passphrase: string): Promise<Account> {
  try {
    return await loadAccount({ dataDir, passphrase })
  } catch (err) {
    if (!hasCode(err, 'ERR_NO_ACCOUNT')) throw err
    return createAccount({ dataDir, passphrase })
  }
}

class Client implements P2PMessClient {
  readonly peerId: string
  readonly onion: string
  readonly #options: StartClientOptions
  readonly #account: Account
  readonly #ownsAccount: boolean
  readonly #log: Logger
  readonly #now: () => number
  readonly #random: () => number
  readonly #backoff: BackoffPolicy
  readonly #heartbeat: number
  /** Our identity and Noise keys, checked and ready for every handshake (the Noise key inside OpenSSL). */
  readonly #keys: SessionKeys
  readonly #listeners = new Set<(event: ClientEvent) => void>()
  readonly #peers = new Map<string, Peer>()
  /** Per peer ID: every db-touching step for that peer runs in order (incoming texts, acks, outbox flushes). */
  readonly #chains = new Map<string, Promise<void>>()
  readonly #sockets = new Set<Socket>()
  readonly #connections = new Set<Connection>()
  #db: ClientDb | undefined
  #server: Server | undefined
  #tor: TorSupervisor | undefined
  #directory: DirectoryClient | undefined
  #record: DirectoryRecord | undefined
  #recordBytes: Uint8Array | undefined
  #publishTimer: NodeJS.Timeout | undefined
  #publishFailures = 0
  #stopping: Promise<void> | undefined

  constructor(options: StartClientOptions, account: Account, ownsAccount: boolean) {
    this.#options = options
    this.#account = account
    this.#ownsAccount = ownsAccount
    this.peerId = account.peerId
    this.onion = account.onionAddress
    this.#log = options.logger ?? silentLogger
    this.#now = options.now ?? Date.now
    this.#random = options.random ?? Math.random
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff }
    redialDelay(1, 0, this.#backoff) // validates the policy now rather than at the first failure
    this.#heartbeat = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL
    this.#keys = prepareSessionKeys(
      { seed: account.identitySeed, publicKey: account.identityKey },
      { secretKey: account.noiseSecret, publicKey: account.noisePublic },
      NODE_DH,
    )
    if (options.onEvent !== undefined) this.#listeners.add(options.onEvent)
  }

  // ------------------------------------------------------------------------------------------ start / stop

  async start(): Promise<void> {
    const options = this.#options
    this.#db = await ClientDb.open(databasePath(options.dataDir))
    for (const contact of await this.#db.listContacts()) {
      const queued = (await this.#db.pending(contact.peerId)).length
      this.#peers.set(contact.peerId, newPeer(contact, queued))
    }
    const server = createServer({ noDelay: true }, (socket) => this.#incoming(socket))
    this.#server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', (cause) => reject(new StorageError('ERR_STORAGE_IO', 'cannot open the local session listener', { cause })))
      server.listen(0, '127.0.0.1', () => resolve())
    })
    server.on('error', (err) => this.#log.warn('session listener error', { error: describeError(err) }))
    const targetPort = (server.address() as { port: number }).port

    this.#tor = await TorSupervisor.start({
      dataDir: join(options.dataDir, 'tor'),
      logger: this.#log,
      onEvent: (e) => this.#onTorEvent(e),
      ...(options.network === undefined ? {} : { network: options.network }),
      ...(options.torPath === undefined ? {} : { torPath: options.torPath }),
    })
    this.#checkRunning()
    const { expandedSecretKey } = onionServiceKeyFromSeed(this.#account.onionSeed)
    try {
      await this.#tor.addOnionService({ expandedSecretKey, virtualPort: SESSION_PORT, targetPort })
    } finally {
      wipe(expandedSecretKey)
    }
    this.#checkRunning()
    this.#log.info('onion service published', { onion: this.onion, targetPort })
    this.#emit({ type: 'ready', peerId: this.peerId, onion: this.onion })

    this.#directory = new DirectoryClient({ urls: options.directories, agent: this.#tor.dialer.agent(), now: this.#now })
    await this.#makeRecord()
    const first = this.#publishLoop()
    const wait = options.publishWaitMs ?? DEFAULT_PUBLISH_WAIT_MS
    let timer: NodeJS.Timeout | undefined
    await Promise.race([first, new Promise<void>((resolve) => (timer = setTimeout(resolve, wait)))])
    clearTimeout(timer)
    for (const peer of this.#peers.values()) void this.#connect(peer)
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      clearTimeout(this.#publishTimer)
      for (const peer of this.#peers.values()) this.#cancelDial(peer)
      await Promise.all([...this.#connections].map((c) => c.close('shutdown')))
      for (const socket of this.#sockets) socket.destroy()
      this.#directory?.close() // its kept-alive streams
      const server = this.#server
      if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()))
      await this.#tor?.stop().catch((err: unknown) => this.#log.warn('tor stop failed', { error: describeError(err) }))
      await Promise.all([...this.#chains.values()])
      await this.#db?.close()
      this.#keys.noise.destroy()
      if (this.#ownsAccount) this.#account.wipe()
      this.#log.info('client stopped')
    })()
    return this.#stopping
  }

  #checkRunning(): void {
    if (this.#stopping !== undefined) throw new SessionError('ERR_SESSION_CLOSED', 'the client was stopped during start-up')
  }

  #onTorEvent(e: SupervisorEvent): void {
    switch (e.type) {
      case 'bootstrap':
        return this.#emit({ type: 'bootstrap', progress: e.progress, summary: e.summary })
      case 'starting':
      case 'stopped':
        return this.#emit({ type: 'tor', state: e.type })
      case 'ready':
        return this.#emit({ type: 'tor', state: 'ready', detail: `socks port ${e.socksPort}, restarts ${e.restarts}` })
      case 'restarting':
        return this.#emit({ type: 'tor', state: 'restarting', detail: describeError(e.reason) })
      case 'failed':
        this.#emit({ type: 'tor', state: 'failed', detail: describeError(e.error) })
        return this.#emit({ type: 'error', code: e.error.code, message: e.error.message })
    }
  }

  // ------------------------------------------------------------------------------------------ own record

  /**
   * A new signed record with seq = max(last used + 1, now in seconds), persisted before use so seq strictly
   * increases across restarts even when the clock goes back.
   */
  async #makeRecord(floor = 0): Promise<DirectoryRecord> {
    const db = this.#requireDb()
    const stored = await db.getState(RECORD_SEQ_KEY)
    const last = Math.max(typeof stored === 'number' && Number.isSafeInteger(stored) ? stored : 0, this.#account.recordSeq)
    const now = this.#now()
    const seq = Math.max(last + 1, Math.floor(now / 1000), floor)
    await db.putState(RECORD_SEQ_KEY, seq)
    const lifetime = this.#options.recordLifetimeMs ?? DEFAULT_RECORD_LIFETIME_MS
    const record = createRecord({
      identitySeed: this.#account.identitySeed,
      onion: this.onion,
      noiseKey: this.#account.noisePublic,
      seq,
      expires: Math.floor((now + lifetime) / 1000),
    })
    this.#record = record
    this.#recordBytes = utf8(serializeRecord(record))
    return record
  }

  /** Publishes the current record (a 409 bumps seq past the directory's and retries), then schedules the next. */
  async #publishLoop(): Promise<void> {
    if (this.#stopping !== undefined) return
    const directory = this.#requireDirectory()
    try {
      let record = this.#record ?? (await this.#makeRecord())
      for (let attempt = 1; ; attempt++) {
        const results = await directory.publish(record)
        try {
          assertPublished(results)
          const ok = results.filter((r) => r.ok).length
          this.#log.info('record published', { seq: record.seq, directories: ok })
          this.#emit({ type: 'published', seq: record.seq, directories: ok })
          break
        } catch (err) {
          if (!hasCode(err, 'ERR_DIRECTORY_STALE_SEQ') || attempt >= 3) throw err
          const theirs = await directory.lookup(this.peerId, { fresh: true }).catch(() => undefined)
          record = await this.#makeRecord((theirs?.record.seq ?? record.seq) + 1)
        }
      }
      this.#publishFailures = 0
      // Refresh at half-life with a new seq.
      const lifetime = this.#options.recordLifetimeMs ?? DEFAULT_RECORD_LIFETIME_MS
      this.#schedulePublish(Math.floor(lifetime / 2), true)
    } catch (err) {
      if (this.#stopping !== undefined) return
      this.#publishFailures++
      const error = asP2P(err)
      this.#log.warn('record publication failed', { error: describeError(error), failures: this.#publishFailures })
      this.#emit({ type: 'error', code: error.code, message: `Could not publish our record: ${error.message}` })
      this.#schedulePublish(redialDelay(this.#publishFailures, this.#random(), this.#backoff), false)
    }
  }

  #schedulePublish(delayMs: number, renew: boolean): void {
    if (this.#stopping !== undefined) return
    clearTimeout(this.#publishTimer)
    this.#publishTimer = setTimeout(() => {
      void (async () => {
        if (renew) await this.#makeRecord()
        await this.#publishLoop()
      })().catch((err: unknown) => this.#log.warn('record refresh failed', { error: describeError(err) }))
    }, delayMs)
    this.#publishTimer.unref()
  }

  // ------------------------------------------------------------------------------------------ events

  onEvent(listener: (event: ClientEvent) => void): () => void {
    if (typeof listener !== 'function') throw new InvalidArgumentError('listener must be a function')
    const wrapped = (e: ClientEvent): void => listener(e)
    this.#listeners.add(wrapped)
    return () => {
      this.#listeners.delete(wrapped)
    }
  }

  #emit(event: ClientEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event)
      } catch (err) {
        this.#log.warn('event listener threw', { error: describeError(err) })
      }
    }
  }

  #view(peer: Peer): ContactView {
    const c = peer.contact
    if (peer.safety?.identityKey !== c.identityKey) {
      peer.safety = { identityKey: c.identityKey, text: safetyNumber(this.#account.identityKey, fromBase64url(c.identityKey, 32)) }
    }
    return {
      peerId: c.peerId,
      ...(c.name === undefined ? {} : { name: c.name }),
      state: c.state,
      presence: peer.presence,
      ...(peer.rttMs === undefined ? {} : { rttMs: peer.rttMs }),
      safetyNumber: peer.safety.text,
      queued: peer.queued,
    }
  }

  #emitContact(peer: Peer): void {
    this.#emit({ type: 'contact', contact: this.#view(peer) })
  }

  #setPresence(peer: Peer, presence: Presence): void {
    if (peer.presence === presence) return
    peer.presence = presence
    if (presence !== 'online') peer.rttMs = undefined
    this.#log.info('presence', { peerId: peer.contact.peerId, presence })
    this.#emit({ type: 'presence', peerId: peer.contact.peerId, presence })
  }

  contacts(): ContactView[] {
    return [...this.#peers.values()].map((p) => this.#view(p))
  }

  // ------------------------------------------------------------------------------------------ intents

  async dispatch(intent: ClientIntent): Promise<IntentResult> {
    try {
      if (typeof intent !== 'object' || intent === null) throw new InvalidArgumentError('intent must be an object')
      if (this.#stopping !== undefined && intent.cmd !== 'quit') throw new SessionError('ERR_SESSION_CLOSED', 'the client is stopped')
      switch (intent.cmd) {
        case 'add':
          return await this.#add(intent.peerId, intent.name)
        case 'accept':
          return await this.#accept(intent.peerId)
        case 'refuse':
          return await this.#refuse(intent.peerId)
        case 'send':
          return { ok: true, id: await this.#send(intent.peerId, intent.body) }
        case 'contacts':
          return { ok: true, contacts: this.contacts() }
        case 'history':
          return { ok: true, messages: await this.#history(intent.peerId, intent.limit) }
        case 'retry':
          return this.#retry(intent.peerId)
        case 'quit':
          await this.stop()
          return { ok: true }
        default:
          throw new InvalidArgumentError(`unknown command ${JSON.stringify((intent as { cmd: unknown }).cmd)}`)
      }
    } catch (err) {
      const error = asP2P(err)
      return { ok: false, code: error.code, message: error.message }
    }
  }

  #peer(peerId: unknown): Peer {
    if (typeof peerId !== 'string') throw new InvalidArgumentError('peerId must be a string')
    const peer = this.#peers.get(parsePeerId(peerId))
    if (peer === undefined) throw new SessionError('ERR_UNKNOWN_CONTACT', `${peerId} is not a contact`, { details: { peerId } })
    return peer
  }

  async #add(text: unknown, name: unknown): Promise<IntentResult> {
    if (typeof text !== 'string') throw new InvalidArgumentError('peerId must be a string')
    if (name !== undefined && (typeof name !== 'string' || name.length === 0 || name.length > 128)) {
      throw new InvalidArgumentError('name must be 1-128 characters')
    }
    const peerId = parsePeerId(text)
    if (peerId === this.peerId) throw new InvalidArgumentError('that is your own peer ID')
    // The directory answer is verified against the peer ID (self-certifying), so its identity key is theirs.
    const verified = this.#peers.has(peerId) ? undefined : await this.#requireDirectory().lookup(peerId, { fresh: true })
    await this.#inChain(peerId, async () => {
      const existing = this.#peers.get(peerId) // perhaps they called us while we looked them up
      if (existing !== undefined) return this.#acceptInChain(existing, name)
      if (verified === undefined) return
      const contact: Contact = {
        peerId,
        ...(name === undefined ? {} : { name }),
        identityKey: toBase64url(verified.identityKey),
        state: 'pending',
        lastRecord: verified.record,
        addedAt: this.#now(),
      }
      await this.#requireDb().putContact(contact)
      const peer = newPeer(contact, 0)
      this.#peers.set(peerId, peer)
      this.#log.info('contact added', { peerId })
      this.#emitContact(peer)
    })
    const peer = this.#peers.get(peerId)
    if (peer !== undefined) void this.#connect(peer)
    return { ok: true }
  }

  async #accept(peerId: string): Promise<IntentResult> {
    const peer = this.#peer(peerId)
    await this.#inChain(peerId, () => this.#acceptInChain(peer, undefined))
    void this.#connect(peer)
    return { ok: true }
  }

  /**
   * Accepting a request (or adding someone who already called us). Our hello in the live session, if any, said
   * we do not accept them, and hello is sent once per session: that session ends with bye "accepted" and we dial
   * them again with a hello that accepts.
   */
  async #acceptInChain(peer: Peer, name: string | undefined): Promise<void> {
    const named = name === undefined ? {} : { name }
    if (wantsSession(peer.contact)) {
      if (name !== undefined) await this.#saveContact(peer, { ...peer.contact, ...named })
    } else {
      await this.#saveContact(peer, { ...peer.contact, state: 'accepted', ...named })
      this.#log.info('contact accepted', { peerId: peer.contact.peerId })
    }
    this.#emitContact(peer)
    const live = peer.live
    if (live !== undefined && !live.weAccept) void live.conn.close('done', 'accepted')
    peer.failures = 0
    this.#cancelDial(peer)
  }

  async #refuse(peerId: string): Promise<IntentResult> {
    const peer = this.#peer(peerId)
    await this.#saveContact(peer, { ...peer.contact, state: 'refused' })
    this.#cancelDial(peer)
    await peer.live?.conn.close('done', 'refused')
    this.#setPresence(peer, 'offline')
    this.#emitContact(peer)
    return { ok: true }
  }

  async #send(peerId: string, body: unknown): Promise<string> {
    const peer = this.#peer(peerId)
    if (!wantsSession(peer.contact)) {
      throw new SessionError('ERR_UNKNOWN_CONTACT', peer.contact.state === 'request' ? 'accept the request first' : 'this contact was refused', { details: { peerId } })
    }
    const idBytes = newMessageId()
    const createdAt = this.#now()
    // The wire codec's rules (length, control characters, well-formed Unicode) apply before anything is queued.
    encodeMessage({ type: 'text', id: idBytes, seq: 0, sentAt: createdAt, body: body as string })
    const id = toBase64url(idBytes)
    const text = body as string
    const entry = await this.#requireDb().enqueue(peer.contact.peerId, { id, body: text, createdAt })
    peer.queued++
    this.#emit({ type: 'message', message: { peerId: peer.contact.peerId, id, direction: 'out', body: text, at: createdAt, status: 'queued' } })
    this.#emitContact(peer)
    this.#serial(peer.contact.peerId, () => this.#flush(peer, entry))
    return id
  }

  async #history(peerId: string, limit: number | undefined): Promise<MessageView[]> {
    const peer = this.#peer(peerId)
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) throw new InvalidArgumentError('limit must be a positive integer')
    // Asking for more than the database hands out at once gets the most it does (the latest entries).
    const entries = await this.#requireDb().history(peer.contact.peerId, limit === undefined ? {} : { limit: Math.min(limit, MAX_HISTORY) })
    return entries.map((e) => ({ peerId: peer.contact.peerId, id: e.id, direction: e.direction, body: e.body, at: e.at, status: e.status }))
  }

  /** Redial now (one contact, or every contact without a live session), with a fresh directory lookup. */
  #retry(peerId: string | undefined): IntentResult {
    const peers = peerId === undefined ? [...this.#peers.values()] : [this.#peer(peerId)]
    for (const peer of peers) {
      if (peer.dial.kind === 'waiting') this.#cancelDial(peer)
      peer.failures = Math.max(peer.failures, 1) // forces a fresh lookup
      void this.#connect(peer)
    }
    return { ok: true }
  }

  async #saveContact(peer: Peer, contact: Contact): Promise<void> {
    await this.#requireDb().putContact(contact)
    peer.contact = contact
  }

  // ------------------------------------------------------------------------------------------ dialing

  #cancelDial(peer: Peer): void {
    const dial = peer.dial
    if (dial.kind === 'waiting') clearTimeout(dial.timer)
    if (dial.kind === 'dialing') dial.abort.abort()
    peer.dial = { kind: 'idle' }
  }

  /** Schedules the next attempt with capped exponential backoff and jitter (backoff.ts). */
  #scheduleRedial(peer: Peer): void {
    if (this.#stopping !== undefined || !wantsSession(peer.contact) || peer.live !== undefined || peer.dial.kind !== 'idle') return
    const delay = redialDelay(Math.max(1, peer.failures), this.#random(), this.#backoff)
    const timer = setTimeout(() => {
      peer.dial = { kind: 'idle' }
      void this.#connect(peer)
    }, delay)
    timer.unref()
    peer.dial = { kind: 'waiting', timer }
    this.#log.debug('redial scheduled', { peerId: peer.contact.peerId, delayMs: delay, failures: peer.failures })
  }

  /** The newest verified record we can get: directories first (fresh after failures), else the stored one. */
  async #recordFor(peer: Peer, fresh: boolean): Promise<VerifiedRecord> {
    let found: VerifiedRecord | undefined
    let failure: unknown
    try {
      found = await this.#requireDirectory().lookup(peer.contact.peerId, { fresh })
    } catch (err) {
      failure = err
    }
    const stored = peer.contact.lastRecord === undefined ? undefined : verifyRecord(peer.contact.lastRecord, { now: this.#now(), expectedId: peer.contact.peerId })
    if (stored?.ok === true && (found === undefined || stored.record.seq >= found.record.seq)) found = stored
    if (found === undefined) throw failure
    if (toBase64url(found.identityKey) !== peer.contact.identityKey) {
      throw new SessionError('ERR_SESSION_KEY_MISMATCH', 'the record does not carry the pinned identity key', { details: { peerId: peer.contact.peerId } })
    }
    await this.#remember(peer, found.record)
    return found
  }

  /** Stores a verified record for the contact when it is newer (a changed onion or Noise key needs a higher seq). */
  async #remember(peer: Peer, record: DirectoryRecord): Promise<void> {
    const known = peer.contact.lastRecord
    if (known !== undefined && known.seq >= record.seq) return
    await this.#saveContact(peer, { ...peer.contact, lastRecord: record })
  }

  /** Dials the contact's onion and runs the handshake (with the stale-key retry); the session goes live on hello. */
  async #connect(peer: Peer): Promise<void> {
    if (this.#stopping !== undefined || !wantsSession(peer.contact) || peer.live !== undefined || peer.dial.kind !== 'idle') return
    const abort = new AbortController()
    peer.dial = { kind: 'dialing', abort }
    const peerId = peer.contact.peerId
    if (peer.presence !== 'online') this.#setPresence(peer, 'connecting')
    try {
      let verified = await this.#recordFor(peer, peer.failures > 0)
      let conn: Connection | undefined
      for (let attempt = 1; conn === undefined; attempt++) {
        abort.signal.throwIfAborted()
        const tor = this.#requireTor()
        const socket = await tor.dialer.dialWithRetry(verified.record.onion, SESSION_PORT, {
          deadlineMs: this.#options.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS,
          signal: abort.signal,
          // An attempt that hung is usually tor holding a descriptor from before the contact restarted.
          onRetry: ({ error, attempt }) => {
            this.#log.info('dial attempt failed', { peerId, attempt, code: error.code })
            if (error.code !== 'ERR_CONNECT_TIMEOUT') return
            tor.forgetOnionDescriptors().catch((err: unknown) => this.#log.warn('NEWNYM failed', { error: describeError(err) }))
          },
        })
        this.#track(socket)
        this.#log.debug('tor stream open', { peerId, attempt })
        try {
          conn = await Connection.initiate(socket, {
            keys: this.#keys,
            remoteNoiseKey: verified.noiseKey,
            remoteOnion: verified.record.onion,
            expectedPeerId: peerId,
            ...this.#sessionOptions(),
          })
        } catch (err) {
          // No answer to message 1: perhaps their Noise key changed since we fetched the record (staleKeyRetry).
          if (!hasCode(err, 'ERR_SESSION_CLOSED') && !hasCode(err, 'ERR_SESSION_TIMEOUT')) throw err
          const fresh = await this.#recordFor(peer, true).catch(() => undefined)
          const next = staleKeyRetry({ usedNoiseKey: verified.noiseKey, freshNoiseKey: fresh?.noiseKey, attempt })
          if (next.action === 'give-up') throw next.error
          verified = fresh ?? verified
        }
      }
      if (abort.signal.aborted || this.#stopping !== undefined) {
        void conn.close('done', 'duplicate')
        return
      }
      peer.dial = { kind: 'idle' }
      this.#attach(conn, 'local')
    } catch (err) {
      if (peer.dial.kind === 'dialing' && peer.dial.abort === abort) peer.dial = { kind: 'idle' }
      if (abort.signal.aborted || this.#stopping !== undefined) return
      const error = asP2P(err)
      peer.failures++
      this.#log.info('dial failed', { peerId, code: error.code, failures: peer.failures })
      if (peer.live === undefined) this.#setPresence(peer, 'offline')
      if (ALARMING.has(error.code) && peer.reported !== error.code) {
        peer.reported = error.code
        this.#emit({ type: 'error', code: error.code, message: error.message, peerId })
      }
      this.#scheduleRedial(peer)
    }
  }

  #sessionOptions(): { heartbeatIntervalMs: number; handshakeTimeoutMs?: number; record?: Uint8Array } {
    return {
      heartbeatIntervalMs: this.#heartbeat,
      ...(this.#options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: this.#options.handshakeTimeoutMs }),
      ...(this.#recordBytes === undefined ? {} : { record: this.#recordBytes }),
    }
  }

  #track(socket: Socket): void {
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
  }

  // ------------------------------------------------------------------------------------------ sessions

  #incoming(socket: Socket): void {
    socket.on('error', () => {}) // the Connection reports failures; this only keeps an early reset from throwing
    if (this.#stopping !== undefined || this.#sockets.size >= MAX_INCOMING) {
      socket.destroy()
      return
    }
    this.#track(socket)
    Connection.respond(socket, {
      keys: this.#keys,
      ownOnion: this.onion,
      ...this.#sessionOptions(),
      // Refused peers are dropped without an answer. Unknown callers are admitted but stay a 'request' until
      // their hello proves they are live (a replayed message 1 never gets that far).
      admit: (caller) => this.#stopping === undefined && caller.peerId !== this.peerId && this.#peers.get(caller.peerId)?.contact.state !== 'refused',
    }).then(
      (conn) => this.#attach(conn, 'remote'),
      (err: unknown) => this.#log.info('incoming handshake failed', { code: asP2P(err).code }),
    )
  }

  /** Starts a handshaken connection: our hello says whether we accept them; theirs makes the session live. */
  #attach(conn: Connection, initiator: Initiator): void {
    const peer = conn.peer
    if (peer === undefined) return
    if (this.#stopping !== undefined) {
      void conn.close('shutdown')
      return
    }
    const known = this.#peers.get(peer.peerId)
    const weAccept = known !== undefined && wantsSession(known.contact)
    // On a session we dialled, the peer's hello comes right behind message 2 and its arrival flushes our outbox:
    // our hello is held until that first flush so both leave in one write (Connection.hold), never longer than
    // HELLO_HOLD_MS. Written apart, the first text would trail the hello by the flush's database steps and could
    // then wait ~40 ms for a delayed ACK inside tor.
    let release = (): void => {}
    if (initiator === 'local') {
      const unhold = conn.hold()
      const timer = setTimeout(unhold, HELLO_HOLD_MS)
      timer.unref()
      release = () => {
        clearTimeout(timer)
        unhold()
      }
    }
    const session: Session = { conn, initiator, peer, hello: false, peerAccepts: false, weAccept, written: undefined, closed: false, release }
    this.#connections.add(conn)
    const hello: HelloMessage = {
      type: 'hello',
      clientName: CLIENT_NAME,
      clientVersion: CLIENT_VERSION,
      capabilities: weAccept ? [CAPABILITY_ACK, CAPABILITY_ACCEPTS] : [CAPABILITY_ACK],
    }
    this.#log.info('session handshaken', { peerId: peer.peerId, session: conn.sessionId, initiator })
    conn.start(
      {
        message: (m) => this.#onMessage(session, m),
        rtt: (ms) => this.#onRtt(session, ms),
        closed: (cause) => this.#onClosed(session, cause),
      },
      hello,
    )
  }

  /** Runs `step` after every earlier step for this peer; the chain goes on whatever the step's outcome. */
  #inChain<T>(peerId: string, step: () => Promise<T>): Promise<T> {
    const run = (this.#chains.get(peerId) ?? Promise.resolve()).then(step)
    const tail = run.then(
      () => undefined,
      () => undefined,
    )
    this.#chains.set(peerId, tail)
    void tail.then(() => {
      if (this.#chains.get(peerId) === tail) this.#chains.delete(peerId)
    })
    return run
  }

  /** A step nobody awaits: its failure is logged and reported as an error event. */
  #serial(peerId: string, step: () => Promise<void>): void {
    this.#inChain(peerId, step).catch((err: unknown) => {
      const error = asP2P(err)
      this.#log.warn('session step failed', { peerId, code: error.code, error: error.message })
      if (!(error instanceof StorageError && this.#stopping !== undefined)) {
        this.#emit({ type: 'error', code: error.code, message: error.message, peerId })
      }
    })
  }

  #onMessage(session: Session, m: SessionMessage): void {
    const peerId = session.peer.peerId
    switch (m.type) {
      case 'hello':
        session.hello = true
        session.peerAccepts = m.capabilities.includes(CAPABILITY_ACCEPTS)
        return this.#serial(peerId, () =>
          this.#sessionUp(session)
            .catch((err: unknown) => {
              void session.conn.close('protocol-error')
              throw err
            })
            .finally(session.release),
        )
      case 'text':
        return this.#serial(peerId, () => this.#receiveText(session, m))
      case 'ack':
        return this.#serial(peerId, () => this.#receiveAck(session, m.ids))
    }
  }

  /** The peer's hello arrived: the session is live. Applies the duplicate rule, updates state, flushes the outbox. */
  async #sessionUp(session: Session): Promise<void> {
    if (session.closed) return
    const caller = session.peer
    const db = this.#requireDb()
    let peer = this.#peers.get(caller.peerId)
    if (peer === undefined) {
      // A request: pin the key the handshake proved (TOFU; the peer ID is derived from it anyway).
      const contact: Contact = { peerId: caller.peerId, identityKey: toBase64url(caller.identityKey), state: 'request', addedAt: this.#now() }
      await db.putContact(contact)
      peer = newPeer(contact, 0)
      this.#peers.set(caller.peerId, peer)
      this.#log.info('contact request', { peerId: caller.peerId })
      this.#emitContact(peer)
      this.#emit({ type: 'request', peerId: caller.peerId })
    } else {
      await db.pinContactKey(caller.peerId, caller.identityKey)
    }
    if (session.closed) return
    if (peer.contact.state === 'refused') {
      void session.conn.close('done', 'refused')
      return
    }
    await this.#rememberHandshakeRecord(peer, caller)
    if (!session.weAccept && wantsSession(peer.contact)) {
      // We accepted them after our hello went out (an add or accept raced the handshake): say it in a new session.
      void session.conn.close('done', 'accepted')
      this.#cancelDial(peer)
      void this.#connect(peer)
      return
    }

    const current = peer.live
    if (current !== undefined && current !== session && !current.closed) {
      const keep = survivingSession({ localPeerId: this.peerId, remotePeerId: caller.peerId, existing: current.initiator, newer: session.initiator })
      if (keep === 'existing') {
        void session.conn.close('done', 'duplicate')
        return
      }
      peer.live = session
      void current.conn.close('done', 'duplicate')
    }
    peer.live = session
    if (peer.dial.kind !== 'idle') this.#cancelDial(peer)
    peer.failures = 0
    peer.reported = undefined
    this.#setPresence(peer, 'online')
    if (session.peerAccepts && peer.contact.state === 'pending') {
      await this.#saveContact(peer, { ...peer.contact, state: 'accepted' })
      this.#emitContact(peer)
    }
    await this.#flush(peer)
  }

  /** The caller's record from its handshake payload, if valid for its ID and the Noise key it used, and newer. */
  async #rememberHandshakeRecord(peer: Peer, caller: AuthenticatedPeer): Promise<void> {
    if (caller.record === undefined) return
    let text: string
    try {
      text = fromUtf8(caller.record)
    } catch {
      return
    }
    // #remember keeps only a newer record, so one that is not newer needs no signature check (usually it is the
    // very record we just looked up before dialling: a ~1.5 ms Ed25519 verify saved on the way to the first text).
    const known = peer.contact.lastRecord
    if (known !== undefined && !(recordSeqOf(text) > known.seq)) return
    const check = verifyRecord(text, { now: this.#now(), expectedId: caller.peerId })
    if (!check.ok || toBase64url(check.noiseKey) !== toBase64url(caller.noiseKey)) return
    await this.#remember(peer, check.record)
  }

  /**
   * Sends the outbox entries not yet written on this session, oldest first, if both sides accept each other: on a
   * new session every pending entry, afterwards only those queued since (reads only those, not the whole outbox).
   * `queued`, the entry just enqueued, is sent without reading the outbox when it is the very next one (outbox
   * seqs are consecutive, and every later entry has its own flush queued behind this one).
   */
  async #flush(peer: Peer, queued?: OutboxEntry): Promise<void> {
    const session = peer.live
    if (session === undefined || session.closed || !session.peerAccepts || peer.contact.state !== 'accepted') return
    const db = this.#requireDb()
    const written = session.written
    const entries =
      written !== undefined && queued?.seq === written + 1 ? [queued] : await db.pending(peer.contact.peerId, written === undefined ? {} : { afterSeq: written })
    for (const entry of entries) {
      if (!session.conn.sendText(fromBase64url(entry.id, 16), entry.body, entry.createdAt)) return
      session.written = entry.seq
      await db.markSent(peer.contact.peerId, entry.id)
    }
  }

  /** Stores (dedup by ID), acks, shows. Nothing from a contact we have not accepted is stored or acked. */
  async #receiveText(session: Session, m: TextMessage): Promise<void> {
    const peer = this.#peers.get(session.peer.peerId)
    if (peer === undefined || peer.contact.state !== 'accepted') return
    const id = toBase64url(m.id)
    const fresh = await this.#requireDb().recordIncoming(peer.contact.peerId, { id, body: m.body, at: m.sentAt })
    session.conn.sendAck([m.id])
    if (fresh) {
      this.#emit({ type: 'message', message: { peerId: peer.contact.peerId, id, direction: 'in', body: m.body, at: m.sentAt, status: 'received' } })
    }
  }

  async #receiveAck(session: Session, ids: readonly Uint8Array[]): Promise<void> {
    const peer = this.#peers.get(session.peer.peerId)
    if (peer === undefined) return
    const db = this.#requireDb()
    for (const raw of ids) {
      const id = toBase64url(raw)
      if (!(await db.markDelivered(peer.contact.peerId, id))) continue
      peer.queued = Math.max(0, peer.queued - 1)
      this.#emit({ type: 'delivered', peerId: peer.contact.peerId, id })
      this.#emitContact(peer)
    }
  }

  #onRtt(session: Session, ms: number): void {
    const peer = this.#peers.get(session.peer.peerId)
    if (peer === undefined || peer.live !== session) return
    peer.rttMs = ms
    this.#emit({ type: 'presence', peerId: peer.contact.peerId, presence: peer.presence, rttMs: ms })
  }

  /** A connection ended. If it was the live session: presence drops and a redial is scheduled. */
  #onClosed(session: Session, cause: CloseCause): void {
    session.closed = true
    session.release()
    this.#connections.delete(session.conn)
    const peerId = session.peer.peerId
    const how = cause.kind === 'error' ? cause.error.code : cause.kind === 'bye' ? `bye ${cause.bye.reason} ${cause.bye.detail}` : `local ${cause.detail}`
    this.#log.info('session closed', { peerId, session: session.conn.sessionId, how })
    const peer = this.#peers.get(peerId)
    if (peer === undefined || this.#stopping !== undefined) return
    if (peer.live === session) {
      peer.live = undefined
      this.#setPresence(peer, cause.kind === 'error' ? 'unreachable' : 'offline')
    }
    if (peer.live === undefined) this.#scheduleRedial(peer)
  }

  // ------------------------------------------------------------------------------------------ plumbing

  #requireDb(): ClientDb {
    if (this.#db === undefined) throw new StorageError('ERR_STORAGE_IO', 'the database is not open')
    return this.#db
  }

  #requireTor(): TorSupervisor {
    if (this.#tor === undefined) throw new SessionError('ERR_SESSION_CLOSED', 'tor is not running')
    return this.#tor
  }

  #requireDirectory(): DirectoryClient {
    if (this.#directory === undefined) throw new DirectoryError('ERR_DIRECTORY_UNREACHABLE', 'the directory client is not ready yet')
    return this.#directory
  }
}
