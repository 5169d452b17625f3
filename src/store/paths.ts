/**
 * Where the client keeps its data, after the XDG Base Directory Specification
 * (https://specifications.freedesktop.org/basedir-spec/latest/): `$XDG_DATA_HOME/p2pmess`, falling back to
 * `~/.local/share/p2pmess`. `$P2PMESS_DATA_DIR` overrides both (tests, several accounts on one machine).
 */
import { homedir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'

export type Env = Readonly<Record<string, string | undefined>>

/** The data directory, as an absolute path. */
export function defaultDataDir(env: Env = process.env): string {
  const override = env.P2PMESS_DATA_DIR
  if (override !== undefined && override !== '') return resolve(override)
  const xdg = env.XDG_DATA_HOME
  // XDG basedir: "If an implementation encounters a relative path in any of these variables it should
  // consider the path invalid and ignore it" — and an empty value means unset.
  if (xdg !== undefined && isAbsolute(xdg)) return join(xdg, 'p2pmess')
  const home = env.HOME !== undefined && isAbsolute(env.HOME) ? env.HOME : homedir()
  return join(home, '.local', 'share', 'p2pmess')
}

/** The account file: public fields in clear, secrets in a vault envelope. */
export function accountPath(dataDir: string): string {
  return join(dataDir, 'account.json')
}

/** The level database directory (contacts, outbox, history, own state). */
export function databasePath(dataDir: string): string {
  return join(dataDir, 'db')
}
