/**
 * Minimal structured logging. The client never logs to the terminal it draws on: the TUI and headless modes
 * write to a file in the data dir. Callers pass facts, never secrets (keys, passphrases, message bodies).
 */
import { appendFileSync } from 'node:fs'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>

export interface Logger {
  debug(message: string, fields?: LogFields): void
  info(message: string, fields?: LogFields): void
  warn(message: string, fields?: LogFields): void
  error(message: string, fields?: LogFields): void
}

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 }

function makeLogger(write: (line: string) => void, minLevel: LogLevel): Logger {
  const log = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (ORDER[level] < ORDER[minLevel]) return
    write(JSON.stringify({ t: new Date().toISOString(), level, msg: message, ...fields }) + '\n')
  }
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') }
}

/** Appends JSON lines to `path` (created 0600). Synchronous appends keep ordering and survive a crash. */
export function fileLogger(path: string, minLevel: LogLevel = 'info'): Logger {
  return makeLogger((line) => appendFileSync(path, line, { mode: 0o600 }), minLevel)
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }
