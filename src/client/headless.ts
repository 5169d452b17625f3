/**
 * Headless mode: the client driven by newline-delimited JSON. Each input line is one command, each output line is
 * one JSON object: a `result` for a command, an `error` for a line that is not a valid command, or a client event
 * as it happens. docs/HEADLESS.md is the contract; it only ever grows.
 *
 * Commands run one at a time in input order: a command's result line is written before the next line is read,
 * so `add` then `send` to the same peer behaves like a script expects. Input is read only while the output keeps
 * up (a full output stream pauses reading); events are written as they come.
 */
import { Readable, Writable } from 'node:stream'
import { DecodeError, InvalidArgumentError, P2PMessError, describeError } from '../errors.js'
import { concatBytes, fromUtf8, utf8 } from '../protocol/bytes.js'
import { parsePeerId } from '../protocol/identity.js'
import type { ClientEvent, ClientHandle, ClientIntent, IntentResult } from './api.js'

/** A line longer than this many bytes (not counting its line feed) is refused whole. */
export const MAX_LINE_BYTES = 64 * 1024
/** Longest `ref` string echoed back, in UTF-16 code units. */
export const MAX_REF_LENGTH = 256

/** What a script may attach to a command to recognise its result: a string or a finite number. */
export type Ref = string | number

export type ParsedCommand =
  | { ok: true; intent: ClientIntent; ref?: Ref }
  | { ok: false; error: P2PMessError; ref?: Ref }

/** Fields each command may carry besides `cmd` and `ref`. */
const FIELDS: Readonly<Record<ClientIntent['cmd'], readonly string[]>> = {
  add: ['peerId', 'name'],
  accept: ['peerId'],
  refuse: ['peerId'],
  send: ['peerId', 'body'],
  contacts: [],
  history: ['peerId', 'limit'],
  retry: ['peerId'],
  quit: [],
}

function isCommand(cmd: string): cmd is ClientIntent['cmd'] {
  return Object.hasOwn(FIELDS, cmd)
}

/** Shows a name taken from the input in an error message, bounded and quoted. */
function shown(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text)
}

function invalid(message: string): InvalidArgumentError {
  return new InvalidArgumentError(message)
}

/** Our typed error as is; anything else is a bug, reported as ERR_INTERNAL. */
function typed(err: unknown, what: string): P2PMessError {
  return err instanceof P2PMessError ? err : new P2PMessError('ERR_INTERNAL', `${what}: ${describeError(err)}`, { cause: err })
}

function peerIdField(o: Record<string, unknown>, field: string): string {
  const value = o[field]
  if (typeof value !== 'string') throw invalid(`${field} must be a string`)
  return parsePeerId(value)
}

function optionalPeerId(o: Record<string, unknown>, field: string): string | undefined {
  return o[field] === undefined ? undefined : peerIdField(o, field)
}

function textField(o: Record<string, unknown>, field: string): string {
  const value = o[field]
  if (typeof value !== 'string') throw invalid(`${field} must be a string`)
  if (value === '') throw invalid(`${field} must not be empty`)
  return value
}

function optionalText(o: Record<string, unknown>, field: string): string | undefined {
  return o[field] === undefined ? undefined : textField(o, field)
}

function optionalLimit(o: Record<string, unknown>, field: string): number | undefined {
  const value = o[field]
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw invalid(`${field} must be a positive integer`)
  }
  return value
}

function refOf(o: Record<string, unknown>): Ref | undefined {
  const ref = o.ref
  if (ref === undefined) return undefined
  if (typeof ref === 'number' && Number.isFinite(ref)) return ref
  if (typeof ref === 'string' && ref.length <= MAX_REF_LENGTH) return ref
  throw invalid(`ref must be a finite number or a string of at most ${MAX_REF_LENGTH} characters`)
}

function intentOf(o: Record<string, unknown>): ClientIntent {
  if (o.cmd === undefined) throw invalid('missing field "cmd"')
  if (typeof o.cmd !== 'string') throw invalid('cmd must be a string')
  const cmd = o.cmd
  if (!isCommand(cmd)) throw new DecodeError('ERR_UNKNOWN_COMMAND', `unknown command ${shown(cmd)}`)
  const allowed = FIELDS[cmd]
  for (const key of Object.keys(o)) {
    if (key !== 'cmd' && key !== 'ref' && !allowed.includes(key)) throw invalid(`${cmd} has no field ${shown(key)}`)
  }
  for (const key of allowed) {
    // null is refused like any other wrong type; an absent field is what "optional" means.
    if (o[key] === null) throw invalid(`${key} must not be null`)
  }
  switch (cmd) {
    case 'add': {
      const peerId = peerIdField(o, 'peerId')
      const name = optionalText(o, 'name')
      return name === undefined ? { cmd, peerId } : { cmd, peerId, name }
    }
    case 'accept':
    case 'refuse':
      return { cmd, peerId: peerIdField(o, 'peerId') }
    case 'send': {
      const peerId = peerIdField(o, 'peerId')
      return { cmd, peerId, body: textField(o, 'body') }
    }
    case 'contacts':
    case 'quit':
      return { cmd }
    case 'history': {
      const peerId = peerIdField(o, 'peerId')
      const limit = optionalLimit(o, 'limit')
      return limit === undefined ? { cmd, peerId } : { cmd, peerId, limit }
    }
    case 'retry': {
      const peerId = optionalPeerId(o, 'peerId')
      return peerId === undefined ? { cmd } : { cmd, peerId }
    }
  }
}

/**
 * Parses one command line (already decoded, without its line feed). Never throws: a bad line gives the typed
 * error to report, plus the line's `ref` when that much could be read.
 */
export function parseCommand(line: string): ParsedCommand {
  if (typeof line !== 'string') return { ok: false, error: invalid('line must be a string') }
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return { ok: false, error: new DecodeError('ERR_DECODE', 'line is not valid JSON') }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: invalid('a command must be a JSON object') }
  }
  const o = value as Record<string, unknown>
  let ref: Ref | undefined
  try {
    ref = refOf(o)
  } catch (err) {
    return { ok: false, error: typed(err, 'internal error') }
  }
  const withRef = ref === undefined ? {} : { ref }
  try {
    return { ok: true, intent: intentOf(o), ...withRef }
  } catch (err) {
    return { ok: false, error: typed(err, 'internal error'), ...withRef }
  }
}

/**
 * One JSON text on one line. U+2028/U+2029 are escaped too, so readers that also split on Unicode line
 * separators (Python's splitlines, for one) still see one line per object.
 */
export function jsonLine(value: object): string {
  return `${JSON.stringify(value).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`)}\n`
}

export function eventLine(event: ClientEvent): string {
  return jsonLine(event)
}

export function errorLine(error: P2PMessError, ref?: Ref): string {
  return jsonLine({ type: 'error', ...(ref === undefined ? {} : { ref }), code: error.code, message: error.message })
}

export function resultLine(result: IntentResult, ref?: Ref): string {
  return jsonLine({ type: 'result', ...(ref === undefined ? {} : { ref }), ...result })
}

async function dispatchSafely(handle: ClientHandle, intent: ClientIntent): Promise<IntentResult> {
  try {
    return await handle.dispatch(intent)
  } catch (err) {
    const error = typed(err, 'internal error')
    return { ok: false, code: error.code, message: error.message }
  }
}

type Line = { kind: 'line'; bytes: Uint8Array } | { kind: 'too-large' }

/** Splits the input into lines of at most MAX_LINE_BYTES; a longer line is reported once and skipped whole. */
async function* readLines(input: Readable): AsyncGenerator<Line> {
  let parts: Uint8Array[] = []
  let size = 0
  let skipping = false
  for await (const chunk of input) {
    const bytes = typeof chunk === 'string' ? utf8(chunk) : chunk instanceof Uint8Array ? chunk : undefined
    if (bytes === undefined) continue
    let start = 0
    for (;;) {
      const nl = bytes.indexOf(0x0a, start)
      const piece = bytes.subarray(start, nl < 0 ? bytes.length : nl)
      if (!skipping) {
        if (size + piece.length > MAX_LINE_BYTES) {
          skipping = true
          parts = []
          size = 0
          yield { kind: 'too-large' }
        } else if (piece.length > 0) {
          parts.push(piece)
          size += piece.length
        }
      }
      if (nl < 0) break
      if (!skipping) yield { kind: 'line', bytes: concatBytes(...parts) }
      parts = []
      size = 0
      skipping = false
      start = nl + 1
    }
  }
  if (!skipping && size > 0) yield { kind: 'line', bytes: concatBytes(...parts) }
}

function drained(output: Writable): Promise<void> {
  if (!output.writableNeedDrain || output.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      output.off('drain', done)
      output.off('close', done)
      output.off('error', done)
      resolve()
    }
    output.on('drain', done)
    output.on('close', done)
    output.on('error', done)
  })
}

/** What one input line asks for: a line to write, and whether it was `quit`. */
async function handleLine(handle: ClientHandle, line: Line): Promise<{ out: string; quit: boolean }> {
  if (line.kind === 'too-large') {
    return { out: errorLine(new DecodeError('ERR_TOO_LARGE', `line is longer than ${MAX_LINE_BYTES} bytes`)), quit: false }
  }
  let text: string
  try {
    text = fromUtf8(line.bytes)
  } catch (err) {
    return { out: errorLine(typed(err, 'internal error')), quit: false }
  }
  if (text.endsWith('\r')) text = text.slice(0, -1)
  if (text.trim() === '') return { out: '', quit: false }
  const parsed = parseCommand(text)
  if (!parsed.ok) return { out: errorLine(parsed.error, parsed.ref), quit: false }
  const result = await dispatchSafely(handle, parsed.intent)
  return { out: resultLine(result, parsed.ref), quit: parsed.intent.cmd === 'quit' }
}

/**
 * Runs the headless protocol until `quit` or the end of `input`, then stops the handle and resolves (or rejects
 * with the handle's stop error, after reporting it as an error line). If `output` fails (the reader went away),
 * reading stops and `input` is destroyed. `output` is never ended: it may be the process's stdout.
 */
export async function runHeadless(handle: ClientHandle, io: { input: Readable; output: Writable }): Promise<void> {
  const { input, output } = io ?? {}
  if (!(input instanceof Readable)) throw new InvalidArgumentError('io.input must be a Readable stream')
  if (!(output instanceof Writable)) throw new InvalidArgumentError('io.output must be a Writable stream')
  let broken = false
  const write = (text: string): void => {
    if (!broken && text !== '') output.write(text)
  }
  const onOutputError = (): void => {
    broken = true
    input.destroy()
  }
  output.on('error', onOutputError)
  const off = handle.onEvent((event) => {
    let text: string
    try {
      text = eventLine(event)
    } catch (err) {
      text = errorLine(typed(err, 'could not encode an event'))
    }
    write(text)
  })
  try {
    for await (const line of readLines(input)) {
      const { out, quit } = await handleLine(handle, line)
      write(out)
      if (quit || broken) break
      await drained(output)
    }
  } catch (err) {
    // The input failed (or was destroyed because the output did): same as its end.
    if (!broken) write(errorLine(typed(err, 'input failed')))
  }
  let stopError: P2PMessError | undefined
  try {
    await handle.stop()
  } catch (err) {
    stopError = typed(err, 'stop failed')
    write(errorLine(stopError))
  }
  off()
  await drained(output)
  // onOutputError stays attached: a late EPIPE on a stdout we leave behind must not crash the process.
  if (stopError !== undefined) throw stopError
}
