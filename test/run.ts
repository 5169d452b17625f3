/**
 * `npm test` entry: runs the whole ava suite. (The shared private Tor network is added with relay/.)
 */
import { spawn } from 'node:child_process'

const ava = spawn(process.execPath, ['node_modules/ava/entrypoints/cli.mjs', ...process.argv.slice(2)], { stdio: 'inherit' })
ava.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)))
