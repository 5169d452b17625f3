/**
 * The private Tor network and the tor launcher, on real tors: the network forms, client tors bootstrap on
 * it, an onion service on one client is reached from the other, stop() leaves nothing behind, and the
 * start-up failures come back as typed errors. Pure parsers are checked on canned text first.
 */
import { execFile, spawn } from 'node:child_process'
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { PassThrough } from 'node:stream'
import { promisify } from 'node:util'
import test from 'ava'
import { runNetworkCli } from '../relay/cli.js'
import { startNetwork } from '../relay/network.js'
import { P2PMessError, TorError } from '../src/errors.js'
import { createTorDialer } from '../src/tor/dialer.js'
import {
  consensusFingerprints,
  hashControlPassword,
  parseListenerOpened,
  parseLogLine,
  parsePortInUse,
  TorProcess,
} from '../src/tor/process.js'
import { readBytes, startReverseEchoServer } from './helpers/net.js'
import { alive, startTestTor, testNetwork } from './helpers/tor.js'

const run = promisify(execFile)

async function tempDir(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-test-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
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
    // A fixed circuit build timeout, not one learned on loopback (~40 ms, which abandons good circuits).
    const conf = await tor.controller.getConf(['LearnCircuitBuildTimeout', 'CircuitBuildTimeout'])
    t.deepEqual(conf.get('LearnCircuitBuildTimeout'), ['0'])
    t.deepEqual(conf.get('CircuitBuildTimeout'), ['10'])
  }
  t.is(progress.at(-1), 100)
})

test('an onion service on one client is reached from the other; bytes round-trip both ways', async (t) => {
  const [service, visitor] = await Promise.all([startTestTor(t), startTestTor(t)])
  const greeting = 'hello from the service\n'
  const local = await startReverseEchoServer(t, greeting)

  const onion = await service.controller.addOnion({
    key: { type: 'new' },
    ports: [{ virtualPort: 80, target: `127.0.0.1:${local}` }],
    flags: ['Detach', 'DiscardPK'],
  })
  t.teardown(() => service.controller.delOnion(onion.serviceId).catch(() => {}))
  const started = Date.now()
  const retries: string[] = []
  const dialer = createTorDialer({ socksPort: visitor.socksPort })
  const socket = await dialer.dialWithRetry(`${onion.serviceId}.onion`, 80, { deadlineMs: 45_000, onRetry: (r) => retries.push(r.error.code) })
  t.teardown(() => void socket.destroy())
  t.log(`onion reachable after ${Date.now() - started} ms, ${retries.length + 1} attempt(s), failures before success: ${retries.join(' ') || 'none'}`)

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

test('runNetworkCli: ready line and join file, then an interrupt stops every tor and removes the state (exit 0)', async (t) => {
  const stdout = new PassThrough()
  let out = ''
  const ready = new Promise<void>((resolve) => {
    stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk
      if (out.includes('Ctrl-C stops the network.')) resolve()
    })
  })
  let interrupt: (signal: string) => void = () => {}
  const interrupted = new Promise<string>((resolve) => (interrupt = resolve))
  const running = runNetworkCli(['--authorities', '1', '--relays', '3'], { stdout, stderr: new PassThrough().resume(), interrupted })
  t.is(await Promise.race([ready.then(() => 'ready'), running]), 'ready', `runNetworkCli exited before the network was ready: ${out}`)
  const joinFile = /join info \(NetworkJoin JSON\) in (\S+)\n/.exec(out)?.[1] ?? ''
  t.regex(out, /^ready: 4 tors on 127\.0\.0\.1 in [\d.]+ s;/)
  t.true((JSON.parse(await readFile(joinFile, 'utf8')) as { torrcLines: string[] }).torrcLines.includes('TestingTorNetwork 1'))
  const networkDir = dirname(joinFile)
  /** The tors of this network: each runs `tor -f <networkDir>/<node>/torrc`. */
  const tors = async (): Promise<number> => (await run('pgrep', ['-f', `${networkDir}/`]).catch(() => ({ stdout: '' }))).stdout.split('\n').filter((l) => l !== '').length
  t.is(await tors(), 4)
  interrupt('SIGINT')
  t.is(await running, 0)
  t.is(await tors(), 0)
  await t.throwsAsync(access(networkDir))
})

test('runNetworkCli: --help exits 0, bad flags and counts exit 2, nothing started', async (t) => {
  const io = { stdout: new PassThrough(), stderr: new PassThrough(), interrupted: new Promise<string>(() => {}) }
  let err = ''
  io.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk))
  t.is(await runNetworkCli(['--help'], io), 0)
  t.regex(String(io.stdout.read()), /^usage: npm run network/)
  t.is(await runNetworkCli(['--relays', 'x'], io), 2)
  t.is(await runNetworkCli(['--authorities', '123'], io), 2)
  t.is(await runNetworkCli(['--bogus'], io), 2)
  t.regex(err, /--relays must be a small whole number\n--authorities must be a small whole number\nUnknown option '--bogus'/)
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

test('a data directory that cannot be made is ERR_TOR_CONFIG naming the path, before tor is started', async (t) => {
  const dir = await tempDir(t)
  // A tor that is not there: had the data directory been made, the error would be ERR_TOR_NOT_FOUND, and no tor
  // (let alone one on the real network: no `network` here) can start.
  const torPath = '/nonexistent/tor'
  const file = join(dir, 'a-file')
  await writeFile(file, 'not a directory\n')
  for (const [dataDir, errno] of [
    [join(file, 'tor'), 'ENOTDIR'],
    [file, 'EEXIST'],
  ] as const) {
    const err = await t.throwsAsync(TorProcess.start({ dataDir, torPath }), { instanceOf: TorError, code: 'ERR_TOR_CONFIG' })
    t.true(err?.message.includes(dataDir), err?.message)
    t.is(err?.details?.['dataDir'], dataDir)
    t.true(String(err?.details?.['path']).startsWith(file))
    const cause = err?.cause
    t.is(cause instanceof Error && 'code' in cause ? cause.code : undefined, errno)
  }
  // A torrc that cannot be written (a directory in its place) is caught the same way.
  await mkdir(join(dir, 'tor', 'torrc'), { recursive: true })
  const err = await t.throwsAsync(TorProcess.start({ dataDir: join(dir, 'tor'), torPath }), { instanceOf: TorError, code: 'ERR_TOR_CONFIG' })
  t.is(err?.details?.['path'], join(dir, 'tor', 'torrc'))
})

test('bad arguments are rejected before anything starts', async (t) => {
  await t.throwsAsync(startNetwork({ authorities: 0 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(startNetwork({ authorities: 1, relays: 2 }), { code: 'ERR_INVALID_ARGUMENT', message: /at least 4 nodes/ })
  await t.throwsAsync(startNetwork({ timeoutMs: -1 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(TorProcess.start({ dataDir: '' }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(TorProcess.start({ dataDir: '/tmp/x', socksPort: 70000 }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(TorProcess.start({ dataDir: '/tmp/x', network: { torrcLines: ['a\nb'] } }), { code: 'ERR_INVALID_ARGUMENT' })
})
