import test from 'ava'
import { InvalidArgumentError } from '../src/errors.js'
import {
  heartbeatDecision,
  type HeartbeatDecision,
  type HeartbeatPhase as Phase,
  type Presence,
  type PresenceEvent,
  presenceReducer,
} from '../src/protocol/heartbeat.js'
import { seededRandom, type SeededRandom } from './helpers/random.js'

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

/**
 * The rule of docs/PROTOCOL.md, "Heartbeats and presence", written out plainly (distances, not the code's
 * pingAt), to check heartbeatDecision against on every grid point.
 */
function reference(now: number, lastSent: number, lastReceived: number, H: number, phase: Phase, peerPingAt: number | undefined): HeartbeatDecision {
  if (now - lastReceived >= 2 * H) return { action: 'dead' }
  const anchored = phase === 'follow' && peerPingAt !== undefined && peerPingAt >= lastSent
  let due: boolean
  let pingAt: number
  if (phase === 'lead') {
    due = now - lastSent >= H
    pingAt = lastSent + H
  } else if (anchored) {
    due = now - peerPingAt >= H / 2
    pingAt = peerPingAt + H / 2
  } else {
    due = now - lastSent >= (3 * H) / 4
    pingAt = lastSent + (3 * H) / 4
  }
  if (due) return { action: 'ping' }
  return { action: 'wait', nextCheckAt: Math.min(pingAt, lastReceived + 2 * H) }
}

function same(a: HeartbeatDecision, b: HeartbeatDecision): boolean {
  return a.action === b.action && (a.action !== 'wait' || (b.action === 'wait' && a.nextCheckAt === b.nextCheckAt))
}

test('exhaustive grid, both phases: the rule, its bounds, and which events can move a check earlier', (t) => {
  let cases = 0
  let mismatches = 0
  let firstMismatch = ''
  const fail = (what: string): void => {
    if (mismatches++ === 0) firstMismatch = what
  }
  /** Grid points where the arrival of a ping (peerPingAt = now) moved a follower's due time earlier. */
  let earlierByPing = 0
  for (const H of [1, 2, 3, 4, 7]) {
    const span = 5 * H
    for (let now = 0; now <= span; now++) {
      for (let lastSent = 0; lastSent <= now; lastSent++) {
        for (let lastReceived = 0; lastReceived <= now; lastReceived++) {
          const old = heartbeatDecision({ now, lastSent, lastReceived, interval: H })
          for (let p = -1; p <= now; p++) {
            const peerPingAt = p < 0 ? undefined : p
            const where = `H=${H} now=${now} lastSent=${lastSent} lastReceived=${lastReceived} peerPingAt=${peerPingAt}`
            // 'lead' is the rule as it was, whatever peerPingAt says.
            const lead = heartbeatDecision({ now, lastSent, lastReceived, interval: H, phase: 'lead', peerPingAt })
            if (!same(lead, old) || !same(lead, reference(now, lastSent, lastReceived, H, 'lead', peerPingAt))) fail(`lead ${where}`)
            const input = { now, lastSent, lastReceived, interval: H, phase: 'follow', peerPingAt } as const
            const follow = heartbeatDecision(input)
            if (!same(follow, reference(now, lastSent, lastReceived, H, 'follow', peerPingAt))) fail(`follow ${where}`)
            for (const d of [lead, follow]) {
              // The next check is in the future and never later than the death deadline.
              if (d.action === 'wait' && !(d.nextCheckAt > now && d.nextCheckAt <= lastReceived + 2 * H)) fail(`deadline ${where}`)
            }
            if (follow.action === 'wait') {
              const anchored = peerPingAt !== undefined && peerPingAt >= lastSent
              // Unanchored, a follower pings at most 3H/4 after its last non-pong; anchored by a ping that came
              // no later than that, at most 5H/4 after it.
              if (!anchored && follow.nextCheckAt > lastSent + (3 * H) / 4) fail(`3H/4 bound ${where}`)
              if (anchored && peerPingAt <= lastSent + (3 * H) / 4 && follow.nextCheckAt > lastSent + (5 * H) / 4) fail(`5H/4 bound ${where}`)
              // Sending later (lastSent) or hearing the peer later (lastReceived) never moves the check earlier.
              for (const later of [
                { ...input, lastSent: Math.min(now, lastSent + 1) },
                { ...input, lastReceived: Math.min(now, lastReceived + 1) },
              ]) {
                const d = heartbeatDecision(later)
                if (d.action !== 'wait' || d.nextCheckAt < follow.nextCheckAt) fail(`monotonic ${where}`)
              }
              // A ping arriving now: never an immediate ping, and the check may move earlier (hence the re-plan).
              const pinged = heartbeatDecision({ ...input, peerPingAt: now })
              if (pinged.action !== 'wait' || pinged.nextCheckAt > now + H / 2) fail(`ping arrival ${where}`)
              else if (pinged.nextCheckAt < follow.nextCheckAt) earlierByPing++
            }
            cases++
          }
        }
      }
    }
  }
  t.is(mismatches, 0, firstMismatch)
  t.true(earlierByPing > 0, 'a ping arriving can move a follower\'s check earlier')
  t.log(`${cases} grid points × 2 phases; a ping arriving moved the follower's check earlier on ${earlierByPing} of them`)
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
    { ...ok, peerPingAt: '5' },
    { ...ok, peerPingAt: null },
    { ...ok, peerPingAt: Number.NaN },
    { ...ok, peerPingAt: -1 },
    { ...ok, peerPingAt: Number.POSITIVE_INFINITY },
    { ...ok, peerPingAt: 10.5 },
    { ...ok, phase: 'leader' },
    { ...ok, phase: 'FOLLOW' },
    { ...ok, phase: '' },
    { ...ok, phase: 1 },
    { ...ok, phase: null },
  ]
  for (const b of bad) {
    t.throws(() => heartbeatDecision(b as Parameters<typeof heartbeatDecision>[0]), { instanceOf: InvalidArgumentError })
  }
  // The optional fields may be absent or undefined; peerPingAt may equal now.
  t.deepEqual(heartbeatDecision({ ...ok, phase: undefined, peerPingAt: undefined }), { action: 'ping' })
  t.deepEqual(heartbeatDecision({ ...ok, lastReceived: 9, phase: 'follow', peerPingAt: 10 }), { action: 'wait', nextCheckAt: 11.5 })
  t.deepEqual(heartbeatDecision({ ...ok, phase: 'follow', peerPingAt: 4 }), { action: 'ping' })
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

// ------------------------------------------------------------------------------ anti-phase simulation
//
// A leader (the dialler) and a follower (the responder) on a continuous clock, joined by a path that delivers
// each direction in order (one TCP stream) with a random one-way delay per frame. Each side's driver does what
// src/client/connection.ts does: it applies the rule when its timer fires (at the last nextCheckAt) and right
// after each ping it sends; a follower also right after answering a ping (the re-plan). Every text is answered
// at once by an ack. 'symmetric' is the rule before phases: both sides lead.

type Rule = 'anti-phase' | 'symmetric'
type Kind = 'hello' | 'text' | 'ack' | 'ping' | 'pong'
type Name = 'L' | 'F'

interface SimSide {
  phase: Phase
  lastSent: number
  lastReceived: number
  peerPingAt: number | undefined
  timerAt: number
  deadAt: number | undefined
  frozen: boolean
  /** Send times of our pings; of every frame we wrote (the session opening counts); of our non-pong frames. */
  pings: number[]
  sends: number[]
  nonPongSends: number[]
  /** When frames from the peer arrived (the session opening counts). */
  heard: number[]
}

interface SimConfig {
  H: number
  rule: Rule
  /** One-way delay bounds per direction: [min, max), drawn per frame. */
  delayLF: readonly [number, number]
  delayFL: readonly [number, number]
  /** When each side's client sends a text (sorted). */
  texts: readonly { at: number; from: Name }[]
  freeze?: { side: Name; at: number }
  end: number
  /** Whether a follower re-plans after answering a ping (connection.ts does). */
  replanOnPing?: boolean
}

interface SimResult {
  L: SimSide
  F: SimSide
  /** Send times of texts and acks (by either side). */
  traffic: number[]
  /** Moments when a side's planned check was later than the rule's due time. */
  lateChecks: number
}

function simulateAntiPhase(config: SimConfig, rng: SeededRandom): SimResult {
  const { H, rule, end, replanOnPing = true } = config
  // The responder's session opens when it writes message 2 and its hello (one write); the dialler's when they
  // arrive, and it answers with its own hello.
  const openL = config.delayFL[0] + rng.next() * (config.delayFL[1] - config.delayFL[0])
  const side = (phase: Phase, open: number): SimSide => ({
    phase,
    lastSent: open,
    lastReceived: open,
    peerPingAt: undefined,
    timerAt: Number.POSITIVE_INFINITY,
    deadAt: undefined,
    frozen: false,
    pings: [],
    sends: [open],
    nonPongSends: [open],
    heard: [open],
  })
  const sides: Record<Name, SimSide> = { L: side('lead', openL), F: side(rule === 'anti-phase' ? 'follow' : 'lead', 0) }
  const other = (n: Name): Name => (n === 'L' ? 'F' : 'L')
  const inFlight: { at: number; to: Name; kind: Kind }[] = []
  const lastArrival: Record<Name, number> = { L: 0, F: 0 }
  const traffic: number[] = []
  let lateChecks = 0
  let stop = false
  let now = 0

  const send = (from: Name, kind: Kind): void => {
    const s = sides[from]
    const to = other(from)
    s.sends.push(now)
    if (kind !== 'pong') {
      s.lastSent = now
      s.nonPongSends.push(now)
    }
    if (kind === 'ping') s.pings.push(now)
    if (kind === 'text' || kind === 'ack') traffic.push(now)
    const [lo, hi] = from === 'L' ? config.delayLF : config.delayFL
    const at = Math.max(now + lo + rng.next() * (hi - lo), lastArrival[to]) // in order, like one TCP stream
    lastArrival[to] = at
    inFlight.push({ at, to, kind })
  }
  const decide = (s: SimSide): HeartbeatDecision =>
    heartbeatDecision({ now, lastSent: s.lastSent, lastReceived: s.lastReceived, interval: H, phase: s.phase, peerPingAt: s.peerPingAt })
  const evaluate = (n: Name): void => {
    const s = sides[n]
    for (;;) {
      const d = decide(s)
      if (d.action === 'dead') {
        s.deadAt = now
        stop = true
        return
      }
      if (d.action === 'wait') {
        s.timerAt = d.nextCheckAt
        return
      }
      send(n, 'ping')
    }
  }
  const live = (n: Name): boolean => !sides[n].frozen && sides[n].deadAt === undefined

  // The hellos, then both timers. The responder's hello is heard at openL (the dialler's opening, counted).
  lastArrival.L = openL
  evaluate('F')
  now = openL
  send('L', 'hello')
  evaluate('L')
  let nextText = 0
  while (!stop) {
    // The earliest event; at equal times: arrivals, then the clients' texts, then timers.
    let at = Number.POSITIVE_INFINITY
    let kind: 'frame' | 'text' | 'freeze' | Name | undefined
    let frame = -1
    inFlight.forEach((f, i) => {
      if (f.at < at) [at, kind, frame] = [f.at, 'frame', i]
    })
    const text = config.texts[nextText]
    if (text !== undefined && text.at < at) [at, kind] = [text.at, 'text']
    if (config.freeze !== undefined && !sides[config.freeze.side].frozen && config.freeze.at < at) [at, kind] = [config.freeze.at, 'freeze']
    for (const n of ['L', 'F'] as const) if (live(n) && sides[n].timerAt < at) [at, kind] = [sides[n].timerAt, n]
    if (kind === undefined || at > end) break
    now = at
    if (kind === 'frame') {
      const f = inFlight.splice(frame, 1)[0]!
      const s = sides[f.to]
      if (live(f.to)) {
        s.lastReceived = now
        s.heard.push(now)
        if (f.kind === 'text') send(f.to, 'ack')
        if (f.kind === 'ping') {
          s.peerPingAt = now
          send(f.to, 'pong')
          if (s.phase === 'follow' && replanOnPing) evaluate(f.to)
        }
      }
    } else if (kind === 'text') {
      nextText++
      if (live(text!.from)) send(text!.from, 'text')
    } else if (kind === 'freeze') {
      sides[config.freeze!.side].frozen = true
    } else {
      evaluate(kind)
    }
    // The driver's promise: no live side's planned check is later than the moment the rule says it is due.
    for (const n of ['L', 'F'] as const) {
      if (!live(n) || now < sides[n].heard[0]!) continue
      const d = decide(sides[n])
      if (sides[n].timerAt > (d.action === 'wait' ? d.nextCheckAt : now)) lateChecks++
    }
  }
  return { L: sides.L, F: sides.F, traffic, lateChecks }
}

/**
 * Longest gap between consecutive times (sorted), less a rounding allowance: times are floats, and t + H - t may
 * come out a few ulps above H.
 */
function maxGap(times: readonly number[]): number {
  let gap = 0
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!)
  return gap - 1e-6
}

/** Distance from t to the nearest of `times`. */
function nearest(times: readonly number[], t: number): number {
  let best = Number.POSITIVE_INFINITY
  for (const x of times) best = Math.min(best, Math.abs(x - t))
  return best
}

/** Crossings: leader pings sent within H/8 of a follower ping. */
function crossings(r: SimResult, H: number): number {
  return r.L.pings.filter((t) => nearest(r.F.pings, t) < H / 8).length
}

/** Bursts of texts from random sides, separated by idle stretches of 0..8H. */
function randomTexts(rng: SeededRandom, H: number, end: number): { at: number; from: Name }[] {
  const texts: { at: number; from: Name }[] = []
  let t = H + rng.next() * 3 * H
  while (t < end) {
    const burstEnd = t + rng.next() * 3 * H
    for (; t < burstEnd && t < end; t += rng.next() * (H / 2)) texts.push({ at: t, from: rng.int(2) === 0 ? 'L' : 'F' })
    t += rng.next() * 8 * H
  }
  return texts
}

interface Scenario {
  H: number
  delay: readonly [number, number]
  texts: { at: number; from: Name }[]
  end: number
}

/** H of 1..20 s; a one-way delay spread within [H/400, H/16) — d ≪ H, as on tor (13 ms against 15 s). */
function randomScenario(rng: SeededRandom, withTexts: boolean): Scenario {
  const H = 1_000 + rng.int(19_000)
  const lo = H / 400 + rng.next() * (H / 40)
  const hi = lo + rng.next() * (H / 16 - lo)
  const end = (20 + rng.int(40)) * H
  return { H, delay: [lo, hi], texts: withTexts ? randomTexts(rng, H, end) : [], end }
}

test('simulation: anti-phase pings never cross, a live path never times out, and the one-way margins hold (seeded)', (t) => {
  const seed = 0xa471
  const rng = seededRandom(seed)
  const tally = { runs: 0, pings: 0, settled: 0, crossAnti: 0, antiLeaderPings: 0, crossSym: 0, symLeaderPings: 0, crossSymIdle: 0, runsSymIdle: 0, minSettled: Number.POSITIVE_INFINITY, minAny: Number.POSITIVE_INFINITY }
  let worstNonPong = 0
  for (let i = 0; i < 300; i++) {
    const idle = i % 3 === 0
    const sc = randomScenario(rng, !idle)
    const { H } = sc
    const spread = sc.delay[1] - sc.delay[0]
    const where = `seed=${seed} run=${i} H=${H} delay=${sc.delay.map((d) => d.toFixed(1)).join('..')}`
    const config = { H, delayLF: sc.delay, delayFL: sc.delay, texts: sc.texts, end: sc.end }
    const r = simulateAntiPhase({ ...config, rule: 'anti-phase' }, rng)
    // (1) The path delivers: nobody is declared dead, and the driver never planned a check too late.
    t.is(r.L.deadAt, undefined, where)
    t.is(r.F.deadAt, undefined, where)
    t.is(r.lateChecks, 0, where)
    // The bounds of docs/PROTOCOL.md: a leader's non-pong frames at most H apart; a follower's frames (a pong or
    // its own ping) at most 3H/4 apart, its non-pong frames at most 5H/4 apart (delay spread < H/2 here);
    // so each side hears the other at least every (that bound + the delay spread).
    t.true(maxGap(r.L.nonPongSends) <= H, where)
    t.true(maxGap(r.F.sends) <= (3 * H) / 4, where)
    t.true(maxGap(r.F.nonPongSends) <= (5 * H) / 4, where)
    worstNonPong = Math.max(worstNonPong, maxGap(r.F.nonPongSends) / H)
    t.true(maxGap(r.L.heard) <= (3 * H) / 4 + spread, where)
    t.true(maxGap(r.F.heard) <= H + spread, where)
    // (2) No crossing anywhere: no ping within H/8 of the other side's; after an idle stretch of 3H (and with
    // none starting within H), the two sides' pings are at least H/4 apart (H/2 minus jitter in fact).
    const all = [...r.L.pings.map((p) => nearest(r.F.pings, p)), ...r.F.pings.map((p) => nearest(r.L.pings, p))]
    tally.pings += all.length
    for (const gap of all) tally.minAny = Math.min(tally.minAny, gap / H)
    t.true(all.every((gap) => gap >= H / 8), where)
    tally.crossAnti += crossings(r, H)
    tally.antiLeaderPings += r.L.pings.length
    for (const [mine, theirs] of [[r.L.pings, r.F.pings], [r.F.pings, r.L.pings]] as const) {
      for (const p of mine) {
        if (p < 3 * H || p > sc.end - H || r.traffic.some((x) => x > p - 3 * H && x < p + H)) continue
        tally.settled++
        const gap = nearest(theirs, p)
        tally.minSettled = Math.min(tally.minSettled, gap / H)
        t.true(gap >= H / 4, `settled ping ${gap.toFixed(1)} ms from the other side's: ${where}`)
      }
    }
    // The same scenario with the symmetric rule: pings cross.
    const sym = simulateAntiPhase({ ...config, rule: 'symmetric' }, rng)
    t.is(sym.L.deadAt, undefined, where)
    t.is(sym.F.deadAt, undefined, where)
    tally.crossSym += crossings(sym, H)
    tally.symLeaderPings += sym.L.pings.length
    if (idle) {
      // Both schedules start together and nothing moves them: every symmetric ping crosses.
      t.true(crossings(sym, H) > 0, where)
      tally.crossSymIdle += crossings(sym, H)
      tally.runsSymIdle++
    }
    tally.runs++
  }
  t.is(tally.crossAnti, 0)
  t.true(tally.settled > 1_000)
  t.log(`${tally.runs} scenarios (${tally.runsSymIdle} without texts), ${tally.pings} anti-phase pings, ${tally.settled} of them settled`)
  t.log(`pairs of pings within H/8 (leader pings with a follower ping that near): anti-phase ${tally.crossAnti} of ${tally.antiLeaderPings}, symmetric ${tally.crossSym} of ${tally.symLeaderPings} (${tally.crossSymIdle} in the runs without texts)`)
  t.log(`anti-phase: nearest other-side ping ≥ ${tally.minAny.toFixed(3)}H overall, ≥ ${tally.minSettled.toFixed(3)}H once settled; follower's longest gap between non-pong frames ${worstNonPong.toFixed(3)}H`)
})

test('simulation: a frozen peer is declared dead exactly 2H after it was last heard, by either phase (seeded)', (t) => {
  const seed = 0xf2e3
  const rng = seededRandom(seed)
  const counts: Record<Rule, number> = { 'anti-phase': 0, symmetric: 0 }
  for (let i = 0; i < 200; i++) {
    const sc = randomScenario(rng, i % 4 !== 0)
    const { H } = sc
    const frozen: Name = i % 2 === 0 ? 'L' : 'F'
    const at = H + rng.next() * (sc.end - 4 * H)
    for (const rule of ['anti-phase', 'symmetric'] as const) {
      const where = `seed=${seed} run=${i} ${rule} H=${H} frozen ${frozen} at ${at.toFixed(1)}`
      const r = simulateAntiPhase({ H, rule, delayLF: sc.delay, delayFL: sc.delay, texts: sc.texts, end: sc.end, freeze: { side: frozen, at } }, rng)
      const watcher = frozen === 'L' ? r.F : r.L
      t.is(r.lateChecks, 0, where)
      t.is((frozen === 'L' ? r.L : r.F).deadAt, undefined, where)
      // Exactly 2H after the last frame heard from it (which may have left just before the freeze), never before
      // the freeze.
      t.is(watcher.deadAt, watcher.heard.at(-1)! + 2 * H, where)
      t.true(watcher.deadAt! >= at, where)
      counts[rule]++
    }
  }
  t.log(`frozen-peer runs: ${counts['anti-phase']} anti-phase, ${counts.symmetric} symmetric; all declared dead at lastHeard + 2H exactly`)
})

test('simulation: a path stalling one direction by up to 0.9H times nobody out, as with the symmetric rule (seeded)', (t) => {
  const seed = 0x57a1
  const rng = seededRandom(seed)
  const worst = { L: 0, F: 0, symL: 0, symF: 0, nonPong: 0 }
  let runs = 0
  for (let i = 0; i < 200; i++) {
    const sc = randomScenario(rng, i % 4 !== 0)
    const { H } = sc
    const stalled: readonly [number, number] = [sc.delay[0], 0.9 * H]
    for (const direction of ['L→F', 'F→L'] as const) {
      const delayLF = direction === 'L→F' ? stalled : sc.delay
      const delayFL = direction === 'F→L' ? stalled : sc.delay
      const where = `seed=${seed} run=${i} H=${H} stalled ${direction}`
      const config = { H, delayLF, delayFL, texts: sc.texts, end: sc.end }
      const r = simulateAntiPhase({ ...config, rule: 'anti-phase' }, rng)
      t.is(r.L.deadAt, undefined, where)
      t.is(r.F.deadAt, undefined, where)
      t.is(r.lateChecks, 0, where)
      // The one-way margins: the follower writes some frame at least every 3H/4 whatever the leader's pings do,
      // the leader a non-pong at least every H; each side's silence is that plus the delay spread, under 2H.
      t.true(maxGap(r.F.sends) <= (3 * H) / 4, where)
      t.true(maxGap(r.L.nonPongSends) <= H, where)
      t.true(maxGap(r.L.heard) <= (3 * H) / 4 + (delayFL[1] - delayFL[0]), where)
      t.true(maxGap(r.F.heard) <= H + (delayLF[1] - delayLF[0]), where)
      worst.L = Math.max(worst.L, maxGap(r.L.heard) / H)
      worst.F = Math.max(worst.F, maxGap(r.F.heard) / H)
      worst.nonPong = Math.max(worst.nonPong, maxGap(r.F.nonPongSends) / H)
      const sym = simulateAntiPhase({ ...config, rule: 'symmetric' }, rng)
      t.is(sym.L.deadAt, undefined, where)
      t.is(sym.F.deadAt, undefined, where)
      worst.symL = Math.max(worst.symL, maxGap(sym.L.heard) / H)
      worst.symF = Math.max(worst.symF, maxGap(sym.F.heard) / H)
      runs++
    }
  }
  const f = (x: number): string => `${x.toFixed(3)}H`
  t.log(`${runs} stalled runs per rule, none timed out. Longest silence heard: anti-phase leader ${f(worst.L)}, follower ${f(worst.F)}; symmetric ${f(worst.symL)}, ${f(worst.symF)} (dead at 2H)`)
  // Not a liveness bound (pongs count as heard): when a stall bunches the leader's pings closer than H/2, each
  // re-anchors the follower, so its own pings may space out beyond 5H/4 while its pongs keep the leader informed.
  t.log(`follower's longest gap between non-pong frames under a stall: ${f(worst.nonPong)}`)
})

test('simulation: without the re-plan after a ping, a follower\'s planned check can be late (why connection.ts re-plans)', (t) => {
  const rng = seededRandom(0x7e91)
  let late = 0
  let runs = 0
  for (let i = 0; i < 100; i++) {
    const sc = randomScenario(rng, true)
    const r = simulateAntiPhase({ H: sc.H, rule: 'anti-phase', delayLF: sc.delay, delayFL: sc.delay, texts: sc.texts, end: sc.end, replanOnPing: false }, rng)
    late += r.lateChecks
    runs++
  }
  t.true(late > 0)
  t.log(`${runs} runs without the re-plan: ${late} moments with a follower's check planned later than its rule's due time`)
})
