import test from 'ava'
import { DecodeError, InvalidArgumentError } from '../src/errors.js'
import { concatBytes } from '../src/protocol/bytes.js'
import { AEAD_TAG_LENGTH, encodeFrame, FrameDecoder, MAX_FRAME_CIPHERTEXT } from '../src/protocol/framing.js'
import { seededRandom } from './helpers/random.js'

/** Feeds `stream` cut at the given sizes (cycled) and returns all frames. */
function decodeInChunks(stream: Uint8Array, sizes: (i: number) => number): Uint8Array[] {
  const d = new FrameDecoder()
  const out: Uint8Array[] = []
  for (let pos = 0, i = 0; pos < stream.length; i++) {
    const n = Math.max(1, sizes(i))
    out.push(...d.push(stream.subarray(pos, pos + n)))
    pos += n
  }
  return out
}

test('encodeFrame writes a 2-byte big-endian length', (t) => {
  const ct = new Uint8Array(0x1234).fill(7)
  const f = encodeFrame(ct)
  t.is(f.length, 0x1236)
  t.deepEqual([f[0], f[1]], [0x12, 0x34])
  t.deepEqual(f.subarray(2), ct)
  t.deepEqual([...encodeFrame(new Uint8Array(MAX_FRAME_CIPHERTEXT)).subarray(0, 2)], [0xff, 0xff])
})

test('encodeFrame rejects ciphertexts outside 16..65535 and non-bytes', (t) => {
  for (const n of [0, 1, AEAD_TAG_LENGTH - 1, MAX_FRAME_CIPHERTEXT + 1]) {
    t.throws(() => encodeFrame(new Uint8Array(n)), { instanceOf: InvalidArgumentError }, `length ${n}`)
  }
  t.throws(() => encodeFrame('abc' as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
})

test('decoder accepts any chunking: 1 byte, split prefixes, many frames per chunk, whole stream (seeded)', (t) => {
  const rng = seededRandom(0xf4a3e)
  let cases = 0
  for (let round = 0; round < 200; round++) {
    const frames = Array.from({ length: 1 + rng.int(8) }, () => {
      // Mostly small, sometimes the extremes.
      const pick = rng.next()
      const n = pick < 0.1 ? AEAD_TAG_LENGTH : pick < 0.15 ? MAX_FRAME_CIPHERTEXT : AEAD_TAG_LENGTH + rng.int(600)
      return rng.bytes(n)
    })
    const stream = concatBytes(...frames.map(encodeFrame))
    const chunkings: ((i: number) => number)[] = [
      () => 1,
      () => stream.length,
      () => 1 + rng.int(5),
      () => 1 + rng.int(2000),
      (i) => (i % 2 === 0 ? 1 : 3), // keeps splitting the length prefix
    ]
    for (const sizes of chunkings) {
      t.deepEqual(decodeInChunks(stream, sizes), frames)
      cases++
    }
  }
  t.log(`${cases} chunked streams decoded`)
  t.is(cases, 1000)
})

test('decoder returns copies that do not alias the pushed chunk', (t) => {
  const chunk = encodeFrame(new Uint8Array(20).fill(1))
  const [frame] = new FrameDecoder().push(chunk)
  chunk.fill(9)
  t.deepEqual(frame, new Uint8Array(20).fill(1))
})

test('too-short length is rejected before the body arrives, and the decoder stays failed', (t) => {
  for (const len of [0, 1, AEAD_TAG_LENGTH - 1]) {
    const d = new FrameDecoder()
    t.deepEqual(d.push(Uint8Array.of(len >> 8)), [])
    const err = t.throws(() => d.push(Uint8Array.of(len & 0xff)), { instanceOf: DecodeError })
    t.is(err?.code, 'ERR_DECODE')
    t.true(d.failed)
    // Every later push throws the very same error, even with valid data or an empty chunk.
    t.is(t.throws(() => d.push(encodeFrame(new Uint8Array(16)))), err)
    t.is(t.throws(() => d.push(new Uint8Array(0))), err)
  }
})

test('oversized length is rejected with ERR_FRAME_TOO_LARGE before buffering the body', (t) => {
  const d = new FrameDecoder({ maxLength: 1000 })
  t.deepEqual(d.push(encodeFrame(new Uint8Array(1000))).map((f) => f.length), [1000])
  const err = t.throws(() => d.push(Uint8Array.of(0x03, 0xe9)), { instanceOf: DecodeError })
  t.is(err?.code, 'ERR_FRAME_TOO_LARGE')
  t.is(t.throws(() => d.push(Uint8Array.of(0))), err)
  t.throws(() => new FrameDecoder({ maxLength: 15 }), { instanceOf: InvalidArgumentError })
  t.throws(() => new FrameDecoder({ maxLength: 65536 }), { instanceOf: InvalidArgumentError })
})

test('a bad length after good frames in one chunk fails the whole push', (t) => {
  const d = new FrameDecoder()
  const err = t.throws(() => d.push(concatBytes(encodeFrame(new Uint8Array(16)), Uint8Array.of(0, 3))), { instanceOf: DecodeError })
  t.is(err?.code, 'ERR_DECODE')
})

test('idle tells whether the stream stopped on a frame boundary', (t) => {
  const d = new FrameDecoder()
  t.true(d.idle)
  const f = encodeFrame(new Uint8Array(16))
  d.push(f.subarray(0, 1))
  t.false(d.idle)
  d.push(f.subarray(1, 5))
  t.false(d.idle)
  d.push(f.subarray(5))
  t.true(d.idle)
})

test('push rejects non-bytes with an argument error and stays usable', (t) => {
  const d = new FrameDecoder()
  t.throws(() => d.push([1, 2] as unknown as Uint8Array), { instanceOf: InvalidArgumentError })
  t.is(d.push(encodeFrame(new Uint8Array(16))).length, 1)
})

test('seeded garbage never crashes the decoder (only DecodeError)', (t) => {
  const rng = seededRandom(42)
  let cases = 0
  let failures = 0
  for (let i = 0; i < 5000; i++) {
    const d = new FrameDecoder({ maxLength: 16 + rng.int(MAX_FRAME_CIPHERTEXT - 15) })
    const garbage = rng.bytes(rng.int(300))
    try {
      for (let pos = 0; pos < garbage.length; ) {
        const n = 1 + rng.int(40)
        for (const f of d.push(garbage.subarray(pos, pos + n))) t.true(f.length >= AEAD_TAG_LENGTH)
        pos += n
      }
    } catch (err) {
      failures++
      if (!(err instanceof DecodeError)) throw err
    }
    cases++
  }
  t.log(`${cases} garbage streams, ${failures} rejected with DecodeError`)
  t.is(cases, 5000)
})

test('1-byte chunks of a large stream stay linear (no quadratic buffering)', (t) => {
  const frames = Array.from({ length: 16 }, () => new Uint8Array(MAX_FRAME_CIPHERTEXT).fill(3))
  const stream = concatBytes(...frames.map(encodeFrame)) // ~1 MiB
  const d = new FrameDecoder()
  let got = 0
  const start = performance.now()
  for (let i = 0; i < stream.length; i++) got += d.push(stream.subarray(i, i + 1)).length
  const ms = performance.now() - start
  t.is(got, 16)
  t.log(`${stream.length} one-byte pushes in ${ms.toFixed(0)} ms`)
  // Quadratic re-concatenation would copy ~5e11 bytes here; linear work finishes in well under a second.
  t.true(ms < 20_000)
})
