import test from 'ava'
import { InvalidArgumentError } from '../src/errors.js'
import {
  heartbeatDecision,
  type HeartbeatDecision,
  type HeartbeatRole,
  pingWithPong,
  type Presence,
  type PresenceEvent,
  presenceReducer,
} from '../src/protocol/heartbeat.js'
import { seededRandom } from './helpers/random.js'

test('exhaustive time grid: dead at 2H of silence, ping at P idle (H leading, 1.5H following), otherwise wait until the earlier deadline', (t) => {
  let cases = 0
  for (const role of ['lead', 'follow'] as const) {
    for (const H of [1, 2, 3, 7]) {
      const P = role === 'lead' ? H : 1.5 * H
      const span = 5 * H
      for (let now = 0; now <= span; now++) {
        for (let lastSent = 0; lastSent <= now; lastSent++) {
          for (let lastReceived = 0; lastReceived <= now; lastReceived++) {
            const d = heartbeatDecision({ now, lastSent, lastReceived, interval: H, role })
            const silent = now - lastReceived
            const idle = now - lastSent
            if (silent >= 2 * H) t.deepEqual(d, { action: 'dead' })
            else if (idle >= P) t.deepEqual(d, { action: 'ping' })
            else {
              t.deepEqual(d, { action: 'wait', nextCheckAt: Math.min(lastSent + P, lastReceived + 2 * H) })
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
  }
  t.log(`${cases} grid points`)
})

test('fractional milliseconds follow the same thresholds', (t) => {
  const lead = { role: 'lead' } as const
  t.deepEqual(heartbeatDecision({ now: 1999.999, lastSent: 1000, lastReceived: 0, interval: 1000, ...lead }), { action: 'wait', nextCheckAt: 2000 })
  t.deepEqual(heartbeatDecision({ now: 1999.999, lastSent: 999.999, lastReceived: 0, interval: 1000, ...lead }), { action: 'ping' })
  t.deepEqual(heartbeatDecision({ now: 2000, lastSent: 1999.5, lastReceived: 0, interval: 1000, ...lead }), { action: 'dead' })
  t.deepEqual(heartbeatDecision({ now: 999.5, lastSent: 0, lastReceived: 0, interval: 1000, ...lead }), { action: 'wait', nextCheckAt: 1000 })
  t.deepEqual(heartbeatDecision({ now: 1499.5, lastSent: 0, lastReceived: 0, interval: 1000, role: 'follow' }), { action: 'wait', nextCheckAt: 1500 })
  t.deepEqual(heartbeatDecision({ now: 1500, lastSent: 0, lastReceived: 0, interval: 1000, role: 'follow' }), { action: 'ping' })
})

test("pingWithPong: a ping rides on a follower's pong once it has been idle for H/2; never on the leader's", (t) => {
  let cases = 0
  for (const H of [1, 2, 5, 40]) {
    for (let now = 0; now <= 3 * H; now++) {
      for (let lastSent = Math.max(0, now - 3 * H); lastSent <= now; lastSent++) {
        t.is(pingWithPong({ now, lastSent, interval: H, role: 'follow' }), now - lastSent >= H / 2)
        t.false(pingWithPong({ now, lastSent, interval: H, role: 'lead' }))
        cases += 2
      }
    }
  }
  t.true(pingWithPong({ now: 500, lastSent: 0, interval: 1000, role: 'follow' }))
  t.false(pingWithPong({ now: 499.999, lastSent: 0, interval: 1000, role: 'follow' }))
  t.log(`${cases} cases`)
})

test('rejects invalid inputs', (t) => {
  const ok = { now: 10, lastSent: 5, lastReceived: 5, interval: 3, role: 'lead' }
  const bad: unknown[] = [
    null,
    { ...ok, now: Number.NaN },
    { ...ok, interval: 0 },
    { ...ok, interval: -1 },
    { ...ok, lastSent: Number.POSITIVE_INFINITY },
    { ...ok, lastReceived: 11 },
    { ...ok, lastSent: 11 },
    { ...ok, now: '10' },
    { ...ok, role: 'leader' },
    { ...ok, role: undefined },
  ]
  for (const b of bad) {
    t.throws(() => heartbeatDecision(b as Parameters<typeof heartbeatDecision>[0]), { instanceOf: InvalidArgumentError })
  }
  const okReceipt = { now: 1, lastSent: 0, interval: 3, role: 'follow' }
  const badReceipts: unknown[] = [
    null,
    'x',
    { ...okReceipt, lastSent: 2 },
    { ...okReceipt, interval: 0 },
    { ...okReceipt, interval: undefined },
    { ...okReceipt, now: -1 },
    { ...okReceipt, role: 'both' },
  ]
  t.notThrows(() => pingWithPong(okReceipt as Parameters<typeof pingWithPong>[0]))
  for (const b of badReceipts) {
    t.throws(() => pingWithPong(b as Parameters<typeof pingWithPong>[0]), { instanceOf: InvalidArgumentError })
  }
})

type Name = 'a' | 'b'

interface Side {
  role: HeartbeatRole
  lastSent: number
  lastReceived: number
  /** The only times the driver looks at the rule: nextCheckAt of the last decision, and every receipt. */
  wakeAt: number
  deadAt: number | undefined
  /** Pings sent by the side's own timer (not riding on a pong), pongs received (RTT samples). */
  timerPings: number
  pongs: number
}

interface SimResult {
  sides: Record<Name, Side>
  /** Pings sent while a ping of the other side was in flight towards the sender. */
  crossings: number
  /** Writes on the wire (a pong and the ping riding on it are one write). */
  writes: number
}

/**
 * Two peers on an integer clock, `a` leading (the dialler) and `b` following. Each side's driver evaluates the rule
 * only when its timer fires (at the last `nextCheckAt`), when a message arrives, and again right after sending a
 * ping. A ping is answered at once by a pong, with a ping of the answering side in the same write when
 * `pingWithPong` says so; a pong does not count as sent. A side falls silent (as if it crashed) from `silentFrom`.
 */
function simulate(H: number, latency: number, silentFrom: Record<Name, number>, end: number): SimResult {
  const mk = (role: HeartbeatRole): Side => ({ role, lastSent: 0, lastReceived: 0, wakeAt: 0, deadAt: undefined, timerPings: 0, pongs: 0 })
  const sides: Record<Name, Side> = { a: mk('lead'), b: mk('follow') }
  const other = (n: Name): Name => (n === 'a' ? 'b' : 'a')
  const inFlight: { at: number; to: Name; kind: 'ping' | 'pong' }[] = []
  let crossings = 0
  let writes = 0
  const send = (from: Name, now: number, kind: 'ping' | 'pong'): void => {
    if (kind === 'ping') {
      sides[from].lastSent = now
      if (inFlight.some((m) => m.to === from && m.kind === 'ping')) crossings++
    }
    inFlight.push({ at: now + latency, to: other(from), kind })
  }
  const alive = (n: Name, now: number): boolean => now < silentFrom[n] && sides[n].deadAt === undefined
  const evaluate = (name: Name, now: number): void => {
    const side = sides[name]
    for (;;) {
      const d: HeartbeatDecision = heartbeatDecision({ now, lastSent: side.lastSent, lastReceived: side.lastReceived, interval: H, role: side.role })
      if (d.action === 'dead') {
        side.deadAt = now
        return
      }
      if (d.action === 'wait') {
        side.wakeAt = d.nextCheckAt
        return
      }
      side.timerPings++
      send(name, now, 'ping')
      writes++
    }
  }
  for (let now = 0; now <= end && sides.a.deadAt === undefined && sides.b.deadAt === undefined; now++) {
    const woke = new Set<Name>()
    for (const m of inFlight.filter((m) => m.at === now)) {
      inFlight.splice(inFlight.indexOf(m), 1)
      if (!alive(m.to, now)) continue // a crashed side hears nothing
      const side = sides[m.to]
      side.lastReceived = now
      woke.add(m.to)
      if (m.kind === 'pong') side.pongs++
      else {
        const withPing = pingWithPong({ now, lastSent: side.lastSent, interval: H, role: side.role })
        send(m.to, now, 'pong')
        if (withPing) send(m.to, now, 'ping')
        writes++
      }
    }
    for (const name of ['a', 'b'] as const) {
      if (!alive(name, now)) continue
      if (woke.has(name) || now >= sides[name].wakeAt) evaluate(name, now)
    }
  }
  return { sides, crossings, writes }
}

test('simulation: a live peer is never declared dead; a silent one is declared dead exactly 2H after it was last heard, whichever side leads (seeded)', (t) => {
  const rng = seededRandom(0x4ea7)
  let runs = 0
  for (let i = 0; i < 400; i++) {
    const H = 2 + rng.int(40)
    const latency = 1 + rng.int(Math.ceil(H / 2) - 1) // a round trip under H
    const silentAt = 1 + rng.int(20 * H)
    const end = silentAt + 10 * H
    for (const [silent, watcher] of [['b', 'a'], ['a', 'b']] as const) {
      const { sides } = simulate(H, latency, { a: Infinity, b: Infinity, [silent]: silentAt }, end)
      const w = sides[watcher]
      t.not(w.deadAt, undefined)
      t.is(w.deadAt, w.lastReceived + 2 * H)
      t.true(w.deadAt! >= silentAt, `dead while ${silent} was alive: H=${H} latency=${latency} silentFrom=${silentAt} deadAt=${w.deadAt}`)
      runs++
    }
    const live = simulate(H, latency, { a: Infinity, b: Infinity }, 30 * H)
    t.is(live.sides.a.deadAt, undefined, `live follower declared dead (H=${H}, latency=${latency})`)
    t.is(live.sides.b.deadAt, undefined, `live leader declared dead (H=${H}, latency=${latency})`)
    runs++
  }
  t.log(`${runs} simulated sessions`)
})

test('simulation: on an idle session the pings never cross, both sides measure RTT, 3 writes per H (seeded)', (t) => {
  const rng = seededRandom(0xbea7)
  for (let i = 0; i < 200; i++) {
    const H = 8 + rng.int(100)
    const latency = 1 + rng.int(Math.ceil(H / 2) - 1) // a round trip under H
    const periods = 30
    const { sides, crossings, writes } = simulate(H, latency, { a: Infinity, b: Infinity }, periods * H)
    const what = `H=${H} latency=${latency}`
    t.is(crossings, 0, what)
    // The follower never needs its own timer while the leader beats; both get a pong (an RTT) every H.
    t.is(sides.b.timerPings, 0, what)
    t.true(sides.a.pongs >= periods - 2 && sides.b.pongs >= periods - 2, what)
    // ping, pong + ping (one write), pong: three writes per beat, where the old symmetric rule made four.
    t.true(writes <= 3 * periods, `${what}: ${writes} writes`)
  }
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
