/**
 * Frames sent in one burst leave in one write: the first send of a tick corks the socket under
 * a WebSocket and the next tick uncorks it. Uncorked, ws writes every frame with a syscall of
 * its own; under a flood that was a third of the gateway's time, and at the engine's knee each
 * syscall is CPU taken from the engine (src/rpc/outbound-queue.ts, src/engine/upstream.ts).
 */
import type { WebSocket } from 'ws'

interface Corkable {
  cork(): void
  uncork(): void
}

export class BurstCork {
  private corked = false
  /** ws's socket (ws keeps it as `_socket` and offers no cork of its own); absent before it connects. */
  private readonly raw: Corkable | undefined

  constructor(socket: WebSocket) {
    this.raw = (socket as unknown as { _socket?: Corkable })._socket
  }

  /** Corks until the next tick, unless already corked. Call before each send. */
  cork(): void {
    const raw = this.raw
    if (this.corked || raw === undefined) return
    this.corked = true
    raw.cork()
    process.nextTick(this.uncork)
  }

  private readonly uncork = (): void => {
    this.corked = false
    this.raw?.uncork()
  }
}
