/**
 * The terminal UI: a thin blessed view over ./view-model.ts. It owns no state but the one UiState: every client
 * event, key press and intent result goes through `state = f(state, x)` followed by one `render(state)`, which
 * redraws every widget from that state alone (so a resize is just another render). It owns no timers and never
 * writes to the console: anything that is not the screen belongs in the caller's log file.
 */
import blessed, { type BlessedProgram, type IBlessedProgramOptions } from 'blessed'
import type { Readable, Writable } from 'node:stream'
import type { ClientHandle, ClientIntent, IntentResult } from '../client/api.js'
import { P2PMessError, describeError } from '../errors.js'
import { parsePeerId } from '../protocol/identity.js'
import {
  applyEdit,
  applyEvent,
  applyKey,
  applyResult,
  contactLine,
  initialState,
  MAX_VIEW_MESSAGES,
  statusLine,
  submitDraft,
  terminalSafe,
  visibleMessages,
  type Edit,
  type Key,
  type UiState,
} from './view-model.js'

export interface TuiOptions {
  /** Where the client's log goes; shown to the user, never written by the TUI. */
  logFile?: string
  /** Terminal streams (default: process.stdin / process.stdout). */
  input?: Readable
  output?: Writable
}

/** The protocol's peer ID parser as submitInput wants it: the canonical ID, or the parser's message. */
export function validatePeerId(text: string): { ok: true; peerId: string } | { ok: false; message: string } {
  try {
    return { ok: true, peerId: parsePeerId(text) }
  } catch (err) {
    return { ok: false, message: err instanceof P2PMessError ? err.message : 'not a valid peer ID' }
  }
}

export type KeyAction = { type: 'key'; key: Key } | { type: 'edit'; edit: Edit } | { type: 'submit' } | { type: 'quit' }

const KEYS: Readonly<Record<string, KeyAction>> = {
  'C-c': { type: 'quit' },
  tab: { type: 'key', key: 'tab' },
  up: { type: 'key', key: 'up' },
  down: { type: 'key', key: 'down' },
  'C-n': { type: 'key', key: 'next-contact' },
  'C-p': { type: 'key', key: 'prev-contact' },
  pageup: { type: 'key', key: 'pageup' },
  pagedown: { type: 'key', key: 'pagedown' },
  // blessed reports Enter (CR) twice, as 'return' and as 'enter'; only 'enter' counts.
  enter: { type: 'submit' },
  backspace: { type: 'edit', edit: { type: 'backspace' } },
  'C-u': { type: 'edit', edit: { type: 'clear' } },
}

/** Maps a blessed key press to what it means here; printable characters are typed into the input line. */
export function keyAction(ch: string | undefined, key: { full: string; ctrl?: boolean; meta?: boolean }): KeyAction | undefined {
  if (Object.hasOwn(KEYS, key.full)) return KEYS[key.full]
  if (key.full === 'return' || key.ctrl || key.meta || ch === undefined || ch === '') return undefined
  return { type: 'edit', edit: { type: 'insert', text: ch } }
}

/** Text for a blessed element with tags on: made terminal-safe, then tag-escaped. */
function cell(text: string): string {
  return blessed.escape(terminalSafe(text))
}

/**
 * blessed.program with its real option types: @types/blessed declares it with the screen's options, whose
 * `input`/`output` types are swapped.
 */
const newProgram = blessed.program as (options: IBlessedProgramOptions) => BlessedProgram

/**
 * blessed compiles every terminfo capability while it sets up the terminal, and prints the ones it cannot compile
 * (e.g. `screen-256color.plab_norm`, `xterm-256color.Setulc` on recent ncurses) with console.error, which would
 * land on the user's terminal. Those capabilities are unused here; silence console.error just for that setup.
 */
function withoutConsoleErrors<T>(make: () => T): T {
  const original = console.error
  console.error = () => {}
  try {
    return make()
  } finally {
    console.error = original
  }
}

const STATUS_BAR_WIDTH = 20
const MIN_CONTACTS_WIDTH = 24
const MAX_CONTACTS_WIDTH = 44

/**
 * Runs the TUI until the user quits (Ctrl-C or /quit; SIGTERM and SIGHUP too): dispatches `quit`, stops the
 * handle, destroys the screen and restores the terminal. Resolves then, or rejects with the handle's stop error.
 * A second Ctrl-C while the handle is stopping restores the terminal at once.
 */
export async function runTui(handle: ClientHandle, options: TuiOptions = {}): Promise<void> {
  const screen = withoutConsoleErrors(() =>
    blessed.screen({
      program: newProgram({ input: options.input, output: options.output }),
      smartCSR: true,
      fullUnicode: true,
      forceUnicode: true,
      autoPadding: true,
    }),
  )
  const contactsBox = blessed.box({ parent: screen, border: 'line', label: ' Contacts ', tags: true, wrap: false })
  const conversationBox = blessed.box({ parent: screen, border: 'line', tags: true, scrollable: true })
  const barBox = blessed.box({ parent: screen, height: 1, tags: true, wrap: false, style: { inverse: true } })
  const messageBox = blessed.box({ parent: screen, height: 2, tags: true })
  const inputBox = blessed.box({ parent: screen, height: 1, tags: true, wrap: false })

  function render(s: UiState): void {
    const width = Math.max(20, screen.width as number)
    const height = Math.max(8, screen.height as number)
    const paneHeight = height - 4
    const contactsWidth = Math.max(MIN_CONTACTS_WIDTH, Math.min(MAX_CONTACTS_WIDTH, Math.floor(width * 0.3)))

    contactsBox.top = 0
    contactsBox.left = 0
    contactsBox.width = contactsWidth
    contactsBox.height = paneHeight
    contactsBox.style.border = { fg: s.focus === 'contacts' ? 'cyan' : 'white' }
    contactsBox.setContent(
      s.contacts.length === 0
        ? '{gray-fg}none yet{/gray-fg}'
        : s.contacts.map((c) => (c.peerId === s.selected ? `{inverse}${cell(contactLine(c))}{/inverse}` : cell(contactLine(c)))).join('\n'),
    )

    const selected = s.contacts.find((c) => c.peerId === s.selected)
    conversationBox.top = 0
    conversationBox.left = contactsWidth
    conversationBox.width = width - contactsWidth
    conversationBox.height = paneHeight
    conversationBox.setLabel(selected ? ` ${cell(selected.name ?? selected.peerId)} (${selected.state}, ${selected.presence}) ` : ' Conversation ')
    const lines = visibleMessages(s, paneHeight - 2).map(cell)
    const hint =
      selected === undefined
        ? 'No contacts yet. Add one with /add <peer-id> [name]'
        : selected.state === 'request'
          ? 'This peer wants to talk to you: /accept or /refuse'
          : lines.length === 0
            ? 'No messages yet. Type one below and press Enter.'
            : undefined
    conversationBox.setContent(hint === undefined ? lines.join('\n') : `{gray-fg}${cell(hint)}{/gray-fg}`)
    conversationBox.setScrollPerc(100)

    barBox.top = height - 4
    barBox.width = width
    barBox.setContent(cell(statusLine(s, STATUS_BAR_WIDTH)))

    messageBox.top = height - 3
    messageBox.width = width
    const text = cell(s.status.text)
    messageBox.setContent(s.status.kind === 'error' ? `{red-fg}${text}{/red-fg}` : text)

    inputBox.top = height - 1
    inputBox.width = width
    const room = Math.max(1, width - 3)
    const draft = s.draft.length > room ? s.draft.slice(s.draft.length - room) : s.draft
    inputBox.setContent(s.focus === 'input' ? `> ${cell(draft)}{inverse} {/inverse}` : `{gray-fg}> ${cell(draft)}{/gray-fg}`)

    screen.render()
  }

  let state = initialState()
  if (options.logFile !== undefined) {
    state = { ...state, status: { ...state.status, text: `${state.status.text}  Log: ${options.logFile}` } }
  }
  let closed = false
  function update(next: UiState): void {
    if (closed) return
    state = next
    render(state)
  }

  const off = handle.onEvent((event) => update(applyEvent(state, event)))
  for (const contact of handle.contacts()) state = applyEvent(state, { type: 'contact', contact })

  let finish: (error?: unknown) => void = () => {}
  const done = new Promise<void>((resolve, reject) => {
    finish = (error) => (error === undefined ? resolve() : reject(error))
  })

  async function dispatch(intent: ClientIntent): Promise<IntentResult> {
    try {
      return await handle.dispatch(intent)
    } catch (err) {
      return { ok: false, code: err instanceof P2PMessError ? err.code : 'ERR_INTERNAL', message: describeError(err) }
    }
  }

  async function quit(): Promise<void> {
    if (closed) return
    if (!state.quitting) update({ ...state, status: { text: 'Quitting…', kind: 'info' }, quitting: true })
    closed = true
    await dispatch({ cmd: 'quit' })
    let stopError: P2PMessError | undefined
    try {
      await handle.stop()
    } catch (err) {
      stopError = err instanceof P2PMessError ? err : new P2PMessError('ERR_INTERNAL', `stop failed: ${describeError(err)}`, { cause: err })
    }
    off()
    for (const signal of SIGNALS) process.off(signal, onSignal)
    restoreTerminal()
    finish(stopError)
  }

  let restored = false
  function restoreTerminal(): void {
    if (restored) return
    restored = true
    screen.destroy()
  }

  function run(intents: ClientIntent[]): void {
    for (const intent of intents) {
      if (intent.cmd === 'quit') void quit()
      else void dispatch(intent).then((result) => update(applyResult(state, intent, result)))
    }
  }

  screen.on('keypress', (ch: string | undefined, key: { full: string; ctrl?: boolean; meta?: boolean }) => {
    const action = keyAction(ch, key)
    if (action === undefined) return
    if (closed) {
      // Ctrl-C again while the client is stopping: give the terminal back now; runTui still waits for stop().
      if (action.type === 'quit') restoreTerminal()
      return
    }
    switch (action.type) {
      case 'quit':
        void quit()
        return
      case 'key':
        update(applyKey(state, action.key))
        return
      case 'edit':
        update(applyEdit(state, action.edit))
        return
      case 'submit': {
        const r = submitDraft(state, validatePeerId)
        update(r.state)
        run(r.intents)
        return
      }
    }
  })
  screen.on('resize', () => update(state))
  const SIGNALS = ['SIGTERM', 'SIGHUP'] as const
  const onSignal = (): void => void quit()
  for (const signal of SIGNALS) process.on(signal, onSignal)

  render(state)
  // Load what the client already has for each contact (history messages are not unread).
  for (const contact of handle.contacts()) {
    const intent: ClientIntent = { cmd: 'history', peerId: contact.peerId, limit: MAX_VIEW_MESSAGES }
    void dispatch(intent).then((result) => update(applyResult(state, intent, result)))
  }
  return done
}
