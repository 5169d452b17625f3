/**
 * `npm run network [-- --authorities N --relays N --join FILE]` and `p2pmess network`: starts a private Tor network
 * on 127.0.0.1, prints progress while it forms, then one line saying it is ready and where the join info is; on
 * interrupt (Ctrl-C) it stops every tor and removes the network's temporary state.
 *
 * `runNetworkCli` takes its arguments and process around it as parameters and returns the exit code; run as a
 * script, this module wires it to the real process.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { describeError } from '../src/errors.js'
import { startNetwork } from './network.js'

/** What the command needs of its process (a subset of the p2pmess CLI's CliIo). */
export interface NetworkCliIo {
  stdout: Writable
  stderr: Writable
  /** Resolves on the first SIGINT/SIGTERM: the network is then stopped. */
  interrupted: Promise<string>
}

const USAGE = 'usage: npm run network -- [--authorities 3] [--relays 3] [--join FILE]\n'

/** Exit codes: 0 after a clean stop (or --help), 1 if the network could not start, 2 for a usage error. */
export async function runNetworkCli(argv: readonly string[], io: NetworkCliIo): Promise<number> {
  let values: { authorities?: string; relays?: string; join?: string; help?: boolean }
  try {
    ;({ values } = parseArgs({
      args: [...argv],
      options: {
        authorities: { type: 'string' },
        relays: { type: 'string' },
        join: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    io.stderr.write(`${describeError(err)}\n${USAGE}`)
    return 2
  }
  if (values.help === true) {
    io.stdout.write(USAGE)
    return 0
  }
  const counts: { authorities?: number; relays?: number } = {}
  for (const name of ['authorities', 'relays'] as const) {
    const value = values[name]
    if (value === undefined) continue
    if (!/^\d{1,2}$/.test(value)) {
      io.stderr.write(`--${name} must be a small whole number\n`)
      return 2
    }
    counts[name] = Number(value)
  }

  const started = Date.now()
  const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`
  const starting = startNetwork({ ...counts, onProgress: (msg) => io.stderr.write(`${elapsed()}  ${msg}\n`) })
  const first = await Promise.race([
    starting.then(
      (network) => ({ network }),
      (error: unknown) => ({ error }),
    ),
    io.interrupted.then((signal) => ({ signal })),
  ])
  if ('error' in first) {
    io.stderr.write(`could not start the private Tor network: ${describeError(first.error)}\n`)
    return 1
  }
  if ('signal' in first) {
    // startNetwork cannot be cancelled: let it finish (or fail), then take down what it started.
    io.stderr.write(`${elapsed()}  ${first.signal} during start-up; stopping…\n`)
    await starting.then((n) => n.stop()).catch(() => undefined)
    return 0
  }
  const network = first.network
  try {
    const joinFile = values.join ?? join(network.dir, 'join.json')
    await writeFile(joinFile, JSON.stringify(network.join, null, 2) + '\n')
    const lines = network.join.torrcLines
    io.stdout.write(
      `ready: ${network.nodes.length} tors on 127.0.0.1 in ${elapsed().trim()}; join info (NetworkJoin JSON) in ${joinFile}\n` +
        `a client tor joins with these torrc lines:\n${lines.map((l) => `  ${l}`).join('\n')}\n` +
        'Ctrl-C stops the network.\n',
    )
  } catch (err) {
    io.stderr.write(`could not write the join file: ${describeError(err)}\n`)
    await network.stop()
    return 1
  }
  await io.interrupted
  io.stderr.write(`${elapsed()}  stopping…\n`)
  await network.stop()
  return 0
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const interrupted = new Promise<string>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal).off('SIGTERM', onSignal)
      resolve(signal)
    }
    process.on('SIGINT', onSignal).on('SIGTERM', onSignal)
  })
  const code = await runNetworkCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, interrupted })
  process.exit(code)
}
