/**
 * `npm test` entry: starts ONE private Tor network for the whole run, writes its join info to a JSON file
 * named in env P2PMESS_TEST_NETWORK (read by test/helpers/tor.ts), runs ava with our argv, and stops the
 * network afterwards whatever happens, also on SIGINT/SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startNetwork, type PrivateNetwork } from '../relay/network.js'
import { describeError } from '../src/errors.js'

/** Read by test/helpers/tor.ts (which cannot be imported here: it registers ava hooks). */
const NETWORK_ENV = 'P2PMESS_TEST_NETWORK'

let network: PrivateNetwork | undefined
let ava: ChildProcess | undefined
let finishing = false

async function finish(code: number): Promise<void> {
  if (finishing) return
  finishing = true
  await network?.stop()
  process.exit(code)
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    ava?.kill(signal)
    void finish(130)
  })
}

const started = Date.now()
try {
  network = await startNetwork({ onProgress: (msg) => process.stderr.write(`[network] ${msg}\n`) })
} catch (err) {
  process.stderr.write(`[network] could not start the private Tor network: ${describeError(err)}\n`)
  await finish(1)
}
if (network !== undefined && !finishing) {
  const joinFile = join(network.dir, 'join.json')
  await writeFile(joinFile, JSON.stringify(network.join, null, 2) + '\n')
  process.stderr.write(`[network] ready in ${((Date.now() - started) / 1000).toFixed(1)} s; join info in ${joinFile}\n`)
  ava = spawn(process.execPath, ['node_modules/ava/entrypoints/cli.mjs', ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, [NETWORK_ENV]: joinFile },
  })
  ava.on('exit', (code, signal) => void finish(code ?? (signal === null ? 0 : 1)))
}
