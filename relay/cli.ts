/**
 * `npm run network [-- --authorities N --relays N --join FILE]`: starts a private Tor network on 127.0.0.1,
 * prints progress while it forms, then one line saying it is ready and where the join info is; Ctrl-C stops
 * every tor and removes the network's temporary state.
 */
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { describeError } from '../src/errors.js'
import { startNetwork, type PrivateNetwork } from './network.js'

function count(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined
  if (!/^\d{1,2}$/.test(value)) {
    process.stderr.write(`--${name} must be a small whole number\n`)
    process.exit(2)
  }
  return Number(value)
}

const { values } = parseArgs({
  options: {
    authorities: { type: 'string' },
    relays: { type: 'string' },
    join: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
})
if (values.help === true) {
  process.stdout.write('usage: npm run network -- [--authorities 3] [--relays 3] [--join FILE]\n')
  process.exit(0)
}

const started = Date.now()
const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`
let network: PrivateNetwork | undefined
let stopping = false

async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true
    process.stderr.write(`${elapsed()}  stopping…\n`)
    await network?.stop()
  }
  process.exit(code)
}
process.on('SIGINT', () => void stop(0))
process.on('SIGTERM', () => void stop(0))

try {
  network = await startNetwork({
    authorities: count(values.authorities, 'authorities'),
    relays: count(values.relays, 'relays'),
    onProgress: (msg) => process.stderr.write(`${elapsed()}  ${msg}\n`),
  })
} catch (err) {
  process.stderr.write(`could not start the private Tor network: ${describeError(err)}\n`)
  await stop(1)
}
if (network !== undefined) {
  const joinFile = values.join ?? join(network.dir, 'join.json')
  await writeFile(joinFile, JSON.stringify(network.join, null, 2) + '\n')
  const lines = network.join.torrcLines
  process.stdout.write(
    `ready: ${network.nodes.length} tors on 127.0.0.1 in ${elapsed().trim()}; join info (NetworkJoin JSON) in ${joinFile}\n` +
      `a client tor joins with these torrc lines:\n${lines.map((l) => `  ${l}`).join('\n')}\n` +
      'Ctrl-C stops the network.\n',
  )
}
