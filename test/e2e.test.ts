/**
 * End to end, as users run it: every client and the directory are SEPARATE processes started through the CLI
 * (`p2pmess directory --onion`, `p2pmess init`, `p2pmess start --headless`) on the private Tor network of this
 * test run, driven over the JSON-lines protocol of docs/HEADLESS.md. Every wait is on an event with a deadline;
 * teardown kills every process this file started.
 *
 * CPU: one directory tor and two client tors on the shared network (the machine has 2 cores).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import type { ClientEvent, MessageView } from '../src/client/api.js'
import { P2PMessError } from '../src/errors.js'
import { isCanonicalPeerId } from '../src/protocol/identity.js'
import { NETWORK_ENV, testNetwork } from './helpers/tor.js'

const MAIN = ['--import', 'tsx', 'src/cli/main.ts']
const HEARTBEAT_S = 3
/** Generous start-up deadlines: tor bootstrap plus onion publication on a busy 2-core machine. */
const START_MS = 120_000
const DELIVERY_MS = 90_000

/** Every process this file started, killed at the end whatever happened. */
const children = new Set<ChildProcess>()
test.after.always(() => {
  for (const child of children) child.kill('SIGKILL')
})

async function tempDir(t: ExecutionContext, name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `p2pmess-e2e-${name}-`))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** The test network's join file: the shared one from test/run.ts, else this file's network written out. */
async function joinFile(t: ExecutionContext): Promise<string> {
  const network = await testNetwork()
  const shared = process.env[NETWORK_ENV]
  if (shared !== undefined && shared !== '') return shared
  const path = join(await tempDir(t, 'net'), 'join.json')
  await writeFile(path, JSON.stringify(network))
  return path
}

function cliEnv(passphrase?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const key of ['P2PMESS_DATA_DIR', 'P2PMESS_DIRECTORIES', 'P2PMESS_NETWORK', 'P2PMESS_PASSPHRASE']) delete env[key]
  if (passphrase !== undefined) env.P2PMESS_PASSPHRASE = passphrase
  return env
}

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

/** A CLI process: stdout split into lines (parsed as JSON when they are), stderr kept for failure messages. */
class Proc {
  readonly child: ChildProcess
  readonly lines: string[] = []
  stderr = ''
  readonly exited: Promise<Exit>
  #waiters = new Set<() => void>()

  constructor(args: string[], env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, [...MAIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    children.add(this.child)
    let partial = ''
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n')
      partial = parts.pop()!
      this.lines.push(...parts)
      this.#wake()
    })
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk
      this.#wake()
    })
    this.child.stdin!.on('error', () => {})
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        children.delete(this.child)
        resolve({ code, signal })
        this.#wake()
      })
    })
  }

  #wake(): void {
    for (const w of this.#waiters) w()
  }

  /** Resolves with the first value `pick` returns for the output so far (re-checked on every new line). */
  until<T>(what: string, timeoutMs: number, pick: () => T | undefined): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const value = pick()
        if (value !== undefined) {
          done()
          resolve(value)
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          done()
          reject(new P2PMessError('ERR_SESSION_CLOSED', `process exited while waiting for ${what}; stderr:\n${this.stderr.slice(-2000)}`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new P2PMessError('ERR_SESSION_TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}; last output:\n${this.lines.slice(-10).join('\n')}\nstderr:\n${this.stderr.slice(-2000)}`))
      }, timeoutMs)
      const done = (): void => {
        clearTimeout(timer)
        this.#waiters.delete(check)
      }
      this.#waiters.add(check)
      check()
    })
  }
}

/** `p2pmess start --headless` and the JSON-lines protocol. */
class Client extends Proc {
  #ref = 0

  get objects(): Record<string, unknown>[] {
    return this.lines.flatMap((line) => {
      try {
        const value: unknown = JSON.parse(line)
        return typeof value === 'object' && value !== null ? [value as Record<string, unknown>] : []
      } catch {
        return []
      }
    })
  }

  get events(): ClientEvent[] {
    return this.objects.filter((o) => o.type !== 'result' && !('ref' in o)) as unknown as ClientEvent[]
  }

  event<T extends ClientEvent['type']>(type: T, timeoutMs: number, where: (e: Extract<ClientEvent, { type: T }>) => boolean = () => true): Promise<Extract<ClientEvent, { type: T }>> {
    return this.until(`a ${type} event`, timeoutMs, () =>
      this.events.find((e): e is Extract<ClientEvent, { type: T }> => e.type === type && where(e as Extract<ClientEvent, { type: T }>)),
    )
  }

  /** Sends one command and resolves with its result line (which must say ok). */
  async command(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const ref = ++this.#ref
    this.child.stdin!.write(JSON.stringify({ ...cmd, ref }) + '\n')
    const result = await this.until(`the result of ${String(cmd.cmd)} #${ref}`, 30_000, () => this.objects.find((o) => o.ref === ref))
    if (result.ok !== true) throw new P2PMessError('ERR_SESSION_PROTOCOL', `${String(cmd.cmd)} failed: ${JSON.stringify(result)}`)
    return result
  }
}

async function init(dataDir: string, passphrase: string): Promise<string> {
  const proc = new Proc(['init', '--data-dir', dataDir], cliEnv(passphrase))
  const exit = await proc.exited
  if (exit.code !== 0) throw new P2PMessError('ERR_STORAGE_IO', `init failed (${exit.code}): ${proc.stderr}`)
  const peerId = proc.lines[0] ?? ''
  if (!isCanonicalPeerId(peerId)) throw new P2PMessError('ERR_STORAGE_IO', `init printed ${JSON.stringify(proc.lines)}`)
  return peerId
}

function startClientProcess(dataDir: string, passphrase: string, network: string, directory: string): Client {
  return new Client(
    ['start', '--headless', '--data-dir', dataDir, '--network', network, '--directory', directory, '--heartbeat', String(HEARTBEAT_S)],
    cliEnv(passphrase),
  )
}

/** Every file under `dir` with its contents, to prove a failed start changed nothing. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>()
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const path = join(entry.parentPath, entry.name)
    files.set(path, (await readFile(path)).toString('base64'))
  }
  return files
}

test.serial('separate client processes meet through an onion directory, chat, notice a frozen and a killed peer, and deliver the backlog', async (t) => {
  t.timeout(600_000)
  const network = await joinFile(t)
  const root = await tempDir(t, 'run')

  // The directory: its own process and tor; the onion URL is its first stdout line.
  const directory = new Proc(['directory', '--onion', '--network', network, '--data-dir', join(root, 'directory')], cliEnv())
  t.teardown(() => void directory.child.kill('SIGKILL'))
  const [alice, bob] = await Promise.all([init(join(root, 'alice'), 'alice pass'), init(join(root, 'bob'), 'bob pass')])
  const directoryUrl = await directory.until('the directory URL', START_MS, () => directory.lines.find((l) => /^http:\/\/[a-z2-7]{56}\.onion$/.test(l)))
  t.log(`directory ${directoryUrl}`)

  const startedAt = Date.now()
  const a = startClientProcess(join(root, 'alice'), 'alice pass', network, directoryUrl)
  let b = startClientProcess(join(root, 'bob'), 'bob pass', network, directoryUrl)
  t.teardown(() => void a.child.kill('SIGKILL'))
  t.teardown(() => void b.child.kill('SIGKILL'))
  await Promise.all([a.event('published', START_MS), b.event('published', START_MS)])
  t.log(`both clients published ${((Date.now() - startedAt) / 1000).toFixed(1)} s after start`)

  // Alice adds Bob; Bob sees the request and accepts.
  await a.command({ cmd: 'add', peerId: bob, name: 'bob' })
  await b.event('request', DELIVERY_MS, (e) => e.peerId === alice)
  await b.command({ cmd: 'accept', peerId: alice })

  // Messages both ways, each acknowledged with `delivered`.
  const hello = await a.command({ cmd: 'send', peerId: bob, body: 'hello bob' })
  const gotHello = await b.event('message', DELIVERY_MS, (e) => e.message.direction === 'in' && e.message.id === hello.id)
  t.is(gotHello.message.body, 'hello bob')
  t.is(gotHello.message.peerId, alice)
  await a.event('delivered', DELIVERY_MS, (e) => e.id === hello.id && e.peerId === bob)
  const reply = await b.command({ cmd: 'send', peerId: alice, body: 'hi alice' })
  const gotReply = await a.event('message', DELIVERY_MS, (e) => e.message.direction === 'in' && e.message.id === reply.id)
  t.is(gotReply.message.body, 'hi alice')
  await b.event('delivered', DELIVERY_MS, (e) => e.id === reply.id && e.peerId === alice)
  t.log(`first round trip done ${((Date.now() - startedAt) / 1000).toFixed(1)} s after start`)

  // Bob freezes (SIGSTOP): his tor stays up and the circuit stays open, so only the missing heartbeats can tell
  // Alice. She must notice within two heartbeat intervals (1 s of slack for process scheduling), and see him
  // come back after SIGCONT.
  const leftOnline = (from: number, what: string): Promise<number> => {
    const since = Date.now()
    return a
      .until(what, 2 * HEARTBEAT_S * 1000 + 5_000, () =>
        a.events.slice(from).find((e) => e.type === 'presence' && e.peerId === bob && e.presence !== 'online'),
      )
      .then(() => Date.now() - since)
  }
  const frozenMs = await (async () => {
    const from = a.events.length
    b.child.kill('SIGSTOP')
    try {
      return await leftOnline(from, 'Bob (frozen) leaving online')
    } finally {
      b.child.kill('SIGCONT')
    }
  })()
  t.log(`Alice saw frozen Bob leave online after ${frozenMs} ms (2H = ${2 * HEARTBEAT_S * 1000} ms)`)
  t.true(frozenMs <= 2 * HEARTBEAT_S * 1000 + 1_000)
  const thawed = a.events.length
  await a.until('Bob back online after SIGCONT', DELIVERY_MS, () =>
    a.events.slice(thawed).find((e) => e.type === 'presence' && e.peerId === bob && e.presence === 'online'),
  )

  // Bob dies hard (SIGKILL). Alice must notice within two heartbeat intervals too.
  const killed = a.events.length
  b.child.kill('SIGKILL')
  await b.exited
  const killedMs = await leftOnline(killed, 'Bob (killed) leaving online')
  t.log(`Alice saw killed Bob leave online after ${killedMs} ms`)
  t.true(killedMs <= 2 * HEARTBEAT_S * 1000 + 1_000)

  // 20 messages while Bob is down: queued, then delivered once each and in order when he is back.
  const bodies = Array.from({ length: 20 }, (_, i) => `offline message ${i}`)
  const ids: string[] = []
  for (const body of bodies) ids.push(String((await a.command({ cmd: 'send', peerId: bob, body })).id))
  t.is(new Set(ids).size, 20)
  const restartedAt = Date.now()
  b = startClientProcess(join(root, 'bob'), 'bob pass', network, directoryUrl)
  t.teardown(() => void b.child.kill('SIGKILL'))
  const restarted = b
  const received = await restarted.until('20 queued messages at Bob', START_MS, () => {
    const inbound = restarted.events.flatMap((e) => (e.type === 'message' && e.message.direction === 'in' ? [e.message] : []))
    return inbound.length >= 20 ? inbound : undefined
  })
  await a.until('20 delivered events at Alice', DELIVERY_MS, () => {
    const delivered = new Set(a.events.flatMap((e) => (e.type === 'delivered' && e.peerId === bob ? [e.id] : [])))
    return ids.every((id) => delivered.has(id)) ? true : undefined
  })
  t.log(`20 queued messages delivered ${((Date.now() - restartedAt) / 1000).toFixed(1)} s after Bob restarted`)
  t.deepEqual(received.map((m: MessageView) => m.body), bodies)
  t.deepEqual(received.map((m: MessageView) => m.id), ids)
  // Once each: Bob's stored history holds each of them exactly once.
  const history = await restarted.command({ cmd: 'history', peerId: alice, limit: 100 })
  const stored = (history.messages as MessageView[]).filter((m) => m.direction === 'in').map((m) => m.body)
  t.deepEqual(stored.filter((body) => bodies.includes(body)), bodies)
  const delivered = a.events.filter((e) => e.type === 'delivered' && ids.includes(e.id))
  t.is(delivered.length, 20)

  await Promise.all([a.command({ cmd: 'quit' }), restarted.command({ cmd: 'quit' })])
  t.deepEqual((await a.exited).code, 0)
  t.deepEqual((await restarted.exited).code, 0)
  directory.child.kill('SIGTERM')
  t.is((await directory.exited).code, 0)
})

test.serial('a wrong passphrase or a damaged account ends with a clear error and exit 1, changing nothing', async (t) => {
  const root = await tempDir(t, 'fail')
  const dir = join(root, 'carol')
  await init(dir, 'carol pass')
  const before = await snapshot(dir)
  const onion = 'http://' + 'a'.repeat(56) + '.onion'

  const wrong = new Proc(['start', '--headless', '--data-dir', dir, '--directory', onion], cliEnv('not carol'))
  t.deepEqual(await wrong.exited, { code: 1, signal: null })
  t.regex(wrong.stderr, /wrong passphrase|ERR_WRONG_PASSPHRASE/i)
  t.regex(wrong.stderr, /next: check the passphrase/)
  t.deepEqual(wrong.lines.filter((l) => l !== ''), [])
  t.deepEqual(await snapshot(dir), before)

  const account = join(dir, 'account.json')
  const text = await readFile(account, 'utf8')
  await writeFile(account, text.replace(/"mac": "./, '"mac": "!'))
  const damaged = new Proc(['start', '--headless', '--data-dir', dir, '--directory', onion], cliEnv('carol pass'))
  t.deepEqual(await damaged.exited, { code: 1, signal: null })
  t.regex(damaged.stderr, /ERR_STORAGE_CORRUPT/)
  t.regex(damaged.stderr, /damaged/)
})

test.serial('the sandbox (`npm start`, headless): network, onion directory and bot; chatting, then nothing left behind', async (t) => {
  t.timeout(300_000)
  // Alone (`npx ava test/e2e.test.ts`) the sandbox starts its own network exactly as `npm start` does; inside
  // `npm test` it joins the run's shared network instead, to spare the CPU six more tors.
  const shared = process.env[NETWORK_ENV]
  const networkArgs = shared !== undefined && shared !== '' ? ['--network', shared] : []
  const startedAt = Date.now()
  const sandbox = new Client(['sandbox', '--headless', ...networkArgs], cliEnv())
  t.teardown(() => void sandbox.child.kill('SIGKILL'))
  const root = await sandbox.until('the sandbox directory', 10_000, () => /throwaway setup in (\S+),/.exec(sandbox.stderr)?.[1])
  // Normally the sandbox deletes it; after a SIGKILL in teardown it cannot.
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const bot = await sandbox.event('contact', START_MS, (e) => e.contact.name === 'demo-bot')
  await sandbox.until('the bot online', START_MS, () =>
    sandbox.events.find(
      (e) =>
        (e.type === 'presence' && e.peerId === bot.contact.peerId && e.presence === 'online') ||
        (e.type === 'contact' && e.contact.peerId === bot.contact.peerId && e.contact.presence === 'online'),
    ),
  )
  const onlineS = (Date.now() - startedAt) / 1000
  const sent = await sandbox.command({ cmd: 'send', peerId: bot.contact.peerId, body: 'hello bot' })
  const reply = await sandbox.event('message', DELIVERY_MS, (e) => e.message.direction === 'in' && e.message.peerId === bot.contact.peerId)
  t.regex(reply.message.body, /^You said: “hello bot”\./)
  await sandbox.event('delivered', DELIVERY_MS, (e) => e.id === sent.id)
  t.log(`sandbox: bot online ${onlineS.toFixed(1)} s, reply ${((Date.now() - startedAt) / 1000).toFixed(1)} s after spawn`)

  await sandbox.command({ cmd: 'quit' })
  t.deepEqual(await sandbox.exited, { code: 0, signal: null })
  t.regex(sandbox.stderr, /sandbox: stopped; its state is deleted/)
  await t.throwsAsync(readdir(root), { code: 'ENOENT' })
})
