/**
 * Server-side keepalive: every interval each socket must have answered the previous ping,
 * or it is terminated as dead. One timer for all sockets; `tick()` is public so tests can
 * drive it without waiting.
 */

export interface Pingable {
  ping(): void
  terminate(): void
  on(event: 'pong', listener: () => void): unknown
}

export class Heartbeat {
  private readonly alive = new Map<Pingable, boolean>()
  private timer: NodeJS.Timeout | null = null

  constructor(private readonly intervalMs: number) {}

  track(socket: Pingable): void {
    this.alive.set(socket, true)
    socket.on('pong', () => {
      if (this.alive.has(socket)) this.alive.set(socket, true)
    })
    if (this.timer === null && this.intervalMs > 0) {
      this.timer = setInterval(() => this.tick(), this.intervalMs)
      this.timer.unref()
    }
  }

  untrack(socket: Pingable): void {
    this.alive.delete(socket)
  }

  /** One round: terminate sockets that missed the last ping, ping the rest. */
  tick(): void {
    for (const [socket, ok] of this.alive) {
      if (!ok) {
        this.alive.delete(socket)
        socket.terminate()
        continue
      }
      this.alive.set(socket, false)
      socket.ping()
    }
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }
}
