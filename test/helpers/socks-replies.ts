/**
 * The SOCKS5 reply bytes the dialer knows, for test/socks-errors.test.ts and test/dialer.test.ts: RFC 1928 §6 and
 * tor's ExtendedErrors (proposal 304 §2.2), written out by hand, independently of the module's table, so a wrong
 * row there is caught.
 */
import type { SocksCode } from '../../src/errors.js'

export const KNOWN_SOCKS_REPLIES: readonly [reply: number, code: SocksCode, transient: boolean][] = [
  [0x01, 'ERR_SOCKS_GENERAL', true],
  [0x02, 'ERR_SOCKS_NOT_ALLOWED', false],
  [0x03, 'ERR_SOCKS_NETWORK_UNREACHABLE', false],
  [0x04, 'ERR_SOCKS_HOST_UNREACHABLE', false],
  [0x05, 'ERR_SOCKS_CONNECTION_REFUSED', false],
  [0x06, 'ERR_SOCKS_TTL_EXPIRED', true],
  [0x07, 'ERR_SOCKS_COMMAND_UNSUPPORTED', false],
  [0x08, 'ERR_SOCKS_ADDRESS_UNSUPPORTED', false],
  [0xf0, 'ERR_ONION_NOT_FOUND', true],
  [0xf1, 'ERR_ONION_INVALID_DESCRIPTOR', false],
  [0xf2, 'ERR_ONION_INTRO_FAILED', true],
  [0xf3, 'ERR_ONION_REND_FAILED', true],
  [0xf4, 'ERR_ONION_AUTH_MISSING', false],
  [0xf5, 'ERR_ONION_AUTH_BAD', false],
  [0xf6, 'ERR_ONION_BAD_ADDRESS', false],
  [0xf7, 'ERR_ONION_INTRO_TIMEOUT', true],
]
