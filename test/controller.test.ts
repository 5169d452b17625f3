import test, { type ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { createHmac, randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError, TorError } from '../src/errors.js'
import { type TorEvent, parseBootstrapPhase } from '../src/tor/control-protocol.js'
import { TorController } from '../src/tor/controller.js'

/** A scripted stand-in for tor's control port on 127.0.0.1:0. */
interface FakeTor {
  port: number
  received: string[]
  nextLine(): Promise<string>
  send(text: string): void
  /** Sends `text` one byte per write (splitting UTF-8 sequences), so the client sees it in many TCP chunks. */
  sendSlowly(text: string): Promise<void>
  destroy(): void
}

async function fakeTor(t: ExecutionContext): Promise<FakeTor> {
  const server = createServer()
  let socket: Socket | undefined
  const connected = new Promise<Socket>((resolve) => server.once('connection', resolve))
  const received: string[] = []
  let readIndex = 0
  let wake: (() => void) | undefined
  let buffer = ''
  void connected.then((s) => {
    socket = s
    s.setEncoding('utf8')
    s.on('error', () => {})
    s.on('data', (chunk: string) => {
      buffer += chunk
      let nl: number
      while ((nl = buffer.indexOf('\r\n')) >= 0) {
        received.push(buffer.slice(0, nl))
        buffer = buffer.slice(nl + 2)
      }
      wake?.()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new TypeError('no port')
  t.teardown(() => {
    socket?.destroy()
    server.close()
  })
  const sock = async (): Promise<Socket> => socket ?? connected
  return {
    port: address.port,
    received,
    nextLine() {
      if (readIndex < received.length) return Promise.resolve(received[readIndex++]!)
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          wake = undefined
          reject(new TypeError('fake tor: no command arrived within 5 s'))
        }, 5000)
        wake = () => {
          if (readIndex >= received.length) return
          clearTimeout(timer)
          wake = undefined
          resolve(received[readIndex++]!)
        }
      })
    },
    send(text) {
      if (socket === undefined) throw new TypeError('fake tor: not connected')
      socket.write(text)
    },
    async sendSlowly(text) {
      const s = await sock()
      s.setNoDelay(true)
      for (const byte of Buffer.from(text, 'utf8')) {
        await new Promise<void>((resolve) => s.write(Buffer.of(byte), () => resolve()))
      }
    },
    destroy() {
      socket?.destroy()
    },
  }
}

async function setup(t: ExecutionContext, timeoutMs?: number): Promise<{ tor: FakeTor; ctl: TorController }> {
  const tor = await fakeTor(t)
  const ctl = await TorController.connect(timeoutMs === undefined ? { port: tor.port } : { port: tor.port, timeoutMs })
  t.teardown(() => ctl.close())
  return { tor, ctl }
}

test('commands go out one at a time and resolve in FIFO order; events never answer a command', async (t) => {
  const { tor, ctl } = await setup(t)
  const events: TorEvent[] = []
  ctl.onEvent((e) => events.push(e))
  const a = ctl.getInfo(['version'])
  const b = ctl.getConf(['SocksPort'])
  const c = ctl.signal('NEWNYM')
  t.is(await tor.nextLine(), 'GETINFO version')
  // Round-trip an event so we know the client had every chance to send more; it must not have.
  tor.send('650 NOTICE ping\r\n')
  await ctl.waitForEvent((e) => (e.type === 'log' ? e : undefined), 2000, 'the ping event')
  t.is(tor.received.length, 1)
  tor.send('250-version=0.4.9.3-alpha\r\n250 OK\r\n')
  t.is(await tor.nextLine(), 'GETCONF SocksPort')
  tor.send('250 SocksPort=0\r\n')
  t.is(await tor.nextLine(), 'SIGNAL NEWNYM')
  tor.send('250 OK\r\n')
  t.deepEqual([...(await a)], [['version', '0.4.9.3-alpha']])
  t.deepEqual([...(await b)], [['SocksPort', ['0']]])
  await c
  t.deepEqual(events, [{ type: 'log', severity: 'NOTICE', message: 'ping' }])
})

test('a reply split into 1-char chunks with events interleaved; a throwing listener does not break the reader', async (t) => {
  const { tor, ctl } = await setup(t)
  const seen: TorEvent[] = []
  ctl.onEvent(() => {
    throw new TypeError('listener bug')
  })
  const off = ctl.onEvent((e) => seen.push(e))
  const info = ctl.getInfo(['config-text', 'status/bootstrap-phase'])
  t.is(await tor.nextLine(), 'GETINFO config-text status/bootstrap-phase')
  await tor.sendSlowly(
    '250+config-text=\r\nDisableNetwork 1\r\n..dot\r\n.\r\n' +
      '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=50 TAG=loading_descriptors SUMMARY="Loading relay descriptors"\r\n' +
      '250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n' +
      `650 HS_DESC UPLOADED ${'a'.repeat(56)} UNKNOWN $AB~relay\r\n` +
      '650 NOTICE caf\u00e9 \u20ac\r\n' +
      '250 OK\r\n',
  )
  const values = await info
  t.is(values.get('config-text'), 'DisableNetwork 1\n.dot')
  t.is(values.get('status/bootstrap-phase'), 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"')
  t.deepEqual(
    seen.map((e) => e.type),
    ['bootstrap', 'hs_desc', 'log'],
  )
  t.deepEqual(seen[2], { type: 'log', severity: 'NOTICE', message: 'caf\u00e9 \u20ac' })
  off()
  tor.send('650 NOTICE after unsubscribe\r\n')
  const p = ctl.getInfo(['version'])
  await tor.nextLine()
  tor.send('250-version=x\r\n250 OK\r\n')
  await p
  t.is(seen.length, 3)
})

test('a command that times out rejects ERR_CONTROL_TIMEOUT; its late reply is dropped, not given to the next command', async (t) => {
  const { tor, ctl } = await setup(t, 300)
  const first = ctl.getInfo(['version'])
  await tor.nextLine()
  const err = await t.throwsAsync(first, { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_TIMEOUT')
  t.regex(err?.message ?? '', /GETINFO within 300 ms/)
  const second = ctl.getInfo(['version'])
  t.is(await tor.nextLine(), 'GETINFO version')
  tor.send('250-version=late\r\n250 OK\r\n250-version=right\r\n250 OK\r\n')
  t.is((await second).get('version'), 'right')
})

test('socket closed mid-command: in-flight and queued commands reject ERR_CONTROL_CLOSED, closed resolves', async (t) => {
  const { tor, ctl } = await setup(t)
  const a = ctl.getInfo(['version'])
  const b = ctl.signal('HEARTBEAT')
  const w = ctl.waitForEvent(() => undefined, 5000, 'nothing')
  await tor.nextLine()
  tor.send('250-version=0.4') // half a reply, then the connection drops
  tor.destroy()
  for (const p of [a, b, w]) {
    const err = await t.throwsAsync(p, { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_CLOSED')
  }
  await ctl.closed
  const late = await t.throwsAsync(ctl.command('GETINFO version'), { instanceOf: TorError })
  t.is(late?.code, 'ERR_CONTROL_CLOSED')
})

test('a malformed reply fails pending commands with ERR_CONTROL_PROTOCOL and closes the connection', async (t) => {
  const { tor, ctl } = await setup(t)
  const a = ctl.getInfo(['version'])
  const b = ctl.getInfo(['version'])
  await tor.nextLine()
  tor.send('250-version=1\r\nthis is not tor\r\n')
  for (const p of [a, b]) {
    const err = await t.throwsAsync(p, { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_PROTOCOL')
  }
  await ctl.closed
})

test('4xx/5xx replies reject ERR_CONTROL_FAILED with status, tor text and the verb in details', async (t) => {
  const { tor, ctl } = await setup(t)
  const p = ctl.getInfo(['foo'])
  await tor.nextLine()
  tor.send('552 Unrecognized key "foo"\r\n')
  const err = await t.throwsAsync(p, { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_FAILED')
  t.deepEqual(err?.details, { status: 552, message: 'Unrecognized key "foo"', command: 'GETINFO' })
  // The connection is still usable.
  const q = ctl.command('GETINFO version')
  await tor.nextLine()
  tor.send('250-version=1\r\n250 OK\r\n')
  t.is((await q).status, 250)
})

test('typed commands send exactly the expected lines', async (t) => {
  const { tor, ctl } = await setup(t)
  const sid = 'pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd'
  const key = `${'Q'.repeat(43)}=`
  const steps: Array<[() => Promise<unknown>, string, string]> = [
    [() => ctl.takeOwnership(), 'TAKEOWNERSHIP', '250 OK\r\n'],
    [() => ctl.setConf({ DisableNetwork: '0' }), 'SETCONF DisableNetwork="0"', '250 OK\r\n'],
    [() => ctl.setEvents(['STATUS_CLIENT', 'HS_DESC']), 'SETEVENTS STATUS_CLIENT HS_DESC', '250 OK\r\n'],
    [
      () => ctl.addOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:9000' }], flags: ['DiscardPK'] }),
      'ADD_ONION NEW:ED25519-V3 Flags=DiscardPK Port=80,127.0.0.1:9000',
      `250-ServiceID=${sid}\r\n250 OK\r\n`,
    ],
    [() => ctl.delOnion(sid), `DEL_ONION ${sid}`, '250 OK\r\n'],
    [() => ctl.onionClientAuthAdd(`${sid}.onion`, key), `ONION_CLIENT_AUTH_ADD ${sid} x25519:${key}`, '250 OK\r\n'],
    [() => ctl.onionClientAuthRemove(sid), `ONION_CLIENT_AUTH_REMOVE ${sid}`, '250 OK\r\n'],
  ]
  for (const [call, line, reply] of steps) {
    const p = call()
    t.is(await tor.nextLine(), line)
    tor.send(reply)
    await p
  }
  t.deepEqual(await (async () => {
    const p = ctl.addOnion({ key: { type: 'new' }, ports: [{ virtualPort: 1, target: '127.0.0.1:2' }] })
    await tor.nextLine()
    tor.send(`250-ServiceID=${sid}\r\n250-PrivateKey=ED25519-V3:${'B'.repeat(86)}==\r\n250 OK\r\n`)
    return p
  })(), { serviceId: sid, privateKey: `ED25519-V3:${'B'.repeat(86)}==` })
  await t.throwsAsync(ctl.command('GETINFO version\r\nSIGNAL HALT'), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(async () => ctl.addOnion({ key: { type: 'new' }, ports: [{ virtualPort: 1, target: '8.8.8.8:53' }] }), { instanceOf: InvalidArgumentError })
})

test('waitForEvent: resolves on the first match, times out naming what it waited for', async (t) => {
  const { tor, ctl } = await setup(t)
  const done = ctl.waitForEvent((e) => (e.type === 'bootstrap' && e.progress === 100 ? e.summary : undefined), 5000, 'bootstrap 100%')
  tor.send('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=90 TAG=ap_handshake_done SUMMARY="Handshake finished with a relay to build circuits"\r\n')
  tor.send('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n')
  t.is(await done, 'Done')
  const err = await t.throwsAsync(ctl.waitForEvent(() => undefined, 100, 'the descriptor upload'), { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_TIMEOUT')
  t.regex(err?.message ?? '', /the descriptor upload/)
  const boom = ctl.waitForEvent(() => {
    throw new InvalidArgumentError('predicate bug')
  }, 5000, 'x')
  tor.send('650 NOTICE x\r\n')
  await t.throwsAsync(boom, { instanceOf: InvalidArgumentError })
})

async function cookieFile(t: ExecutionContext, cookie: Uint8Array): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-ctl-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const path = join(dir, 'control_auth_cookie')
  await writeFile(path, cookie)
  return path
}

const SERVER_KEY = 'Tor safe cookie authentication server-to-controller hash'
const CLIENT_KEY = 'Tor safe cookie authentication controller-to-server hash'

/** Plays tor's side of PROTOCOLINFO + SAFECOOKIE (§3.24) with real HMACs; `serverCookie` may differ to simulate an impostor. */
async function playSafeCookie(tor: FakeTor, path: string, serverCookie: Uint8Array, withProtocolInfo: boolean): Promise<'ok' | 'refused'> {
  if (withProtocolInfo) {
    if ((await tor.nextLine()) !== 'PROTOCOLINFO 1') return 'refused'
    tor.send(`250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE="${path.replaceAll('\\', '\\\\')}"\r\n250-VERSION Tor="0.4.9.3-alpha"\r\n250 OK\r\n`)
  }
  const m = /^AUTHCHALLENGE SAFECOOKIE ([0-9a-f]{64})$/.exec(await tor.nextLine())
  if (m === null) return 'refused'
  const clientNonce = Buffer.from(m[1]!, 'hex')
  const serverNonce = randomBytes(32)
  const msg = Buffer.concat([serverCookie, clientNonce, serverNonce])
  tor.send(`250 AUTHCHALLENGE SERVERHASH=${createHmac('sha256', SERVER_KEY).update(msg).digest('hex').toUpperCase()} SERVERNONCE=${serverNonce.toString('hex').toUpperCase()}\r\n`)
  const auth = /^AUTHENTICATE ([0-9a-f]{64})$/.exec(await tor.nextLine())
  const expected = createHmac('sha256', CLIENT_KEY).update(msg).digest('hex')
  if (auth?.[1] === expected) {
    tor.send('250 OK\r\n')
    return 'ok'
  }
  tor.send('515 Authentication failed: Wrong length for safe cookie response.\r\n')
  return 'refused'
}

test('auth: auto picks SAFECOOKIE from PROTOCOLINFO; both HMACs are checked', async (t) => {
  const { tor, ctl } = await setup(t)
  const cookie = randomBytes(32)
  const path = await cookieFile(t, cookie)
  const server = playSafeCookie(tor, path, cookie, true)
  await ctl.authenticate({ auto: true })
  t.is(await server, 'ok')
})

test('auth: cookieFile directly; an impostor that does not know the cookie is detected (ERR_CONTROL_AUTH)', async (t) => {
  const cookie = randomBytes(32)
  const path = await cookieFile(t, cookie)
  {
    const { tor, ctl } = await setup(t)
    const server = playSafeCookie(tor, path, cookie, false)
    await ctl.authenticate({ cookieFile: path })
    t.is(await server, 'ok')
  }
  {
    const { tor, ctl } = await setup(t)
    void playSafeCookie(tor, path, randomBytes(32), false)
    const err = await t.throwsAsync(ctl.authenticate({ cookieFile: path }), { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_AUTH')
    t.regex(err?.message ?? '', /server hash/)
    t.is(tor.received.length, 1) // we never sent AUTHENTICATE to the impostor
  }
  {
    const { ctl } = await setup(t)
    const bad = await cookieFile(t, new Uint8Array(5))
    const err = await t.throwsAsync(ctl.authenticate({ cookieFile: bad }), { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_AUTH')
    const missing = await t.throwsAsync(ctl.authenticate({ cookieFile: join(tmpdir(), 'no-such-cookie-p2pmess') }), { instanceOf: TorError })
    t.is(missing?.code, 'ERR_CONTROL_AUTH')
  }
})

test('auth: password is sent as a QuotedString; refusal is ERR_CONTROL_AUTH without the password; NULL auto', async (t) => {
  {
    const { tor, ctl } = await setup(t)
    const p = ctl.authenticate({ password: 'pa "ss" \\' })
    t.is(await tor.nextLine(), 'AUTHENTICATE "pa \\"ss\\" \\\\"')
    tor.send('250 OK\r\n')
    await p
  }
  {
    const { tor, ctl } = await setup(t)
    const p = ctl.authenticate({ password: 'wrong-secret' })
    await tor.nextLine()
    tor.send('515 Authentication failed: Password did not match HashedControlPassword value from configuration\r\n')
    const err = await t.throwsAsync(p, { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_AUTH')
    t.false(JSON.stringify([err?.message, err?.details]).includes('wrong-secret'))
  }
  {
    const { tor, ctl } = await setup(t)
    const p = ctl.authenticate({ auto: true })
    t.is(await tor.nextLine(), 'PROTOCOLINFO 1')
    tor.send('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor="0.4.9.3-alpha"\r\n250 OK\r\n')
    t.is(await tor.nextLine(), 'AUTHENTICATE')
    tor.send('250 OK\r\n')
    await p
  }
  {
    const { tor, ctl } = await setup(t)
    const p = ctl.authenticate({ auto: true })
    await tor.nextLine()
    tor.send('250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250 OK\r\n')
    const err = await t.throwsAsync(p, { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_AUTH')
  }
})

test('connect: loopback only, bad ports refused, a closed port is ERR_CONTROL_CLOSED', async (t) => {
  await t.throwsAsync(TorController.connect({ host: '10.0.0.1' as '127.0.0.1', port: 9051 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(TorController.connect({ port: 0 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(TorController.connect({ port: 9051, timeoutMs: -1 }), { instanceOf: InvalidArgumentError })
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new TypeError('no port')
  await new Promise<void>((resolve) => server.close(() => resolve()))
  const err = await t.throwsAsync(TorController.connect({ port: address.port }), { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_CLOSED')
})

/**
 * A real tor with no network at all (DisableNetwork 1, no SocksPort): it never dials anything. Empty torrc
 * files stand in for `-f /dev/null`, which this tor refuses to read.
 */
test('real tor 0.4.9 offline: SAFECOOKIE, GETINFO/GETCONF, ADD_ONION (new and with a key), DEL_ONION, TAKEOWNERSHIP', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-tor-'))
  const torrc = join(dir, 'torrc')
  await writeFile(torrc, '')
  const cpFile = join(dir, 'cp')
  const tor = spawn(
    '/usr/sbin/tor',
    ['-f', torrc, '--defaults-torrc', torrc, '--DisableNetwork', '1', '--SocksPort', '0', '--ControlPort', 'auto',
      '--ControlPortWriteToFile', cpFile, '--CookieAuthentication', '1', '--DataDirectory', join(dir, 'data'),
      '--GeoIPFile', '/dev/null', '--GeoIPv6File', '/dev/null', '--__OwningControllerProcess', String(process.pid),
      '--Log', 'notice stdout'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise<number | null>((resolve) => tor.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (tor.exitCode === null && tor.signalCode === null) tor.kill('SIGTERM')
    await exited
    await rm(dir, { recursive: true, force: true })
  })
  // The control port is known once tor has written ControlPortWriteToFile; check on every log line.
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TypeError('tor did not open its control port within 20 s')), 20_000)
    const check = (): void => {
      readFile(cpFile, 'utf8').then((text) => {
        const m = /^PORT=127\.0\.0\.1:([0-9]+)$/m.exec(text)
        if (m !== null) {
          clearTimeout(timer)
          resolve(Number(m[1]))
        }
      }, () => {})
    }
    tor.stdout.on('data', check)
    void exited.then((code) => reject(new TypeError(`tor exited early with ${code}`)))
  })
  const ctl = await TorController.connect({ port })
  await ctl.authenticate({ auto: true })
  await ctl.takeOwnership()
  const info = await ctl.getInfo(['version', 'config-text', 'status/bootstrap-phase'])
  t.regex(info.get('version') ?? '', /^0\.4\.9\./)
  t.regex(info.get('config-text') ?? '', /^DisableNetwork 1$/m)
  t.like(parseBootstrapPhase(info.get('status/bootstrap-phase') ?? ''), { type: 'bootstrap', progress: 0 })
  t.deepEqual(await ctl.getConf(['DisableNetwork']), new Map([['DisableNetwork', ['1']]]))
  await ctl.setEvents(['STATUS_CLIENT', 'HS_DESC', 'WARN'])

  const discarded = await ctl.addOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:9' }], flags: ['DiscardPK'] })
  t.regex(discarded.serviceId, /^[a-z2-7]{56}$/)
  t.is(discarded.privateKey, undefined)
  const kept = await ctl.addOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:9' }] })
  t.regex(kept.privateKey ?? '', /^ED25519-V3:/)
  const current = await ctl.getInfo(['onions/current'])
  t.deepEqual(new Set(current.get('onions/current')?.split('\n')), new Set([discarded.serviceId, kept.serviceId]))
  await ctl.delOnion(kept.serviceId)
  const again = await ctl.addOnion({
    key: { type: 'ed25519-v3', blob: (kept.privateKey ?? '').slice('ED25519-V3:'.length) },
    ports: [{ virtualPort: 80, target: '127.0.0.1:9' }],
  })
  t.deepEqual(again, { serviceId: kept.serviceId })
  await ctl.delOnion(again.serviceId)
  await ctl.delOnion(discarded.serviceId)
  const err = await t.throwsAsync(ctl.getInfo(['no-such-key']), { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_FAILED')
  t.is(err?.details?.['status'], 552)

  // TAKEOWNERSHIP: closing our connection makes tor exit by itself.
  await ctl.close()
  t.is(await exited, 0)
})
