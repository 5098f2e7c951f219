import t from 'tap'
import { Heartbeat, type Pingable } from '../src/rpc/websocket-transport.js'

class FakeSocket implements Pingable {
  isPaused = false
  pings = 0
  terminated = false
  private pong: (() => void) | null = null
  ping(): void {
    this.pings++
  }
  terminate(): void {
    this.terminated = true
  }
  on(_event: 'pong', listener: () => void): this {
    this.pong = listener
    return this
  }
  answer(): void {
    this.pong?.()
  }
}

t.test('a socket that answers every ping stays; one that stops is terminated', async (t) => {
  const hb = new Heartbeat(0) // no timer: the test drives tick()
  const good = new FakeSocket()
  const dead = new FakeSocket()
  hb.track(good)
  hb.track(dead)
  hb.tick()
  t.equal(good.pings, 1)
  t.equal(dead.pings, 1)
  good.answer()
  hb.tick()
  t.notOk(good.terminated, 'answered the ping')
  t.ok(dead.terminated, 'missed the ping')
  t.equal(dead.pings, 1, 'a terminated socket is not pinged again')
  good.answer()
  hb.untrack(good)
  hb.tick()
  t.equal(good.pings, 2, 'an untracked socket is left alone')
  hb.stop()
})

t.test('a socket the server is not reading (held back as a flooder) is not judged until it is read again', async (t) => {
  const hb = new Heartbeat(0)
  const held = new FakeSocket()
  hb.track(held)
  hb.tick()
  held.isPaused = true // its pong may be waiting unread in TCP
  hb.tick()
  hb.tick()
  t.notOk(held.terminated, 'not terminated while paused')
  t.equal(held.pings, 1, 'nor pinged')
  held.isPaused = false
  hb.tick()
  t.ok(held.terminated, 'read again and still no pong: terminated')
  hb.stop()
})
