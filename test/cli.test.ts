/**
 * The p2pmess command line without tor: parsing, --help everywhere, usage errors (exit 2, with the command's
 * help), runtime errors with the next step (exit 1), `init`, the hidden prompt, and the bin shim as a real process.
 * Runtime-error cases stop before any tor would start (no account, wrong passphrase, damaged account, bad join file).
 */
import { execFile, spawn } from 'node:child_process'
import { connect } from 'node:net'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { promisify } from 'node:util'
import test, { type ExecutionContext } from 'ava'
import {
  UsageError,
  directoriesOption,
  heartbeatOption,
  nextStep,
  parseDirectoryUrl,
  readNetworkJoin,
  type CliIo,
} from '../src/cli/commands/common.js'
import { EarlyEvents, startupLine } from '../src/cli/commands/early-events.js'
import { COMMANDS, runCli } from '../src/cli/commands/index.js'
import { promptHidden } from '../src/cli/commands/prompt.js'
import type { ClientEvent, ClientHandle } from '../src/client/api.js'
import { botReply } from '../src/client/bot.js'
import { P2PMessError, StorageError, TorError } from '../src/errors.js'
import { utf8 } from '../src/protocol/bytes.js'
import { isCanonicalPeerId } from '../src/protocol/identity.js'
import { MAX_TEXT_BYTES } from '../src/protocol/messages.js'

const execFileP = promisify(execFile)
const PASS = 'correct horse battery staple'
const ONION = 'http://' + 'a'.repeat(56) + '.onion'

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-cli-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

interface Run {
  code: number
  stdout: string
  stderr: string
}

type FakeStdin = CliIo['stdin']

function collect(stream: PassThrough): () => string {
  let text = ''
  stream.setEncoding('utf8').on('data', (d: string) => (text += d))
  return () => text
}

/** runCli in-process with captured streams, a private environment and a non-TTY stdin unless one is given. */
async function cli(argv: string[], env: Record<string, string> = {}, stdin: FakeStdin = Readable.from([])): Promise<Run> {
  const out = new PassThrough()
  const err = new PassThrough()
  const stdout = collect(out)
  const stderr = collect(err)
  const code = await runCli(argv, { env: { HOME: '/nonexistent-home', ...env }, stdin, stdout: out, stderr: err, interrupted: new Promise(() => {}) })
  await new Promise((resolve) => setImmediate(resolve))
  return { code, stdout: stdout(), stderr: stderr() }
}

/** A stdin that claims to be a terminal and types `keys` once the prompt has switched it to raw mode. */
function fakeTty(keys: string[]): { stdin: FakeStdin; rawModes: boolean[] } {
  const rawModes: boolean[] = []
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown }
  stream.isTTY = true
  const pending = [...keys]
  stream.setRawMode = (raw: boolean) => {
    rawModes.push(raw)
    const next = raw ? pending.shift() : undefined
    if (next !== undefined) setImmediate(() => stream.write(next))
    return stream
  }
  return { stdin: stream, rawModes }
}

function fakeIo(stdin: FakeStdin): { io: CliIo; stderr: () => string } {
  const err = new PassThrough()
  const stderr = collect(err)
  return { io: { env: {}, stdin, stdout: new PassThrough(), stderr: err, interrupted: new Promise(() => {}) }, stderr }
}

// --- help ---------------------------------------------------------------------------------------------------

test('--help, -h and help print the main help on stdout and exit 0, listing every command', async (t) => {
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const r = await cli(argv)
    t.is(r.code, 0, argv.join(' '))
    t.is(r.stderr, '')
    t.regex(r.stdout, /^Usage: p2pmess <command> \[options\]/)
    for (const c of COMMANDS) t.true(r.stdout.includes(`  ${c.name} `), `${c.name} listed`)
    t.true(r.stdout.includes('npm start'))
  }
})

test('every command has --help and help <command>, naming each of its options (and its env variable)', async (t) => {
  t.deepEqual(COMMANDS.map((c) => c.name), ['init', 'start', 'directory', 'network', 'sandbox'])
  for (const c of COMMANDS) {
    const a = await cli([c.name, '--help'])
    const b = await cli(['help', c.name])
    const short = await cli([c.name, '-h'])
    t.is(a.code, 0)
    t.is(b.code, 0)
    t.is(short.code, 0)
    t.is(a.stdout, b.stdout)
    t.is(a.stdout, short.stdout)
    t.true(a.stdout.startsWith(`Usage: p2pmess ${c.name}`))
    for (const [name, spec] of Object.entries(c.options)) {
      t.true(a.stdout.includes(`--${name}`), `${c.name} --${name}`)
      if (spec.env !== undefined) t.true(a.stdout.includes(spec.env), `${c.name} ${spec.env}`)
    }
  }
  const start = (await cli(['start', '--help'])).stdout
  for (const env of ['P2PMESS_DATA_DIR', 'P2PMESS_DIRECTORIES', 'P2PMESS_TOR_PATH', 'P2PMESS_NETWORK', 'P2PMESS_PASSPHRASE']) {
    t.true(start.includes(env), env)
  }
  t.true(start.includes('(repeatable)'))
})

// --- usage errors: exit 2 with help -------------------------------------------------------------------------

test('usage errors exit 2 and print the reason with the relevant help on stderr', async (t) => {
  const cases: { argv: string[]; reason: RegExp; help: RegExp }[] = [
    { argv: [], reason: /missing command/, help: /Usage: p2pmess <command>/ },
    { argv: ['chat'], reason: /unknown command "chat"/, help: /Usage: p2pmess <command>/ },
    { argv: ['--data-dir', 'x'], reason: /expected a command before "--data-dir"/, help: /Commands:/ },
    { argv: ['help', 'nope'], reason: /unknown command "nope"/, help: /Commands:/ },
    { argv: ['start', '--bogus'], reason: /Unknown option '--bogus'/, help: /Usage: p2pmess start/ },
    { argv: ['init', '-x'], reason: /Unknown option '-x'/, help: /Usage: p2pmess init/ },
    { argv: ['start', 'extra'], reason: /Unexpected argument 'extra'/, help: /Usage: p2pmess start/ },
    { argv: ['start', '--directory'], reason: /Option '--directory <value>' argument missing/, help: /Usage: p2pmess start/ },
    { argv: ['start', '--headless=yes'], reason: /--headless/, help: /Usage: p2pmess start/ },
    { argv: ['directory', '--port', '70000'], reason: /--port must be a port number/, help: /Usage: p2pmess directory/ },
    { argv: ['directory', '--port', '-1'], reason: /--port/, help: /Usage: p2pmess directory/ },
    { argv: ['network', '--bogus'], reason: /Unknown option '--bogus'/, help: /Usage: p2pmess network/ },
    { argv: ['sandbox', '--heartbeat', '0'], reason: /--heartbeat must be a number of seconds/, help: /Usage: p2pmess sandbox/ },
    { argv: ['sandbox'], reason: /needs an interactive terminal; use --headless/, help: /Usage: p2pmess sandbox/ },
    { argv: ['start', '--directory', ONION], reason: /needs an interactive terminal; use --headless/, help: /Usage: p2pmess start/ },
  ]
  for (const { argv, reason, help } of cases) {
    const r = await cli(argv)
    t.is(r.code, 2, argv.join(' '))
    t.is(r.stdout, '', argv.join(' '))
    t.regex(r.stderr, reason, argv.join(' '))
    t.regex(r.stderr, help, argv.join(' '))
  }
})

test('start without a directory is a usage error that says how to configure one', async (t) => {
  const dir = await tempDir(t)
  const r = await cli(['start', '--data-dir', dir], { P2PMESS_PASSPHRASE: PASS })
  t.is(r.code, 2)
  t.regex(r.stderr, /no directory configured: pass --directory <url>/)
  t.regex(r.stderr, /P2PMESS_DIRECTORIES/)
  t.regex(r.stderr, /npm start/)
})

test('start rejects malformed directory URLs and heartbeats before touching the data dir', async (t) => {
  for (const [argv, reason] of [
    [['--directory', 'not a url'], /is not a URL/],
    [['--directory', 'ftp://x.onion'], /must be an http:\/\/ or https:\/\/ URL/],
    [['--directory', 'http://u:p@x.onion'], /credentials/],
    [['--directory', ONION, '--heartbeat', 'abc'], /--heartbeat/],
    [['--directory', ONION, '--heartbeat', '4000'], /--heartbeat/],
  ] as const) {
    const r = await cli(['start', '--data-dir', '/nonexistent/p2pmess', ...argv])
    t.is(r.code, 2, argv.join(' '))
    t.regex(r.stderr, reason)
  }
  const env = await cli(['start', '--data-dir', '/nonexistent/p2pmess'], { P2PMESS_DIRECTORIES: `${ONION}, gopher://x` })
  t.is(env.code, 2)
  t.regex(env.stderr, /"gopher:\/\/x" must be an http/)
})

// --- configuration helpers ----------------------------------------------------------------------------------

test('directories come from repeated --directory, else comma-separated P2PMESS_DIRECTORIES; flags win, duplicates go', (t) => {
  const b = 'http://' + 'b'.repeat(56) + '.onion'
  t.deepEqual(directoriesOption({ directory: [ONION, `${b}/`, ONION] }, { P2PMESS_DIRECTORIES: 'http://ignored.onion' }), [ONION, b])
  t.deepEqual(directoriesOption({}, { P2PMESS_DIRECTORIES: ` ${ONION} ,, ${b} ` }), [ONION, b])
  t.deepEqual(directoriesOption({}, {}), [])
  t.is(parseDirectoryUrl('http://127.0.0.1:8080/'), 'http://127.0.0.1:8080')
  t.throws(() => parseDirectoryUrl('http://x.onion/?q=1'), { instanceOf: UsageError })
})

test('--heartbeat is seconds in, milliseconds out', (t) => {
  t.is(heartbeatOption({}), undefined)
  t.is(heartbeatOption({ heartbeat: '3' }), 3000)
  t.is(heartbeatOption({ heartbeat: '1.5' }), 1500)
  for (const bad of ['0', '0.5', '-3', '3s', '', '1e3', 'Infinity', '3601']) {
    t.throws(() => heartbeatOption({ heartbeat: bad }), { instanceOf: UsageError }, bad)
  }
})

test('network: bad counts are usage errors (exit 2) before any tor starts', async (t) => {
  for (const argv of [['--relays', 'x'], ['--authorities', '100']]) {
    const r = await cli(['network', ...argv])
    t.is(r.code, 2, argv.join(' '))
    t.regex(r.stderr, /must be a small whole number/)
    t.is(r.stdout, '')
  }
})

test('network join files are checked: JSON shape, single lines, and a private network only', async (t) => {
  const dir = await tempDir(t)
  const write = async (name: string, text: string): Promise<string> => {
    await writeFile(join(dir, name), text)
    return join(dir, name)
  }
  const good = { torrcLines: ['TestingTorNetwork 1', 'DirAuthority a orport=1 no-v2 v3ident=X 127.0.0.1:2 Y'], relays: ['A'.repeat(40)] }
  t.deepEqual(await readNetworkJoin(await write('good.json', JSON.stringify(good))), good)
  const bad: [string, RegExp][] = [
    ['{', /not valid JSON/],
    ['[]', /not a join file/],
    [JSON.stringify({ torrcLines: ['TestingTorNetwork 1\nDirAuthority x'] }), /not a join file/],
    [JSON.stringify({ torrcLines: ['UseBridges 1'] }), /no "TestingTorNetwork 1" and DirAuthority lines/],
    [JSON.stringify({ ...good, relays: ['nope'] }), /not a join file/],
  ]
  for (const [i, [text, message]] of bad.entries()) {
    await t.throwsAsync(readNetworkJoin(await write(`bad${i}.json`, text)), { code: 'ERR_INVALID_ARGUMENT', message }, text)
  }
  await t.throwsAsync(readNetworkJoin(join(dir, 'missing.json')), { message: /cannot read the network join file/ })
})

test('next steps: tor missing -> apt-get, no account -> init, wrong passphrase, damaged account', (t) => {
  t.regex(nextStep(new TorError('ERR_TOR_NOT_FOUND', 'tor not found'))!, /sudo apt-get install tor/)
  t.regex(nextStep(new StorageError('ERR_NO_ACCOUNT', 'x'), { dataDir: '/d' })!, /p2pmess init --data-dir \/d/)
  t.regex(nextStep(new StorageError('ERR_WRONG_PASSPHRASE', 'x'))!, /check the passphrase/)
  t.regex(nextStep(new StorageError('ERR_STORAGE_CORRUPT', 'x'), { dataDir: '/d' })!, /damaged.*p2pmess init/)
  t.is(nextStep(new P2PMessError('ERR_DECODE', 'x')), undefined)
  t.is(nextStep('a string'), undefined)
})

// --- init and start's runtime errors (exit 1) ---------------------------------------------------------------

test('init prints only the peer ID on stdout; a second init refuses with the next step', async (t) => {
  const dir = join(await tempDir(t), 'alice')
  const r = await cli(['init', '--data-dir', dir], { P2PMESS_PASSPHRASE: PASS })
  t.is(r.code, 0, r.stderr)
  t.true(isCanonicalPeerId(r.stdout.trim()), r.stdout)
  t.is(r.stdout.split('\n').length, 2)
  t.regex(r.stderr, /Account created in .*alice/)
  t.false(r.stderr.includes(PASS))
  const again = await cli(['init', '--data-dir', dir], { P2PMESS_PASSPHRASE: PASS })
  t.is(again.code, 1)
  t.regex(again.stderr, /ERR_ACCOUNT_EXISTS/)
  t.regex(again.stderr, /next: use it with `p2pmess start --data-dir/)
})

test('init takes the data dir from P2PMESS_DATA_DIR and the passphrase from --passphrase-file', async (t) => {
  const root = await tempDir(t)
  await writeFile(join(root, 'pass'), `${PASS}\n`)
  const r = await cli(['init', '--passphrase-file', join(root, 'pass')], { P2PMESS_DATA_DIR: join(root, 'from-env') })
  t.is(r.code, 0, r.stderr)
  const account = JSON.parse(await readFile(join(root, 'from-env', 'account.json'), 'utf8')) as { peerId: string }
  t.is(account.peerId, r.stdout.trim())
})

test('init without a passphrase and without a terminal says how to give one', async (t) => {
  const r = await cli(['init', '--data-dir', join(await tempDir(t), 'x')])
  t.is(r.code, 1)
  t.regex(r.stderr, /ERR_NO_PASSPHRASE/)
  t.regex(r.stderr, /--passphrase-file/)
})

test('start: no account -> init hint; wrong passphrase and damaged account -> exit 1, files unchanged', async (t) => {
  const root = await tempDir(t)
  const dir = join(root, 'bob')
  const none = await cli(['start', '--headless', '--data-dir', dir, '--directory', ONION], { P2PMESS_PASSPHRASE: PASS })
  t.is(none.code, 1)
  t.regex(none.stderr, /ERR_NO_ACCOUNT/)
  t.true(none.stderr.includes(`next: create an account first: p2pmess init --data-dir ${dir}`))

  t.is((await cli(['init', '--data-dir', dir], { P2PMESS_PASSPHRASE: PASS })).code, 0)
  const before = await readFile(join(dir, 'account.json'))
  const wrong = await cli(['start', '--headless', '--data-dir', dir, '--directory', ONION], { P2PMESS_PASSPHRASE: 'wrong' })
  t.is(wrong.code, 1)
  t.regex(wrong.stderr, /ERR_WRONG_PASSPHRASE/)
  t.regex(wrong.stderr, /next: check the passphrase/)
  t.is(wrong.stdout, '')
  t.deepEqual(await readFile(join(dir, 'account.json')), before)

  await writeFile(join(dir, 'account.json'), before.subarray(0, before.length >> 1))
  const damaged = await cli(['start', '--headless', '--data-dir', dir, '--directory', ONION], { P2PMESS_PASSPHRASE: PASS })
  t.is(damaged.code, 1)
  t.regex(damaged.stderr, /ERR_STORAGE_CORRUPT/)
  t.regex(damaged.stderr, /next: the account in .*bob is damaged/)
})

test('start with a bad --network file (or P2PMESS_NETWORK) fails before unlocking anything', async (t) => {
  const root = await tempDir(t)
  await writeFile(join(root, 'join.json'), '{"torrcLines": []}')
  for (const [argv, env] of [
    [['--network', join(root, 'join.json')], {}],
    [[], { P2PMESS_NETWORK: join(root, 'join.json') }],
  ] as const) {
    const r = await cli(['start', '--headless', '--data-dir', join(root, 'none'), '--directory', ONION, ...argv], { ...env })
    t.is(r.code, 1)
    t.regex(r.stderr, /no "TestingTorNetwork 1"/)
  }
})

test('start with a tor that is not there: exit 1 and the apt-get hint', async (t) => {
  const dir = join(await tempDir(t), 'dave')
  t.is((await cli(['init', '--data-dir', dir], { P2PMESS_PASSPHRASE: PASS })).code, 0)
  const r = await cli(['start', '--headless', '--data-dir', dir, '--directory', ONION, '--tor-path', join(dir, 'no-such-tor')], { P2PMESS_PASSPHRASE: PASS })
  t.is(r.code, 1)
  t.is(r.stderr.match(/ERR_TOR_NOT_FOUND/g)?.length, 1, `reported once:\n${r.stderr}`)
  t.regex(r.stderr, /next: install tor \(`sudo apt-get install tor`\)/)
  const viaEnv = await cli(['start', '--headless', '--data-dir', dir, '--directory', ONION], { P2PMESS_PASSPHRASE: PASS, P2PMESS_TOR_PATH: join(dir, 'no-such-tor') })
  t.is(viaEnv.code, 1)
  t.regex(viaEnv.stderr, /no-such-tor/)
})

// --- the hidden prompt --------------------------------------------------------------------------------------

test('the passphrase prompt echoes nothing, handles backspace, and restores the terminal', async (t) => {
  const tty = fakeTty(['se\u007fecret\r'])
  const { io, stderr } = fakeIo(tty.stdin)
  t.is(await promptHidden(io, 'Passphrase: '), 'secret')
  t.deepEqual(tty.rawModes, [true, false])
  t.is(stderr(), 'Passphrase: \n')
  const cancelled = fakeTty(['abc\u0003'])
  await t.throwsAsync(promptHidden(fakeIo(cancelled.stdin).io, 'Passphrase: '), { code: 'ERR_NO_PASSPHRASE' })
  t.deepEqual(cancelled.rawModes, [true, false])
})

test('init on a terminal asks twice; different answers create nothing', async (t) => {
  const root = await tempDir(t)
  const ok = await cli(['init', '--data-dir', join(root, 'a')], {}, fakeTty([`${PASS}\r`, `${PASS}\n`]).stdin)
  t.is(ok.code, 0, ok.stderr)
  t.regex(ok.stderr, /New passphrase: \nRepeat passphrase: \n/)
  t.false(ok.stderr.includes(PASS))
  const differ = await cli(['init', '--data-dir', join(root, 'b')], {}, fakeTty([`${PASS}\r`, 'other\r']).stdin)
  t.is(differ.code, 1)
  t.regex(differ.stderr, /the two passphrases differ/)
  await t.throwsAsync(readFile(join(root, 'b', 'account.json')))
})

// --- the demo bot's words -----------------------------------------------------------------------------------

test('the bot echoes a bounded, single-line copy and greets first', (t) => {
  t.regex(botReply('hello', 0), /^You said: “hello”\. Hi! I'm the P2PMess demo bot/)
  t.not(botReply('x', 1), botReply('x', 0))
  t.false(/[\n\r\u001b]/.test(botReply('a\nb\u001b[2Jc', 2)))
  const long = botReply('é'.repeat(MAX_TEXT_BYTES), 3)
  t.true(utf8(long).length <= MAX_TEXT_BYTES)
  t.true(long.includes('…'))
})

// --- the bin shim, as a real process ------------------------------------------------------------------------

test('bin/p2pmess.js runs the CLI: --help exits 0, a usage error exits 2', async (t) => {
  const help = await execFileP(process.execPath, ['bin/p2pmess.js', '--help'])
  t.regex(help.stdout, /Usage: p2pmess <command>/)
  const err = await execFileP(process.execPath, ['bin/p2pmess.js', 'start', '--nope']).then(
    () => undefined,
    (e: unknown) => e as { code: number; stderr: string },
  )
  t.is(err?.code, 2)
  t.regex(err?.stderr ?? '', /Unknown option '--nope'/)
})

// --- start-up events before the UI subscribes -----------------------------------------------------------------

function fakeHandle(): { handle: ClientHandle; stopped: () => number } {
  let stops = 0
  const handle: ClientHandle = {
    peerId: 'p',
    onEvent: () => () => {},
    dispatch: () => Promise.resolve({ ok: true }),
    contacts: () => [],
    stop: async () => void stops++,
  }
  return { handle, stopped: () => stops }
}

test('EarlyEvents hands the start-up backlog, in order and filtered, to the first subscriber, then goes live', async (t) => {
  const early: ClientEvent[] = []
  const events = new EarlyEvents({
    onEarly: (e) => early.push(e),
    keep: (e) => !(e.type === 'error' && e.code === 'ERR_DIRECTORY_UNREACHABLE'),
  })
  const bootstrap: ClientEvent = { type: 'bootstrap', progress: 100, summary: 'Done' }
  const dropped: ClientEvent = { type: 'error', code: 'ERR_DIRECTORY_UNREACHABLE', message: 'not yet' }
  const ready: ClientEvent = { type: 'ready', peerId: 'p', onion: 'x.onion' }
  const published: ClientEvent = { type: 'published', seq: 1, directories: 1 }
  const delivered: ClientEvent = { type: 'delivered', peerId: 'p', id: 'i' }
  events.onEvent(bootstrap)
  events.onEvent(dropped)
  events.onEvent(ready)
  t.deepEqual(early, [bootstrap, ready])

  const { handle, stopped } = fakeHandle()
  const wrapped = events.wrap(handle)
  t.is(wrapped.peerId, 'p')
  const seen: ClientEvent[] = []
  const off = wrapped.onEvent((e) => seen.push(e))
  events.onEvent(published) // arrives while the backlog is queued: delivered after it
  t.deepEqual(seen, [])
  await Promise.resolve()
  t.deepEqual(seen, [bootstrap, ready, published])
  events.onEvent(delivered)
  t.deepEqual(seen, [bootstrap, ready, published, delivered])
  t.deepEqual(early, [bootstrap, ready], 'onEarly only sees what came before the first subscriber')
  off()
  events.onEvent(delivered)
  t.is(seen.length, 4)
  await wrapped.stop()
  t.is(stopped(), 1)
})

test('start-up progress lines: bootstrap, onion, publication and errors; nothing for chat events', (t) => {
  t.is(startupLine({ type: 'bootstrap', progress: 50, summary: 'Loading' }), 'tor: bootstrapped 50% (Loading)')
  t.is(startupLine({ type: 'published', seq: 3, directories: 2 }), 'record published to 2 directories')
  t.regex(startupLine({ type: 'error', code: 'ERR_X', message: 'boom' })!, /boom \[ERR_X\]/)
  t.is(startupLine({ type: 'delivered', peerId: 'p', id: 'i' }), undefined)
  t.is(startupLine({ type: 'tor', state: 'ready' }), undefined)
})

test('directory (plain): prints its loopback URL alone on stdout, serves, and exits 0 on SIGTERM', async (t) => {
  const dir = await tempDir(t)
  const child = spawn(process.execPath, ['bin/p2pmess.js', 'directory', '--data-dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => void child.kill('SIGKILL'))
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (out.includes('\n')) resolve(out.split('\n')[0]!)
    })
    void exited.then((code) => reject(new P2PMessError('ERR_DIRECTORY_UNREACHABLE', `directory exited (${code}): ${stderr}`)))
  })
  t.regex(url, /^http:\/\/127\.0\.0\.1:\d+$/)
  const port = Number(new URL(url).port)
  await new Promise<void>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.end()
      resolve()
    }).once('error', reject)
  })
  child.kill('SIGTERM')
  t.is(await exited, 0)
  t.regex(stderr, /SIGTERM, shutting down/)
})
