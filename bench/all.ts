/**
 * `npm run bench`: the protocol, network, directory and end-to-end benchmarks in sequence, each in its own
 * process (`node --import tsx bench/<name>.ts`, exactly what `npm run bench:<name>` runs) so one bench's heap,
 * timers and tors never weigh on the next. Extra arguments go to the end-to-end bench (e.g. `-- --quick`).
 * Exit code: 0 when every bench exited 0, else 1 (the others still run).
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const BENCHES = ['protocol', 'network', 'directory', 'e2e'] as const
const root = fileURLToPath(new URL('..', import.meta.url))

function run(name: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', `bench/${name}.ts`, ...args], { cwd: root, stdio: 'inherit' })
    child.once('error', () => resolve(1))
    child.once('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : 128)))
  })
}

const failed: string[] = []
for (const name of BENCHES) {
  console.log(`\n=== bench/${name}.ts ===`)
  const started = performance.now()
  const code = await run(name, name === 'e2e' ? process.argv.slice(2) : [])
  console.log(`=== bench/${name}.ts: exit ${code} after ${((performance.now() - started) / 1000).toFixed(0)} s ===`)
  if (code !== 0) failed.push(name)
}
if (failed.length > 0) console.log(`\nfailed: ${failed.join(', ')}`)
process.exitCode = failed.length === 0 ? 0 : 1
