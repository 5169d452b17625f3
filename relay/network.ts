/**
 * A private Tor network on 127.0.0.1: directory authorities plus relays that between them serve as guard,
 * middle, exit (to 127.0.0.0/8 only) and HSDir, and the `NetworkJoin` a client tor needs to use it.
 *
 * Node identities (authority keys from tor-gencert, relay identity keys) are generated once and cached, so a
 * fresh start spends its time on consensus formation only. Each start gets its own temporary directory and
 * freshly probed ports, so two networks on one machine never share anything but those cached keys.
 *
 * "Formed" means: every node is at Bootstrapped 100% and holds a consensus that lists every node (a
 * consensus holding only some relays makes clients fail for tens of seconds). Ports that turn out to be taken
 * between probing and binding ("Address already in use") are chosen again, up to 3 attempts.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InvalidArgumentError, P2PMessError, TorError } from '../src/errors.js'
import { baseTorrc, launchTor, resolveTorPath, type NetworkJoin, type TorProcess } from '../src/tor/process.js'

export interface NetworkOptions {
  /** Directory authorities (default 3). */
  authorities?: number
  /** Relays besides the authorities (default 3: see DEFAULT_RELAYS). Authorities relay too; at least 4 nodes in all. */
  relays?: number
  /** Parent of the network's temporary directory (default os.tmpdir()). */
  baseDir?: string
  torPath?: string
  /** Default: env P2PMESS_TOR_GENCERT_PATH, else 'tor-gencert' from PATH. */
  torGencertPath?: string
  /** Where node identities are cached (default env P2PMESS_NODE_KEYS, else os.tmpdir()/p2pmess-node-keys). */
  keyCacheDir?: string
  /** Whole start-up, including port retries (default 90 s). */
  timeoutMs?: number
  onProgress?: (msg: string) => void
}

export interface NetworkNode {
  name: string
  role: 'authority' | 'relay'
  pid: number
  orPort: number
  dirPort?: number
  controlPort?: number
}

export interface PrivateNetwork {
  join: NetworkJoin
  nodes: ReadonlyArray<NetworkNode>
  /** The network's temporary directory (removed by stop()). */
  dir: string
  stop(): Promise<void>
}

interface Identity {
  name: string
  role: 'authority' | 'relay'
  /** Cached `keys/` directory to copy into the node's DataDirectory. */
  keysDir: string
  fingerprint: string
  /** Authority v3 identity (from authority_certificate). */
  v3ident?: string
}

interface Ports {
  or: number
  dir?: number
}

/**
 * Relays besides the 3 authorities: six nodes, light enough for the test suite beside its many client tors. On
 * six, a rendezvous circuit's two halves often cross the same link twice and pay a delayed ACK per round trip
 * (~90 ms instead of 8-16 ms: 14 of 60 fresh circuits; 8 of 90 with ten nodes, 0 of 60 with fourteen), but larger
 * networks cost more than they bought (docs/DECISIONS.md, "Private Tor network"). `hsdir_spread_store`
 * (AUTHORITY_TORRC) keeps every descriptor on every HSDir at any size.
 */
const DEFAULT_RELAYS = 3
const MIN_NODES = 4
const MAX_NODES = 32
const PORT_ATTEMPTS = 3

/**
 * Authority voting as fast as tor allows: a 5 s initial interval with 2 s vote/dist delays, then 10 s
 * (tor refuses delays under 2 s or an interval under 10 s; both must divide a day).
 */
const AUTHORITY_TORRC = [
  'AuthoritativeDirectory 1',
  'V3AuthoritativeDirectory 1',
  'TestingV3AuthInitialVotingInterval 5',
  'TestingV3AuthInitialVoteDelay 2',
  'TestingV3AuthInitialDistDelay 2',
  'V3AuthVotingInterval 10',
  'V3AuthVoteDelay 2',
  'V3AuthDistDelay 2',
  'TestingDirAuthVoteGuard *',
  'TestingDirAuthVoteHSDir *',
  'TestingDirAuthVoteExit *',
  'AuthDirMaxServersPerAddr 0',
  // A service uploads each descriptor to hsdir_spread_store HSDirs per replica (rend-spec-v3 [HASHRING]; default
  // 4, so at most 2 x 4 in all). Here it is every HSDir of any network this module starts, so no shared-random
  // change ever leaves a client looking where the descriptor is not.
  `ConsensusParams hsdir_spread_store=${MAX_NODES}`,
]

/** Every node is a relay on 127.0.0.1 that skips the half-hourly reachability self-test and exits to loopback only. */
function nodeTorrc(id: Identity, dataDir: string, ports: Ports, network: NetworkJoin): string[] {
  return [
    ...baseTorrc(dataDir, process.pid),
    ...network.torrcLines,
    'SocksPort 0',
    `Nickname ${id.name}`,
    `ContactInfo ${id.name}@p2pmess.test`,
    'Address 127.0.0.1',
    `ORPort 127.0.0.1:${ports.or}`,
    ...(ports.dir === undefined ? [] : [`DirPort 127.0.0.1:${ports.dir}`]),
    'AssumeReachable 1',
    'ExitRelay 1',
    'ExitPolicyRejectPrivate 0',
    'ExitPolicy accept 127.0.0.0/8:*,reject *:*',
    'ShutdownWaitLength 0',
    // Fetch each new consensus at the start of its period, as authorities do, not at a random later point.
    'FetchDirInfoEarly 1',
    'FetchDirInfoExtraEarly 1',
    ...(id.role === 'authority' ? AUTHORITY_TORRC : []),
  ]
}

/**
 * What clients and nodes share: the testing defaults, a fixed circuit build timeout, and one DirAuthority line per
 * authority (tor manual, DirAuthority). Learned timeouts are off: on loopback tor learns ~40 ms, so every circuit
 * that meets one delayed ACK (~40 ms) or a busy CPU is abandoned and rebuilt — slow onion connects (0.8–1.8 s
 * instead of ~0.2 s), and likely the services that gave up on a rendezvous (docs/DECISIONS.md, "Private Tor network").
 */
function joinFor(ids: readonly Identity[], ports: ReadonlyMap<string, Ports>): NetworkJoin {
  const lines = ['TestingTorNetwork 1', 'LearnCircuitBuildTimeout 0', 'CircuitBuildTimeout 10']
  for (const id of ids) {
    if (id.role !== 'authority') continue
    const p = ports.get(id.name)!
    lines.push(`DirAuthority ${id.name} orport=${p.or} no-v2 v3ident=${id.v3ident} 127.0.0.1:${p.dir} ${id.fingerprint}`)
  }
  return { torrcLines: lines, relays: ids.map((id) => id.fingerprint) }
}

function checkCount(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_NODES) {
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${MAX_NODES}`)
  }
  return value
}

/** Runs a helper binary (tor --list-fingerprint, tor-gencert) to completion, feeding `stdin`. */
function run(path: string, args: string[], cwd: string, stdin = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { cwd, stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d))
    child.stdin.on('error', () => {})
    child.stdin.end(stdin)
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'ENOENT' || err.code === 'EACCES'
          ? new TorError('ERR_TOR_NOT_FOUND', `${path} not found or not executable (install it with \`apt-get install tor\`)`, { cause: err })
          : new TorError('ERR_NETWORK_STARTUP', `could not run ${path}: ${err.message}`, { cause: err }),
      )
    })
    child.once('close', (code) => {
      if (code === 0) resolve(out)
      else reject(new TorError('ERR_NETWORK_STARTUP', `${path} ${args[0]} failed (code ${code}): ${out.trim().split('\n').slice(-2).join(' | ')}`))
    })
  })
}

/**
 * Loads node `name`'s cached identity, generating it on first use. Generation happens in a private
 * directory renamed into place, so concurrent starts never see half-written keys (the loser's copy is dropped).
 */
async function identity(cacheDir: string, name: string, role: Identity['role'], torPath: string, gencertPath: string): Promise<Identity> {
  const dir = join(cacheDir, name)
  const keysDir = join(dir, 'keys')
  const read = async (): Promise<Identity | undefined> => {
    let text: string
    try {
      text = await readFile(join(dir, 'identity.json'), 'utf8')
    } catch {
      return undefined
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(text)
    } catch {
      parsed = null
    }
    if (parsed === null || typeof parsed !== 'object' || !('fingerprint' in parsed) || typeof parsed.fingerprint !== 'string') {
      throw new TorError('ERR_NETWORK_STARTUP', `corrupt key cache ${dir}: delete it to regenerate`)
    }
    const v3ident = 'v3ident' in parsed && typeof parsed.v3ident === 'string' ? parsed.v3ident : undefined
    if (role === 'authority' && v3ident === undefined) throw new TorError('ERR_NETWORK_STARTUP', `corrupt key cache ${dir}: delete it to regenerate`)
    return { name, role, keysDir, fingerprint: parsed.fingerprint, ...(v3ident === undefined ? {} : { v3ident }) }
  }
  const cached = await read()
  if (cached !== undefined) return cached

  await mkdir(cacheDir, { recursive: true, mode: 0o700 })
  const work = await mkdtemp(join(cacheDir, `.${name}-`))
  try {
    const tmpKeys = join(work, 'keys')
    await mkdir(tmpKeys, { mode: 0o700 })
    let v3ident: string | undefined
    if (role === 'authority') {
      // The certificate's dir-address is informational only; the DirAuthority line carries the real ports.
      const passphrase = randomBytes(16).toString('hex')
      await run(gencertPath, ['--create-identity-key', '-m', '24', '-a', '127.0.0.1:7000', '--passphrase-fd', '0',
        '-i', 'authority_identity_key', '-s', 'authority_signing_key', '-c', 'authority_certificate'], tmpKeys, passphrase + '\n')
      const cert = await readFile(join(tmpKeys, 'authority_certificate'), 'utf8')
      v3ident = /^fingerprint ([0-9A-F]{40})$/m.exec(cert)?.[1]
      if (v3ident === undefined) throw new TorError('ERR_NETWORK_STARTUP', `tor-gencert wrote no fingerprint for ${name}`)
    }
    const torrc = join(work, 'torrc')
    await writeFile(torrc, [`DataDirectory ${work}`, 'ORPort 127.0.0.1:1', `Nickname ${name}`, `ContactInfo ${name}@p2pmess.test`,
      'GeoIPFile /dev/null', 'GeoIPv6File /dev/null', 'Log err stderr'].join('\n') + '\n')
    const out = await run(torPath, ['--list-fingerprint', '--defaults-torrc', '/dev/null', '-f', torrc], work)
    const fingerprint = new RegExp(`^${name} ((?:[0-9A-F]{4} ?){10})$`, 'm').exec(out)?.[1]?.replaceAll(' ', '')
    if (fingerprint === undefined) throw new TorError('ERR_NETWORK_STARTUP', `tor --list-fingerprint printed no fingerprint for ${name}`)
    await writeFile(join(work, 'identity.json'), JSON.stringify({ fingerprint, ...(v3ident === undefined ? {} : { v3ident }) }) + '\n')
    await rm(join(work, 'lock'), { force: true })
    try {
      await rename(work, dir)
    } catch {
      // Another start won the race; use its keys.
    }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
  const made = await read()
  if (made === undefined) throw new TorError('ERR_NETWORK_STARTUP', `could not cache keys for ${name} in ${dir}`)
  return made
}

/** Distinct free ports on 127.0.0.1, held open together so they differ, then released for tor to bind. */
async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    const ports: number[] = []
    for (let i = 0; i < count; i++) {
      const server = createServer()
      servers.push(server)
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(0, '127.0.0.1', resolve)
      })
      const addr = server.address()
      if (addr === null || typeof addr === 'string') throw new TorError('ERR_NETWORK_STARTUP', 'could not probe a free port')
      ports.push(addr.port)
    }
    return ports
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  }
}

const DIR_PREFIX = 'p2pmess-net-'

/**
 * Removes network directories left by a process that was killed outright (SIGKILL skips every exit hook;
 * its tors die anyway because they own-check our PID and hold TAKEOWNERSHIP). Only directories whose
 * `owner` PID is gone are touched.
 */
async function sweepStale(parent: string): Promise<void> {
  let names: string[]
  try {
    names = await readdir(parent)
  } catch {
    return
  }
  for (const name of names) {
    if (!name.startsWith(DIR_PREFIX)) continue
    const dir = join(parent, name)
    const owner = Number((await readFile(join(dir, 'owner'), 'utf8').catch(() => '')).trim())
    if (!Number.isInteger(owner) || owner <= 0 || processAlive(owner)) continue
    await rm(dir, { recursive: true, force: true }).catch(() => {})
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return err instanceof Error && 'code' in err && err.code === 'EPERM'
  }
}

/** Live networks' directories, removed synchronously if the process exits without stop(). */
const liveDirs = new Set<string>()
let exitHookInstalled = false
function trackDir(dir: string): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const d of liveDirs) rmSync(d, { recursive: true, force: true })
    })
  }
  liveDirs.add(dir)
}

export async function startNetwork(options: NetworkOptions = {}): Promise<PrivateNetwork> {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options must be an object')
  const authorities = checkCount(options.authorities ?? 3, 'options.authorities', 1)
  const relays = checkCount(options.relays ?? DEFAULT_RELAYS, 'options.relays', 0)
  if (authorities + relays < MIN_NODES) {
    throw new InvalidArgumentError(`a network needs at least ${MIN_NODES} nodes (authorities + relays) for onion services to be reachable`)
  }
  const timeoutMs = options.timeoutMs ?? 90_000
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new InvalidArgumentError('options.timeoutMs must be a positive number of milliseconds')
  const torPath = resolveTorPath(options.torPath)
  const gencertPath = options.torGencertPath ?? process.env['P2PMESS_TOR_GENCERT_PATH'] ?? 'tor-gencert'
  const cacheDir = options.keyCacheDir ?? process.env['P2PMESS_NODE_KEYS'] ?? join(tmpdir(), 'p2pmess-node-keys')
  const progress = options.onProgress ?? (() => {})
  const started = Date.now()
  const deadline = started + timeoutMs

  const parent = options.baseDir ?? tmpdir()
  await sweepStale(parent)
  const dir = await mkdtemp(join(parent, DIR_PREFIX)).catch((cause: unknown) => {
    throw new TorError('ERR_NETWORK_STARTUP', `cannot create the network directory in ${parent}`, { cause })
  })
  trackDir(dir)
  await writeFile(join(dir, 'owner'), `${process.pid}\n`)
  const removeDir = async (): Promise<void> => {
    await rm(dir, { recursive: true, force: true })
    liveDirs.delete(dir)
  }

  let running: TorProcess[] = []
  try {
    const names = [
      ...Array.from({ length: authorities }, (_, i) => ({ name: `auth${i}`, role: 'authority' as const })),
      ...Array.from({ length: relays }, (_, i) => ({ name: `relay${i}`, role: 'relay' as const })),
    ]
    const ids = await Promise.all(names.map((n) => identity(cacheDir, n.name, n.role, torPath, gencertPath)))
    progress(`node keys ready (${cacheDir})`)

    for (let attempt = 1; ; attempt++) {
      const probed = await freePorts(authorities * 2 + relays)
      const ports = new Map<string, Ports>()
      for (const id of ids) ports.set(id.name, id.role === 'authority' ? { or: probed.shift()!, dir: probed.shift()! } : { or: probed.shift()! })
      const network = joinFor(ids, ports)
      try {
        running = await launchAll(ids, ports, network, dir, torPath, deadline, progress)
        await formed(running, ids.map((id) => id.role), network, deadline, progress)
      } catch (err) {
        await Promise.all(running.map((t) => t.stop()))
        running = []
        if (err instanceof TorError && err.code === 'ERR_TOR_PORT_IN_USE' && attempt < PORT_ATTEMPTS) {
          progress(`${err.message}; choosing new ports (attempt ${attempt + 1} of ${PORT_ATTEMPTS})`)
          continue
        }
        throw err
      }
      progress(`network ready in ${((Date.now() - started) / 1000).toFixed(1)} s`)
      const nodes: NetworkNode[] = running.map((t, i) => {
        const p = ports.get(t.name)!
        return { name: t.name, role: ids[i]!.role, pid: t.pid, orPort: p.or, ...(p.dir === undefined ? {} : { dirPort: p.dir }), controlPort: t.controlPort }
      })
      const tors = running
      let stopping: Promise<void> | undefined
      return {
        join: network,
        nodes,
        dir,
        stop: () =>
          (stopping ??= (async () => {
            await Promise.all(tors.map((t) => t.stop()))
            await removeDir()
          })()),
      }
    }
  } catch (err) {
    await Promise.all(running.map((t) => t.stop()))
    await removeDir()
    throw err
  }
}

/** Launches every node at once (measured faster than authorities first); on failure stops the ones that did start. */
async function launchAll(
  ids: readonly Identity[],
  ports: ReadonlyMap<string, Ports>,
  network: NetworkJoin,
  dir: string,
  torPath: string,
  deadline: number,
  progress: (msg: string) => void,
): Promise<TorProcess[]> {
  const results = await Promise.allSettled(
    ids.map(async (id) => {
      const dataDir = join(dir, id.name)
      await rm(dataDir, { recursive: true, force: true }) // left over from an attempt with other ports
      await mkdir(dataDir, { mode: 0o700 })
      await cp(id.keysDir, join(dataDir, 'keys'), { recursive: true })
      const p = ports.get(id.name)!
      const tor = await launchTor({
        name: id.name,
        torPath,
        dataDir,
        torrc: nodeTorrc(id, dataDir, p, network),
        listeners: p.dir === undefined ? ['OR'] : ['OR', 'Directory'],
        timeoutMs: Math.max(1, deadline - Date.now()),
      })
      progress(`started ${id.name} (pid ${tor.pid}, ORPort ${p.or}${p.dir === undefined ? '' : `, DirPort ${p.dir}`})`)
      return tor
    }),
  )
  const ok = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []))
  if (failed.length > 0) {
    await Promise.all(ok.map((t) => t.stop()))
    // A port clash is retryable, so report it in preference to its knock-on failures.
    throw failed.find((e) => e instanceof TorError && e.code === 'ERR_TOR_PORT_IN_USE') ?? failed[0]
  }
  return ok
}

/**
 * Waits until every node is bootstrapped and holds a consensus that lists every node.
 *
 * The authorities make the consensus, so they are waited for first. Every other node fetches it from them,
 * but one that asked before the first consensus existed retries with exponential backoff (measured: one relay
 * in three bootstrapping 8-10 s after the rest). So each node still lacking the full consensus then gets a
 * RELOAD, which makes tor reset its download failures and fetch at once (tor: do_hup()). Checking every node,
 * not one authority, matters: clients fetch from any authority and then any relay (all are directory caches).
 */
async function formed(tors: readonly TorProcess[], roles: readonly Identity['role'][], network: NetworkJoin, deadline: number, progress: (msg: string) => void): Promise<void> {
  const left = (): number => Math.max(1, deadline - Date.now())
  const relays = network.relays ?? []
  try {
    const authorities = tors.filter((_, i) => roles[i] === 'authority')
    await Promise.all(authorities.map((t) => t.waitForRelays(relays, left())))
    progress(`the authorities' consensus lists all ${relays.length} nodes`)
    await Promise.all(
      tors.map(async (t) => {
        if ((await t.missingRelays(relays)).length > 0) {
          progress(`${t.name}: lacks the full consensus; asking it to fetch again`)
          await t.controller.signal('RELOAD')
        }
        await t.waitForBootstrap(left())
        await t.waitForRelays(relays, left())
        await t.controller.setEvents([])
        progress(`${t.name}: bootstrapped, consensus lists every node`)
      }),
    )
  } catch (err) {
    if (err instanceof P2PMessError && err.code === 'ERR_TOR_START_TIMEOUT') {
      throw new TorError('ERR_NETWORK_TIMEOUT', `private network did not form: ${err.message}`, { cause: err, details: err.details })
    }
    throw err
  }
}
