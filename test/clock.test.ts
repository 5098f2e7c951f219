/**
 * The one clock: the system clock's readings and unref'd timers, and the manual clock every
 * other suite drives time with (it must fire what is due, in order, at its due time, and
 * nothing else).
 */
import t from 'tap'
import { systemClock } from '../src/clock.js'
import { DEFAULT_WALL_START_MS, ManualClock } from './helpers/manual-clock.js'

t.test('system clock: wall time is the epoch clock, monotonic time never goes back', async (t) => {
  const before = Date.now()
  const wall = systemClock.wallMs()
  t.ok(wall >= before && wall <= Date.now(), 'wallMs reads Date.now()')
  let last = systemClock.monotonicMs()
  for (let i = 0; i < 1000; i++) {
    const next = systemClock.monotonicMs()
    if (next < last) t.fail(`monotonic reading went back from ${last} to ${next}`)
    last = next
  }
  const { monotonicMs } = systemClock
  t.type(monotonicMs(), 'number', 'a reading works unbound')
})

t.test('system clock: timers are unref’d, fire, and can be cleared', async (t) => {
  const fired: string[] = []
  const cleared = systemClock.setTimeout(() => fired.push('cleared'), 0)
  const handle = systemClock.setTimeout(() => fired.push('kept'), 0)
  t.equal((handle as NodeJS.Timeout).hasRef(), false, 'a pending timeout does not keep the process alive')
  systemClock.clearTimeout(cleared)
  await new Promise<void>((resolve) => setImmediate(resolve))
  await new Promise<void>((resolve) => setTimeout(resolve, 0))
  t.same(fired, ['kept'])
})

t.test('manual clock: readings start where asked and move only when advanced', async (t) => {
  const fresh = new ManualClock()
  t.equal(fresh.monotonicMs(), 0)
  t.equal(fresh.wallMs(), DEFAULT_WALL_START_MS)
  const clock = new ManualClock({ monotonicMs: 500, wallMs: 1_700_000_000_000 })
  t.equal(clock.monotonicMs(), 500)
  t.equal(clock.wallMs(), 1_700_000_000_000)
  clock.advance(250)
  t.same([clock.monotonicMs(), clock.wallMs()], [750, 1_700_000_000_250], 'both readings move together')
  const { monotonicMs, wallMs } = clock
  t.same([monotonicMs(), wallMs()], [750, 1_700_000_000_250], 'readings work unbound')
})

t.test('manual clock: due timeouts fire in order, each at its due time', async (t) => {
  const clock = new ManualClock()
  const fired: Array<[string, number]> = []
  const at = (name: string) => () => void fired.push([name, clock.monotonicMs()])
  clock.setTimeout(at('c'), 300)
  clock.setTimeout(at('a'), 100)
  clock.setTimeout(at('b1'), 200)
  clock.setTimeout(at('b2'), 200)
  const gone = clock.setTimeout(at('cleared'), 150)
  clock.clearTimeout(gone)
  t.same(clock.pendingDelays(), [100, 200, 200, 300])

  clock.advance(99)
  t.same(fired, [], 'nothing before it is due')
  clock.advance(151)
  t.same(fired, [['a', 100], ['b1', 200], ['b2', 200]], 'in due order, ties in scheduling order')
  t.equal(clock.monotonicMs(), 250, 'then the clock rests at the end of the advance')
  t.same(clock.pendingDelays(), [50])
  t.equal(clock.pendingCount, 1)
})

t.test('manual clock: a timeout scheduled by a firing one fires in the same advance if due', async (t) => {
  const clock = new ManualClock()
  const ticks: number[] = []
  const tick = () => {
    ticks.push(clock.monotonicMs())
    clock.setTimeout(tick, 100)
  }
  clock.setTimeout(tick, 100)
  clock.advance(350)
  t.same(ticks, [100, 200, 300])
  t.same(clock.pendingDelays(), [50])
})

t.test('manual clock: advanceToWall moves forward only', async (t) => {
  const clock = new ManualClock({ wallMs: 10_000 })
  let fired = false
  clock.setTimeout(() => (fired = true), 5_000)
  clock.advanceToWall(15_000)
  t.equal(fired, true)
  t.equal(clock.wallMs(), 15_000)
  t.throws(() => clock.advanceToWall(14_999), /cannot go back 1 ms/)
  t.equal(clock.wallMs(), 15_000, 'a refused move changes nothing')
})

t.test('manual clock: advanceSettling lets async work resume between timeouts', async (t) => {
  const clock = new ManualClock()
  const seen: number[] = []
  // A loop that waits on the clock, then does async work before waiting again.
  const loop = async (): Promise<void> => {
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 100))
      await Promise.resolve()
      seen.push(clock.monotonicMs())
    }
  }
  const done = loop()
  await clock.advanceSettling(300)
  await done
  t.same(seen, [100, 200, 300], 'each wait was scheduled after the previous one resumed')
})
