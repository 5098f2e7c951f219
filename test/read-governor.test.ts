/**
 * The read governor (src/rpc/read-governor.ts): when its tick fires late (the event loop fell
 * behind), the sessions that sent more than `heavyFrames` since the last look stop being read
 * and queue up; ticks on time read them again one at a time, longest held first; light and
 * closed sessions are never held. Lag is simulated by a clock whose readings run ahead of the
 * manual clock's timers; the flood itself is measured by `npm run bench -- --flood`.
 */
import t from 'tap'
import type { Clock } from '../src/clock.js'
import { ReadGovernor, type GovernedSession, type ReadGovernorOptions } from '../src/rpc/read-governor.js'
import { ManualClock } from './helpers/manual-clock.js'

class FakeSession implements GovernedSession {
  isClosed = false
  received = 0
  heldFor: number | null = null
  readonly log: string[] = []
  constructor(readonly name: string) {}
  get framesReceived(): number {
    return this.received
  }
  /** A session that cannot be held (a remote connection) answers false. */
  holdable = true
  holdReading(ms: number): boolean {
    if (!this.holdable) return false
    this.heldFor = ms
    this.log.push('hold')
    return true
  }
  releaseReading(): void {
    this.heldFor = null
    this.log.push('release')
  }
}

const OPTIONS: ReadGovernorOptions = { tickMs: 10, lagLimitMs: 20, heavyFrames: 64, holdMaxMs: 60_000 }

function rig(sessions: FakeSession[]) {
  const manual = new ManualClock()
  let lagMs = 0
  // Timers run on the manual clock; readings run `lagMs` ahead of it, as a late timer sees.
  const clock: Clock = {
    monotonicMs: () => manual.monotonicMs() + lagMs,
    wallMs: () => manual.wallMs(),
    setTimeout: (fn, ms) => manual.setTimeout(fn, ms),
    clearTimeout: (h) => manual.clearTimeout(h),
  }
  const governor = new ReadGovernor<FakeSession>(() => sessions, clock, OPTIONS)
  return {
    governor,
    manual,
    /** One tick that fires `late` ms after it was due. */
    tick(late: number) {
      lagMs += late
      manual.advance(OPTIONS.tickMs)
    },
  }
}

t.test('a late tick holds the heavy senders only; on-time ticks release them one by one, longest held first', async (t) => {
  const heavyA = new FakeSession('a')
  const heavyB = new FakeSession('b')
  const light = new FakeSession('light')
  const r = rig([heavyA, heavyB, light])
  r.governor.start()
  t.equal(r.manual.pendingCount, 1, 'one timer')

  heavyA.received += 1000
  heavyB.received += 65
  light.received += 64
  r.tick(0)
  t.equal(r.governor.heldCount, 0, 'no lag: nobody is held, however much they sent')

  heavyA.received += 1000
  heavyB.received += 65
  light.received += 64
  r.tick(25)
  t.equal(r.governor.heldCount, 2, 'lag over the limit: the two above heavyFrames are held')
  t.equal(heavyA.heldFor, OPTIONS.holdMaxMs, 'for at most holdMaxMs')
  t.equal(heavyB.heldFor, OPTIONS.holdMaxMs)
  t.same(light.log, [], 'a light session is never held')

  heavyA.received += 5000
  r.tick(25)
  t.equal(r.governor.heldCount, 2, 'still late: nobody is released, and a held one is not held twice')
  t.same(heavyA.log, ['hold'])

  r.tick(0)
  t.same(heavyA.log, ['hold', 'release'], 'on time: the longest held is read again')
  t.same(heavyB.log, ['hold'], 'one per tick')
  r.tick(0)
  t.same(heavyB.log, ['hold', 'release'])
  t.equal(r.governor.heldCount, 0)
  r.governor.stop()
  t.equal(r.manual.pendingCount, 0, 'stop clears the timer')
})

t.test('closed sessions leave the line; stop releases every held session', async (t) => {
  const a = new FakeSession('a')
  const b = new FakeSession('b')
  const c = new FakeSession('c')
  const r = rig([a, b, c])
  r.governor.start()
  for (const s of [a, b, c]) s.received += 500
  r.tick(30)
  t.equal(r.governor.heldCount, 3)
  a.isClosed = true
  r.tick(0)
  t.same(a.log, ['hold'], 'a closed session is dropped, not released')
  t.same(b.log, ['hold', 'release'], 'the next in line is released instead')
  r.governor.stop()
  t.same(c.log, ['hold', 'release'], 'stop reads every held session again')
  t.equal(r.governor.heldCount, 0)
})

t.test('a session that cannot be held does not join the line', async (t) => {
  const remote = new FakeSession('remote')
  remote.holdable = false
  const local = new FakeSession('local')
  const r = rig([remote, local])
  r.governor.start()
  remote.received += 500
  local.received += 500
  r.tick(30)
  t.equal(r.governor.heldCount, 1, 'only the one that was held')
  r.tick(0)
  t.same(local.log, ['hold', 'release'], 'the first on-time tick releases it, no turn spent on the other')
  r.governor.stop()
})

t.test('frames are counted per look: a sender heavy only before a late tick is not held by it', async (t) => {
  const s = new FakeSession('s')
  const r = rig([s])
  r.governor.start()
  s.received += 10_000
  r.tick(0)
  r.tick(30)
  t.same(s.log, [], 'nothing was received since the last look')
  r.governor.stop()
})
