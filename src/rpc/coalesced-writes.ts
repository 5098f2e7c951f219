/**
 * One write to the kernel per turn of the event loop instead of one per frame. The frames a
 * socket sends while handling one read (an engine chunk holds many notifications; a client
 * pipelines requests) are held in the socket's buffer until the current job ends, then go out
 * in a single `writev`: the per-frame system call, not JSON, is what a relayed frame costs most.
 *
 * Nothing waits: the buffer is released on `process.nextTick`, before any I/O or timer, so no
 * frame is later than it would have been; the frames and their order are unchanged.
 */
import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'

/** Call before each send on `socket`: the first in a job starts holding, the job's end releases. */
export function coalescedWrites(socket: WebSocket): () => void {
  // `ws` has no cork of its own; its sender writes each frame to this stream (and nests its own
  // cork/uncork inside ours, which is what Node's cork counting is for).
  const stream = (socket as unknown as { _socket: Duplex | null })._socket
  if (stream === null) return () => {}
  let holding = false
  const release = (): void => {
    holding = false
    stream.uncork()
  }
  return () => {
    if (holding) return
    holding = true
    stream.cork()
    process.nextTick(release)
  }
}
