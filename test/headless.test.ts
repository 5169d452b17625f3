import test from 'ava'
import { readFileSync } from 'node:fs'
import { PassThrough, Writable } from 'node:stream'
import type { ClientEvent, ClientIntent } from '../src/client/api.js'
import { MAX_LINE_BYTES, parseCommand, runHeadless } from '../src/client/headless.js'
import { DirectoryError } from '../src/errors.js'
import { isCanonicalPeerId } from '../src/protocol/identity.js'
import { ClientDouble, testContact, testPeerId } from './fixtures/client-double.js'
import { seededRandom } from './helpers/random.js'

const BOB = testPeerId(2)
const CAROL = testPeerId(3)

/** Collects everything written, as text. */
class Sink extends Writable {
  text = ''
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.text += chunk.toString('utf8')
    callback()
  }
  lines(): Record<string, unknown>[] {
    return this.text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
  }
}

/** Runs headless mode over `chunks` (then EOF) and returns the output lines. */
async function run(chunks: (string | Uint8Array)[], double = new ClientDouble({ contacts: [testContact(BOB)] })) {
  const input = new PassThrough()
  const output = new Sink()
  const done = runHeadless(double, { input, output })
  for (const c of chunks) input.write(c)
  input.end()
  await done
  return { lines: output.lines(), text: output.text, double }
}

/** Waits for `ok` across event-loop turns (no timers), failing after `turns`. */
async function until(ok: () => boolean, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (ok()) return
    await new Promise((resolve) => setImmediate(resolve))
  }
  throw new Error('condition not reached')
}

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve))
}

test('each command becomes its intent (peer IDs canonical) and gets a result line echoing its ref', async (t) => {
  const sloppyBob = BOB.toUpperCase().replace(/-/g, ' ')
  const cases: [unknown, ClientIntent][] = [
    [{ cmd: 'add', peerId: CAROL, name: 'Carol', ref: 1 }, { cmd: 'add', peerId: CAROL, name: 'Carol' }],
    [{ cmd: 'add', peerId: sloppyBob, ref: 'a' }, { cmd: 'add', peerId: BOB }],
    [{ cmd: 'accept', peerId: CAROL, ref: 2.5 }, { cmd: 'accept', peerId: CAROL }],
    [{ cmd: 'refuse', peerId: CAROL, ref: -3 }, { cmd: 'refuse', peerId: CAROL }],
    [{ cmd: 'send', peerId: BOB, body: 'hi ✓ "quoted"\nline two', ref: 'x' }, { cmd: 'send', peerId: BOB, body: 'hi ✓ "quoted"\nline two' }],
    [{ cmd: 'contacts' }, { cmd: 'contacts' }],
    [{ cmd: 'history', peerId: BOB, limit: 1, ref: '' }, { cmd: 'history', peerId: BOB, limit: 1 }],
    [{ cmd: 'history', peerId: BOB }, { cmd: 'history', peerId: BOB }],
    [{ cmd: 'retry', peerId: BOB }, { cmd: 'retry', peerId: BOB }],
    [{ cmd: 'retry' }, { cmd: 'retry' }],
  ]
  const { lines, double } = await run([cases.map(([c]) => JSON.stringify(c) + '\n').join('')])
  t.deepEqual(double.intents, cases.map(([, intent]) => intent))
  const results = lines.filter((l) => l.type === 'result')
  t.is(results.length, cases.length)
  cases.forEach(([c], i) => {
    const ref = (c as { ref?: unknown }).ref
    if (ref === undefined) t.false('ref' in results[i]!)
    else t.is(results[i]!.ref, ref)
    t.is(results[i]!.ok, true)
  })
  t.deepEqual(results[4], { type: 'result', ref: 'x', ok: true, id: 'msg-1' }, 'send gives the message ID')
  t.deepEqual(Object.keys(results[0]!), ['type', 'ref', 'ok'], 'type first, then ref')
  t.is((results[5]!.contacts as unknown[]).length, 2)
  t.deepEqual(results[6]!.messages, [
    { peerId: BOB, id: 'msg-1', direction: 'out', body: 'hi ✓ "quoted"\nline two', at: double.now, status: 'sent' },
  ])
  t.is(double.stops, 1, 'EOF stops the handle')
  t.is(double.listenerCount, 0)
})

test('events between commands come out as lines, in order; the stop event is the last line', async (t) => {
  const double = new ClientDouble({ contacts: [testContact(BOB)] })
  const { lines } = await run([`{"cmd":"send","peerId":"${BOB}","body":"yo"}\n`], double)
  const types = lines.map((l) => l.type)
  t.deepEqual([...types].sort(), ['delivered', 'message', 'result', 'tor'])
  t.true(types.indexOf('message') < types.indexOf('result'), 'the message event is emitted during dispatch, before the result')
  t.deepEqual(lines.at(-1), { type: 'tor', state: 'stopped' })
})

const EVENTS: [ClientEvent, string][] = [
  [{ type: 'bootstrap', progress: 45, summary: 'Loading relay descriptors' }, '{"type":"bootstrap","progress":45,"summary":"Loading relay descriptors"}'],
  [{ type: 'tor', state: 'restarting', detail: 'tor exited' }, '{"type":"tor","state":"restarting","detail":"tor exited"}'],
  [{ type: 'ready', peerId: BOB, onion: 'x.onion' }, `{"type":"ready","peerId":"${BOB}","onion":"x.onion"}`],
  [{ type: 'published', seq: 7, directories: 2 }, '{"type":"published","seq":7,"directories":2}'],
  [{ type: 'presence', peerId: BOB, presence: 'online', rttMs: 412 }, `{"type":"presence","peerId":"${BOB}","presence":"online","rttMs":412}`],
  [{ type: 'request', peerId: BOB }, `{"type":"request","peerId":"${BOB}"}`],
  [{ type: 'delivered', peerId: BOB, id: 'AAAA' }, `{"type":"delivered","peerId":"${BOB}","id":"AAAA"}`],
  [{ type: 'error', code: 'ERR_SESSION_TIMEOUT', message: 'gone', peerId: BOB }, `{"type":"error","code":"ERR_SESSION_TIMEOUT","message":"gone","peerId":"${BOB}"}`],
  [
    { type: 'message', message: { peerId: BOB, id: 'AAAA', direction: 'in', body: 'a\u2028b\n', at: 1, status: 'received' } },
    `{"type":"message","message":{"peerId":"${BOB}","id":"AAAA","direction":"in","body":"a\\u2028b\\n","at":1,"status":"received"}}`,
  ],
  [
    { type: 'contact', contact: testContact(BOB) },
    `{"type":"contact","contact":{"peerId":"${BOB}","state":"accepted","presence":"online","rttMs":180,"safetyNumber":"11111 22222 33333","queued":0}}`,
  ],
]

test('every event type is written as exactly its documented line', async (t) => {
  const double = new ClientDouble()
  const input = new PassThrough()
  const output = new Sink()
  const done = runHeadless(double, { input, output })
  for (const [event] of EVENTS) double.emit(event)
  input.end()
  await done
  t.deepEqual(output.text.split('\n').slice(0, EVENTS.length), EVENTS.map(([, line]) => line))
})

/** The fields of each event type (required, optional), as in src/client/api.ts. */
const EVENT_FIELDS: Record<ClientEvent['type'], [string[], string[]]> = {
  bootstrap: [['progress', 'summary'], []],
  tor: [['state'], ['detail']],
  ready: [['peerId', 'onion'], []],
  published: [['seq', 'directories'], []],
  contact: [['contact'], []],
  presence: [['peerId', 'presence'], ['rttMs']],
  request: [['peerId'], []],
  message: [['message'], []],
  delivered: [['peerId', 'id'], []],
  error: [['code', 'message'], ['peerId']],
}

test('docs/HEADLESS.md: command examples parse; event examples cover every type, have its fields and print verbatim', async (t) => {
  const doc = readFileSync(new URL('../docs/HEADLESS.md', import.meta.url), 'utf8')
  const examples = doc.split('\n').filter((l) => l.startsWith('{"'))
  const commands = examples.filter((l) => l.startsWith('{"cmd"'))
  const events = examples.filter((l) => !l.startsWith('{"cmd"') && !l.startsWith('{"type":"result"') && !l.includes('"ref"'))
  t.is(commands.length, 9)
  for (const line of commands) t.true(parseCommand(line).ok, line)
  const types = new Set<string>()
  for (const line of events.filter((l) => !l.startsWith('{"type":"error","code":"ERR_DECODE"'))) {
    const { type, ...fields } = JSON.parse(line) as Record<string, unknown>
    t.true(typeof type === 'string' && Object.hasOwn(EVENT_FIELDS, type), line)
    const [required, optional] = EVENT_FIELDS[type as ClientEvent['type']]
    for (const f of required) t.true(f in fields, `${line}: ${f}`)
    for (const f of Object.keys(fields)) t.true(required.includes(f) || optional.includes(f), `${line}: ${f}`)
    types.add(type as string)
  }
  t.deepEqual([...types].sort(), Object.keys(EVENT_FIELDS).sort())
  const double = new ClientDouble()
  const input = new PassThrough()
  const output = new Sink()
  const done = runHeadless(double, { input, output })
  for (const line of events) double.emit(JSON.parse(line) as ClientEvent)
  input.end()
  await done
  t.deepEqual(output.text.split('\n').slice(0, events.length), events)
})

const TOO_DEEP = '['.repeat(MAX_LINE_BYTES)
const INVALID: [string, string, (string | number)?][] = [
  ['not json', 'ERR_DECODE'],
  ['{"cmd":"contacts"', 'ERR_DECODE'],
  [TOO_DEEP, 'ERR_DECODE'],
  ['[1,2]', 'ERR_INVALID_ARGUMENT'],
  ['"contacts"', 'ERR_INVALID_ARGUMENT'],
  ['null', 'ERR_INVALID_ARGUMENT'],
  ['42', 'ERR_INVALID_ARGUMENT'],
  ['{}', 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":5,"ref":9}', 'ERR_INVALID_ARGUMENT', 9],
  ['{"cmd":"frobnicate","ref":"r1"}', 'ERR_UNKNOWN_COMMAND', 'r1'],
  ['{"cmd":"toString"}', 'ERR_UNKNOWN_COMMAND'],
  ['{"cmd":"__proto__"}', 'ERR_UNKNOWN_COMMAND'],
  ['{"cmd":"CONTACTS"}', 'ERR_UNKNOWN_COMMAND'],
  [`{"cmd":"send","peerId":"${BOB}","ref":"m"}`, 'ERR_INVALID_ARGUMENT', 'm'],
  [`{"cmd":"send","peerId":"${BOB}","body":""}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"send","peerId":"${BOB}","body":5}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"send","peerId":"${BOB}","body":["hi"]}`, 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"send","body":"hi"}', 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"add","peerId":"abc!"}', 'ERR_PEER_ID_FORMAT'],
  ['{"cmd":"add","peerId":"abcd"}', 'ERR_PEER_ID_FORMAT'],
  [`{"cmd":"add","peerId":"${BOB.slice(0, -1)}${BOB.endsWith('0') ? '1' : '0'}"}`, 'ERR_PEER_ID_CHECKSUM'],
  [`{"cmd":"add","peerId":"${'a'.repeat(5000)}"}`, 'ERR_PEER_ID_FORMAT'],
  [`{"cmd":"add","peerId":"${BOB}","nmae":"Bob"}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"add","peerId":"${BOB}","name":null}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"add","peerId":"${BOB}","name":""}`, 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"contacts","__proto__":{"x":1}}', 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"contacts","constructor":1}', 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"history","peerId":"${BOB}","limit":0}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"history","peerId":"${BOB}","limit":1.5}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"history","peerId":"${BOB}","limit":"3"}`, 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"history","peerId":"${BOB}","limit":1e999}`, 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"retry","peerId":null}', 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"retry","peerId":7}', 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"contacts","ref":{}}', 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"contacts","ref":null}', 'ERR_INVALID_ARGUMENT'],
  [`{"cmd":"contacts","ref":"${'r'.repeat(257)}"}`, 'ERR_INVALID_ARGUMENT'],
  ['{"cmd":"quit","now":true}', 'ERR_INVALID_ARGUMENT'],
]

test('invalid lines each give one error line with a stable code (and the ref when readable); nothing is dispatched', async (t) => {
  const { lines, double } = await run([INVALID.map(([line]) => line + '\n').join('')])
  t.deepEqual(double.intents, [])
  const errors = lines.filter((l) => l.type === 'error')
  t.is(errors.length, INVALID.length)
  INVALID.forEach(([line, code, ref], i) => {
    const e = errors[i]!
    t.is(e.code, code, line.slice(0, 80))
    t.is(e.ref, ref, line.slice(0, 80))
    t.is(typeof e.message, 'string')
    t.true((e.message as string).length < 200, 'messages stay short whatever the input')
  })
  t.is(double.stops, 1)
})

test('line framing: oversized lines are refused whole, invalid UTF-8 is refused, CRLF and blank lines are fine', async (t) => {
  const ok = `{"cmd":"contacts"}`
  const exact = ok + ' '.repeat(MAX_LINE_BYTES - ok.length)
  const huge = 'x'.repeat(MAX_LINE_BYTES + 1)
  const chunks: (string | Uint8Array)[] = [
    exact + '\n',
    // An oversized line arriving in small pieces is reported once, then the next line works.
    ...Array.from({ length: 70 }, () => 'y'.repeat(1024)),
    '\n',
    huge + '\n',
    Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d, 0x0a),
    '\n   \n\r\n',
    ok + '\r\n',
    '\ufeff' + ok + '\n', // a UTF-8 byte order mark is dropped by the decoder
    ok, // no final newline: still a line at EOF
  ]
  const { lines, double } = await run(chunks)
  t.deepEqual(
    lines.map((l) => (l.type === 'error' ? l.code : l.type)),
    ['result', 'ERR_TOO_LARGE', 'ERR_TOO_LARGE', 'ERR_DECODE', 'result', 'result', 'result', 'tor'],
  )
  t.is(double.intents.length, 4)
})

test('chunk boundaries anywhere (also inside UTF-8 sequences) give the same output', async (t) => {
  const input = [
    `{"cmd":"send","peerId":"${BOB}","body":"héllo ✓ 👋","ref":1}`,
    'garbage',
    `{"cmd":"history","peerId":"${BOB}"}`,
  ].join('\n') + '\n'
  const bytes = new TextEncoder().encode(input)
  const whole = await run([bytes])
  const random = seededRandom(7)
  for (let trial = 0; trial < 50; trial++) {
    const chunks: Uint8Array[] = []
    for (let i = 0; i < bytes.length; ) {
      const n = 1 + random.int(8)
      chunks.push(bytes.slice(i, i + n))
      i += n
    }
    t.deepEqual((await run(chunks)).text, whole.text)
  }
  t.log('50 random chunkings')
})

test('quit stops the handle once and ignores what follows; its result is written first', async (t) => {
  const { lines, double } = await run([`{"cmd":"quit","ref":"q"}\n{"cmd":"contacts"}\n`])
  t.deepEqual(double.intents, [{ cmd: 'quit' }])
  t.deepEqual(lines, [{ type: 'result', ref: 'q', ok: true }, { type: 'tor', state: 'stopped' }])
  t.is(double.stops, 1)
  t.is(double.listenerCount, 0)
})

test('a refused intent is a result with ok:false; a dispatch that throws is reported, not a crash', async (t) => {
  const double = new ClientDouble({ contacts: [testContact(BOB)] })
  double.answers.add = { ok: false, code: 'ERR_DIRECTORY_NOT_FOUND', message: 'no record' }
  double.answers.retry = () => {
    throw new DirectoryError('ERR_DIRECTORY_UNREACHABLE', 'directory down')
  }
  double.answers.contacts = () => {
    throw new TypeError('oops')
  }
  const { lines } = await run([`{"cmd":"add","peerId":"${CAROL}"}\n{"cmd":"retry"}\n{"cmd":"contacts","ref":3}\n`], double)
  t.deepEqual(lines.slice(0, 3), [
    { type: 'result', ok: false, code: 'ERR_DIRECTORY_NOT_FOUND', message: 'no record' },
    { type: 'result', ok: false, code: 'ERR_DIRECTORY_UNREACHABLE', message: 'directory down' },
    { type: 'result', ref: 3, ok: false, code: 'ERR_INTERNAL', message: 'internal error: oops' },
  ])
})

test('a failing stop is reported as an error line and rejects runHeadless with the typed error', async (t) => {
  const double = new ClientDouble()
  double.stop = async () => {
    throw new TypeError('stuck')
  }
  const input = new PassThrough()
  const output = new Sink()
  const done = runHeadless(double, { input, output })
  input.end()
  const err = await t.throwsAsync(done)
  t.is((err as { code?: unknown }).code, 'ERR_INTERNAL')
  t.deepEqual(output.lines(), [{ type: 'error', code: 'ERR_INTERNAL', message: 'stop failed: stuck' }])
})

test('backpressure: no further command is read while the output is full', async (t) => {
  const double = new ClientDouble()
  const held: (() => void)[] = []
  let holding = true
  let written = ''
  const output = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, callback) {
      written += chunk.toString('utf8')
      if (holding) held.push(() => callback())
      else callback()
    },
  })
  const input = new PassThrough()
  const done = runHeadless(double, { input, output })
  input.end('{"cmd":"contacts"}\n{"cmd":"retry"}\n{"cmd":"contacts"}\n')
  await until(() => double.intents.length === 1 && held.length === 1)
  // Many event-loop turns later, still one command: the reader waits for 'drain'.
  await turns(500)
  t.is(double.intents.length, 1)
  held.shift()!()
  await until(() => double.intents.length === 2)
  t.deepEqual(double.intents.map((i) => i.cmd), ['contacts', 'retry'])
  holding = false
  for (const release of held.splice(0)) release()
  await done
  t.is(written.split('\n').filter((l) => l.startsWith('{"type":"result"')).length, 3)
})

test('an output that fails (reader gone) stops the handle and ends the run without waiting for EOF', async (t) => {
  const double = new ClientDouble()
  const output = new Writable({
    write(_chunk, _encoding, callback) {
      callback(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))
    },
  })
  const input = new PassThrough() // never ended
  const done = runHeadless(double, { input, output })
  input.write('{"cmd":"contacts"}\n')
  await done
  t.is(double.stops, 1)
  t.true(input.destroyed)
})

test('seeded garbage: thousands of hostile lines, one answer line each, only valid intents reach the client', async (t) => {
  const random = seededRandom(0x5eed)
  const pick = <T>(xs: readonly T[]): T => xs[random.int(xs.length)]!
  const valid = [
    `{"cmd":"add","peerId":"${CAROL}","name":"Carol"}`,
    `{"cmd":"send","peerId":"${BOB}","body":"hello","ref":1}`,
    `{"cmd":"history","peerId":"${BOB}","limit":5}`,
    `{"cmd":"accept","peerId":"${BOB}"}`,
    '{"cmd":"contacts","ref":"r"}',
    '{"cmd":"retry"}',
  ]
  const keys = ['cmd', 'peerId', 'body', 'name', 'limit', 'ref', '__proto__', 'constructor', '']
  const values = (): unknown =>
    pick([null, true, 0, -1, 1.5, 1e308, '', 'x'.repeat(300), BOB, 'contacts', 'send', [], {}, [BOB], { cmd: 'quit' }])
  const encoder = new TextEncoder()
  const lines: Uint8Array[] = []
  const CASES = 4000
  for (let i = 0; i < CASES; i++) {
    const kind = random.next()
    if (kind < 0.3) {
      // Random bytes (no line feed).
      const n = random.int(120)
      lines.push(Uint8Array.from({ length: n }, () => {
        const b = random.int(256)
        return b === 0x0a ? 0x20 : b
      }))
    } else if (kind < 0.7) {
      // A valid command with a few characters replaced, deleted or inserted.
      let s = pick(valid)
      for (let m = 1 + random.int(3); m > 0; m--) {
        const at = random.int(s.length)
        const ch = pick(['"', '{', '}', ':', ',', '\\', 'a', '0', ' ', '\u0000', 'é', '\ud800'])
        const op = random.next()
        s = op < 0.4 ? s.slice(0, at) + ch + s.slice(at + 1) : op < 0.7 ? s.slice(0, at) + s.slice(at + 1) : s.slice(0, at) + ch + s.slice(at)
      }
      lines.push(encoder.encode(s.replace(/\n/g, ' ')))
    } else {
      // A JSON object of random keys and values.
      const o: Record<string, unknown> = {}
      for (let k = random.int(5); k > 0; k--) o[pick(keys)] = k === 1 ? pick(['send', 'add', 'history', 'frob', 5]) : values()
      if (random.next() < 0.5) o.cmd = pick(['send', 'add', 'history', 'accept', 'refuse', 'retry', 'contacts', 'nope'])
      lines.push(encoder.encode(JSON.stringify(o)))
    }
  }
  // What counts as a line to answer: everything that is not valid UTF-8 or not blank after trimming.
  const strict = new TextDecoder('utf-8', { fatal: true })
  const answered = lines.filter((b) => {
    try {
      return strict.decode(b).replace(/\r$/, '').trim() !== ''
    } catch {
      return true
    }
  }).length
  const chunks = lines.flatMap((l) => [l, Uint8Array.of(0x0a)])
  const { lines: out, double } = await run(chunks, new ClientDouble({ contacts: [testContact(BOB)] }))
  const answers = out.filter((l) => l.type === 'result' || (l.type === 'error' && typeof l.code === 'string' && !('peerId' in l)))
  t.is(answers.length, answered)
  t.true(out.every((l) => typeof l.type === 'string'))
  t.is(double.stops, 1)
  const codes = new Set(out.filter((l) => l.type === 'error').map((l) => l.code))
  t.true([...codes].every((c) => typeof c === 'string' && /^ERR_[A-Z_]+$/.test(c)), [...codes].join(','))
  for (const intent of double.intents) {
    if ('peerId' in intent && intent.peerId !== undefined) t.true(isCanonicalPeerId(intent.peerId))
    if (intent.cmd === 'send') t.true(typeof intent.body === 'string' && intent.body !== '')
  }
  t.log(`${CASES} seeded lines (seed 0x5eed): ${answered} answered, ${double.intents.length} dispatched, codes ${[...codes].sort().join(' ')}`)
})

test('runHeadless refuses streams that are not streams', async (t) => {
  const double = new ClientDouble()
  const notStream = { on() {} } as unknown as PassThrough
  await t.throwsAsync(runHeadless(double, { input: notStream, output: new Sink() }), { code: 'ERR_INVALID_ARGUMENT' })
  await t.throwsAsync(runHeadless(double, { input: new PassThrough(), output: notStream }), { code: 'ERR_INVALID_ARGUMENT' })
  t.is(double.stops, 0)
})
