/**
 * Seeded hostile and random bodies against the directory: every one gets a documented 4xx error, nothing is
 * stored, and the server keeps answering. Failures reproduce from the printed seed.
 */
import test from 'ava'
import { API_ERRORS } from '../directory/app.js'
import { createMemoryStore } from '../directory/store.js'
import { utf8 } from '../src/protocol/bytes.js'
import { FakeClock, errorCode, makePeer, makeRecord, send, serveApp } from './directory-helpers.js'
import { seededRandom, type SeededRandom } from './helpers/random.js'

const SEED = 0x5eed_d1
const RANDOM_CASES = 600

const WRONG_VALUES: unknown[] = [null, true, false, 0, -1, 1.5, 2 ** 53, -0, '', 'x'.repeat(3000), [], {}, [1], { a: 1 }, '\u0000', '\ud800']

function hostileBodies(valid: Record<string, unknown>): [string, string | Uint8Array][] {
  const text = JSON.stringify(valid)
  const cases: [string, string | Uint8Array][] = [
    ["100k '['", '['.repeat(100_000)],
    ["100k '{\"a\":'", '{"a":'.repeat(100_000)],
    ['huge string', `"${'a'.repeat(1 << 20)}"`],
    ['1e309', '1e309'],
    ['record with seq 1e309', text.replace(/"seq":\d+/, '"seq":1e309')],
    ['record with expires -1e309', text.replace(/"expires":\d+/, '"expires":-1e309')],
    ['NaN literal', '{"v":NaN}'],
    ['__proto__ key', text.replace('{', '{"__proto__":{"v":1},')],
    ['only __proto__', '{"__proto__":{"v":1,"id":"x"}}'],
    ['constructor key', text.replace('{', '{"constructor":{"prototype":{}},')],
    ['duplicate seq key', text.replace('}', `,"seq":${Number(valid['seq']) + 1}}`)],
    ['lone surrogate escape', text.replace(/"onion":"[^"]*"/, '"onion":"\\ud800"')],
    ['non-UTF-8 bytes', new Uint8Array([0x7b, 0x22, 0x76, 0x22, 0x3a, 0xc3, 0x28, 0x7d])],
    ['overlong UTF-8', new Uint8Array([0x22, 0xc0, 0xaf, 0x22])],
    ['NUL bytes', new Uint8Array(100)],
    ['null', 'null'],
    ['string', '"record"'],
    ['number', '42'],
    ['nested array 2000 deep', '['.repeat(2000) + ']'.repeat(2000)],
  ]
  for (const field of Object.keys(valid)) {
    for (const [i, wrong] of WRONG_VALUES.entries()) {
      cases.push([`${field} = wrong value #${i}`, JSON.stringify({ ...valid, [field]: wrong })])
    }
    const { [field]: _dropped, ...without } = valid
    cases.push([`${field} missing`, JSON.stringify(without)])
  }
  return cases
}

/** Random JSON value of bounded depth. */
function randomJson(random: SeededRandom, depth: number): unknown {
  const pick = random.int(depth > 0 ? 7 : 4)
  const randomString = (): string => String.fromCharCode(...Array.from({ length: random.int(20) }, () => random.int(0x3000)))
  switch (pick) {
    case 0:
      return null
    case 1:
      return random.next() < 0.5
    case 2:
      return (random.next() - 0.5) * 10 ** random.int(30)
    case 3:
      return randomString()
    case 4:
      return Array.from({ length: random.int(5) }, () => randomJson(random, depth - 1))
    default:
      return Object.fromEntries(Array.from({ length: random.int(9) }, () => [randomString(), randomJson(random, depth - 1)]))
  }
}

/** Inserted whitespace between tokens would leave the record valid, so insertions avoid it. */
const nonWhitespace = (byte: number): number => ([0x09, 0x0a, 0x0d, 0x20].includes(byte) ? 0x41 : byte)

function randomBody(random: SeededRandom, validText: string): Uint8Array {
  const kind = random.int(4)
  if (kind === 0) return Uint8Array.from({ length: random.int(5000) }, () => random.int(256))
  if (kind === 1) return utf8(JSON.stringify(randomJson(random, 5)) ?? 'null')
  // Mutations of a valid record: flips, deletions, insertions, splices.
  const bytes = Array.from(utf8(validText))
  const edits = 1 + random.int(kind === 2 ? 1 : 8)
  for (let e = 0; e < edits; e++) {
    const at = random.int(bytes.length)
    const op = random.int(3)
    if (op === 0) bytes[at] = bytes[at]! ^ (1 << random.int(8))
    else if (op === 1) bytes.splice(at, 1 + random.int(4))
    else bytes.splice(at, 0, nonWhitespace(random.int(256)))
  }
  return Uint8Array.from(bytes)
}

const DOCUMENTED = new Set(Object.keys(API_ERRORS))

test(`hostile and random bodies get documented 4xx errors and never crash the server (seed ${SEED})`, async (t) => {
  const clock = new FakeClock()
  const store = await createMemoryStore()
  // Two apps: the default 4 KiB body limit, and a 2 MiB one so the JSON parser and verifier see the deep bodies.
  const small = await serveApp({ store, now: clock.now })
  const large = await serveApp({ store, now: clock.now, bodyLimit: 2 << 20 })
  try {
    const random = seededRandom(SEED)
    const peer = makePeer(random)
    const valid = makeRecord(peer, 1)
    const validText = JSON.stringify(valid)
    const path = `/v1/records/${peer.id}`
    const statuses = new Map<number, number>()
    let count = 0
    const check = async (base: string, name: string, body: string | Uint8Array): Promise<void> => {
      const reply = await send(base, 'PUT', path, { body })
      count++
      statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1)
      if (reply.status < 400 || reply.status >= 500 || !DOCUMENTED.has(String(errorCode(reply)))) {
        t.fail(`${name}: ${reply.status} ${reply.text.slice(0, 200)}`)
      }
    }

    for (const [name, body] of hostileBodies(valid as unknown as Record<string, unknown>)) {
      await check(small.base, name, body)
      await check(large.base, name, body)
    }
    for (let i = 0; i < RANDOM_CASES; i++) await check(i % 2 ? small.base : large.base, `random case ${i}`, randomBody(random, validText))

    t.is(store.count(), 0, 'nothing hostile was stored')
    t.is((await send(small.base, 'GET', '/v1/health')).status, 200)
    // A leading BOM is ignored (RFC 8259 §8.1 allows it), so this valid record still goes through.
    t.is((await send(large.base, 'PUT', path, { body: `\ufeff${validText}` })).status, 201)
    t.log(`${count} bodies, statuses ${JSON.stringify(Object.fromEntries(statuses))}`)
    t.true(count > RANDOM_CASES)
  } finally {
    await small.close()
    await large.close()
    await store.close()
  }
})
