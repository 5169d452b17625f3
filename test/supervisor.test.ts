/**
 * TorSupervisor on real tors of the private test network. The tests run in order on one supervised tor (plus
 * one visitor tor, and a second supervisor for the stop-during-backoff case) to keep the number of tors small:
 * bootstrap and state events -> SIGKILL, restart, onion service back at the same address -> restarts that keep
 * failing end in 'failed'.
 */
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import test from 'ava'
import { P2PMessError, TorError } from '../src/errors.js'
import { onionServiceKeyFromSeed } from '../src/protocol/onion.js'
import { createTorDialer } from '../src/tor/dialer.js'
import { publishOnionService } from '../src/tor/onion-service.js'
import type { TorProcess } from '../src/tor/process.js'
import { TorSupervisor, type SupervisorEvent } from '../src/tor/supervisor.js'
import { roundTrip, startReverseEchoServer } from './helpers/net.js'
import { alive, atFileEnd, fileTempDir, startFileTor, testNetwork } from './helpers/tor.js'

const tempDir = (): Promise<string> => fileTempDir('p2pmess-sup-')

/** The first event matching `match` (checked against the events already seen, then new ones), or a failure after `timeoutMs`. */
function eventually<E extends SupervisorEvent>(
  events: SupervisorEvent[],
  sup: TorSupervisor,
  match: (e: SupervisorEvent) => e is E,
  timeoutMs: number,
  from = 0,
): Promise<E> {
  const already = events.slice(from).find(match)
  if (already !== undefined) return Promise.resolve(already)
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new TorError('ERR_CONTROL_TIMEOUT', `no matching supervisor event within ${timeoutMs} ms; saw ${events.slice(from).map((e) => e.type).join(', ')}`))
    }, timeoutMs)
    const off = sup.onEvent((e) => {
      if (!match(e)) return
      clearTimeout(timer)
      off()
      resolve(e)
    })
  })
}

const isType =
  <T extends SupervisorEvent['type']>(type: T) =>
  (e: SupervisorEvent): e is Extract<SupervisorEvent, { type: T }> =>
    e.type === type

const events: SupervisorEvent[] = []
let shared: Promise<TorSupervisor> | undefined
/** The supervised tor these tests share; it records every event from the very start. */
function supervisor(): Promise<TorSupervisor> {
  shared ??= (async () => {
    const sup = await TorSupervisor.start({
      dataDir: await tempDir(),
      network: await testNetwork(),
      startTimeoutMs: 60_000,
      restart: { maxAttempts: 2, baseDelayMs: 200, maxDelayMs: 1_000 },
      onEvent: (e) => events.push(e),
    })
    atFileEnd(() => sup.stop())
    return sup
  })()
  return shared
}

let visitorTor: Promise<TorProcess> | undefined
function visitor(): Promise<TorProcess> {
  visitorTor ??= startFileTor()
  return visitorTor
}

test.serial('start: bootstrap progress rises to 100, then ready with a SOCKS port and a dialer on it', async (t) => {
  const sup = await supervisor()
  t.is(events[0]?.type, 'starting')
  const progress = events.filter(isType('bootstrap')).map((e) => e.progress)
  t.true(progress.length >= 2, `progress: ${progress.join(' ')}`)
  t.true(progress.every((p, i) => i === 0 || p > progress[i - 1]!), `not increasing: ${progress.join(' ')}`)
  t.is(progress.at(-1), 100)
  const ready = events.find(isType('ready'))
  t.like(ready, { type: 'ready', restarts: 0, socksPort: sup.socksPort, pid: sup.pid })
  t.is(events.indexOf(ready!), events.length - 1)
  t.is(sup.state, 'ready')
  t.true(sup.socksPort > 0)
  t.is(sup.dialer.socksPort, sup.socksPort)
  t.true(alive(sup.pid))
  await sup.ready()
  t.log(`bootstrap progress: ${progress.join(' ')}`)
})

test.serial('forgetOnionDescriptors: tor fetches an onion descriptor again instead of using its cache', async (t) => {
  const [sup, host] = await Promise.all([supervisor(), visitor()])
  const key = onionServiceKeyFromSeed(new Uint8Array(randomBytes(32)))
  const { address } = await publishOnionService(host.controller, {
    expandedSecretKey: key.expandedSecretKey,
    virtualPort: 80,
    targetPort: await startReverseEchoServer(t),
    timeoutMs: 60_000,
  })
  const serviceId = address.slice(0, 56)
  const fetches: string[] = []
  await sup.controller.setEvents(['HS_DESC'])
  const off = sup.controller.onEvent((e) => {
    if (e.type === 'hs_desc' && e.action === 'REQUESTED' && e.address === serviceId) fetches.push(e.action)
  })
  t.teardown(off)
  const dial = async (): Promise<void> => {
    const socket = await sup.dialer.dialWithRetry(address, 80, { deadlineMs: 90_000 })
    socket.destroy()
  }
  await dial()
  const fetched = fetches.length
  t.true(fetched >= 1, 'the first dial fetches the descriptor')
  await dial()
  t.is(fetches.length, fetched, 'a second dial uses the cached descriptor')
  await sup.forgetOnionDescriptors()
  await dial()
  t.true(fetches.length > fetched, 'after forgetOnionDescriptors the descriptor is fetched again')
})

test.serial('SIGKILL: restart on the same SOCKS port, the onion service is back at the same address and reachable again', async (t) => {
  const [sup, other] = await Promise.all([supervisor(), visitor()])
  const targetPort = await startReverseEchoServer(t)
  const key = onionServiceKeyFromSeed(new Uint8Array(randomBytes(32)))
  const { address } = await sup.addOnionService({ expandedSecretKey: key.expandedSecretKey, virtualPort: 80, targetPort })
  t.is(address, key.address)
  await t.throwsAsync(sup.addOnionService({ expandedSecretKey: key.expandedSecretKey, virtualPort: 80, targetPort: 9 }), {
    code: 'ERR_INVALID_ARGUMENT',
    message: /already registered/,
  })

  const visitorDialer = createTorDialer({ socksPort: other.socksPort })
  const first = await visitorDialer.dialWithRetry(address, 80, { deadlineMs: 60_000 })
  t.is(await roundTrip(first, 'before'), 'erofeb')
  first.destroy()

  const agent = sup.dialer.agent()
  const { pid, socksPort } = sup
  const from = events.length
  const killedAt = performance.now()
  process.kill(pid, 'SIGKILL')
  const restarting = await eventually(events, sup, isType('restarting'), 10_000, from)
  const noticedMs = performance.now() - killedAt
  t.is(restarting.attempt, 1)
  t.is(restarting.reason.code, 'ERR_TOR_EXITED')
  t.regex(restarting.reason.message, /SIGKILL/)
  t.throws(() => sup.controller, { code: 'ERR_TOR_STOPPED' })
  // Registered while tor is down: published once the restart is ready (by the restore or right after it).
  const late = onionServiceKeyFromSeed(new Uint8Array(randomBytes(32)))
  const lateAdded = sup.addOnionService({ expandedSecretKey: late.expandedSecretKey, virtualPort: 80, targetPort: 9 })

  const ready = await eventually(events, sup, isType('ready'), 90_000, from)
  const readyMs = performance.now() - killedAt
  t.like(ready, { restarts: 1, socksPort })
  t.not(ready.pid, pid)
  t.false(alive(pid))
  t.is(sup.socksPort, socksPort)
  t.is(sup.dialer.agent(), agent, 'the dialer and its agent outlive the restart')
  t.deepEqual(await lateAdded, { address: late.address })
  const served = async (): Promise<string[]> => ((await sup.controller.getInfo(['onions/detached'])).get('onions/detached') ?? '').split('\n')
  t.true((await served()).includes(address.slice(0, 56)) && (await served()).includes(late.address.slice(0, 56)))
  await sup.removeOnionService(late.address)
  t.false((await served()).includes(late.address.slice(0, 56)))

  const retries: string[] = []
  // The visitor may hold the pre-restart descriptor (dead intro points): see test/directory-onion.test.ts.
  const again = await visitorDialer.dialWithRetry(address, 80, { deadlineMs: 240_000, onRetry: (r) => retries.push(r.error.code) })
  const reachableMs = performance.now() - killedAt
  t.is(await roundTrip(again, 'after'), 'retfa')
  again.destroy()
  // The restarted tor's own SOCKS port (same port, same dialer object) works too.
  const own = await sup.dialer.dialWithRetry(address, 80, { deadlineMs: 60_000 })
  t.is(await roundTrip(own, 'own'), 'nwo')
  own.destroy()
  t.log(`kill -> restarting ${noticedMs.toFixed(0)} ms, -> ready (onion republished) ${readyMs.toFixed(0)} ms, -> reachable from the other tor ${reachableMs.toFixed(0)} ms; visitor retries: ${retries.length} [${retries.join(', ')}]`)
})

test.serial('restarts that keep failing end in failed with ERR_TOR_RESTART_FAILED; stop() afterwards is clean and idempotent', async (t) => {
  const sup = await supervisor()
  const { pid, socksPort } = sup
  // Whoever takes the SOCKS port while tor is down makes every restart attempt fail (ERR_TOR_PORT_IN_USE).
  const blocker = createServer()
  atFileEnd(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const from = events.length
  const blocked = new Promise<void>((resolve) => {
    const off = sup.onEvent((e) => {
      if (e.type !== 'restarting') return
      off()
      blocker.listen(socksPort, '127.0.0.1', resolve)
    })
  })
  process.kill(pid, 'SIGKILL')
  await blocked
  const failed = await eventually(events, sup, isType('failed'), 60_000, from)
  t.is(failed.error.code, 'ERR_TOR_RESTART_FAILED')
  t.true(failed.error.cause instanceof P2PMessError)
  t.is((failed.error.cause as P2PMessError).code, 'ERR_TOR_PORT_IN_USE')
  t.deepEqual(events.slice(from).map((e) => (e.type === 'restarting' ? `restarting ${e.attempt} +${e.delayMs}ms` : e.type)), [
    'restarting 1 +200ms',
    'restarting 2 +400ms',
    'failed',
  ])
  t.is(sup.state, 'failed')
  await t.throwsAsync(sup.ready(), { code: 'ERR_TOR_RESTART_FAILED' })
  t.throws(() => sup.controller, { code: 'ERR_TOR_RESTART_FAILED' })
  await t.throwsAsync(sup.addOnionService({ ...onionServiceKeyFromSeed(new Uint8Array(32)), virtualPort: 80, targetPort: 9 }), {
    code: 'ERR_TOR_RESTART_FAILED',
  })
  await sup.stop()
  await sup.stop()
  t.is(sup.state, 'stopped')
  t.is(events.filter(isType('stopped')).length, 1)
  t.false(alive(pid))
})

test.serial('stop() during a restart backoff ends it at once: no tor left, no restart later', async (t) => {
  const seen: SupervisorEvent[] = []
  const sup = await TorSupervisor.start({
    dataDir: await tempDir(),
    network: await testNetwork(),
    startTimeoutMs: 60_000,
    restart: { maxAttempts: 3, baseDelayMs: 600_000, maxDelayMs: 600_000 },
    onEvent: (e) => seen.push(e),
  })
  atFileEnd(() => sup.stop())
  const pid = sup.pid
  process.kill(pid, 'SIGKILL')
  const restarting = await eventually(seen, sup, isType('restarting'), 10_000)
  t.is(restarting.delayMs, 600_000)
  const started = performance.now()
  await sup.stop()
  const stopMs = performance.now() - started
  t.true(stopMs < 5_000, `stop took ${stopMs} ms`)
  t.is(sup.state, 'stopped')
  t.false(alive(pid))
  t.deepEqual(seen.filter((e) => e.type !== 'bootstrap').map((e) => e.type), ['starting', 'ready', 'restarting', 'stopped'])
  await t.throwsAsync(sup.ready(), { code: 'ERR_TOR_STOPPED' })
  await t.throwsAsync(sup.removeOnionService(onionServiceKeyFromSeed(new Uint8Array(32)).address), { code: 'ERR_INVALID_ARGUMENT' })
})

test('a missing tor binary: ERR_TOR_NOT_FOUND saying how to install tor, and a failed event', async (t) => {
  const seen: SupervisorEvent[] = []
  const err = await t.throwsAsync(TorSupervisor.start({ dataDir: await tempDir(), torPath: '/nonexistent/tor', onEvent: (e) => seen.push(e) }))
  t.is((err as P2PMessError).code, 'ERR_TOR_NOT_FOUND')
  t.regex(err?.message ?? '', /apt-get install tor/)
  t.deepEqual(seen.map((e) => e.type), ['starting', 'failed'])
})

test('bad options are rejected before anything starts', async (t) => {
  const invalid = { code: 'ERR_INVALID_ARGUMENT' }
  await t.throwsAsync(TorSupervisor.start({ dataDir: '' }), invalid)
  await t.throwsAsync(TorSupervisor.start({ dataDir: '/tmp/x', restart: { maxAttempts: 0 } }), invalid)
  await t.throwsAsync(TorSupervisor.start({ dataDir: '/tmp/x', restart: { baseDelayMs: -1 } }), invalid)
  await t.throwsAsync(TorSupervisor.start({ dataDir: '/tmp/x', restart: { baseDelayMs: 10, maxDelayMs: 5 } }), invalid)
  await t.throwsAsync(TorSupervisor.start({ dataDir: '/tmp/x', onEvent: 'x' as unknown as () => void }), invalid)
  await t.throwsAsync(TorSupervisor.start(null as unknown as { dataDir: string }), invalid)
})
