import test from 'ava'
import { InvalidArgumentError, P2PMessError, TorError } from '../src/errors.js'
import {
  type ControlReply,
  MAX_LINE_LENGTH,
  ReplyReader,
  buildAddOnion,
  buildAuthenticate,
  buildDelOnion,
  buildGetConf,
  buildGetInfo,
  buildOnionClientAuthAdd,
  buildOnionClientAuthRemove,
  buildSetConf,
  buildSetEvents,
  buildSignal,
  parseAddOnion,
  parseAuthChallenge,
  parseBootstrapPhase,
  parseEvent,
  parseGetConf,
  parseGetInfo,
  parseKeywordArgs,
  parseProtocolInfo,
  quoteString,
  readQuotedString,
} from '../src/tor/control-protocol.js'
import { seededRandom } from './helpers/random.js'

const crlf = (...lines: string[]): string => lines.map((l) => `${l}\r\n`).join('')

function one(text: string): ControlReply {
  const replies = new ReplyReader().push(text)
  if (replies.length !== 1) throw new Error(`expected one reply, got ${replies.length}`)
  return replies[0]!
}

const SID = 'pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd'
const SID2 = 'vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd'

// Tor 0.4.9-style transcripts (written for these tests; the GETINFO example follows control-spec §3.9).
const PROTOCOLINFO = crlf(
  '250-PROTOCOLINFO 1',
  '250-AUTH METHODS=COOKIE,SAFECOOKIE,HASHEDPASSWORD COOKIEFILE="/tmp/p2p \\"x\\"\\\\caf\\303\\251/control_auth_cookie"',
  '250-VERSION Tor="0.4.9.3-alpha"',
  '250 OK',
)
const SPEC_GETINFO = crlf('250+desc/name/moria=', '[Descriptor for moria]', '.', '250-version=Tor 0.1.1.0-alpha-cvs', '250 OK')
const NS_ALL = crlf(
  '250+ns/all=',
  'r test000a hQOsp5TYvZJhW1nLGbCGO97Pwng 6Xk0V3a86hwjCLY1t0wVzWCKSTI 2026-11-25 17:40:02 127.0.0.1 5000 7000',
  's Authority Exit Fast Guard HSDir Running Stable V2Dir Valid',
  'w Bandwidth=0 Unmeasured=1',
  'r test001r gyQnRQsOB2RSeovhwbXBd0Qgr2I gpt8pBkh5pLnMgF8hj5ij63jDPk 2026-11-25 17:40:03 127.0.0.1 5001 0',
  's Fast Guard HSDir Running Stable V2Dir Valid',
  '..leading dot line',
  '.',
  '250 OK',
)
const CONFIG_TEXT = crlf(
  '250+config-text=',
  'ControlPort auto',
  'DataDirectory /tmp/tor-data',
  'DisableNetwork 1',
  '.',
  '250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"',
  '250-version=0.4.9.3-alpha',
  '250 OK',
)
const ADD_ONION = crlf(`250-ServiceID=${SID}`, `250-PrivateKey=ED25519-V3:${'A'.repeat(86)}==`, '250 OK')
const E_BOOT = '650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=75 TAG=enough_dirinfo SUMMARY="Loaded enough directory info to build circuits"'
const E_BOOT_WARN =
  '650 STATUS_CLIENT WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=warn HOSTID="$2E1B3" HOSTADDR="127.0.0.1:5000"'
const E_UPLOAD = `650 HS_DESC UPLOAD ${SID} UNKNOWN $8331B4F2E3AB8C42D8A0E6B7A4D1F86E1A2F7D10~test003r lzHlOXfNEZ3RvD5GYr9a5mVRctSFfZK41KN4pl6GrFU HSDIR_INDEX=0A1B`
const E_UPLOADED = `650 HS_DESC UPLOADED ${SID} UNKNOWN $8331B4F2E3AB8C42D8A0E6B7A4D1F86E1A2F7D10~test003r`
const E_FAILED = `650 HS_DESC FAILED ${SID2} NO_AUTH $0011223344556677889900112233445566778899~test004r lzHlOXfNEZ3RvD5GYr9a5mVRctSFfZK41KN4pl6GrFU REASON=NOT_FOUND`
const E_NOTICE = '650 NOTICE Bootstrapped 100% (done): Done'
const E_MULTI_WARN = crlf('650+WARN', 'first line', '..second', '.', '650 OK')
const ERR_552 = crlf('552 Unrecognized key "foo"')

const TRANSCRIPT = [
  PROTOCOLINFO,
  SPEC_GETINFO,
  crlf(E_BOOT),
  NS_ALL,
  E_MULTI_WARN,
  CONFIG_TEXT,
  ADD_ONION,
  crlf(E_UPLOAD, E_UPLOADED, E_FAILED, E_NOTICE, E_BOOT_WARN),
  ERR_552,
].join('')

test('framing: the transcript comes out as the same replies under every fixed chunk size and 500 seeded random chunkings', (t) => {
  const whole = new ReplyReader().push(TRANSCRIPT)
  t.deepEqual(
    whole.map((r) => r.status),
    [250, 250, 650, 250, 650, 250, 250, 650, 650, 650, 650, 650, 552],
  )
  t.deepEqual(whole.map((r) => r.isEvent), whole.map((r) => r.status >= 600))
  let runs = 0
  for (let size = 1; size <= TRANSCRIPT.length; size++) {
    const reader = new ReplyReader()
    const got: ControlReply[] = []
    for (let i = 0; i < TRANSCRIPT.length; i += size) got.push(...reader.push(TRANSCRIPT.slice(i, i + size)))
    t.deepEqual(got, whole, `chunk size ${size}`)
    runs++
  }
  const rand = seededRandom(0xc0ffee)
  for (let n = 0; n < 500; n++) {
    const reader = new ReplyReader()
    const got: ControlReply[] = []
    let i = 0
    while (i < TRANSCRIPT.length) {
      const len = 1 + rand.int(40)
      got.push(...reader.push(TRANSCRIPT.slice(i, i + len)))
      i += len
    }
    t.deepEqual(got, whole, `random chunking ${n}`)
    runs++
  }
  t.log(`${runs} chunkings of a ${TRANSCRIPT.length}-char transcript`)
})

test('framing: data blocks are dot-unescaped; bare LF is tolerated; many replies in one chunk', (t) => {
  const ns = one(NS_ALL)
  t.is(ns.lines.length, 2)
  t.is(ns.lines[0]!.text, 'ns/all=')
  const data = ns.lines[0]!.data!
  t.is(data.split('\n').length, 6)
  t.true(data.endsWith('\n.leading dot line'))
  t.deepEqual(one(NS_ALL.replaceAll('\r\n', '\n')), ns)
  const warn = one(E_MULTI_WARN)
  t.deepEqual(warn.lines, [
    { status: 650, text: 'WARN', data: 'first line\n.second' },
    { status: 650, text: 'OK' },
  ])
  t.true(warn.isEvent)
  t.is(new ReplyReader().push(crlf('250 OK', '250 OK', '650 NOTICE x', '250 OK')).length, 4)
  // An empty data block.
  t.deepEqual(one(crlf('250+config-text=', '.', '250 OK')).lines[0], { status: 250, text: 'config-text=', data: '' })
})

test('framing: events interleaved between the lines of a reply are delivered alone and leave the reply intact', (t) => {
  const lines = CONFIG_TEXT.split('\r\n').slice(0, -1)
  const dataEnd = lines.indexOf('.')
  // Insert an event after every line that is not inside the data block.
  const mixed: string[] = []
  lines.forEach((l, i) => {
    mixed.push(l)
    if (i >= dataEnd && i < lines.length - 1) mixed.push(E_NOTICE)
  })
  mixed.splice(0, 0, E_BOOT)
  const text = crlf(...mixed)
  for (let size = 1; size <= text.length; size++) {
    const reader = new ReplyReader()
    const got: ControlReply[] = []
    for (let i = 0; i < text.length; i += size) got.push(...reader.push(text.slice(i, i + size)))
    const sync = got.filter((r) => !r.isEvent)
    t.is(sync.length, 1)
    t.deepEqual(sync[0], one(CONFIG_TEXT))
    t.is(got.filter((r) => r.isEvent).length, mixed.length - lines.length)
    t.is(got[got.length - 1], sync[0]) // the reply completes after every event that came before its last line
  }
})

test('framing: malformed lines, mixed status codes and endless lines fail with ERR_CONTROL_PROTOCOL, and the reader stays failed', (t) => {
  for (const bad of ['hello\r\n', '25 OK\r\n', '250OK\r\n', '2500 OK\r\n', '250*OK\r\n', '750 X\r\n', '250-a\r\n251 OK\r\n', '\r\n']) {
    const reader = new ReplyReader()
    const err = t.throws(() => reader.push(bad), { instanceOf: TorError })
    t.is(err?.code, 'ERR_CONTROL_PROTOCOL', JSON.stringify(bad))
    t.throws(() => reader.push('250 OK\r\n'), { is: err })
  }
  const reader = new ReplyReader()
  t.throws(() => reader.push('250-' + 'x'.repeat(MAX_LINE_LENGTH)), { instanceOf: TorError, message: /too long/ })
})

test('PROTOCOLINFO: methods, escaped cookie path (\\" \\\\ and octal UTF-8), version; spec NULL example', (t) => {
  t.deepEqual(parseProtocolInfo(one(PROTOCOLINFO)), {
    protocolInfoVersion: 1,
    authMethods: ['COOKIE', 'SAFECOOKIE', 'HASHEDPASSWORD'],
    cookieFile: '/tmp/p2p "x"\\café/control_auth_cookie',
    torVersion: '0.4.9.3-alpha',
  })
  t.deepEqual(parseProtocolInfo(one(crlf('250-PROTOCOLINFO 1', '250-AUTH METHODS=NULL', '250-VERSION Tor="0.2.0.5-alpha"', '250 OK'))), {
    protocolInfoVersion: 1,
    authMethods: ['NULL'],
    torVersion: '0.2.0.5-alpha',
  })
  t.throws(() => parseProtocolInfo(one(crlf('250-PROTOCOLINFO 1', '250 OK'))), { instanceOf: TorError, message: /AUTH/ })
  t.throws(() => parseProtocolInfo(one(crlf('250-PROTOCOLINFO 1', '250-AUTH METHODS=NULL COOKIEFILE="/x', '250 OK'))), {
    instanceOf: TorError,
    message: /unterminated/,
  })
  const err = t.throws(() => parseProtocolInfo(one(crlf('513 No such version "x"'))), { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_FAILED')
  t.deepEqual(err?.details, { status: 513, message: 'No such version "x"' })
})

test('AUTHCHALLENGE: hashes and nonces are 32-byte hex', (t) => {
  const h = 'ab'.repeat(32)
  const n = '0F'.repeat(32)
  const c = parseAuthChallenge(one(crlf(`250 AUTHCHALLENGE SERVERHASH=${h} SERVERNONCE=${n}`)))
  t.is(c.serverHash.length, 32)
  t.is(c.serverHash[0], 0xab)
  t.is(c.serverNonce[31], 0x0f)
  for (const bad of [`250 AUTHCHALLENGE SERVERHASH=${h}`, `250 AUTHCHALLENGE SERVERHASH=${h.slice(2)} SERVERNONCE=${n}`, `250 AUTHCHALLENGE SERVERHASH=${'zz'.repeat(32)} SERVERNONCE=${n}`, '250 OK']) {
    t.throws(() => parseAuthChallenge(one(crlf(bad))), { instanceOf: TorError, message: /AUTHCHALLENGE/ })
  }
})

test('GETINFO: values keep their own "=", data blocks, the spec example, and 552 errors', (t) => {
  const cfg = parseGetInfo(one(CONFIG_TEXT))
  t.is(cfg.get('config-text'), 'ControlPort auto\nDataDirectory /tmp/tor-data\nDisableNetwork 1')
  t.is(cfg.get('status/bootstrap-phase'), 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"')
  t.is(cfg.get('version'), '0.4.9.3-alpha')
  t.deepEqual([...parseGetInfo(one(SPEC_GETINFO))], [
    ['desc/name/moria', '[Descriptor for moria]'],
    ['version', 'Tor 0.1.1.0-alpha-cvs'],
  ])
  t.is(parseGetInfo(one(NS_ALL)).get('ns/all')!.split('\n').filter((l) => l.startsWith('r ')).length, 2)
  const err = t.throws(() => parseGetInfo(one(ERR_552)), { instanceOf: TorError })
  t.is(err?.code, 'ERR_CONTROL_FAILED')
  t.regex(err?.message ?? '', /552: Unrecognized key "foo"/)
  t.throws(() => parseGetInfo(one(crlf('250-novalue', '250 OK'))), { instanceOf: TorError, message: /key=value/ })
  t.throws(() => parseGetInfo(one(crlf('250 version=1'))), { instanceOf: TorError, message: /OK/ })
})

test('bootstrap phase and STATUS_CLIENT events', (t) => {
  t.deepEqual(parseBootstrapPhase('NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"'), {
    type: 'bootstrap',
    severity: 'NOTICE',
    progress: 100,
    tag: 'done',
    summary: 'Done',
  })
  t.deepEqual(parseEvent(one(crlf(E_BOOT))), {
    type: 'bootstrap',
    severity: 'NOTICE',
    progress: 75,
    tag: 'enough_dirinfo',
    summary: 'Loaded enough directory info to build circuits',
  })
  t.deepEqual(parseEvent(one(crlf(E_BOOT_WARN))), {
    type: 'bootstrap',
    severity: 'WARN',
    progress: 5,
    tag: 'conn',
    summary: 'Connecting to a relay',
    warning: 'Connection refused',
    reason: 'CONNECTREFUSED',
    count: 3,
    recommendation: 'warn',
    host: '127.0.0.1:5000',
  })
  for (const bad of ['NOTICE BOOTSTRAP TAG=done SUMMARY="Done"', 'NOTICE BOOTSTRAP PROGRESS=101 TAG=x SUMMARY="y"', 'NOTICE CIRCUIT_ESTABLISHED', 'NOTICE BOOTSTRAP PROGRESS=1 TAG=x SUMMARY="y']) {
    t.throws(() => parseBootstrapPhase(bad), { instanceOf: TorError }, bad)
  }
  const status = parseEvent(one(crlf('650 STATUS_GENERAL NOTICE CLOCK_SKEW SKEW=-35 SOURCE=CONSENSUS')))
  t.is(status.type, 'status')
  if (status.type === 'status') {
    t.is(status.kind, 'general')
    t.is(status.action, 'CLOCK_SKEW')
    t.is(status.args.get('SKEW'), '-35')
  }
})

test('HS_DESC, log and unknown events', (t) => {
  t.deepEqual(parseEvent(one(crlf(E_UPLOAD))), {
    type: 'hs_desc',
    action: 'UPLOAD',
    address: SID,
    authType: 'UNKNOWN',
    hsdir: '$8331B4F2E3AB8C42D8A0E6B7A4D1F86E1A2F7D10~test003r',
    descriptorId: 'lzHlOXfNEZ3RvD5GYr9a5mVRctSFfZK41KN4pl6GrFU',
  })
  t.deepEqual(parseEvent(one(crlf(E_UPLOADED))), {
    type: 'hs_desc',
    action: 'UPLOADED',
    address: SID,
    authType: 'UNKNOWN',
    hsdir: '$8331B4F2E3AB8C42D8A0E6B7A4D1F86E1A2F7D10~test003r',
  })
  const failed = parseEvent(one(crlf(E_FAILED)))
  t.like(failed, { type: 'hs_desc', action: 'FAILED', address: SID2, authType: 'NO_AUTH', reason: 'NOT_FOUND' })
  t.like(parseEvent(one(crlf(`650 HS_DESC CREATED ${SID} UNKNOWN UNKNOWN abc`))), { type: 'hs_desc', action: 'CREATED', hsdir: undefined })
  t.deepEqual(parseEvent(one(crlf(E_NOTICE))), { type: 'log', severity: 'NOTICE', message: 'Bootstrapped 100% (done): Done' })
  t.deepEqual(parseEvent(one(E_MULTI_WARN)), { type: 'log', severity: 'WARN', message: 'first line\n.second' })
  t.deepEqual(parseEvent(one(crlf('650 CIRC 1 LAUNCHED'))), { type: 'unknown', name: 'CIRC', raw: 'CIRC 1 LAUNCHED' })
  t.throws(() => parseEvent(one(crlf('650 HS_DESC UPLOAD onlyaddress'))), { instanceOf: TorError })
  t.throws(() => parseEvent(one(crlf('250 OK'))), { instanceOf: TorError, message: /event/ })
})

test('ADD_ONION and GETCONF replies', (t) => {
  t.deepEqual(parseAddOnion(one(ADD_ONION)), { serviceId: SID, privateKey: `ED25519-V3:${'A'.repeat(86)}==` })
  t.deepEqual(parseAddOnion(one(crlf(`250-ServiceID=${SID}`, '250-ClientAuthV3=XYZ', '250 OK'))), { serviceId: SID })
  t.throws(() => parseAddOnion(one(crlf('250-ServiceID=tooshort', '250 OK'))), { instanceOf: TorError })
  t.throws(() => parseAddOnion(one(crlf(`250-ServiceID=${SID}`, '250-PrivateKey=RSA1024:abc', '250 OK'))), { instanceOf: TorError })
  const conf = parseGetConf(one(crlf('250-SocksPort=0', '250-HiddenServicePort=80 127.0.0.1:8080', '250-HiddenServicePort=81 127.0.0.1:8081', '250-Nickname="a b"', '250 ControlPort')))
  t.deepEqual([...conf], [
    ['SocksPort', ['0']],
    ['HiddenServicePort', ['80 127.0.0.1:8080', '81 127.0.0.1:8081']],
    ['Nickname', ['a b']],
    ['ControlPort', []],
  ])
})

test('keyword args and QuotedString: escapes, positional words with "=", garbage after a quote', (t) => {
  const a = parseKeywordArgs('WARN BOOTSTRAP $AB=nick K=v Q="a \\"b\\" \\\\ \\n\\t\\101" E=')
  t.deepEqual(a.positional, ['WARN', 'BOOTSTRAP', '$AB=nick'])
  t.deepEqual([...a.keywords], [
    ['K', 'v'],
    ['Q', 'a "b" \\ \n\tA'],
    ['E', ''],
  ])
  t.throws(() => parseKeywordArgs('K="x"y'), { instanceOf: TorError })
  t.throws(() => readQuotedString('"\\377\\376"', 0), { instanceOf: TorError, message: /UTF-8/ })
  t.throws(() => readQuotedString('"abc\\', 0), { instanceOf: TorError })
  // quoteString -> readQuotedString round-trips any printable string (seeded).
  const rand = seededRandom(7)
  const alphabet = 'ab "\\=é€😀$~'
  let cases = 0
  for (let n = 0; n < 2000; n++) {
    let s = ''
    const len = rand.int(20)
    for (let i = 0; i < len; i++) s += [...alphabet][rand.int([...alphabet].length)]
    const q = quoteString(s)
    t.deepEqual(readQuotedString(q, 0), { value: s, end: q.length })
    cases++
  }
  t.log(`${cases} quote round-trips`)
})

test('builders: exact command lines', (t) => {
  t.is(buildGetInfo(['version', 'status/bootstrap-phase', 'ns/id/$AB']), 'GETINFO version status/bootstrap-phase ns/id/$AB')
  t.is(buildGetConf(['SocksPort']), 'GETCONF SocksPort')
  t.is(buildSetConf({ DisableNetwork: '0', Nickname: 'a "b"\\' }), 'SETCONF DisableNetwork="0" Nickname="a \\"b\\"\\\\"')
  t.is(buildSetEvents(['STATUS_CLIENT', 'HS_DESC', 'WARN']), 'SETEVENTS STATUS_CLIENT HS_DESC WARN')
  t.is(buildSetEvents([]), 'SETEVENTS')
  t.is(buildSignal('NEWNYM'), 'SIGNAL NEWNYM')
  t.is(buildAuthenticate({ password: 'pa ss"' }), 'AUTHENTICATE "pa ss\\""')
  t.is(buildAuthenticate({ hex: 'ABcd' }), 'AUTHENTICATE ABcd')
  t.is(buildAuthenticate({ none: true }), 'AUTHENTICATE')
  t.is(
    buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:8080' }], flags: ['Detach', 'DiscardPK'] }),
    'ADD_ONION NEW:ED25519-V3 Flags=Detach,DiscardPK Port=80,127.0.0.1:8080',
  )
  const blob = `${'Ab+/'.repeat(21)}xy==`
  const auth = 'OM7TGIVRYMY6PFX6GAC6ATRTA5U6WW6U7A4ZNHQDI6OVL52XVV2Q'
  t.is(
    buildAddOnion({ key: { type: 'ed25519-v3', blob }, ports: [{ virtualPort: 1, target: '127.0.0.1:2' }, { virtualPort: 3, target: '127.0.0.1:4' }], flags: ['V3Auth'], clientAuthV3: [auth] }),
    `ADD_ONION ED25519-V3:${blob} Flags=V3Auth Port=1,127.0.0.1:2 Port=3,127.0.0.1:4 ClientAuthV3=${auth}`,
  )
  t.is(buildDelOnion(`${SID}.onion`), `DEL_ONION ${SID}`)
  const key = `${'a'.repeat(43)}=`
  t.is(buildOnionClientAuthAdd(SID, key), `ONION_CLIENT_AUTH_ADD ${SID} x25519:${key}`)
  t.is(buildOnionClientAuthRemove(SID), `ONION_CLIENT_AUTH_REMOVE ${SID}`)
})

test('builders: nothing a caller passes can inject CR/LF, spaces or extra arguments', (t) => {
  const evil = ['x\r\nSIGNAL HALT', 'a b', 'a\nb', 'a\0', '', 'a=b']
  const calls: Array<[string, () => unknown]> = [
    ['quoteString', () => quoteString('ok\r\nSIGNAL HALT')],
    ['quoteString tab', () => quoteString('a\tb')],
    ['quoteString DEL', () => quoteString('a\u007f')],
    ...evil.map((e): [string, () => unknown] => ['getinfo', () => buildGetInfo([e])]),
    ...evil.map((e): [string, () => unknown] => ['getconf', () => buildGetConf([e])]),
    ...evil.map((e): [string, () => unknown] => ['setconf key', () => buildSetConf({ [e]: 'v' })]),
    ['setconf value', () => buildSetConf({ K: 'v\r\nSIGNAL HALT' })],
    ['setconf empty', () => buildSetConf({})],
    ['setevents', () => buildSetEvents(['STATUS_CLIENT\r\nSIGNAL HALT'])],
    ['signal', () => buildSignal('HALT\r\n' as 'HALT')],
    ['password', () => buildAuthenticate({ password: 'secret\r\nSIGNAL HALT' })],
    ['hex', () => buildAuthenticate({ hex: 'ab cd' })],
    ['target host', () => buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '10.0.0.1:80' }] })],
    ['target inject', () => buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:80 Flags=X' }] })],
    ['target port', () => buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:70000' }] })],
    ['virtual port', () => buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 0, target: '127.0.0.1:80' }] })],
    ['no ports', () => buildAddOnion({ key: { type: 'new' }, ports: [] })],
    ['flag', () => buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:80' }], flags: ['Detach,NonAnonymous' as 'Detach'] })],
    ['blob', () => buildAddOnion({ key: { type: 'ed25519-v3', blob: 'abc Port=1' }, ports: [{ virtualPort: 80, target: '127.0.0.1:80' }] })],
    ['client auth', () => buildAddOnion({ key: { type: 'new' }, ports: [{ virtualPort: 80, target: '127.0.0.1:80' }], clientAuthV3: ['A B'] })],
    ['del onion', () => buildDelOnion(`${SID} x`)],
    ['auth add key', () => buildOnionClientAuthAdd(SID, 'c2VjcmV0 Flags=Permanent')],
    ['auth add addr', () => buildOnionClientAuthAdd('example.onion', `${'a'.repeat(43)}=`)],
  ]
  for (const [name, call] of calls) t.throws(call, { instanceOf: InvalidArgumentError }, name)
  // Secrets are not echoed in errors.
  const err = t.throws(() => buildAuthenticate({ password: 'hunter2\n' }))
  t.false(err?.message.includes('hunter2'))
  const err2 = t.throws(() => buildOnionClientAuthAdd(SID, 'SECRETKEY'))
  t.false(err2?.message.includes('SECRETKEY'))
})

test('fuzz: thousands of seeded garbage lines only ever produce typed errors', (t) => {
  const rand = seededRandom(0x5eed)
  const pieces = ['250', '650', '552', '-', '+', ' ', '=', '"', '\\', '.', '..', 'OK', 'BOOTSTRAP', 'PROGRESS=', 'HS_DESC', 'UPLOAD', 'STATUS_CLIENT', 'NOTICE', 'AUTH', 'METHODS=', 'ServiceID=', 'SERVERHASH=', '\r', 'é', '\u0000', '7']
  let lines = 0
  let replies = 0
  let errors = 0
  while (lines < 20000) {
    const reader = new ReplyReader()
    const code = ['250', '650', '552'][rand.int(3)]!
    for (let l = 0; l < 20; l++) {
      const r = rand.next()
      const sep = r < 0.5 ? '-' : r < 0.85 ? ' ' : '+'
      let line = rand.next() < 0.95 ? (rand.next() < 0.9 ? code : '251') + sep : rand.next() < 0.5 ? '.' : ''
      const n = rand.int(12)
      for (let i = 0; i < n; i++) line += pieces[rand.int(pieces.length)]!
      lines++
      let got: ControlReply[]
      try {
        got = reader.push(`${line}\r\n`)
      } catch (err) {
        t.true(err instanceof TorError && err.code === 'ERR_CONTROL_PROTOCOL')
        errors++
        break
      }
      for (const reply of got) {
        replies++
        for (const parse of [parseProtocolInfo, parseAuthChallenge, parseGetInfo, parseGetConf, parseAddOnion, parseEvent]) {
          try {
            parse(reply)
          } catch (err) {
            t.true(err instanceof P2PMessError, String(err))
          }
        }
      }
    }
  }
    t.log(`${lines} garbage lines, ${replies} replies parsed by 6 parsers, ${errors} framing errors`)
})
