import test from 'ava'
import type { ContactView, MessageView } from '../src/client/api.js'
import {
  applyEvent,
  applyKey,
  contactLine,
  initialState,
  MAX_VIEW_MESSAGES,
  progressBar,
  statusLine,
  submitInput,
  visibleMessages,
  type UiState,
} from '../src/ui/view-model.js'

const ALICE = 'aaaa-aaaa'
const BOB = 'bbbb-bbbb'
const validate = (text: string) =>
  /^[a-z]{4}-[a-z]{4}$/.test(text) ? { ok: true as const, peerId: text } : { ok: false as const, message: `Malformed peer ID: ${text}` }

function contact(peerId: string, patch: Partial<ContactView> = {}): ContactView {
  return { peerId, state: 'accepted', presence: 'offline', safetyNumber: '12345 67890', queued: 0, ...patch }
}
function msg(peerId: string, id: string, patch: Partial<MessageView> = {}): MessageView {
  return { peerId, id, direction: 'in', body: `body ${id}`, at: 0, status: 'received', ...patch }
}
function withContacts(...ids: string[]): UiState {
  let s = initialState()
  for (const id of ids) s = applyEvent(s, { type: 'contact', contact: contact(id) })
  return s
}

test('bootstrap progress and ready show in the status line', (t) => {
  let s = applyEvent(initialState(), { type: 'bootstrap', progress: 45, summary: 'Loading relay descriptors' })
  t.is(statusLine(s, 10), 'no peer ID yet | tor [#####.....]  45% Loading relay descriptors')
  s = applyEvent(s, { type: 'ready', peerId: ALICE, onion: 'x.onion' })
  t.is(statusLine(s, 10), `${ALICE} | tor ready`)
  t.is(s.status.kind, 'info')
})

test('progress bar clamps and fills proportionally', (t) => {
  t.is(progressBar(0, 4), '[....]   0%')
  t.is(progressBar(50, 4), '[##..]  50%')
  t.is(progressBar(250, 4), '[####] 100%')
  t.is(progressBar(-3, 4), '[....]   0%')
})

test('first contact is selected; presence and RTT show in the contact line', (t) => {
  let s = withContacts(BOB)
  t.is(s.selected, BOB)
  s = applyEvent(s, { type: 'presence', peerId: BOB, presence: 'online', rttMs: 41.7 })
  t.is(contactLine(s.contacts[0]!), `● ${BOB} 42ms`)
  s = applyEvent(s, { type: 'presence', peerId: BOB, presence: 'unreachable' })
  t.is(contactLine(s.contacts[0]!), `! ${BOB}`)
})

test('messages to an unselected contact count as unread until selected', (t) => {
  let s = withContacts(ALICE, BOB)
  s = applyEvent(s, { type: 'message', message: msg(BOB, 'm1') })
  s = applyEvent(s, { type: 'message', message: msg(ALICE, 'm2') })
  t.is(s.contacts.find((c) => c.peerId === BOB)!.unread, 1)
  t.is(s.contacts.find((c) => c.peerId === ALICE)!.unread, 0)
  s = applyKey(s, 'down')
  t.is(s.selected, BOB)
  t.is(s.contacts.find((c) => c.peerId === BOB)!.unread, 0)
  s = applyKey(s, 'next-contact')
  t.is(s.selected, ALICE, 'selection wraps around')
  s = applyKey(s, 'prev-contact')
  t.is(s.selected, BOB)
})

test('delivered events tick the right message; duplicates replace instead of repeating', (t) => {
  let s = withContacts(BOB)
  s = applyEvent(s, { type: 'message', message: msg(BOB, 'o1', { direction: 'out', status: 'queued', body: 'hi', at: 0 }) })
  s = applyEvent(s, { type: 'message', message: msg(BOB, 'o1', { direction: 'out', status: 'sent', body: 'hi', at: 0 }) })
  t.is(s.conversations.get(BOB)!.length, 1)
  s = applyEvent(s, { type: 'delivered', peerId: BOB, id: 'o1' })
  t.regex(visibleMessages(s, 5)[0]!, /me: hi ✓✓$/)
  t.is(applyEvent(s, { type: 'delivered', peerId: ALICE, id: 'zz' }), s, 'unknown conversation leaves state alone')
})

test('conversation view is bounded', (t) => {
  let s = withContacts(BOB)
  for (let i = 0; i < MAX_VIEW_MESSAGES + 20; i++) s = applyEvent(s, { type: 'message', message: msg(BOB, `m${i}`) })
  const list = s.conversations.get(BOB)!
  t.is(list.length, MAX_VIEW_MESSAGES)
  t.is(list[0]!.id, 'm20')
})

test('page up/down scroll within bounds and the visible window follows', (t) => {
  let s = withContacts(BOB)
  for (let i = 0; i < 30; i++) s = applyEvent(s, { type: 'message', message: msg(BOB, `m${i}`) })
  t.regex(visibleMessages(s, 5).at(-1)!, /body m29$/)
  s = applyKey(s, 'pageup')
  t.is(s.scroll, 10)
  t.regex(visibleMessages(s, 5).at(-1)!, /body m19$/)
  for (let i = 0; i < 10; i++) s = applyKey(s, 'pageup')
  t.is(s.scroll, 29)
  t.is(visibleMessages(s, 5).length, 1)
  for (let i = 0; i < 10; i++) s = applyKey(s, 'pagedown')
  t.is(s.scroll, 0)
})

test('tab toggles focus', (t) => {
  const s = applyKey(initialState(), 'tab')
  t.is(s.focus, 'contacts')
  t.is(applyKey(s, 'tab').focus, 'input')
})

test('plain text sends to the selected contact; without one it explains what to do', (t) => {
  const none = submitInput(initialState(), 'hello', validate)
  t.deepEqual(none.intents, [])
  t.is(none.state.status.kind, 'error')
  const r = submitInput(withContacts(BOB), '  hello there ', validate)
  t.deepEqual(r.intents, [{ cmd: 'send', peerId: BOB, body: 'hello there' }])
  t.deepEqual(submitInput(withContacts(BOB), '   ', validate).intents, [])
})

test('/add validates the peer ID and keeps the optional name', (t) => {
  const bad = submitInput(initialState(), '/add nope', validate)
  t.deepEqual(bad.intents, [])
  t.is(bad.state.status.text, 'Malformed peer ID: nope')
  t.is(bad.state.status.kind, 'error')
  t.deepEqual(submitInput(initialState(), '/add bbbb-bbbb Bob Smith', validate).intents, [
    { cmd: 'add', peerId: BOB, name: 'Bob Smith' },
  ])
  t.deepEqual(submitInput(initialState(), '/add bbbb-bbbb', validate).intents, [{ cmd: 'add', peerId: BOB }])
  t.is(submitInput(initialState(), '/add', validate).state.status.kind, 'error')
  const self = applyEvent(initialState(), { type: 'ready', peerId: ALICE, onion: 'x.onion' })
  t.deepEqual(submitInput(self, `/add ${ALICE}`, validate).intents, [])
})

test('contact requests: nothing can be sent until accepted; /accept and /refuse only apply to requests', (t) => {
  let s = applyEvent(initialState(), { type: 'contact', contact: contact(BOB, { state: 'request' }) })
  s = applyEvent(s, { type: 'request', peerId: BOB })
  t.deepEqual(submitInput(s, 'hi', validate).intents, [])
  t.deepEqual(submitInput(s, '/accept', validate).intents, [{ cmd: 'accept', peerId: BOB }])
  t.deepEqual(submitInput(s, '/refuse', validate).intents, [{ cmd: 'refuse', peerId: BOB }])
  t.deepEqual(submitInput(withContacts(BOB), '/accept', validate).intents, [])
})

test('/verify, /whoami, /help, /retry, /quit and unknown commands', (t) => {
  const s = applyEvent(withContacts(BOB), { type: 'ready', peerId: ALICE, onion: 'x.onion' })
  t.regex(submitInput(s, '/verify', validate).state.status.text, /12345 67890/)
  t.regex(submitInput(s, '/whoami', validate).state.status.text, new RegExp(ALICE))
  t.regex(submitInput(initialState(), '/whoami', validate).state.status.text, /tor is still starting/)
  t.regex(submitInput(s, '/help', validate).state.status.text, /\/add <peer-id>/)
  t.deepEqual(submitInput(s, '/retry', validate).intents, [{ cmd: 'retry', peerId: BOB }])
  t.deepEqual(submitInput(initialState(), '/retry', validate).intents, [{ cmd: 'retry' }])
  const q = submitInput(s, '/quit', validate)
  t.true(q.state.quitting)
  t.deepEqual(q.intents, [{ cmd: 'quit' }])
  const u = submitInput(s, '/frobnicate', validate)
  t.is(u.state.status.text, 'Unknown command /frobnicate. Type /help')
  t.is(u.state.status.kind, 'error')
})

test('errors and tor trouble reach the status line', (t) => {
  let s = applyEvent(initialState(), { type: 'error', code: 'ERR_X', message: 'Bob is offline' })
  t.deepEqual(s.status, { text: 'Bob is offline', kind: 'error' })
  s = applyEvent(s, { type: 'tor', state: 'restarting', detail: 'tor exited' })
  t.is(s.status.text, 'tor restarting: tor exited')
  t.is(s.tor, 'restarting')
})
