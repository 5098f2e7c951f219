/**
 * What the gateway holds for one client: the bytes ws has buffered for its socket, plus
 * `FRAME_OVERHEAD_BYTES` for every frame handed to the socket whose write has not completed —
 * what a queued frame costs beyond its text (ws writes a header buffer and a body buffer for
 * it, and the stream keeps an entry and a callback for each write). Counted by text alone, a
 * flood of small frames held three and a half times the bound in memory. The frames are
 * counted with one shared write callback (writes complete in order), not a closure each.
 *
 * Frames sent in one burst (the replies to a socket read's worth of requests, an engine
 * read's worth of notifications) leave in one write: the first send corks the TCP socket and
 * the next tick uncorks it. Uncorked, ws writes every frame with a syscall of its own, which
 * under a flood was a third of the process's time.
 */
import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'

/** Measured: ~520 bytes of memory per queued 259-byte frame beyond its text, rounded down. */
export const FRAME_OVERHEAD_BYTES = 512

export class OutboundQueue {
  private frames = 0
  private corked = false
  /** ws's TCP socket (ws keeps it as `_socket` and offers no cork of its own). */
  private readonly raw: Duplex | undefined

  constructor(private readonly socket: WebSocket) {
    this.raw = (socket as unknown as { _socket?: Duplex })._socket
  }

  /** Bytes the gateway holds for the client, each frame's overhead included. */
  get bytes(): number {
    return this.socket.bufferedAmount + this.frames * FRAME_OVERHEAD_BYTES
  }

  /** Sends `text`; `written`, if given, is called once it has left (or the socket failed). */
  send(text: string, written?: () => void): void {
    this.frames++
    this.corkForBurst()
    if (written === undefined) this.socket.send(text, this.onWritten)
    else
      this.socket.send(text, () => {
        this.onWritten()
        written()
      })
  }

  /** The socket is gone: nothing it held is charged any more (its buffers go with it). */
  release(): void {
    this.frames = 0
  }

  private corkForBurst(): void {
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

  private readonly onWritten = (): void => {
    if (this.frames > 0) this.frames--
  }
}
