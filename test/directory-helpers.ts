/** Shared helpers for the directory tests (not a test file itself). */
import { request as httpRequest, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ed25519, x25519 } from '@noble/curves/ed25519.js'
import { generateIdentity, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { onionAddressFromPublicKey } from '../src/protocol/onion.js'
import { createRecord, type DirectoryRecord } from '../src/protocol/record.js'
import { createDirectoryApp, type DirectoryAppOptions } from '../directory/app.js'
import type { SeededRandom } from './helpers/random.js'

/** A fixed instant (2026-01-01T00:00:00Z) for the fake clocks. */
export const T0 = Date.UTC(2026, 0, 1)
export const HOUR_S = 3600

export interface TestPeer {
  seed: Uint8Array
  id: string
  onion: string
  noiseKey: Uint8Array
}

/** A fresh random peer, or a reproducible one when `random` (a seeded PRNG) is given. */
export function makePeer(random?: SeededRandom): TestPeer {
  const bytes = (): Uint8Array | undefined => random?.bytes(32)
  const seed = bytes() ?? generateIdentity().seed
  return {
    seed,
    id: peerIdFromIdentityKey(ed25519.getPublicKey(seed)),
    onion: onionAddressFromPublicKey(ed25519.keygen(bytes()).publicKey),
    noiseKey: x25519.keygen(bytes()).publicKey,
  }
}

/** A record valid at `now` (ms) for an hour, unless `expires` (Unix s) says otherwise. */
export function makeRecord(peer: TestPeer, seq: number, options: { now?: number; expires?: number } = {}): DirectoryRecord {
  const expires = options.expires ?? Math.floor((options.now ?? T0) / 1000) + HOUR_S
  return createRecord({ identitySeed: peer.seed, onion: peer.onion, noiseKey: peer.noiseKey, seq, expires })
}

export class FakeClock {
  constructor(public ms: number = T0) {}
  readonly now = (): number => this.ms
  advance(ms: number): void {
    this.ms += ms
  }
}

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  json: unknown
}

export interface SendOptions {
  body?: string | Uint8Array
  headers?: Record<string, string | number>
  /** Defaults to application/json when there is a body. */
  contentType?: string | null
}

/** One HTTP request with node's client (keep-alive off), resolving with the parsed reply. */
export function send(base: string, method: string, path: string, options: SendOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...options.headers }
    const contentType = options.contentType === undefined ? (options.body === undefined ? null : 'application/json') : options.contentType
    if (contentType !== null) headers['content-type'] = contentType
    const req = httpRequest(new URL(path, base), { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let json: unknown
        try {
          json = text === '' ? undefined : JSON.parse(text)
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json })
      })
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

export const putRecord = (base: string, record: unknown, id?: string): Promise<Reply> => {
  const path = `/v1/records/${id ?? (record as DirectoryRecord).id}`
  return send(base, 'PUT', path, { body: JSON.stringify(record) })
}

/** The `error.code` of an error reply, or undefined. */
export function errorCode(reply: Reply): unknown {
  const body = reply.json
  if (typeof body !== 'object' || body === null || !('error' in body)) return undefined
  const error = body.error
  return typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined
}

/** Serves a directory app on 127.0.0.1:0 through `app.callback()`; `close()` stops it. */
export async function serveApp(options: DirectoryAppOptions): Promise<{ base: string; close: () => Promise<void> }> {
  const server = createServer(createDirectoryApp(options).callback())
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    base: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export function shuffle<T>(items: T[], random: SeededRandom): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = random.int(i + 1)
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}
