/**
 * Test doubles for the dialer and the directory client: a scripted SOCKS5 server (RFC 1928) and an echo server,
 * both on 127.0.0.1:0. Not a test file itself (ava runs *.test.ts only).
 */
import { EventEmitter, once } from 'node:events'
import * as net from 'node:net'

/** What the fake proxy does with one CONNECT request. */
export type Plan =
  /** Answer with this non-zero REP byte, then close. */
  | { kind: 'reply'; code: number }
  /** Connect to 127.0.0.1:port, answer success, then relay bytes both ways. */
  | { kind: 'forward'; port: number }
  /** Never answer the request. */
  | { kind: 'stall' }
  /** Answer with these raw bytes, then close. */
  | { kind: 'raw'; bytes: Uint8Array }

export interface SeenRequest {
  cmd: number
  /** 0x01 IPv4, 0x03 DOMAINNAME, 0x04 IPv6. */
  atyp: number
  host: string
  port: number
}

export interface FakeSocksOptions {
  /** Decides each request; `index` counts requests from 0. */
  plan: (request: SeenRequest, index: number) => Plan
  /** What to do with the greeting of connection `index` (from 0); default: accept "no authentication". */
  greeting?: (index: number) => GreetingPlan
}

export type GreetingPlan = { kind: 'accept' } | { kind: 'stall' } | { kind: 'raw'; bytes: Uint8Array }

export interface FakeSocks {
  readonly port: number
  readonly requests: SeenRequest[]
  /** Emits 'request' (SeenRequest) and 'connection'. */
  readonly events: EventEmitter
  connections(): number
  close(): Promise<void>
}

function reply(code: number): Buffer {
  return Buffer.from([0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
}

/** Parses a CONNECT request (RFC 1928 §4); undefined until all of it has arrived. */
function parseRequest(buf: Buffer): { request: SeenRequest; length: number } | undefined {
  if (buf.length < 5) return undefined
  const atyp = buf[3]!
  let host: string
  let end: number
  if (atyp === 0x01) {
    end = 4 + 4
    if (buf.length < end + 2) return undefined
    host = [...buf.subarray(4, 8)].join('.')
  } else if (atyp === 0x03) {
    end = 5 + buf[4]!
    if (buf.length < end + 2) return undefined
    host = buf.subarray(5, end).toString('latin1')
  } else {
    end = 4 + 16
    if (buf.length < end + 2) return undefined
    host = buf.subarray(4, end).toString('hex')
  }
  return { request: { cmd: buf[1]!, atyp, host, port: buf.readUInt16BE(end) }, length: end + 2 }
}

export async function startFakeSocks(options: FakeSocksOptions): Promise<FakeSocks> {
  const requests: SeenRequest[] = []
  const events = new EventEmitter()
  const sockets = new Set<net.Socket>()
  let connections = 0

  const server = net.createServer((client) => {
    const index = connections++
    sockets.add(client)
    client.on('close', () => sockets.delete(client))
    client.on('error', () => client.destroy())
    events.emit('connection')
    let state: 'greeting' | 'request' | 'done' = 'greeting'
    let buf = Buffer.alloc(0)

    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk])
      if (state === 'greeting') {
        if (buf.length < 2 || buf.length < 2 + buf[1]!) return
        const greeting: GreetingPlan = options.greeting?.(index) ?? { kind: 'accept' }
        buf = buf.subarray(2 + buf[1]!)
        if (greeting.kind === 'stall') {
          state = 'done'
          return
        }
        if (greeting.kind === 'raw') {
          state = 'done'
          client.end(greeting.bytes)
          return
        }
        client.write(Buffer.from([0x05, 0x00]))
        state = 'request'
      }
      if (state === 'request') {
        const parsed = parseRequest(buf)
        if (parsed === undefined) return
        state = 'done'
        const rest = buf.subarray(parsed.length)
        requests.push(parsed.request)
        events.emit('request', parsed.request)
        const plan = options.plan(parsed.request, requests.length - 1)
        client.removeListener('data', onData)
        act(client, plan, rest)
      }
    }
    client.on('data', onData)
  })

  function act(client: net.Socket, plan: Plan, rest: Buffer): void {
    switch (plan.kind) {
      case 'reply':
        client.end(reply(plan.code))
        return
      case 'raw':
        client.end(plan.bytes)
        return
      case 'stall':
        return
      case 'forward': {
        const upstream = net.connect({ host: '127.0.0.1', port: plan.port })
        sockets.add(upstream)
        upstream.on('close', () => sockets.delete(upstream))
        upstream.once('error', () => {
          client.end(reply(0x05))
        })
        upstream.once('connect', () => {
          client.write(reply(0x00))
          if (rest.length > 0) upstream.write(rest)
          client.pipe(upstream)
          upstream.pipe(client)
          client.on('close', () => upstream.destroy())
          upstream.on('close', () => client.destroy())
        })
      }
    }
  }

  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address() as net.AddressInfo
  return {
    port: address.port,
    requests,
    events,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy()
      server.close()
      await once(server, 'close')
    },
  }
}

export async function startEchoServer(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => s.destroy())
    s.pipe(s)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy()
      server.close()
      await once(server, 'close')
    },
  }
}

/** A port on 127.0.0.1 with nothing listening (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  server.close()
  await once(server, 'close')
  return port
}
