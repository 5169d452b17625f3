/**
 * Tor control protocol, pure part: reply framing, one typed parser per reply / event, and command builders
 * that quote and validate every argument. References are to control-spec.txt ("TC: A Tor control protocol",
 * version 1). No I/O here: the socket side is ./controller.ts.
 */
import { InvalidArgumentError, TorError } from '../errors.js'
import { fromHex, fromUtf8 } from '../protocol/bytes.js'

// ---------------------------------------------------------------------------------------------------------
// Framing (§2.3 "Replies from Tor to the controller", §2.4 "General-use tokens" for CmdData)

export interface ReplyLine {
  status: number
  /** The ReplyLine text after the 3-digit code and the separator. */
  text: string
  /** Present for `NNN+` lines: the CmdData block, dot-unescaped, lines joined with "\n". */
  data?: string
}

export interface ControlReply {
  /** The status code shared by every line of the reply. */
  status: number
  lines: ReplyLine[]
  /** 6xx: an asynchronous event (§4.1), never the answer to a command. */
  isEvent: boolean
}

/** Longest single line (or data-block line) we buffer before declaring the stream hostile. */
export const MAX_LINE_LENGTH = 1 << 20
/** Largest total reply we assemble (a real `GETINFO ns/all` is a few MiB). */
export const MAX_REPLY_LENGTH = 64 << 20

const LINE_RE = /^([1-6][0-9]{2})([ +-])(.*)$/s

function protocolError(message: string, details?: Record<string, unknown>): TorError {
  return new TorError('ERR_CONTROL_PROTOCOL', message, details === undefined ? {} : { details })
}

interface Pending {
  status: number
  lines: ReplyLine[]
  size: number
}

type ReaderState =
  | { kind: 'lines' }
  | { kind: 'data'; into: Pending; line: ReplyLine; body: string[] }
  | { kind: 'failed'; error: TorError }

/**
 * Incremental reply framer. Feed it text in any chunking; it returns every reply completed so far.
 * Async events (6xx) and the current synchronous reply are assembled separately, so an event arriving
 * between the lines of a multi-line reply is delivered on its own and does not corrupt the reply.
 * After a protocol error the reader stays failed and every later push throws the same error.
 */
export class ReplyReader {
  #buffer = ''
  #state: ReaderState = { kind: 'lines' }
  #sync: Pending | undefined
  #event: Pending | undefined

  push(chunk: string): ControlReply[] {
    if (typeof chunk !== 'string') throw new InvalidArgumentError('chunk must be a string')
    if (this.#state.kind === 'failed') throw this.#state.error
    this.#buffer += chunk
    const out: ControlReply[] = []
    try {
      let nl: number
      while ((nl = this.#buffer.indexOf('\n')) >= 0) {
        let line = this.#buffer.slice(0, nl)
        this.#buffer = this.#buffer.slice(nl + 1)
        if (line.endsWith('\r')) line = line.slice(0, -1) // CRLF per §2.3; bare LF tolerated
        if (line.length > MAX_LINE_LENGTH) throw protocolError('control reply line too long')
        const done = this.#line(line)
        if (done !== undefined) out.push(done)
      }
      if (this.#buffer.length > MAX_LINE_LENGTH) throw protocolError('control reply line too long')
    } catch (err) {
      const error = err instanceof TorError ? err : new TorError('ERR_CONTROL_PROTOCOL', 'malformed control reply', { cause: err })
      this.#state = { kind: 'failed', error }
      throw error
    }
    return out
  }

  #line(line: string): ControlReply | undefined {
    const state = this.#state
    if (state.kind === 'data') {
      // CmdData (§2.4): a line holding only "." ends the block; a leading ".." stands for ".".
      if (line === '.') {
        state.line.data = state.body.join('\n')
        state.into.lines.push(state.line)
        this.#state = { kind: 'lines' }
        return undefined
      }
      state.body.push(line.startsWith('.') ? line.slice(1) : line)
      this.#grow(state.into, line.length + 1)
      return undefined
    }
    const m = LINE_RE.exec(line)
    if (m === null) throw protocolError('malformed control reply line', { line: line.slice(0, 80) })
    const status = Number(m[1])
    const sep = m[2]
    const text = m[3] ?? ''
    const isEvent = status >= 600
    let pending = isEvent ? this.#event : this.#sync
    if (pending === undefined) {
      pending = { status, lines: [], size: 0 }
      if (isEvent) this.#event = pending
      else this.#sync = pending
    } else if (pending.status !== status) {
      throw protocolError('status code changed inside one control reply', { expected: pending.status, got: status })
    }
    this.#grow(pending, line.length + 2)
    const replyLine: ReplyLine = { status, text }
    if (sep === '+') {
      this.#state = { kind: 'data', into: pending, line: replyLine, body: [] }
      return undefined
    }
    pending.lines.push(replyLine)
    if (sep === '-') return undefined
    if (isEvent) this.#event = undefined
    else this.#sync = undefined
    return { status, lines: pending.lines, isEvent }
  }

  #grow(pending: Pending, n: number): void {
    pending.size += n
    if (pending.size > MAX_REPLY_LENGTH) throw protocolError('control reply too large')
  }
}

// ---------------------------------------------------------------------------------------------------------
// Tokens: QuotedString (§2.1.1) and keyword arguments

/**
 * Throws ERR_CONTROL_FAILED with tor's own message when the reply is not 2xx (§4). `command` is the verb
 * only (never the whole line: it may carry a password).
 */
export function assertOk(reply: ControlReply, command?: string): void {
  if (reply.status >= 200 && reply.status < 300) return
  const message = reply.lines.map((l) => l.text).join(' | ')
  const what = command === undefined ? 'tor' : `tor answered ${command} with`
  throw new TorError('ERR_CONTROL_FAILED', `${what} ${reply.status}: ${message.slice(0, 300)}`, {
    details: command === undefined ? { status: reply.status, message } : { status: reply.status, message, command },
  })
}

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = { n: '\n', r: '\r', t: '\t' }

/**
 * Reads a QuotedString starting at `text[start] === '"'` (§2.1.1: C escapes \\ \" \n \r \t and octal \NNN
 * bytes, which may spell UTF-8). Returns the decoded value and the index just after the closing quote.
 */
export function readQuotedString(text: string, start: number): { value: string; end: number } {
  if (text[start] !== '"') throw protocolError('expected a quoted string')
  let value = ''
  let octets: number[] = []
  const flush = (): void => {
    if (octets.length === 0) return
    try {
      value += fromUtf8(Uint8Array.from(octets))
    } catch (cause) {
      throw new TorError('ERR_CONTROL_PROTOCOL', 'quoted string holds invalid UTF-8', { cause })
    }
    octets = []
  }
  for (let i = start + 1; i < text.length; i++) {
    const c = text[i]!
    if (c === '"') {
      flush()
      return { value, end: i + 1 }
    }
    if (c !== '\\') {
      flush()
      value += c
      continue
    }
    const e = text[++i]
    if (e === undefined) break
    const oct = /^[0-7]{1,3}/.exec(text.slice(i, i + 3))
    if (oct !== null) {
      const byte = parseInt(oct[0], 8)
      if (byte > 255) throw protocolError('octal escape out of range in quoted string')
      octets.push(byte)
      i += oct[0].length - 1
      continue
    }
    flush()
    value += SIMPLE_ESCAPES[e] ?? e // \\ \" \' and any other escaped character stand for themselves
  }
  throw protocolError('unterminated quoted string')
}

export interface KeywordArgs {
  /** Leading words before the first KEY=VALUE (quoted words decoded). */
  positional: string[]
  /** KEY=VALUE and KEY="quoted" pairs, in order; the first occurrence of a key wins in `get`. */
  keywords: Map<string, string>
}

const KEYWORD_RE = /^[A-Za-z_][A-Za-z0-9_]*=/

/**
 * The one keyword-argument parser: splits `POS POS KEY=VALUE KEY="quoted \"escaped\" value"` on single
 * spaces, decoding QuotedStrings wherever they appear. Positional words (e.g. `$FP~nick`) may hold '='
 * as long as they do not start like a keyword.
 */
export function parseKeywordArgs(text: string): KeywordArgs {
  const positional: string[] = []
  const keywords = new Map<string, string>()
  let i = 0
  while (i < text.length) {
    if (text[i] === ' ') {
      i++
      continue
    }
    const kw = KEYWORD_RE.exec(text.slice(i, i + 256))
    let key: string | undefined
    if (kw !== null) {
      key = kw[0].slice(0, -1)
      i += kw[0].length
    }
    let value: string
    if (text[i] === '"') {
      const q = readQuotedString(text, i)
      value = q.value
      i = q.end
      if (i < text.length && text[i] !== ' ') throw protocolError('garbage after quoted string')
    } else {
      let j = text.indexOf(' ', i)
      if (j < 0) j = text.length
      value = text.slice(i, j)
      i = j
    }
    if (key === undefined) positional.push(value)
    else if (!keywords.has(key)) keywords.set(key, value)
  }
  return { positional, keywords }
}

// ---------------------------------------------------------------------------------------------------------
// Reply parsers

function okLines(reply: ControlReply): ReplyLine[] {
  assertOk(reply)
  if (reply.isEvent) throw protocolError('expected a command reply, got an event')
  return reply.lines
}

function withoutFinalOk(reply: ControlReply): ReplyLine[] {
  const lines = okLines(reply)
  const last = lines[lines.length - 1]
  if (last === undefined || last.text !== 'OK' || last.data !== undefined) {
    throw protocolError('control reply does not end with "OK"')
  }
  return lines.slice(0, -1)
}

export interface ProtocolInfo {
  protocolInfoVersion: number
  /** e.g. ['COOKIE', 'SAFECOOKIE', 'HASHEDPASSWORD'] or ['NULL'] (§3.21). */
  authMethods: string[]
  cookieFile?: string
  torVersion?: string
}

/** PROTOCOLINFO reply (§3.21). Unknown lines are ignored for forward compatibility. */
export function parseProtocolInfo(reply: ControlReply): ProtocolInfo {
  let protocolInfoVersion: number | undefined
  let authMethods: string[] | undefined
  let cookieFile: string | undefined
  let torVersion: string | undefined
  for (const line of withoutFinalOk(reply)) {
    const sp = line.text.indexOf(' ')
    const head = sp < 0 ? line.text : line.text.slice(0, sp)
    const args = parseKeywordArgs(sp < 0 ? '' : line.text.slice(sp + 1))
    if (head === 'PROTOCOLINFO') {
      const v = args.positional[0] ?? ''
      if (!/^[0-9]{1,9}$/.test(v)) throw protocolError('bad PROTOCOLINFO version')
      protocolInfoVersion = Number(v)
    } else if (head === 'AUTH') {
      const methods = args.keywords.get('METHODS')
      if (methods === undefined || !/^[A-Z0-9_]+(,[A-Z0-9_]+)*$/.test(methods)) {
        throw protocolError('PROTOCOLINFO AUTH line without valid METHODS')
      }
      authMethods = methods.split(',')
      cookieFile = args.keywords.get('COOKIEFILE')
    } else if (head === 'VERSION') {
      torVersion = args.keywords.get('Tor')
    }
  }
  if (protocolInfoVersion === undefined || authMethods === undefined) {
    throw protocolError('PROTOCOLINFO reply lacks the PROTOCOLINFO or AUTH line')
  }
  const info: ProtocolInfo = { protocolInfoVersion, authMethods }
  if (cookieFile !== undefined) info.cookieFile = cookieFile
  if (torVersion !== undefined) info.torVersion = torVersion
  return info
}

export interface AuthChallenge {
  serverHash: Uint8Array
  serverNonce: Uint8Array
}

function hex32(value: string | undefined, name: string): Uint8Array {
  if (value === undefined || !/^[0-9a-fA-F]{64}$/.test(value)) throw protocolError(`AUTHCHALLENGE ${name} must be 64 hex digits`)
  return fromHex(value)
}

/** `250 AUTHCHALLENGE SERVERHASH=<64 hex> SERVERNONCE=<64 hex>` (§3.24). */
export function parseAuthChallenge(reply: ControlReply): AuthChallenge {
  const lines = okLines(reply)
  const line = lines[0]
  if (lines.length !== 1 || line === undefined || !line.text.startsWith('AUTHCHALLENGE ')) {
    throw protocolError('malformed AUTHCHALLENGE reply')
  }
  const args = parseKeywordArgs(line.text.slice('AUTHCHALLENGE '.length))
  return {
    serverHash: hex32(args.keywords.get('SERVERHASH'), 'SERVERHASH'),
    serverNonce: hex32(args.keywords.get('SERVERNONCE'), 'SERVERNONCE'),
  }
}

/**
 * GETINFO reply (§3.9): `key=value` lines (split on the FIRST '=', so values keep theirs) and `key=` lines
 * carrying a data block.
 */
export function parseGetInfo(reply: ControlReply): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of withoutFinalOk(reply)) {
    const eq = line.text.indexOf('=')
    if (eq <= 0) throw protocolError('GETINFO line without key=value', { line: line.text.slice(0, 80) })
    const key = line.text.slice(0, eq)
    if (line.data !== undefined) {
      if (eq !== line.text.length - 1) throw protocolError('GETINFO data line must end with "="')
      out.set(key, line.data)
    } else {
      out.set(key, line.text.slice(eq + 1))
    }
  }
  return out
}

/**
 * GETCONF reply (§3.3): `key=value` or bare `key` (= default) per line; options given several times repeat.
 * A bare key maps to an empty list.
 */
export function parseGetConf(reply: ControlReply): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const line of okLines(reply)) {
    const eq = line.text.indexOf('=')
    const key = eq < 0 ? line.text : line.text.slice(0, eq)
    if (!/^[A-Za-z0-9_]+$/.test(key)) throw protocolError('malformed GETCONF line', { line: line.text.slice(0, 80) })
    const values = out.get(key) ?? []
    if (eq >= 0) {
      const raw = line.text.slice(eq + 1)
      values.push(raw.startsWith('"') ? readQuotedString(raw, 0).value : raw)
    }
    out.set(key, values)
  }
  return out
}

export interface AddOnionResult {
  serviceId: string
  /** `ED25519-V3:<base64>` unless DiscardPK was given or the key was supplied. */
  privateKey?: string
}

const SERVICE_ID_RE = /^[a-z2-7]{56}$/

/** ADD_ONION reply (§3.27): `ServiceID=`, optional `PrivateKey=`, optional `ClientAuthV3=` lines, `OK`. */
export function parseAddOnion(reply: ControlReply): AddOnionResult {
  let serviceId: string | undefined
  let privateKey: string | undefined
  for (const line of withoutFinalOk(reply)) {
    if (line.text.startsWith('ServiceID=')) serviceId = line.text.slice('ServiceID='.length)
    else if (line.text.startsWith('PrivateKey=')) privateKey = line.text.slice('PrivateKey='.length)
  }
  if (serviceId === undefined || !SERVICE_ID_RE.test(serviceId)) throw protocolError('ADD_ONION reply without a v3 ServiceID')
  if (privateKey !== undefined && !/^ED25519-V3:[A-Za-z0-9+/]+={0,2}$/.test(privateKey)) {
    throw protocolError('ADD_ONION reply has a malformed PrivateKey')
  }
  return privateKey === undefined ? { serviceId } : { serviceId, privateKey }
}

// ---------------------------------------------------------------------------------------------------------
// Events (§4.1)

export type LogSeverity = 'DEBUG' | 'INFO' | 'NOTICE' | 'WARN' | 'ERR'
const LOG_SEVERITIES: readonly string[] = ['DEBUG', 'INFO', 'NOTICE', 'WARN', 'ERR']

export interface BootstrapEvent {
  type: 'bootstrap'
  severity: 'NOTICE' | 'WARN'
  progress: number
  tag: string
  summary: string
  /** Present on `WARN` bootstrap problems (§4.1.10). */
  warning?: string
  reason?: string
  count?: number
  recommendation?: string
  host?: string
}

export type HsDescAction = 'REQUESTED' | 'UPLOAD' | 'RECEIVED' | 'UPLOADED' | 'IGNORE' | 'FAILED' | 'CREATED'
const HS_DESC_ACTIONS: readonly string[] = ['REQUESTED', 'UPLOAD', 'RECEIVED', 'UPLOADED', 'IGNORE', 'FAILED', 'CREATED']

export interface HsDescEvent {
  type: 'hs_desc'
  action: HsDescAction
  /** Onion service id without ".onion", or 'UNKNOWN'. */
  address: string
  authType: string
  /** `$FINGERPRINT~nick` or fingerprint; absent when tor says UNKNOWN. */
  hsdir?: string
  descriptorId?: string
  reason?: string
}

export type TorEvent =
  | BootstrapEvent
  | HsDescEvent
  | { type: 'log'; severity: LogSeverity; message: string }
  | {
      type: 'status'
      kind: 'general' | 'client' | 'server'
      severity: string
      action: string
      args: Map<string, string>
    }
  | { type: 'unknown'; name: string; raw: string }

/**
 * `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"` — the text after `STATUS_CLIENT` in an event,
 * and the value of `GETINFO status/bootstrap-phase` (§4.1.10).
 */
export function parseBootstrapPhase(text: string): BootstrapEvent {
  if (typeof text !== 'string') throw new InvalidArgumentError('bootstrap phase must be a string')
  const { positional, keywords } = parseKeywordArgs(text)
  const severity = positional[0]
  if ((severity !== 'NOTICE' && severity !== 'WARN') || positional[1] !== 'BOOTSTRAP') {
    throw protocolError('not a bootstrap status line', { line: text.slice(0, 80) })
  }
  const progress = keywords.get('PROGRESS')
  const tag = keywords.get('TAG')
  const summary = keywords.get('SUMMARY')
  if (progress === undefined || !/^[0-9]{1,3}$/.test(progress) || Number(progress) > 100) {
    throw protocolError('bootstrap status without a valid PROGRESS')
  }
  if (tag === undefined || summary === undefined) throw protocolError('bootstrap status without TAG or SUMMARY')
  const event: BootstrapEvent = { type: 'bootstrap', severity, progress: Number(progress), tag, summary }
  const warning = keywords.get('WARNING')
  const reason = keywords.get('REASON')
  const count = keywords.get('COUNT')
  const recommendation = keywords.get('RECOMMENDATION')
  const host = keywords.get('HOSTADDR')
  if (warning !== undefined) event.warning = warning
  if (reason !== undefined) event.reason = reason
  if (count !== undefined && /^[0-9]{1,9}$/.test(count)) event.count = Number(count)
  if (recommendation !== undefined) event.recommendation = recommendation
  if (host !== undefined) event.host = host
  return event
}

function parseHsDesc(rest: string): HsDescEvent | undefined {
  // HS_DESC Action HSAddress AuthType HsDir [DescriptorID] [REASON=..] [REPLICA=..] [HSDIR_INDEX=..] (§4.1.25)
  const { positional, keywords } = parseKeywordArgs(rest)
  const [action, address, authType, hsdir, descriptorId] = positional
  if (action === undefined || !HS_DESC_ACTIONS.includes(action)) return undefined
  if (address === undefined || authType === undefined || hsdir === undefined) {
    throw protocolError('HS_DESC event with too few fields')
  }
  const event: HsDescEvent = { type: 'hs_desc', action: action as HsDescAction, address, authType }
  if (hsdir !== 'UNKNOWN') event.hsdir = hsdir
  if (descriptorId !== undefined) event.descriptorId = descriptorId
  const reason = keywords.get('REASON')
  if (reason !== undefined) event.reason = reason
  return event
}

const STATUS_KINDS: Readonly<Record<string, 'general' | 'client' | 'server'>> = {
  STATUS_GENERAL: 'general',
  STATUS_CLIENT: 'client',
  STATUS_SERVER: 'server',
}

/** Turns a 650 reply into a typed event. Events this client does not model come back as `unknown`. */
export function parseEvent(reply: ControlReply): TorEvent {
  const first = reply.lines[0]
  if (!reply.isEvent || first === undefined) throw protocolError('not an asynchronous event')
  const sp = first.text.indexOf(' ')
  const name = sp < 0 ? first.text : first.text.slice(0, sp)
  const rest = sp < 0 ? '' : first.text.slice(sp + 1)
  if (LOG_SEVERITIES.includes(name)) {
    // Single-line `650 NOTICE msg`, or multi-line `650+WARN` + data block + `650 OK` (§4.1.5).
    return { type: 'log', severity: name as LogSeverity, message: first.data ?? rest }
  }
  const kind = STATUS_KINDS[name]
  if (kind !== undefined) {
    const { positional, keywords } = parseKeywordArgs(rest)
    const [severity, action] = positional
    if (kind === 'client' && action === 'BOOTSTRAP') return parseBootstrapPhase(rest)
    if (severity === undefined || action === undefined) throw protocolError(`${name} event without severity/action`)
    return { type: 'status', kind, severity, action, args: keywords }
  }
  if (name === 'HS_DESC') {
    const event = parseHsDesc(rest)
    if (event !== undefined) return event
  }
  const raw = reply.lines.map((l) => (l.data === undefined ? l.text : `${l.text}\n${l.data}`)).join('\n')
  return { type: 'unknown', name, raw }
}

// ---------------------------------------------------------------------------------------------------------
// Command builders (§3). Each returns one command line without the trailing CRLF; nothing a caller passes
// can add a line break, a space, or an extra argument.

const CONTROL_CHARS = /[\u0000-\u001f\u007f]/

/** QuotedString (§2.1.1): escapes `\` and `"`; control characters are refused, not escaped. */
export function quoteString(s: string, name = 'value'): string {
  if (typeof s !== 'string') throw new InvalidArgumentError(`${name} must be a string`)
  if (CONTROL_CHARS.test(s)) throw new InvalidArgumentError(`${name} must not contain control characters`)
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}

function token(value: unknown, name: string, re: RegExp): string {
  if (typeof value !== 'string' || !re.test(value)) throw new InvalidArgumentError(`${name} is malformed`)
  return value
}

function tokens(values: unknown, name: string, re: RegExp): string[] {
  if (!Array.isArray(values) || values.length === 0) throw new InvalidArgumentError(`${name} must be a non-empty array`)
  return values.map((v: unknown, i) => token(v, `${name}[${i}]`, re))
}

const GETINFO_KEY_RE = /^[A-Za-z0-9_\-/.:@$~]{1,200}$/
const CONF_KEY_RE = /^[A-Za-z0-9_]{1,100}$/
const EVENT_RE = /^[A-Z_]{1,40}$/
const HEX_RE = /^(?:[0-9a-fA-F]{2}){1,256}$/

export function buildGetInfo(keys: string[]): string {
  return `GETINFO ${tokens(keys, 'keys', GETINFO_KEY_RE).join(' ')}`
}

export function buildGetConf(keys: string[]): string {
  return `GETCONF ${tokens(keys, 'keys', CONF_KEY_RE).join(' ')}`
}

/** SETCONF (§3.1): every value is sent quoted. */
export function buildSetConf(entries: Record<string, string>): string {
  if (entries === null || typeof entries !== 'object') throw new InvalidArgumentError('entries must be an object')
  const parts = Object.entries(entries).map(([k, v]) => `${token(k, 'option name', CONF_KEY_RE)}=${quoteString(v, `value of ${k}`)}`)
  if (parts.length === 0) throw new InvalidArgumentError('entries must not be empty')
  return `SETCONF ${parts.join(' ')}`
}

/** SETEVENTS (§3.4); an empty list turns all events off. */
export function buildSetEvents(names: string[]): string {
  if (!Array.isArray(names)) throw new InvalidArgumentError('names must be an array')
  return names.length === 0 ? 'SETEVENTS' : `SETEVENTS ${tokens(names, 'names', EVENT_RE).join(' ')}`
}

export type SignalName =
  | 'RELOAD' | 'HUP' | 'SHUTDOWN' | 'INT' | 'DUMP' | 'USR1' | 'DEBUG' | 'USR2' | 'HALT' | 'TERM'
  | 'NEWNYM' | 'CLEARDNSCACHE' | 'HEARTBEAT' | 'ACTIVE' | 'DORMANT'
const SIGNALS: readonly string[] = [
  'RELOAD', 'HUP', 'SHUTDOWN', 'INT', 'DUMP', 'USR1', 'DEBUG', 'USR2', 'HALT', 'TERM',
  'NEWNYM', 'CLEARDNSCACHE', 'HEARTBEAT', 'ACTIVE', 'DORMANT',
]

export function buildSignal(name: SignalName): string {
  if (typeof name !== 'string' || !SIGNALS.includes(name)) throw new InvalidArgumentError('unknown signal name')
  return `SIGNAL ${name}`
}

/** AUTHENTICATE (§3.5) with a password (QuotedString) or a hex token (cookie / SAFECOOKIE client hash). */
export function buildAuthenticate(auth: { password: string } | { hex: string } | { none: true }): string {
  if ('password' in auth) return `AUTHENTICATE ${quoteString(auth.password, 'password')}`
  if ('hex' in auth) return `AUTHENTICATE ${token(auth.hex, 'authentication token', HEX_RE)}`
  return 'AUTHENTICATE'
}

export function buildAuthChallenge(clientNonceHex: string): string {
  return `AUTHCHALLENGE SAFECOOKIE ${token(clientNonceHex, 'client nonce', HEX_RE)}`
}

export type OnionFlag = 'Detach' | 'DiscardPK' | 'V3Auth'
const ONION_FLAGS: readonly string[] = ['Detach', 'DiscardPK', 'V3Auth']

export interface AddOnionOptions {
  key: { type: 'new' } | { type: 'ed25519-v3'; blob: string }
  ports: Array<{ virtualPort: number; target: string }>
  flags?: OnionFlag[]
  /** base32 x25519 public keys of authorized clients (rend-spec-v3 appendix G.1.2 key part). */
  clientAuthV3?: string[]
}

function port(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw new InvalidArgumentError(`${name} must be an integer port 1-65535`)
  }
  return value
}

/** ADD_ONION (§3.27), v3 only; targets are restricted to 127.0.0.1. */
export function buildAddOnion(opts: AddOnionOptions): string {
  if (opts === null || typeof opts !== 'object') throw new InvalidArgumentError('options must be an object')
  const { key } = opts
  let keyArg: string
  if (key?.type === 'new') keyArg = 'NEW:ED25519-V3'
  else if (key?.type === 'ed25519-v3') keyArg = `ED25519-V3:${token(key.blob, 'key.blob', /^[A-Za-z0-9+/]{86}==$/)}`
  else throw new InvalidArgumentError("key.type must be 'new' or 'ed25519-v3'")
  const parts = ['ADD_ONION', keyArg]
  if (opts.flags !== undefined) {
    const flags = tokens(opts.flags, 'flags', /^[A-Za-z0-9]+$/)
    for (const f of flags) if (!ONION_FLAGS.includes(f)) throw new InvalidArgumentError(`unsupported flag ${f}`)
    parts.push(`Flags=${[...new Set(flags)].join(',')}`)
  }
  if (!Array.isArray(opts.ports) || opts.ports.length === 0) throw new InvalidArgumentError('ports must be a non-empty array')
  opts.ports.forEach((p, i) => {
    const virt = port(p?.virtualPort, `ports[${i}].virtualPort`)
    const m = /^127\.0\.0\.1:([0-9]{1,5})$/.exec(typeof p?.target === 'string' ? p.target : '')
    if (m === null) throw new InvalidArgumentError(`ports[${i}].target must be '127.0.0.1:<port>'`)
    port(Number(m[1]), `ports[${i}].target port`)
    parts.push(`Port=${virt},${p.target}`)
  })
  if (opts.clientAuthV3 !== undefined) {
    for (const k of tokens(opts.clientAuthV3, 'clientAuthV3', /^[A-Za-z2-7]{52}$/)) parts.push(`ClientAuthV3=${k}`)
  }
  return parts.join(' ')
}

function serviceId(address: unknown, name: string): string {
  const id = typeof address === 'string' && address.endsWith('.onion') ? address.slice(0, -'.onion'.length) : address
  return token(id, name, SERVICE_ID_RE)
}

export function buildDelOnion(id: string): string {
  return `DEL_ONION ${serviceId(id, 'serviceId')}`
}

/** ONION_CLIENT_AUTH_ADD (§3.30): x25519 private key as base64 of 32 bytes. */
export function buildOnionClientAuthAdd(address: string, x25519PrivBase64: string): string {
  const id = serviceId(address, 'address')
  if (typeof x25519PrivBase64 !== 'string' || !/^[A-Za-z0-9+/]{43}=$/.test(x25519PrivBase64)) {
    throw new InvalidArgumentError('x25519 private key must be base64 of 32 bytes') // never echo the key
  }
  return `ONION_CLIENT_AUTH_ADD ${id} x25519:${x25519PrivBase64}`
}

export function buildOnionClientAuthRemove(address: string): string {
  return `ONION_CLIENT_AUTH_REMOVE ${serviceId(address, 'address')}`
}
