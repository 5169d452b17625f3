/**
 * `p2pmess network`: the private Tor network command. The work is relay/cli.ts's runNetworkCli (also behind
 * `npm run network`); this only checks the flags against the same table, so `--help` and usage errors look like
 * every other command's, and hands them over with the command's io (an interrupt stops the network).
 */
import { HELP_OPTION, type Command } from './common.js'

export const networkCommand: Command = {
  name: 'network',
  brief: 'run a private Tor network on this machine',
  summary: 'Run a private Tor network on 127.0.0.1 (for tests and offline demos; no internet needed).',
  usage: '[--authorities <n>] [--relays <n>] [--join <file>]',
  options: {
    authorities: { type: 'string', value: '<n>', description: 'directory authorities (default 3)' },
    relays: { type: 'string', value: '<n>', description: 'relays besides the authorities (default 3)' },
    join: { type: 'string', value: '<file>', description: "where to write the join file that clients' --network reads" },
    ...HELP_OPTION,
  },
  notes: 'Then, in other terminals: p2pmess directory --onion --network <file>, p2pmess start --network <file> ...',
  async run(values, io) {
    const argv: string[] = []
    for (const name of ['authorities', 'relays', 'join'] as const) {
      const value = values[name]
      if (typeof value === 'string') argv.push(`--${name}`, value)
    }
    // Loaded on demand: only this command needs the network launcher.
    const { runNetworkCli } = await import('../../../relay/cli.js')
    return runNetworkCli(argv, io)
  },
}
