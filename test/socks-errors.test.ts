import test from 'ava'
import { InvalidArgumentError, P2PMessError, SocksError, TorError } from '../src/errors.js'
import { isTransientSocksError, SOCKS_REPLIES, socksReplyError } from '../src/tor/socks-errors.js'
import { KNOWN_SOCKS_REPLIES } from './helpers/socks-replies.js'

test('each known reply byte maps to its code, transience and a user-facing message', (t) => {
  t.deepEqual([...SOCKS_REPLIES.keys()].sort((a, b) => a - b), KNOWN_SOCKS_REPLIES.map(([r]) => r))
  for (const [reply, code, transient] of KNOWN_SOCKS_REPLIES) {
    const err = socksReplyError(reply, { host: 'x.onion', port: 80 })
    t.true(err instanceof SocksError)
    t.is(err.code, code)
    t.is(isTransientSocksError(err), transient, `0x${reply.toString(16)}`)
    t.deepEqual(err.details, { host: 'x.onion', port: 80, reply })
    t.true(err.message.length > 20 && /^[A-Z]/.test(err.message))
    t.false(err.message.includes('x.onion'), 'destinations go in details, not in the message')
    t.is(SOCKS_REPLIES.get(reply)?.code, code)
    t.true(Object.isFrozen(SOCKS_REPLIES.get(reply)))
  }
  t.regex(socksReplyError(0xf0).message, /not published right now — they may be offline/)
})

test('every other non-zero byte is ERR_SOCKS_GENERAL (treated like 0x01) and keeps the byte', (t) => {
  let unknown = 0
  for (let reply = 1; reply <= 0xff; reply++) {
    const err = socksReplyError(reply)
    t.true(err instanceof SocksError)
    if (SOCKS_REPLIES.has(reply)) continue
    unknown++
    t.is(err.code, 'ERR_SOCKS_GENERAL')
    t.true(isTransientSocksError(err))
    t.is(err.details?.['reply'], reply)
    t.true(err.message.includes(`0x${reply.toString(16).padStart(2, '0')}`))
  }
  t.is(unknown, 255 - KNOWN_SOCKS_REPLIES.length)
})

test('socksReplyError rejects non-bytes and success', (t) => {
  for (const bad of [0, -1, 256, 1.5, Number.NaN, '1', undefined, null]) {
    t.throws(() => socksReplyError(bad as number), { instanceOf: InvalidArgumentError }, String(bad))
  }
})

test('isTransientSocksError is false for anything that is not a transient SocksError', (t) => {
  for (const value of [undefined, null, 'ERR_ONION_NOT_FOUND', { code: 'ERR_ONION_NOT_FOUND' }, new Error('ERR_ONION_NOT_FOUND')]) {
    t.false(isTransientSocksError(value))
  }
  t.false(isTransientSocksError(new TorError('ERR_TOR_EXITED', 'tor exited')))
  t.false(isTransientSocksError(new P2PMessError('ERR_SOCKS_PROXY_UNREACHABLE', 'down')))
  t.false(isTransientSocksError(new SocksError('ERR_CONNECT_TIMEOUT', 'slow')))
  t.false(isTransientSocksError(new SocksError('ERR_DIAL_ABORTED', 'cancelled')))
  t.true(isTransientSocksError(new SocksError('ERR_ONION_INTRO_TIMEOUT', 'intro timed out')))
})
