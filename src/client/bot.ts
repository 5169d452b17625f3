/**
 * The demo contact of the sandbox: a real client (own account, own tor, own onion service, the same sessions as
 * anyone) that accepts every contact request and answers every message with an echo and a short friendly line.
 * It only ever talks through the ClientHandle, like the UI does.
 */
import { describeError } from '../errors.js'
import { silentLogger, type Logger } from '../log.js'
import { MAX_TEXT_BYTES } from '../protocol/messages.js'
import { utf8 } from '../protocol/bytes.js'
import type { ClientEvent, ClientHandle } from './api.js'
import { startClient, type StartClientOptions } from './client.js'

export interface BotOptions {
  /** How the bot's own client is started (its data dir, account or passphrase, directories, network...). */
  client: StartClientOptions
  logger?: Logger
}

export interface Bot {
  readonly peerId: string
  readonly handle: ClientHandle
  stop(): Promise<void>
}

/** Longest echo, in characters, so a reply stays short (and far below MAX_TEXT_BYTES). */
const ECHO_CHARS = 200

const LINES = [
  "Hi! I'm the P2PMess demo bot. This chat runs over two onion services on a private Tor network on your machine.",
  'Nothing here leaves this computer: the Tor network, the directory and I all run locally.',
  'Each message is end-to-end encrypted with Noise IK inside a Tor circuit.',
  'Try /quit to leave; everything the sandbox started stops with you.',
]

/** The bot's answer: a bounded echo, then a rotating friendly line (the first one greets). */
export function botReply(body: string, count: number): string {
  const text = [...body.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim()]
  const echo = text.length > ECHO_CHARS ? `${text.slice(0, ECHO_CHARS).join('')}…` : text.join('')
  const line = LINES[Math.max(0, count) % LINES.length]!
  const reply = `You said: “${echo}”. ${line}`
  return utf8(reply).length <= MAX_TEXT_BYTES ? reply : line
}

/** Starts the bot's client and answers from then on. */
export async function startBot(options: BotOptions): Promise<Bot> {
  const log = options.logger ?? silentLogger
  const handle = await startClient(options.client)
  let answered = 0
  let queue: Promise<unknown> = Promise.resolve()
  // Intents go out one at a time, in event order, so replies keep the order of the messages they answer.
  const act = (what: string, run: () => Promise<{ ok: boolean; code?: string }>): void => {
    queue = queue
      .then(run)
      .then((result) => {
        if (!result.ok) log.warn(`bot: ${what} refused`, { code: result.code })
      })
      .catch((err: unknown) => log.warn(`bot: ${what} failed`, { error: describeError(err) }))
  }
  const accept = (peerId: string): void => act('accept', () => handle.dispatch({ cmd: 'accept', peerId }))
  const onEvent = (event: ClientEvent): void => {
    if (event.type === 'request') {
      log.info('bot: accepting a contact request', { peerId: event.peerId })
      accept(event.peerId)
    } else if (event.type === 'message' && event.message.direction === 'in') {
      const { peerId, body } = event.message
      const answer = botReply(body, answered++)
      act('reply', () => handle.dispatch({ cmd: 'send', peerId, body: answer }))
    }
  }
  const off = handle.onEvent(onEvent)
  // Requests that arrived while the bot was down are waiting as contacts in state `request`.
  for (const c of handle.contacts()) if (c.state === 'request') accept(c.peerId)
  let stopping: Promise<void> | undefined
  return {
    peerId: handle.peerId,
    handle,
    stop: () =>
      (stopping ??= (async () => {
        off()
        await queue
        await handle.stop()
      })()),
  }
}
