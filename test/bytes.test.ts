import test from 'ava'
import { concatBytes, equalBytes, fromBase64url, fromHex, fromUtf8, toBase64url, toHex, utf8 } from '../src/protocol/bytes.js'
import { DecodeError } from '../src/errors.js'

test('base64url round-trips every length and matches Buffer', (t) => {
  for (let n = 0; n < 70; n++) {
    const b = new Uint8Array(n).map((_, i) => (i * 37 + n) & 0xff)
    const s = toBase64url(b)
    t.is(s, Buffer.from(b).toString('base64url'))
    t.deepEqual(fromBase64url(s), b)
  }
})

test('base64url rejects padding, bad characters, impossible lengths and non-canonical tails', (t) => {
  // 'AB' and 'AAB' carry non-zero trailing bits: each byte string has exactly one accepted encoding.
  for (const bad of ['AA==', 'A', 'AB+/', 'AB C', 'AB\u00e9', 'AB', 'AAB']) {
    t.throws(() => fromBase64url(bad), { instanceOf: DecodeError }, bad)
  }
  t.deepEqual(fromBase64url('AA'), new Uint8Array([0]))
  t.throws(() => fromBase64url('AAAA', 2), { instanceOf: DecodeError })
})

test('hex, concat, equal, utf8', (t) => {
  t.is(toHex(new Uint8Array([0, 255, 16])), '00ff10')
  t.deepEqual(fromHex('00ff10'), new Uint8Array([0, 255, 16]))
  t.throws(() => fromHex('0g'), { instanceOf: DecodeError })
  t.deepEqual(concatBytes(new Uint8Array([1]), new Uint8Array([2, 3])), new Uint8Array([1, 2, 3]))
  t.true(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2])))
  t.false(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3])))
  t.false(equalBytes(new Uint8Array([1]), new Uint8Array([1, 3])))
  t.is(fromUtf8(utf8('héllo')), 'héllo')
  t.throws(() => fromUtf8(new Uint8Array([0xc3, 0x28])), { instanceOf: DecodeError })
})
