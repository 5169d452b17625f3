/**
 * The cross-module hostile-input suite: every decoder that reads outside bytes, fed seeded random and mutated
 * inputs. The property is the same everywhere: the input is accepted, or it is refused with a typed error (a
 * P2PMessError with a code; for the directory's HTTP API, a documented 4xx JSON error). Nothing else is thrown,
 * nothing hangs, and accepted inputs satisfy each decoder's own invariant (canonical form, re-encoding).
 *
 * Each module has deeper fuzz tests of its own; this file is the single place that covers them all together
 * and counts the cases. A failure prints its target, case number and seed; rerun with the same SEED.
 */
import { IncomingMessage, ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import test, { type ExecutionContext } from 'ava'
import { API_ERRORS, createDirectoryApp } from '../directory/app.js'
import { createMemoryStore } from '../directory/store.js'
import { parseCommand } from '../src/client/headless.js'
import { DecodeError, DirectoryError, P2PMessError } from '../src/errors.js'
import { fromUtf8, utf8 } from '../src/protocol/bytes.js'
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js'
import { generateIdentity, generateNoiseKeyPair, identityFromSeed, isCanonicalPeerId, parsePeerId, peerIdFromIdentityKey } from '../src/protocol/identity.js'
import { decodeMessage, encodeMessage, type Message } from '../src/protocol/messages.js'
import { NoiseCipherState } from '../src/protocol/noise.js'
import { canonicalOnionAddress, isValidOnionAddress, onionServiceKeyFromSeed, parseTorOnionKeyBlob, publicKeyFromOnionAddress, torOnionKeyBlob } from '../src/protocol/onion.js'
import { createRecord, serializeRecord, verifyRecord } from '../src/protocol/record.js'
import { initiateSession, respondSession, SecureTransport } from '../src/protocol/session.js'
import { openSecrets, sealSecrets } from '../src/protocol/vault.js'
import {
  ReplyReader,
  parseAddOnion,
  parseAuthChallenge,
  parseBootstrapPhase,
  parseEvent,
  parseGetConf,
  parseGetInfo,
  parseKeywordArgs,
  parseProtocolInfo,
  readQuotedString,
  type ControlReply,
} from '../src/tor/control-protocol.js'
import { createTorDialer } from '../src/tor/dialer.js'
import { parseListenerOpened, parseLogLine, parsePortInUse } from '../src/tor/process.js'
import { socksReplyError } from '../src/tor/socks-errors.js'
import { startFakeSocks } from './dialer-fake-socks.js'
import { seededRandom } from './helpers/random.js'

const SEED = 0xf0225eed

// ---- seeded randomness and mutation -------------------------------------------------------------------

type Rng = () => number
const int = (rng: Rng, n: number): number => Math.floor(rng() * n)
const bytesOf = (rng: Rng, n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(rng, 256))
const pick = <T>(rng: Rng, items: readonly T[]): T => items[int(rng, items.length)]!

/** Characters that matter to the text formats here, plus some hostile code points. */
const SPICE = ['\n', '\r', '\0', ' ', '"', '\\', '-', '.', '=', '+', '/', '_', '{', '}', '[', ']', ':', ',', '\ud800', '\u2028', 'é', '𝄞', '0', '9', 'A', 'z']

function randomText(rng: Rng, max: number): string {
  const n = int(rng, max + 1)
  let s = ''
  for (let i = 0; i < n; i++) s += rng() < 0.3 ? pick(rng, SPICE) : String.fromCharCode(int(rng, rng() < 0.8 ? 0x80 : 0x10000))
  return s
}

/** 1-8 edits: bit flips, byte changes, deletions, insertions, duplications, truncation. */
function mutateBytes(rng: Rng, input: Uint8Array): Uint8Array {
  const b = Array.from(input)
  const edits = 1 + int(rng, 8)
  for (let e = 0; e < edits; e++) {
    const at = int(rng, b.length + 1)
    switch (int(rng, 6)) {
      case 0:
        if (at < b.length) b[at] = b[at]! ^ (1 << int(rng, 8))
        break
      case 1:
        if (at < b.length) b[at] = int(rng, 256)
        break
      case 2:
        b.splice(at, 1 + int(rng, 8))
        break
      case 3:
        b.splice(at, 0, ...bytesOf(rng, 1 + int(rng, 8)))
        break
      case 4:
        b.splice(at, 0, ...b.slice(at, at + 1 + int(rng, 32)))
        break
      default:
        b.length = Math.min(b.length, at)
    }
  }
  return Uint8Array.from(b)
}

function mutateText(rng: Rng, input: string): string {
  const chars = Array.from(input)
  const edits = 1 + int(rng, 4)
  for (let e = 0; e < edits; e++) {
    const at = int(rng, chars.length + 1)
    switch (int(rng, 4)) {
      case 0:
        chars.splice(at, 1, pick(rng, SPICE))
        break
      case 1:
        chars.splice(at, 1 + int(rng, 3))
        break
      case 2:
        chars.splice(at, 0, rng() < 0.5 ? pick(rng, SPICE) : String.fromCharCode(int(rng, 0x250)))
        break
      default:
        chars.splice(at, 1, rng() < 0.5 ? (chars[at] ?? '').toUpperCase() : (chars[at] ?? '').toLowerCase())
    }
  }
  return chars.join('')
}

// ---- the property ---------------------------------------------------------------------------------------

interface Tally {
  cases: number
  accepted: number
  rejected: Map<string, number>
}

const tallies = new Map<string, Tally>()

function tally(target: string): Tally {
  let t = tallies.get(target)
  if (t === undefined) tallies.set(target, (t = { cases: 0, accepted: 0, rejected: new Map() }))
  return t
}

/** Runs one case: `fn` returns (accepted) or throws a P2PMessError (rejected); anything else fails the test. */
function check(t: ExecutionContext, target: string, index: number, fn: () => void): void {
  const entry = tally(target)
  entry.cases++
  try {
    fn()
    entry.accepted++
  } catch (err) {
    if (err instanceof P2PMessError && typeof err.code === 'string' && err.code.startsWith('ERR_')) {
      entry.rejected.set(err.code, (entry.rejected.get(err.code) ?? 0) + 1)
      return
    }
    t.fail(`${target} case ${index} (seed ${SEED.toString(16)}): untyped ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`)
  }
}

async function checkAsync(t: ExecutionContext, target: string, index: number, fn: () => Promise<void>): Promise<void> {
  const entry = tally(target)
  entry.cases++
  try {
    await fn()
    entry.accepted++
  } catch (err) {
    if (err instanceof P2PMessError && typeof err.code === 'string' && err.code.startsWith('ERR_')) {
      entry.rejected.set(err.code, (entry.rejected.get(err.code) ?? 0) + 1)
      return
    }
    t.fail(`${target} case ${index} (seed ${SEED.toString(16)}): untyped ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`)
  }
}

/** Fails the case (as an untyped error would) when an accepted input breaks the decoder's invariant. */
function invariant(ok: boolean, what: string): void {
  if (!ok) throw new TypeError(`invariant broken: ${what}`)
}

function report(t: ExecutionContext, targets: readonly string[], minCases: number): void {
  for (const target of targets) {
    const e = tally(target)
    const codes = [...e.rejected].map(([c, n]) => `${c}×${n}`).join(' ')
    t.log(`${target}: ${e.cases} cases, ${e.accepted} accepted, ${e.cases - e.accepted} rejected ${codes}`)
    t.true(e.cases >= minCases, `${target} ran ${e.cases} cases`)
    t.true(e.cases > e.accepted, `${target}: some hostile input must be rejected`)
  }
}

// ---- pure decoders ----------------------------------------------------------------------------------------

test('peer IDs and onion addresses: accepted or typed errors, accepted forms canonical', (t) => {
  const rng = seededRandom(SEED).next
  const peerIds = Array.from({ length: 8 }, () => peerIdFromIdentityKey(generateIdentity().publicKey))
  for (let i = 0; i < 4000; i++) {
    const input = i % 4 === 0 ? randomText(rng, 60) : mutateText(rng, pick(rng, peerIds))
    check(t, 'peer ID', i, () => {
      const id = parsePeerId(input)
      invariant(isCanonicalPeerId(id) && parsePeerId(id) === id, 'parsePeerId returns a canonical ID')
    })
  }
  const onions = Array.from({ length: 8 }, () => onionServiceKeyFromSeed(generateIdentity().seed))
  for (let i = 0; i < 4000; i++) {
    const input = i % 4 === 0 ? randomText(rng, 70) : mutateText(rng, pick(rng, onions).address)
    check(t, 'onion address', i, () => {
      const valid = isValidOnionAddress(input)
      let key: Uint8Array
      try {
        key = publicKeyFromOnionAddress(input)
      } catch (err) {
        invariant(!valid, 'isValidOnionAddress agrees with publicKeyFromOnionAddress')
        throw err
      }
      const canonical = canonicalOnionAddress(input)
      invariant(valid && canonical.length === 62 && canonical === canonical.toLowerCase() && key.length === 32, 'accepted address has a canonical form')
    })
  }
  for (let i = 0; i < 1000; i++) {
    const blob = torOnionKeyBlob(pick(rng, onions).expandedSecretKey)
    const input = i % 4 === 0 ? randomText(rng, 100) : mutateText(rng, blob)
    check(t, 'onion key blob', i, () => {
      invariant(torOnionKeyBlob(parseTorOnionKeyBlob(input)) === input, 'blob spelling is unique')
    })
  }
  report(t, ['peer ID', 'onion address', 'onion key blob'], 1000)
})

test('directory records: verifyRecord never throws on hostile JSON', (t) => {
  const rng = seededRandom(SEED + 1).next
  const identity = generateIdentity()
  const record = createRecord({
    identitySeed: identity.seed,
    onion: onionServiceKeyFromSeed(generateIdentity().seed).address,
    noiseKey: generateNoiseKeyPair().publicKey,
    seq: 7,
    expires: 1_900_000_000,
  })
  const now = 1_899_900_000_000
  const text = serializeRecord(record)
  const id = peerIdFromIdentityKey(identity.publicKey)
  t.true(verifyRecord(JSON.parse(text), { now, expectedId: id }).ok, 'the unmutated record verifies')
  for (let i = 0; i < 3000; i++) {
    const bytes = mutateBytes(rng, utf8(text))
    let value: unknown
    try {
      value = JSON.parse(new TextDecoder().decode(bytes))
    } catch {
      // Not JSON at all: the directory refuses it before verifyRecord (covered by the directory API case below).
      value = randomJsonLike(rng, text)
    }
    check(t, 'record', i, () => {
      const result = verifyRecord(value, { now, expectedId: id })
      // verifyRecord reports rejections as values (it never throws); surface them as the directory does.
      if (!result.ok) throw new DirectoryError('ERR_DIRECTORY_INVALID_RECORD', result.reason)
    })
  }
  report(t, ['record'], 3000)
})

test('vault envelopes: opened or ERR_STORAGE_CORRUPT / ERR_WRONG_PASSPHRASE', (t) => {
  const rng = seededRandom(SEED + 2).next
  const secret = bytesOf(rng, 96)
  const envelope = sealSecrets(secret, 'correct horse', { kdf: { name: 'scrypt', N: 2 ** 10, r: 8, p: 1 } })
  const text = JSON.stringify(envelope)
  for (let i = 0; i < 600; i++) {
    const input: unknown = i % 3 === 0 ? bytesOf(rng, int(rng, 400)) : i % 3 === 1 ? mutateBytes(rng, utf8(text)) : fromUtf8OrRaw(mutateBytes(rng, utf8(text)))
    check(t, 'vault envelope', i, () => {
      const opened = openSecrets(input, 'correct horse')
      invariant(opened.length === secret.length && opened.every((b, j) => b === secret[j]), 'an opened envelope gives back the sealed secret')
    })
  }
  check(t, 'vault envelope', -1, () => void openSecrets(envelope, 'wrong horse'))
  report(t, ['vault envelope'], 600)
})

/** The valid record with one field replaced by a hostile value. */
function randomJsonLike(rng: Rng, text: string): unknown {
  const record = JSON.parse(text) as Record<string, unknown>
  const field = pick(rng, Object.keys(record))
  const values: unknown[] = [null, true, -1, 1.5, 2 ** 53, 1e309, '', 'x'.repeat(5000), [], {}, { __proto__: null }, '\ud800', randomText(rng, 40)]
  return { ...record, [field]: pick(rng, values) }
}

function fromUtf8OrRaw(bytes: Uint8Array): string | Uint8Array {
  try {
    return fromUtf8(bytes)
  } catch {
    return bytes
  }
}

const SAMPLE_MESSAGES: Message[] = [
  { type: 'hello', clientName: 'p2pmess', clientVersion: '0.1.0', capabilities: ['ack', 'v1.x'] },
  { type: 'text', id: new Uint8Array(16).fill(7), seq: 3, sentAt: 1_764_000_000_000, body: 'hello 𝄞\nworld' },
  { type: 'ack', ids: [new Uint8Array(16).fill(1), new Uint8Array(16).fill(2)] },
  { type: 'ping', nonce: 42, sentAt: 123456 },
  { type: 'pong', nonce: 42, pingSentAt: 123456, sentAt: 123999 },
  { type: 'bye', reason: 'shutdown', detail: 'bye now' },
]

test('frames and messages: the frame decoder and message codec reject with typed errors', (t) => {
  const rng = seededRandom(SEED + 3).next
  for (let i = 0; i < 1500; i++) {
    const decoder = new FrameDecoder({ maxLength: i % 2 === 0 ? 65535 : 16 + int(rng, 4000) })
    const stream = i % 3 === 0 ? bytesOf(rng, int(rng, 3000)) : mutateBytes(rng, encodeFrame(bytesOf(rng, 16 + int(rng, 300))))
    check(t, 'frame decoder', i, () => {
      let pos = 0
      let total = 0
      while (pos < stream.length) {
        const n = 1 + int(rng, 64)
        for (const frame of decoder.push(stream.subarray(pos, pos + n))) total += frame.length + 2
        pos += n
      }
      invariant(total <= stream.length, 'frames never hold more than the stream')
    })
  }
  const encoded = SAMPLE_MESSAGES.map(encodeMessage)
  for (let i = 0; i < 5000; i++) {
    const input = i % 5 === 0 ? bytesOf(rng, int(rng, 200)) : mutateBytes(rng, pick(rng, encoded))
    check(t, 'message codec', i, () => {
      const message = decodeMessage(input)
      const again = encodeMessage(message)
      invariant(JSON.stringify(decodeMessage(again), replacer) === JSON.stringify(message, replacer), 'accepted messages re-encode')
    })
  }
  report(t, ['frame decoder', 'message codec'], 1500)
})

function replacer(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? Array.from(value) : value
}

test('session handshake messages and transport frames: typed errors, nothing else', (t) => {
  const rng = seededRandom(SEED + 4).next
  const party = () => {
    const identity = identityFromSeed(bytesOf(rng, 32))
    return { identity, noise: generateNoiseKeyPair(), onion: onionServiceKeyFromSeed(bytesOf(rng, 32)).address, peerId: peerIdFromIdentityKey(identity.publicKey) }
  }
  const alice = party()
  const bob = party()
  const initiator = () =>
    initiateSession({ identity: alice.identity, noiseStatic: alice.noise, remoteNoiseKey: bob.noise.publicKey, remoteOnion: bob.onion, expectedPeerId: bob.peerId })
  const responder = () => respondSession({ identity: bob.identity, noiseStatic: bob.noise, ownOnion: bob.onion })
  const body = (frame: Uint8Array): Uint8Array => frame.subarray(2)

  const first = body(initiator().firstMessage())
  for (let i = 0; i < 300; i++) {
    const input = i % 4 === 0 ? bytesOf(rng, int(rng, 400)) : mutateBytes(rng, first)
    check(t, 'handshake message 1', i, () => void responder().readFirstMessage(input))
  }
  for (let i = 0; i < 300; i++) {
    const init = initiator()
    const resp = responder()
    resp.readFirstMessage(body(init.firstMessage()))
    const second = body(resp.response().message)
    const input = i % 4 === 0 ? bytesOf(rng, int(rng, 400)) : mutateBytes(rng, second)
    check(t, 'handshake message 2', i, () => void init.receiveResponse(input))
  }

  const key = bytesOf(rng, 32)
  for (let i = 0; i < 1500; i++) {
    const tx = new SecureTransport({ send: NoiseCipherState.fromKey(key), receive: NoiseCipherState.fromKey(bytesOf(rng, 32)) })
    const rx = new SecureTransport({ send: NoiseCipherState.fromKey(bytesOf(rng, 32)), receive: NoiseCipherState.fromKey(key) })
    rx.open(body(tx.seal(SAMPLE_MESSAGES[0]!)))
    const frame = body(tx.seal(pick(rng, SAMPLE_MESSAGES.slice(1))))
    const input = i % 5 === 0 ? bytesOf(rng, int(rng, 300)) : mutateBytes(rng, frame)
    check(t, 'transport frame', i, () => {
      rx.open(input)
      invariant(!rx.closed, 'an accepted frame leaves the transport open')
    })
  }
  report(t, ['handshake message 1', 'handshake message 2', 'transport frame'], 300)
})

// ---- tor control replies, log lines, SOCKS ---------------------------------------------------------------

const SAMPLE_REPLIES = [
  '250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD COOKIEFILE="/var/lib/tor/control_auth_cookie"\r\n250-VERSION Tor="0.4.9.1"\r\n250 OK\r\n',
  '250 AUTHCHALLENGE SERVERHASH=0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF SERVERNONCE=0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\r\n',
  '250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n250+ns/all=\r\nr relay0 AAAA\r\n..dot\r\n.\r\n250 OK\r\n',
  '250-SocksPort=127.0.0.1:9050\r\n250-ControlPort\r\n250 OK\r\n',
  '250-ServiceID=abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd\r\n250-PrivateKey=ED25519-V3:AAAA\r\n250 OK\r\n',
  '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=50 TAG=loading_descriptors SUMMARY="Loading relay descriptors"\r\n',
  '650 HS_DESC UPLOADED abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd UNKNOWN $AAAA~relay0 REASON=UPLOAD_REJECTED\r\n',
  '650+NEWCONSENSUS\r\nr x y\r\n.\r\n650 OK\r\n',
  '552 Unrecognized key "nope"\r\n',
]

test('tor control replies: the reader and every reply parser give typed errors', (t) => {
  const rng = seededRandom(SEED + 5).next
  const parsers: [string, (r: ControlReply) => unknown][] = [
    ['protocolinfo', parseProtocolInfo],
    ['authchallenge', parseAuthChallenge],
    ['getinfo', parseGetInfo],
    ['getconf', parseGetConf],
    ['add_onion', parseAddOnion],
    ['event', parseEvent],
  ]
  for (let i = 0; i < 3000; i++) {
    const text = i % 5 === 0 ? randomText(rng, 300) : new TextDecoder().decode(mutateBytes(rng, utf8(pick(rng, SAMPLE_REPLIES))))
    const replies: ControlReply[] = []
    check(t, 'control reply reader', i, () => {
      const reader = new ReplyReader()
      let pos = 0
      while (pos < text.length) {
        const n = 1 + int(rng, 80)
        replies.push(...reader.push(text.slice(pos, pos + n)))
        pos += n
      }
    })
    for (const reply of replies) {
      for (const [, parse] of parsers) check(t, 'control reply parsers', i, () => void parse(reply))
      for (const line of reply.lines) {
        check(t, 'keyword args / quoted strings', i, () => void parseKeywordArgs(line.text))
        check(t, 'keyword args / quoted strings', i, () => void readQuotedString(line.text, int(rng, line.text.length + 1)))
        check(t, 'bootstrap phase', i, () => void parseBootstrapPhase(line.text))
      }
    }
  }
  const logLines = [
    'Nov 25 17:54:11.040 [notice] Opened Socks listener connection (ready) on 127.0.0.1:43127',
    'Nov 25 17:54:11.040 [warn] Could not bind to 127.0.0.1:9050: Address already in use. Is Tor already running?',
    'Nov 25 17:54:12.000 [notice] Bootstrapped 100% (done): Done',
  ]
  for (let i = 0; i < 2000; i++) {
    const line = i % 4 === 0 ? randomText(rng, 120) : mutateText(rng, pick(rng, logLines))
    check(t, 'tor log line parsers', i, () => {
      // These parsers answer "not that kind of line" with undefined; tallied as a rejection.
      const parsed = parseLogLine(line)
      if (parsed === undefined) throw new DecodeError('ERR_DECODE', 'not a tor log line')
      parseListenerOpened(parsed.message)
      parsePortInUse(parsed.message)
    })
  }
  report(t, ['control reply reader', 'control reply parsers', 'keyword args / quoted strings', 'bootstrap phase', 'tor log line parsers'], 1000)
})

test('SOCKS replies: every reply byte maps to a typed error; a hostile proxy only yields typed dial errors', async (t) => {
  const rng = seededRandom(SEED + 6).next
  const weird = [-1, 256, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]
  for (let i = 0; i < 256 + weird.length; i++) {
    const reply = i < 256 ? i : weird[i - 256]!
    check(t, 'SOCKS reply mapping', i, () => {
      throw socksReplyError(reply)
    })
  }
  // A scripted proxy answering each CONNECT with mutated or random bytes (RFC 1928 §6 reply layout).
  const good = Uint8Array.of(0x05, 0x00, 0x00, 0x01, 127, 0, 0, 1, 0x1f, 0x90)
  const socks = await startFakeSocks({
    greeting: (index) => (index % 7 === 3 ? { kind: 'raw', bytes: mutateBytes(rng, Uint8Array.of(0x05, 0x00)) } : { kind: 'accept' }),
    plan: (_request, index) => (index % 2 === 0 ? { kind: 'raw', bytes: mutateBytes(rng, good) } : { kind: 'raw', bytes: bytesOf(rng, int(rng, 24)) }),
  })
  try {
    const dialer = createTorDialer({ socksPort: socks.port })
    const onion = onionServiceKeyFromSeed(bytesOf(rng, 32)).address
    for (let i = 0; i < 150; i++) {
      await checkAsync(t, 'SOCKS dial against a hostile proxy', i, async () => {
        const socket = await dialer.dial(onion, 80, { timeoutMs: 2_000 })
        socket.destroy()
      })
    }
  } finally {
    await socks.close()
  }
  report(t, ['SOCKS reply mapping', 'SOCKS dial against a hostile proxy'], 150)
})

// ---- headless command lines and the directory API --------------------------------------------------------

test('headless command lines: parseCommand never throws and refuses with typed errors', (t) => {
  const rng = seededRandom(SEED + 7).next
  const peerId = peerIdFromIdentityKey(generateIdentity().publicKey)
  const lines = [
    `{"cmd":"add","peerId":"${peerId}","name":"Bob","ref":1}`,
    `{"cmd":"send","peerId":"${peerId}","body":"hi there","ref":"x"}`,
    `{"cmd":"history","peerId":"${peerId}","limit":10}`,
    '{"cmd":"contacts"}',
    `{"cmd":"retry","peerId":"${peerId}"}`,
    '{"cmd":"quit"}',
  ]
  for (let i = 0; i < 5000; i++) {
    const line = i % 5 === 0 ? randomText(rng, 120) : mutateText(rng, pick(rng, lines))
    check(t, 'headless command line', i, () => {
      const parsed = parseCommand(line)
      if (!parsed.ok) {
        invariant(parsed.error instanceof P2PMessError, 'refusals are typed')
        throw parsed.error
      }
    })
  }
  report(t, ['headless command line'], 5000)
})

/** encodeURI refuses lone surrogates; URLs here only need some hostile text, so every surrogate becomes '?'. */
const wellFormed = (text: string): string => text.replace(/[\ud800-\udfff]/g, '?')

interface Injected {
  status: number
  body: string
}

/** One request through `app.callback()` with no port: an IncomingMessage on an unconnected socket. */
function inject(handler: (req: IncomingMessage, res: ServerResponse) => void, method: string, url: string, body?: Uint8Array, contentType?: string): Promise<Injected> {
  const req = new IncomingMessage(new Socket())
  req.method = method
  req.url = url
  req.headers = { host: 'directory.test', ...(contentType === undefined ? {} : { 'content-type': contentType }), ...(body === undefined ? {} : { 'content-length': String(body.length) }) }
  const res = new ServerResponse(req)
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = []
    res.write = ((chunk: unknown) => {
      if (chunk instanceof Uint8Array) chunks.push(chunk)
      else if (typeof chunk === 'string') chunks.push(utf8(chunk))
      return true
    }) as ServerResponse['write']
    res.end = ((chunk?: unknown) => {
      if (chunk instanceof Uint8Array) chunks.push(chunk)
      else if (typeof chunk === 'string') chunks.push(utf8(chunk))
      resolve({ status: res.statusCode, body: new TextDecoder().decode(Buffer.concat(chunks)) })
      return res
    }) as ServerResponse['end']
    handler(req, res)
    if (body !== undefined) req.push(Buffer.from(body))
    req.push(null)
  })
}

test('directory API via app.callback(): hostile requests get documented 4xx JSON errors', async (t) => {
  const rng = seededRandom(SEED + 8).next
  const store = await createMemoryStore()
  const now = 1_899_000_000_000
  const app = createDirectoryApp({ store, now: () => now })
  const handler = app.callback()
  const identity = generateIdentity()
  const id = peerIdFromIdentityKey(identity.publicKey)
  const text = serializeRecord(
    createRecord({ identitySeed: identity.seed, onion: onionServiceKeyFromSeed(bytesOf(rng, 32)).address, noiseKey: generateNoiseKeyPair().publicKey, seq: 1, expires: 1_899_003_600 }),
  )
  const documented = new Set(Object.keys(API_ERRORS))
  const methods = ['GET', 'PUT', 'POST', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS']
  const paths = [`/v1/records/${id}`, '/v1/health', '/v1/records/', `/v1/records/${id}/x`, '/']
  let stored = 0
  try {
    t.is((await inject(handler, 'PUT', `/v1/records/${id}`, utf8(text), 'application/json')).status, 201, 'the unmutated record is stored')
    for (let i = 0; i < 1500; i++) {
      const method = i % 3 === 0 ? pick(rng, methods) : 'PUT'
      const path = i % 4 === 0 ? encodeURI(wellFormed(mutateText(rng, pick(rng, paths)))) : `/v1/records/${i % 2 === 0 ? id : encodeURIComponent(wellFormed(mutateText(rng, id)))}`
      const body = method === 'PUT' || method === 'POST' ? (i % 5 === 0 ? bytesOf(rng, int(rng, 6000)) : mutateBytes(rng, utf8(text))) : undefined
      const contentType = i % 11 === 0 ? pick(rng, ['text/plain', 'application/json; charset=utf-8', '', 'application/jsonx']) : 'application/json'
      await checkAsync(t, 'directory API', i, async () => {
        const reply = await inject(handler, method, path, body, contentType)
        if (reply.status < 300) {
          stored += method === 'PUT' ? 1 : 0
          return
        }
        let code: unknown
        try {
          const parsed: unknown = JSON.parse(reply.body)
          code = typeof parsed === 'object' && parsed !== null && 'error' in parsed && typeof parsed.error === 'object' && parsed.error !== null && 'code' in parsed.error ? parsed.error.code : undefined
        } catch {
          code = undefined
        }
        const api = typeof code === 'string' && documented.has(code) ? API_ERRORS[code as keyof typeof API_ERRORS] : undefined
        // HEAD replies carry no body by definition; their status must still be a documented 4xx.
        const ok = reply.status >= 400 && reply.status < 500 && (method === 'HEAD' ? true : api?.status === reply.status)
        invariant(ok, `${method} ${path} -> ${reply.status} ${reply.body.slice(0, 120)}`)
        throw new P2PMessError(api?.internal ?? 'ERR_DIRECTORY_REJECTED', `HTTP ${reply.status}`)
      })
    }
    const health = await inject(handler, 'GET', '/v1/health')
    t.is(health.status, 200)
    t.log(`directory API: ${stored} mutated PUTs were accepted (an edit can leave a record valid, e.g. a changed unused key)`)
  } finally {
    await store.close()
  }
  report(t, ['directory API'], 1500)
})

test.after('total', () => {
  const total = [...tallies.values()].reduce((n, e) => n + e.cases, 0)
  console.log(`fuzz suite: ${total} cases over ${tallies.size} targets (seed 0x${SEED.toString(16)})`)
})
