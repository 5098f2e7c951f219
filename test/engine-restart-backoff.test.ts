/**
 * The engine restart delay, with a manual clock and a fixed random: 200 ms × 2^(n−1), ±10 %,
 * at most 30 s, and back to the first delay once the engine has been up for a minute.
 */
import t from 'tap'
import { RestartBackoff } from '../src/engine/restart-backoff.js'
import { ManualClock } from './helpers/manual-clock.js'

t.test('doubles from 200 ms and stops at 30 s', async (t) => {
  const b = new RestartBackoff({ clock: new ManualClock(), random: () => 0.5 })
  const delays = Array.from({ length: 10 }, () => b.nextDelayMs())
  t.same(delays, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000])
  t.equal(b.attempt, 10)
  for (let i = 0; i < 2000; i++) b.nextDelayMs()
  t.equal(b.nextDelayMs(), 30_000, 'still capped after thousands of failures (no overflow)')
})

t.test('jitter moves each delay by at most 10 %, never past the cap', async (t) => {
  const low = new RestartBackoff({ clock: new ManualClock(), random: () => 0 })
  const high = new RestartBackoff({ clock: new ManualClock(), random: () => 0.999999 })
  t.same([low.nextDelayMs(), low.nextDelayMs(), low.nextDelayMs()], [180, 360, 720])
  t.same([high.nextDelayMs(), high.nextDelayMs(), high.nextDelayMs()], [220, 440, 880])
  for (let i = 0; i < 10; i++) high.nextDelayMs()
  t.equal(high.nextDelayMs(), 30_000)
})

t.test('a minute up resets the count; less does not', async (t) => {
  const clock = new ManualClock()
  const b = new RestartBackoff({ clock, random: () => 0.5 })
  t.equal(b.nextDelayMs(), 200)
  t.equal(b.nextDelayMs(), 400)
  b.up()
  clock.advance(59_999)
  t.equal(b.nextDelayMs(), 800, 'up for just under a minute: the count goes on')
  b.up()
  clock.advance(60_000)
  t.equal(b.nextDelayMs(), 200, 'up for a minute: back to the first delay')
  clock.advance(120_000)
  t.equal(b.nextDelayMs(), 400, 'time down does not count as time up')
})
