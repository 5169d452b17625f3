/**
 * `p2pmess directory`: serves the peer directory. Plain mode listens on loopback only; `--onion` also starts a
 * tor (real network, or the private one given by --network) that publishes it as a v3 onion service.
 * The URL clients should use is printed alone on stdout; progress and request logs go to stderr.
 */
import { join } from 'node:path'
import { startOnionDirectory } from '../../../directory/onion.js'
import { startDirectoryServer } from '../../../directory/server.js'
import { defaultDataDir } from '../../store/paths.js'
import { EXIT_OK, HELP_OPTION, TOR_OPTIONS, portOption, readNetworkJoin, reportError, stringOption, type Command } from './common.js'

const OPTIONS = {
  db: { type: 'string', value: '<dir>', description: 'the record database (default: <data-dir>/db)' },
  port: { type: 'string', value: '<n>', description: 'local port on 127.0.0.1 (default or 0: a free port picked by the system)' },
  onion: { type: 'boolean', description: 'publish the directory as a v3 onion service (starts its own tor)' },
  'data-dir': { type: 'string', value: '<dir>', description: "the directory's state: database and, with --onion, tor and the onion key (default: <client data dir>/directory)" },
  ...TOR_OPTIONS,
  ...HELP_OPTION,
} as const

export const directoryCommand: Command = {
  name: 'directory',
  brief: 'run a directory server (--onion to publish it through tor)',
  summary: 'Run a directory: maps peer IDs to their signed records, so contacts can find each other.',
  usage: '[--onion] [options]',
  options: OPTIONS,
  notes: [
    'Examples:',
    '  p2pmess directory --port 8080                   # http://127.0.0.1:8080, for local tests',
    '  p2pmess directory --onion --network join.json   # an onion directory on a private network',
  ].join('\n'),
  async run(values, io) {
    const dataDir = typeof values['data-dir'] === 'string' ? values['data-dir'] : join(defaultDataDir(io.env), 'directory')
    const dbPath = typeof values.db === 'string' ? values.db : join(dataDir, 'db')
    const port = portOption(values)
    const torPath = stringOption(values, OPTIONS, 'tor-path', io.env)
    const networkFile = stringOption(values, OPTIONS, 'network', io.env)
    const log = (line: string): void => void io.stderr.write(`${line}\n`)
    let close: (() => Promise<void>) | undefined
    try {
      if (values.onion === true) {
        const network = networkFile === undefined ? undefined : await readNetworkJoin(networkFile)
        log(`directory: starting tor and the onion service${network === undefined ? '' : ` (private network ${networkFile})`}`)
        const directory = await startOnionDirectory({
          dbPath,
          dataDir,
          ...(network === undefined ? {} : { network }),
          ...(torPath === undefined ? {} : { torPath }),
          ...(port === undefined ? {} : { port }),
          onProgress: log,
          log,
        })
        close = () => directory.close()
        log(`directory: serving ${directory.localUrl} as ${directory.onionUrl}`)
        io.stdout.write(`${directory.onionUrl}\n`)
      } else {
        const server = await startDirectoryServer({ dbPath, ...(port === undefined ? {} : { port }), log })
        close = () => server.close()
        log(`directory: listening on ${server.url} (loopback only; add --onion to reach it through tor)`)
        io.stdout.write(`${server.url}\n`)
      }
      const signal = await io.interrupted
      log(`directory: ${signal}, shutting down`)
      await close()
      return EXIT_OK
    } catch (err) {
      await close?.().catch(() => undefined)
      return reportError(io, err, { dataDir })
    }
  },
}
