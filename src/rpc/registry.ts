import type { Clock } from '../clock.js'
import type { Session } from './session.js'
import type { RpcErrorBody } from './wire.js'

/** How long a drain waits, on which clock, and what a request still unanswered then is told. */
export interface DrainDeadline {
  readonly ms: number
  readonly clock: Pick<Clock, 'setTimeout' | 'clearTimeout'>
  readonly unanswered: RpcErrorBody
}

/**
 * Every live session of the process, local or remote. Broadcasts go only to initialized
 * sessions that did not opt out of the method; shutdown waits for in-flight requests.
 */
export class SessionRegistry {
  private readonly sessions = new Set<Session>()

  get size(): number {
    return this.sessions.size
  }

  [Symbol.iterator](): IterableIterator<Session> {
    return this.sessions.values()
  }

  add(session: Session): void {
    this.sessions.add(session)
  }

  remove(session: Session): void {
    this.sessions.delete(session)
  }

  broadcast(method: string, params: unknown): void {
    for (const s of this.sessions) {
      if (s.wantsNotification(method)) s.sendNotification(method, params)
    }
  }

  /**
   * Broadcasts once the result of the request being handled has gone out: as codex, a client
   * gets its result before the notifications its request caused. The result is sent in the
   * microtasks that follow the handler; `setImmediate` runs after them, first in first out,
   * so deferred notifications keep their order.
   */
  broadcastAfterResults(method: string, params: unknown): void {
    setImmediate(() => this.broadcast(method, params))
  }

  /**
   * Lets every session answer what it has in flight, then closes it with `code`. With a
   * deadline, a session still busy when it comes answers each request left with
   * `deadline.unanswered` first, so every request accepted gets an answer before the close.
   */
  async closeAll(code: number, reason: string, deadline?: DrainDeadline): Promise<void> {
    let timer: unknown = null
    const expired =
      deadline === undefined ? null : new Promise<void>((resolve) => (timer = deadline.clock.setTimeout(resolve, deadline.ms)))
    await Promise.all(
      [...this.sessions].map(async (s) => {
        await (expired === null ? s.whenIdle() : Promise.race([s.whenIdle(), expired]))
        if (deadline !== undefined) s.answerUnanswered(deadline.unanswered)
        s.close(code, reason)
      }),
    )
    if (deadline !== undefined) deadline.clock.clearTimeout(timer)
  }
}
