import test from 'ava'
import { InvalidArgumentError } from '../src/errors.js'
import {
  heartbeatDecision,
  type HeartbeatDecision,
  type Presence,
  type PresenceEvent,
  presenceReducer,
} from '../src/protocol/heartbeat.js'
import { seededRandom } from './helpers/random.js'

test('exhaustive time grid: dead at 2H of silence, ping at H idle, otherwise wait until the earlier deadline', (t) => {
  let cases = 0
  for (const H of [1, 2, 3, 7]) {
    const span = 5 * H
    for (let now = 0; now <= span; now++) {
      for (let lastSent = 0; lastSent <= now; lastSent++) {
        for (let lastReceived = 0; lastReceived <= now; lastReceived++) {
          const d = heartbeatDecision({ now, lastSent, lastReceived, interval: H })
          const silent = now - lastReceived
          const idle = now - lastSent
          if (silent >= 2 * H) t.deepEqual(d, { action: 'dead' })
          else if (idle >= H) t.deepEqual(d, { action: 'ping' })
          else {
            t.deepEqual(d, { action: 'wait', nextCheckAt: Math.min(lastSent + H, lastReceived + 2 * H) })
            if (d.action === 'wait') {
              // The next check is in the future and never later than the death deadline.
              t.true(d.nextCheckAt > now && d.nextCheckAt <= lastReceived + 2 * H)
            }
          }
          cases++
        }
      }
    }
  }
  t.log(`${cases} grid points`)
})

test('fractional milliseconds follow the same thresholds', (t) => {
  t.deepEqual(heartbeatDecision({ now: 1999.999, lastSent: 1000, lastReceived: 0, interval: 1000 }), { action: 'wait', nextCheckAt: 2000 })
  t.deepEqual(heartbeatDecision({ now: 1999.999, lastSent: 999.999, lastReceived: 0, interval: 1000 }), { action: 'ping' })
  t.deepEqual(heartbeatDecision({ now: 2000, lastSent: 1999.5, lastReceived: 0, interval: 1000 }), { action: 'dead' })
  t.deepEqual(heartbeatDecision({ now: 999.5, lastSent: 0, lastReceived: 0, interval: 1000 }), { action: 'wait', nextCheckAt: 1000 })
})

test('rejects invalid inputs', (t) => {
  const ok = { now: 10, lastSent: 5, lastReceived: 5, interval: 3 }
  const bad: unknown[] = [
    null,
    { ...ok, now: Number.NaN },
    { ...ok, interval: 0 },
    { ...ok, interval: -1 },
    { ...ok, lastSent: Number.POSITIVE_INFINITY },
    { ...ok, lastReceived: 11 },
    { ...ok, lastSent: 11 },
    { ...ok, now: '10' },
  ]
  for (const b of bad) {
    t.throws(() => heartbeatDecision(b as Parameters<typeof heartbeatDecision>[0]), { instanceOf: InvalidArgumentError })
  }
})

interface Side {
  lastSent: number
  lastReceived: number
  /** The only times the driver looks at the rule: nextCheckAt of the last decision, and every receipt. */
  wakeAt: number
  deadAt: number | undefined
}

/**
 * Two peers on an integer clock. Each side's driver evaluates the rule only when its timer fires (at the last
 * `nextCheckAt`), when a message arrives, and again right after sending a ping. B answers pings with pongs and
 * falls silent (as if it crashed) from `silentFrom`. Returns when A declared B dead and when A last heard B.
 */
function simulate(H: number, latency: number, silentFrom: number, end: number): { aDeadAt: number | undefined; lastHeardByA: number } {
  const a: Side = { lastSent: 0, lastReceived: 0, wakeAt: 0, deadAt: undefined }
  const b: Side = { lastSent: 0, lastReceived: 0, wakeAt: 0, deadAt: undefined }
  const inFlight: { at: number; to: 'a' | 'b'; kind: 'ping' | 'pong' }[] = []
  const send = (from: 'a' | 'b', now: number, kind: 'ping' | 'pong'): void => {
    const side = from === 'a' ? a : b
    side.lastSent = now
    inFlight.push({ at: now + latency, to: from === 'a' ? 'b' : 'a', kind })
  }
  const evaluate = (name: 'a' | 'b', side: Side, now: number): void => {
    for (;;) {
      const d: HeartbeatDecision = heartbeatDecision({ now, lastSent: side.lastSent, lastReceived: side.lastReceived, interval: H })
      if (d.action === 'dead') {
        side.deadAt = now
        return
      }
      if (d.action === 'wait') {
        side.wakeAt = d.nextCheckAt
        return
      }
      send(name, now, 'ping')
    }
  }
  for (let now = 0; now <= end && a.deadAt === undefined; now++) {
    const bAlive = now < silentFrom
    const woke = new Set<'a' | 'b'>()
    for (const m of inFlight.filter((m) => m.at === now)) {
      inFlight.splice(inFlight.indexOf(m), 1)
      if (m.to === 'b' && !bAlive) continue // a crashed B hears nothing
      const side = m.to === 'a' ? a : b
      side.lastReceived = now
      woke.add(m.to)
      if (m.kind === 'ping') send(m.to, now, 'pong')
    }
    for (const [name, side] of [['a', a], ['b', b]] as const) {
      if (side.deadAt !== undefined || (name === 'b' && !bAlive)) continue
      if (woke.has(name) || now >= side.wakeAt) evaluate(name, side, now)
    }
  }
  return { aDeadAt: a.deadAt, lastHeardByA: a.lastReceived }
}

test('simulation: a live peer is never declared dead; a silent one is declared dead exactly 2H after it was last heard (seeded)', (t) => {
  const rng = seededRandom(0x4ea7)
  let runs = 0
  for (let i = 0; i < 400; i++) {
    const H = 2 + rng.int(40)
    const latency = 1 + rng.int(H - 1) // one-way delay of 1..H-1 ticks
    const silentFrom = 1 + rng.int(20 * H)
    const end = silentFrom + 10 * H
    const { aDeadAt, lastHeardByA } = simulate(H, latency, silentFrom, end)
    t.not(aDeadAt, undefined)
    t.is(aDeadAt, lastHeardByA + 2 * H)
    t.true(aDeadAt! >= silentFrom, `dead while B was alive: H=${H} latency=${latency} silentFrom=${silentFrom} deadAt=${aDeadAt}`)
    runs++
    const alive = simulate(H, latency, Number.POSITIVE_INFINITY, 30 * H)
    t.is(alive.aDeadAt, undefined, `live peer declared dead (H=${H}, latency=${latency})`)
    runs++
  }
  t.log(`${runs} simulated sessions`)
})

test('presence reducer: every state × event', (t) => {
  const states: Presence[] = ['online', 'unreachable', 'offline']
  const expected: Record<PresenceEvent['type'], Record<Presence, Presence>> = {
    'session-opened': { online: 'online', unreachable: 'online', offline: 'online' },
    'heartbeat-dead': { online: 'unreachable', unreachable: 'unreachable', offline: 'offline' },
    'connection-lost': { online: 'unreachable', unreachable: 'unreachable', offline: 'offline' },
    'dial-failed': { online: 'online', unreachable: 'unreachable', offline: 'unreachable' },
    'bye-received': { online: 'offline', unreachable: 'offline', offline: 'offline' },
    'record-missing': { online: 'online', unreachable: 'offline', offline: 'offline' },
  }
  let cases = 0
  for (const [type, row] of Object.entries(expected)) {
    for (const s of states) {
      t.is(presenceReducer(s, { type } as PresenceEvent), row[s], `${s} + ${type}`)
      cases++
    }
  }
  t.is(cases, 18)
})
