import test from 'ava'
import { DecodeError, InvalidArgumentError } from '../src/errors.js'
import { concatBytes, fromHex, toHex, utf8 } from '../src/protocol/bytes.js'
import { MAX_FRAME_PLAINTEXT } from '../src/protocol/framing.js'
import {
  decodeMessage,
  encodeMessage,
  MAX_ACK_IDS,
  MAX_BYE_DETAIL_BYTES,
  MAX_CAPABILITIES,
  MAX_CLIENT_NAME_BYTES,
  MAX_TEXT_BYTES,
  type Message,
  newMessageId,
} from '../src/protocol/messages.js'
import { seededRandom } from './helpers/random.js'

const ID_A = fromHex('00112233445566778899aabbccddeeff')
const ID_B = fromHex('ffeeddccbbaa99887766554433221100')

/** Golden vectors: the byte layout documented in docs/PROTOCOL.md, "Messages". */
const VECTORS: [Message, string][] = [
  [
    { type: 'hello', clientName: 'p2pmess', clientVersion: '0.1.0', capabilities: ['ack', 'ping'] },
    '0101' + '07' + toHex(utf8('p2pmess')) + '05' + toHex(utf8('0.1.0')) + '02' + '03' + toHex(utf8('ack')) + '04' + toHex(utf8('ping')),
  ],
  [
    { type: 'text', id: ID_A, seq: 7, sentAt: 1764000000000, body: 'hé' },
    '0102' + toHex(ID_A) + '00000007' + '0000019ab697e800' + '0003' + '68c3a9',
  ],
  [{ type: 'ack', ids: [ID_A, ID_B] }, '0103' + '02' + toHex(ID_A) + toHex(ID_B)],
  [{ type: 'ping', nonce: 0xdeadbeef, sentAt: 1 }, '0104' + 'deadbeef' + '0000000000000001'],
  [{ type: 'pong', nonce: 1, pingSentAt: 2, sentAt: 2 ** 53 - 1 }, '0105' + '00000001' + '0000000000000002' + '001fffffffffffff'],
  [{ type: 'bye', reason: 'shutdown', detail: '' }, '0106' + '01' + '00'],
  [{ type: 'bye', reason: 'timeout', detail: 'idle' }, '0106' + '03' + '04' + toHex(utf8('idle'))],
]

test('golden vectors encode and decode exactly', (t) => {
  for (const [m, hex] of VECTORS) {
    t.is(toHex(encodeMessage(m)), hex, m.type)
    t.deepEqual(decodeMessage(fromHex(hex)), m, m.type)
  }
})

test('round-trips edge values of every type', (t) => {
  const big = 'x'.repeat(MAX_TEXT_BYTES)
  const messages: Message[] = [
    { type: 'hello', clientName: 'n'.repeat(MAX_CLIENT_NAME_BYTES), clientVersion: 'v', capabilities: [] },
    { type: 'hello', clientName: '名前', clientVersion: '1', capabilities: Array.from({ length: MAX_CAPABILITIES }, (_, i) => `cap-${i}.x_y`) },
    { type: 'text', id: ID_A, seq: 0, sentAt: 0, body: big },
    { type: 'text', id: ID_B, seq: 0xffffffff, sentAt: Number.MAX_SAFE_INTEGER, body: 'line 1\n\tline 2 😀' },
    { type: 'ack', ids: Array.from({ length: MAX_ACK_IDS }, () => ID_A) },
    { type: 'bye', reason: 'protocol-error', detail: 'é'.repeat(MAX_BYE_DETAIL_BYTES / 2) },
    { type: 'bye', reason: 'done', detail: '' },
  ]
  for (const m of messages) {
    const bytes = encodeMessage(m)
    t.true(bytes.length <= MAX_FRAME_PLAINTEXT)
    t.deepEqual(decodeMessage(bytes), m)
  }
})

test('decoded IDs are copies, not views of the input', (t) => {
  const bytes = encodeMessage({ type: 'ack', ids: [ID_A] })
  const m = decodeMessage(bytes)
  bytes.fill(0)
  t.deepEqual(m, { type: 'ack', ids: [ID_A] })
})

test('unknown version and unknown type have their own codes', (t) => {
  for (const v of [0, 2, 255]) {
    t.is(t.throws(() => decodeMessage(Uint8Array.of(v, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), { instanceOf: DecodeError })?.code, 'ERR_UNSUPPORTED_VERSION')
  }
  for (const type of [0, 7, 255]) {
    t.is(t.throws(() => decodeMessage(Uint8Array.of(1, type)), { instanceOf: DecodeError })?.code, 'ERR_UNKNOWN_MESSAGE_TYPE')
  }
})

test('every truncation and any trailing byte is ERR_DECODE', (t) => {
  let cases = 0
  for (const [, hex] of VECTORS) {
    const full = fromHex(hex)
    for (let n = 0; n < full.length; n++) {
      t.is(t.throws(() => decodeMessage(full.subarray(0, n)), { instanceOf: DecodeError })?.code, 'ERR_DECODE')
      cases++
    }
    t.is(t.throws(() => decodeMessage(concatBytes(full, Uint8Array.of(0))), { instanceOf: DecodeError })?.code, 'ERR_DECODE')
    cases++
  }
  t.log(`${cases} truncated/extended encodings rejected`)
})

test('over-long fields are ERR_TOO_LARGE, checked from the length before reading', (t) => {
  const tooLarge = (bytes: Uint8Array): void => {
    t.is(t.throws(() => decodeMessage(bytes), { instanceOf: DecodeError })?.code, 'ERR_TOO_LARGE', toHex(bytes.subarray(0, 24)))
  }
  // text body length MAX+1 (body bytes absent: the length alone condemns it)
  tooLarge(concatBytes(Uint8Array.of(1, 2), ID_A, new Uint8Array(12), Uint8Array.of((MAX_TEXT_BYTES + 1) >> 8, (MAX_TEXT_BYTES + 1) & 0xff)))
  tooLarge(Uint8Array.of(1, 1, MAX_CLIENT_NAME_BYTES + 1))
  tooLarge(Uint8Array.of(1, 1, 1, 0x61, 33))
  tooLarge(Uint8Array.of(1, 1, 1, 0x61, 1, 0x31, MAX_CAPABILITIES + 1))
  tooLarge(Uint8Array.of(1, 1, 1, 0x61, 1, 0x31, 1, 33))
  tooLarge(Uint8Array.of(1, 3, MAX_ACK_IDS + 1))
  tooLarge(Uint8Array.of(1, 6, 0, MAX_BYE_DETAIL_BYTES + 1))
})

test('invalid UTF-8, control characters, empty required fields, bad enums and huge timestamps are ERR_DECODE', (t) => {
  const bad = (bytes: Uint8Array, why: string): void => {
    t.is(t.throws(() => decodeMessage(bytes), { instanceOf: DecodeError }, why)?.code, 'ERR_DECODE', why)
  }
  const text = (body: Uint8Array): Uint8Array =>
    concatBytes(Uint8Array.of(1, 2), ID_A, new Uint8Array(12), Uint8Array.of(body.length >> 8, body.length & 0xff), body)
  bad(text(Uint8Array.of(0xc3, 0x28)), 'invalid UTF-8')
  bad(text(Uint8Array.of(0xed, 0xa0, 0x80)), 'encoded surrogate')
  bad(text(Uint8Array.of(0xc0, 0x80)), 'overlong NUL')
  bad(text(Uint8Array.of(0x61, 0x1b, 0x5b, 0x32, 0x4a)), 'ESC in body')
  bad(text(Uint8Array.of(0xc2, 0x9b)), 'C1 CSI in body')
  bad(text(new Uint8Array(0)), 'empty body')
  bad(Uint8Array.of(1, 1, 0), 'empty clientName')
  bad(Uint8Array.of(1, 1, 2, 0x61, 0x0a, 1, 0x31, 0), 'LF in clientName')
  bad(Uint8Array.of(1, 1, 1, 0x61, 1, 0x31, 1, 1, 0x41), 'upper-case capability')
  bad(Uint8Array.of(1, 1, 1, 0x61, 1, 0x31, 2, 1, 0x61, 1, 0x61), 'duplicate capability')
  bad(Uint8Array.of(1, 3, 0), 'empty ack')
  bad(Uint8Array.of(1, 6, 4, 0), 'unknown bye reason')
  bad(concatBytes(Uint8Array.of(1, 4), new Uint8Array(4), Uint8Array.of(0, 0x20, 0, 0, 0, 0, 0, 0)), 'timestamp 2^53')
})

test('encoder rejects bad fields with InvalidArgumentError', (t) => {
  const bad: unknown[] = [
    null,
    { type: 'nope' },
    { type: 'hello', clientName: '', clientVersion: '1', capabilities: [] },
    { type: 'hello', clientName: 'a', clientVersion: '1', capabilities: ['A'] },
    { type: 'hello', clientName: 'a', clientVersion: '1', capabilities: ['a', 'a'] },
    { type: 'hello', clientName: 'a', clientVersion: '1', capabilities: 'ack' },
    { type: 'text', id: new Uint8Array(15), seq: 0, sentAt: 0, body: 'x' },
    { type: 'text', id: ID_A, seq: -1, sentAt: 0, body: 'x' },
    { type: 'text', id: ID_A, seq: 2 ** 32, sentAt: 0, body: 'x' },
    { type: 'text', id: ID_A, seq: 0, sentAt: 1.5, body: 'x' },
    { type: 'text', id: ID_A, seq: 0, sentAt: 2 ** 53, body: 'x' },
    { type: 'text', id: ID_A, seq: 0, sentAt: 0, body: '' },
    { type: 'text', id: ID_A, seq: 0, sentAt: 0, body: 'x'.repeat(MAX_TEXT_BYTES + 1) },
    { type: 'text', id: ID_A, seq: 0, sentAt: 0, body: '\ud800' },
    { type: 'text', id: ID_A, seq: 0, sentAt: 0, body: 'a\u0007' },
    { type: 'ack', ids: [] },
    { type: 'ack', ids: [new Uint8Array(16), 'x'] },
    { type: 'ping', nonce: 'x', sentAt: 0 },
    { type: 'pong', nonce: 0, pingSentAt: Number.NaN, sentAt: 0 },
    { type: 'bye', reason: 'whatever', detail: '' },
    { type: 'bye', reason: 'done', detail: 'é'.repeat(101) },
  ]
  for (const m of bad) t.throws(() => encodeMessage(m as Message), { instanceOf: InvalidArgumentError }, JSON.stringify(m))
  t.throws(() => decodeMessage('01' as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
})

test('newMessageId: 16 random bytes, injectable source, checked output', (t) => {
  const a = newMessageId()
  t.is(a.length, 16)
  t.notDeepEqual(a, newMessageId())
  t.deepEqual(newMessageId((n) => new Uint8Array(n).fill(5)), new Uint8Array(16).fill(5))
  t.throws(() => newMessageId(() => new Uint8Array(8)), { instanceOf: InvalidArgumentError })
})

test('seeded garbage and mutated messages: only DecodeError, and whatever decodes re-encodes identically', (t) => {
  const rng = seededRandom(0x5eed)
  let cases = 0
  let accepted = 0
  const check = (bytes: Uint8Array): void => {
    cases++
    let m: Message
    try {
      m = decodeMessage(bytes)
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err
      return
    }
    accepted++
    t.deepEqual(encodeMessage(m), bytes) // canonical: one accepted encoding per message
  }
  for (let i = 0; i < 5000; i++) {
    // Random bytes behind a valid version/type header so the field parsers are reached.
    check(concatBytes(Uint8Array.of(1, 1 + rng.int(6)), rng.bytes(rng.int(64))))
    check(rng.bytes(rng.int(40)))
  }
  for (let i = 0; i < 5000; i++) {
    const base = fromHex(VECTORS[rng.int(VECTORS.length)]![1])
    const mutated = base.slice()
    for (let k = 1 + rng.int(3); k > 0; k--) {
      const at = rng.int(mutated.length)
      mutated[at] = mutated[at]! ^ (1 << rng.int(8))
    }
    check(mutated)
  }
  t.log(`${cases} hostile inputs, ${accepted} decoded (all canonical), the rest DecodeError`)
  t.is(cases, 15000)
})
