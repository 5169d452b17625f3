/**
 * `p2pmess start`: unlocks the account and runs the client, with the terminal UI or (`--headless`) the JSON-lines
 * protocol of docs/HEADLESS.md on stdin/stdout. The client log goes to <data-dir>/client.log, never the terminal.
 */
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { startClient } from '../../client/client.js'
import { DEFAULT_HEARTBEAT_INTERVAL } from '../../protocol/heartbeat.js'
import type { ClientHandle } from '../../client/api.js'
import { runHeadless } from '../../client/headless.js'
import { fileLogger } from '../../log.js'
import { loadAccount, type Account } from '../../store/account.js'
import { runTui } from '../../ui/tui.js'
import {
  ACCOUNT_OPTIONS,
  EXIT_OK,
  EXIT_RUNTIME,
  HELP_OPTION,
  TOR_OPTIONS,
  dataDirOption,
  directoriesOption,
  heartbeatOption,
  readNetworkJoin,
  reportError,
  requireDirectories,
  requireTerminal,
  stringOption,
  type CliIo,
  type Command,
} from './common.js'
import { EarlyEvents, startupLine } from './early-events.js'
import { passphraseFor } from './prompt.js'

const OPTIONS = {
  ...ACCOUNT_OPTIONS,
  directory: { type: 'string', multiple: true, value: '<url>', env: 'P2PMESS_DIRECTORIES', description: 'a directory to publish to and look peers up in; the env variable takes a comma-separated list' },
  ...TOR_OPTIONS,
  heartbeat: { type: 'string', value: '<seconds>', description: `heartbeat interval; a silent contact is offline within two (default ${DEFAULT_HEARTBEAT_INTERVAL / 1000})` },
  headless: { type: 'boolean', description: 'no UI: JSON-lines commands on stdin, events and results on stdout (docs/HEADLESS.md)' },
  ...HELP_OPTION,
} as const

/**
 * runHeadless on stdin/stdout until `quit`, the end of stdin, or a signal. stdin is piped through a stream of our
 * own so a signal can end the input cleanly (runHeadless then stops the client as on end of input).
 */
export async function headlessUntilInterrupted(handle: ClientHandle, io: CliIo): Promise<void> {
  const input = new PassThrough()
  io.stdin.pipe(input)
  const done = runHeadless(handle, { input, output: io.stdout })
  const signal = await Promise.race([done.then(() => undefined), io.interrupted])
  if (signal !== undefined) {
    io.stdin.unpipe(input)
    io.stdin.pause()
    input.end()
    await done
  }
  io.stdin.unpipe(input)
}

export const startCommand: Command = {
  name: 'start',
  brief: 'run the client (terminal UI, or --headless for JSON lines)',
  summary: 'Start the client: the terminal UI, or JSON lines on stdin/stdout with --headless.',
  usage: '--directory <url> [options]',
  options: OPTIONS,
  notes: [
    'Examples:',
    '  p2pmess start --directory http://<56 chars>.onion',
    '  P2PMESS_PASSPHRASE=... p2pmess start --headless --directory http://<56 chars>.onion --network join.json',
  ].join('\n'),
  async run(values, io) {
    // Configuration mistakes are usage errors, reported before anything is unlocked or started.
    const dataDir = dataDirOption(values, io.env)
    const directories = requireDirectories(directoriesOption(values, io.env))
    const heartbeatIntervalMs = heartbeatOption(values)
    const torPath = stringOption(values, OPTIONS, 'tor-path', io.env)
    const networkFile = stringOption(values, OPTIONS, 'network', io.env)
    const headless = values.headless === true
    if (!headless) requireTerminal(io)
    const logFile = join(dataDir, 'client.log')
    let handle: ClientHandle | undefined
    let account: Account | undefined
    try {
      const network = networkFile === undefined ? undefined : await readNetworkJoin(networkFile)
      account = await loadAccount({ dataDir, passphrase: await passphraseFor(io, values) })
      io.stderr.write(`p2pmess: starting tor for ${account.peerId}${network === undefined ? '' : ' on the private network'}; log in ${logFile}\n`)
      // A tor that fails during start-up is reported twice by the client: as an `error` event (after a `tor`
      // `failed` one) and as startClient's rejection, which the catch below prints with its next-step hint. Only
      // the latter is printed.
      let torFailed = false
      const early = new EarlyEvents({
        onEarly: (event) => {
          if (event.type === 'tor' && event.state === 'failed') torFailed = true
          if (event.type === 'error' && torFailed) return
          const line = startupLine(event)
          if (line !== undefined) io.stderr.write(`p2pmess: ${line}\n`)
        },
      })
      const starting = startClient({
        dataDir,
        account,
        directories,
        logger: fileLogger(logFile),
        onEvent: early.onEvent,
        ...(network === undefined ? {} : { network }),
        ...(torPath === undefined ? {} : { torPath }),
        ...(heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs }),
      })
      const first = await Promise.race([starting.then((client) => ({ client })), io.interrupted.then((signal) => ({ signal }))])
      if ('signal' in first) {
        io.stderr.write(`p2pmess: ${first.signal} during start-up; stopping\n`)
        await starting.then((client) => client.stop()).catch(() => undefined)
        return EXIT_RUNTIME
      }
      handle = early.wrap(first.client)
      if (headless) {
        await headlessUntilInterrupted(handle, io)
      } else {
        await runTui(handle, { logFile })
      }
      return EXIT_OK
    } catch (err) {
      await handle?.stop().catch(() => undefined)
      return reportError(io, err, { dataDir })
    } finally {
      account?.wipe()
    }
  },
}
