/**
 * `p2pmess sandbox` (`npm start`): P2PMess on this machine alone, no internet. It brings up a private Tor network,
 * a directory as an onion service, the demo bot (a real client, src/client/bot.ts) and the user's client with a
 * fresh throwaway account that already has the bot as a contact, then hands the user's client to the TUI (or to
 * the JSON-lines protocol with --headless). Quitting stops everything it started and deletes its state.
 *
 * Order: the network (its own, or a running one given with --network) must be up before any other tor can join
 * it; both accounts are created while it forms; then the directory's tor, the bot and the user's client start
 * together (the directory's onion address is known from its key before it is published, and clients retry
 * publishing until it is reachable).
 */
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadOrCreateOnionKey, startOnionDirectory } from '../../directory/onion.js'
import { startNetwork } from '../../relay/network.js'
import type { ClientEvent, ClientHandle } from '../client/api.js'
import { startBot } from '../client/bot.js'
import { startClient } from '../client/client.js'
import { describeError } from '../errors.js'
import { fileLogger } from '../log.js'
import { toBase64url, wipe } from '../protocol/bytes.js'
import { onionAddressFromPublicKey, publicKeyFromExpandedSecretKey } from '../protocol/onion.js'
import { createAccount } from '../store/account.js'
import type { NetworkJoin } from '../tor/process.js'
import { runTui } from '../ui/tui.js'
import { EarlyEvents, startupLine } from './commands/early-events.js'
import { headlessUntilInterrupted } from './commands/start.js'
import {
  EXIT_OK,
  HELP_OPTION,
  TOR_OPTIONS,
  heartbeatOption,
  readNetworkJoin,
  reportError,
  requireTerminal,
  stringOption,
  type CliIo,
  type Command,
} from './commands/common.js'

export const BOT_NAME = 'demo-bot'
/** How long the sandbox waits for the bot's record to reach the directory before adding it anyway. */
const BOT_PUBLISH_WAIT_MS = 60_000

export interface SandboxOptions {
  headless: boolean
  /** Join this private network (e.g. one from `p2pmess network`) instead of starting one. */
  network?: NetworkJoin
  torPath?: string
  heartbeatIntervalMs?: number
  /** Parent of the sandbox's temporary directory (default os.tmpdir()). */
  baseDir?: string
}

/**
 * Things to undo, last started first; every step runs even if an earlier one fails. A piece that finishes
 * starting after run() (start-up was interrupted or another piece failed) is undone as soon as it is added.
 */
class Teardown {
  readonly #steps: { name: string; run: () => Promise<void> }[] = []
  readonly #late: Promise<void>[] = []
  #closed = false
  #onError: (name: string, err: unknown) => void = () => {}
  add(name: string, run: () => Promise<void>): void {
    if (this.#closed) this.#late.push(run().catch((err: unknown) => this.#onError(name, err)))
    else this.#steps.push({ name, run })
  }
  async run(onError: (name: string, err: unknown) => void): Promise<void> {
    this.#closed = true
    this.#onError = onError
    for (const step of this.#steps.splice(0).reverse()) {
      await step.run().catch((err: unknown) => onError(step.name, err))
    }
    await Promise.all(this.#late)
  }
}

type Interrupted = { interrupted: string }

/** `work`, unless a signal comes first. */
function unlessInterrupted<T>(io: CliIo, work: Promise<T>): Promise<{ done: T } | Interrupted> {
  return Promise.race([work.then((done) => ({ done })), io.interrupted.then((interrupted) => ({ interrupted }))])
}

/** Resolves with the time the bot first shows as `online` for the user (the moment chatting works). */
function botOnline(handle: ClientHandle, botId: string): { at: Promise<number>; off: () => void } {
  let off: () => void = () => {}
  const at = new Promise<number>((resolve) => {
    off = handle.onEvent((e: ClientEvent) => {
      const online =
        (e.type === 'presence' && e.peerId === botId && e.presence === 'online') ||
        (e.type === 'contact' && e.contact.peerId === botId && e.contact.presence === 'online')
      if (online) {
        off()
        resolve(Date.now())
      }
    })
  })
  return { at, off: () => off() }
}

export async function runSandbox(io: CliIo, options: SandboxOptions): Promise<number> {
  const started = Date.now()
  const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`
  let screenTaken = false
  /** The time-to-chat line, repeated on exit (the TUI hides it while it runs). */
  let chatting: string | undefined
  const root = await mkdtemp(join(options.baseDir ?? tmpdir(), 'p2pmess-sandbox-'))
  // A crash must not leave the throwaway keys behind either.
  const removeRoot = (): void => rmSync(root, { recursive: true, force: true })
  process.once('exit', removeRoot)
  const logger = fileLogger(join(root, 'sandbox.log'))
  const progress = (msg: string): void => {
    logger.info(msg)
    if (!screenTaken) io.stderr.write(`${elapsed()}  ${msg}\n`)
  }
  const teardown = new Teardown()
  const stopped = ({ interrupted }: Interrupted): number => {
    progress(`sandbox: ${interrupted} during start-up`)
    return EXIT_OK
  }
  const tor = options.torPath === undefined ? {} : { torPath: options.torPath }
  const heartbeat = options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }
  try {
    progress(`sandbox: a throwaway setup in ${root}, deleted when you quit. Not for real conversations.`)
    // A generated passphrase: this account lives only as long as the sandbox.
    const passphrase = toBase64url(randomBytes(24))
    const dirs = { user: join(root, 'user'), bot: join(root, 'bot'), directory: join(root, 'directory') }
    await Promise.all(Object.values(dirs).map((d) => mkdir(d, { mode: 0o700 })))

    const first = await unlessInterrupted(
      io,
      Promise.all([
        options.network !== undefined
          ? { join: options.network }
          : startNetwork({ baseDir: root, ...tor, onProgress: (m) => progress(`network: ${m}`) }).then((n) => {
              teardown.add('network', () => n.stop())
              return n
            }),
        createAccount({ dataDir: dirs.user, passphrase }),
        createAccount({ dataDir: dirs.bot, passphrase }),
        directoryAddress(dirs.directory),
      ]),
    )
    if ('interrupted' in first) return stopped(first)
    const [network, userAccount, botAccount, directoryUrl] = first.done
    progress(`accounts ready: you are ${userAccount.peerId}, the bot is ${botAccount.peerId}`)
    // Runs after the clients that use them have stopped (steps run last-added first).
    teardown.add('accounts', async () => {
      userAccount.wipe()
      botAccount.wipe()
    })

    let directoryPublished = false
    const early = new EarlyEvents({
      onEarly: (event) => {
        const line = startupLine(event)
        // Bootstrap steps of three tors at once would drown the rest; 100% is the one that matters.
        if (line !== undefined && !(event.type === 'bootstrap' && event.progress < 100)) progress(`you: ${line}`)
      },
      // The directory starts alongside the clients, so a first upload may find it not yet published; the
      // client retries on its own, and that expected miss is no news for the user.
      keep: (event) => directoryPublished || !(event.type === 'error' && event.code === 'ERR_DIRECTORY_UNREACHABLE'),
    })
    let botPublished: () => void = () => {}
    const botReady = new Promise<void>((resolve) => (botPublished = resolve))
    const clientOptions = { directories: [directoryUrl], network: network.join, ...tor, ...heartbeat }
    const second = await unlessInterrupted(
      io,
      Promise.all([
        startOnionDirectory({
          dbPath: join(dirs.directory, 'db'),
          dataDir: dirs.directory,
          network: network.join,
          ...tor,
          onProgress: (m) => {
            if (!/^tor: bootstrapped (?!100)/.test(m)) progress(`directory: ${m.replace(/^directory: /, '')}`)
          },
        }).then((d) => {
          directoryPublished = true
          teardown.add('directory', () => d.close())
          return d
        }),
        startBot({
          client: {
            dataDir: dirs.bot,
            account: botAccount,
            logger: fileLogger(join(dirs.bot, 'client.log')),
            onEvent: (e) => {
              if (e.type === 'published') botPublished()
            },
            ...clientOptions,
          },
          logger,
        }).then((b) => {
          teardown.add('bot', () => b.stop())
          progress('bot: client started')
          return b
        }),
        startClient({
          dataDir: dirs.user,
          account: userAccount,
          logger: fileLogger(join(dirs.user, 'client.log')),
          onEvent: early.onEvent,
          ...clientOptions,
        }).then(
          (h) => {
            teardown.add('your client', () => h.stop())
            progress('you: client started')
            return h
          },
        ),
      ]),
    )
    if ('interrupted' in second) return stopped(second)
    const [directory, bot, userClient] = second.done
    const user = early.wrap(userClient)
    progress(`directory: ${directory.onionUrl}`)

    // On the raw client, so the UI (the wrapped handle's first subscriber) still gets the start-up backlog.
    const online = botOnline(userClient, bot.peerId)
    // Adding looks the bot up in the directory, so its record must be there first.
    const published = await unlessInterrupted(io, Promise.race([botReady.then(() => true), delay(BOT_PUBLISH_WAIT_MS, false)]))
    if ('interrupted' in published) return stopped(published)
    if (!published.done) progress(`the bot has not published its record after ${BOT_PUBLISH_WAIT_MS / 1000} s; adding it anyway`)
    const added = await user.dispatch({ cmd: 'add', peerId: bot.peerId, name: BOT_NAME })
    if (!added.ok) progress(`could not add the bot: ${added.message} [${added.code}]`)
    void online.at.then((at) => {
      chatting = `sandbox: chatting with ${BOT_NAME} ${((at - started) / 1000).toFixed(1)} s after start`
      progress(chatting)
    })
    progress(`ready in ${elapsed().trim()}: ${BOT_NAME} is your contact; say hi (it is connecting over onion services now)`)

    if (options.headless) {
      await headlessUntilInterrupted(user, io)
    } else {
      screenTaken = true
      await runTui(user, { logFile: join(dirs.user, 'client.log') })
    }
    online.off()
    return EXIT_OK
  } catch (err) {
    return reportError(io, err)
  } finally {
    screenTaken = false
    progress('sandbox: stopping the clients, the directory and the network')
    await teardown.run((name, err) => progress(`sandbox: stopping ${name} failed: ${describeError(err)}`))
    await rm(root, { recursive: true, force: true })
    process.off('exit', removeRoot)
    io.stderr.write(`${elapsed()}  sandbox: stopped; its state is deleted${chatting === undefined ? '' : ` (${chatting.replace('sandbox: ', '')})`}\n`)
  }
}

function delay<T>(ms: number, value: T): Promise<T> {
  return new Promise((resolve) => setTimeout(resolve, ms, value).unref())
}

/** The directory's onion URL, from its key (created now), so clients can be configured before it is published. */
async function directoryAddress(dataDir: string): Promise<string> {
  const key = await loadOrCreateOnionKey(dataDir)
  try {
    return `http://${onionAddressFromPublicKey(publicKeyFromExpandedSecretKey(key))}`
  } finally {
    wipe(key)
  }
}

const OPTIONS = {
  headless: { type: 'boolean', description: 'your client speaks JSON lines on stdin/stdout instead of the TUI (for scripts and tests)' },
  heartbeat: { type: 'string', value: '<seconds>', description: 'heartbeat interval of both clients' },
  'tor-path': TOR_OPTIONS['tor-path']!,
  network: { type: 'string', value: '<join.json>', description: 'use a running private network (from `p2pmess network`) instead of starting one' },
  ...HELP_OPTION,
} as const

export const sandboxCommand: Command = {
  name: 'sandbox',
  brief: 'try it offline: private Tor network, directory and a demo bot (npm start)',
  summary: 'Try P2PMess offline: a private Tor network, an onion directory and a demo bot to chat with, all on this machine.',
  usage: '[--headless]',
  options: OPTIONS,
  notes: 'This is what `npm start` runs. Everything is temporary: quitting (Ctrl-C or /quit) stops it all and deletes it.',
  async run(values, io) {
    const torPath = stringOption(values, OPTIONS, 'tor-path', io.env)
    const networkFile = stringOption(values, OPTIONS, 'network', io.env)
    const heartbeatIntervalMs = heartbeatOption(values)
    const headless = values.headless === true
    if (!headless) requireTerminal(io)
    let network: NetworkJoin | undefined
    try {
      network = networkFile === undefined ? undefined : await readNetworkJoin(networkFile)
    } catch (err) {
      return reportError(io, err)
    }
    return runSandbox(io, {
      headless,
      ...(network === undefined ? {} : { network }),
      ...(torPath === undefined ? {} : { torPath }),
      ...(heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs }),
    })
  },
}
