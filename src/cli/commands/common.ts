/**
 * What every command shares: the command table shape, option declarations that drive both node:util parseArgs
 * and the generated --help, the usage error (exit 2), configuration from flags and environment, and the
 * "what to do next" hints printed under runtime errors (exit 1).
 */
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { InvalidArgumentError, P2PMessError, describeError } from '../../errors.js'
import { defaultDataDir, type Env } from '../../store/paths.js'
import type { NetworkJoin } from '../../tor/process.js'

export const EXIT_OK = 0
export const EXIT_RUNTIME = 1
export const EXIT_USAGE = 2

/** The process around a command; tests pass their own streams and environment. */
export interface CliIo {
  env: Env
  stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown }
  stdout: Writable & { isTTY?: boolean }
  stderr: Writable
  /** Resolves on the first SIGINT/SIGTERM (or whatever the caller treats as "stop now"). */
  interrupted: Promise<string>
}

export interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  multiple?: boolean
  /** Placeholder shown in help, e.g. `<url>`. */
  value?: string
  /** Environment variable that supplies the default. */
  env?: string
  description: string
}

export type OptionTable = Readonly<Record<string, OptionSpec>>
export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>

export interface Command {
  name: string
  /** One line for the command list of `p2pmess --help`. */
  brief: string
  summary: string
  /** Text after `p2pmess <name>` in the usage line. */
  usage: string
  /** Extra paragraphs after the options (examples, notes). */
  notes?: string
  options: OptionTable
  run(values: OptionValues, io: CliIo): Promise<number>
}

/** Wrong use of the command line: printed with the command's help, exit code 2. */
export class UsageError extends InvalidArgumentError {}

export const HELP_OPTION: OptionTable = { help: { type: 'boolean', short: 'h', description: 'show this help' } }

/** Options of every command that runs a client (start, init). */
export const ACCOUNT_OPTIONS: OptionTable = {
  'data-dir': { type: 'string', value: '<dir>', env: 'P2PMESS_DATA_DIR', description: 'account and client data (default: $XDG_DATA_HOME/p2pmess)' },
  'passphrase-file': { type: 'string', value: '<file>', description: 'read the passphrase from a file (else $P2PMESS_PASSPHRASE, else a hidden prompt)' },
}

export const TOR_OPTIONS: OptionTable = {
  'tor-path': { type: 'string', value: '<path>', env: 'P2PMESS_TOR_PATH', description: 'the tor binary (default: tor from PATH)' },
  network: { type: 'string', value: '<join.json>', env: 'P2PMESS_NETWORK', description: 'join a private Tor network instead of the real one' },
}

/** Parses `argv` against `command.options` (strict: unknown flags and stray arguments are usage errors). */
export function parseCommandArgs(command: Command, argv: string[]): OptionValues {
  const options: NonNullable<ParseArgsConfig['options']> = {}
  for (const [name, spec] of Object.entries(command.options)) {
    options[name] = {
      type: spec.type,
      ...(spec.short === undefined ? {} : { short: spec.short }),
      ...(spec.multiple === true ? { multiple: true } : {}),
    }
  }
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values
  } catch (cause) {
    // parseArgs errors are ERR_PARSE_ARGS_* with messages such as "Unknown option '--x'".
    const message = cause instanceof Error ? cause.message.replace(/\. To specify a positional argument.*$/s, '') : String(cause)
    throw new UsageError(message, { cause })
  }
}

function optionLabel(name: string, spec: OptionSpec): string {
  const short = spec.short === undefined ? '    ' : `-${spec.short}, `
  return `${short}--${name}${spec.value === undefined ? '' : ` ${spec.value}`}`
}

export function commandHelp(command: Command): string {
  const rows = Object.entries(command.options).map(([name, spec]) => {
    const env = spec.env === undefined ? '' : ` [env ${spec.env}]`
    const repeat = spec.multiple === true ? ' (repeatable)' : ''
    return [optionLabel(name, spec), `${spec.description}${repeat}${env}`] as const
  })
  const width = Math.max(...rows.map(([label]) => label.length))
  const lines = [
    `Usage: p2pmess ${command.name}${command.usage === '' ? '' : ` ${command.usage}`}`,
    '',
    command.summary,
    '',
    'Options:',
    ...rows.map(([label, text]) => `  ${label.padEnd(width)}  ${text}`),
  ]
  if (command.notes !== undefined) lines.push('', command.notes)
  return lines.join('\n') + '\n'
}

/** A string option from the flag, else from its environment variable. */
export function stringOption(values: OptionValues, table: OptionTable, name: string, env: Env): string | undefined {
  const value = values[name]
  if (typeof value === 'string') return value
  const variable = table[name]?.env
  const fromEnv = variable === undefined ? undefined : env[variable]
  return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv
}

export function dataDirOption(values: OptionValues, env: Env): string {
  const flag = values['data-dir']
  if (typeof flag === 'string') {
    if (flag === '') throw new UsageError('--data-dir must not be empty')
    return resolve(flag)
  }
  return defaultDataDir(env)
}

/**
 * Directory URLs from `--directory` (repeatable) or P2PMESS_DIRECTORIES (comma-separated). Each must be an
 * http(s) URL with no credentials, query or fragment; duplicates are dropped.
 */
export function directoriesOption(values: OptionValues, env: Env): string[] {
  const flags = values.directory
  const raw = Array.isArray(flags)
    ? flags.filter((v): v is string => typeof v === 'string')
    : (env.P2PMESS_DIRECTORIES ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '')
  const urls = raw.map(parseDirectoryUrl)
  return [...new Set(urls)]
}

export function parseDirectoryUrl(text: string): string {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`directory ${JSON.stringify(text)} is not a URL (expected e.g. http://<56 chars>.onion)`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`directory ${JSON.stringify(text)} must be an http:// or https:// URL`)
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new UsageError(`directory ${JSON.stringify(text)} must not carry credentials, a query or a fragment`)
  }
  return url.href.replace(/\/$/, '')
}

/** `--heartbeat <seconds>`: a number from 1 to 3600, returned in milliseconds. */
export function heartbeatOption(values: OptionValues): number | undefined {
  const text = values.heartbeat
  if (typeof text !== 'string') return undefined
  const seconds = Number(text)
  if (!/^\d+(\.\d+)?$/.test(text) || !(seconds >= 1 && seconds <= 3600)) {
    throw new UsageError(`--heartbeat must be a number of seconds from 1 to 3600 (got ${JSON.stringify(text)})`)
  }
  return Math.round(seconds * 1000)
}

/** `--port <n>`: 0..65535 (0 = any free port). */
export function portOption(values: OptionValues): number | undefined {
  const text = values.port
  if (typeof text !== 'string') return undefined
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new UsageError('--port must be a port number from 0 to 65535')
  return Number(text)
}

/** Reads and checks a network join file (`p2pmess network` writes one). */
export async function readNetworkJoin(path: string): Promise<NetworkJoin> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (cause) {
    throw new InvalidArgumentError(`cannot read the network join file ${path}`, { cause })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (cause) {
    throw new InvalidArgumentError(`network join file ${path} is not valid JSON`, { cause })
  }
  const bad = (): never => {
    throw new InvalidArgumentError(`network join file ${path} is not a join file: expected {"torrcLines": [...], "relays"?: [...]}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return bad()
  const { torrcLines, relays } = value as Record<string, unknown>
  if (!Array.isArray(torrcLines) || !torrcLines.every((l) => typeof l === 'string' && !/[\r\n]/.test(l))) return bad()
  // Joining a private network must never silently turn into joining the real one.
  if (!torrcLines.includes('TestingTorNetwork 1') || !torrcLines.some((l) => l.startsWith('DirAuthority '))) {
    throw new InvalidArgumentError(`network join file ${path} has no "TestingTorNetwork 1" and DirAuthority lines`)
  }
  if (relays === undefined) return { torrcLines }
  if (!Array.isArray(relays) || !relays.every((r) => typeof r === 'string' && /^[0-9A-F]{40}$/.test(r))) return bad()
  return { torrcLines, relays }
}

/** The next step for a runtime error, by code; undefined when the message says it all. */
export function nextStep(err: unknown, context: { dataDir?: string } = {}): string | undefined {
  if (!(err instanceof P2PMessError)) return undefined
  const dir = context.dataDir === undefined ? '' : ` --data-dir ${context.dataDir}`
  switch (err.code) {
    case 'ERR_TOR_NOT_FOUND':
      return 'install tor (`sudo apt-get install tor`), or point --tor-path / P2PMESS_TOR_PATH at the binary'
    case 'ERR_NO_ACCOUNT':
      return `create an account first: p2pmess init${dir}`
    case 'ERR_ACCOUNT_EXISTS':
      return `use it with \`p2pmess start${dir}\`, or pick another --data-dir for a second account`
    case 'ERR_WRONG_PASSPHRASE':
      return 'check the passphrase (--passphrase-file, P2PMESS_PASSPHRASE or the prompt) and try again; the account was not changed'
    case 'ERR_STORAGE_CORRUPT':
      return `the account in${dir === '' ? ' the data directory' : dir.replace(' --data-dir', '')} is damaged: restore it from a backup, or move it away and run \`p2pmess init\` for a new identity`
    case 'ERR_NO_PASSPHRASE':
      return 'pass --passphrase-file <file>, set P2PMESS_PASSPHRASE, or run in an interactive terminal'
    case 'ERR_TOR_PORT_IN_USE':
      return 'another program holds that port; stop it or choose another port'
    case 'ERR_DIRECTORY_UNREACHABLE':
      return 'check the --directory URL and that the directory is running; on a private network pass the same --network as the directory'
    case 'ERR_NETWORK_TIMEOUT':
    case 'ERR_TOR_START_TIMEOUT':
      return 'tor did not finish starting; check that the network is up (and --network points at its join file), then retry'
    default:
      return undefined
  }
}

/** Prints a runtime error and its next step; returns the exit code. Usage errors pass through to the dispatcher. */
export function reportError(io: CliIo, err: unknown, context: { dataDir?: string } = {}): number {
  if (err instanceof UsageError) throw err
  const hint = nextStep(err, context)
  io.stderr.write(`p2pmess: error: ${describeError(err)}\n${hint === undefined ? '' : `  next: ${hint}\n`}`)
  return EXIT_RUNTIME
}

/** "No directory configured" is a configuration mistake: say how to pass one. */
export function requireDirectories(directories: string[]): string[] {
  if (directories.length === 0) {
    throw new UsageError(
      'no directory configured: pass --directory <url> (repeatable) or set P2PMESS_DIRECTORIES=<url>[,<url>...]; ' +
        'to try P2PMess without one, run `npm start` (the offline sandbox)',
    )
  }
  return directories
}

/** The TUI draws on a terminal; anywhere else, point at --headless instead of drawing garbage. */
export function requireTerminal(io: CliIo): void {
  if (io.stdin.isTTY !== true || io.stdout.isTTY !== true) {
    throw new UsageError('the terminal UI needs an interactive terminal; use --headless for JSON lines on stdin/stdout')
  }
}
