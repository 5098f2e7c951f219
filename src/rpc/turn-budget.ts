/**
 * Bounds how long client frames may run in one turn of the event loop, so that a health probe
 * or a light client waits at most about a budget behind any flood.
 *
 * Why: a socket read hands ws up to 64 KiB of frames, libuv reads a readable socket up to 32
 * times in a row, and ws emits every frame at once; a flooder let read again runs its whole
 * burst (2,000 requests at the default `--rpc-burst`) before anything else. Measured under
 * `npm run bench -- --flood` (200 connections): one turn ran 17,302 frames from 149 reads
 * (156 ms) while `/healthz` waited. The read governor (read-governor.ts) acts on its next
 * tick; this acts within the turn.
 *
 * For each frame a connection delivers, in this order:
 * 1. the connection has frames waiting: this one joins the back of them, so one connection's
 *    frames always run in the order they came;
 * 2. the turn has run for less than `budgetMs` (on the injected clock, from its first frame)
 *    and fewer than `MAX_TURN_FRAMES` frames, or the connection has run fewer than
 *    `FREE_FRAMES` frames in this turn: the frame runs now (so a light client — a probe's
 *    `account/read`, an IDE's request — never waits in line behind a flood);
 * 3. otherwise it waits, kept as ws gave it (not parsed), the connection stops being read (TCP
 *    pushes back on its sender), and it joins the back of the line of waiting connections.
 * Each later turn (`defer`: setImmediate, after the poll phase) runs waiting frames: the
 * connection at the front of the line runs up to `QUANTUM` of them (their replies leave in one
 * write) and, if it has more, goes to the back; until the turn's budget is spent. A connection
 * whose frames have all run leaves the line and is read again. So what waits is at most what
 * one read brought for each connection, and nothing is dropped: a connection that closes has
 * its waiting frames run first (`flush`), as ws would have before its close — a request or
 * notification the client sent before it went still reaches the engine.
 */
import type { Clock } from '../clock.js'

/** What the budget needs of a connection (serveSocket gives one per socket). */
export interface BudgetedConnection<F> {
  /** Runs one frame. */
  run(frame: F): void
  /** Stops reading the socket; false when it cannot (it is closing): frames still wait their turn. */
  pause(): boolean
  /** Reads the socket again (after a pause that succeeded). */
  resume(): void
}

/** How long a turn's frames may run, as far as the clock can see (see `MAX_TURN_FRAMES`). */
export const DEFAULT_TURN_BUDGET_MS = 5
/** Frames any connection may run in a turn over budget: more than a light client sends at once. */
export const FREE_FRAMES = 8
/** Frames a waiting connection runs at once when its turn in the line comes. */
export const QUANTUM = 32
/**
 * Frames a turn runs within its budget, whatever the clock says. A request's handler mostly
 * runs after the frame (its awaits resolve once the turn's synchronous part is over), where
 * the clock cannot see it from here: measured under the flood, a drain the clock let run for
 * 5 ms started 2,100 requests whose handlers then ran another 15 ms (about 10 µs each). 128
 * is about a millisecond of them; 64 and 256 measured the same within the noise (README,
 * Benchmarks, "Flood").
 */
export const MAX_TURN_FRAMES = 128

/** One connection as the budget tracks it (`TurnBudget.track`). */
export class BudgetedSocket<F> {
  /** Frames waiting; `head` is the next to run. */
  frames: F[] = []
  head = 0
  inLine = false
  paused = false
  /** The turn in which it last ran a frame, and how many it ran then. */
  turn = -1
  ran = 0

  constructor(readonly connection: BudgetedConnection<F>) {}
}

export class TurnBudget<F> {
  /** Connections with frames waiting, front first (a queue over an array: `lineHead` is the front). */
  private line: BudgetedSocket<F>[] = []
  private lineHead = 0
  /** The current turn's number, and when it ran its first frame (null between turns). */
  private turn = 0
  private turnStartedMs: number | null = null
  /** Frames run in the current turn within its budget (free frames not counted). */
  private turnFrames = 0
  private drainScheduled = false

  constructor(
    private readonly clock: Pick<Clock, 'monotonicMs'>,
    private readonly budgetMs: number = DEFAULT_TURN_BUDGET_MS,
    private readonly defer: (fn: () => void) => void = setImmediate,
  ) {}

  track(connection: BudgetedConnection<F>): BudgetedSocket<F> {
    return new BudgetedSocket(connection)
  }

  /** Frames waiting across all connections. */
  get waitingFrames(): number {
    let n = 0
    for (let i = this.lineHead; i < this.line.length; i++) n += this.line[i]!.frames.length - this.line[i]!.head
    return n
  }

  /** A frame the connection's socket delivered. */
  deliver(socket: BudgetedSocket<F>, frame: F): void {
    if (socket.inLine) {
      socket.frames.push(frame)
      return
    }
    if (this.withinTurn()) {
      this.turnFrames++
      this.run(socket, frame)
      return
    }
    if (this.freeFrame(socket)) {
      this.run(socket, frame)
      return
    }
    socket.frames.push(frame)
    socket.inLine = true
    socket.paused = socket.connection.pause()
    this.line.push(socket)
    this.scheduleDrain()
  }

  /** Runs every frame the connection has waiting, now (it is closing); it leaves the line. */
  flush(socket: BudgetedSocket<F>): void {
    if (!socket.inLine) return
    socket.inLine = false
    const index = this.line.indexOf(socket, this.lineHead)
    if (index >= 0) this.line.splice(index, 1)
    const { frames, head } = socket
    socket.frames = []
    socket.head = 0
    for (let i = head; i < frames.length; i++) socket.connection.run(frames[i]!)
  }

  private run(socket: BudgetedSocket<F>, frame: F): void {
    if (socket.turn !== this.turn) {
      socket.turn = this.turn
      socket.ran = 0
    }
    socket.ran++
    socket.connection.run(frame)
  }

  private freeFrame(socket: BudgetedSocket<F>): boolean {
    return socket.turn !== this.turn || socket.ran < FREE_FRAMES
  }

  /** Whether the turn still has budget; the first frame of a turn starts it. */
  private withinTurn(): boolean {
    const now = this.clock.monotonicMs()
    if (this.turnStartedMs === null) {
      this.turnStartedMs = now
      this.turnFrames = 0
      // The turn ends once the poll phase has run: the next check phase starts a new one.
      this.scheduleDrain()
      return true
    }
    return this.turnFrames < MAX_TURN_FRAMES && now - this.turnStartedMs < this.budgetMs
  }

  private scheduleDrain(): void {
    if (this.drainScheduled) return
    this.drainScheduled = true
    this.defer(this.drain)
  }

  /** A new turn: the line runs (see the header) until the turn's budget is spent. */
  private readonly drain = (): void => {
    this.drainScheduled = false
    this.turn++
    this.turnStartedMs = null
    while (this.lineHead < this.line.length) {
      if (!this.withinTurn()) return this.yieldTurn()
      const socket = this.line[this.lineHead]!
      this.line[this.lineHead++] = undefined as unknown as BudgetedSocket<F>
      for (let n = 0; n < QUANTUM && socket.inLine && socket.head < socket.frames.length; n++) {
        const frame = socket.frames[socket.head]!
        // Released as it runs: a long wait holds no frame that has already run.
        socket.frames[socket.head++] = undefined as F
        this.turnFrames++
        this.run(socket, frame)
      }
      if (!socket.inLine) continue // flushed while it ran (closed)
      if (socket.head < socket.frames.length) {
        this.line.push(socket)
        continue
      }
      socket.inLine = false
      socket.frames = []
      socket.head = 0
      if (socket.paused) socket.connection.resume()
    }
    this.line = []
    this.lineHead = 0
  }

  /** The turn's budget is spent: the line goes on in the next turn (what has run is dropped from its front). */
  private yieldTurn(): void {
    if (this.lineHead * 2 > this.line.length) {
      this.line = this.line.slice(this.lineHead)
      this.lineHead = 0
    }
    this.scheduleDrain()
  }
}
