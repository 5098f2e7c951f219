/**
 * The turn budget (src/rpc/turn-budget.ts): within a turn's budget (time and frames) frames run
 * at once; past it a connection keeps `FREE_FRAMES` a turn and the rest of its frames wait,
 * its socket unread, to run in later turns, `QUANTUM` at a time, round the line, in the order
 * they came; a connection whose frames have all run is read again; a closing connection's
 * waiting frames all run. Time is a manual clock; turns are run by hand (`defer` is captured).
 * The flood this is for is measured by `npm run bench -- --flood`.
 */
import t from 'tap'
import { FREE_FRAMES, MAX_TURN_FRAMES, QUANTUM, TurnBudget, type BudgetedConnection } from '../src/rpc/turn-budget.js'
import { defineMethod } from '../src/rpc/method.js'
import type { AppServices } from '../src/services.js'
import { Type } from '../src/util/typebox.js'
import { connect } from './helpers/client.js'
import { ManualClock } from './helpers/manual-clock.js'
import { startServer } from './helpers/server.js'
import { until } from './helpers/wait.js'

class FakeConnection implements BudgetedConnection<number> {
  readonly ran: number[] = []
  readonly log: string[] = []
  pausable = true
  paused = false
  /** Called with each frame as it runs (after it is recorded): a test advances the clock here to give frames a cost. */
  onRun: (frame: number) => void = () => {}
  constructor(readonly name: string) {}
  run(frame: number): void {
    this.ran.push(frame)
    this.onRun(frame)
  }
  pause(): boolean {
    this.log.push('pause')
    if (!this.pausable) return false
    this.paused = true
    return true
  }
  resume(): void {
    this.log.push('resume')
    this.paused = false
  }
}

function rig(budgetMs = 5) {
  const clock = new ManualClock()
  const turns: (() => void)[] = []
  const budget = new TurnBudget<number>(clock, budgetMs, (fn) => turns.push(fn))
  return {
    clock,
    budget,
    /** Runs the turn boundary (the check phase) that is due; false when none was scheduled. */
    nextTurn(): boolean {
      const fn = turns.shift()
      if (fn === undefined) return false
      fn()
      return true
    },
    get scheduled(): number {
      return turns.length
    },
  }
}

/** Two connections on `budget`, tracked. */
function pair(budget: TurnBudget<number>) {
  const a = new FakeConnection('a')
  const b = new FakeConnection('b')
  return { a, b, sa: budget.track(a), sb: budget.track(b) }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i)

t.test('within the budget every frame runs at once, in order, and nothing is paused', async (t) => {
  const r = rig()
  const a = new FakeConnection('a')
  const sa = r.budget.track(a)
  for (const n of range(0, 50)) r.budget.deliver(sa, n)
  t.same(a.ran, range(0, 50))
  t.same(a.log, [])
  t.equal(r.budget.waitingFrames, 0)
  // The turn ends at the next check phase; an empty line does nothing there.
  t.ok(r.nextTurn())
  t.same(a.log, [])
})

t.test('past the time budget a connection keeps its free frames; the rest wait, unread, and run next turn in order', async (t) => {
  const r = rig(5)
  const a = new FakeConnection('a')
  const sa = r.budget.track(a)
  r.budget.deliver(sa, 0) // starts the turn at t=0
  r.clock.advance(5) // the budget is spent
  for (const n of range(1, 40)) r.budget.deliver(sa, n)
  // 0 ran within the budget and counts as the turn's first frame of `a`; FREE_FRAMES - 1 more are free.
  t.same(a.ran, range(0, FREE_FRAMES), 'the turn ran its budget and the free frames')
  t.same(a.log, ['pause'], 'the socket stops being read')
  t.equal(r.budget.waitingFrames, 40 - FREE_FRAMES)
  t.ok(r.nextTurn())
  t.same(a.ran, range(0, 40), 'the next turn ran the rest, in order')
  t.same(a.log, ['pause', 'resume'], 'then the socket is read again')
  t.equal(r.budget.waitingFrames, 0)
})

t.test('the frame budget holds when the clock does not move (handlers run after their frame)', async (t) => {
  const r = rig(1_000)
  const { a, b, sa, sb } = pair(r.budget)
  for (const n of range(0, MAX_TURN_FRAMES)) r.budget.deliver(sa, n)
  t.equal(a.ran.length, MAX_TURN_FRAMES)
  for (const n of range(0, 20)) r.budget.deliver(sb, n)
  t.same(b.ran, range(0, FREE_FRAMES), 'another connection gets only its free frames')
  t.same(b.log, ['pause'])
})

t.test('a light client never waits behind a flood: its first frames of a turn run at once', async (t) => {
  const r = rig(5)
  const flooder = new FakeConnection('flooder')
  const sf = r.budget.track(flooder)
  for (const n of range(0, 5_000)) r.budget.deliver(sf, n)
  t.ok(flooder.ran.length <= MAX_TURN_FRAMES, 'the flooder ran at most a turn')
  const probe = new FakeConnection('probe')
  const sp = r.budget.track(probe)
  r.budget.deliver(sp, 1)
  t.same(probe.ran, [1], 'the probe ran at once, with thousands waiting')
  t.same(probe.log, [])
})

t.test('frames of a waiting connection join the back of its line, even when it has free frames left this turn', async (t) => {
  const r = rig(5)
  const { a, b, sa, sb } = pair(r.budget)
  r.budget.deliver(sa, -1)
  r.clock.advance(5)
  for (const n of range(0, 3 * QUANTUM)) r.budget.deliver(sa, n)
  for (const n of range(0, 3 * QUANTUM)) r.budget.deliver(sb, n)
  const bRan = b.ran.length
  // Each of a's frames costs 1 ms: the next turn spends its budget on a and never reaches b.
  a.onRun = () => r.clock.advance(1)
  t.ok(r.nextTurn())
  t.equal(b.ran.length, bRan, 'b was not reached this turn, so it has its free frames again')
  r.budget.deliver(sb, 1_000)
  t.equal(b.ran.length, bRan, 'yet its new frame waits behind the others')
  a.onRun = () => {}
  while (r.nextTurn());
  t.same(b.ran, [...range(0, 3 * QUANTUM), 1_000], 'in the order they came')
  t.same(a.ran, range(-1, 3 * QUANTUM))
})

t.test('waiting connections take turns a quantum at a time, and a spent turn leaves the rest for the next', async (t) => {
  const r = rig(5)
  const { a, b, sa, sb } = pair(r.budget)
  r.budget.deliver(sa, -1)
  r.clock.advance(5)
  const many = QUANTUM * 3
  for (const n of range(0, many)) r.budget.deliver(sa, n)
  for (const n of range(0, many)) r.budget.deliver(sb, n)
  // From here each frame costs 0.1 ms of the clock.
  const order: string[] = []
  a.onRun = () => {
    order.push('a')
    r.clock.advance(0.1)
  }
  b.onRun = () => {
    order.push('b')
    r.clock.advance(0.1)
  }
  t.ok(r.nextTurn())
  // The budget is checked before each quantum: 3.2 ms after a's, 6.4 ms after b's.
  t.same(order, [...Array<string>(QUANTUM).fill('a'), ...Array<string>(QUANTUM).fill('b')], 'a quantum of each, the first to wait first')
  t.ok(r.scheduled > 0, 'the line goes on next turn')
  while (r.nextTurn());
  t.same(a.ran, range(-1, many), 'every frame of a ran, in order')
  t.same(b.ran, range(0, many), 'every frame of b ran, in order')
  t.same(a.log, ['pause', 'resume'])
  t.same(b.log, ['pause', 'resume'])
  t.equal(r.budget.waitingFrames, 0)
})

t.test('a closing connection runs everything it has waiting at once, and leaves the line', async (t) => {
  const r = rig(5)
  const { a, b, sa, sb } = pair(r.budget)
  r.budget.deliver(sa, 0)
  r.clock.advance(5)
  for (const n of range(1, 30)) r.budget.deliver(sa, n)
  for (const n of range(0, 30)) r.budget.deliver(sb, n)
  r.budget.flush(sa)
  t.same(a.ran, range(0, 30), 'nothing a received is lost')
  r.budget.flush(sa) // twice is harmless
  t.same(a.ran, range(0, 30))
  while (r.nextTurn());
  t.same(a.ran, range(0, 30), 'the drain does not run them again')
  t.same(b.ran, range(0, 30))
  t.same(a.log, ['pause'], 'a closed socket is not read again')
})

t.test('a connection that closes while one of its frames runs is not run twice', async (t) => {
  const r = rig(5)
  const a = new FakeConnection('a')
  const sa = r.budget.track(a)
  r.budget.deliver(sa, 0)
  r.clock.advance(5)
  for (const n of range(1, 20)) r.budget.deliver(sa, n)
  a.onRun = (n) => {
    if (n === FREE_FRAMES + 2) r.budget.flush(sa)
  }
  while (r.nextTurn());
  t.same(a.ran, range(0, 20))
})

t.test('a socket that cannot be paused (closing) still has its frames run in turn, and is not resumed', async (t) => {
  const r = rig(5)
  const a = new FakeConnection('a')
  a.pausable = false
  const sa = r.budget.track(a)
  r.budget.deliver(sa, 0)
  r.clock.advance(5)
  for (const n of range(1, 20)) r.budget.deliver(sa, n)
  while (r.nextTurn());
  t.same(a.ran, range(0, 20))
  t.same(a.log, ['pause'])
})

t.test('a budget of 0 still makes progress: each turn runs at least a quantum', async (t) => {
  const r = rig(0)
  const a = new FakeConnection('a')
  const sa = r.budget.track(a)
  for (const n of range(0, 1_000)) r.budget.deliver(sa, n)
  let turns = 0
  while (r.nextTurn()) turns++
  t.same(a.ran, range(0, 1_000))
  t.ok(turns <= Math.ceil(1_000 / QUANTUM) + 2, `${turns} turns`)
})

t.test('hostile: 100,000 frames from one connection in one turn run in order, and frames that ran are not held', async (t) => {
  const r = rig(5)
  const a = new FakeConnection('a')
  const sa = r.budget.track(a)
  for (const n of range(0, 100_000)) r.budget.deliver(sa, n)
  let maxWaiting = r.budget.waitingFrames
  while (r.nextTurn()) maxWaiting = Math.max(maxWaiting, r.budget.waitingFrames)
  t.equal(a.ran.length, 100_000)
  t.ok(a.ran.every((n, i) => n === i), 'in order')
  t.ok(maxWaiting < 100_000, 'waiting only shrinks as the line runs')
  t.equal(r.budget.waitingFrames, 0)
})

/** A server whose every frame past a turn's first few waits its turn; `test/record` notes each `n` it handles. */
async function recordingServer(t: import('tap').Test) {
  const handled: number[] = []
  const record = defineMethod<AppServices, typeof RecordParams>({
    name: 'test/record',
    scope: 'session',
    params: RecordParams,
    handler: (params) => {
      handled.push(params.n)
      return { n: params.n }
    },
  })
  // The whole burst may be in flight at once (as when ws emits a read's frames together).
  const server = await startServer({ extraMethods: [record], turnBudgetMs: 0, argv: ['--max-in-flight-per-connection', String(BURST)] })
  t.teardown(() => server.close())
  const client = await connect(server.wsUrl)
  t.teardown(() => client.ws.terminate())
  const init = await client.request('initialize', { clientInfo: { name: 'burst', title: null, version: '1.0.0' } })
  t.ok('result' in init, 'initialized')
  return { server, client, handled }
}

const RecordParams = Type.Object({ n: Type.Integer() })
const BURST = 1_000

/** `count` requests in one socket write (one frame each, masked as a client must). */
function burst(ws: import('ws').WebSocket, count: number): void {
  const raw = (ws as unknown as { _socket: import('node:net').Socket })._socket
  raw.cork()
  for (let n = 0; n < count; n++) ws.send(JSON.stringify({ id: `r${n}`, method: 'test/record', params: { n } }))
  raw.uncork()
}

t.test('a burst over a real socket, past the budget: every request is handled once, in order, and answered', async (t) => {
  const { client, handled } = await recordingServer(t)
  burst(client.ws, BURST)
  await until(() => handled.length === BURST, 'every request handled')
  t.same(handled, range(0, BURST), 'in the order sent')
  const answers = () => client.frames.map((f) => JSON.parse(f) as { id?: unknown; result?: { n: number } }).filter((m) => typeof m.id === 'string' && m.id.startsWith('r'))
  await until(() => answers().length === BURST, 'every request answered')
  const answered = answers().map((m) => m.result?.n ?? -1)
  t.same([...answered].sort((a, b) => a - b), range(0, BURST), 'each answered once, with its own result')
})

for (const how of ['close', 'terminate'] as const)
t.test(`a burst the client ends right after (${how}) is still handled whole (nothing it sent is dropped)`, async (t) => {
  const { server, client, handled } = await recordingServer(t)
  burst(client.ws, BURST)
  if (how === 'close') client.ws.close(1000)
  else client.ws.terminate()
  await client.closed
  await until(() => handled.length === BURST, 'every request handled')
  t.same(handled, range(0, BURST))
  await until(() => server.app.sessions.size === 0, 'the session is gone')
})
