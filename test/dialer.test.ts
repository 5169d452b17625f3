import test from 'ava'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import { Socket, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { InvalidArgumentError, P2PMessError, SocksError, type SocksCode } from '../src/errors.js'
import { createTorDialer, isTorAgent, type RetryInfo } from '../src/tor/dialer.js'
import { isTransientSocksError } from '../src/tor/socks-errors.js'
import { closedPort, startEchoServer, startFakeSocks, type Plan } from './dialer-fake-socks.js'
import { seededRandom } from './helpers/random.js'
import { KNOWN_SOCKS_REPLIES } from './helpers/socks-replies.js'

const ONION = 'pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion'

function readOnce(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once('data', (chunk: Buffer) => resolve(chunk.toString('utf8')))
    socket.once('error', reject)
  })
}

test('dial: round trip through the proxy; the hostname reaches it unresolved (ATYP 0x03)', async (t) => {
  const echo = await startEchoServer()
  const socks = await startFakeSocks({ plan: () => ({ kind: 'forward', port: echo.port }) })
  t.teardown(async () => {
    await socks.close()
    await echo.close()
  })
  const dialer = createTorDialer({ socksPort: socks.port })
  const socket = await dialer.dial(ONION, 7777, { timeoutMs: 5000 })
  const reply = readOnce(socket)
  socket.write('hello through tor')
  t.is(await reply, 'hello through tor')
  socket.destroy()
  t.deepEqual(socks.requests, [{ cmd: 0x01, atyp: 0x03, host: ONION, port: 7777 }])

  // A clearnet name is passed on as a name too: nothing is looked up locally (there is no DNS here at all).
  const other = await dialer.dial('directory.example', 80, { timeoutMs: 5000 })
  other.destroy()
  t.deepEqual(socks.requests[1], { cmd: 0x01, atyp: 0x03, host: 'directory.example', port: 80 })
})

// Serial (runs before the concurrent tests), so the spy sees only this test's sockets.
test.serial('dial: the connected socket has Nagle off (setNoDelay(true)), so small frames go out at once', async (t) => {
  const echo = await startEchoServer()
  const socks = await startFakeSocks({ plan: () => ({ kind: 'forward', port: echo.port }) })
  const original = Socket.prototype.setNoDelay
  const noDelay = new Set<Socket>()
  Socket.prototype.setNoDelay = function (this: Socket, on?: boolean) {
    if (on !== false) noDelay.add(this)
    return original.call(this, on)
  }
  t.teardown(async () => {
    Socket.prototype.setNoDelay = original
    await socks.close()
    await echo.close()
  })
  const socket = await createTorDialer({ socksPort: socks.port }).dial(ONION, 7777, { timeoutMs: 5000 })
  t.true(noDelay.has(socket))
  socket.destroy()
})

/** Every known reply byte, and two unknown ones (which are general failures). */
const EXPECTED: readonly [reply: number, code: SocksCode, transient: boolean][] = [
  ...KNOWN_SOCKS_REPLIES,
  [0x09, 'ERR_SOCKS_GENERAL', true],
  [0xab, 'ERR_SOCKS_GENERAL', true],
]

test('dial: every SOCKS5 reply code becomes its typed error, with the raw byte recovered', async (t) => {
  const socks = await startFakeSocks({ plan: (req) => ({ kind: 'reply', code: Number.parseInt(req.host.slice(1, 3), 16) }) })
  t.teardown(() => socks.close())
  const dialer = createTorDialer({ socksPort: socks.port })
  await Promise.all(
    EXPECTED.map(async ([reply, code, transient]) => {
      const host = `r${reply.toString(16).padStart(2, '0')}.example`
      const err = await t.throwsAsync(dialer.dial(host, 80, { timeoutMs: 5000 }), { instanceOf: SocksError })
      t.is(err?.code, code, `reply 0x${reply.toString(16)}`)
      t.is(err?.details?.['reply'], reply)
      t.is(err?.details?.['host'], host)
      t.is(isTransientSocksError(err), transient, `transient 0x${reply.toString(16)}`)
    }),
  )
  t.is(socks.requests.length, EXPECTED.length)
})

test('dial: a proxy that never answers the request times out in bounded time', async (t) => {
  const socks = await startFakeSocks({ plan: () => ({ kind: 'stall' }) })
  t.teardown(() => socks.close())
  const dialer = createTorDialer({ socksPort: socks.port })
  const started = performance.now()
  const err = await t.throwsAsync(dialer.dial(ONION, 80, { timeoutMs: 300 }), { instanceOf: SocksError })
  const elapsed = performance.now() - started
  t.is(err?.code, 'ERR_CONNECT_TIMEOUT')
  t.true(elapsed >= 290 && elapsed < 2000, `took ${elapsed.toFixed(0)} ms`)
  t.is(socks.requests.length, 1)
})

test('dial: a proxy that never answers the greeting times out too', async (t) => {
  const socks = await startFakeSocks({ greeting: () => ({ kind: 'stall' }), plan: () => ({ kind: 'stall' }) })
  t.teardown(() => socks.close())
  const dialer = createTorDialer({ socksPort: socks.port })
  const err = await t.throwsAsync(dialer.dial(ONION, 80, { timeoutMs: 200 }), { instanceOf: SocksError })
  t.is(err?.code, 'ERR_CONNECT_TIMEOUT')
})

test('dial: nothing listening on the SOCKS port -> ERR_SOCKS_PROXY_UNREACHABLE', async (t) => {
  const dialer = createTorDialer({ socksPort: await closedPort() })
  const err = await t.throwsAsync(dialer.dial(ONION, 80, { timeoutMs: 5000 }), { instanceOf: SocksError })
  t.is(err?.code, 'ERR_SOCKS_PROXY_UNREACHABLE')
  t.regex(err?.message ?? '', /is tor running/)
})

test('dial: something that is not a SOCKS5 proxy -> ERR_SOCKS_PROXY_UNREACHABLE; closed mid-request -> ERR_SOCKS_GENERAL', async (t) => {
  const http400 = await startFakeSocks({ greeting: () => ({ kind: 'raw', bytes: Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n') }), plan: () => ({ kind: 'stall' }) })
  const hangup = await startFakeSocks({ plan: () => ({ kind: 'raw', bytes: new Uint8Array(0) }) })
  t.teardown(async () => {
    await http400.close()
    await hangup.close()
  })
  const notSocks = await t.throwsAsync(createTorDialer({ socksPort: http400.port }).dial(ONION, 80, { timeoutMs: 5000 }), { instanceOf: SocksError })
  t.is(notSocks?.code, 'ERR_SOCKS_PROXY_UNREACHABLE')
  const cut = await t.throwsAsync(createTorDialer({ socksPort: hangup.port }).dial(ONION, 80, { timeoutMs: 5000 }), { instanceOf: SocksError })
  t.is(cut?.code, 'ERR_SOCKS_GENERAL')
})

test('dialWithRetry: retries 0xF0 three times, then succeeds', async (t) => {
  const echo = await startEchoServer()
  const socks = await startFakeSocks({ plan: (_req, i): Plan => (i < 3 ? { kind: 'reply', code: 0xf0 } : { kind: 'forward', port: echo.port }) })
  t.teardown(async () => {
    await socks.close()
    await echo.close()
  })
  const retries: RetryInfo[] = []
  const dialer = createTorDialer({ socksPort: socks.port })
  const socket = await dialer.dialWithRetry(ONION, 80, { deadlineMs: 10_000, retryIntervalMs: 20, onRetry: (info) => retries.push(info) })
  const reply = readOnce(socket)
  socket.write('ping')
  t.is(await reply, 'ping')
  socket.destroy()
  t.deepEqual(retries.map((r) => [r.attempt, r.error.code, r.delayMs]), [
    [1, 'ERR_ONION_NOT_FOUND', 20],
    [2, 'ERR_ONION_NOT_FOUND', 20],
    [3, 'ERR_ONION_NOT_FOUND', 20],
  ])
  t.is(socks.requests.length, 4)
})

test('dialWithRetry: gives up at the deadline with the last typed error', async (t) => {
  const socks = await startFakeSocks({ plan: (_req, i): Plan => ({ kind: 'reply', code: i % 2 === 0 ? 0xf0 : 0xf2 }) })
  t.teardown(() => socks.close())
  const dialer = createTorDialer({ socksPort: socks.port })
  const started = performance.now()
  const err = await t.throwsAsync(dialer.dialWithRetry(ONION, 80, { deadlineMs: 600, retryIntervalMs: 100 }), { instanceOf: SocksError })
  const elapsed = performance.now() - started
  t.true(elapsed < 1500, `took ${elapsed.toFixed(0)} ms`)
  const attempts = socks.requests.length
  t.true(attempts >= 3 && attempts <= 7, `${attempts} attempts`)
  // The last attempt (index attempts-1) decides the error.
  t.is(err?.code, (attempts - 1) % 2 === 0 ? 'ERR_ONION_NOT_FOUND' : 'ERR_ONION_INTRO_FAILED')
})

test('dialWithRetry: an attempt that hangs is abandoned after attemptTimeoutMs and retried', async (t) => {
  const echo = await startEchoServer()
  const socks = await startFakeSocks({ plan: (_req, i): Plan => (i === 0 ? { kind: 'stall' } : { kind: 'forward', port: echo.port }) })
  t.teardown(async () => {
    await socks.close()
    await echo.close()
  })
  const retries: RetryInfo[] = []
  const dialer = createTorDialer({ socksPort: socks.port })
  const socket = await dialer.dialWithRetry(ONION, 80, { deadlineMs: 10_000, attemptTimeoutMs: 200, retryIntervalMs: 10, onRetry: (r) => retries.push(r) })
  const reply = readOnce(socket)
  socket.write('ping')
  t.is(await reply, 'ping')
  socket.destroy()
  t.deepEqual(retries.map((r) => r.error.code), ['ERR_CONNECT_TIMEOUT'])
  t.is(socks.requests.length, 2)
})

test('dialWithRetry: a permanent error is not retried', async (t) => {
  const socks = await startFakeSocks({ plan: () => ({ kind: 'reply', code: 0xf6 }) })
  t.teardown(() => socks.close())
  const dialer = createTorDialer({ socksPort: socks.port })
  const err = await t.throwsAsync(dialer.dialWithRetry(ONION, 80, { deadlineMs: 5000, retryIntervalMs: 10 }), { instanceOf: SocksError })
  t.is(err?.code, 'ERR_ONION_BAD_ADDRESS')
  t.is(socks.requests.length, 1)
})

test('abort: during the handshake, during a retry wait, and before starting', async (t) => {
  const stall = await startFakeSocks({ plan: () => ({ kind: 'stall' }) })
  const notFound = await startFakeSocks({ plan: () => ({ kind: 'reply', code: 0xf0 }) })
  t.teardown(async () => {
    await stall.close()
    await notFound.close()
  })

  const inHandshake = new AbortController()
  once(stall.events, 'request').then(() => inHandshake.abort(), () => {})
  const started = performance.now()
  const e1 = await t.throwsAsync(createTorDialer({ socksPort: stall.port }).dial(ONION, 80, { timeoutMs: 30_000, signal: inHandshake.signal }), { instanceOf: SocksError })
  t.is(e1?.code, 'ERR_DIAL_ABORTED')

  const inWait = new AbortController()
  const e2 = await t.throwsAsync(
    createTorDialer({ socksPort: notFound.port }).dialWithRetry(ONION, 80, {
      deadlineMs: 60_000,
      retryIntervalMs: 30_000,
      signal: inWait.signal,
      onRetry: () => inWait.abort(),
    }),
    { instanceOf: SocksError },
  )
  t.is(e2?.code, 'ERR_DIAL_ABORTED')
  t.true(performance.now() - started < 5000, 'aborts are prompt, not waiting out 30 s timers')
  t.is(notFound.requests.length, 1)

  const before = new AbortController()
  before.abort()
  const e3 = await t.throwsAsync(createTorDialer({ socksPort: stall.port }).dial(ONION, 80, { timeoutMs: 1000, signal: before.signal }), { instanceOf: SocksError })
  t.is(e3?.code, 'ERR_DIAL_ABORTED')
  t.is(stall.connections(), 1, 'a pre-aborted dial does not even connect to the proxy')
})

test('agent(): HTTP through the dialer, hostname unresolved; SOCKS failures arrive typed', async (t) => {
  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end(`you asked for ${req.url}`)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const httpPort = (server.address() as AddressInfo).port
  const socks = await startFakeSocks({ plan: (req): Plan => (req.host === 'dir.example' ? { kind: 'forward', port: httpPort } : { kind: 'reply', code: 0xf0 }) })
  t.teardown(async () => {
    await socks.close()
    server.close()
  })
  const dialer = createTorDialer({ socksPort: socks.port })
  const agent = dialer.agent()
  t.is(dialer.agent(), agent)
  t.true(isTorAgent(agent))
  t.false(isTorAgent(new http.Agent()))

  const body = await new Promise<string>((resolve, reject) => {
    http.get({ host: 'dir.example', port: 80, path: '/v1/health', agent }, (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text))
    }).on('error', reject)
  })
  t.is(body, 'you asked for /v1/health')
  t.like(socks.requests[0], { atyp: 0x03, host: 'dir.example', port: 80 })

  const err = await new Promise<unknown>((resolve) => {
    http.get({ host: ONION, port: 80, path: '/', agent }, () => resolve(undefined)).on('error', resolve)
  })
  t.true(err instanceof SocksError)
  t.is((err as SocksError).code, 'ERR_ONION_NOT_FOUND')
})

/** A throwaway self-signed P-256 certificate for `dir-s.example`, made for this test only. */
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBoTCCAUegAwIBAgIUXE72atU8+70LMWqvM15oqY30OKEwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNZGlyLXMuZXhhbXBsZTAgFw0yNjExMjUxODAwNTJaGA8yMTI2
MTEwMTE4MDA1MlowGDEWMBQGA1UEAwwNZGlyLXMuZXhhbXBsZTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABJcc/74m/QHseJuKl+TATUbLw1DnkQKLV0HKUJ51yppw
FMuWF21c0mhHaTI1POkw9niqE1mdCqsKnImemV9iHTqjbTBrMB0GA1UdDgQWBBRF
Iyog6OoG4MeweCZHruD2ZD2PrTAfBgNVHSMEGDAWgBRFIyog6OoG4MeweCZHruD2
ZD2PrTAPBgNVHRMBAf8EBTADAQH/MBgGA1UdEQQRMA+CDWRpci1zLmV4YW1wbGUw
CgYIKoZIzj0EAwIDSAAwRQIgaqZej4giZiqSIiHgM++qz5CvyUiW3Oap+LYAloOY
vZsCIQDhVr6NR8QN+8zcE+a7gIxxRKZi/1o368bpnHZLcAtI7Q==
-----END CERTIFICATE-----`
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgwFK0cs29PxlFM0ah
ggGnbzGRcwCxfRBfKRsNdAqrh0ehRANCAASXHP++Jv0B7HibipfkwE1Gy8NQ55EC
i1dBylCedcqacBTLlhdtXNJoR2kyNTzpMPZ4qhNZnQqrCpyJnplfYh06
-----END PRIVATE KEY-----`

test('agent(): https runs TLS end to end inside the tor stream, with SNI and certificate checks', async (t) => {
  const server = https.createServer({ cert: TEST_CERT, key: TEST_KEY }, (_req, res) => res.end('secret hello'))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as AddressInfo).port
  const socks = await startFakeSocks({ plan: (): Plan => ({ kind: 'forward', port }) })
  t.teardown(async () => {
    await socks.close()
    server.close()
  })
  const agent = createTorDialer({ socksPort: socks.port }).agent()
  const get = (ca: string | undefined): Promise<string> =>
    new Promise((resolve, reject) => {
      https.get({ host: 'dir-s.example', path: '/', agent, ...(ca === undefined ? {} : { ca }) }, (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve(text))
      }).on('error', reject)
    })
  t.is(await get(TEST_CERT), 'secret hello')
  t.like(socks.requests[0], { atyp: 0x03, host: 'dir-s.example', port: 443 })
  // Without trusting the test CA the certificate is refused: TLS really is verified through the tunnel.
  const err = await t.throwsAsync(get(undefined))
  t.regex(String((err as NodeJS.ErrnoException | undefined)?.code), /SELF_SIGNED|UNABLE_TO_VERIFY/)
})

test('input validation: loopback-only proxy, sane hosts, ports and durations', async (t) => {
  for (const socksHost of ['10.0.0.1', '0.0.0.0', 'localhost', '127.0.0.256', '127.1', '::', '::ffff:127.0.0.1', 'tor.example', '']) {
    t.throws(() => createTorDialer({ socksPort: 9050, socksHost }), { instanceOf: InvalidArgumentError }, socksHost)
  }
  for (const socksHost of ['127.0.0.1', '127.3.2.1', '::1']) t.notThrows(() => createTorDialer({ socksPort: 9050, socksHost }))
  for (const socksPort of [0, -1, 65536, 1.5, Number.NaN]) {
    t.throws(() => createTorDialer({ socksPort }), { instanceOf: InvalidArgumentError })
  }
  const dialer = createTorDialer({ socksPort: 9 })
  const badHosts: unknown[] = ['', 'a b.onion', 'ünïcode.onion', 'x..y', '-lead.example', 'a'.repeat(64) + '.example', `${'a.'.repeat(130)}b`, 'evil\0.onion', 42, undefined]
  // Bad arguments reject (never throw synchronously), before anything is sent.
  for (const host of badHosts) {
    await t.throwsAsync(dialer.dial(host as string, 80, { timeoutMs: 1000 }), { instanceOf: InvalidArgumentError }, String(host))
  }
  for (const port of [0, 70000, 8.5]) await t.throwsAsync(dialer.dial(ONION, port, { timeoutMs: 1000 }), { instanceOf: InvalidArgumentError })
  for (const timeoutMs of [0, -5, 1.5, Number.POSITIVE_INFINITY, 2 ** 31]) {
    await t.throwsAsync(dialer.dial(ONION, 80, { timeoutMs }), { instanceOf: InvalidArgumentError })
  }
  await t.throwsAsync(dialer.dial(ONION, 80, undefined as never), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(dialer.dialWithRetry(ONION, 80, { deadlineMs: 0 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(dialer.dialWithRetry(ONION, 80, { deadlineMs: 1000, retryIntervalMs: -1 }), { instanceOf: InvalidArgumentError })
})

test('fuzz: hostile proxy bytes (seeded) only ever give a socket or a typed error', async (t) => {
  const SEED = 0x5eed50c5
  const CASES = 300
  const rand = seededRandom(SEED)
  /** Mostly protocol-shaped bytes (0x05, 0x00, small ATYPs) so the fuzzer gets past the first checks. */
  const byte = (): number => {
    const r = rand.next()
    return r < 0.3 ? 0x05 : r < 0.55 ? 0x00 : r < 0.65 ? [0x01, 0x03, 0x04, 0xf0, 0xff][rand.int(5)]! : rand.int(256)
  }
  const script = Array.from({ length: CASES }, () => ({
    atGreeting: rand.next() < 0.5,
    bytes: Uint8Array.from({ length: rand.int(24) }, byte),
  }))
  const socks = await startFakeSocks({
    greeting: (i) => (script[i]!.atGreeting ? { kind: 'raw', bytes: script[i]!.bytes } : { kind: 'accept' }),
    // Each dial names its case in the destination port, so the plan knows which bytes to answer with.
    plan: (req) => ({ kind: 'raw', bytes: script[req.port - 1000]!.bytes }),
  })
  t.teardown(() => socks.close())
  const dialer = createTorDialer({ socksPort: socks.port })
  const outcomes = new Map<string, number>()
  for (let i = 0; i < CASES; i++) {
    try {
      const socket = await dialer.dial('fuzz.example', 1000 + i, { timeoutMs: 2000 })
      socket.destroy()
      outcomes.set('socket', (outcomes.get('socket') ?? 0) + 1)
    } catch (err) {
      if (!(err instanceof P2PMessError)) t.fail(`case ${i} (seed ${SEED}): untyped ${String(err)}`)
      const code = (err as P2PMessError).code
      t.not(code, 'ERR_CONNECT_TIMEOUT', `case ${i} (seed ${SEED}) hung`)
      outcomes.set(code, (outcomes.get(code) ?? 0) + 1)
    }
  }
  t.log(`${CASES} cases, seed 0x${SEED.toString(16)}:`, Object.fromEntries(outcomes))
  t.is([...outcomes.values()].reduce((a, b) => a + b, 0), CASES)
})

// ---------------------------------------------------------------------------------------------------------------
// "Nothing bypasses tor": a static scan of src/**/*.ts for ways to reach the network other than the dialer.

type Capability = 'net-connect' | 'tls-connect' | 'dns' | 'udp' | 'http-client' | 'socks' | 'child-process' | 'web-fetch'

/**
 * The explicit allow-list. Every other file in src/ may use none of these capabilities.
 * (Inbound listeners — net.createServer, koa — are not outbound connections and are not flagged.)
 */
const ALLOWED: Readonly<Record<string, readonly Capability[]>> = {
  // THE dialer: TCP to tor's loopback SOCKS port, the `socks` packages, TLS inside tor streams.
  'src/tor/dialer.ts': ['net-connect', 'tls-connect', 'socks'],
  // tor's own control port on loopback.
  'src/tor/controller.ts': ['net-connect'],
  // Spawns the tor binary.
  'src/tor/process.ts': ['child-process'],
  // node:http(s) request() — only ever with the dialer's agent (the constructor refuses any agent but isTorAgent()).
  'src/directory-client.ts': ['http-client'],
}

/** Modules whose mere (value) import is a capability. */
const MODULE_CAPABILITY: Readonly<Record<string, Capability>> = {
  dns: 'dns',
  dgram: 'udp',
  http2: 'http-client',
  child_process: 'child-process',
  socks: 'socks',
  'socks-proxy-agent': 'socks',
  undici: 'http-client',
  'node-fetch': 'http-client',
  axios: 'http-client',
  got: 'http-client',
  ws: 'http-client',
}
/** Modules that are fine to import for some members (servers, types, helpers) but not for others. */
const MEMBER_CAPABILITY: Readonly<Record<string, Readonly<Record<string, Capability>>>> = {
  net: { connect: 'net-connect', createConnection: 'net-connect', Socket: 'net-connect' },
  tls: { connect: 'tls-connect', TLSSocket: 'tls-connect' },
  http: { request: 'http-client', get: 'http-client' },
  https: { request: 'http-client', get: 'http-client' },
}

function moduleKey(specifier: string): string {
  const bare = specifier.startsWith('node:') ? specifier.slice(5) : specifier
  return bare.startsWith('@') ? bare : bare.split('/')[0]!
}

function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1')
}

const escape = (s: string): string => s.replace(/[$]/g, '\\$')

/** Every capability `source` uses, with the evidence. */
function networkUses(source: string): { capability: Capability; evidence: string }[] {
  const code = stripComments(source)
  const withoutImports = code.replace(/\b(?:import|export)\s+[^'"]*?\s*from\s*['"][^'"]+['"]/g, '')
  const found: { capability: Capability; evidence: string }[] = []
  const add = (capability: Capability, evidence: string): void => void found.push({ capability, evidence: evidence.replace(/\s+/g, ' ').trim() })

  // Static imports and re-exports.
  const staticRe = /\b(import|export)\s+(type\s+)?([\w$\s{},*]*?)\s*from\s*['"]([^'"]+)['"]|\bimport\s*['"]([^'"]+)['"]/g
  for (const m of code.matchAll(staticRe)) {
    const specifier = m[4] ?? m[5]!
    const key = moduleKey(specifier)
    if (m[2] !== undefined) continue // import type / export type
    const clause = m[3] ?? ''
    if (MODULE_CAPABILITY[key] !== undefined) {
      // A clause made only of inline `type X` specifiers imports no value.
      const names = clause.replace(/[{}]/g, ',').split(',').map((x) => x.trim()).filter((x) => x !== '')
      if (clause === '' || names.some((n) => !n.startsWith('type '))) add(MODULE_CAPABILITY[key], m[0])
      continue
    }
    const members = MEMBER_CAPABILITY[key]
    if (members === undefined) continue
    const braces = /\{([^}]*)\}/.exec(clause)
    for (const spec of (braces?.[1] ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '')) {
      if (spec.startsWith('type ')) continue
      const [imported, local = imported] = spec.split(/\s+as\s+/) as [string, string?]
      const capability = members[imported]
      if (capability !== undefined) add(capability, m[0])
      else if (imported === 'default' && local !== undefined) scanAlias(local, members)
    }
    // Namespace (`* as x`), default (`x`) or `export * from`: check what the file does with the binding.
    const outside = clause.replace(/\{[^}]*\}/, '')
    const ns = /\*\s*as\s+([\w$]+)/.exec(outside)?.[1] ?? /^\s*([\w$]+)/.exec(outside)?.[1]
    if (ns !== undefined) scanAlias(ns, members)
    else if (m[1] === 'export' && outside.includes('*')) add(Object.values(members)[0]!, m[0])
  }

  function scanAlias(alias: string, members: Readonly<Record<string, Capability>>): void {
    for (const [member, capability] of Object.entries(members)) {
      const use = new RegExp(`(?<![\\w$.])${escape(alias)}\\s*\\.\\s*${member}\\s*\\(|new\\s+${escape(alias)}\\s*\\.\\s*${member}\\b`)
      const hit = use.exec(code)
      if (hit !== null) add(capability, hit[0])
    }
    // The module object escaping as a value (`const c = http`, `const { request } = http`, `m[name]`) could reach
    // any member, so it counts as using the capability.
    const escapes = new RegExp(`(?<![\\w$.])${escape(alias)}(?![\\w$])(?!\\s*\\.)`).exec(withoutImports)
    if (escapes !== null) add(Object.values(members)[0]!, `${alias} used as a value`)
  }

  // Dynamic imports and require() of anything network-related.
  for (const m of code.matchAll(/\b(?:import|require)\s*\(\s*(['"`]?)([^'"`)]*)\1\s*\)/g)) {
    const key = moduleKey(m[2]!)
    const capability = MODULE_CAPABILITY[key] ?? Object.values(MEMBER_CAPABILITY[key] ?? {})[0]
    if (capability !== undefined) add(capability, m[0])
    else if (m[1] !== "'" && m[1] !== '"') add('web-fetch', m[0]) // a computed module name cannot be checked
  }
  // Web-platform network APIs available as globals.
  for (const m of code.matchAll(/(?<![\w$.])(?:fetch\s*\(|new\s+(?:WebSocket|EventSource)\b|XMLHttpRequest\b|globalThis\s*\.\s*fetch\b)/g)) {
    add('web-fetch', m[0])
  }
  return found
}

test('scanner self-check: catches the ways out, and leaves inbound servers and types alone', (t) => {
  const flagged: [string, Capability][] = [
    [`import { connect } from 'node:net'`, 'net-connect'],
    [`import { createConnection as cc } from 'net'`, 'net-connect'],
    [`import * as net from 'node:net'\nconst s = net.connect(80, 'example.com')`, 'net-connect'],
    [`import net from 'node:net'\nnew net.Socket().connect(1)`, 'net-connect'],
    [`import * as tls from 'node:tls'\ntls.connect({ host: 'x' })`, 'tls-connect'],
    [`import { lookup } from 'node:dns/promises'`, 'dns'],
    [`import dns from 'dns'`, 'dns'],
    [`import { request } from 'node:https'`, 'http-client'],
    [`import * as http from 'node:http'\nhttp.get('http://example.com')`, 'http-client'],
    [`import { SocksClient } from 'socks'`, 'socks'],
    [`import { SocksProxyAgent } from 'socks-proxy-agent'`, 'socks'],
    [`import { spawn } from 'node:child_process'`, 'child-process'],
    [`import { createSocket } from 'node:dgram'`, 'udp'],
    [`export * from 'node:net'`, 'net-connect'],
    [`const r = await fetch('https://example.com')`, 'web-fetch'],
    [`const m = await import('node:net')`, 'net-connect'],
    [`const d = require("dns")`, 'dns'],
    [`const m = await import(name)`, 'web-fetch'],
    [`new WebSocket('ws://x')`, 'web-fetch'],
    [`import * as http from 'node:http'\nconst c = http\nc.request(u)`, 'http-client'],
    [`import * as https from 'node:https'\nconst { get } = https`, 'http-client'],
    [`import net from 'node:net'\nnet['connect'](1)`, 'net-connect'],
  ]
  for (const [source, capability] of flagged) {
    t.true(networkUses(source).some((u) => u.capability === capability), source)
  }
  const clean = [
    `import type { Socket } from 'node:net'`,
    `import { createServer, type Socket, isIP } from 'node:net'`,
    `import * as net from 'node:net'\nconst server = net.createServer(); let s: net.Socket`,
    `import type * as http from 'node:http'\nimport { createServer } from 'node:http'`,
    `import { type SocksClientOptions } from 'socks'`,
    `// we never call net.connect( or fetch( here\n/* import { connect } from 'node:net' */`,
    `this.fetch(x); store.fetch(y)`,
    `const url = 'http://example.com' // not a request`,
  ]
  for (const source of clean) t.deepEqual(networkUses(source), [], source)
})

test('nothing bypasses tor: only the allow-listed src/ files reach the network, each only as allowed', (t) => {
  const files = (readdirSync('src', { recursive: true }) as string[])
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join('src', f).split('\\').join('/'))
    .sort()
  t.true(files.includes('src/tor/dialer.ts'))
  const violations: string[] = []
  for (const file of files) {
    const allowed = ALLOWED[file] ?? []
    for (const use of networkUses(readFileSync(file, 'utf8'))) {
      if (!allowed.includes(use.capability)) violations.push(`${file}: ${use.capability} via \`${use.evidence}\``)
    }
  }
  t.deepEqual(violations, [], `scanned ${files.length} files`)
  t.log(`scanned ${files.length} files under src/`)
})
