/**
 * SOCKS5 reply codes -> typed errors. Pure: a data table and two lookups, no I/O.
 *
 * Codes 0x01–0x08 are RFC 1928 §6 ("Replies", field REP). Codes 0xF0–0xF7 are tor's onion-service extended
 * errors, sent only on a SocksPort with the `ExtendedErrors` flag (tor(1) "SocksPort … ExtendedErrors";
 * torspec proposal 304 §2.2 and socks-extensions; 0xF6 came with tor ticket #30022, 0xF7 later, both in tor(1)).
 *
 * `transient` says whether the same dial may succeed later without anyone changing configuration: the peer's
 * descriptor not (yet) published, an introduction or rendezvous that failed on the way, or a tor-side timeout.
 * The dialer's `dialWithRetry` retries exactly these; everything else is reported at once.
 */
import { InvalidArgumentError, SocksError, type SocksCode } from '../errors.js'

export interface SocksReplyInfo {
  /** The REP byte as sent by the proxy. */
  readonly reply: number
  readonly code: SocksCode
  readonly transient: boolean
  /** Written for the user. */
  readonly message: string
}

type Row = readonly [reply: number, code: SocksCode, transient: boolean, message: string]

const ROWS: readonly Row[] = [
  // RFC 1928 §6
  [0x01, 'ERR_SOCKS_GENERAL', true, 'Tor could not complete the connection (general failure); trying again may help.'],
  [0x02, 'ERR_SOCKS_NOT_ALLOWED', false, "Tor's exit policy does not allow this connection."],
  [0x03, 'ERR_SOCKS_NETWORK_UNREACHABLE', false, 'Tor reports that the destination network is unreachable.'],
  [0x04, 'ERR_SOCKS_HOST_UNREACHABLE', false, 'Tor could not reach the destination host (the name may not exist).'],
  [0x05, 'ERR_SOCKS_CONNECTION_REFUSED', false, 'The destination refused the connection.'],
  [0x06, 'ERR_SOCKS_TTL_EXPIRED', true, 'Tor timed out while building the connection; trying again may help.'],
  [0x07, 'ERR_SOCKS_COMMAND_UNSUPPORTED', false, "Tor's SOCKS port does not support this command."],
  [0x08, 'ERR_SOCKS_ADDRESS_UNSUPPORTED', false, "Tor's SOCKS port does not support this kind of address."],
  // tor ExtendedErrors (proposal 304 §2.2)
  [0xf0, 'ERR_ONION_NOT_FOUND', true, "The contact's onion service is not published right now — they may be offline."],
  [0xf1, 'ERR_ONION_INVALID_DESCRIPTOR', false, "The contact's onion service published a descriptor that is invalid (unparsable or badly signed)."],
  [0xf2, 'ERR_ONION_INTRO_FAILED', true, "The contact's onion service could not be introduced to — it may have just gone offline or restarted."],
  [0xf3, 'ERR_ONION_REND_FAILED', true, "Tor could not finish the rendezvous with the contact's onion service; trying again may help."],
  [0xf4, 'ERR_ONION_AUTH_MISSING', false, "The contact's onion service requires client authorization, which we do not have."],
  [0xf5, 'ERR_ONION_AUTH_BAD', false, "The contact's onion service rejected our client authorization."],
  [0xf6, 'ERR_ONION_BAD_ADDRESS', false, 'The onion address is not valid.'],
  [0xf7, 'ERR_ONION_INTRO_TIMEOUT', true, "The contact's onion service did not answer the introduction in time — it may be offline or overloaded."],
]

/** Every reply code this module knows, keyed by the REP byte. */
export const SOCKS_REPLIES: ReadonlyMap<number, SocksReplyInfo> = new Map(
  ROWS.map(([reply, code, transient, message]) => [reply, Object.freeze({ reply, code, transient, message })]),
)

const TRANSIENT_CODES: ReadonlySet<SocksCode> = new Set(ROWS.filter((r) => r[2]).map((r) => r[1]))

/**
 * The typed error for a failed SOCKS5 CONNECT whose reply byte was `reply`. An unknown non-zero byte becomes
 * ERR_SOCKS_GENERAL, like 0x01; the byte is kept in `details.reply` either way.
 */
export function socksReplyError(reply: number, details: Readonly<Record<string, unknown>> = {}): SocksError {
  if (!Number.isInteger(reply) || reply < 0 || reply > 0xff) {
    throw new InvalidArgumentError(`reply must be a byte (0–255), got ${String(reply)}`)
  }
  if (reply === 0x00) throw new InvalidArgumentError('reply 0x00 means success; it is not an error')
  const info = SOCKS_REPLIES.get(reply)
  const hex = `0x${reply.toString(16).padStart(2, '0')}`
  if (info === undefined) {
    return new SocksError('ERR_SOCKS_GENERAL', `Tor's SOCKS port refused the connection with unknown reply ${hex}.`, {
      details: { ...details, reply },
    })
  }
  return new SocksError(info.code, info.message, { details: { ...details, reply } })
}

/** True when `err` is a SOCKS failure that may clear by itself, so retrying the same dial later makes sense. */
export function isTransientSocksError(err: unknown): err is SocksError {
  return err instanceof SocksError && TRANSIENT_CODES.has(err.code)
}
