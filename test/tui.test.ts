/**
 * The TUI in a real terminal: tmux runs test/fixtures/tui-double.ts (runTui over the in-memory ClientDouble) in a
 * 120×40 pane on a private tmux socket; the test types with send-keys and reads the screen with capture-pane,
 * waiting on screen content with a deadline. Plus the key mapping and peer ID validation, without a terminal.
 */
import test, { type ExecutionContext } from 'ava'
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { keyAction, validatePeerId } from '../src/ui/tui.js'
import { testPeerId } from './fixtures/client-double.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SOCKET = `p2pmess-test-${process.pid}`
const WAIT_MS = 20_000
const POLL_MS = 50

function tmux(...args: string[]): string {
  const r = spawnSync('tmux', ['-u', '-L', SOCKET, ...args], {
    encoding: 'utf8',
    env: { ...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
  })
  if (r.error) {
    const missing = (r.error as NodeJS.ErrnoException).code === 'ENOENT'
    throw new Error(missing ? 'tmux is not installed (apt-get install tmux); the TUI test needs it' : `tmux failed: ${r.error.message}`)
  }
  if (r.status !== 0) throw new Error(`tmux ${args[0]} exited ${r.status}: ${r.stderr}`)
  return r.stdout
}

function screen(escapes = false): string {
  return tmux('capture-pane', '-p', ...(escapes ? ['-e'] : []), '-t', 'tui')
}

/** A fact about the screen: text it contains, a pattern it matches, or any predicate. */
type Check = string | RegExp | ((screen: string) => boolean)

function holds(check: Check, text: string): boolean {
  if (typeof check === 'string') return text.includes(check)
  if (check instanceof RegExp) return check.test(text)
  return check(text)
}

/**
 * Polls the screen until every check holds at once (tmux may show a frame half-drawn, so all facts about one
 * state are waited for together), then asserts them; fails with the unmet checks and the screen after WAIT_MS.
 */
async function expectScreen(t: ExecutionContext, what: string, checks: Check[], escapes = false): Promise<string> {
  const deadline = Date.now() + WAIT_MS
  let last = ''
  while (Date.now() < deadline) {
    last = screen(escapes)
    if (checks.every((c) => holds(c, last))) {
      for (const c of checks) t.true(holds(c, last), `${what}: ${String(c)}`)
      return last
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
  t.log(last)
  const unmet = checks.filter((c) => !holds(c, last)).map(String)
  throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}; unmet: ${unmet.join(' | ')}`)
}

function type(text: string): void {
  tmux('send-keys', '-t', 'tui', '-l', text)
  tmux('send-keys', '-t', 'tui', 'Enter')
}

/** Rows of the plain screen (capture-pane prints one line per row). */
function rows(text: string): string[] {
  return text.replace(/\n$/, '').split('\n')
}

const RED = (text: string): RegExp => new RegExp(`\\x1b\\[31m(?:\\x1b\\[[0-9;]*m)*${text}`)
/** The input line (the screen's last row) starts with `text`, and is exactly that without escapes. */
const lastRow = (text: string): Check => (x) => {
  const row = rows(x).at(-1) ?? ''
  return x.includes('\x1b') ? row.startsWith(text) : row === text
}

test.serial('the TUI in tmux: progress, commands, errors, a delivered message, contacts, resize, Ctrl-C', async (t) => {
  tmux('-V')
  const dir = await mkdtemp(join(tmpdir(), 'p2pmess-tui-'))
  t.teardown(async () => {
    spawnSync('tmux', ['-L', SOCKET, 'kill-server'])
    await rm(dir, { recursive: true, force: true })
  })
  const conf = join(dir, 'tmux.conf')
  const pidFile = join(dir, 'pid')
  // remain-on-exit keeps the pane (and what the shell printed after the TUI) readable once the program ends.
  // screen-256color has a capability blessed cannot compile and reports on the console: it must not show.
  await writeFile(conf, 'set -g remain-on-exit on\nset -g status off\nset -g default-terminal screen-256color\n')
  const fixture = join(ROOT, 'test', 'fixtures', 'tui-double.ts')
  const script =
    `before=$(stty -g); '${process.execPath}' --import tsx '${fixture}' '${pidFile}'; code=$?; ` +
    `[ "$(stty -g)" = "$before" ] && echo TTY-RESTORED; echo EXIT=$code`
  tmux('-f', conf, 'new-session', '-d', '-x', '120', '-y', '40', '-s', 'tui', '-c', ROOT, script)

  // Before ready: the bootstrap progress bar and no peer ID; contacts with presence, RTT and the request mark.
  await expectScreen(t, 'the bootstrap progress bar', [
    'no peer ID yet | tor [#########...........]  45% Loading relay descriptors',
    'Log: /tmp/p2pmess-tui-test.log',
    /● Bob 180ms/,
    /\? Carol/,
    'Bob (accepted, online)',
  ])
  type('/whoami')
  await expectScreen(t, '/whoami before ready', [RED('Not ready yet: tor is still starting\\.'), lastRow('> ')], true)

  // Ready.
  const pid = Number((await readFile(pidFile, 'utf8')).trim())
  process.kill(pid, 'SIGUSR1')
  const me = testPeerId(1)
  await expectScreen(t, 'ready', [`${me} | tor ready`, (x) => !x.includes('45%')])
  type('/whoami')
  await expectScreen(t, '/whoami', [`Your peer ID: ${me}`])

  // A malformed peer ID is refused with the parser's message, in red; the line is kept for fixing.
  type('/add abc!')
  await expectScreen(t, 'the /add error', [RED("peer ID contains '!', which is not a valid character"), /^> \/add abc!/m], true)
  tmux('send-keys', '-t', 'tui', 'C-u')
  await expectScreen(t, 'the cleared input line', [lastRow('>')])

  // A valid peer ID the client refuses: the failed IntentResult shows in red.
  type(`/add ${testPeerId(4)}`)
  await expectScreen(t, 'the refused /add', [RED('Could not add the contact: no directory knows that peer ID')], true)

  // A message to the selected contact (Bob) comes back delivered; the input line is cleared.
  type('hello bob')
  await expectScreen(t, 'the delivered message', [/\d\d:\d\d me: hello bob ✓✓/, lastRow('>')])

  // Ctrl-N selects Carol, whose request can be accepted; Ctrl-P goes back to Bob.
  tmux('send-keys', '-t', 'tui', 'C-n')
  await expectScreen(t, 'Carol selected', ['Carol (request, online)', 'This peer wants to talk to you: /accept or /refuse'])
  type('/accept')
  await expectScreen(t, 'Carol accepted', ['Carol (accepted, online)', `Accepted ${testPeerId(3)}`])
  tmux('send-keys', '-t', 'tui', 'C-p')
  await expectScreen(t, 'Bob selected again', ['Bob (accepted, online)', /me: hello bob ✓✓/])

  // Tab moves focus to the contact list (the input line loses its cursor) and back.
  const cursor = /^> \x1b\[7m /m
  tmux('send-keys', '-t', 'tui', 'Tab')
  await expectScreen(t, 'focus on contacts', [(x) => !cursor.test(x)], true)
  tmux('send-keys', '-t', 'tui', 'Tab')
  await expectScreen(t, 'focus on the input line', [cursor], true)

  // Resize: everything is laid out again for 80×24. (tmux first crops the old screen, keeping its bottom rows,
  // so the checks are about borders and edges only a render at the new size draws.)
  tmux('resize-window', '-t', 'tui', '-x', '80', '-y', '24')
  await expectScreen(t, 'the resized layout', [
    (x) => rows(x).length === 24,
    (x) => /^lq Contacts q+klq Bob \(accepted, online\) q+k$/.test(rows(x)[0] ?? '') && rows(x)[0]!.length === 80,
    (x) => /^mq{22}jmq{54}j$/.test(rows(x)[19] ?? ''),
    (x) => (rows(x)[20] ?? '').startsWith(`${me} | tor ready`),
    /me: hello bob ✓✓ +x$/m,
    lastRow('>'),
  ])

  // Ctrl-C: quit, stop the handle once, unsubscribe, restore the terminal, exit 0.
  tmux('send-keys', '-t', 'tui', 'C-c')
  await expectScreen(t, 'the clean exit', ['EXIT=', (x) => !x.includes('Contacts')])
  // Back on the normal screen the restored cursor may sit on its last row, so read the pane's history too.
  const all = tmux('capture-pane', '-p', '-S', '-', '-t', 'tui')
  t.true(all.includes('TUI-DONE stops=1 listeners=0'), all)
  t.true(all.includes('TTY-RESTORED'), all)
  t.true(all.includes('EXIT=0'), all)
  t.false(all.includes('Error on'), 'nothing but the TUI was written to the terminal')
})

test('keys map to view-model actions; Enter counts once; control and meta keys type nothing', (t) => {
  t.deepEqual(keyAction('\t', { full: 'tab' }), { type: 'key', key: 'tab' })
  t.deepEqual(keyAction(undefined, { full: 'C-n', ctrl: true }), { type: 'key', key: 'next-contact' })
  t.deepEqual(keyAction(undefined, { full: 'C-p', ctrl: true }), { type: 'key', key: 'prev-contact' })
  t.deepEqual(keyAction(undefined, { full: 'pageup' }), { type: 'key', key: 'pageup' })
  t.deepEqual(keyAction('\r', { full: 'enter' }), { type: 'submit' })
  t.is(keyAction('\r', { full: 'return' }), undefined)
  t.deepEqual(keyAction('\u0003', { full: 'C-c', ctrl: true }), { type: 'quit' })
  t.deepEqual(keyAction('é', { full: 'é' }), { type: 'edit', edit: { type: 'insert', text: 'é' } })
  t.deepEqual(keyAction(' ', { full: 'space' }), { type: 'edit', edit: { type: 'insert', text: ' ' } })
  t.is(keyAction('x', { full: 'M-x', meta: true }), undefined)
  t.is(keyAction('\u0001', { full: 'C-a', ctrl: true }), undefined)
  t.is(keyAction(undefined, { full: 'toString' }), undefined, 'no prototype keys')
})

test('validatePeerId wraps the protocol parser: canonical form or its message', (t) => {
  const id = testPeerId(5)
  t.deepEqual(validatePeerId(id.toUpperCase().replace(/-/g, ' ')), { ok: true, peerId: id })
  t.deepEqual(validatePeerId('abc!'), { ok: false, message: "peer ID contains '!', which is not a valid character" })
  const typo = id.slice(0, -1) + (id.endsWith('0') ? '1' : '0')
  t.deepEqual(validatePeerId(typo), { ok: false, message: 'peer ID checksum mismatch — check for a typo' })
})
