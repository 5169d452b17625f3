/**
 * The `p2pmess` entry point: wires the real process (argv, environment, stdio, signals) to runCli and exits with
 * its code. Everything else lives in ./commands (one module per command) and ./sandbox.ts.
 */
import { runCli } from './commands/index.js'

const interrupted = new Promise<string>((resolve) => {
  const onSignal = (signal: NodeJS.Signals): void => {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal)
    resolve(signal)
  }
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal)
})

const code = await runCli(process.argv.slice(2), {
  env: process.env,
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  interrupted,
})
// Let stdout drain (it may be a pipe), then exit even if a stray handle would keep the loop alive.
process.stdout.write('', () => process.exit(code))
