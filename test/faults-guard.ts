/**
 * Preloaded (`node --import tsx --import ./test/faults-guard.ts …`) into a client process by test/faults.test.ts:
 * every outgoing TCP connection, UDP send and DNS query to anything but a loopback address is refused before a
 * single packet leaves, and recorded (one JSON line each) in the file named by env P2PMESS_GUARD_LOG. A client
 * that keeps working under this guard, and whose log stays empty, sends nothing around tor.
 */
import { appendFileSync } from 'node:fs'
import dgram from 'node:dgram'
import dns from 'node:dns'
import net from 'node:net'

const logFile = process.env['P2PMESS_GUARD_LOG']

function loopback(host: unknown): boolean {
  if (host === undefined || host === null || host === '') return true // node's default host is localhost
  if (typeof host !== 'string') return false
  return host === 'localhost' || host.startsWith('127.') || host === '::1' || host === '::ffff:127.0.0.1'
}

function record(kind: string, target: string): void {
  if (logFile !== undefined) appendFileSync(logFile, JSON.stringify({ kind, target, pid: process.pid }) + '\n')
}

function refused(what: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`connect ECONNREFUSED ${what} (refused by faults-guard)`)
  err.code = 'ECONNREFUSED'
  return err
}

type Connect = (this: net.Socket, ...args: unknown[]) => net.Socket
const originalConnect = net.Socket.prototype.connect as unknown as Connect
const guardedConnect: Connect = function (this: net.Socket, ...args: unknown[]): net.Socket {
  const [first, second] = args
  // connect(options[, cb]) | connect(port[, host][, cb]) | connect(path[, cb]); node also passes [options, cb] arrays.
  const options = Array.isArray(first) ? first[0] : first
  let host: unknown
  let ipcPath = false
  if (typeof options === 'object' && options !== null) {
    const o = options as { host?: unknown; path?: unknown; port?: unknown }
    ipcPath = o.path !== undefined && o.port === undefined
    host = o.host
  } else if (typeof options === 'string' && !/^\d+$/.test(options)) {
    ipcPath = true
  } else {
    host = typeof second === 'string' ? second : undefined
  }
  if (ipcPath || loopback(host)) return originalConnect.apply(this, args)
  record('tcp', String(host))
  process.nextTick(() => this.destroy(refused(String(host))))
  return this
}
net.Socket.prototype.connect = guardedConnect as unknown as typeof net.Socket.prototype.connect

type Send = (this: dgram.Socket, ...args: unknown[]) => void
const originalSend = dgram.Socket.prototype.send as unknown as Send
dgram.Socket.prototype.send = function (this: dgram.Socket, ...args: unknown[]): void {
  const host = args.find((a, i) => i > 0 && typeof a === 'string')
  if (host !== undefined && !loopback(host)) {
    record('udp', String(host))
    const cb = args.at(-1)
    if (typeof cb === 'function') process.nextTick(() => (cb as (e: Error) => void)(refused(String(host))))
    return
  }
  originalSend.apply(this, args)
} as unknown as typeof dgram.Socket.prototype.send

type Lookup = (...args: unknown[]) => unknown
const originalLookup = dns.lookup as unknown as Lookup
dns.lookup = function (...args: unknown[]): unknown {
  const [hostname] = args
  if (!loopback(hostname) && net.isIP(String(hostname)) === 0) record('dns', String(hostname))
  return originalLookup(...args)
} as unknown as typeof dns.lookup
