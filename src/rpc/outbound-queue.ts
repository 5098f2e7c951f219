/**
 * What the gateway holds for one client: the bytes ws has buffered for its socket, plus
 * `FRAME_OVERHEAD_BYTES` for every frame handed to the socket whose write has not completed —
 * what a queued frame costs beyond its text (ws writes a header buffer and a body buffer for
 * it, and the stream keeps an entry and a callback for each write). Counted by text alone, a
 * flood of small frames held three and a half times the bound in memory. The frames are
 * counted with one shared write callback (writes complete in order), not a closure each.
 *
 * Frames sent in one burst (the replies to a socket read's worth of requests, an engine
 * read's worth of notifications) leave in one write (`BurstCork`).
 */
import type { WebSocket } from 'ws'
import { BurstCork } from '../util/burst-cork.js'

/** Measured: ~520 bytes of memory per queued 259-byte frame beyond its text, rounded down. */
export const FRAME_OVERHEAD_BYTES = 512

export class OutboundQueue {
  private frames = 0
  private readonly burst: BurstCork

  constructor(private readonly socket: WebSocket) {
    this.burst = new BurstCork(socket)
  }

  /** Bytes the gateway holds for the client, each frame's overhead included. */
  get bytes(): number {
    return this.socket.bufferedAmount + this.frames * FRAME_OVERHEAD_BYTES
  }

  /** Sends `text`; `written`, if given, is called once it has left (or the socket failed). */
  send(text: string, written?: () => void): void {
    this.frames++
    this.burst.cork()
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

  private readonly onWritten = (): void => {
    if (this.frames > 0) this.frames--
  }
}
