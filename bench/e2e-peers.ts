/**
 * Light peers for the end-to-end benchmark: many protocol peers over ONE supervised tor, so a measured client can
 * have 100 contacts online without 100 tors. Each light peer has its own identity, Noise key and onion service
 * (all on the shared tor), publishes a signed record to the directories, answers incoming sessions with the
 * project's own session code (src/client/connection.ts: IK handshake, framing, heartbeats) and a hello that
 * accepts the caller, and acks every text. It keeps no database and never dials: it is the far end of a
 * measurement, not a client (the measured side is always the real client).
 *
 * A peer's onion service may carry extra ports next to the session port (e.g. a bare echo), so a baseline can
 * use the very circuit the session uses: tor sends every stream to one onion address over one rendezvous circuit.
 */
import { randomBytes } from 'node:crypto'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { DirectoryClient, assertPublished } from '../src/directory-client.js'
import { TorError, describeError } from '../src/errors.js'
import type { Logger } from '../src/log.js'
import { utf8, wipe } from '../src/protocol/bytes.js'
import { generateNoiseKeyPair, identityFromSeed, peerIdFromIdentityKey, type Identity, type NoiseKeyPair } from '../src/protocol/identity.js'
import { onionServiceKeyFromSeed, torOnionKeyBlob } from '../src/protocol/onion.js'
import { createRecord, serializeRecord } from '../src/protocol/record.js'
import { prepareSessionKeys, type SessionKeys } from '../src/protocol/session.js'
import { NODE_DH } from '../src/crypto/node-dh.js'
import { CAPABILITY_ACCEPTS, CAPABILITY_ACK, CLIENT_NAME, CLIENT_VERSION } from '../src/client/client.js'
import { Connection, SESSION_PORT } from '../src/client/connection.js'
import type { TorController } from '../src/tor/controller.js'
import type { NetworkJoin } from '../src/tor/process.js'
import { TorSupervisor } from '../src/tor/supervisor.js'

const PUBLISH_TIMEOUT_MS = 90_000

export interface ExtraPort {
  virtualPort: number
  targetPort: number
}

export interface LightPeer {
  readonly peerId: string
  /** `<56>.onion` */
  readonly onion: string
  /** Sessions currently open. */
  readonly sessions: number
  /** Texts received (each acked). */
  readonly received: number
}

/**
 * Resolves once every descriptor upload tor launched for `serviceId` has been answered, at least one of them
 * UPLOADED (control-spec §4.1.25: one UPLOAD event per HSDir, then UPLOADED or FAILED for each). A measurement
 * must not start while some HSDirs still lack the descriptor: a dial that asks one of them first gets
 * 0xF0 (descriptor not found) and retries a second later, which says nothing about the dialler.
 * Call it before ADD_ONION (and have HS_DESC events on), so that no event is missed.
 */
export function allUploadsAnswered(controller: TorController, serviceId: string, timeoutMs = PUBLISH_TIMEOUT_MS): Promise<void> {
  let launched = 0
  let answered = 0
  let ok = 0
  const uploaded = controller.waitForEvent(
    (e) => {
      if (e.type !== 'hs_desc' || e.address !== serviceId) return undefined
      if (e.action === 'UPLOAD') launched++
      if (e.action === 'UPLOADED') ok++
      if (e.action === 'UPLOADED' || e.action === 'FAILED') answered++
      return ok > 0 && answered >= launched ? true : undefined
    },
    timeoutMs,
    `descriptor upload of ${serviceId}.onion`,
  )
  uploaded.catch(() => {})
  return uploaded.then(() => undefined)
}

/** Publishes the service with `key` and waits for every HSDir upload (allUploadsAnswered). */
async function addOnion(supervisor: TorSupervisor, key: { expandedSecretKey: Uint8Array; address: string }, ports: ExtraPort[]): Promise<void> {
  const controller = supervisor.controller
  await controller.setEvents(['HS_DESC'])
  const uploaded = allUploadsAnswered(controller, key.address.slice(0, -'.onion'.length))
  await controller.addOnion({
    key: { type: 'ed25519-v3', blob: torOnionKeyBlob(key.expandedSecretKey).slice('ED25519-V3:'.length) },
    ports: ports.map((p) => ({ virtualPort: p.virtualPort, target: `127.0.0.1:${p.targetPort}` })),
    flags: ['Detach'],
  })
  await uploaded
}

function listen(handler: (socket: Socket) => void): Promise<Server> {
  const server = createServer({ noDelay: true }, handler)
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

class Peer implements LightPeer {
  readonly peerId: string
  readonly onion: string
  sessions = 0
  received = 0
  readonly identity: Identity
  readonly noise: NoiseKeyPair
  /** Prepared like the client's (NODE_DH, proof signed once), so both ends of a measured handshake do the same work. */
  readonly keys: SessionKeys
  record: Uint8Array | undefined
  readonly conns = new Set<Connection>()

  readonly heartbeatIntervalMs: number

  constructor(identity: Identity, noise: NoiseKeyPair, onion: string, heartbeatIntervalMs: number) {
    this.heartbeatIntervalMs = heartbeatIntervalMs
    this.identity = identity
    this.noise = noise
    this.keys = prepareSessionKeys(identity, noise, NODE_DH)
    this.onion = onion
    this.peerId = peerIdFromIdentityKey(identity.publicKey)
  }
}

export class LightPeerHost {
  readonly supervisor: TorSupervisor
  readonly #directory: DirectoryClient
  readonly #heartbeatIntervalMs: number
  readonly #servers: Server[] = []
  readonly #peers: Peer[] = []
  readonly #sockets = new Set<Socket>()
  readonly #log: Logger | undefined

  private constructor(supervisor: TorSupervisor, directories: string[], heartbeatIntervalMs: number, log: Logger | undefined) {
    this.supervisor = supervisor
    this.#directory = new DirectoryClient({ urls: directories, agent: supervisor.dialer.agent() })
    this.#heartbeatIntervalMs = heartbeatIntervalMs
    this.#log = log
  }

  static async start(options: { dataDir: string; network: NetworkJoin; directories: string[]; heartbeatIntervalMs: number; logger?: Logger }): Promise<LightPeerHost> {
    const supervisor = await TorSupervisor.start({ dataDir: options.dataDir, network: options.network })
    return new LightPeerHost(supervisor, options.directories, options.heartbeatIntervalMs, options.logger)
  }

  get peers(): readonly LightPeer[] {
    return this.#peers
  }

  get pid(): number {
    return this.supervisor.pid
  }

  /**
   * A new light peer: onion service (SESSION_PORT plus `extraPorts`) published, record in the directories.
   * Resolves once both are done. Its heartbeat interval is the host's unless given.
   */
  async addPeer(extraPorts: ExtraPort[] = [], options: { heartbeatIntervalMs?: number } = {}): Promise<LightPeer> {
    const identity = identityFromSeed(new Uint8Array(randomBytes(32)))
    const onionSeed = new Uint8Array(randomBytes(32))
    const onionKey = onionServiceKeyFromSeed(onionSeed)
    wipe(onionSeed)
    const peer = new Peer(identity, generateNoiseKeyPair(), onionKey.address, options.heartbeatIntervalMs ?? this.#heartbeatIntervalMs)
    const server = await listen((socket) => this.#incoming(peer, socket))
    this.#servers.push(server)
    try {
      await addOnion(this.supervisor, onionKey, [
        { virtualPort: SESSION_PORT, targetPort: (server.address() as AddressInfo).port },
        ...extraPorts,
      ])
    } finally {
      wipe(onionKey.expandedSecretKey)
    }
    const record = createRecord({
      identitySeed: identity.seed,
      onion: peer.onion,
      noiseKey: peer.noise.publicKey,
      seq: 1,
      expires: Math.floor(Date.now() / 1000) + 6 * 3600,
    })
    peer.record = utf8(serializeRecord(record))
    assertPublished(await this.#directory.publish(record))
    this.#peers.push(peer)
    return peer
  }

  /** A fresh onion service (new key) forwarding `port` to 127.0.0.1:`targetPort`; resolves once published. */
  async addService(port: number, targetPort: number): Promise<string> {
    const seed = new Uint8Array(randomBytes(32))
    const key = onionServiceKeyFromSeed(seed)
    wipe(seed)
    try {
      await addOnion(this.supervisor, key, [{ virtualPort: port, targetPort }])
    } finally {
      wipe(key.expandedSecretKey)
    }
    return key.address
  }

  #incoming(peer: Peer, socket: Socket): void {
    socket.on('error', () => {})
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    Connection.respond(socket, {
      keys: peer.keys,
      ownOnion: peer.onion,
      heartbeatIntervalMs: peer.heartbeatIntervalMs,
      ...(peer.record === undefined ? {} : { record: peer.record }),
      admit: () => true,
    }).then(
      (conn) => {
        peer.conns.add(conn)
        peer.sessions++
        conn.start(
          {
            message: (m) => {
              if (m.type !== 'text') return
              peer.received++
              conn.sendAck([m.id])
            },
            rtt: () => {},
            closed: () => {
              peer.conns.delete(conn)
              peer.sessions--
            },
          },
          { type: 'hello', clientName: CLIENT_NAME, clientVersion: CLIENT_VERSION, capabilities: [CAPABILITY_ACK, CAPABILITY_ACCEPTS] },
        )
      },
      (err: unknown) => this.#log?.info('light peer: incoming handshake failed', { error: describeError(err) }),
    )
  }

  async stop(): Promise<void> {
    for (const peer of this.#peers) {
      await Promise.all([...peer.conns].map((c) => c.close('shutdown')))
      peer.keys.noise.destroy()
      wipe(peer.identity.seed, peer.noise.secretKey)
    }
    for (const socket of this.#sockets) socket.destroy()
    await Promise.all(this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    await this.supervisor.stop().catch((err: unknown) => {
      throw err instanceof TorError ? err : new TorError('ERR_TOR_STOPPED', describeError(err), { cause: err })
    })
  }
}
