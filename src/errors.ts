/**
 * The one error tree of P2PMess.
 *
 * Every error the project raises is a `P2PMessError` (or a subclass) with a stable, machine-readable `code`.
 * Nothing rejects or throws with a bare string. Subclasses group codes by area so callers can branch on
 * `instanceof` for an area and on `code` for the exact case. Messages are written for the user; they never
 * contain secret material.
 *
 *   P2PMessError
 *   ├── InvalidArgumentError   caller passed something malformed (validated at the public boundary)
 *   ├── DecodeError            hostile or malformed bytes / JSON from outside
 *   ├── CryptoError            Noise state, authentication tags, signatures, low-order keys, nonces
 *   ├── TorError               the tor process, its control port, the private network
 *   ├── SocksError             dialing through tor's SOCKS port (incl. onion-service extended errors)
 *   ├── DirectoryError         directory server and directory client
 *   ├── StorageError           accounts, passphrases, data directory
 *   └── SessionError           peer sessions on top of Noise
 */

export type InvalidArgumentCode = 'ERR_INVALID_ARGUMENT'

export type DecodeCode =
  | 'ERR_DECODE'
  | 'ERR_BASE64'
  | 'ERR_TOO_LARGE'
  | 'ERR_UNSUPPORTED_VERSION'
  | 'ERR_UNKNOWN_MESSAGE_TYPE'
  | 'ERR_FRAME_TOO_LARGE'
  | 'ERR_PEER_ID_FORMAT'
  | 'ERR_PEER_ID_CHECKSUM'
  | 'ERR_ONION_ADDRESS'
  | 'ERR_UNKNOWN_COMMAND'

export type CryptoCode =
  | 'ERR_NOISE_PROTOCOL_NAME'
  | 'ERR_NOISE_STATE'
  | 'ERR_NOISE_MISSING_KEY'
  | 'ERR_NOISE_MESSAGE'
  | 'ERR_NOISE_DECRYPT'
  | 'ERR_NOISE_NONCE_EXHAUSTED'
  | 'ERR_LOW_ORDER_KEY'
  | 'ERR_BAD_SIGNATURE'
  | 'ERR_KEY_FORMAT'

export type TorCode =
  | 'ERR_TOR_NOT_FOUND'
  | 'ERR_TOR_EXITED'
  | 'ERR_TOR_START_TIMEOUT'
  | 'ERR_TOR_PORT_IN_USE'
  | 'ERR_TOR_CONFIG'
  | 'ERR_TOR_STOPPED'
  | 'ERR_CONTROL_PROTOCOL'
  | 'ERR_CONTROL_FAILED'
  | 'ERR_CONTROL_CLOSED'
  | 'ERR_CONTROL_TIMEOUT'
  | 'ERR_CONTROL_AUTH'
  | 'ERR_NETWORK_TIMEOUT'
  | 'ERR_NETWORK_STARTUP'
  | 'ERR_ONION_PUBLISH_TIMEOUT'
  | 'ERR_TOR_RESTART_FAILED'

export type SocksCode =
  | 'ERR_SOCKS_GENERAL'
  | 'ERR_SOCKS_NOT_ALLOWED'
  | 'ERR_SOCKS_NETWORK_UNREACHABLE'
  | 'ERR_SOCKS_HOST_UNREACHABLE'
  | 'ERR_SOCKS_CONNECTION_REFUSED'
  | 'ERR_SOCKS_TTL_EXPIRED'
  | 'ERR_SOCKS_COMMAND_UNSUPPORTED'
  | 'ERR_SOCKS_ADDRESS_UNSUPPORTED'
  | 'ERR_ONION_NOT_FOUND'
  | 'ERR_ONION_INVALID_DESCRIPTOR'
  | 'ERR_ONION_INTRO_FAILED'
  | 'ERR_ONION_REND_FAILED'
  | 'ERR_ONION_AUTH_MISSING'
  | 'ERR_ONION_AUTH_BAD'
  | 'ERR_ONION_BAD_ADDRESS'
  | 'ERR_ONION_INTRO_TIMEOUT'
  | 'ERR_CONNECT_TIMEOUT'
  | 'ERR_SOCKS_PROXY_UNREACHABLE'
  | 'ERR_DIAL_ABORTED'

export type DirectoryCode =
  | 'ERR_DIRECTORY_NOT_FOUND'
  | 'ERR_DIRECTORY_INVALID_RECORD'
  | 'ERR_DIRECTORY_UNREACHABLE'
  | 'ERR_DIRECTORY_REJECTED'
  | 'ERR_DIRECTORY_RESPONSE'
  | 'ERR_DIRECTORY_STORE'
  | 'ERR_DIRECTORY_STALE_SEQ'
  | 'ERR_DIRECTORY_RATE_LIMITED'

export type StorageCode =
  | 'ERR_WRONG_PASSPHRASE'
  | 'ERR_STORAGE_CORRUPT'
  | 'ERR_NO_ACCOUNT'
  | 'ERR_ACCOUNT_EXISTS'
  | 'ERR_STORAGE_IO'
  | 'ERR_NO_PASSPHRASE'

export type SessionCode =
  | 'ERR_SESSION_KEY_MISMATCH'
  | 'ERR_SESSION_HANDSHAKE'
  | 'ERR_SESSION_PROTOCOL'
  | 'ERR_SESSION_CLOSED'
  | 'ERR_SESSION_TIMEOUT'
  | 'ERR_UNKNOWN_CONTACT'
  | 'ERR_PEER_UNAUTHENTICATED'
  | 'ERR_SESSION_UNANSWERED'
  | 'ERR_PEER_REFUSED'

export type ErrorCode =
  | InvalidArgumentCode
  | DecodeCode
  | CryptoCode
  | TorCode
  | SocksCode
  | DirectoryCode
  | StorageCode
  | SessionCode
  /** A failure no area classified (a bug); reported instead of crashing, e.g. by the headless mode. */
  | 'ERR_INTERNAL'

export interface ErrorOptions {
  cause?: unknown
  /** Extra, non-secret facts for logs and tests (e.g. the node that timed out, tor's last warning). */
  details?: Readonly<Record<string, unknown>>
}

export class P2PMessError<C extends ErrorCode = ErrorCode> extends Error {
  readonly code: C
  readonly details: Readonly<Record<string, unknown>> | undefined

  constructor(code: C, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.details = options.details
    this.name = new.target.name
  }
}

export class InvalidArgumentError extends P2PMessError<InvalidArgumentCode> {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_INVALID_ARGUMENT', message, options)
  }
}
export class DecodeError extends P2PMessError<DecodeCode> {}
export class CryptoError extends P2PMessError<CryptoCode> {}
export class TorError extends P2PMessError<TorCode> {}
export class SocksError extends P2PMessError<SocksCode> {}
export class DirectoryError extends P2PMessError<DirectoryCode> {}
export class StorageError extends P2PMessError<StorageCode> {}
export class SessionError extends P2PMessError<SessionCode> {}

/** True when `err` is one of ours with the given code. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof P2PMessError && err.code === code
}

/** Turns anything caught into a message fit for a log line or the status bar. */
export function describeError(err: unknown): string {
  if (err instanceof P2PMessError) return `${err.message} [${err.code}]`
  if (err instanceof Error) return err.message
  return String(err)
}
