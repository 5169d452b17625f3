/**
 * `p2pmess <command> [options]`: the command table and the dispatcher. Exit codes: 0 ok, 1 runtime error,
 * 2 usage error (printed with the command's help).
 */
import { describeError } from '../../errors.js'
import { EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, UsageError, commandHelp, parseCommandArgs, type CliIo, type Command } from './common.js'
import { directoryCommand } from './directory.js'
import { initCommand } from './init.js'
import { networkCommand } from './network.js'
import { sandboxCommand } from '../sandbox.js'
import { startCommand } from './start.js'

export const COMMANDS: readonly Command[] = [initCommand, startCommand, directoryCommand, networkCommand, sandboxCommand]

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length), 'help <command>'.length)
  return [
    'Usage: p2pmess <command> [options]',
    '',
    'P2PMess: a peer-to-peer messenger over Tor onion services.',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.brief}`),
    `  ${'help <command>'.padEnd(width)}  show the options of a command`,
    '',
    'New here? `npm start` runs the offline sandbox: a private Tor network, a directory and a demo bot to chat with.',
    'Run `p2pmess <command> --help` for the options of a command.',
    '',
  ].join('\n')
}

function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name)
}

function usage(io: CliIo, message: string, command?: Command): number {
  io.stderr.write(`p2pmess${command === undefined ? '' : ` ${command.name}`}: ${message}\n\n${command === undefined ? mainHelp() : commandHelp(command)}`)
  return EXIT_USAGE
}

/** Runs one command line (without `node` and the script). Never throws: every failure becomes an exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv
  if (first === undefined) return usage(io, 'missing command')
  if (first === '--help' || first === '-h') {
    io.stdout.write(mainHelp())
    return EXIT_OK
  }
  if (first === 'help') {
    if (rest.length === 0) {
      io.stdout.write(mainHelp())
      return EXIT_OK
    }
    const target = rest.length === 1 ? findCommand(rest[0]!) : undefined
    if (target === undefined) return usage(io, `help: unknown command ${JSON.stringify(rest.join(' '))}`)
    io.stdout.write(commandHelp(target))
    return EXIT_OK
  }
  const command = findCommand(first)
  if (command === undefined) {
    return usage(io, first.startsWith('-') ? `expected a command before ${JSON.stringify(first)}` : `unknown command ${JSON.stringify(first)}`)
  }
  try {
    const values = parseCommandArgs(command, [...rest])
    if (values.help === true) {
      io.stdout.write(commandHelp(command))
      return EXIT_OK
    }
    return await command.run(values, io)
  } catch (err) {
    if (err instanceof UsageError) return usage(io, err.message, command)
    io.stderr.write(`p2pmess ${command.name}: unexpected error: ${describeError(err)}\n`)
    return EXIT_RUNTIME
  }
}
