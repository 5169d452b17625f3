/**
 * The terminal UI's state, as pure data and pure functions: client events and key presses go in, a new state and
 * the intents to send to the client come out. The blessed view (./tui.ts) only draws this state and forwards keys,
 * so everything a user can see or do is tested here without a terminal.
 */
import type { ClientEvent, ClientIntent, ContactView, IntentResult, MessageView, TorState } from '../client/api.js'
import { utf8 } from '../protocol/bytes.js'
import { MAX_TEXT_BYTES } from '../protocol/messages.js'

export type Focus = 'input' | 'contacts'

export interface UiContact extends ContactView {
  unread: number
}

export interface UiState {
  self: { peerId: string; onion: string } | undefined
  tor: TorState
  bootstrap: { progress: number; summary: string }
  contacts: UiContact[]
  selected: string | undefined
  conversations: ReadonlyMap<string, readonly MessageView[]>
  /** Lines scrolled up from the bottom of the selected conversation. */
  scroll: number
  focus: Focus
  status: { text: string; kind: 'info' | 'error' }
  quitting: boolean
  /** What is typed in the input line, not yet submitted. */
  draft: string
}

export function initialState(): UiState {
  return {
    self: undefined,
    tor: 'starting',
    bootstrap: { progress: 0, summary: 'Starting tor' },
    contacts: [],
    selected: undefined,
    conversations: new Map(),
    scroll: 0,
    focus: 'input',
    status: { text: 'Starting tor…  Type /help for commands.', kind: 'info' },
    quitting: false,
    draft: '',
  }
}

/** Keeps at most this many messages per conversation in the view; older ones stay in the client's history. */
export const MAX_VIEW_MESSAGES = 500

function upsertMessage(list: readonly MessageView[], m: MessageView): MessageView[] {
  const i = list.findIndex((x) => x.id === m.id)
  const next = i >= 0 ? list.map((x, j) => (j === i ? m : x)) : [...list, m]
  return next.length > MAX_VIEW_MESSAGES ? next.slice(next.length - MAX_VIEW_MESSAGES) : next
}

function withConversation(state: UiState, peerId: string, list: MessageView[]): ReadonlyMap<string, readonly MessageView[]> {
  const next = new Map(state.conversations)
  next.set(peerId, list)
  return next
}

function patchContact(state: UiState, peerId: string, patch: (c: UiContact) => UiContact): UiContact[] {
  return state.contacts.map((c) => (c.peerId === peerId ? patch(c) : c))
}

/** Applies one client event. */
export function applyEvent(state: UiState, event: ClientEvent): UiState {
  switch (event.type) {
    case 'bootstrap':
      return { ...state, bootstrap: { progress: event.progress, summary: event.summary } }
    case 'tor': {
      const status =
        event.state === 'failed' || event.state === 'restarting'
          ? { text: `tor ${event.state}${event.detail ? `: ${event.detail}` : ''}`, kind: 'error' as const }
          : state.status
      return { ...state, tor: event.state, status }
    }
    case 'ready':
      return {
        ...state,
        self: { peerId: event.peerId, onion: event.onion },
        tor: 'ready',
        bootstrap: { progress: 100, summary: 'Done' },
        status: { text: `Online as ${event.peerId}`, kind: 'info' },
      }
    case 'published':
      return state
    case 'contact': {
      const existing = state.contacts.find((c) => c.peerId === event.contact.peerId)
      const contact: UiContact = { ...event.contact, unread: existing?.unread ?? 0 }
      const contacts = existing
        ? state.contacts.map((c) => (c.peerId === contact.peerId ? contact : c))
        : [...state.contacts, contact]
      return { ...state, contacts, selected: state.selected ?? contact.peerId }
    }
    case 'presence': {
      const contacts = patchContact(state, event.peerId, (c) => ({
        ...c,
        presence: event.presence,
        ...(event.rttMs === undefined ? {} : { rttMs: event.rttMs }),
      }))
      return { ...state, contacts }
    }
    case 'request':
      return {
        ...state,
        status: { text: `Contact request from ${event.peerId} — select it and type /accept`, kind: 'info' },
      }
    case 'message': {
      const m = event.message
      const list = upsertMessage(state.conversations.get(m.peerId) ?? [], m)
      const unseen = m.direction === 'in' && m.peerId !== state.selected
      const contacts = unseen ? patchContact(state, m.peerId, (c) => ({ ...c, unread: c.unread + 1 })) : state.contacts
      return { ...state, conversations: withConversation(state, m.peerId, list), contacts }
    }
    case 'delivered': {
      const list = state.conversations.get(event.peerId)
      if (!list) return state
      const next = list.map((m) => (m.id === event.id ? { ...m, status: 'delivered' as const } : m))
      return { ...state, conversations: withConversation(state, event.peerId, next) }
    }
    case 'error':
      return { ...state, status: { text: event.message, kind: 'error' } }
  }
}

export type Key = 'tab' | 'up' | 'down' | 'pageup' | 'pagedown' | 'next-contact' | 'prev-contact'

/** Lines one PgUp/PgDn moves. */
export const PAGE = 10

function select(state: UiState, peerId: string | undefined): UiState {
  if (peerId === undefined) return state
  return {
    ...state,
    selected: peerId,
    scroll: 0,
    contacts: patchContact(state, peerId, (c) => ({ ...c, unread: 0 })),
  }
}

function moveSelection(state: UiState, delta: number): UiState {
  if (state.contacts.length === 0) return state
  const i = state.contacts.findIndex((c) => c.peerId === state.selected)
  const n = state.contacts.length
  const j = i < 0 ? 0 : (((i + delta) % n) + n) % n
  return select(state, state.contacts[j]?.peerId)
}

/** Applies one navigation key. */
export function applyKey(state: UiState, key: Key): UiState {
  switch (key) {
    case 'tab':
      return { ...state, focus: state.focus === 'input' ? 'contacts' : 'input' }
    case 'up':
    case 'prev-contact':
      return moveSelection(state, -1)
    case 'down':
    case 'next-contact':
      return moveSelection(state, 1)
    case 'pageup': {
      const total = state.selected ? (state.conversations.get(state.selected)?.length ?? 0) : 0
      return { ...state, scroll: Math.min(state.scroll + PAGE, Math.max(0, total - 1)) }
    }
    case 'pagedown':
      return { ...state, scroll: Math.max(0, state.scroll - PAGE) }
  }
}

export const HELP_TEXT =
  '/add <peer-id> [name]  /accept  /refuse  /verify  /retry  /whoami  /help  /quit — Tab: focus, ↑/↓ or Ctrl-N/P: contact, PgUp/PgDn: scroll'

export interface InputResult {
  state: UiState
  intents: ClientIntent[]
}

function info(state: UiState, text: string): UiState {
  return { ...state, status: { text, kind: 'info' } }
}
function fail(state: UiState, text: string): UiState {
  return { ...state, status: { text, kind: 'error' } }
}

/**
 * Interprets a line typed in the input box: a slash command or a message to the selected contact.
 * `validatePeerId` is injected (the protocol's parser) so this module stays a pure function of its inputs; it
 * returns the canonical ID or a message explaining what is wrong.
 */
export function submitInput(
  state: UiState,
  line: string,
  validatePeerId: (text: string) => { ok: true; peerId: string } | { ok: false; message: string },
): InputResult {
  const text = line.trim()
  if (text === '') return { state, intents: [] }
  if (!text.startsWith('/')) {
    const peer = state.contacts.find((c) => c.peerId === state.selected)
    if (!peer) return { state: fail(state, 'No contact selected. Add one with /add <peer-id> [name]'), intents: [] }
    if (peer.state === 'request') {
      return { state: fail(state, 'Accept the contact request first: /accept'), intents: [] }
    }
    if (peer.state === 'refused') return { state: fail(state, 'You refused this contact.'), intents: [] }
    // A text body is at most MAX_TEXT_BYTES of UTF-8 (docs/PROTOCOL.md, "Messages"): refuse it here, so the
    // draft is kept, rather than have the client refuse it after the input line was cleared.
    const bytes = utf8(text).length
    if (bytes > MAX_TEXT_BYTES) {
      return { state: fail(state, `Message too long: ${bytes} bytes of UTF-8, the limit is ${MAX_TEXT_BYTES}`), intents: [] }
    }
    return { state: { ...state, scroll: 0 }, intents: [{ cmd: 'send', peerId: peer.peerId, body: text }] }
  }
  const [command = '', ...args] = text.split(/\s+/)
  const selected = state.contacts.find((c) => c.peerId === state.selected)
  switch (command) {
    case '/add': {
      const [raw, ...nameParts] = args
      if (raw === undefined) return { state: fail(state, 'Usage: /add <peer-id> [name]'), intents: [] }
      const parsed = validatePeerId(raw)
      if (!parsed.ok) return { state: fail(state, parsed.message), intents: [] }
      if (state.self && parsed.peerId === state.self.peerId) {
        return { state: fail(state, 'That is your own peer ID.'), intents: [] }
      }
      const name = nameParts.join(' ')
      const intent: ClientIntent = name ? { cmd: 'add', peerId: parsed.peerId, name } : { cmd: 'add', peerId: parsed.peerId }
      return { state: info(state, `Looking up ${parsed.peerId}…`), intents: [intent] }
    }
    case '/accept':
    case '/refuse': {
      if (!selected) return { state: fail(state, 'No contact selected.'), intents: [] }
      if (selected.state !== 'request') return { state: fail(state, 'The selected contact has no pending request.'), intents: [] }
      const cmd = command === '/accept' ? 'accept' : 'refuse'
      return { state: info(state, `${cmd === 'accept' ? 'Accepted' : 'Refused'} ${selected.peerId}`), intents: [{ cmd, peerId: selected.peerId }] }
    }
    case '/verify':
      if (!selected) return { state: fail(state, 'No contact selected.'), intents: [] }
      return {
        state: info(state, `Safety number with ${selected.name ?? selected.peerId}: ${selected.safetyNumber} — compare it with them out of band`),
        intents: [],
      }
    case '/retry':
      return {
        state: info(state, selected ? `Retrying ${selected.name ?? selected.peerId} now` : 'Retrying every contact now'),
        intents: [selected ? { cmd: 'retry', peerId: selected.peerId } : { cmd: 'retry' }],
      }
    case '/whoami':
      return {
        state: state.self ? info(state, `Your peer ID: ${state.self.peerId}`) : fail(state, 'Not ready yet: tor is still starting.'),
        intents: [],
      }
    case '/help':
      return { state: info(state, HELP_TEXT), intents: [] }
    case '/quit':
      return { state: { ...info(state, 'Quitting…'), quitting: true }, intents: [{ cmd: 'quit' }] }
    default:
      return { state: fail(state, `Unknown command ${command}. Type /help`), intents: [] }
  }
}

// ---- input line and intent results (pure) ---------------------------------------------------------------------

/**
 * The input line holds at most this many UTF-16 code units. A message must also fit MAX_TEXT_BYTES of UTF-8, which
 * non-ASCII text can exceed within this bound: submitInput refuses such a message and Enter keeps the draft.
 */
export const MAX_DRAFT = 16384

export type Edit = { type: 'insert'; text: string } | { type: 'backspace' } | { type: 'clear' }

const DRAFT_CONTROL = /[\u0000-\u001f\u007f-\u009f]/gu

/** Applies one edit to the input line. Edits only land while the input line has focus; control characters are dropped. */
export function applyEdit(state: UiState, edit: Edit): UiState {
  if (state.focus !== 'input') return state
  switch (edit.type) {
    case 'insert': {
      let draft = state.draft
      for (const ch of edit.text.replace(DRAFT_CONTROL, '')) {
        if (draft.length + ch.length > MAX_DRAFT) break
        draft += ch
      }
      return draft === state.draft ? state : { ...state, draft }
    }
    case 'backspace': {
      const d = state.draft
      if (d === '') return state
      const pair = d.length >= 2 && /[\udc00-\udfff]/.test(d.at(-1)!) && /[\ud800-\udbff]/.test(d.at(-2)!)
      return { ...state, draft: d.slice(0, pair ? -2 : -1) }
    }
    case 'clear':
      return state.draft === '' ? state : { ...state, draft: '' }
  }
}

/**
 * Enter: submits the input line through `submitInput`. The line is cleared, except when it was refused and holds
 * something worth fixing rather than retyping: a message, or a command with arguments (a mistyped peer ID).
 * With the contact list focused, Enter moves focus back to the input line.
 */
export function submitDraft(
  state: UiState,
  validatePeerId: (text: string) => { ok: true; peerId: string } | { ok: false; message: string },
): InputResult {
  if (state.focus !== 'input') return { state: { ...state, focus: 'input' }, intents: [] }
  const r = submitInput(state, state.draft, validatePeerId)
  const text = state.draft.trim()
  const worthKeeping = !text.startsWith('/') || /\s/.test(text)
  const keep = worthKeeping && r.intents.length === 0 && r.state.status.kind === 'error'
  return { state: { ...r.state, draft: keep ? state.draft : '' }, intents: r.intents }
}

const FAILED: Readonly<Record<ClientIntent['cmd'], string>> = {
  add: 'Could not add the contact',
  accept: 'Could not accept',
  refuse: 'Could not refuse',
  send: 'Message not sent',
  contacts: 'Could not list contacts',
  history: 'Could not load the history',
  retry: 'Could not retry',
  quit: 'Could not quit cleanly',
}

/**
 * What the client answered to an intent: a refusal goes to the status line as an error; a history goes in front
 * of what the conversation already shows (without counting as unread; what is shown already wins on equal IDs).
 */
export function applyResult(state: UiState, intent: ClientIntent, result: IntentResult): UiState {
  if (!result.ok) return fail(state, `${FAILED[intent.cmd]}: ${result.message}`)
  if (intent.cmd !== 'history' || result.messages === undefined) return state
  const shown = state.conversations.get(intent.peerId) ?? []
  const ids = new Set(shown.map((m) => m.id))
  const older = result.messages.filter((m) => m.peerId === intent.peerId && !ids.has(m.id))
  if (older.length === 0) return state
  return { ...state, conversations: withConversation(state, intent.peerId, [...older, ...shown].slice(-MAX_VIEW_MESSAGES)) }
}

/** Characters that could drive the terminal or reorder what is shown: C0/C1 controls, DEL, bidi overrides. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/**
 * Makes text from anywhere (a peer's message, a contact's name, an error) safe to put on one terminal line:
 * line breaks become ' ↵ ', a tab becomes a space, every other control, bidi override or lone surrogate becomes U+FFFD.
 */
export function terminalSafe(text: string): string {
  return text
    .replace(/\r\n|\n|\r/g, ' ↵ ')
    .replace(/\t/g, ' ')
    .replace(UNSAFE, '\ufffd')
}

// ---- formatting (pure) -------------------------------------------------------------------------------------------

export function progressBar(progress: number, width: number): string {
  const p = Math.max(0, Math.min(100, Math.round(progress)))
  const filled = Math.round((p / 100) * width)
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(p).padStart(3)}%`
}

export function presenceMark(c: ContactView): string {
  if (c.state === 'request') return '?'
  if (c.state === 'refused') return 'x'
  switch (c.presence) {
    case 'online':
      return '●'
    case 'connecting':
      return '◌'
    case 'unreachable':
      return '!'
    case 'offline':
      return '○'
  }
}

export function contactLine(c: UiContact): string {
  const rtt = c.presence === 'online' && c.rttMs !== undefined ? ` ${Math.round(c.rttMs)}ms` : ''
  const unread = c.unread > 0 ? ` (${c.unread})` : ''
  return `${presenceMark(c)} ${c.name ?? c.peerId}${rtt}${unread}`
}

export function deliveryTick(m: MessageView): string {
  switch (m.status) {
    case 'queued':
      return '…'
    case 'sent':
      return '✓'
    case 'delivered':
      return '✓✓'
    case 'received':
      return ''
  }
}

export function formatTime(at: number): string {
  const d = new Date(at)
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`
}

export function messageLine(m: MessageView, contactName: string): string {
  const who = m.direction === 'out' ? 'me' : contactName
  const tick = deliveryTick(m)
  return `${formatTime(m.at)} ${who}: ${m.body}${tick ? ` ${tick}` : ''}`
}

/** The lines of the selected conversation that fit in `height` rows, honouring the scroll offset. */
export function visibleMessages(state: UiState, height: number): string[] {
  if (!state.selected) return []
  const contact = state.contacts.find((c) => c.peerId === state.selected)
  const name = contact?.name ?? state.selected
  const list = state.conversations.get(state.selected) ?? []
  const end = Math.max(0, list.length - state.scroll)
  const start = Math.max(0, end - Math.max(1, height))
  return list.slice(start, end).map((m) => messageLine(m, name))
}

export function statusLine(state: UiState, barWidth: number): string {
  const who = state.self ? state.self.peerId : 'no peer ID yet'
  const tor = state.tor === 'ready' ? 'tor ready' : `tor ${progressBar(state.bootstrap.progress, barWidth)} ${state.bootstrap.summary}`
  return `${who} | ${tor}`
}
