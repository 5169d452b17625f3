/** The view-model additions the TUI needs: the input line, intent results, terminal-safe text. */
import test from 'ava'
import type { ContactView, MessageView } from '../src/client/api.js'
import { MAX_TEXT_BYTES } from '../src/protocol/messages.js'
import {
  applyEdit,
  applyEvent,
  applyKey,
  applyResult,
  initialState,
  MAX_DRAFT,
  MAX_VIEW_MESSAGES,
  submitDraft,
  terminalSafe,
  type UiState,
} from '../src/ui/view-model.js'
import { seededRandom } from './helpers/random.js'

const BOB = 'bbbb-bbbb'
const validate = (text: string) =>
  /^[a-z]{4}-[a-z]{4}$/.test(text) ? { ok: true as const, peerId: text } : { ok: false as const, message: `Malformed peer ID: ${text}` }

function contact(peerId: string, patch: Partial<ContactView> = {}): ContactView {
  return { peerId, state: 'accepted', presence: 'offline', safetyNumber: '1', queued: 0, ...patch }
}
function msg(id: string, patch: Partial<MessageView> = {}): MessageView {
  return { peerId: BOB, id, direction: 'in', body: id, at: 0, status: 'received', ...patch }
}
function typed(state: UiState, text: string): UiState {
  return applyEdit(state, { type: 'insert', text })
}

test('typing edits the draft: controls dropped, backspace removes a whole code point, clear empties it', (t) => {
  let s = typed(initialState(), 'he\u0007l\u001b[2Jlo\r\n')
  t.is(s.draft, 'hel[2Jlo')
  s = typed(initialState(), 'ok 👋')
  s = applyEdit(s, { type: 'backspace' })
  t.is(s.draft, 'ok ', 'the surrogate pair goes at once')
  s = applyEdit(s, { type: 'backspace' })
  t.is(s.draft, 'ok')
  t.is(applyEdit(applyEdit(s, { type: 'clear' }), { type: 'backspace' }).draft, '')
  const empty = initialState()
  t.is(applyEdit(empty, { type: 'backspace' }), empty, 'nothing to delete: same state')
})

test('the draft is bounded and never ends in half a surrogate pair; typing needs input focus', (t) => {
  let s = typed(initialState(), 'x'.repeat(MAX_DRAFT - 1))
  s = typed(s, '👋y')
  t.is(s.draft.length, MAX_DRAFT - 1, 'a pair that does not fit is not split')
  s = typed(s, 'y')
  t.is(s.draft.length, MAX_DRAFT)
  t.is(typed(s, 'z'), s)
  const focused = applyKey(initialState(), 'tab')
  t.is(typed(focused, 'abc').draft, '')
})

test('Enter sends and clears; a refused message or a refused command with arguments stays for fixing', (t) => {
  let s = applyEvent(initialState(), { type: 'contact', contact: contact(BOB) })
  s = typed(s, 'hello')
  const sent = submitDraft(s, validate)
  t.deepEqual(sent.intents, [{ cmd: 'send', peerId: BOB, body: 'hello' }])
  t.is(sent.state.draft, '')

  const nobody = submitDraft(typed(initialState(), 'hello'), validate)
  t.is(nobody.state.status.kind, 'error')
  t.is(nobody.state.draft, 'hello', 'the message is not lost')

  const typo = submitDraft(typed(initialState(), '/add bad!'), validate)
  t.is(typo.state.status.text, 'Malformed peer ID: bad!')
  t.is(typo.state.draft, '/add bad!')

  const early = submitDraft(typed(initialState(), '/whoami'), validate)
  t.is(early.state.status.kind, 'error')
  t.is(early.state.draft, '', 'a bare command is cleared even when refused')

  const help = submitDraft(typed(initialState(), '/help'), validate)
  t.is(help.state.draft, '')
})

test('a message over MAX_TEXT_BYTES of UTF-8 (but within MAX_DRAFT) is refused on Enter, the draft kept and the limit shown', (t) => {
  const withBob = applyEvent(initialState(), { type: 'contact', contact: contact(BOB) })
  // 'é' is 2 bytes of UTF-8 and 1 UTF-16 unit: the input line takes MAX_DRAFT of them, the wire only half.
  const long = 'é'.repeat(MAX_TEXT_BYTES / 2 + 1)
  t.true(long.length <= MAX_DRAFT)
  const s = typed(withBob, long)
  t.is(s.draft, long)
  const refused = submitDraft(s, validate)
  t.deepEqual(refused.intents, [])
  t.is(refused.state.draft, long, 'the message is not lost')
  t.is(refused.state.status.kind, 'error')
  t.is(refused.state.status.text, `Message too long: ${MAX_TEXT_BYTES + 2} bytes of UTF-8, the limit is ${MAX_TEXT_BYTES}`)

  // Exactly at the limit (after trimming) is sent; 4-byte code points count as 4.
  const fits = 'é'.repeat(MAX_TEXT_BYTES / 2)
  const sent = submitDraft(typed(withBob, `  ${fits}  `), validate)
  t.deepEqual(sent.intents, [{ cmd: 'send', peerId: BOB, body: fits }])
  t.is(sent.state.draft, '')
  const emoji = submitDraft(typed(withBob, '👋'.repeat(MAX_TEXT_BYTES / 4 + 1)), validate)
  t.deepEqual(emoji.intents, [])
  t.regex(emoji.state.status.text, new RegExp(`${MAX_TEXT_BYTES + 4} bytes`))
})

test('Enter with the contact list focused returns focus to the input line', (t) => {
  const s = applyKey(initialState(), 'tab')
  const r = submitDraft(s, validate)
  t.is(r.state.focus, 'input')
  t.deepEqual(r.intents, [])
})

test('a refused intent shows in the status line as an error; success changes nothing', (t) => {
  const s = initialState()
  const failed = applyResult(s, { cmd: 'send', peerId: BOB, body: 'x' }, { ok: false, code: 'ERR_UNKNOWN_CONTACT', message: 'no such contact' })
  t.deepEqual(failed.status, { text: 'Message not sent: no such contact', kind: 'error' })
  t.is(applyResult(s, { cmd: 'add', peerId: BOB }, { ok: true }), s)
  t.is(applyResult(s, { cmd: 'send', peerId: BOB, body: 'x' }, { ok: true, id: 'm' }), s)
})

test('a history result goes before what is shown, without unread counts or duplicates, bounded', (t) => {
  let s = applyEvent(initialState(), { type: 'contact', contact: contact(BOB) })
  s = applyEvent(s, { type: 'contact', contact: contact('cccc-cccc') })
  s = applyEvent(s, { type: 'message', message: msg('new', { status: 'received' }) })
  const history = [msg('old1'), msg('old2'), msg('new', { body: 'stale copy' }), msg('x', { peerId: 'cccc-cccc' })]
  const r = applyResult(s, { cmd: 'history', peerId: BOB }, { ok: true, messages: history })
  t.deepEqual(r.conversations.get(BOB)!.map((m) => m.id), ['old1', 'old2', 'new'])
  t.is(r.conversations.get(BOB)!.at(-1)!.body, 'new', 'what was shown wins')
  t.is(r.contacts.find((c) => c.peerId === BOB)!.unread, 0)
  t.is(r.conversations.get('cccc-cccc'), undefined, 'messages of another peer are ignored')
  t.is(applyResult(r, { cmd: 'history', peerId: BOB }, { ok: true, messages: history }), r, 'nothing new: same state')
  const many = Array.from({ length: MAX_VIEW_MESSAGES + 10 }, (_, i) => msg(`h${i}`))
  t.is(applyResult(s, { cmd: 'history', peerId: BOB }, { ok: true, messages: many }).conversations.get(BOB)!.length, MAX_VIEW_MESSAGES)
})

test('terminalSafe: line breaks, tabs, escapes, C1 controls, bidi overrides and lone surrogates are neutralised', (t) => {
  t.is(terminalSafe('a\nb\r\nc\rd'), 'a ↵ b ↵ c ↵ d')
  t.is(terminalSafe('a\tb'), 'a b')
  t.is(terminalSafe('\u001b[2J\u001b]0;pwned\u0007'), '\ufffd[2J\ufffd]0;pwned\ufffd')
  t.is(terminalSafe('x\u009by\u007f'), 'x\ufffdy\ufffd')
  t.is(terminalSafe('abc\u202egnp.exe'), 'abc\ufffdgnp.exe')
  t.is(terminalSafe('\ud800x\udc00'), '\ufffdx\ufffd')
  t.is(terminalSafe('héllo ✓✓ 👋 漢字'), 'héllo ✓✓ 👋 漢字')
})

test('terminalSafe on seeded random strings never leaves a control, bidi override or lone surrogate', (t) => {
  const random = seededRandom(0x7e57)
  const unsafe = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
  const CASES = 5000
  const bad: string[] = []
  for (let i = 0; i < CASES; i++) {
    const units = Array.from({ length: random.int(40) }, () =>
      random.next() < 0.5 ? random.int(0x100) : random.next() < 0.5 ? 0xd800 + random.int(0x800) : random.int(0x10000),
    )
    const out = terminalSafe(String.fromCharCode(...units))
    if (unsafe.test(out)) bad.push(`case ${i}: ${JSON.stringify(out)}`)
  }
  t.deepEqual(bad, [])
  t.log(`${CASES} seeded random strings (seed 0x7e57)`)
})
