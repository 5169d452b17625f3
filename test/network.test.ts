/**
 * The private Tor network and the tor launcher, on real tors: the network forms, client tors bootstrap on
 * it, an onion service on one client is reached from the other, stop() leaves nothing behind, and the
 * start-up failures come back as typed errors. Pure parsers are checked on canned text first.
 */
import { execFile, spawn } from 'node:child_process'
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import test from 'ava'
import { startNetwork } from '../relay/network.js'
import { P2PMessError } from '../src/errors.js'
import {
  consensusFingerprints,
  hashControlPassword,
  parseListenerOpened,
  parseLogLine,
  parsePortInUse,
  TorProcess,
} from '../src/tor/process.js'
import { connectThroughTor, startTestTor, testNetwork } from './helpers/tor.js'

const run = promisify(execFile)

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

async function tempDir(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-test-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Reads exactly `n` bytes from `socket`. */
function readBytes(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      got = Buffer.concat([got, chunk])
      if (got.length >= n) {
        socket.off('data', onData)
        socket.off('error', reject)
        resolve(got.subarray(0, n))
      }
    }
    socket.on('data', onData)
    socket.once('error', reject)
  })
}

// ---- pure parsing --------------------------------------------------------------------------------------

test('parseLogLine reads severity and message, rejects other text', (t) => {
  t.deepEqual(parseLogLine('Nov 25 17:54:11.040 [notice] Bootstrapped 5% (conn): Connecting to a relay'), {
    severity: 'notice',
    message: 'Bootstrapped 5% (conn): Connecting to a relay',
  })
  t.deepEqual(parseLogLine('Nov  5 01:02:03.000 [warn] x'), { severity: 'warn', message: 'x' })
  t.is(parseLogLine('Nov 25 17:54:11.040 [loud] x'), undefined)
  t.is(parseLogLine('garbage'), undefined)
  t.is(parseLogLine(''), undefined)
})

test('parseListenerOpened and parsePortInUse read ports from tor log messages', (t) => {
  t.deepEqual(parseListenerOpened('Opened Socks listener connection (ready) on 127.0.0.1:44675'), { kind: 'Socks', port: 44675 })
  t.deepEqual(parseListenerOpened('Opened OR listener connection (ready) on 127.0.0.1:5000'), { kind: 'OR', port: 5000 })
  t.is(parseListenerOpened('Opening Socks listener on 127.0.0.1:0'), undefined)
  t.is(parsePortInUse('Could not bind to 127.0.0.1:5000: Address already in use. Is Tor already running?'), 5000)
  t.is(parsePortInUse('Could not bind to 127.0.0.1:5000: Permission denied'), undefined)
})

test('consensusFingerprints decodes the identity of every "r" line', (t) => {
  const ns = [
    'r relay0 9QiuvDiQyGdCAscuwjFPd8p8Xp4 2026-11-25 17:56:11 127.0.0.1 5000 0',
    's Exit Fast Guard HSDir Running Stable V2Dir Valid',
    'r bad !!!',
  ].join('\n')
  t.deepEqual([...consensusFingerprints(ns)], ['F508AEBC3890C8674202C72EC2314F77CA7C5E9E'])
  t.is(consensusFingerprints('').size, 0)
})

test('hashControlPassword matches `tor --hash-password` for the same salt', async (t) => {
  const { stdout } = await run('tor', ['--hash-password', 'correct horse'])
  const theirs = /^16:[0-9A-F]{58}$/m.exec(stdout)?.[0]
  if (theirs === undefined) return t.fail(`unexpected tor output: ${stdout}`)
  const salt = Buffer.from(theirs.slice(3, 19), 'hex')
  t.is(hashControlPassword('correct horse', salt), theirs)
  t.throws(() => hashControlPassword('', salt), { code: 'ERR_INVALID_ARGUMENT' })
  t.throws(() => hashControlPassword('x', new Uint8Array(7)), { code: 'ERR_INVALID_ARGUMENT' })
})

// ---- the shared network ---------------------------------------------------------------------------------

test('two client tors bootstrap on the private network and see every relay', async (t) => {
  const network = await testNetwork()
  t.true(network.torrcLines.includes('TestingTorNetwork 1'))
  t.true(network.torrcLines.some((l) => l.startsWith('DirAuthority ')))
  const progress: number[] = []
  const [a, b] = await Promise.all([startTestTor(t, { onBootstrap: (p) => progress.push(p.progress) }), startTestTor(t)])
  for (const tor of [a, b]) {
    t.true(tor.socksPort > 0 && tor.controlPort > 0 && tor.socksPort !== tor.controlPort)
    const info = await tor.controller.getInfo(['status/bootstrap-phase', 'ns/all'])
    t.regex(info.get('status/bootstrap-phase') ?? '', /PROGRESS=100/)
    const listed = consensusFingerprints(info.get('ns/all') ?? '')
    for (const fp of network.relays ?? []) t.true(listed.has(fp), `relay ${fp} missing from the consensus`)
  }
  t.is(progress.at(-1), 100)
})

test('an onion service on one client is reached from the other; bytes round-trip both ways', async (t) => {
  const [service, visitor] = await Promise.all([startTestTor(t), startTestTor(t)])
  const server: Server = createServer((socket) => {
    socket.write('hello from the service\n')
    socket.on('data', (chunk) => socket.write(Buffer.from(chunk).reverse()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const local = (server.address() as AddressInfo).port

  const onion = await service.controller.addOnion({
    key: { type: 'new' },
    ports: [{ virtualPort: 80, target: `127.0.0.1:${local}` }],
    flags: ['Detach', 'DiscardPK'],
  })
  t.teardown(() => service.controller.delOnion(onion.serviceId).catch(() => {}))
  const started = Date.now()
  const { socket, attempts, replies } = await connectThroughTor(visitor.socksPort, `${onion.serviceId}.onion`, 80, 45_000)
  t.teardown(() => void socket.destroy())
  t.log(`onion reachable after ${Date.now() - started} ms, ${attempts} attempt(s), SOCKS replies before success: ${replies.map((r) => '0x' + r.toString(16)).join(' ') || 'none'}`)

  const greeting = 'hello from the service\n'
  t.is((await readBytes(socket, greeting.length)).toString(), greeting)
  const payload = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  const echoed = readBytes(socket, payload.length)
  socket.write(payload)
  t.deepEqual(await echoed, Buffer.from(payload).reverse())
})

// ---- a network of its own ------------------------------------------------------------------------------

test('a second network forms beside the shared one, and stop() leaves no tor and no state behind', async (t) => {
  await testNetwork() // make sure the shared one is up, so the two really coexist
  const parent = await tempDir(t)
  // A directory left by a network whose process was SIGKILLed: swept by the next start.
  const dead = spawn(process.execPath, ['-e', ''])
  await new Promise((resolve) => dead.once('exit', resolve))
  const stale = join(parent, 'p2pmess-net-stale')
  await mkdir(stale)
  await writeFile(join(stale, 'owner'), `${dead.pid}\n`)

  const network = await startNetwork({ authorities: 1, relays: 3, baseDir: parent })
  t.teardown(() => network.stop())
  t.is(network.nodes.length, 4)
  const pids = network.nodes.map((n) => n.pid)
  t.true(pids.every(alive))
  const ports = network.nodes.flatMap((n) => [n.orPort, n.dirPort, n.controlPort].filter((p) => p !== undefined))
  t.is(new Set(ports).size, ports.length)
  await network.stop()
  t.deepEqual(pids.filter(alive), [])
  await t.throwsAsync(access(network.dir))
  await t.throwsAsync(access(stale))
  await network.stop() // idempotent
})

// ---- start-up failures ---------------------------------------------------------------------------------

test('a missing tor binary is ERR_TOR_NOT_FOUND with install advice', async (t) => {
  const dir = await tempDir(t)
  const err = await t.throwsAsync(TorProcess.start({ torPath: '/nonexistent/tor', dataDir: join(dir, 'tor') }))
  t.true(err instanceof P2PMessError)
  t.is((err as P2PMessError).code, 'ERR_TOR_NOT_FOUND')
  t.regex(err?.message ?? '', /apt-get install tor/)
  await t.throwsAsync(startNetwork({ torPath: '/nonexistent/tor', baseDir: dir }), { code: 'ERR_TOR_NOT_FOUND' })
})

test('tor exiting during start-up (invalid option) is ERR_TOR_EXITED with tor\'s complaint', async (t) => {
  const network = await testNetwork()
  const dir = await tempDir(t)
  const err = await t.throwsAsync(TorProcess.start({ dataDir: join(dir, 'tor'), network, extraTorrc: ['NoSuchOption 1'] }), {
    code: 'ERR_TOR_EXITED',
  })
  t.regex(err?.message ?? '', /NoSuchOption/)
})

test('a SOCKS port already in use is ERR_TOR_PORT_IN_USE naming the port', async (t) => {
  const network = await testNetwork()
  const dir = await tempDir(t)
  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const port = (blocker.address() as AddressInfo).port
  const err = await t.throwsAsync(TorProcess.start({ dataDir: join(dir, 'tor'), network, socksPort: port }), { code: 'ERR_TOR_PORT_IN_USE' })
  t.is((err as P2PMessError).details?.['port'], port)
})

test('bad arguments are rejected before anything starts', async (t) => {
  await t.throwsAsync(startNetwork({ authorities: 0 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(startNetwork({ authorities: 1, relays: 2 }), { code: 'ERR_INVALID_ARGUMENT', message: /at least 4 nodes/ })
  await t.throwsAsync(startNetwork({ timeoutMs: -1 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(TorProcess.start({ dataDir: '' }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(TorProcess.start({ dataDir: '/tmp/x', socksPort: 70000 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(TorProcess.start({ dataDir: '/tmp/x', network: { torrcLines: ['a\nb'] } }), { code: 'ERR_INVALID_ARGUMENT' })
})
