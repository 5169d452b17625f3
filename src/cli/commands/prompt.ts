/**
 * The hidden passphrase prompt: raw-mode terminal input that echoes nothing. Only used when stdin is a TTY;
 * everywhere else the passphrase comes from --passphrase-file or P2PMESS_PASSPHRASE.
 */
import { StorageError } from '../../errors.js'
import { resolvePassphrase } from '../../store/account.js'
import type { CliIo, OptionValues } from './common.js'

const CTRL_C = '\u0003'
const CTRL_D = '\u0004'
const BACKSPACE = new Set(['\u007f', '\b'])

/** Asks `question` on stderr and reads one line from the terminal without echo. */
export function promptHidden(io: CliIo, question: string): Promise<string> {
  const { stdin, stderr } = io
  return new Promise((resolve, reject) => {
    let answer = ''
    const finish = (error?: StorageError): void => {
      stdin.off('data', onData)
      stdin.setRawMode?.(false)
      stdin.pause()
      stderr.write('\n')
      if (error === undefined) resolve(answer)
      else reject(error)
      answer = ''
    }
    const onData = (chunk: Buffer | string): void => {
      for (const ch of chunk.toString()) {
        if (ch === '\r' || ch === '\n') return finish()
        if (ch === CTRL_C || ch === CTRL_D) return finish(new StorageError('ERR_NO_PASSPHRASE', 'no passphrase was entered'))
        if (BACKSPACE.has(ch)) answer = answer.slice(0, -1)
        else if (ch >= ' ') answer += ch
      }
    }
    stderr.write(question)
    stdin.setRawMode?.(true)
    stdin.resume()
    stdin.on('data', onData)
  })
}

/** The passphrase for an existing account: file, environment, or (on a terminal) a hidden prompt. */
export function passphraseFor(io: CliIo, values: OptionValues): Promise<string> {
  const file = values['passphrase-file']
  return resolvePassphrase({
    ...(typeof file === 'string' ? { passphraseFile: file } : {}),
    env: io.env.P2PMESS_PASSPHRASE,
    ...(io.stdin.isTTY === true ? { prompt: () => promptHidden(io, 'Passphrase: ') } : {}),
  })
}

/** The passphrase for a new account: as above, but a typed one must be typed twice. */
export function newPassphrase(io: CliIo, values: OptionValues): Promise<string> {
  const file = values['passphrase-file']
  return resolvePassphrase({
    ...(typeof file === 'string' ? { passphraseFile: file } : {}),
    env: io.env.P2PMESS_PASSPHRASE,
    ...(io.stdin.isTTY === true
      ? {
          prompt: async () => {
            const first = await promptHidden(io, 'New passphrase: ')
            const second = await promptHidden(io, 'Repeat passphrase: ')
            if (first !== second) throw new StorageError('ERR_NO_PASSPHRASE', 'the two passphrases differ; nothing was created')
            return first
          },
        }
      : {}),
  })
}
