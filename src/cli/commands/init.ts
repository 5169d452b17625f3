/** `p2pmess init`: creates the account (identity, Noise key, onion-service key) and prints the peer ID. */
import { createAccount } from '../../store/account.js'
import { ACCOUNT_OPTIONS, EXIT_OK, HELP_OPTION, dataDirOption, reportError, type Command } from './common.js'
import { newPassphrase } from './prompt.js'

export const initCommand: Command = {
  name: 'init',
  brief: 'create your account and print your peer ID',
  summary: 'Create your account and print your peer ID (share it with the people who should be able to add you).',
  usage: '[options]',
  options: { ...ACCOUNT_OPTIONS, ...HELP_OPTION },
  notes: 'The peer ID goes to stdout alone on one line; everything else goes to stderr.',
  async run(values, io) {
    const dataDir = dataDirOption(values, io.env)
    try {
      const passphrase = await newPassphrase(io, values)
      const account = await createAccount({ dataDir, passphrase })
      const { peerId, onionAddress } = account
      account.wipe()
      io.stdout.write(`${peerId}\n`)
      io.stderr.write(`Account created in ${dataDir} (onion ${onionAddress}).\nStart the client with: p2pmess start --data-dir ${dataDir}\n`)
      return EXIT_OK
    } catch (err) {
      return reportError(io, err, { dataDir })
    }
  },
}
