/**
 * Onion services on real tors of the private test network: publication means a real HS_DESC UPLOADED, the
 * published service is reached from a second tor through SOCKS, a non-existent onion fails with a typed error in
 * bounded time, and a publication that cannot happen (offline tor) times out with the address and tor's warnings.
 * The file shares three tors: a service tor and a visitor tor on the network, and an offline tor (DisableNetwork).
 */
import { randomBytes } from 'node:crypto'
import test from 'ava'
import { P2PMessError } from '../src/errors.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import type { TorEvent } from '../src/tor/control-protocol.js'
import type { TorController } from '../src/tor/controller.js'
import { createTorDialer } from '../src/tor/dialer.js'
import { publishOnionService, removeOnionService } from '../src/tor/onion-service.js'
import { baseTorrc, launchTor, type TorProcess } from '../src/tor/process.js'
import { readBytes, startReverseEchoServer } from './helpers/net.js'
import { atFileEnd, fileTempDir, startFileTor } from './helpers/tor.js'

let onNetwork: Promise<{ service: TorProcess; visitor: TorProcess }> | undefined
/** Two client tors on the private network, started once for this file. */
function networkTors(): Promise<{ service: TorProcess; visitor: TorProcess }> {
  onNetwork ??= Promise.all([startFileTor(), startFileTor()]).then(([service, visitor]) => ({ service, visitor }))
  return onNetwork
}

let offlineTor: Promise<TorProcess> | undefined
/** A tor that never touches any network (DisableNetwork 1, no SOCKS port): it accepts ADD_ONION but never uploads. */
function offline(): Promise<TorProcess> {
  offlineTor ??= fileTempDir('p2pmess-onion-').then(async (dir) => {
    const tor = await launchTor({
      name: 'offline',
      dataDir: dir,
      torrc: [...baseTorrc(dir, process.pid), 'DisableNetwork 1', 'SocksPort 0'],
      timeoutMs: 30_000,
    })
    atFileEnd(() => tor.stop())
    return tor
  })
  return offlineTor
}

function freshKey(): { expandedSecretKey: Uint8Array; address: string } {
  const { expandedSecretKey, address } = onionServiceKeyFromSeed(new Uint8Array(randomBytes(32)))
  return { expandedSecretKey, address }
}

async function detached(tor: TorProcess): Promise<string[]> {
  const value = (await tor.controller.getInfo(['onions/detached'])).get('onions/detached') ?? ''
  return value.split('\n').filter((l) => l !== '')
}

test('a published service is uploaded (HS_DESC UPLOADED), reached from another tor, and bytes round-trip', async (t) => {
  const { service, visitor } = await networkTors()
  const port = await startReverseEchoServer(t)
  const key = freshKey()
  const id = key.address.slice(0, -'.onion'.length)
  const seen: TorEvent[] = []
  const off = service.controller.onEvent((e) => seen.push(e))
  t.teardown(off)

  const started = performance.now()
  const published = await publishOnionService(service.controller, { ...key, virtualPort: 80, targetPort: port, timeoutMs: 60_000 })
  const publishMs = performance.now() - started
  t.teardown(() => removeOnionService(service.controller, key.address).catch(() => {}))
  t.deepEqual(published, { address: key.address })
  t.true(seen.some((e) => e.type === 'hs_desc' && e.action === 'UPLOADED' && e.address === id), 'resolved before tor reported the upload')
  t.true((await detached(service)).includes(id))

  const dialer = createTorDialer({ socksPort: visitor.socksPort })
  const retries: string[] = []
  const dialStarted = performance.now()
  const socket = await dialer.dialWithRetry(key.address, 80, { deadlineMs: 60_000, onRetry: (r) => retries.push(r.error.code) })
  const reachMs = performance.now() - dialStarted
  t.teardown(() => void socket.destroy())
  const payload = Buffer.from(Array.from({ length: 512 }, (_, i) => i & 0xff))
  const echoed = readBytes(socket, payload.length)
  socket.write(payload)
  t.deepEqual(await echoed, Buffer.from(payload).reverse())
  t.log(`published in ${publishMs.toFixed(0)} ms; reachable ${reachMs.toFixed(0)} ms later after ${retries.length} retr(ies) [${retries.join(', ')}]`)
})

test('publishing a key that is already served fails with tor\'s refusal and leaves that service running', async (t) => {
  const { service } = await networkTors()
  const port = await startReverseEchoServer(t)
  const key = freshKey()
  const id = key.address.slice(0, -'.onion'.length)
  await publishOnionService(service.controller, { ...key, virtualPort: 80, targetPort: port, timeoutMs: 60_000 })
  const err = await t.throwsAsync(publishOnionService(service.controller, { ...key, virtualPort: 81, targetPort: port, timeoutMs: 60_000 }))
  t.is((err as P2PMessError).code, 'ERR_CONTROL_FAILED')
  t.true((await detached(service)).includes(id), 'the first publication must survive the failed second one')
  await removeOnionService(service.controller, key.address.toUpperCase())
  t.false((await detached(service)).includes(id))
})

test('a well-formed onion that nobody publishes fails with ERR_ONION_NOT_FOUND in bounded time', async (t) => {
  const { visitor } = await networkTors()
  const { address } = freshKey() // valid checksum and key, never published
  const dialer = createTorDialer({ socksPort: visitor.socksPort })
  const started = performance.now()
  const err = await t.throwsAsync(dialer.dial(address, 80, { timeoutMs: 60_000 }))
  const ms = performance.now() - started
  t.is((err as P2PMessError).code, 'ERR_ONION_NOT_FOUND')
  t.is((err as P2PMessError).details?.['reply'], 0xf0)
  t.true(ms < 60_000)
  t.log(`ERR_ONION_NOT_FOUND after ${ms.toFixed(0)} ms`)
})

test('a publication that cannot happen times out with ERR_ONION_PUBLISH_TIMEOUT naming the address and tor\'s warnings', async (t) => {
  const tor = await offline()
  const key = freshKey()
  const started = performance.now()
  const err = await t.throwsAsync(
    publishOnionService(tor.controller, {
      ...key,
      virtualPort: 80,
      targetPort: 9,
      timeoutMs: 1_500,
      lastWarnings: () => ['[warn] canned warning one', '[warn] canned warning two'],
    }),
  )
  const ms = performance.now() - started
  t.is((err as P2PMessError).code, 'ERR_ONION_PUBLISH_TIMEOUT')
  t.true(err?.message.includes(key.address))
  t.regex(err?.message ?? '', /canned warning one \| \[warn\] canned warning two/)
  t.is((err as P2PMessError).details?.['address'], key.address)
  t.true(ms >= 1_400 && ms < 10_000, `took ${ms} ms`)
  t.false((await detached(tor)).includes(key.address.slice(0, -'.onion'.length)), 'a timed-out service is removed again')
})

test('bad arguments are typed errors before anything is sent', async (t) => {
  const tor = await offline()
  const key = freshKey()
  const ok = { ...key, virtualPort: 80, targetPort: 8080, timeoutMs: 1000 }
  const ctl = tor.controller
  const invalid = { code: 'ERR_INVALID_ARGUMENT' }
  await t.throwsAsync(publishOnionService({} as unknown as TorController, ok), invalid)
  await t.throwsAsync(publishOnionService(ctl, { ...ok, expandedSecretKey: new Uint8Array(63) }), invalid)
  const unclamped = key.expandedSecretKey.slice()
  unclamped[0] = 0xff
  await t.throwsAsync(publishOnionService(ctl, { ...ok, expandedSecretKey: unclamped }), { code: 'ERR_KEY_FORMAT' })
  for (const bad of [0, 65536, 1.5, -1, Number.NaN]) {
    await t.throwsAsync(publishOnionService(ctl, { ...ok, virtualPort: bad }), invalid)
    await t.throwsAsync(publishOnionService(ctl, { ...ok, targetPort: bad }), invalid)
    await t.throwsAsync(publishOnionService(ctl, { ...ok, timeoutMs: bad === 65536 ? 2 ** 31 : bad }), invalid)
  }
  await t.throwsAsync(publishOnionService(ctl, { ...ok, lastWarnings: 'x' as unknown as () => string[] }), invalid)
  await t.throwsAsync(removeOnionService(ctl, 'nope.onion'), { code: 'ERR_ONION_ADDRESS' })
  t.deepEqual(await detached(tor), [])
})
